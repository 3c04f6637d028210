//! RFC 7009 token revocation. Revoking either token of a grant ends the whole grant (§2.1 allows
//! it for access tokens and asks it for refresh tokens). Unknown, expired or foreign tokens get
//! the same 200 as a successful revocation, so the endpoint is no oracle (§2.2).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use crate::client_ip::{bucket, client_ip};
use crate::crypto::sha256;
use crate::db;
use crate::error::{ErrorCode, OAuthError};
use crate::events::{self, Kind, Origin};
use crate::params::ClientId;
use crate::state::OAuthState;
use crate::token::{FormParams, client_id_of};
use crate::verify::revoke_grant;

pub async fn post_revoke(
    State(state): State<OAuthState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    // Each request may cost a token verification and database reads: bounded per address.
    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    state
        .inner
        .token_limiter
        .check(&format!("revoke ip {}", bucket(ip)), state.now())
        .map_err(|retry_after| {
            OAuthError::too_many(
                ErrorCode::TooManyRequests,
                "too many revocation requests; retry later",
                retry_after,
            )
        })?;
    let params = FormParams::parse(&headers, &body)?;
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    match params.get("token_type_hint") {
        None | Some("access_token" | "refresh_token") => {}
        Some(other) => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedTokenType,
                format!("token_type_hint {other:?} is not supported"),
            ));
        }
    }
    let client_id = client_id_of(&headers, &params)?;
    if let Some(client_id) = &client_id {
        let known = db::clients::exists(state.db(), client_id.as_str()).await?;
        if !known {
            return Err(OAuthError::invalid_client("unknown client_id"));
        }
    }
    // The hint only orders the look-ups; both kinds are tried (RFC 7009 §2.1).
    let owner = match find_refresh_grant(&state, token).await? {
        Some(found) => Some(found),
        None => match state.verify_access_token(token).await {
            Ok(access) => Some((access.grant_id, access.client_id, access.user_id)),
            Err(_) => None,
        },
    };
    if let Some((grant_id, token_client, user_id)) = owner {
        // A public client proves nothing but possession; a named client must be the owner.
        if client_id
            .as_ref()
            .map(ClientId::as_str)
            .is_none_or(|id| id == token_client)
            && revoke_grant(&state, grant_id, "revoked by the client").await?
        {
            let origin = Origin::of_request(ip, &headers);
            events::record(
                state.db(),
                Kind::Revoked,
                Some(&token_client),
                Some(user_id),
                &origin,
                json!({ "grant_id": grant_id }),
            )
            .await;
        }
    }
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn find_refresh_grant(
    state: &OAuthState,
    token: &str,
) -> Result<Option<(Uuid, String, Uuid)>, OAuthError> {
    Ok(db::refresh_tokens::grant_of(state.db(), &sha256(token.as_bytes())).await?)
}
