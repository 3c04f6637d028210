//! The authorization endpoint (RFC 6749 §4.1.1 with OAuth 2.1 and the MCP profile): request
//! validation, the sign-in page, the consent screen and its decision.
//!
//! Errors that cannot be redirected safely (unknown client, missing or unregistered
//! `redirect_uri`) are pages (RFC 6749 §4.1.2.1). Everything else is redirected to the client
//! with `state` and `iss` (RFC 9207). Consent is never remembered: every authorization shows the
//! screen and needs an explicit click.

use std::net::{IpAddr, SocketAddr};

use axum::Form;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::TimeDelta;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::client_ip::client_ip;
use crate::crypto::{random_token, secure_eq, sha256};
use crate::db;
use crate::error::Internal;
use crate::events::{self, Kind, Origin};
use crate::pages::{self, ConsentPage, SignInPage, error_page};
use crate::redirect_uri;
use crate::scope::Scope;
use crate::session;
use crate::state::{OAuthState, paths};

const CONSENT_LIFETIME: TimeDelta = TimeDelta::minutes(10);
const MAX_STATE: usize = 2048;

/// A validated authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub client_name: String,
    /// For a client identified by a metadata document: the document URL's host.
    pub client_host: Option<String>,
    /// Every redirect URI the client has is loopback (any program on the computer could be it).
    pub loopback_only: bool,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: Scope,
    pub resource: String,
}

enum Rejection {
    Page(StatusCode, &'static str, String),
    /// 429 page with `Retry-After` seconds.
    Throttled(u64),
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
    Internal(Internal),
}

impl From<Internal> for Rejection {
    fn from(err: Internal) -> Self {
        Rejection::Internal(err)
    }
}

impl From<sqlx::Error> for Rejection {
    fn from(err: sqlx::Error) -> Self {
        Rejection::Internal(err.into())
    }
}

/// The redirect back to the client: `params`, then `state` and `iss` (RFC 9207 §2).
pub fn client_redirect(
    state: &OAuthState,
    redirect_uri: &str,
    params: &[(&str, &str)],
    client_state: Option<&str>,
) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "The redirect URI is invalid.",
        );
    };
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in params {
            query.append_pair(key, value);
        }
        if let Some(client_state) = client_state {
            query.append_pair("state", client_state);
        }
        query.append_pair("iss", &state.settings().issuer);
    }
    pages::secure(Redirect::to(url.as_str()).into_response())
}

fn respond(state: &OAuthState, rejection: Rejection) -> Response {
    match rejection {
        Rejection::Page(status, title, message) => error_page(status, title, &message),
        Rejection::Throttled(seconds) => pages::retry_after(
            error_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "Too many applications were looked up from this network. Wait a minute and try again.",
            ),
            seconds,
        ),
        Rejection::Redirect {
            redirect_uri,
            state: client_state,
            error,
            description,
        } => client_redirect(
            state,
            &redirect_uri,
            &[("error", error), ("error_description", &description)],
            client_state.as_deref(),
        ),
        Rejection::Internal(err) => {
            tracing::error!(error = %err.chain(), "authorization request failed");
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "CrossTrade could not complete this request. Please try again in a moment.",
            )
        }
    }
}

