//! The trader's account pages — overview, AI Clients (see and revoke every authorized client),
//! Add-On keys — and the same data as JSON for the product's own front end.
//!
//! Everything here authenticates with the browser session only: an `Authorization` header (an
//! MCP token, an Add-On key) is never accepted. Forms carry a CSRF token derived from the session
//! (HMAC of the session id's hash), so it is bound to it and needs no storage; JSON mutations
//! carry the same token in `X-CSRF-Token`. The Add-On side is reached through [`AddonAccounts`],
//! implemented by the server over the Add-On bridge.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::client_ip::client_ip;
use crate::crypto::{b64, hmac_sha256, random_token, secure_eq};
use crate::error::Internal;
use crate::events::Origin;
use crate::grants::{self, GrantSummary};
use crate::pages::{self, SignInPage, error_page};
use crate::redirect_uri;
use crate::session::{self, Session};
use crate::sign_in::{self, Authentication};
use crate::state::OAuthState;

pub use store::BoxFuture;

/// The user's Add-On connection as the account pages show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AddonStatus {
    pub connected: bool,
    pub addon_version: Option<String>,
    pub nt8_version: Option<String>,
}

/// One Add-On key, never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddonKey {
    pub key_id: Uuid,
    /// The key's first characters, so a person can tell keys apart.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The Add-On is connected with this key right now.
    pub live: bool,
}

/// What the account pages need from the Add-On side.
pub trait AddonAccounts: Send + Sync + 'static {
    fn status(&self, user_id: Uuid) -> BoxFuture<'_, AddonStatus>;
    /// The user's keys that are not revoked, newest first.
    fn list_keys(&self, user_id: Uuid) -> BoxFuture<'_, Result<Vec<AddonKey>, Internal>>;
    /// A new key: its id and the secret, shown once.
    fn create_key(&self, user_id: Uuid) -> BoxFuture<'_, Result<(Uuid, String), Internal>>;
    /// Revokes one of the user's keys; `false` when it is not theirs or already revoked.
    fn revoke_key(&self, user_id: Uuid, key_id: Uuid) -> BoxFuture<'_, Result<bool, Internal>>;
}

/// State of the account routes.
#[derive(Clone)]
pub struct AccountState {
    pub oauth: OAuthState,
    pub addon: Arc<dyn AddonAccounts>,
}

impl std::fmt::Debug for AccountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountState").finish_non_exhaustive()
    }
}

pub fn router<S>() -> Router<S>
where
    AccountState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/account", get(get_account))
        .route("/account/sign-in", get(get_sign_in).post(post_sign_in))
        .route("/account/sign-out", post(post_sign_out))
        .route("/account/ai-clients", get(get_ai_clients))
        .route(
            "/account/ai-clients/{grant_id}/revoke",
            get(get_revoke_ai_client).post(post_revoke_ai_client),
        )
        .route(
            "/account/addon-keys",
            get(get_addon_keys).post(post_addon_key),
        )
        .route(
            "/account/addon-keys/{key_id}/revoke",
            post(post_revoke_addon_key),
        )
        .route("/v1/account/ai-clients", get(api_list_ai_clients))
        .route(
            "/v1/account/ai-clients/{grant_id}",
            axum::routing::delete(api_revoke_ai_client),
        )
        .route(
            "/v1/account/addon-keys",
            get(api_list_addon_keys).post(api_create_addon_key),
        )
        .route(
            "/v1/account/addon-keys/{key_id}",
            axum::routing::delete(api_revoke_addon_key),
        )
        .route(crate::state::paths::COPY_SCRIPT, get(get_copy_script))
}

/// The CSRF token of a session: unguessable without the server key, bound to the session.
fn csrf_token(state: &OAuthState, session: &Session) -> String {
    b64(&hmac_sha256(&state.inner.csrf_key, &session.id_hash))
}

fn csrf_ok(state: &OAuthState, session: &Session, presented: &str) -> bool {
    secure_eq(csrf_token(state, session).as_bytes(), presented.as_bytes())
}

fn internal(err: &Internal) -> Response {
    tracing::error!(error = %err.chain(), "account request failed");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "CrossTrade could not complete this request. Please try again in a moment.",
    )
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
        Err(err) => Err(internal(&err)),
    }
}

/// The session of an account page. Without one, the browser is sent to sign in and back to
/// the page (a form post goes back to the overview).
struct PageSession(Session);

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

/// The session of a JSON request; for a mutation (`ApiSession<true>`) its `X-CSRF-Token` is
/// checked too.
struct ApiSession<const MUTATION: bool = false>(Session);

impl<S, const MUTATION: bool> FromRequestParts<S> for ApiSession<MUTATION>
where
    AccountState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let account = AccountState::from_ref(state);
        api_session(&account.oauth, &parts.headers, MUTATION)
            .await
            .map(ApiSession)
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
fn when(now: DateTime<Utc>, at: DateTime<Utc>) -> (String, String) {
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
    csrf: &'a str,
}

