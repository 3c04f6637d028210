//! The MCP endpoint's HTTP-level outcomes: the product documents' `{error, message}` bodies with
//! the RFC 6750 §3 / RFC 9728 §5.1 `WWW-Authenticate` challenges (DESIGN.md, "MCP contracts").
//! JSON-RPC-level mistakes never come here; they are JSON-RPC errors (see `protocol`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use vocabulary::{CallError, ErrorBody, Scope};

/// The scope string of the challenges: clients ask for both, the consent screen grants one.
pub const CHALLENGE_SCOPE: &str = "mcp:read mcp:trade";

/// The `error` codes of the endpoint's HTTP-level answers, each with its status and meaning: the
/// one table the contract (and the README's table) is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpCode {
    InvalidToken,
    SubscriptionRequired,
    InsufficientScope,
    ForbiddenOrigin,
    MethodNotAllowed,
    AddonDisconnected,
    TooManyRequests,
    ServerError,
}

impl HttpCode {
    pub const ALL: [HttpCode; 8] = [
        HttpCode::InvalidToken,
        HttpCode::SubscriptionRequired,
        HttpCode::InsufficientScope,
        HttpCode::ForbiddenOrigin,
        HttpCode::MethodNotAllowed,
        HttpCode::AddonDisconnected,
        HttpCode::TooManyRequests,
        HttpCode::ServerError,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            HttpCode::InvalidToken => "invalid_token",
            HttpCode::SubscriptionRequired => "subscription_required",
            HttpCode::InsufficientScope => "insufficient_scope",
            HttpCode::ForbiddenOrigin => "forbidden_origin",
            HttpCode::MethodNotAllowed => "method_not_allowed",
            HttpCode::AddonDisconnected => "addon_disconnected",
            HttpCode::TooManyRequests => "too_many_requests",
            HttpCode::ServerError => "server_error",
        }
    }

    pub const fn status(self) -> StatusCode {
        match self {
            HttpCode::InvalidToken => StatusCode::UNAUTHORIZED,
            HttpCode::SubscriptionRequired
            | HttpCode::InsufficientScope
            | HttpCode::ForbiddenOrigin => StatusCode::FORBIDDEN,
            HttpCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HttpCode::AddonDisconnected => StatusCode::REQUEST_TIMEOUT,
            HttpCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            HttpCode::ServerError => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the code means, for the README's table.
    pub const fn meaning(self) -> &'static str {
        match self {
            HttpCode::InvalidToken => {
                "the token is expired, revoked, malformed, for another audience or a deleted account, not a Bearer token, or in the query string"
            }
            HttpCode::SubscriptionRequired => "`tools/call` on an account below Elite",
            HttpCode::InsufficientScope => {
                "`tools/call` of a trade tool with an `mcp:read` token (the body names `required` instead of a message)"
            }
            HttpCode::ForbiddenOrigin => "a browser `Origin` that is not allowed",
            HttpCode::MethodNotAllowed => {
                "DELETE (there are no sessions), or GET with protocol version 2026-07-28"
            }
            HttpCode::AddonDisconnected => {
                "the tool needs NT8 and the Add-On is not connected, dropped mid-call, or did not answer in time"
            }
            HttpCode::TooManyRequests => {
                "the account's Add-On calls or streams on this replica are at their cap; `Retry-After: 1`"
            }
            HttpCode::ServerError => {
                "a transient failure (the database, token verification, this replica at capacity); `Retry-After: 5`"
            }
        }
    }

    /// The `Retry-After` seconds the code is answered with.
    fn retry_after(self) -> Option<&'static str> {
        match self {
            // A transient failure: tell the client when to retry rather than leave it guessing.
            HttpCode::ServerError => Some("5"),
            // The account's own calls and streams free up quickly: retry soon, not in a burst.
            HttpCode::TooManyRequests => Some("1"),
            _ => None,
        }
    }
}

impl vocabulary::ErrorCodeTable for HttpCode {
    const ALL: &'static [Self] = &HttpCode::ALL;

    fn code(self) -> &'static str {
        self.as_str()
    }

    fn status(self) -> u16 {
        HttpCode::status(self).as_u16()
    }

    fn meaning(self) -> &'static str {
        HttpCode::meaning(self)
    }
}

/// The README's table of the MCP endpoint's HTTP-level error codes, generated from [`HttpCode`].
pub fn code_table_markdown() -> String {
    vocabulary::code_table_markdown::<HttpCode>()
}

