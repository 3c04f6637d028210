//! Orders a person confirms. A gated tool call (an order, a strategy, per the account's policy)
//! is not relayed: it is recorded as a pending confirmation and answered with a preview and
//! the address of a CrossTrade page where the person approves or rejects it. Only after an
//! approval on that page does `ConfirmTrade` run the recorded call, once. The model holds the
//! confirmation id, which approves nothing by itself.
//!
//! A 2025-06-18 or 2025-11-25 client that declared elicitation at `initialize` and reads the
//! POST's event stream is asked inside the client instead: an `elicitation/create` form on that
//! stream. Its answer may reach any replica; the request waits on the row in PostgreSQL.
//!
//! A 2026-07-28 client that declares form elicitation in the request's `_meta` gets an
//! `input_required` result carrying the form and a `requestState`; its retry, on any replica,
//! carries the person's answer. The state is the confirmation id and a secret whose hash is on
//! the row; one statement checks the grant, the call and the secret, and takes the approval once.

use std::time::Duration;

use serde_json::{Map, Value, json};
use store::confirmations::{self as rows, Confirmation, NewConfirmation};
use uuid::Uuid;
use vocabulary::confirm::{Channel, ConfirmationState, Decision, Gate, Mode, Policy, Size};

use crate::McpState;
use crate::auth::Principal;
use crate::dispatch::StreamSink;
use crate::protocol::Revision;
use crate::relay::{CallOutcome, CallRequest};

/// How long a person has to decide, and the model to run the approved call.
pub(crate) const CONFIRMATION_TTL: Duration = Duration::from_secs(300);
/// Confirmations an account may have waiting at once.
const MAX_OPEN: u32 = 20;
/// How long a quote for a notional estimate may take.
const QUOTE_DEADLINE: Duration = Duration::from_secs(3);
/// How often a request asking inside the client re-reads its confirmation.
const DECISION_RECHECK: Duration = Duration::from_secs(1);
/// The JSON-RPC ids of this server's `elicitation/create` requests start with it.
pub(crate) const ELICITATION_PREFIX: &str = "ct-confirm-";
/// The key of the confirmation form in a 2026-07-28 `inputRequests` / `inputResponses`.
pub(crate) const INPUT_KEY: &str = "crosstrade_confirm";
/// Starts every `requestState` this server hands out (its format's version).
const STATE_PREFIX: &str = "ct1.";
/// Bytes of the secret in a `requestState`.
const STATE_SECRET_LEN: usize = 32;

/// What the gate decided for a call.
pub(crate) enum Held {
    /// Run it now.
    Proceed,
    /// Answered without running it: the tool result to send.
    Answer(Value),
    /// The person approved this confirmation inside the AI client: claim it and run it.
    Approved(Uuid),
    /// A 2026-07-28 retry carried the person's approval, taken in the same statement: run it.
    Claimed(rows::Claimed),
    /// The person approved but the Add-On is not connected: answer as any Add-On call does.
    /// The approval is not taken; the same retry works once NinjaTrader 8 is back.
    NotConnected,
    /// A `requestState` this server did not hand to this grant for this call, or garbled.
    InvalidState,
}

/// What a 2026-07-28 `tools/call` carries for the confirmation round trip.
pub(crate) struct ModernInput<'a> {
    /// `requestState`, on a retry.
    pub request_state: Option<&'a Value>,
    /// The person's answer, `inputResponses.crosstrade_confirm`.
    pub response: Option<&'a Value>,
    /// The request's `_meta` declares that the client shows forms.
    pub shows_forms: bool,
}

/// A gated call, as the gate sees it.
pub(crate) struct Asked<'a> {
    pub revision: Revision,
    pub tool: &'a str,
    pub gate: Gate,
    pub arguments: &'a Value,
    /// The POST's event stream, when its client reads one.
    pub stream: Option<&'a StreamSink>,
    /// Present for 2026-07-28 requests.
    pub modern: Option<ModernInput<'a>>,
}

/// Where the person is asked when not on the page.
enum Form<'a> {
    /// On the POST's event stream (2025-06-18, 2025-11-25).
    Stream(&'a StreamSink),
    /// In an `input_required` result (2026-07-28).
    InputRequired,
}