/// All parameters, and the name of the first one that appears more than once or holds a NUL
/// (which PostgreSQL text cannot store and no OAuth value contains).
fn parse_query(raw: &str) -> (Vec<(String, String)>, Option<String>) {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut seen = std::collections::HashSet::with_capacity(pairs.len());
    let repeated = pairs
        .iter()
        .find(|(key, value)| {
            !seen.insert(key.as_str()) || key.contains('\0') || value.contains('\0')
        })
        .map(|(key, _)| key.clone());
    (pairs, repeated)
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// RFC 8707 §2 with the product decision: a trailing slash and the case of scheme and host do
/// not matter; anything else must name this server's MCP resource.
pub fn resource_matches(canonical: &str, requested: &str) -> bool {
    fn normalise(raw: &str) -> Option<String> {
        if raw.contains('#') {
            return None;
        }
        let url = url::Url::parse(raw).ok()?;
        let text = url.as_str();
        Some(text.strip_suffix('/').unwrap_or(text).to_owned())
    }
    match (normalise(canonical), normalise(requested)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The request's parameters checked in order; `ip` (the browser's) pays for any document fetch.
async fn validate(
    state: &OAuthState,
    raw_query: &str,
    ip: IpAddr,
) -> Result<AuthorizationRequest, Rejection> {
    let (pairs, repeated) = parse_query(raw_query);
    // Which client and where to redirect must be unambiguous before anything is redirected.
    if let Some(key) = repeated
        .as_deref()
        .filter(|k| matches!(*k, "client_id" | "redirect_uri"))
    {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            format!("The parameter {key} appears more than once or is malformed."),
        ));
    }
    let pairs_for_lookup = pairs.as_slice();
    let Some(client_id) = param(pairs_for_lookup, "client_id") else {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Unknown application",
            "The request does not name a registered application (client_id is missing).".into(),
        ));
    };
    let (client_id, client_name, registered, client_host) = if crate::cimd::is_url(client_id) {
        // A Client ID Metadata Document: fetched (or taken from the cache) before anything else.
        match crate::cimd::resolve(state, client_id, ip).await? {
            Ok(client) => (
                client_id.to_owned(),
                client.client_name,
                client.redirect_uris,
                Some(redirect_uri::display_host(client_id)),
            ),
            Err(crate::cimd::Refusal::Throttled(seconds)) => {
                return Err(Rejection::Throttled(seconds));
            }
            Err(crate::cimd::Refusal::Invalid(reason)) => {
                return Err(Rejection::Page(
                    StatusCode::BAD_REQUEST,
                    "Unknown application",
                    format!(
                        "CrossTrade could not use this application's client metadata document: {reason}."
                    ),
                ));
            }
        }
    } else {
        let client = db::clients::registered(state.db(), client_id).await?;
        let Some(db::clients::Registered {
            client_id,
            client_name,
            redirect_uris: registered,
        }) = client
        else {
            return Err(Rejection::Page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                "This application is not registered with CrossTrade. Remove and add the server again in your AI application.".into(),
            ));
        };
        (client_id, client_name, registered, None)
    };
    let Some(redirect_uri) = param(pairs_for_lookup, "redirect_uri") else {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The request has no redirect_uri.".into(),
        ));
    };
    if !registered
        .iter()
        .any(|r| redirect_uri::matches(r, redirect_uri))
    {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "The redirect_uri is not registered for this application.".into(),
        ));
    }
    let redirect_uri = redirect_uri.to_owned();
    let loopback_only = registered.iter().all(|r| redirect_uri::is_loopback(r));
    let client_state = param(pairs_for_lookup, "state").map(str::to_owned);
    let redirect = |error: &'static str, description: String| Rejection::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: client_state.clone(),
        error,
        description,
    };
    if let Some(key) = repeated {
        return Err(redirect(
            "invalid_request",
            format!("parameter {key} is repeated or contains a NUL character"),
        ));
    }
    if client_state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
        return Err(redirect(
            "invalid_request",
            format!("state exceeds {MAX_STATE} characters"),
        ));
    }
    match param(&pairs, "response_type") {
        Some("code") => {}
        Some(_) => {
            return Err(redirect(
                "unsupported_response_type",
                "only response_type=code is supported".into(),
            ));
        }
        None => {
            return Err(redirect(
                "invalid_request",
                "response_type is required".into(),
            ));
        }
    }
    let Some(code_challenge) = param(&pairs, "code_challenge") else {
        return Err(redirect(
            "invalid_request",
            "PKCE code_challenge is required".into(),
        ));
    };
    if param(&pairs, "code_challenge_method") != Some("S256") {
        return Err(redirect(
            "invalid_request",
            "code_challenge_method must be S256".into(),
        ));
    }
    let well_formed = code_challenge.len() == 43
        && code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(redirect(
            "invalid_request",
            "code_challenge must be 43 base64url characters (S256)".into(),
        ));
    }
    let scope = Scope::parse_request(param(&pairs, "scope"))
        .map_err(|message| redirect("invalid_scope", message))?;
    let canonical = state.settings().resource();
    if let Some(resource) = param(&pairs, "resource")
        && !resource_matches(&canonical, resource)
    {
        return Err(redirect(
            "invalid_target",
            format!("resource must be {canonical}"),
        ));
    }
    Ok(AuthorizationRequest {
        client_name: client_name.unwrap_or_else(|| client_id.clone()),
        client_host,
        loopback_only,
        client_id,
        redirect_uri,
        state: client_state,
        code_challenge: code_challenge.to_owned(),
        scope,
        resource: canonical,
    })
}

