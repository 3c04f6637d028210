//! The `refresh_token` grant: rotation, the grace window for concurrent refreshes, and replay
//! detection.

use axum::response::Response;
use chrono::TimeDelta;
use serde_json::json;

use super::{
    FormParams, REFRESH_GRACE, check_resource, idle_expiry, proven, requested_scope,
    sign_access_token, token_response,
};
use crate::crypto::{b64, hmac_sha256, secure_eq, sha256};
use crate::db;
use crate::error::{Internal, OAuthError};
use crate::events::{self, Kind, Origin};
use crate::params::ResourceUri;
use crate::scope::Scope;
use crate::state::OAuthState;
use crate::verify::revoke_grant;

/// The successor of a refresh token: reproducible from the token, unguessable without it.
fn successor_of(state: &OAuthState, token: &str) -> String {
    b64(&hmac_sha256(&state.inner.refresh_key, token.as_bytes()))
}

/// How soon after a 403 `insufficient_scope` a refresh is taken as the client's step-up.
const STEP_UP_WINDOW: TimeDelta = TimeDelta::minutes(2);

pub(super) async fn refresh(
    state: &OAuthState,
    params: &FormParams,
    client_id: &str,
    origin: &Origin,
) -> Result<Response, OAuthError> {
    let presented = params.require("refresh_token")?;
    let now = state.now();
    let presented_hash = sha256(presented.as_bytes());
    let Some(row) = db::refresh_tokens::presented(state.db(), &presented_hash).await? else {
        return Err(invalid());
    };
    if row.client_id != client_id || row.revoked_at.is_some() {
        return Err(invalid());
    }
    let grant_id = row.grant_id;
    let user_id = row.user_id;
    // The refresh token proved possession of this grant: charge the grant, and only it. Over
    // the budget nothing rotates; the same token works again later.
    proven(state, &format!("grant {grant_id}"))?;
    // A call needed more scope than this grant holds, and the client refreshes instead of
    // authorizing again (the TypeScript SDK refreshes first). Refreshing would hand back the
    // same scope and the call would fail again, so the grant ends and `invalid_grant` sends
    // the client to authorize with the scope the call needed. A refresh that names its scope
    // asks knowingly for what the grant holds and is answered as usual.
    if params.get("scope").is_none()
        && row
            .step_up_requested_at
            .is_some_and(|at| now - at <= STEP_UP_WINDOW)
    {
        revoke_grant(state, grant_id, "step-up: a call needed more scope").await?;
        events::record(
            state.db(),
            Kind::StepUp,
            Some(client_id),
            Some(user_id),
            origin,
            json!({ "grant_id": grant_id, "scope": row.scope }),
        )
        .await;
        return Err(OAuthError::invalid_grant(
            "a call needed mcp:trade, which this grant does not hold; authorize again with \
             scope mcp:trade",
        ));
    }
    check_resource(params, &ResourceUri::new(row.resource))?;
    let granted =
        Scope::from_stored(&row.scope).ok_or_else(|| Internal::new("stored scope is invalid"))?;
    let token_scope = requested_scope(params, granted)?;
    let successor = successor_of(state, presented);
    let successor_hash = sha256(successor.as_bytes());
    let unexpired = row.idle_expires_at > now && row.expires_at.is_none_or(|end| end > now);
    // The common case, a token used once: one statement, one commit.
    let rotated_here = row.rotated_at.is_none()
        && unexpired
        && db::refresh_tokens::rotate_first(
            state.db(),
            db::refresh_tokens::FirstRotation {
                token_hash: &presented_hash,
                grant_id,
                successor_hash: &successor_hash,
                now,
                successor_idle_expires_at: idle_expiry(state, now, row.expires_at),
                event_kind: Kind::TokenRefreshed.as_str(),
                client_id,
                user_id,
                ip: origin.stored_ip(),
                user_agent: origin.stored_user_agent(),
                detail: json!({ "grant_id": grant_id }),
            },
        )
        .await?;
    // Otherwise the token was rotated before (a retry within the grace window, or a replay),
    // concurrently, or it expired or its grant ended meanwhile: decide under its row's lock.
    if !rotated_here {
        let mut tx = state.db().begin().await?;
        let Some(locked) = db::refresh_tokens::lock_rotation(&mut *tx, &presented_hash).await?
        else {
            return Err(invalid());
        };
        if locked.revoked_at.is_some() {
            return Err(invalid());
        }
        let (Some(rotated_at), Some(stored_successor)) = (locked.rotated_at, locked.successor_hash)
        else {
            // Never rotated, so it expired or its grant ended.
            return Err(invalid());
        };
        let successor_used =
            db::refresh_tokens::lock_rotated_at(&mut *tx, &stored_successor).await?;
        let within_grace = now - rotated_at <= REFRESH_GRACE;
        let unused = matches!(successor_used, Some(None));
        if !(within_grace && unused && secure_eq(&stored_successor, &successor_hash)) {
            tx.commit().await?;
            revoke_grant(state, grant_id, "refresh token replayed").await?;
            events::record(
                state.db(),
                Kind::RefreshReplay,
                Some(client_id),
                Some(user_id),
                origin,
                json!({ "grant_id": grant_id }),
            )
            .await;
            return Err(invalid());
        }
        db::grants::touch(&mut *tx, grant_id, now).await?;
        events::insert(
            &mut *tx,
            Kind::TokenRefreshed,
            Some(client_id),
            Some(user_id),
            origin,
            json!({ "grant_id": grant_id }),
        )
        .await?;
        tx.commit().await?;
    }
    let access_token = sign_access_token(state, user_id, client_id, grant_id, token_scope)?;
    events::log(Kind::TokenRefreshed, Some(client_id), Some(user_id));
    Ok(token_response(
        &access_token,
        state.settings().access_token_lifetime,
        Some(&successor),
        token_scope,
    ))
}

fn invalid() -> OAuthError {
    OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
}
