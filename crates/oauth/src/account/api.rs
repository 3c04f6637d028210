//! The account API (JSON under `/v1/account`): the overview, AI Clients and Add-On keys for the
//! product's own front end. Answers are never cached; every refusal is an [`ApiError`], rendered as
//! `{error, message}` with the status of its [`ApiCode`].

use axum::Json;
use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;
use vocabulary::ErrorBody;

use super::{AccountState, AddonView, csrf_ok, csrf_token};
use crate::error::{Internal, SERVER_ERROR_RETRY_AFTER_SECS};
use crate::grants;
use crate::session::{self, Session};
use crate::state::OAuthState;

/// The `error` codes of the account API, each with its status and meaning: the one table the
/// contract (and the README's table) is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiCode {
    InvalidRequest,
    Unauthorized,
    CsrfFailed,
    NotFound,
    ServerError,
}

impl ApiCode {
    pub const ALL: [ApiCode; 5] = [
        ApiCode::InvalidRequest,
        ApiCode::Unauthorized,
        ApiCode::CsrfFailed,
        ApiCode::NotFound,
        ApiCode::ServerError,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ApiCode::InvalidRequest => "invalid_request",
            ApiCode::Unauthorized => "unauthorized",
            ApiCode::CsrfFailed => "csrf_failed",
            ApiCode::NotFound => "not_found",
            ApiCode::ServerError => "server_error",
        }
    }

    pub const fn status(self) -> StatusCode {
        match self {
            ApiCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ApiCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiCode::CsrfFailed => StatusCode::FORBIDDEN,
            ApiCode::NotFound => StatusCode::NOT_FOUND,
            ApiCode::ServerError => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the code means, for the README's table.
    pub const fn meaning(self) -> &'static str {
        match self {
            ApiCode::InvalidRequest => {
                "a body that is not valid for the endpoint (the message says what is wrong)"
            }
            ApiCode::Unauthorized => "no browser session: sign in to CrossTrade first",
            ApiCode::CsrfFailed => "a mutation without the session's `X-CSRF-Token` header",
            ApiCode::NotFound => "no such AI client or Add-On key on this account",
            ApiCode::ServerError => {
                "a transient failure (the database); retry after `Retry-After` (5 s)"
            }
        }
    }
}

impl vocabulary::ErrorCodeTable for ApiCode {
    const ALL: &'static [Self] = &ApiCode::ALL;

    fn code(self) -> &'static str {
        self.as_str()
    }

    fn status(self) -> u16 {
        ApiCode::status(self).as_u16()
    }

    fn meaning(self) -> &'static str {
        ApiCode::meaning(self)
    }
}

/// The README's table of the account API error codes, generated from [`ApiCode`].
pub fn code_table_markdown() -> String {
    vocabulary::code_table_markdown::<ApiCode>()
}

/// Why an account API request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not what the endpoint takes; the message says why.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    #[error("no browser session")]
    Unauthorized,
    #[error("missing or wrong X-CSRF-Token header")]
    CsrfFailed,
    /// Not one of the user's grants, or one already revoked.
    #[error("no such AI client on this account")]
    UnknownAiClient,
    #[error("no such Add-On key on this account")]
    UnknownAddonKey,
    /// Logged once when rendered; the body says only that it was transient.
    #[error("the account API request failed")]
    Internal(#[from] Internal),
}

impl ApiError {
    /// The code and message of the body.
    pub fn code_and_message(&self) -> (ApiCode, &'static str) {
        match self {
            ApiError::InvalidRequest(message) => (ApiCode::InvalidRequest, message),
            ApiError::Unauthorized => (
                ApiCode::Unauthorized,
                "sign in to CrossTrade in this browser first",
            ),
            ApiError::CsrfFailed => (ApiCode::CsrfFailed, "missing or wrong X-CSRF-Token header"),
            ApiError::UnknownAiClient => (ApiCode::NotFound, "no such AI client on this account"),
            ApiError::UnknownAddonKey => (ApiCode::NotFound, "no such Add-On key on this account"),
            ApiError::Internal(_) => (
                ApiCode::ServerError,
                "a transient server error occurred; retry shortly",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(err) = &self {
            tracing::error!(error = %err.chain(), "account API failed");
        }
        let (code, message) = self.code_and_message();
        let mut response =
            (code.status(), Json(ErrorBody::new(code.as_str(), message))).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if code == ApiCode::ServerError {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(SERVER_ERROR_RETRY_AFTER_SECS),
            );
        }
        response
    }
}

pub(super) fn api_ok(status: StatusCode, body: serde_json::Value, csrf: Option<&str>) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(token) = csrf.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert("x-csrf-token", token);
    }
    response
}

