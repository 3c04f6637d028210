//! A user's grants, for the AI Clients page: list and revoke (one or all).

use uuid::Uuid;

use crate::db;
use crate::error::Internal;
use crate::events::{self, Kind, Origin};
use crate::state::OAuthState;
use crate::verify::revoke_grant;

/// One live authorization of a client by a user.
pub use crate::db::grants::Summary as GrantSummary;

/// The user's live grants, newest first.
pub async fn list_grants(state: &OAuthState, user_id: Uuid) -> Result<Vec<GrantSummary>, Internal> {
    Ok(db::grants::live_of_user(state.db(), user_id).await?)
}

/// Revokes one of the user's grants; `false` when it is not theirs or already ended.
pub async fn revoke_user_grant(
    state: &OAuthState,
    user_id: Uuid,
    grant_id: Uuid,
) -> Result<bool, Internal> {
    let client = db::grants::live_client(state.db(), grant_id, user_id).await?;
    let Some(client_id) = client else {
        return Ok(false);
    };
    let revoked = revoke_grant(state, grant_id, "revoked by the user").await?;
    if revoked {
        events::record(
            state.db(),
            Kind::Revoked,
            Some(&client_id),
            Some(user_id),
            &Origin::default(),
            serde_json::json!({ "grant_id": grant_id, "by": "user" }),
        )
        .await;
    }
    Ok(revoked)
}

/// Revokes every live grant of the user, each as [`revoke_user_grant`] does (the grant cache
/// and every replica told, a security event each); returns how many it ended.
pub async fn revoke_all_user_grants(state: &OAuthState, user_id: Uuid) -> Result<u64, Internal> {
    let mut ended = 0;
    for grant in list_grants(state, user_id).await? {
        if revoke_user_grant(state, user_id, grant.grant_id).await? {
            ended += 1;
        }
    }
    Ok(ended)
}

impl OAuthState {
    /// A call made with this grant's token needed more scope than it holds (the MCP 403
    /// `insufficient_scope`): a refresh of the grant soon after is answered as a step-up (see
    /// `token::refresh_token`). A failure to record it is logged; the 403 stands either way.
    pub async fn request_step_up(&self, grant_id: Uuid) {
        if let Err(err) = db::grants::request_step_up(self.db(), grant_id, self.now()).await {
            tracing::warn!(error = %err, "could not record a step-up request");
        }
    }
}

/// What [`end_everything_for_user`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub grants: u64,
    pub sessions: u64,
}

/// Incident response for one account: ends every browser session, burns every authorization
/// code not yet exchanged, and ends every grant (its access tokens fail on every replica at once
/// through the `grant_ended` notification; its refresh tokens stop working); records a security
/// event. Runs in the caller's transaction.
///
/// The order closes each phase in flight: a consent issuing a code holds a lock on its session,
/// so deleting the sessions waits for that code, which the burn then sees; an exchange in flight
/// holds its code's row, so the burn waits for its grant, which the last statement then ends.
pub async fn end_everything_for_user(
    tx: &mut sqlx::PgConnection,
    user_id: Uuid,
    reason: &str,
) -> Result<Ended, sqlx::Error> {
    let sessions = db::sessions::delete_all_of_user(&mut *tx, user_id).await?;
    db::codes::burn_unused_of_user(&mut *tx, user_id).await?;
    let grants = db::grants::revoke_all_of_user(&mut *tx, user_id, reason).await?;
    events::insert(
        &mut *tx,
        Kind::Revoked,
        None,
        Some(user_id),
        &Origin::default(),
        serde_json::json!({ "by": "operator", "reason": reason, "grants": grants, "sessions": sessions }),
    )
    .await?;
    Ok(Ended { grants, sessions })
}
