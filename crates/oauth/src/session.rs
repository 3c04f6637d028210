//! Browser sessions: the cookie holds a random id, the database its SHA-256.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::crypto::{random_token, sha256};
use crate::db;
use crate::error::Internal;
use crate::pages::{self, SignInPage};
use crate::state::OAuthState;

const SESSION_LIFETIME: TimeDelta = TimeDelta::hours(12);

/// The session cookie's name: `__Host-` (Secure, host-only, path /) when served over https,
/// so a sibling subdomain cannot set or shadow it (RFC 6265bis §4.1.3.2). Over http (local
/// development) browsers refuse the prefix, so the plain name is used.
pub fn session_cookie_name(state: &OAuthState) -> &'static str {
    if state.settings().secure_cookies() {
        "__Host-ct_session"
    } else {
        "ct_session"
    }
}

/// The login-CSRF cookie's name, prefixed like the session's: a sibling subdomain that could
/// plant it would defeat the double-submit check of the sign-in form.
pub fn login_csrf_cookie_name(state: &OAuthState) -> &'static str {
    if state.settings().secure_cookies() {
        "__Host-ct_login_csrf"
    } else {
        "ct_login_csrf"
    }
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

pub fn set_cookie(state: &OAuthState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.settings().secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: Vec<u8>,
    pub user_id: Uuid,
    pub email: String,
}

/// The live session named by the request's cookie, if any.
pub async fn current(state: &OAuthState, headers: &HeaderMap) -> Result<Option<Session>, Internal> {
    let Some(id) = cookie(headers, session_cookie_name(state)) else {
        return Ok(None);
    };
    let id_hash = sha256(id.as_bytes());
    let row = db::sessions::find(state.db(), &id_hash, state.now()).await?;
    Ok(row.map(|(user_id, email)| Session {
        id_hash,
        user_id,
        email,
    }))
}

/// Creates a session; returns the cookie value (the only copy of the id).
pub async fn create(
    state: &OAuthState,
    user_id: Uuid,
) -> Result<(String, DateTime<Utc>), Internal> {
    let id = random_token()?;
    let expires_at = state.now() + SESSION_LIFETIME;
    db::sessions::insert(
        state.db(),
        &sha256(id.as_bytes()),
        user_id,
        state.now(),
        expires_at,
    )
    .await?;
    Ok((id, expires_at))
}

/// The answer to a successful password sign-in: a new session and its cookie, the login-CSRF
/// cookie cleared, and a redirect to `to`.
pub async fn signed_in(state: &OAuthState, user_id: Uuid, to: &str) -> Result<Response, Internal> {
    use axum::response::IntoResponse;
    let (session_id, _) = create(state, user_id).await?;
    let mut response = axum::response::Redirect::to(to).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            state,
            session_cookie_name(state),
            &session_id,
            lifetime_seconds(),
        ),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(state, login_csrf_cookie_name(state), "", 0),
    );
    Ok(pages::secure(response))
}

pub fn lifetime_seconds() -> i64 {
    SESSION_LIFETIME.num_seconds()
}

/// What a sign-in page shows, besides its CSRF token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignInForm<'a> {
    /// The application asking, when signing in for an authorization.
    pub client_name: Option<&'a str>,
    /// Where the form posts.
    pub action: &'a str,
    pub return_to: &'a str,
    /// The same sign-in with the form empty.
    pub restart: &'a str,
    pub email: &'a str,
    pub error: Option<&'a str>,
}

/// A sign-in page with a fresh login-CSRF token, also set in its cookie.
pub(crate) fn sign_in_form(
    state: &OAuthState,
    status: StatusCode,
    form: SignInForm<'_>,
) -> Result<Response, Internal> {
    let csrf = random_token()?;
    let mut response = pages::render(
        status,
        &SignInPage {
            client_name: form.client_name,
            action: form.action,
            csrf: &csrf,
            return_to: form.return_to,
            restart: form.restart,
            email: form.email,
            error: form.error,
        },
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, login_csrf_cookie_name(state), &csrf, 3600),
    );
    Ok(response)
}