async fn get_account(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
) -> Response {
    let state = &account.oauth;
    let user = match store::users::find_by_id(state.db(), session.user_id).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Unknown account",
                "This account no longer exists.",
            );
        }
        Err(err) => return internal(&err.into()),
    };
    let status = account.addon.status(user.id).await;
    pages::render(
        StatusCode::OK,
        &AccountPage {
            email: &user.email,
            tier: user.tier.as_str(),
            elite: user.tier == store::users::Tier::Elite,
            connected: status.connected,
            addon_version: status.addon_version.as_deref(),
            nt8_version: status.nt8_version.as_deref(),
            csrf: &csrf_token(state, &session),
        },
    )
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

fn account_sign_in_page(
    state: &OAuthState,
    next: &str,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, Internal> {
    let csrf = random_token()?;
    let mut response = pages::render(
        status,
        &SignInPage {
            client_name: None,
            action: "/account/sign-in",
            csrf: &csrf,
            return_to: next,
            email,
            error,
        },
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(state, session::login_csrf_cookie_name(state), &csrf, 3600),
    );
    Ok(response)
}

async fn get_sign_in(
    State(account): State<AccountState>,
    Query(query): Query<NextQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    account_sign_in_page(&account.oauth, &next, "", None, StatusCode::OK)
        .unwrap_or_else(|err| internal(&err))
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    return_to: String,
}

async fn post_sign_in(
    State(account): State<AccountState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let state = &account.oauth;
    let cookie_csrf =
        session::cookie(&headers, session::login_csrf_cookie_name(state)).unwrap_or("");
    if cookie_csrf.is_empty() || !secure_eq(cookie_csrf.as_bytes(), form.csrf.as_bytes()) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Request expired",
            "The sign-in form expired or did not come from this site. Please sign in again.",
        );
    }
    let next = safe_next(Some(&form.return_to));
    let origin = Origin::of_request(
        client_ip(peer, &headers, &state.settings().trusted_proxies),
        &headers,
    );
    let outcome = sign_in::authenticate(state, &origin, &form.email, form.password, None).await;
    let page = |error, status| {
        account_sign_in_page(state, &next, &form.email, Some(error), status)
            .unwrap_or_else(|err| internal(&err))
    };
    match outcome.map(Authentication::user) {
        Ok(Ok(user)) => session::signed_in(state, user.id, &next)
            .await
            .unwrap_or_else(|err| internal(&err)),
        Ok(Err(refusal)) => refusal.mark(page(refusal.message, refusal.status)),
        Err(err) => internal(&err),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
    everywhere: Option<String>,
}

fn not_found(message: &str) -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", message)
}

fn forbidden() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "Request expired",
        "This form expired or did not come from this site. Reload the page and try again.",
    )
}

async fn post_sign_out(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Form(form): Form<CsrfForm>,
) -> Response {
    let state = &account.oauth;
    if !csrf_ok(state, &session, &form.csrf) {
        return forbidden();
    }
    let deleted = if form.everywhere.is_some() {
        crate::db::sessions::delete_all_of_user(state.db(), session.user_id)
            .await
            .map(drop)
    } else {
        crate::db::sessions::delete(state.db(), &session.id_hash).await
    };
    if let Err(err) = deleted {
        return internal(&err.into());
    }
    let mut response = Redirect::to("/account/sign-in").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(state, session::session_cookie_name(state), "", 0),
    );
    pages::secure(response)
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
}

#[derive(Template)]
#[template(path = "ai_clients.html")]
struct AiClientsPage {
    clients: Vec<ClientRow>,
    mcp_url: String,
}

fn client_row(now: DateTime<Utc>, grant: GrantSummary) -> ClientRow {
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
    }
}

async fn get_ai_clients(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
) -> Response {
    let state = &account.oauth;
    match grants::list_grants(state, session.user_id).await {
        Ok(list) => {
            let now = state.now();
            let clients = list
                .into_iter()
                .map(|grant| client_row(now, grant))
                .collect();
            pages::render(
                StatusCode::OK,
                &AiClientsPage {
                    clients,
                    mcp_url: state.settings().resource(),
                },
            )
        }
        Err(err) => internal(&err),
    }
}

#[derive(Template)]
#[template(path = "ai_client_revoke.html")]
struct RevokeClientPage<'a> {
    name: &'a str,
    grant_id: Uuid,
    csrf: &'a str,
}

async fn get_revoke_ai_client(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Path(grant_id): Path<Uuid>,
) -> Response {
    let state = &account.oauth;
    let grant = match grants::list_grants(state, session.user_id).await {
        Ok(list) => list.into_iter().find(|g| g.grant_id == grant_id),
        Err(err) => return internal(&err),
    };
    let Some(grant) = grant else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "This AI client is not connected to your account.",
        );
    };
    let name = grant.client_name.unwrap_or(grant.client_id);
    pages::render(
        StatusCode::OK,
        &RevokeClientPage {
            name: &name,
            grant_id,
            csrf: &csrf_token(state, &session),
        },
    )
}