/// The tool's gate for these arguments: StopStrategy closes positions only with `flatten`.
fn gate_for(tool: &str, gate: Gate, arguments: &Value) -> Gate {
    if tool == "StopStrategy" && arguments["flatten"] != Value::Bool(true) {
        return Gate::Cancel;
    }
    gate
}

/// Holds a gated call for the person's decision when the account's policy asks for it.
pub(crate) async fn hold(
    state: &McpState,
    principal: &Principal,
    asked: Asked<'_>,
) -> Result<Held, sqlx::Error> {
    let Asked {
        revision,
        tool,
        gate,
        arguments,
        stream,
        modern,
    } = asked;
    let db = state.db();
    // A retry answers a confirmation already held, whatever the policy says now.
    if let Some(ModernInput {
        request_state: Some(request_state),
        response,
        ..
    }) = &modern
    {
        return answered_retry(state, principal, tool, arguments, request_state, *response).await;
    }
    let policy = rows::policy(db, principal.user_id).await?;
    if policy.mode == Mode::Never {
        return Ok(Held::Proceed);
    }
    let gate = gate_for(tool, gate, arguments);
    let estimate = size_of(state, principal, &policy, gate, tool, arguments).await;
    let Some(reason) = policy.requires(gate, &estimate.size) else {
        return Ok(Held::Proceed);
    };
    // An order that cannot be sent now is not held for a decision: the call answers 408 as
    // any Add-On call does, and nothing waits on the person.
    if !state.relay().presence(principal.user_id).await.connected {
        return Ok(Held::Proceed);
    }
    let key = arguments["idempotency_key"].as_str().map(str::to_owned);
    if let Some(key) = &key
        && let Some(first) = rows::open_by_key(db, principal.user_id, key).await?
    {
        if first.args_hash[..] != rows::args_hash(tool, arguments)[..] {
            return Ok(Held::Answer(refusal(
                "key_reused",
                "this idempotency_key was already used for a different request within the last \
                 24 hours: use a new key",
            )));
        }
        return Ok(Held::Answer(match first.state {
            ConfirmationState::Used => replay(&first),
            // Being asked inside the client, on the first request's stream: not on the page.
            _ if first.channel == Channel::ElicitationForm => refusal(
                "in_progress",
                "the person is being asked to confirm this request in the AI client; its answer \
                 ends the first call. Do not send it again",
            ),
            _ => link_preview(state, &first),
        }));
    }
    let form = match (&modern, stream) {
        _ if policy.page_only => None,
        (Some(modern), _) => modern.shows_forms.then_some(Form::InputRequired),
        (None, Some(sink)) if shows_forms(state, principal, revision).await => {
            Some(Form::Stream(sink))
        }
        _ => None,
    };
    let elicitation_id = matches!(form, Some(Form::Stream(_)))
        .then(|| format!("{ELICITATION_PREFIX}{}", Uuid::new_v4()));
    let secret = match form {
        Some(Form::InputRequired) => Some(
            // The OS random source failing is an outage like the database's.
            store::secret::random_bytes(STATE_SECRET_LEN)
                .map_err(|err| sqlx::Error::Io(std::io::Error::other(err)))?,
        ),
        _ => None,
    };
    let new = NewConfirmation {
        confirmation_id: Uuid::new_v4(),
        user_id: principal.user_id,
        grant_id: principal.grant_id,
        client_id: principal.client_id.clone(),
        tool: tool.to_owned(),
        arguments: arguments.clone(),
        idempotency_key: key,
        preview: preview(tool, arguments, &estimate),
        reason,
        channel: if form.is_some() {
            Channel::ElicitationForm
        } else {
            Channel::Link
        },
        revision: revision.as_str().to_owned(),
        elicitation_id: elicitation_id.clone(),
        state_hash: secret.as_deref().map(rows::state_hash),
        ttl: CONFIRMATION_TTL,
        max_open: MAX_OPEN,
    };
    Ok(Held::Answer(match rows::insert(db, &new).await? {
        Some(held) => match (form, elicitation_id, secret) {
            (Some(Form::Stream(sink)), Some(elicitation_id), _) => {
                return ask_in_client(state, principal, revision, sink, &elicitation_id, &held)
                    .await;
            }
            (Some(Form::InputRequired), _, Some(secret)) => {
                input_required(&held, &request_state(held.confirmation_id, &secret))
            }
            _ => link_preview(state, &held),
        },
        None => refusal(
            "too_many_pending",
            &format!(
                "{MAX_OPEN} confirmations are already waiting for this account: ask the person \
                 to decide them (or let them expire) first"
            ),
        ),
    }))
}