/// `GET /v1/oauth/mcp/authorize`.
pub async fn get_authorize(
    State(state): State<OAuthState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let raw = query.unwrap_or_default();
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    match authorize(&state, &headers, &raw, ip).await {
        Ok(response) => response,
        Err(rejection) => respond(&state, rejection),
    }
}

async fn authorize(
    state: &OAuthState,
    headers: &HeaderMap,
    raw: &str,
    ip: IpAddr,
) -> Result<Response, Rejection> {
    let request = validate(state, raw, ip).await?;
    match session::current(state, headers).await? {
        None => Ok(sign_in_page(
            state,
            &request.client_name,
            raw,
            "",
            None,
            StatusCode::OK,
        )?),
        Some(session) => Ok(consent_page(state, &session, &request).await?),
    }
}

fn sign_in_page(
    state: &OAuthState,
    client_name: &str,
    return_to: &str,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, Internal> {
    let csrf = random_token()?;
    let mut response = pages::render(
        status,
        &SignInPage {
            client_name: Some(client_name),
            action: paths::SIGN_IN,
            csrf: &csrf,
            return_to,
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

async fn consent_page(
    state: &OAuthState,
    session: &session::Session,
    request: &AuthorizationRequest,
) -> Result<Response, Internal> {
    let transaction = Uuid::new_v4();
    let csrf = random_token()?;
    let now = state.now();
    db::consents::insert(
        state.db(),
        db::consents::NewConsent {
            id: transaction,
            session_hash: &session.id_hash,
            csrf_hash: &sha256(csrf.as_bytes()),
            client_id: &request.client_id,
            redirect_uri: &request.redirect_uri,
            state: request.state.as_deref(),
            code_challenge: &request.code_challenge,
            scope_offered: request.scope.as_str(),
            resource: &request.resource,
            now,
            expires_at: now + CONSENT_LIFETIME,
        },
    )
    .await?;
    let transaction = transaction.to_string();
    Ok(pages::render(
        StatusCode::OK,
        &ConsentPage {
            client_name: &request.client_name,
            client_host: request.client_host.as_deref(),
            loopback_only: request.loopback_only,
            redirect_host: &redirect_uri::display_host(&request.redirect_uri),
            loopback: redirect_uri::is_loopback(&request.redirect_uri),
            account_email: &session.email,
            transaction: &transaction,
            csrf: &csrf,
            offer_trade: request.scope == Scope::Trade,
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    return_to: String,
}

fn origin_of(peer: SocketAddr, headers: &HeaderMap, state: &OAuthState) -> Origin {
    Origin::of_request(
        client_ip(peer, headers, &state.settings().trusted_proxies),
        headers,
    )
}

/// `POST /v1/oauth/mcp/sign-in`.
pub async fn post_sign_in(
    State(state): State<OAuthState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    match sign_in(&state, peer, &headers, form).await {
        Ok(response) => response,
        Err(rejection) => respond(&state, rejection),
    }
}

async fn sign_in(
    state: &OAuthState,
    peer: SocketAddr,
    headers: &HeaderMap,
    form: SignInForm,
) -> Result<Response, Rejection> {
    // Login CSRF: the form must carry the value of the cookie set with the page.
    let cookie_csrf =
        session::cookie(headers, session::login_csrf_cookie_name(state)).unwrap_or("");
    if cookie_csrf.is_empty() || !secure_eq(cookie_csrf.as_bytes(), form.csrf.as_bytes()) {
        return Err(Rejection::Page(
            StatusCode::FORBIDDEN,
            "Request expired",
            "The sign-in form expired or did not come from this site. Start again from your AI application.".into(),
        ));
    }
    // Only an authorization request can be returned to, never an arbitrary URL.
    if form.return_to.contains('#') || !form.return_to.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The request is malformed.".into(),
        ));
    }
    let origin = origin_of(peer, headers, state);
    let ip = client_ip(peer, headers, &state.settings().trusted_proxies);
    let request = validate(state, &form.return_to, ip).await?;
    let authenticated = crate::sign_in::authenticate(
        state,
        &origin,
        &form.email,
        form.password,
        Some(&request.client_id),
    )
    .await?;
    match authenticated.user() {
        Ok(user) => Ok(session::signed_in(
            state,
            user.id,
            &format!("{}?{}", paths::AUTHORIZE, form.return_to),
        )
        .await?),
        Err(refusal) => Ok(refusal.mark(sign_in_page(
            state,
            &request.client_name,
            &form.return_to,
            &form.email,
            Some(refusal.message),
            refusal.status,
        )?)),
    }
}

#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    transaction: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    scope: Option<String>,
}

/// `POST /v1/oauth/mcp/consent`.
pub async fn post_consent(
    State(state): State<OAuthState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    match consent(&state, peer, &headers, form).await {
        Ok(response) => response,
        Err(rejection) => respond(&state, rejection),
    }
}

async fn consent(
    state: &OAuthState,
    peer: SocketAddr,
    headers: &HeaderMap,
    form: ConsentForm,
) -> Result<Response, Rejection> {
    let forbidden = || {
        Rejection::Page(
            StatusCode::FORBIDDEN,
            "Request expired",
            "This consent screen expired, was already used, or did not come from this browser. Start again from your AI application.".into(),
        )
    };
    let Some(session) = session::current(state, headers).await? else {
        return Err(forbidden());
    };
    let Ok(transaction) = Uuid::parse_str(&form.transaction) else {
        return Err(forbidden());
    };
    // Single use: claiming the transaction and checking it belongs to this session is one
    // statement.
    let claimed =
        db::consents::claim(state.db(), transaction, &session.id_hash, state.now()).await?;
    let Some(db::consents::Claimed {
        csrf_hash,
        client_id,
        redirect_uri,
        state: client_state,
        code_challenge,
        scope_offered: offered,
        resource,
    }) = claimed
    else {
        return Err(forbidden());
    };
    if !secure_eq(&csrf_hash, &sha256(form.csrf.as_bytes())) {
        return Err(forbidden());
    }
    // The redirect URI was checked when the screen was shown; a client metadata document
    // refreshed since then may have dropped it.
    let registered = db::clients::redirect_uris(state.db(), &client_id).await?;
    if !registered
        .unwrap_or_default()
        .iter()
        .any(|r| redirect_uri::matches(r, &redirect_uri))
    {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "The redirect_uri is no longer registered for this application. Start again from your AI application.".into(),
        ));
    }
    let origin = origin_of(peer, headers, state);
    if form.decision != "allow" {
        events::record(
            state.db(),
            Kind::ConsentDenied,
            Some(&client_id),
            Some(session.user_id),
            &origin,
            json!({}),
        )
        .await;
        return Ok(client_redirect(
            state,
            &redirect_uri,
            &[
                ("error", "access_denied"),
                ("error_description", "the user denied the request"),
            ],
            client_state.as_deref(),
        ));
    }
    let offered = Scope::from_stored(&offered).unwrap_or(Scope::Read);
    let chosen = match form.scope.as_deref() {
        None | Some("mcp:read") => Scope::Read,
        Some("mcp:trade") => Scope::Trade,
        Some(_) => {
            return Err(Rejection::Page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "Unknown permission.".into(),
            ));
        }
    };
    if !offered.covers(chosen) {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "That permission was not requested by the application.".into(),
        ));
    }
    let code = random_token()?;
    let now = state.now();
    let lifetime = TimeDelta::from_std(state.settings().authorization_code_lifetime)
        .unwrap_or(TimeDelta::seconds(60));
    let issued = db::codes::issue(
        state.db(),
        db::codes::NewCode {
            code_hash: &sha256(code.as_bytes()),
            client_id: &client_id,
            user_id: session.user_id,
            redirect_uri: &redirect_uri,
            code_challenge: &code_challenge,
            scope: chosen.as_str(),
            resource: &resource,
            now,
            expires_at: now + lifetime,
            session_hash: &session.id_hash,
        },
    )
    .await?;
    if !issued {
        return Err(Rejection::Page(
            StatusCode::FORBIDDEN,
            "Signed out",
            "This browser was signed out. Start again from your application.".into(),
        ));
    }
    events::record(
        state.db(),
        Kind::ConsentGranted,
        Some(&client_id),
        Some(session.user_id),
        &origin,
        json!({ "scope": chosen.as_str() }),
    )
    .await;
    Ok(client_redirect(
        state,
        &redirect_uri,
        &[("code", &code)],
        client_state.as_deref(),
    ))
}
