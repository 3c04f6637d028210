//! The token endpoint (OAuth 2.1 §3.2): `authorization_code` with PKCE S256 and `refresh_token`
//! with rotation.
//!
//! Codes are claimed by one atomic `UPDATE … WHERE used_at IS NULL`; a failed check burns the
//! code. A code presented again revokes the grant its first use created. Refresh tokens rotate
//! on every use; the successor is derived from the presented token (HMAC under a server key), so
//! a repeat within the grace window returns the same successor without storing it. A repeat
//! after the window, or after the successor was used, revokes the grant.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::client_ip::{bucket, client_ip};
use crate::client_metadata::ClientMetadata;
use crate::db;
use crate::error::{ErrorCode, Internal, OAuthError};
use crate::events::Origin;
use crate::params::{ClientId, MAX_CLIENT_ID_LEN, ResourceUri};
use crate::scope::Scope;
use crate::state::OAuthState;

mod authorization_code;
mod refresh_token;

use authorization_code::exchange_code;
use refresh_token::refresh;

/// A just-rotated refresh token presented again within this window, while its successor is
/// unused, returns that same successor (concurrent refreshes by processes sharing a store).
pub const REFRESH_GRACE: TimeDelta = TimeDelta::seconds(60);

/// Parsed `application/x-www-form-urlencoded` parameters; repeats are refused (RFC 6749 §3.2).
pub struct FormParams(Vec<(String, String)>);

impl std::fmt::Debug for FormParams {
    // Values are secrets (codes, verifiers, refresh tokens): print the names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(key, _)| key))
            .finish()
    }
}

impl FormParams {
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        // A set, not a scan per pair: a 64 KiB body holds some 20 000 parameters.
        let mut seen = std::collections::HashSet::with_capacity(pairs.len());
        for (key, value) in &pairs {
            if !seen.insert(key.as_str()) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {key} is repeated"
                )));
            }
            // PostgreSQL text cannot hold NUL, and no OAuth value contains one.
            if key.contains('\0') || value.contains('\0') {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {key:?} contains a NUL character"
                )));
            }
        }
        Ok(Self(pairs))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn require(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::invalid_request(format!("{key} is required")))
    }
}

fn client_id_too_long() -> OAuthError {
    OAuthError::invalid_client("unknown client_id")
}

/// The client named by `client_id` or by HTTP Basic (clients registered with
/// `client_secret_basic` are public here; any secret they send is ignored). An overlong one is
/// refused before anything else is done with it.
pub fn client_id_of(
    headers: &HeaderMap,
    params: &FormParams,
) -> Result<Option<ClientId>, OAuthError> {
    if params
        .get("client_id")
        .is_some_and(|id| id.len() > MAX_CLIENT_ID_LEN)
    {
        return Err(client_id_too_long());
    }
    let from_basic = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) if value.len() > 6 && value[..6].eq_ignore_ascii_case("basic ") => {
            // Base64 of a client id, a colon and a secret of similar size.
            if value.len() > 4 * MAX_CLIENT_ID_LEN {
                return Err(client_id_too_long());
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value[6..].trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| OAuthError::invalid_client("malformed HTTP Basic credentials"))?;
            let id = decoded
                .split_once(':')
                .map_or(decoded.as_str(), |(id, _)| id);
            let id = url::form_urlencoded::parse(format!("a={id}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            Some(id)
        }
        _ => None,
    };
    let client_id = match (from_basic, params.get("client_id")) {
        (Some(a), Some(b)) if a != b => {
            return Err(OAuthError::invalid_request(
                "client_id differs from the HTTP Basic credentials",
            ));
        }
        (Some(a), _) => Some(a),
        (None, Some(b)) => Some(b.to_owned()),
        (None, None) => assertion_subject(params),
    };
    client_id
        .map(|id| {
            ClientId::parse(&id).ok_or_else(|| OAuthError::invalid_client("unknown client_id"))
        })
        .transpose()
}

/// A client that sends an RFC 7523 `client_assertion` may leave out `client_id` (§3): the
/// assertion's `sub` names it. Every client here is public, so the assertion is not trusted for
/// anything but this name; the code stays bound to its client and its PKCE challenge.
fn assertion_subject(params: &FormParams) -> Option<String> {
    if params.get("client_assertion_type")
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return None;
    }
    let payload = params.get("client_assertion")?.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&crate::crypto::b64_decode(payload)?).ok()?;
    claims["sub"].as_str().map(str::to_owned)
}

