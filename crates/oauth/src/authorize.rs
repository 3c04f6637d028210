//! The authorization endpoint (RFC 6749 §4.1.1 with OAuth 2.1 and the MCP profile): request
//! validation, the sign-in page, the consent screen and its decision.
//!
//! Errors that cannot be redirected safely (unknown client, missing or unregistered
//! `redirect_uri`) are pages (RFC 6749 §4.1.2.1). Everything else is redirected to the client
//! with `state` and `iss` (RFC 9207). Consent is never remembered: every authorization shows the
//! screen and needs an explicit click.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::TimeDelta;

use crate::client_ip::client_ip;
use crate::error::Internal;
use crate::events::Origin;
use crate::pages::{self, error_page};
use crate::params::{CodeChallenge, ResourceUri};
use crate::scope::Scope;
use crate::session;
use crate::state::OAuthState;

mod consent;
mod request;
mod sign_in;

use consent::consent_page;
pub use consent::post_consent;
use request::validate;
pub use sign_in::post_sign_in;
use sign_in::sign_in_page;

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
    pub code_challenge: CodeChallenge,
    pub scope: Scope,
    pub resource: ResourceUri,
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

fn origin_of(peer: SocketAddr, headers: &HeaderMap, state: &OAuthState) -> Origin {
    Origin::of_request(
        client_ip(peer, headers, &state.settings().trusted_proxies),
        headers,
    )
}
