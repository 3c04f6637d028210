//! The account pages (HTML): overview, sign-in and sign-out, AI Clients (with what each did,
//! revoke one or all), Add-On keys. Every refusal is a [`PageError`], rendered as the error page.

use std::net::SocketAddr;

use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use store::activity::first_day;
use uuid::Uuid;

use super::activity::{self, Activity};
use super::{AccountState, confirmations, csrf_ok, csrf_token};
use crate::client_ip::client_ip;
use crate::crypto::secure_eq;
use crate::error::Internal;
use crate::events::Origin;
use crate::grants::{self, GrantSummary};
use crate::pages::{self, error_page};
use crate::redirect_uri;
use crate::session::{self, Session};
use crate::sign_in;
use crate::state::OAuthState;

/// Why an account page answers with the error page instead: each case with its status, title
/// and message in [`PageError::page`].
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The session's account was deleted.
    #[error("the account no longer exists")]
    UnknownAccount,
    /// The sign-in form's CSRF cookie is missing or does not match.
    #[error("the sign-in form expired")]
    SignInExpired,
    /// A form's CSRF token does not match the session.
    #[error("the form expired")]
    FormExpired,
    /// Not one of the user's grants, or one already revoked: the same answer, so ids do not leak.
    #[error("no such AI client on this account")]
    UnknownAiClient,
    #[error("no such Add-On key on this account")]
    UnknownAddonKey,
    /// Not one of the user's confirmations, or no id at all: the same answer for each.
    #[error("no such trade confirmation on this account")]
    UnknownConfirmation,
    /// A form post whose `Sec-Fetch-Site` says it came from another site.
    #[error("a form post from another site")]
    CrossSite,
    /// A form field outside its values.
    #[error("the form was not filled in as expected")]
    InvalidForm,
    /// Logged once when rendered; the page says only that it failed.
    #[error("the account request failed")]
    Internal(#[from] Internal),
}

impl PageError {
    /// The one table of this contract: status, title and message of each error page.
    pub fn page(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            PageError::UnknownAccount => (
                StatusCode::NOT_FOUND,
                "Unknown account",
                "This account no longer exists.",
            ),
            PageError::SignInExpired => (
                StatusCode::FORBIDDEN,
                "Request expired",
                "The sign-in form expired or did not come from this site. Please sign in again.",
            ),
            PageError::FormExpired => (
                StatusCode::FORBIDDEN,
                "Request expired",
                "This form expired or did not come from this site. Reload the page and try again.",
            ),
            PageError::UnknownAiClient => (
                StatusCode::NOT_FOUND,
                "Not found",
                "This AI client is not connected to your account.",
            ),
            PageError::UnknownAddonKey => (
                StatusCode::NOT_FOUND,
                "Not found",
                "This Add-On key does not exist on your account.",
            ),
            PageError::UnknownConfirmation => (
                StatusCode::NOT_FOUND,
                "Not found",
                "This trade confirmation does not exist on your account. Check that you are signed in with the account the application trades on.",
            ),
            PageError::CrossSite => (
                StatusCode::FORBIDDEN,
                "Request refused",
                "This form was sent from another site. Open the page on CrossTrade itself and try again.",
            ),
            PageError::InvalidForm => (
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "This form was not filled in as expected. Reload the page and try again.",
            ),
            PageError::Internal(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "CrossTrade could not complete this request. Please try again in a moment.",
            ),
        }
    }
}

impl From<sqlx::Error> for PageError {
    fn from(err: sqlx::Error) -> Self {
        Self::Internal(err.into())
    }
}

impl From<store::users::UserError> for PageError {
    fn from(err: store::users::UserError) -> Self {
        Self::Internal(err.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let PageError::Internal(err) = &self {
            tracing::error!(error = %err.chain(), "account request failed");
        }
        let (status, title, message) = self.page();
        error_page(status, title, message)
    }
}

/// The session, or a redirect to the sign-in page that comes back to `path`.
async fn page_session(
    state: &OAuthState,
    headers: &HeaderMap,
    path: &str,
) -> Result<Session, Response> {
    match session::current(state, headers).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(pages::secure(
            Redirect::to(&format!("/account/sign-in?next={}", encode(path))).into_response(),
        )),
        Err(err) => Err(PageError::from(err).into_response()),
    }
}

