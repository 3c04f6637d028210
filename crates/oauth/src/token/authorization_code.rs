//! The `authorization_code` grant: a one-time code with PKCE S256 becomes a grant.

use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{
    FormParams, check_resource, delta, idle_expiry, proven, requested_scope, sign_access_token,
    token_response,
};
use crate::crypto::{random_token, sha256};
use crate::db;
use crate::error::{Internal, OAuthError};
use crate::events::{self, Kind, Origin};
use crate::params::{CodeChallenge, CodeVerifier, ResourceUri};
use crate::scope::Scope;
use crate::state::OAuthState;
use crate::verify::revoke_grant;

pub(super) async fn exchange_code(
    state: &OAuthState,
    params: &FormParams,
    client_id: &str,
    allows_refresh: bool,
    origin: &Origin,
) -> Result<Response, OAuthError> {
    let code = params.require("code")?;
    let redirect_uri = params.require("redirect_uri")?;
    let verifier = params.require("code_verifier")?;
    let code_hash = sha256(code.as_bytes());
    let now = state.now();
    let Some(code) = db::codes::unused(state.db(), &code_hash).await? else {
        return Err(presented_again(state, &code_hash, client_id, origin).await?);
    };
    let checked =
        check_claimed(params, &code, client_id, redirect_uri, verifier, now).and_then(|()| {
            let granted = Scope::from_stored(&code.scope)
                .ok_or_else(|| Internal::new("stored scope is invalid"))?;
            Ok((granted, requested_scope(params, granted)?))
        });
    let (granted, token_scope) = match checked {
        Ok(scopes) => scopes,
        // A code that fails a check is used up all the same.
        Err(error) => {
            return match db::codes::claim(state.db(), &code_hash, now).await? {
                Some(_) => Err(error),
                None => Err(presented_again(state, &code_hash, client_id, origin).await?),
            };
        }
    };
    // The code proved possession: charge its account's budget with this client. Over it,
    // nothing is claimed and the code stays usable for a retry.
    let user_id = code.user_id;
    proven(state, &format!("code {user_id} {client_id}"))?;
    let grant_id = Uuid::new_v4();
    let refresh_token = allows_refresh.then(random_token).transpose()?;
    let refresh_token_hash = refresh_token
        .as_deref()
        .map(|token| sha256(token.as_bytes()));
    let refresh_expires_at = state
        .settings()
        .refresh_token_lifetime
        .map(|lifetime| now + delta(lifetime));
    let exchanged = db::codes::exchange(
        state.db(),
        db::codes::Exchange {
            code_hash: &code_hash,
            grant_id,
            now,
            scope: granted.as_str(),
            refresh_token_hash: refresh_token_hash.as_deref(),
            refresh_idle_expires_at: idle_expiry(state, now, refresh_expires_at),
            refresh_expires_at,
            event_kind: Kind::TokenIssued.as_str(),
            ip: origin.stored_ip(),
            user_agent: origin.stored_user_agent(),
            detail: json!({ "grant_id": grant_id, "scope": token_scope.as_str() }),
        },
    )
    .await?;
    if !exchanged {
        // Exchanged concurrently, or burned by a sign-out everywhere.
        return Err(presented_again(state, &code_hash, client_id, origin).await?);
    }
    let access_token = sign_access_token(state, user_id, client_id, grant_id, token_scope)?;
    events::log(Kind::TokenIssued, Some(client_id), Some(user_id));
    Ok(token_response(
        &access_token,
        state.settings().access_token_lifetime,
        refresh_token.as_deref(),
        token_scope,
    ))
}

/// A code presented again (or never issued): revoke everything its first use produced
/// (RFC 6749 §4.1.2) and refuse.
async fn presented_again(
    state: &OAuthState,
    code_hash: &[u8],
    presented_by: &str,
    origin: &Origin,
) -> Result<OAuthError, OAuthError> {
    if let Some(first_use) = db::codes::first_use(state.db(), code_hash).await? {
        if let Some(grant_id) = first_use.grant_id {
            revoke_grant(state, grant_id, "authorization code reused").await?;
        }
        events::record(
            state.db(),
            Kind::CodeReuse,
            Some(&first_use.client_id),
            Some(first_use.user_id),
            origin,
            json!({ "grant_id": first_use.grant_id, "presented_by": presented_by }),
        )
        .await;
    }
    Ok(OAuthError::invalid_grant(
        "the authorization code is invalid, expired or already used",
    ))
}

/// Everything a claimed code and the request presenting it must satisfy, in order.
fn check_claimed(
    params: &FormParams,
    claimed: &db::codes::Claimed,
    client_id: &str,
    redirect_uri: &str,
    verifier: &str,
    now: DateTime<Utc>,
) -> Result<(), OAuthError> {
    if claimed.client_id != client_id {
        return Err(OAuthError::invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    if claimed.expires_at <= now {
        return Err(OAuthError::invalid_grant(
            "the authorization code has expired",
        ));
    }
    if claimed.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request",
        ));
    }
    let Some(verifier) = CodeVerifier::parse(verifier) else {
        return Err(OAuthError::invalid_grant(
            "code_verifier must be 43 to 128 unreserved characters (RFC 7636 §4.1)",
        ));
    };
    if !CodeChallenge::stored(claimed.code_challenge.clone()).is_met_by(&verifier) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    check_resource(params, &ResourceUri::new(claimed.resource.clone()))
}
