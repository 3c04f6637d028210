//! Trade confirmations, the person's side: the page where a held order is approved or
//! rejected, the history, the policy form on the overview, and the same data as JSON.
//!
//! Only the page's form decides, and only for the signed-in owner: the row is read with the
//! session's user, so another account's id answers exactly like an unknown one; the form
//! carries the session's CSRF token and a cross-site `Sec-Fetch-Site` is refused. The JSON API
//! reads rows and sets the policy, and has no way to approve. An MCP token never reaches
//! here: these routes read the session cookie alone.

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use axum::Form;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use vocabulary::confirm::{ConfirmationState, InvalidPolicy, Policy, Reason};

use super::api::{ApiError, ApiSession, api_ok};
use super::pages::{PageError, PageSession, account_page, when};
use super::{AccountState, csrf_ok, csrf_token};
use crate::client_ip::client_ip;
use crate::error::Internal;
use crate::events::{self, Kind, Origin};
use crate::pages;
use crate::session::Session;
use crate::state::OAuthState;
use store::confirmations::{Confirmation, ListFilter};

/// Rows in the overview's section.
const OVERVIEW_ROWS: u32 = 10;
/// Rows on the history page and in the JSON list.
const HISTORY_ROWS: u32 = 100;

/// What the tool would do, in words.
fn action_words(tool: &str) -> &str {
    match tool {
        "PlaceOrder" => "Place an order",
        "ModifyOrder" => "Change a working order",
        "ReversePosition" => "Reverse a position",
        "FlattenPosition" => "Close (flatten) a position",
        "FlattenAll" => "Close (flatten) every position",
        "DeployStrategy" => "Start a strategy",
        "StopStrategy" => "Stop a strategy",
        "CancelOrder" => "Cancel an order",
        "CancelAllOrders" => "Cancel all orders",
        "CancelJob" => "Cancel a job",
        other => other,
    }
}

fn reason_words(reason: Reason) -> &'static str {
    match reason {
        Reason::PolicyEvery => "Your policy asks you before every order.",
        Reason::QuantityAbove => "The quantity is above your limit.",
        Reason::NotionalAbove => "The estimated notional is above your limit.",
        Reason::SizeUnknown => {
            "The size could not be estimated, so it is checked with you rather than guessed."
        }
        Reason::AlwaysConfirmed => {
            "Strategies can place orders of any size, so they are always checked with you."
        }
        Reason::CancelPolicy => "Your policy asks you before cancels too.",
    }
}

fn state_words(state: ConfirmationState) -> &'static str {
    match state {
        ConfirmationState::Pending => "Waiting for your decision",
        ConfirmationState::Approved => "Approved, not yet sent",
        ConfirmationState::Rejected => "Rejected: nothing was sent",
        ConfirmationState::Expired => "Expired: nothing was sent",
        ConfirmationState::Abandoned => "Abandoned by the application: nothing was sent",
        ConfirmationState::Used => "Sent to NinjaTrader 8",
    }
}

/// The order a person reads an order in; other arguments follow as they come.
const FIELD_ORDER: &[&str] = &[
    "account",
    "action",
    "quantity",
    "instrument",
    "order_type",
    "limit_price",
    "stop_price",
    "time_in_force",
    "order_id",
    "strategy",
];

/// A field's label: the known argument names in words, any other as it is.
fn label(key: &str) -> String {
    let known = match key {
        "account" => "Account",
        "instrument" => "Instrument",
        "action" => "Side",
        "order_type" => "Order type",
        "quantity" => "Quantity",
        "limit_price" => "Limit price",
        "stop_price" => "Stop price",
        "time_in_force" => "Time in force",
        "order_id" => "Order",
        "oco_id" => "OCO group",
        "strategy" => "Strategy",
        "parameters" => "Parameters",
        "flatten" => "Also close its positions",
        "idempotency_key" => "Idempotency key",
        other => return other.to_owned(),
    };
    known.to_owned()
}

