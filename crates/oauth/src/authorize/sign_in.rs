//! Signing in during an authorization: the page, and the password form it posts.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::client_ip::client_ip;
use crate::crypto::secure_eq;
use crate::error::Internal;
use crate::session;
use crate::state::{OAuthState, paths};

use super::{Rejection, origin_of, respond, validate};

pub(super) fn sign_in_page(
    state: &OAuthState,
    client_name: &str,
    return_to: &str,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, Internal> {
    let restart = format!("{}?{return_to}", paths::AUTHORIZE);
    session::sign_in_form(
        state,
        status,
        session::SignInForm {
            client_name: Some(client_name),
            action: paths::SIGN_IN,
            return_to,
            restart: &restart,
            email,
            error,
        },
    )
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