/// Whether the grant's client declared, at its last `initialize`, that it shows forms, and the
/// request's revision can ask it on the POST's stream.
async fn shows_forms(state: &McpState, principal: &Principal, revision: Revision) -> bool {
    if !matches!(revision, Revision::V2025_06_18 | Revision::V2025_11_25) {
        return false;
    }
    match rows::capabilities(state.db(), principal.grant_id).await {
        Ok(declared) => declared.is_some_and(|declared| declared.elicitation_form),
        Err(err) => {
            tracing::warn!(error = %err, "reading the client's capabilities failed; using the link");
            false
        }
    }
}

/// Abandons the confirmation when the request waiting for it goes away (its stream dropped),
/// so a late answer approves nothing.
struct AbandonOnDrop {
    db: sqlx::PgPool,
    confirmation_id: Option<Uuid>,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        let (Some(confirmation_id), Ok(runtime)) = (
            self.confirmation_id.take(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let db = self.db.clone();
        runtime.spawn(async move {
            if let Err(err) = rows::abandon(&db, confirmation_id).await {
                tracing::warn!(error = %err, "abandoning an unanswered confirmation failed");
            }
        });
    }
}

/// Asks the person with a form on the POST's stream, then waits for the answer, which any
/// replica records on the row, until the confirmation expires.
async fn ask_in_client(
    state: &McpState,
    principal: &Principal,
    revision: Revision,
    sink: &StreamSink,
    elicitation_id: &str,
    held: &Confirmation,
) -> Result<Held, sqlx::Error> {
    let mut guard = AbandonOnDrop {
        db: state.db().clone(),
        confirmation_id: Some(held.confirmation_id),
    };
    let request = json!({
        "jsonrpc": "2.0",
        "id": elicitation_id,
        "method": "elicitation/create",
        "params": elicitation_params(revision, held),
    });
    if sink.send(request).is_err() {
        // The stream is gone: nobody can answer; the guard abandons the row.
        return Ok(Held::Answer(refusal(
            "abandoned",
            "the request was abandoned before a decision; nothing was sent",
        )));
    }
    let mut closing = state.closing();
    loop {
        let row = rows::find(state.db(), held.confirmation_id, principal.user_id).await?;
        let Some(row) = row else {
            guard.confirmation_id = None;
            return Ok(Held::Answer(refusal(
                "not_found",
                "the confirmation disappeared; nothing was sent",
            )));
        };
        let answer = match row.state {
            // The client could not show the form after all: the person decides on the page.
            ConfirmationState::Pending if row.channel == Channel::Link => {
                Held::Answer(link_preview(state, &row))
            }
            ConfirmationState::Pending => {
                // A server shutting down ends the wait; the guard abandons the row, so the
                // person's late answer approves nothing.
                if *closing.borrow() {
                    return Ok(Held::Answer(refusal(
                        "abandoned",
                        "the server restarted before the person decided; nothing was sent. Call \
                         the tool again to ask again",
                    )));
                }
                tokio::select! {
                    () = tokio::time::sleep(DECISION_RECHECK) => {}
                    _ = closing.changed() => {}
                }
                continue;
            }
            ConfirmationState::Approved => Held::Approved(row.confirmation_id),
            ConfirmationState::Rejected => Held::Answer(declined(
                row.confirmation_id,
                row.decision.unwrap_or(Decision::Decline),
            )),
            _ => Held::Answer(not_runnable(state, principal, Some(&row))),
        };
        guard.confirmation_id = None;
        return Ok(answer);
    }
}

/// The client's answer to one of our `elicitation/create` requests, from whichever replica it
/// reached: recorded on the row, where the waiting request reads it. An error answer (a client
/// that cannot show the form after all) moves the decision to the CrossTrade page. `false` when
/// the answer matches nothing pending for this grant (late, repeated, or not ours).
pub(crate) async fn answer(
    state: &McpState,
    principal: &Principal,
    elicitation_id: &str,
    result: Option<&Value>,
    error: Option<&Value>,
) -> Result<bool, sqlx::Error> {
    let db = state.db();
    if error.is_some() {
        return rows::fall_back_to_link(db, elicitation_id, principal.user_id, principal.grant_id)
            .await;
    }
    let Some(row) = rows::find_by_elicitation(db, elicitation_id, principal.user_id).await? else {
        return Ok(false);
    };
    let (accept, decision) = decision_of(&row, result);
    let recorded = rows::answer_elicitation(
        db,
        elicitation_id,
        principal.user_id,
        principal.grant_id,
        accept,
        decision,
    )
    .await?;
    Ok(recorded.is_some())
}

/// A 2026-07-28 retry: the `requestState` must be one this server handed to this grant for this
/// very call. Without an answer the same form is asked again; with one, the approval is taken
/// (or the rejection recorded) in one statement, so a replayed retry sends nothing twice.
async fn answered_retry(
    state: &McpState,
    principal: &Principal,
    tool: &str,
    arguments: &Value,
    request_state: &Value,
    response: Option<&Value>,
) -> Result<Held, sqlx::Error> {
    let db = state.db();
    let Some((confirmation_id, secret)) = request_state.as_str().and_then(parse_request_state)
    else {
        return Ok(Held::InvalidState);
    };
    let Some(row) = rows::find(db, confirmation_id, principal.user_id).await? else {
        return Ok(Held::InvalidState);
    };
    let call_hash = rows::args_hash(tool, arguments);
    if row.grant_id != principal.grant_id
        || row.args_hash[..] != call_hash[..]
        || !rows::state_matches(row.state_hash.as_deref(), &secret)
    {
        return Ok(Held::InvalidState);
    }
    if row.state != ConfirmationState::Pending {
        return Ok(Held::Answer(settled(state, principal, &row)));
    }
    let Some(response) = response else {
        let request_state = request_state.as_str().unwrap_or_default();
        return Ok(Held::Answer(input_required(&row, request_state)));
    };
    let (accept, decision) = decision_of(&row, Some(response));
    if accept && !state.relay().presence(principal.user_id).await.connected {
        return Ok(Held::NotConnected);
    }
    let answered = rows::claim_answered(
        db,
        confirmation_id,
        principal.user_id,
        principal.grant_id,
        &rows::state_hash(&secret),
        &call_hash,
        accept,
        decision,
    )
    .await?;
    Ok(match answered {
        Some(rows::Answered::Claimed(claimed)) => Held::Claimed(claimed),
        Some(rows::Answered::Rejected) => Held::Answer(declined(confirmation_id, decision)),
        // Expired, or another retry answered first: report what happened to it.
        None => {
            let row = rows::find(db, confirmation_id, principal.user_id).await?;
            Held::Answer(not_runnable(state, principal, row.as_ref()))
        }
    })
}

/// A confirmation no longer waiting, as a retry of its call reads it.
fn settled(state: &McpState, principal: &Principal, row: &Confirmation) -> Value {
    match row.state {
        ConfirmationState::Rejected => declined(
            row.confirmation_id,
            row.decision.unwrap_or(Decision::Decline),
        ),
        _ => not_runnable(state, principal, Some(row)),
    }
}

/// The person's answer to the form: an approval only on `accept` with the box ticked and every
/// detail shown echoed unchanged (a client that let the person edit one approves nothing).
fn decision_of(row: &Confirmation, result: Option<&Value>) -> (bool, Decision) {
    let Some(result) = result else {
        return (false, Decision::Cancel);
    };
    match result["action"].as_str() {
        Some("accept") => {
            let content = &result["content"];
            let unchanged = shown_fields(&row.preview).iter().all(|(name, _, shown)| {
                content
                    .get(name)
                    .is_none_or(|echoed| echoed.as_str() == Some(shown.as_str()))
            });
            if content["confirm"] == Value::Bool(true) && unchanged {
                (true, Decision::Accept)
            } else {
                (false, Decision::Decline)
            }
        }
        Some("cancel") => (false, Decision::Cancel),
        _ => (false, Decision::Decline),
    }
}

/// The `requestState` for a confirmation: its id and the secret, whose hash is on the row.
fn request_state(confirmation_id: Uuid, secret: &[u8]) -> String {
    use base64::Engine as _;
    let mut bytes = confirmation_id.as_bytes().to_vec();
    bytes.extend_from_slice(secret);
    format!(
        "{STATE_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn parse_request_state(raw: &str) -> Option<(Uuid, Vec<u8>)> {
    use base64::Engine as _;
    let encoded = raw.strip_prefix(STATE_PREFIX)?;
    if encoded.len() > 128 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    if bytes.len() != 16 + STATE_SECRET_LEN {
        return None;
    }
    let (id, secret) = bytes.split_at(16);
    Some((Uuid::from_slice(id).ok()?, secret.to_vec()))
}

/// The 2026-07-28 answer asking the person: the form, and the state its retry echoes.
fn input_required(held: &Confirmation, request_state: &str) -> Value {
    json!({
        "resultType": "input_required",
        "inputRequests": {
            INPUT_KEY: {
                "method": "elicitation/create",
                "params": elicitation_params(Revision::V2026_07_28, held),
            },
        },
        "requestState": request_state,
    })
}

/// The person said no inside the client (or dismissed the form).
fn declined(confirmation_id: Uuid, decision: Decision) -> Value {
    let how = if decision == Decision::Cancel {
        "dismissed the confirmation"
    } else {
        "declined this order"
    };
    tool_error_json(&json!({
        "status": "declined",
        "confirmation_id": confirmation_id,
        "message": format!("the person {how} in the AI client; nothing was sent to NinjaTrader 8"),
    }))
}

/// Every detail the form shows, as (field, title, text): the call's arguments and the
/// estimated notional.
fn shown_fields(preview: &Value) -> Vec<(String, String, String)> {
    let mut fields = Vec::new();
    if let Some(arguments) = preview["arguments"].as_object() {
        for (name, value) in arguments {
            let shown = clean(&match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            });
            fields.push((name.clone(), title_of(name).to_owned(), shown));
        }
    }
    if let Some(notional) = preview["estimated_notional"].as_f64() {
        fields.push((
            "estimated_notional".to_owned(),
            "Estimated notional (USD)".to_owned(),
            format!("{notional:.2}"),
        ));
    }
    fields
}

/// `elicitation/create` params: every detail as a one-value choice the person cannot change,
/// and an approval that defaults to no, so a client submitting defaults approves nothing.
fn elicitation_params(revision: Revision, held: &Confirmation) -> Value {
    let fields = shown_fields(&held.preview);
    let mut properties = Map::new();
    let mut summary = Vec::new();
    for (name, title, shown) in &fields {
        if name != "estimated_notional" {
            summary.push(format!("{title} \"{shown}\""));
        }
        properties.insert(name.clone(), fixed(title, shown));
    }
    let mut message = format!(
        "CrossTrade — an AI client asks to run {} on your NinjaTrader 8: {}.",
        clean(&held.tool),
        summary.join(", ")
    );
    if let Some((_, _, notional)) = fields
        .iter()
        .find(|(name, ..)| name == "estimated_notional")
    {
        message.push_str(" Estimated notional ≈ ");
        message.push_str(notional);
        message.push_str(" USD.");
    }
    message.push_str(" Nothing is sent to NinjaTrader 8 unless you accept. Expires ");
    message.push_str(&held.expires_at.format("%H:%M UTC.").to_string());
    properties.insert(
        "confirm".to_owned(),
        json!({"type": "boolean", "title": "I approve this order", "default": false}),
    );
    let mut params = json!({
        "message": message,
        "requestedSchema": {
            "type": "object",
            "properties": properties,
            "required": ["confirm"],
        },
    });
    // 2025-06-18 has no `mode`.
    if revision != Revision::V2025_06_18 {
        params["mode"] = json!("form");
    }
    params
}

/// A field showing one value.
fn fixed(title: &str, value: &str) -> Value {
    json!({"type": "string", "title": title, "enum": [value], "default": value})
}

/// How a form names an argument.
fn title_of(name: &str) -> &str {
    match name {
        "account" => "Account",
        "instrument" => "Instrument",
        "action" => "Side",
        "quantity" => "Quantity",
        "order_type" => "Type",
        "limit_price" => "Limit price",
        "stop_price" => "Stop price",
        "time_in_force" => "Time in force",
        "strategy" => "Strategy",
        "order_id" => "Order",
        other => other,
    }
}

/// A model-supplied string as shown to the person: no control characters, bounded.
fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// How a call's size was estimated, shown with the notional.
#[derive(Debug, Default)]
struct Estimate {
    size: Size,
    /// The price used and where it came from (`limit_price`, `stop_price`, `ask`, `bid`,
    /// `last`).
    price: Option<(f64, &'static str)>,
    point_value: Option<f64>,
}

/// The size the policy compares: the quantity, and the notional when the order names a price
/// (or, when a notional limit needs it, from the Add-On's quote).
async fn size_of(
    state: &McpState,
    principal: &Principal,
    policy: &Policy,
    gate: Gate,
    tool: &str,
    arguments: &Value,
) -> Estimate {
    if gate != Gate::Order || !matches!(tool, "PlaceOrder" | "ModifyOrder") {
        return Estimate {
            size: Size::UNKNOWN,
            ..Estimate::default()
        };
    }
    let quantity = arguments["quantity"].as_u64();
    let needs_notional = policy.mode == Mode::Above && policy.max_notional.is_some();
    let price = match own_price(arguments) {
        Some(price) => Some(price),
        None if needs_notional && tool == "PlaceOrder" => quote(state, principal, arguments).await,
        None => None,
    };
    let point_value = arguments["instrument"]
        .as_str()
        .and_then(vocabulary::confirm::point_value);
    let notional = match (quantity, price, point_value) {
        #[expect(clippy::cast_precision_loss, reason = "order quantities are small")]
        (Some(quantity), Some((price, _)), Some(point_value)) => {
            Some(quantity as f64 * price * point_value)
        }
        _ => None,
    };
    Estimate {
        size: Size { quantity, notional },
        price,
        point_value,
    }
}

/// The order's own price: its limit price, else its stop price.
fn own_price(arguments: &Value) -> Option<(f64, &'static str)> {
    arguments["limit_price"]
        .as_f64()
        .map(|price| (price, "limit_price"))
        .or_else(|| {
            arguments["stop_price"]
                .as_f64()
                .map(|price| (price, "stop_price"))
        })
}

/// The Add-On's quote for a market order: the ask to buy, the bid to sell, else the last.
async fn quote(
    state: &McpState,
    principal: &Principal,
    arguments: &Value,
) -> Option<(f64, &'static str)> {
    let instrument = arguments["instrument"].as_str()?;
    let call = CallRequest {
        user_id: principal.user_id,
        tool: "GetMarketData".to_owned(),
        arguments: json!({ "instrument": instrument }),
        deadline: QUOTE_DEADLINE,
        idempotency_key: None,
    };
    let Ok(CallOutcome::Ok(quote)) = state.relay().call(call).await else {
        return None;
    };
    let side = if arguments["action"] == "Buy" {
        "ask"
    } else {
        "bid"
    };
    quote[side]
        .as_f64()
        .map(|price| (price, side))
        .or_else(|| quote["last"].as_f64().map(|price| (price, "last")))
}

/// What would be sent, as the person and the model see it, with how its notional was
/// estimated.
fn preview(tool: &str, arguments: &Value, estimate: &Estimate) -> Value {
    let mut shown = arguments.clone();
    if let Some(object) = shown.as_object_mut() {
        object.remove("idempotency_key");
    }
    json!({
        "tool": tool,
        "arguments": shown,
        "quantity": estimate.size.quantity,
        "estimated_notional": estimate.size.notional,
        "price": estimate.price.map(|(price, _)| price),
        "price_basis": estimate.price.map(|(_, basis)| basis),
        "point_value": estimate.point_value,
    })
}

/// The address of the confirmation's page.
pub(crate) fn confirm_url(state: &McpState, confirmation_id: Uuid) -> String {
    format!(
        "{}/account/confirmations/{confirmation_id}",
        state.settings().public_url.trim_end_matches('/')
    )
}

/// The answer to a held call: nothing was sent; the person decides on the page.
fn link_preview(state: &McpState, held: &Confirmation) -> Value {
    let body = json!({
        "status": "confirmation_required",
        "confirmation_id": held.confirmation_id,
        "confirm_url": confirm_url(state, held.confirmation_id),
        "expires_at": held.expires_at,
        "reason": held.reason,
        "preview": held.preview,
        "next": "Nothing was sent to NinjaTrader 8. Show confirm_url to the person and ask them \
                 to open it in their own browser and approve or reject the order there; then \
                 call ConfirmTrade with this confirmation_id (wait_seconds up to 50 waits for \
                 their decision). You cannot approve it yourself.",
    });
    tool_error_json(&body)
}

/// The first outcome of a call already confirmed and run: never sent again.
fn replay(used: &Confirmation) -> Value {
    tool_error_json(&json!({
        "status": "used",
        "confirmation_id": used.confirmation_id,
        "message": "this request was already confirmed and sent once; it is not sent again",
        "outcome_code": used.outcome_code,
        "outcome": used.outcome,
    }))
}

fn refusal(status: &str, message: &str) -> Value {
    tool_error_json(&json!({ "status": status, "message": message }))
}

/// A tool result with `isError: true` whose text is `body` (nothing happened; the model reads
/// why and what to do).
fn tool_error_json(body: &Value) -> Value {
    json!({ "content": [{ "type": "text", "text": body.to_string() }], "isError": true })
}

/// The person approved inside the AI client, but the Add-On went away before the order could
/// be sent: nothing was sent, and the approval stands until it expires.
pub(crate) fn approved_but_disconnected(confirmation_id: Uuid) -> Value {
    tool_error_json(&json!({
        "status": "addon_disconnected",
        "confirmation_id": confirmation_id,
        "message": "the person approved, but the CrossTrade Add-On is not connected, so nothing \
                    was sent to NinjaTrader 8. Once it is connected again, call ConfirmTrade \
                    with this confirmation_id before the approval expires",
    }))
}

/// ConfirmTrade's reading of a confirmation it could not claim.
pub(crate) fn not_runnable(
    state: &McpState,
    principal: &Principal,
    row: Option<&Confirmation>,
) -> Value {
    let Some(row) = row else {
        return refusal(
            "not_found",
            "no such confirmation for this account: a gated tool call returns one",
        );
    };
    if row.grant_id != principal.grant_id {
        return refusal(
            "other_client",
            "this confirmation was requested by another connection; only it can run the order",
        );
    }
    match row.state {
        ConfirmationState::Pending => tool_error_json(&json!({
            "status": "pending",
            "confirmation_id": row.confirmation_id,
            "confirm_url": confirm_url(state, row.confirmation_id),
            "expires_at": row.expires_at,
            "message": "the person has not approved it yet: ask them to open confirm_url, then \
                        call ConfirmTrade again (wait_seconds waits up to 50 seconds)",
        })),
        ConfirmationState::Rejected => refusal(
            "rejected",
            "the person rejected this order; nothing was sent to NinjaTrader 8",
        ),
        ConfirmationState::Expired => refusal(
            "expired",
            "no decision in time; nothing was sent. Call the tool again for a new confirmation",
        ),
        ConfirmationState::Abandoned => refusal(
            "abandoned",
            "the request was abandoned before a decision; nothing was sent",
        ),
        ConfirmationState::Used => replay(row),
        ConfirmationState::Approved => refusal(
            "in_progress",
            "this confirmation is being run; read the order's state with GetOrders",
        ),
    }
}