/// A JSON value as the page shows it: strings without quotes, anything else as JSON.
fn display(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn exact(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M UTC").to_string()
}

/// The estimated notional with its basis, from the stored preview.
fn notional_words(preview: &Value) -> String {
    let Some(notional) = preview.get("estimated_notional").and_then(Value::as_f64) else {
        return "unknown".to_owned();
    };
    let currency = preview
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or("USD");
    let price = preview.get("price").and_then(Value::as_f64);
    let point = preview.get("point_value").and_then(Value::as_f64);
    match (price, point) {
        (Some(price), Some(point)) => {
            let basis = preview
                .get("price_basis")
                .and_then(Value::as_str)
                .unwrap_or("price")
                .replace('_', " ");
            format!(
                "≈ {notional:.2} {currency} ({basis} {price} × point value {point} per contract)"
            )
        }
        _ => format!("≈ {notional:.2} {currency}"),
    }
}

/// The clients' names (as they described themselves), looked up once each.
struct ClientNames<'a> {
    state: &'a OAuthState,
    names: HashMap<String, String>,
}

impl<'a> ClientNames<'a> {
    fn new(state: &'a OAuthState) -> Self {
        Self {
            state,
            names: HashMap::new(),
        }
    }

    async fn name(&mut self, client_id: &str) -> Result<String, sqlx::Error> {
        if let Some(name) = self.names.get(client_id) {
            return Ok(name.clone());
        }
        let name = crate::db::clients::registered(self.state.db(), client_id)
            .await?
            .and_then(|client| client.client_name)
            .unwrap_or_else(|| client_id.to_owned());
        self.names.insert(client_id.to_owned(), name.clone());
        Ok(name)
    }
}

/// One row of a list (overview section, history page).
pub(super) struct ListRow {
    pub(super) id: Uuid,
    pub(super) action: String,
    pub(super) summary: String,
    pub(super) client_name: String,
    pub(super) state: String,
    pub(super) open: bool,
    pub(super) created_ago: String,
    pub(super) created_exact: String,
}