/// `POST /v1/oauth/mcp/token`.
///
/// Every request counts against its client address. Client ids are public (one metadata
/// document URL is shared by every install of a client), so nothing an unauthenticated request
/// merely names is charged: the per-grant budget is spent only by requests that proved
/// possession of the grant's code or refresh token.
pub async fn post_token(
    State(state): State<OAuthState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    let limited = |retry_after| {
        OAuthError::too_many(
            ErrorCode::TooManyRequests,
            "too many token requests; retry later",
            retry_after,
        )
    };
    state
        .inner
        .token_limiter
        .check(&format!("ip {}", bucket(ip)), state.now())
        .map_err(limited)?;
    let params = FormParams::parse(&headers, &body)?;
    let grant_type = params.require("grant_type")?.to_owned();
    let client_id = client_id_of(&headers, &params)?
        .ok_or_else(|| OAuthError::invalid_request("client_id is required"))?;
    let client = db::clients::metadata(state.db(), client_id.as_str()).await?;
    // Unknown clients get 401 invalid_client, so clients re-register (CLIENTS row 18).
    let Some(metadata) = client else {
        return Err(OAuthError::invalid_client(
            "unknown client_id; register again",
        ));
    };
    let origin = Origin::of_request(ip, &headers);
    let metadata: ClientMetadata = serde_json::from_value(metadata)
        .map_err(|err| Internal::caused("stored client metadata is invalid", err))?;
    let allows_refresh = metadata.allows_refresh();
    match grant_type.as_str() {
        "authorization_code" => {
            exchange_code(&state, &params, client_id.as_str(), allows_refresh, &origin).await
        }
        "refresh_token" if allows_refresh => {
            refresh(&state, &params, client_id.as_str(), &origin).await
        }
        "refresh_token" => Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client did not register the refresh_token grant",
        )),
        _ => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "grant_type must be authorization_code or refresh_token",
        )),
    }
}

/// The token endpoint's answer (OAuth 2.1 §3.2.3), never cached.
fn token_response(
    access_token: &str,
    expires_in: Duration,
    refresh_token: Option<&str>,
    scope: Scope,
) -> Response {
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in.as_secs(),
        "scope": scope.token_scope(),
    });
    if let Some(refresh_token) = refresh_token {
        body["refresh_token"] = json!(refresh_token);
    }
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// A JWT access token (RFC 9068) for a grant.
pub fn sign_access_token(
    state: &OAuthState,
    user_id: Uuid,
    client_id: &str,
    grant_id: Uuid,
    scope: Scope,
) -> Result<String, Internal> {
    let settings = state.settings();
    let now = state.now().timestamp();
    let lifetime = i64::try_from(settings.access_token_lifetime.as_secs()).unwrap_or(3600);
    state.inner.keys.sign(&json!({
        "iss": settings.issuer,
        "sub": user_id.to_string(),
        "aud": settings.resource(),
        "client_id": client_id,
        "scope": scope.token_scope(),
        "jti": Uuid::new_v4().to_string(),
        "gid": grant_id.to_string(),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
    }))
}

/// Narrows the granted scope to a requested one (RFC 6749 §6: never wider).
fn requested_scope(params: &FormParams, granted: Scope) -> Result<Scope, OAuthError> {
    match params.get("scope") {
        None => Ok(granted),
        Some(raw) => {
            let requested = Scope::parse_request(Some(raw)).map_err(OAuthError::invalid_scope)?;
            if granted.covers(requested) {
                Ok(requested)
            } else {
                Err(OAuthError::invalid_scope(format!(
                    "the grant does not include {}",
                    requested.as_str()
                )))
            }
        }
    }
}

/// Counts a request that proved possession against its own budget.
fn proven(state: &OAuthState, key: &str) -> Result<(), OAuthError> {
    state
        .inner
        .grant_limiter
        .check(key, state.now())
        .map_err(|retry_after| {
            OAuthError::too_many(
                ErrorCode::TooManyRequests,
                "too many token requests for this grant; retry later",
                retry_after,
            )
        })
}

fn check_resource(params: &FormParams, granted: &ResourceUri) -> Result<(), OAuthError> {
    match params.get("resource") {
        Some(resource) if !granted.is_named_by(resource) => Err(OAuthError::invalid_target(
            format!("resource must be {}", granted.as_str()),
        )),
        _ => Ok(()),
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// A refresh token issued now stops working after this idle time, and never after its family's
/// end.
fn idle_expiry(
    state: &OAuthState,
    now: DateTime<Utc>,
    family_expires_at: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let idle = now + delta(state.settings().refresh_token_idle_lifetime);
    family_expires_at.map_or(idle, |end| idle.min(end))
}