async fn post_revoke_ai_client(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Path(grant_id): Path<Uuid>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let state = &account.oauth;
    if !csrf_ok(state, &session, &form.csrf) {
        return forbidden();
    }
    match grants::revoke_user_grant(state, session.user_id, grant_id).await {
        Ok(true) => pages::secure(Redirect::to("/account/ai-clients").into_response()),
        // Someone else's grant, or one already gone: 404 either way, so ids do not leak.
        Ok(false) => not_found("This AI client is not connected to your account."),
        Err(err) => internal(&err),
    }
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

async fn get_addon_keys(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
) -> Response {
    let state = &account.oauth;
    match account.addon.list_keys(session.user_id).await {
        Ok(keys) => {
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
            pages::render(
                StatusCode::OK,
                &AddonKeysPage {
                    keys,
                    csrf: &csrf_token(state, &session),
                },
            )
        }
        Err(err) => internal(&err),
    }
}

async fn post_addon_key(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Form(form): Form<CsrfForm>,
) -> Response {
    let state = &account.oauth;
    if !csrf_ok(state, &session, &form.csrf) {
        return forbidden();
    }
    match account.addon.create_key(session.user_id).await {
        Ok((_, key)) => {
            let mut response = pages::render(StatusCode::OK, &AddonKeyCreatedPage { key: &key });
            // This page alone runs one script of ours: the copy button.
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'",
                ),
            );
            response
        }
        Err(err) => internal(&err),
    }
}

async fn post_revoke_addon_key(
    State(account): State<AccountState>,
    PageSession(session): PageSession,
    Path(key_id): Path<Uuid>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let state = &account.oauth;
    if !csrf_ok(state, &session, &form.csrf) {
        return forbidden();
    }
    match account.addon.revoke_key(session.user_id, key_id).await {
        Ok(true) => pages::secure(Redirect::to("/account/addon-keys").into_response()),
        Ok(false) => not_found("This Add-On key does not exist on your account."),
        Err(err) => internal(&err),
    }
}

async fn get_copy_script() -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../templates/copy.js"),
    )
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// JSON API errors: `{error, message}` like the rest of the product, never cached.
fn api_error(status: StatusCode, error: &str, message: &str) -> Response {
    let mut response =
        (status, Json(json!({ "error": error, "message": message }))).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn api_ok(status: StatusCode, body: serde_json::Value, csrf: Option<&str>) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(token) = csrf.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert("x-csrf-token", token);
    }
    response
}

/// The session for a JSON request; mutations also need the CSRF header.
async fn api_session(
    state: &OAuthState,
    headers: &HeaderMap,
    mutation: bool,
) -> Result<Session, Response> {
    let session = match session::current(state, headers).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            return Err(api_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "sign in to CrossTrade in this browser first",
            ));
        }
        Err(err) => {
            tracing::error!(error = %err.chain(), "account API failed");
            return Err(api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "a transient server error occurred; retry shortly",
            ));
        }
    };
    if mutation {
        let presented = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !csrf_ok(state, &session, presented) {
            return Err(api_error(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "missing or wrong X-CSRF-Token header",
            ));
        }
    }
    Ok(session)
}

fn api_internal(err: &Internal) -> Response {
    tracing::error!(error = %err.chain(), "account API failed");
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "a transient server error occurred; retry shortly",
    )
}

async fn api_list_ai_clients(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession,
) -> Response {
    let state = &account.oauth;
    match grants::list_grants(state, session.user_id).await {
        Ok(list) => api_ok(
            StatusCode::OK,
            json!({ "clients": list }),
            Some(&csrf_token(state, &session)),
        ),
        Err(err) => api_internal(&err),
    }
}

async fn api_revoke_ai_client(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession<true>,
    Path(grant_id): Path<Uuid>,
) -> Response {
    let state = &account.oauth;
    match grants::revoke_user_grant(state, session.user_id, grant_id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such AI client on this account",
        ),
        Err(err) => api_internal(&err),
    }
}

async fn api_list_addon_keys(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession,
) -> Response {
    let state = &account.oauth;
    match account.addon.list_keys(session.user_id).await {
        Ok(keys) => api_ok(
            StatusCode::OK,
            json!({ "keys": keys }),
            Some(&csrf_token(state, &session)),
        ),
        Err(err) => api_internal(&err),
    }
}

async fn api_create_addon_key(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession<true>,
) -> Response {
    match account.addon.create_key(session.user_id).await {
        Ok((key_id, key)) => api_ok(
            StatusCode::CREATED,
            json!({ "key_id": key_id, "key": key }),
            None,
        ),
        Err(err) => api_internal(&err),
    }
}

async fn api_revoke_addon_key(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession<true>,
    Path(key_id): Path<Uuid>,
) -> Response {
    match account.addon.revoke_key(session.user_id, key_id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such Add-On key on this account",
        ),
        Err(err) => api_internal(&err),
    }
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
        let ago = |s| when(now, now - chrono::TimeDelta::seconds(s)).0;
        assert_eq!(ago(5), "just now");
        assert_eq!(ago(180), "3 minutes ago");
        assert_eq!(ago(3600), "1 hour ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(when(now, now).1, "2027-01-15 08:00:00 UTC");
    }
}