/// The arguments that tell orders apart in a list: account, side, quantity, instrument.
fn summary(row: &Confirmation) -> String {
    if let Some(text) = row.preview.get("summary").and_then(Value::as_str) {
        return text.to_owned();
    }
    ["account", "action", "quantity", "instrument", "order_type"]
        .iter()
        .filter_map(|key| row.arguments.get(*key).map(display))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn list_rows(
    state: &OAuthState,
    rows: Vec<Confirmation>,
) -> Result<Vec<ListRow>, sqlx::Error> {
    let now = state.now();
    let mut names = ClientNames::new(state);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let effective = row.state;
        let (created_ago, created_exact) = when(now, row.created_at);
        out.push(ListRow {
            id: row.confirmation_id,
            action: action_words(&row.tool).to_owned(),
            summary: summary(&row),
            client_name: names.name(&row.client_id).await?,
            state: state_words(effective).to_owned(),
            open: effective == ConfirmationState::Pending && row.channel.is_page(),
            created_ago,
            created_exact,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The overview's section and the policy form.
// ---------------------------------------------------------------------------------------------

/// The "Trade confirmations" section of `/account`: the policy form (as stored, or as just
/// submitted with its error) and the latest rows.
pub(super) struct Section {
    pub(super) mode: String,
    pub(super) max_quantity: String,
    pub(super) max_notional: String,
    pub(super) confirm_cancels: bool,
    pub(super) page_only: bool,
    pub(super) error: Option<&'static str>,
    pub(super) rows: Vec<ListRow>,
}

impl Section {
    pub(super) fn mode_is(&self, mode: &str) -> bool {
        self.mode == mode
    }
}

/// The section with the stored policy.
pub(super) async fn section(state: &OAuthState, user_id: Uuid) -> Result<Section, PageError> {
    let policy = store::confirmations::policy(state.db(), user_id).await?;
    let rows =
        store::confirmations::list(state.db(), user_id, ListFilter::default(), OVERVIEW_ROWS)
            .await?;
    Ok(Section {
        mode: policy.mode.as_str().to_owned(),
        max_quantity: policy
            .max_quantity
            .map(|q| q.to_string())
            .unwrap_or_default(),
        max_notional: policy
            .max_notional
            .map(|n| n.to_string())
            .unwrap_or_default(),
        confirm_cancels: policy.confirm_cancels,
        page_only: policy.page_only,
        error: None,
        rows: list_rows(state, rows).await?,
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct PolicyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    max_quantity: String,
    #[serde(default)]
    max_notional: String,
    confirm_cancels: Option<String>,
    page_only: Option<String>,
}

/// What the form says is wrong, in the page's words.
fn policy_error(err: &InvalidPolicy) -> &'static str {
    match err {
        InvalidPolicy::Mode(_) => {
            "Choose when to be asked: every order, only above a size, or never."
        }
        InvalidPolicy::MaxQuantity => {
            "The maximum quantity must be a whole number from 1 to 10000."
        }
        InvalidPolicy::MaxNotional => "The maximum notional must be a number above 0.",
        InvalidPolicy::AboveWithoutLimit => {
            "“Only above a size” needs a maximum quantity, a maximum notional, or both."
        }
    }
}

fn parse_policy_form(form: &PolicyForm) -> Result<Policy, &'static str> {
    let max_quantity = match form.max_quantity.trim() {
        "" => None,
        text => Some(
            text.parse::<u32>()
                .map_err(|_| policy_error(&InvalidPolicy::MaxQuantity))?,
        ),
    };
    let max_notional = match form.max_notional.trim() {
        "" => None,
        text => Some(
            text.parse::<f64>()
                .map_err(|_| policy_error(&InvalidPolicy::MaxNotional))?,
        ),
    };
    Policy::parse(
        &form.mode,
        max_quantity,
        max_notional,
        form.confirm_cancels.is_some(),
        form.page_only.is_some(),
    )
    .map_err(|err| policy_error(&err))
}

/// A form post from another site is refused even with a valid session and token
/// (Fetch Metadata; browsers that do not send the header rely on the token alone).
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|value| value.as_bytes() != b"same-origin")
}

fn origin_of(state: &OAuthState, peer: SocketAddr, headers: &HeaderMap) -> Origin {
    Origin::of_request(
        client_ip(peer, headers, &state.settings().trusted_proxies),
        headers,
    )
}

/// Stores the policy and records the change.
async fn store_policy(
    state: &OAuthState,
    user_id: Uuid,
    policy: &Policy,
    origin: &Origin,
) -> Result<(), sqlx::Error> {
    let mut tx = state.db().begin().await?;
    store::confirmations::set_policy(&mut *tx, user_id, policy).await?;
    events::insert(
        &mut *tx,
        Kind::ConfirmationPolicyChanged,
        None,
        Some(user_id),
        origin,
        json!({ "policy": policy }),
    )
    .await?;
    tx.commit().await
}

/// `POST /account/confirmation-policy`: saves the policy; an invalid one shows the overview
/// again with the form as submitted and what is wrong.
pub(super) async fn post_confirmation_policy(
    State(account): State<AccountState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PageSession(session): PageSession,
    headers: HeaderMap,
    Form(form): Form<PolicyForm>,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    if cross_site(&headers) {
        return Err(PageError::CrossSite);
    }
    if !csrf_ok(state, &session, &form.csrf) {
        return Err(PageError::FormExpired);
    }
    match parse_policy_form(&form) {
        Ok(policy) => {
            let origin = origin_of(state, peer, &headers);
            store_policy(state, session.user_id, &policy, &origin).await?;
            Ok(pages::secure(
                Redirect::to("/account#trade-confirmations").into_response(),
            ))
        }
        Err(message) => {
            let rows = store::confirmations::list(
                state.db(),
                session.user_id,
                ListFilter::default(),
                OVERVIEW_ROWS,
            )
            .await?;
            let section = Section {
                mode: form.mode.clone(),
                max_quantity: form.max_quantity.clone(),
                max_notional: form.max_notional.clone(),
                confirm_cancels: form.confirm_cancels.is_some(),
                page_only: form.page_only.is_some(),
                error: Some(message),
                rows: list_rows(state, rows).await?,
            };
            account_page(&account, &session, StatusCode::BAD_REQUEST, section).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The confirmation page.
// ---------------------------------------------------------------------------------------------

struct Field {
    label: String,
    value: String,
}

#[derive(Template)]
#[template(path = "confirmation.html")]
struct ConfirmationPage<'a> {
    id: Uuid,
    client_name: &'a str,
    account_email: &'a str,
    action: &'a str,
    tool: &'a str,
    fields: Vec<Field>,
    notional: String,
    reason: &'static str,
    state: &'static str,
    /// The state's one word, for the page's class and tests.
    state_code: &'static str,
    /// What the page says above the facts: the outcome of a decision, or why it cannot be made.
    notice: Option<String>,
    created_exact: String,
    expires_exact: String,
    expires_clock: String,
    /// Approve and Reject are offered (pending, unexpired, decided on this page).
    decidable: bool,
    csrf: &'a str,
}

/// Why a decision could not be made, shown on the read-only page.
#[derive(Debug, Clone, Copy)]
enum Refused {
    AlreadyDecided,
    Expired,
    InTheApplication,
}

fn notice(row: &Confirmation, effective: ConfirmationState, client: &str) -> Option<String> {
    let until = clock(row.expires_at);
    match effective {
        ConfirmationState::Approved => Some(format!(
            "Approved. Go back to {client}; it can now send this order once (until {until})."
        )),
        ConfirmationState::Rejected => Some(format!(
            "Rejected. Nothing was sent to NinjaTrader 8; {client} is told you declined."
        )),
        ConfirmationState::Used => Some(match (row.used_at, row.outcome_code.as_deref()) {
            (Some(at), Some(code)) => format!("Sent to NinjaTrader 8 at {}: {code}.", clock(at)),
            (Some(at), None) => format!("Sent to NinjaTrader 8 at {}.", clock(at)),
            (None, _) => "Sent to NinjaTrader 8.".to_owned(),
        }),
        ConfirmationState::Pending if !row.channel.is_page() => Some(format!(
            "{client} asks you about this order inside the application itself; answer it there."
        )),
        _ => None,
    }
}

fn refused_words(refused: Refused) -> &'static str {
    match refused {
        Refused::AlreadyDecided => "This confirmation was already decided; nothing changed.",
        Refused::Expired => "This confirmation expired; it can no longer be approved.",
        Refused::InTheApplication => {
            "This order is confirmed inside the application, not on this page; nothing changed."
        }
    }
}

async fn confirmation_page(
    state: &OAuthState,
    session: &Session,
    row: &Confirmation,
    status: StatusCode,
    refused: Option<Refused>,
) -> Result<Response, PageError> {
    let effective = row.state;
    let client_name = ClientNames::new(state).name(&row.client_id).await?;
    let fields = match &row.arguments {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by_key(|(key, _)| {
                FIELD_ORDER
                    .iter()
                    .position(|known| known == key)
                    .unwrap_or(FIELD_ORDER.len())
            });
            entries
                .into_iter()
                .map(|(key, value)| Field {
                    label: label(key),
                    value: display(value),
                })
                .collect()
        }
        other => vec![Field {
            label: "Arguments".to_owned(),
            value: display(other),
        }],
    };
    let notice = refused
        .map(|refused| refused_words(refused).to_owned())
        .or_else(|| notice(row, effective, &client_name));
    let decidable =
        refused.is_none() && effective == ConfirmationState::Pending && row.channel.is_page();
    Ok(pages::render(
        status,
        &ConfirmationPage {
            id: row.confirmation_id,
            client_name: &client_name,
            account_email: &session.email,
            action: action_words(&row.tool),
            tool: &row.tool,
            fields,
            notional: notional_words(&row.preview),
            reason: reason_words(row.reason),
            state: state_words(effective),
            state_code: effective.as_str(),
            notice,
            created_exact: exact(row.created_at),
            expires_exact: exact(row.expires_at),
            expires_clock: clock(row.expires_at),
            decidable,
            csrf: &csrf_token(state, session),
        },
    ))
}

/// The session's own row, or the same 404 for an unknown id, another account's, or a path
/// that is no id at all.
async fn own_row(
    state: &OAuthState,
    session: &Session,
    id: &str,
) -> Result<Confirmation, PageError> {
    let id = Uuid::parse_str(id).map_err(|_| PageError::UnknownConfirmation)?;
    store::confirmations::find(state.db(), id, session.user_id)
        .await?
        .ok_or(PageError::UnknownConfirmation)
}

/// `GET /account/confirmations/{id}`.
pub(super) async fn get_confirmation(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    let row = own_row(state, &session, &id).await?;
    confirmation_page(state, &session, &row, StatusCode::OK, None).await
}

#[derive(Debug, Deserialize)]
pub(super) struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
}

/// `POST /account/confirmations/{id}`: the person's Approve or Reject. One `UPDATE` moves a
/// pending, unexpired row of this user decided on this page; anything else shows the page
/// read-only with why, and changes nothing.
pub(super) async fn post_confirmation(
    State(account): State<AccountState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PageSession(session): PageSession,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DecisionForm>,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    if cross_site(&headers) {
        return Err(PageError::CrossSite);
    }
    if !csrf_ok(state, &session, &form.csrf) {
        return Err(PageError::FormExpired);
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(PageError::InvalidForm),
    };
    let row = own_row(state, &session, &id).await?;
    if !row.channel.is_page() {
        let refused = Some(Refused::InTheApplication);
        return confirmation_page(state, &session, &row, StatusCode::CONFLICT, refused).await;
    }
    let origin = origin_of(state, peer, &headers);
    let ip = origin.ip.map(|ip| ip.to_string());
    let decided = store::confirmations::decide_on_page(
        state.db(),
        row.confirmation_id,
        session.user_id,
        approve,
        ip.as_deref(),
    )
    .await?;
    if decided.is_none() {
        let row = own_row(state, &session, &id).await?;
        let refused = match row.state {
            ConfirmationState::Expired => Refused::Expired,
            _ => Refused::AlreadyDecided,
        };
        return confirmation_page(state, &session, &row, StatusCode::CONFLICT, Some(refused)).await;
    }
    let kind = if approve {
        Kind::ConfirmationApproved
    } else {
        Kind::ConfirmationRejected
    };
    events::record(
        state.db(),
        kind,
        Some(&row.client_id),
        Some(session.user_id),
        &origin,
        json!({ "confirmation_id": row.confirmation_id, "tool": row.tool }),
    )
    .await;
    Ok(pages::secure(
        Redirect::to(&format!("/account/confirmations/{}", row.confirmation_id)).into_response(),
    ))
}

#[derive(Template)]
#[template(path = "confirmations.html")]
struct HistoryPage {
    rows: Vec<ListRow>,
}

/// `GET /account/confirmations`: the latest confirmations, newest first.
pub(super) async fn get_confirmations(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    let rows = store::confirmations::list(
        state.db(),
        session.user_id,
        ListFilter::default(),
        HISTORY_ROWS,
    )
    .await?;
    Ok(pages::render(
        StatusCode::OK,
        &HistoryPage {
            rows: list_rows(state, rows).await?,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// JSON: the policy and the list. No decision: approving is the page's form only.
// ---------------------------------------------------------------------------------------------

fn policy_json(policy: &Policy) -> Value {
    json!({
        "mode": policy.mode,
        "max_quantity": policy.max_quantity,
        "max_notional": policy.max_notional,
        "confirm_cancels": policy.confirm_cancels,
        "page_only": policy.page_only,
    })
}

/// `GET /v1/account/confirmation-policy`.
pub(super) async fn get_confirmation_policy_json(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession,
) -> Result<Response, ApiError> {
    let state = &account.oauth;
    let policy = store::confirmations::policy(state.db(), session.user_id)
        .await
        .map_err(Internal::from)?;
    Ok(api_ok(
        StatusCode::OK,
        policy_json(&policy),
        Some(&csrf_token(state, &session)),
    ))
}

/// The body of a policy `PUT`, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    mode: String,
    #[serde(default)]
    max_quantity: Option<u32>,
    #[serde(default)]
    max_notional: Option<f64>,
    #[serde(default)]
    confirm_cancels: bool,
    #[serde(default)]
    page_only: bool,
}

fn api_policy_error(err: &InvalidPolicy) -> &'static str {
    match err {
        InvalidPolicy::Mode(_) => "mode must be every, above or never",
        InvalidPolicy::MaxQuantity => "max_quantity must be an integer from 1 to 10000",
        InvalidPolicy::MaxNotional => "max_notional must be a number above 0",
        InvalidPolicy::AboveWithoutLimit => "mode above needs max_quantity or max_notional",
    }
}

/// `PUT /v1/account/confirmation-policy`: replaces the policy (needs `X-CSRF-Token`).
pub(super) async fn put_confirmation_policy_json(
    State(account): State<AccountState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiSession(session): ApiSession<true>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let state = &account.oauth;
    let body: PolicyBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::InvalidRequest(
            "the body must be a JSON object: mode, and optionally max_quantity, max_notional, \
             confirm_cancels, page_only",
        )
    })?;
    let policy = Policy::parse(
        &body.mode,
        body.max_quantity,
        body.max_notional,
        body.confirm_cancels,
        body.page_only,
    )
    .map_err(|err| ApiError::InvalidRequest(api_policy_error(&err)))?;
    let origin = origin_of(state, peer, &headers);
    store_policy(state, session.user_id, &policy, &origin)
        .await
        .map_err(Internal::from)?;
    Ok(api_ok(StatusCode::OK, policy_json(&policy), None))
}

/// One confirmation as the JSON list shows it.
fn confirmation_json(row: &Confirmation, client_name: &str) -> Value {
    json!({
        "confirmation_id": row.confirmation_id,
        "tool": row.tool,
        "client_id": row.client_id,
        "client_name": client_name,
        "arguments": row.arguments,
        "preview": row.preview,
        "reason": row.reason,
        "channel": row.channel,
        "state": row.state,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "decided_at": row.decided_at,
        "decided_via": row.decided_via,
        "decision": row.decision,
        "used_at": row.used_at,
        "outcome_code": row.outcome_code,
        "outcome": row.outcome,
        "finished_at": row.finished_at,
    })
}

/// `GET /v1/account/confirmations`: the latest confirmations, newest first.
pub(super) async fn get_confirmations_json(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession,
) -> Result<Response, ApiError> {
    let state = &account.oauth;
    let rows = store::confirmations::list(
        state.db(),
        session.user_id,
        ListFilter::default(),
        HISTORY_ROWS,
    )
    .await
    .map_err(Internal::from)?;
    let mut names = ClientNames::new(state);
    let mut list = Vec::with_capacity(rows.len());
    for row in &rows {
        let name = names.name(&row.client_id).await.map_err(Internal::from)?;
        list.push(confirmation_json(row, &name));
    }
    Ok(api_ok(
        StatusCode::OK,
        json!({ "confirmations": list }),
        Some(&csrf_token(state, &session)),
    ))
}

#[cfg(test)]
mod tests {
    use vocabulary::confirm::Mode;

    use super::*;

    fn form(mode: &str, quantity: &str, notional: &str) -> PolicyForm {
        PolicyForm {
            csrf: String::new(),
            mode: mode.to_owned(),
            max_quantity: quantity.to_owned(),
            max_notional: notional.to_owned(),
            confirm_cancels: None,
            page_only: Some("on".to_owned()),
        }
    }

    #[test]
    fn the_policy_form_is_parsed_and_validated() {
        let policy = parse_policy_form(&form("above", " 5 ", "")).expect("valid");
        assert_eq!(policy.mode, Mode::Above);
        assert_eq!(policy.max_quantity, Some(5));
        assert_eq!(policy.max_notional, None);
        assert!(policy.page_only && !policy.confirm_cancels);
        assert_eq!(
            parse_policy_form(&form("above", "", "")),
            Err(policy_error(&InvalidPolicy::AboveWithoutLimit))
        );
        assert_eq!(
            parse_policy_form(&form("above", "many", "")),
            Err(policy_error(&InvalidPolicy::MaxQuantity))
        );
        assert_eq!(
            parse_policy_form(&form("above", "", "-3")),
            Err(policy_error(&InvalidPolicy::MaxNotional))
        );
        assert_eq!(
            parse_policy_form(&form("sometimes", "", "")),
            Err(policy_error(&InvalidPolicy::Mode(String::new())))
        );
        assert_eq!(
            parse_policy_form(&form("never", "", "")).map(|p| p.mode),
            Ok(Mode::Never)
        );
    }

    #[test]
    fn only_same_origin_posts_pass_fetch_metadata() {
        let mut headers = HeaderMap::new();
        assert!(!cross_site(&headers), "older browsers send none");
        headers.insert("sec-fetch-site", "same-origin".parse().expect("header"));
        assert!(!cross_site(&headers));
        for value in ["cross-site", "same-site", "none"] {
            headers.insert("sec-fetch-site", value.parse().expect("header"));
            assert!(cross_site(&headers), "{value}");
        }
    }

    #[test]
    fn the_notional_names_its_basis() {
        let preview = json!({"estimated_notional": 500_125.0, "currency": "USD", "price": 5001.25,
                             "price_basis": "limit_price", "point_value": 50.0});
        assert_eq!(
            notional_words(&preview),
            "≈ 500125.00 USD (limit price 5001.25 × point value 50 per contract)"
        );
        assert_eq!(notional_words(&json!({})), "unknown");
    }
}