/// The session of a JSON request; for a mutation (`ApiSession<true>`) its `X-CSRF-Token` is
/// checked too.
pub(super) struct ApiSession<const MUTATION: bool = false>(pub(super) Session);

impl<S, const MUTATION: bool> FromRequestParts<S> for ApiSession<MUTATION>
where
    AccountState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let account = AccountState::from_ref(state);
        api_session(&account.oauth, &parts.headers, MUTATION)
            .await
            .map(ApiSession)
    }
}

/// The session for a JSON request; mutations also need the CSRF header.
async fn api_session(
    state: &OAuthState,
    headers: &HeaderMap,
    mutation: bool,
) -> Result<Session, ApiError> {
    let session = session::current(state, headers)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if mutation {
        let presented = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !csrf_ok(state, &session, presented) {
            return Err(ApiError::CsrfFailed);
        }
    }
    Ok(session)
}

/// `GET /v1/account`: the overview page's data (email, tier, the Add-On's state).
pub(super) async fn get_account(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession,
) -> Result<Response, ApiError> {
    let state = &account.oauth;
    let user = store::users::find_by_id(state.db(), session.user_id)
        .await
        .map_err(Internal::from)?
        .ok_or(ApiError::Unauthorized)?;
    let presence = account.addon.presence(user.id).await;
    Ok(api_ok(
        StatusCode::OK,
        json!({
            "email": user.email,
            "tier": user.tier.as_str(),
            "addon": AddonView::of(&presence),
        }),
        Some(&csrf_token(state, &session)),
    ))
}

pub(super) async fn get_ai_clients(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession,
) -> Result<Response, ApiError> {
    let state = &account.oauth;
    let list = grants::list_grants(state, session.user_id).await?;
    Ok(api_ok(
        StatusCode::OK,
        json!({ "clients": list }),
        Some(&csrf_token(state, &session)),
    ))
}

pub(super) async fn delete_ai_client(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession<true>,
    Path(grant_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let state = &account.oauth;
    if grants::revoke_user_grant(state, session.user_id, grant_id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::UnknownAiClient)
    }
}

pub(super) async fn get_addon_keys(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession,
) -> Result<Response, ApiError> {
    let state = &account.oauth;
    let keys = account.addon.list_keys(session.user_id).await?;
    Ok(api_ok(
        StatusCode::OK,
        json!({ "keys": keys }),
        Some(&csrf_token(state, &session)),
    ))
}

pub(super) async fn post_addon_key(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession<true>,
) -> Result<Response, ApiError> {
    let (key_id, key) = account.addon.create_key(session.user_id).await?;
    Ok(api_ok(
        StatusCode::CREATED,
        json!({ "key_id": key_id, "key": key }),
        None,
    ))
}

pub(super) async fn delete_addon_key(
    State(account): State<AccountState>,
    ApiSession(session): ApiSession<true>,
    Path(key_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    if account.addon.revoke_key(session.user_id, key_id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::UnknownAddonKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_distinct_and_every_error_has_one() {
        let mut seen = std::collections::HashSet::new();
        for code in ApiCode::ALL {
            assert!(seen.insert(code.as_str()), "{code:?} twice");
            assert!(!code.meaning().is_empty());
        }
        let internal = ApiError::from(Internal::from(sqlx::Error::PoolTimedOut));
        assert_eq!(internal.code_and_message().0, ApiCode::ServerError);
        let cause = std::error::Error::source(&internal).map(ToString::to_string);
        assert_eq!(cause, Some("database".to_owned()));
    }
}
