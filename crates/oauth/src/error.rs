//! The OAuth wire errors (RFC 6749 §5.2 JSON with `Cache-Control: no-store`) and the HTML error
//! page for authorization requests that cannot be redirected safely.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An internal failure: logged once where it becomes a response, never shown to the client.
#[derive(Debug)]
pub struct Internal(String);

impl Internal {
    pub fn new(detail: impl Into<String>) -> Self {
        Self(detail.into())
    }
}

impl From<sqlx::Error> for Internal {
    fn from(err: sqlx::Error) -> Self {
        Self(format!("database: {err}"))
    }
}

impl From<store::users::UserError> for Internal {
    fn from(err: store::users::UserError) -> Self {
        Self(format!("accounts: {err}"))
    }
}

impl From<tokio::task::JoinError> for Internal {
    fn from(err: tokio::task::JoinError) -> Self {
        Self(format!("blocking task: {err}"))
    }
}

impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An error of the token, registration and revocation endpoints.
#[derive(Debug)]
pub enum OAuthError {
    /// `error` code, description, HTTP status.
    Client {
        code: &'static str,
        description: String,
        status: StatusCode,
    },
    /// 429 with `Retry-After` seconds.
    TooMany {
        code: &'static str,
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

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::bad("invalid_request", description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::bad("invalid_grant", description)
    }

    pub fn invalid_client_metadata(description: impl Into<String>) -> Self {
        Self::bad("invalid_client_metadata", description)
    }

    pub fn invalid_redirect_uri(description: impl Into<String>) -> Self {
        Self::bad("invalid_redirect_uri", description)
    }

    pub fn invalid_target(description: impl Into<String>) -> Self {
        Self::bad("invalid_target", description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::bad("invalid_scope", description)
    }

    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::Client {
            code: "invalid_client",
            description: description.into(),
            status: StatusCode::UNAUTHORIZED,
        }
    }

    pub fn bad(code: &'static str, description: impl Into<String>) -> Self {
        Self::Client {
            code,
            description: description.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }
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
                json!({ "error": code, "error_description": description }),
                None,
            ),
            OAuthError::TooMany {
                code,
                description,
                retry_after,
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "error": code, "error_description": description }),
                Some(retry_after),
            ),
            OAuthError::Internal(err) => {
                tracing::error!(error = %err, "oauth request failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({
                        "error": "server_error",
                        "error_description": "a transient server error occurred; retry shortly",
                    }),
                    Some(5),
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