/// One HTTP-level outcome of the MCP endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No token at all: the discovery challenge, no body.
    #[error("no access token")]
    NoToken,
    /// A token was presented and refused (expired, revoked, malformed, wrong audience, unknown,
    /// in the query string, non-Bearer scheme).
    #[error("access token refused: {0}")]
    InvalidToken(&'static str),
    /// `tools/call` by an account below Elite.
    #[error("an Elite subscription is required")]
    SubscriptionRequired,
    /// `tools/call` of a trade tool with an `mcp:read` grant.
    #[error("the grant's scope does not cover the tool")]
    InsufficientScope,
    /// The tool needs NT8 and the Add-On is not there, dropped, or was too slow.
    #[error("{0}")]
    AddonDisconnected(String),
    /// Transient refusal with no failure behind it (verifier unavailable, this replica at
    /// capacity).
    #[error("{0}")]
    ServerError(&'static str),
    /// A failure of this server (the database): answered like [`HttpError::ServerError`] with
    /// `message`; `source` is logged once, when the response is rendered.
    #[error("{context} failed")]
    Internal {
        context: &'static str,
        message: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The account holds as many of a per-account resource (Add-On calls in flight, open
    /// streams) as it may on this replica: 429 with `Retry-After`.
    #[error("{0}")]
    TooManyRequests(&'static str),
    /// `Origin` present and not in the allow-list (DNS-rebinding protection).
    #[error("the Origin is not allowed")]
    OriginNotAllowed,
    /// DELETE: there are no sessions to terminate.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl HttpError {
    /// A failure of `context` behind a transient 503 carrying `message`.
    pub fn internal(
        context: &'static str,
        message: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        HttpError::Internal {
            context,
            message,
            source: Box::new(source),
        }
    }

    /// The 408 when the Add-On is not connected because the last one that tried was refused
    /// as too old: the product's sentence, naming its version.
    pub fn addon_too_old(too_old: &vocabulary::TooOld) -> Self {
        HttpError::AddonDisconnected(too_old.to_string())
    }

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

    /// The code of the body; `None` for the bare 401 of [`HttpError::NoToken`].
    pub fn code(&self) -> Option<HttpCode> {
        Some(match self {
            HttpError::NoToken => return None,
            HttpError::InvalidToken(_) => HttpCode::InvalidToken,
            HttpError::SubscriptionRequired => HttpCode::SubscriptionRequired,
            HttpError::InsufficientScope => HttpCode::InsufficientScope,
            HttpError::AddonDisconnected(_) => HttpCode::AddonDisconnected,
            HttpError::ServerError(_) | HttpError::Internal { .. } => HttpCode::ServerError,
            HttpError::TooManyRequests(_) => HttpCode::TooManyRequests,
            HttpError::OriginNotAllowed => HttpCode::ForbiddenOrigin,
            HttpError::MethodNotAllowed => HttpCode::MethodNotAllowed,
        })
    }

    /// The `message` of the body (`insufficient_scope` names `required` instead).
    pub fn message(&self) -> Option<&str> {
        match self {
            HttpError::NoToken | HttpError::InsufficientScope => None,
            HttpError::InvalidToken(message)
            | HttpError::ServerError(message)
            | HttpError::Internal { message, .. }
            | HttpError::TooManyRequests(message) => Some(*message),
            HttpError::AddonDisconnected(message) => Some(message.as_str()),
            HttpError::SubscriptionRequired => Some("MCP requires an Elite subscription"),
            HttpError::OriginNotAllowed => Some(
                "Requests from this Origin are not allowed; the server's `allowed_origins` \
                 setting admits an origin (the public URL's origin always is)",
            ),
            HttpError::MethodNotAllowed => {
                Some("This server is stateless: there is no session to delete")
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code()
            .map_or(StatusCode::UNAUTHORIZED, HttpCode::status)
    }

    /// Renders the response, with its `WWW-Authenticate` challenge from `challenges`.
    pub fn into_response_with(self, challenges: &Challenges) -> Response {
        if let HttpError::Internal {
            context, source, ..
        } = &self
        {
            tracing::error!(error = %source, context, "MCP request failed");
        }
        let challenge = match &self {
            HttpError::NoToken => challenges.no_token.clone(),
            HttpError::InvalidToken(_) => challenges.invalid_token.clone(),
            HttpError::InsufficientScope => challenges.insufficient_scope.clone(),
            _ => None,
        };
        let mut response = match (self.code(), self.message()) {
            (None, _) => StatusCode::UNAUTHORIZED.into_response(),
            (Some(code), Some(message)) => {
                (code.status(), Json(ErrorBody::new(code.as_str(), message))).into_response()
            }
            (Some(code), None) => (
                code.status(),
                Json(json!({ "error": code.as_str(), "required": Scope::Trade.as_str() })),
            )
                .into_response(),
        };
        let headers = response.headers_mut();
        if let Some(challenge) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = self.code().and_then(HttpCode::retry_after) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        if self.code() == Some(HttpCode::MethodNotAllowed) {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
        }
        response
    }
}

/// The `WWW-Authenticate` challenges of the endpoint's 401 and 403 answers, made once: they
/// differ only by the RFC 9728 metadata URL, which is fixed per server.
#[derive(Debug)]
pub struct Challenges {
    no_token: Option<HeaderValue>,
    invalid_token: Option<HeaderValue>,
    insufficient_scope: Option<HeaderValue>,
}

impl Challenges {
    pub fn new(resource_metadata: &str) -> Self {
        let value = |text: String| HeaderValue::from_str(&text).ok();
        Self {
            no_token: value(format!(
                r#"Bearer resource_metadata="{resource_metadata}", scope="{CHALLENGE_SCOPE}""#
            )),
            invalid_token: value(format!(
                r#"Bearer error="invalid_token", resource_metadata="{resource_metadata}""#
            )),
            // RFC 6750 §3.1: the scope needed, so a conforming client can step up.
            insufficient_scope: value(format!(
                r#"Bearer error="insufficient_scope", scope="{CHALLENGE_SCOPE}", resource_metadata="{resource_metadata}""#
            )),
        }
    }
}

/// An [`HttpError`] ready to render, as the bearer extractor's rejection.
#[derive(Debug)]
pub struct HttpRejection {
    pub(crate) error: HttpError,
    pub(crate) challenges: Arc<Challenges>,
}

impl IntoResponse for HttpRejection {
    fn into_response(self) -> Response {
        self.error.into_response_with(&self.challenges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_distinct_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for code in HttpCode::ALL {
            assert!(seen.insert(code.as_str()), "{code:?} twice");
            assert!(!code.meaning().is_empty());
        }
    }

    #[test]
    fn an_internal_error_keeps_its_cause() {
        let err = HttpError::internal("reading the tier", "retry", std::io::Error::other("down"));
        assert_eq!(err.to_string(), "reading the tier failed");
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(cause, Some("down".to_owned()));
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
