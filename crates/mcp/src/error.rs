//! The MCP endpoint's HTTP-level outcomes: the product documents' `{error, message}` bodies with
//! the RFC 6750 §3 / RFC 9728 §5.1 `WWW-Authenticate` challenges (DESIGN.md, "MCP contracts").
//! JSON-RPC-level mistakes never come here; they are JSON-RPC errors (see `protocol`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::relay::CallError;

/// The scope string of the challenges: clients ask for both, the consent screen grants one.
pub const CHALLENGE_SCOPE: &str = "mcp:read mcp:trade";

/// One HTTP-level outcome of the MCP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// No token at all: the discovery challenge, no body.
    NoToken,
    /// A token was presented and refused (expired, revoked, malformed, wrong audience, unknown,
    /// in the query string, non-Bearer scheme).
    InvalidToken(&'static str),
    /// `tools/call` by an account below Elite.
    SubscriptionRequired,
    /// `tools/call` of a trade tool with an `mcp:read` grant.
    InsufficientScope,
    /// The tool needs NT8 and the Add-On is not there, dropped, or was too slow.
    AddonDisconnected(String),
    /// Transient backend failure (database down, verifier unavailable), or this replica at
    /// capacity.
    ServerError(&'static str),
    /// The account holds as many of a per-account resource (Add-On calls in flight, open
    /// streams) as it may on this replica: 429 with `Retry-After`.
    TooManyRequests(&'static str),
    /// `Origin` present and not in the allow-list (DNS-rebinding protection).
    OriginNotAllowed,
    /// DELETE: there are no sessions to terminate.
    MethodNotAllowed,
}

impl HttpError {
    /// The 408 for a relay failure, saying which case it was; 503 for `Unavailable`.
    pub fn from_relay(error: &CallError, deadline: Duration) -> Self {
        match error {
            CallError::NotConnected => HttpError::AddonDisconnected(
                "The CrossTrade Add-On is not connected: open NinjaTrader 8 and check that the \
                 CrossTrade Add-On panel (v1.13.0 or later) shows connected"
                    .to_owned(),
            ),
            CallError::Disconnected => HttpError::AddonDisconnected(
                "The CrossTrade Add-On disconnected while the call was in flight; its outcome is \
                 unknown, so check NinjaTrader 8 before retrying"
                    .to_owned(),
            ),
            CallError::DeadlineExceeded => HttpError::AddonDisconnected(format!(
                "The CrossTrade Add-On did not answer within {} s; check NinjaTrader 8 for the \
                 outcome before retrying",
                deadline.as_secs().max(1)
            )),
            CallError::Unavailable => {
                HttpError::ServerError("The Add-On relay is temporarily unavailable; retry shortly")
            }
            CallError::TooManyCalls => HttpError::TooManyRequests(
                "This account already has as many CrossTrade Add-On calls in flight as it may; \
                 retry when one of them has finished",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::NoToken | HttpError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            HttpError::SubscriptionRequired
            | HttpError::InsufficientScope
            | HttpError::OriginNotAllowed => StatusCode::FORBIDDEN,
            HttpError::AddonDisconnected(_) => StatusCode::REQUEST_TIMEOUT,
            HttpError::ServerError(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Renders the response; `resource_metadata` is the RFC 9728 metadata URL of the challenges.
    pub fn into_response_with(self, resource_metadata: &str) -> Response {
        let status = self.status();
        let challenge = match &self {
            HttpError::NoToken => Some(format!(
                r#"Bearer resource_metadata="{resource_metadata}", scope="{CHALLENGE_SCOPE}""#
            )),
            HttpError::InvalidToken(_) => Some(format!(
                r#"Bearer error="invalid_token", resource_metadata="{resource_metadata}""#
            )),
            // RFC 6750 §3.1: the scope needed, so a conforming client can step up.
            HttpError::InsufficientScope => Some(format!(
                r#"Bearer error="insufficient_scope", scope="{CHALLENGE_SCOPE}", resource_metadata="{resource_metadata}""#
            )),
            _ => None,
        };
        let body = match self {
            HttpError::NoToken => None,
            HttpError::InvalidToken(message) => Some(envelope("invalid_token", message)),
            HttpError::SubscriptionRequired => Some(envelope(
                "subscription_required",
                "MCP requires an Elite subscription",
            )),
            HttpError::InsufficientScope => {
                Some(json!({ "error": "insufficient_scope", "required": "mcp:trade" }))
            }
            HttpError::AddonDisconnected(message) => Some(envelope("addon_disconnected", &message)),
            HttpError::ServerError(message) => Some(envelope("server_error", message)),
            HttpError::TooManyRequests(message) => Some(envelope("too_many_requests", message)),
            HttpError::OriginNotAllowed => Some(envelope(
                "forbidden_origin",
                "Requests from this Origin are not allowed",
            )),
            HttpError::MethodNotAllowed => Some(envelope(
                "method_not_allowed",
                "This server is stateless: there is no session to delete",
            )),
        };
        let mut response = match body {
            Some(body) => (status, Json(body)).into_response(),
            None => status.into_response(),
        };
        if let Some(challenge) = challenge
            && let Ok(value) = HeaderValue::from_str(&challenge)
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        // A transient failure: tell the client when to retry rather than leave it guessing.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        // The account's own calls and streams free up quickly: retry soon, not in a burst.
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
        }
        response
    }
}

fn envelope(error: &str, message: &str) -> serde_json::Value {
    json!({ "error": error, "message": message })
}

/// An [`HttpError`] ready to render, as the bearer extractor's rejection.
#[derive(Debug)]
pub struct HttpRejection {
    pub(crate) error: HttpError,
    pub(crate) resource_metadata: Arc<str>,
}

impl IntoResponse for HttpRejection {
    fn into_response(self) -> Response {
        self.error.into_response_with(&self.resource_metadata)
    }
}