/// The session of an account page. Without one, the browser is sent to sign in and back to
/// the page (a form post goes back to the overview).
pub(super) struct PageSession(pub(super) Session);

impl<S> FromRequestParts<S> for PageSession
where
    AccountState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let account = AccountState::from_ref(state);
        let back = if parts.method == Method::GET {
            parts.uri.path()
        } else {
            "/account"
        };
        page_session(&account.oauth, &parts.headers, back)
            .await
            .map(PageSession)
    }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Where a sign-in may return to: an account page on this site, nothing else.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with("/account")
                && path
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '\\' && c != '#')
                && !path.contains("//") =>
        {
            path.to_owned()
        }
        _ => "/account".to_owned(),
    }
}

/// "3 minutes ago", and the exact UTC time for the `title`.
pub(super) fn when(now: DateTime<Utc>, at: DateTime<Utc>) -> (String, String) {
    let seconds = (now - at).num_seconds().max(0);
    let ago = match seconds {
        0..60 => "just now".to_owned(),
        60..3600 => plural(seconds / 60, "minute"),
        3600..86_400 => plural(seconds / 3600, "hour"),
        _ => plural(seconds / 86_400, "day"),
    };
    (ago, at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    email: &'a str,
    tier: &'a str,
    elite: bool,
    connected: bool,
    addon_version: Option<&'a str>,
    nt8_version: Option<&'a str>,
    /// While none is connected: the refused Add-On's sentence, and when ("3 minutes ago", the
    /// exact UTC time).
    too_old: Option<(String, String, String)>,
    csrf: &'a str,
    confirmations: confirmations::Section,
}

pub(super) async fn get_account(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
) -> Result<Response, PageError> {
    let section = confirmations::section(&account.oauth, session.user_id).await?;
    account_page(&account, &session, StatusCode::OK, section).await
}

/// The overview, with its trade confirmations section as given (stored, or a form to correct).
pub(super) async fn account_page(
    account: &AccountState,
    session: &Session,
    status: StatusCode,
    confirmations: confirmations::Section,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    let user = store::users::find_by_id(state.db(), session.user_id)
        .await?
        .ok_or(PageError::UnknownAccount)?;
    let presence = account.addon.presence(user.id).await;
    let too_old = match (&presence.too_old, presence.state()) {
        (Some(too_old), vocabulary::AddonState::TooOld) => {
            let (ago, exact) = when(state.now(), too_old.refused_at);
            Some((presence.status(), ago, exact))
        }
        _ => None,
    };
    Ok(pages::render(
        status,
        &AccountPage {
            email: &user.email,
            tier: user.tier.as_str(),
            elite: user.tier == vocabulary::Tier::Elite,
            connected: presence.connected,
            addon_version: presence.addon_version.as_deref(),
            nt8_version: presence.nt8_version.as_deref(),
            too_old,
            csrf: &csrf_token(state, session),
            confirmations,
        },
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

fn account_sign_in_page(
    state: &OAuthState,
    next: &str,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let restart = format!("/account/sign-in?next={}", encode(next));
    Ok(session::sign_in_form(
        state,
        status,
        session::SignInForm {
            client_name: None,
            action: "/account/sign-in",
            return_to: next,
            restart: &restart,
            email,
            error,
        },
    )?)
}

pub(super) async fn get_sign_in(
    State(account): State<AccountState>,
    Query(query): Query<NextQuery>,
) -> Result<Response, PageError> {
    let next = safe_next(query.next.as_deref());
    account_sign_in_page(&account.oauth, &next, "", None, StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    return_to: String,
}

pub(super) async fn post_sign_in(
    State(account): State<AccountState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    let cookie_csrf =
        session::cookie(&headers, session::login_csrf_cookie_name(state)).unwrap_or("");
    if cookie_csrf.is_empty() || !secure_eq(cookie_csrf.as_bytes(), form.csrf.as_bytes()) {
        return Err(PageError::SignInExpired);
    }
    let next = safe_next(Some(&form.return_to));
    let origin = Origin::of_request(
        client_ip(peer, &headers, &state.settings().trusted_proxies),
        &headers,
    );
    let outcome = sign_in::authenticate(state, &origin, &form.email, form.password, None).await;
    match outcome?.user() {
        Ok(user) => Ok(session::signed_in(state, user.id, &next).await?),
        Err(refusal) => {
            let page = account_sign_in_page(
                state,
                &next,
                &form.email,
                Some(refusal.message),
                refusal.status,
            )
            .unwrap_or_else(IntoResponse::into_response);
            Ok(refusal.mark(page))
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
    everywhere: Option<String>,
}

pub(super) async fn post_sign_out(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    if !csrf_ok(state, &session, &form.csrf) {
        return Err(PageError::FormExpired);
    }
    let deleted = if form.everywhere.is_some() {
        crate::db::sessions::delete_all_of_user(state.db(), session.user_id)
            .await
            .map(drop)
    } else {
        crate::db::sessions::delete(state.db(), &session.id_hash).await
    };
    deleted?;
    let mut response = Redirect::to("/account/sign-in").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(state, session::session_cookie_name(state), "", 0),
    );
    Ok(pages::secure(response))
}

struct ClientRow {
    grant_id: Uuid,
    name: String,
    /// For a client identified by a metadata document: the document URL's host.
    identified_by: Option<String>,
    trade: bool,
    redirect_host: String,
    created_ago: String,
    created_exact: String,
    last_used_ago: Option<String>,
    last_used_exact: String,
    activity: Activity,
}

#[derive(Template)]
#[template(path = "ai_clients.html")]
struct AiClientsPage {
    clients: Vec<ClientRow>,
    mcp_url: String,
}

fn client_row(now: DateTime<Utc>, grant: GrantSummary, activity: Activity) -> ClientRow {
    let (created_ago, created_exact) = when(now, grant.created_at);
    let last_used = grant.last_used_at.map(|at| when(now, at));
    ClientRow {
        grant_id: grant.grant_id,
        identified_by: crate::cimd::is_url(&grant.client_id)
            .then(|| redirect_uri::display_host(&grant.client_id)),
        name: grant.client_name.unwrap_or(grant.client_id),
        trade: grant.scope == crate::scope::TRADE,
        redirect_host: redirect_uri::display_host(&grant.redirect_uri),
        created_ago,
        created_exact,
        last_used_exact: last_used
            .as_ref()
            .map(|(_, exact)| exact.clone())
            .unwrap_or_default(),
        last_used_ago: last_used.map(|(ago, _)| ago),
        activity,
    }
}

pub(super) async fn get_ai_clients(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    let list = grants::list_grants(state, session.user_id).await?;
    let now = state.now();
    let days = store::activity::days_of_user(state.db(), session.user_id, first_day(now)).await?;
    let recent = store::activity::recent_of_user(
        state.db(),
        session.user_id,
        now - TimeDelta::days(i64::from(store::activity::DAYS)),
        activity::RECENT_SHOWN,
    )
    .await?;
    let mut activities = activity::by_grant(now, days, recent);
    let clients = list
        .into_iter()
        .map(|grant| {
            let activity = activities
                .remove(&grant.grant_id)
                .unwrap_or_else(|| activity::activity(now, &[], &[]));
            client_row(now, grant, activity)
        })
        .collect();
    Ok(pages::render(
        StatusCode::OK,
        &AiClientsPage {
            clients,
            mcp_url: state.settings().resource(),
        },
    ))
}

#[derive(Template)]
#[template(path = "ai_client_revoke.html")]
struct RevokeClientPage<'a> {
    name: &'a str,
    grant_id: Uuid,
    csrf: &'a str,
}

pub(super) async fn get_revoke_ai_client(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Path(grant_id): Path<Uuid>,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    let grant = grants::list_grants(state, session.user_id)
        .await?
        .into_iter()
        .find(|g| g.grant_id == grant_id)
        .ok_or(PageError::UnknownAiClient)?;
    let name = grant.client_name.unwrap_or(grant.client_id);
    Ok(pages::render(
        StatusCode::OK,
        &RevokeClientPage {
            name: &name,
            grant_id,
            csrf: &csrf_token(state, &session),
        },
    ))
}

pub(super) async fn post_revoke_ai_client(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Path(grant_id): Path<Uuid>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    if !csrf_ok(state, &session, &form.csrf) {
        return Err(PageError::FormExpired);
    }
    if grants::revoke_user_grant(state, session.user_id, grant_id).await? {
        Ok(pages::secure(
            Redirect::to("/account/ai-clients").into_response(),
        ))
    } else {
        Err(PageError::UnknownAiClient)
    }
}

#[derive(Template)]
#[template(path = "ai_clients_revoke_all.html")]
struct RevokeAllClientsPage<'a> {
    names: Vec<String>,
    csrf: &'a str,
}

pub(super) async fn get_revoke_all_ai_clients(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    let names: Vec<String> = grants::list_grants(state, session.user_id)
        .await?
        .into_iter()
        .map(|grant| grant.client_name.unwrap_or(grant.client_id))
        .collect();
    if names.is_empty() {
        return Ok(pages::secure(
            Redirect::to("/account/ai-clients").into_response(),
        ));
    }
    Ok(pages::render(
        StatusCode::OK,
        &RevokeAllClientsPage {
            names,
            csrf: &csrf_token(state, &session),
        },
    ))
}

pub(super) async fn post_revoke_all_ai_clients(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    if !csrf_ok(state, &session, &form.csrf) {
        return Err(PageError::FormExpired);
    }
    grants::revoke_all_user_grants(state, session.user_id).await?;
    Ok(pages::secure(
        Redirect::to("/account/ai-clients").into_response(),
    ))
}

struct KeyRow {
    key_id: Uuid,
    hint: String,
    live: bool,
    created_ago: String,
    created_exact: String,
    last_used_ago: Option<String>,
    last_used_exact: String,
}

#[derive(Template)]
#[template(path = "addon_keys.html")]
struct AddonKeysPage<'a> {
    keys: Vec<KeyRow>,
    csrf: &'a str,
}

#[derive(Template)]
#[template(path = "addon_key_created.html")]
struct AddonKeyCreatedPage<'a> {
    key: &'a str,
}

pub(super) async fn get_addon_keys(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    let keys = account.addon.list_keys(session.user_id).await?;
    let now = state.now();
    let keys = keys
        .into_iter()
        .map(|key| {
            let (created_ago, created_exact) = when(now, key.created_at);
            let used = key.last_used_at.map(|at| when(now, at));
            KeyRow {
                key_id: key.key_id,
                hint: key.hint,
                live: key.live,
                created_ago,
                created_exact,
                last_used_exact: used.as_ref().map(|(_, e)| e.clone()).unwrap_or_default(),
                last_used_ago: used.map(|(a, _)| a),
            }
        })
        .collect();
    Ok(pages::render(
        StatusCode::OK,
        &AddonKeysPage {
            keys,
            csrf: &csrf_token(state, &session),
        },
    ))
}

pub(super) async fn post_addon_key(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    if !csrf_ok(state, &session, &form.csrf) {
        return Err(PageError::FormExpired);
    }
    let (_, key) = account.addon.create_key(session.user_id).await?;
    let mut response = pages::render(StatusCode::OK, &AddonKeyCreatedPage { key: &key });
    // This page alone runs one script of ours: the copy button.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    Ok(response)
}

pub(super) async fn post_revoke_addon_key(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Path(key_id): Path<Uuid>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let state = &account.oauth;
    if !csrf_ok(state, &session, &form.csrf) {
        return Err(PageError::FormExpired);
    }
    if account.addon.revoke_key(session.user_id, key_id).await? {
        Ok(pages::secure(
            Redirect::to("/account/addon-keys").into_response(),
        ))
    } else {
        Err(PageError::UnknownAddonKey)
    }
}

pub(super) async fn get_copy_script() -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../templates/copy.js"),
    )
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_only_returns_to_account_pages() {
        assert_eq!(
            safe_next(Some("/account/ai-clients")),
            "/account/ai-clients"
        );
        for bad in [
            "https://evil.example/account",
            "//evil.example/account",
            "/account//x",
            "/accountx\\y",
            "/v1/oauth/mcp/token",
        ] {
            assert_eq!(safe_next(Some(bad)), "/account", "{bad}");
        }
        assert_eq!(safe_next(None), "/account");
    }

    #[test]
    fn relative_times() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ago = |s| when(now, now - TimeDelta::seconds(s)).0;
        assert_eq!(ago(5), "just now");
        assert_eq!(ago(180), "3 minutes ago");
        assert_eq!(ago(3600), "1 hour ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(when(now, now).1, "2027-01-15 08:00:00 UTC");
    }

    /// An internal failure keeps its cause for the log line.
    #[test]
    fn an_internal_page_error_keeps_its_cause() {
        let err = PageError::from(sqlx::Error::PoolTimedOut);
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(cause, Some("database".to_owned()));
        assert_eq!(err.page().0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
