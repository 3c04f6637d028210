//! The OAuth wire errors (RFC 6749 §5.2 JSON with `Cache-Control: no-store`) and the HTML error
//! page for authorization requests that cannot be redirected safely.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `Retry-After` of a transient failure (the database): long enough for a pool to recover.
pub const SERVER_ERROR_RETRY_AFTER_SECS: u64 = 5;

/// An internal failure: logged once where it becomes a response, never shown to the client.
/// It keeps its cause, so the log (and `anyhow` chains in the binary) show the whole chain.
#[derive(Debug)]
pub struct Internal {
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Internal {
    /// A failure with no underlying error.
    pub fn new(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }

    /// `source`, described by what was being done.
    pub fn caused(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl From<sqlx::Error> for Internal {
    fn from(err: sqlx::Error) -> Self {
        Self::caused("database", err)
    }
}

impl From<store::users::UserError> for Internal {
    fn from(err: store::users::UserError) -> Self {
        Self::caused("accounts", err)
    }
}

impl From<tokio::task::JoinError> for Internal {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::caused("blocking task", err)
    }
}

impl Internal {
    /// The context and every cause, for the one log line the failure gets.
    pub fn chain(&self) -> String {
        let mut text = self.context.clone();
        let mut cause = std::error::Error::source(self);
        while let Some(err) = cause {
            text.push_str(": ");
            text.push_str(&err.to_string());
            cause = err.source();
        }
        text
    }
}

impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.context)
    }
}

impl std::error::Error for Internal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// The `error` codes of the token, registration and revocation endpoints, each with its HTTP
/// status: the one table the wire contract is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// RFC 6749 §5.2.
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// RFC 8707 §2.
    InvalidTarget,
    /// RFC 7591 §3.2.2.
    InvalidClientMetadata,
    /// RFC 7009 §2.2.1.
    UnsupportedTokenType,
    /// Over a rate limit, with `Retry-After`.
    TooManyRequests,
    TooManyRegistrations,
    /// A transient failure of this server, with `Retry-After`.
    ServerError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidClient,
        ErrorCode::InvalidGrant,
        ErrorCode::UnauthorizedClient,
        ErrorCode::UnsupportedGrantType,
        ErrorCode::InvalidScope,
        ErrorCode::InvalidTarget,
        ErrorCode::InvalidClientMetadata,
        ErrorCode::UnsupportedTokenType,
        ErrorCode::TooManyRequests,
        ErrorCode::TooManyRegistrations,
        ErrorCode::ServerError,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::TooManyRegistrations => "too_many_registrations",
            ErrorCode::ServerError => "server_error",
        }
    }

    /// What the code means here, for the README's table.
    pub const fn meaning(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => {
                "a parameter is missing, repeated or malformed, or the body is not a form"
            }
            ErrorCode::InvalidClient => {
                "the `client_id` is unknown (register again) or the HTTP Basic credentials are malformed"
            }
            ErrorCode::InvalidGrant => {
                "the code or refresh token is invalid, expired, used, revoked or another client's, or PKCE failed"
            }
            ErrorCode::UnauthorizedClient => {
                "the client did not register the `refresh_token` grant"
            }
            ErrorCode::UnsupportedGrantType => {
                "`grant_type` is neither `authorization_code` nor `refresh_token`"
            }
            ErrorCode::InvalidScope => "the scope is unknown or wider than the grant",
            ErrorCode::InvalidTarget => "`resource` is not this server's MCP endpoint",
            ErrorCode::InvalidClientMetadata => {
                "the registration metadata is invalid (413 when the body is too large)"
            }
            ErrorCode::UnsupportedTokenType => {
                "`token_type_hint` is not a token type of this server"
            }
            ErrorCode::TooManyRequests => {
                "over the token or revocation limit of this address, or the grant's own budget"
            }
            ErrorCode::TooManyRegistrations => "over the registrations of this address this hour",
            ErrorCode::ServerError => {
                "a transient failure (the database); retry after `Retry-After` (5 s)"
            }
        }
    }

    /// The status the code is answered with (a few answers override it, e.g. 413 for an
    /// oversized registration).
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::TooManyRequests | ErrorCode::TooManyRegistrations => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ErrorCode::ServerError => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error of the token, registration and revocation endpoints.
#[derive(Debug)]
pub enum OAuthError {
    /// `error` code, description, HTTP status.
    Client {
        code: ErrorCode,
        description: String,
        status: StatusCode,
    },
    /// 429 with `Retry-After` seconds.
    TooMany {
        code: ErrorCode,
        description: String,
        retry_after: u64,
    },
    Internal(Internal),
}

impl OAuthError {
    /// The description shown to the client.
    pub fn description(&self) -> &str {
        match self {
            OAuthError::Client { description, .. } | OAuthError::TooMany { description, .. } => {
                description
            }
            OAuthError::Internal(_) => "internal error",
        }
    }

    /// `code` with its usual status.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self::Client {
            code,
            description: description.into(),
            status: code.status(),
        }
    }

    /// `code` over a rate limit: 429 with `Retry-After`.
    pub fn too_many(code: ErrorCode, description: impl Into<String>, retry_after: u64) -> Self {
        Self::TooMany {
            code,
            description: description.into(),
            retry_after,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    pub fn invalid_client_metadata(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClientMetadata, description)
    }

    pub fn invalid_target(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidTarget, description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidScope, description)
    }

    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }
}

impl vocabulary::ErrorCodeTable for ErrorCode {
    const ALL: &'static [Self] = &ErrorCode::ALL;

    fn code(self) -> &'static str {
        self.as_str()
    }

    fn status(self) -> u16 {
        ErrorCode::status(self).as_u16()
    }

    fn meaning(self) -> &'static str {
        ErrorCode::meaning(self)
    }
}

/// The README's table of the OAuth error codes, generated from [`ErrorCode`].
pub fn code_table_markdown() -> String {
    vocabulary::code_table_markdown::<ErrorCode>()
}

impl From<Internal> for OAuthError {
    fn from(err: Internal) -> Self {
        Self::Internal(err)
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(err: sqlx::Error) -> Self {
        Self::Internal(err.into())
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let (status, body, retry_after) = match self {
            OAuthError::Client {
                code,
                description,
                status,
            } => (
                status,
                json!({ "error": code.as_str(), "error_description": description }),
                None,
            ),
            OAuthError::TooMany {
                code,
                description,
                retry_after,
            } => (
                code.status(),
                json!({ "error": code.as_str(), "error_description": description }),
                Some(retry_after),
            ),
            OAuthError::Internal(err) => {
                tracing::error!(error = %err.chain(), "oauth request failed");
                (
                    ErrorCode::ServerError.status(),
                    json!({
                        "error": ErrorCode::ServerError.as_str(),
                        "error_description": "a transient server error occurred; retry shortly",
                    }),
                    Some(SERVER_ERROR_RETRY_AFTER_SECS),
                )
            }
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_distinct_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code:?} twice");
            assert!(!code.meaning().is_empty());
            assert!(code.status().is_client_error() || code == ErrorCode::ServerError);
        }
    }

    #[test]
    fn an_internal_error_keeps_its_cause() {
        let err = Internal::from(sqlx::Error::PoolTimedOut);
        assert_eq!(err.to_string(), "database");
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(cause, Some(sqlx::Error::PoolTimedOut.to_string()));
        assert_eq!(
            err.chain(),
            format!("database: {}", sqlx::Error::PoolTimedOut)
        );
    }
}
