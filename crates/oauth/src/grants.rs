//! A user's grants, for the AI Clients page: list and revoke.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::Internal;
use crate::events::{self, Kind, Origin};
use crate::state::OAuthState;
use crate::verify::revoke_grant;

/// One live authorization of a client by a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct GrantSummary {
    pub grant_id: Uuid,
    pub client_id: String,
    /// As the client described itself at registration.
    pub client_name: Option<String>,
    pub scope: String,
    pub redirect_uri: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The user's live grants, newest first.
pub async fn list_grants(state: &OAuthState, user_id: Uuid) -> Result<Vec<GrantSummary>, Internal> {
    Ok(sqlx::query_as(
        "SELECT g.grant_id, g.client_id, c.client_name, g.scope, g.redirect_uri, g.created_at,
                g.last_used_at
         FROM grants g JOIN oauth_clients c USING (client_id)
         WHERE g.user_id = $1 AND g.revoked_at IS NULL
         ORDER BY g.created_at DESC",
    )
    .bind(user_id)
    .fetch_all(state.db())
    .await?)
}

/// Revokes one of the user's grants; `false` when it is not theirs or already ended.
pub async fn revoke_user_grant(
    state: &OAuthState,
    user_id: Uuid,
    grant_id: Uuid,
) -> Result<bool, Internal> {
    let client: Option<String> = sqlx::query_scalar(
        "SELECT client_id FROM grants WHERE grant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(grant_id)
    .bind(user_id)
    .fetch_optional(state.db())
    .await?;
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
    let sessions = sqlx::query("DELETE FROM browser_sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "UPDATE authorization_codes SET used_at = now()
         WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    let grants = sqlx::query(
        "UPDATE grants SET revoked_at = now(), revoked_reason = $2
         WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "INSERT INTO security_events (kind, user_id, detail) VALUES ($1, $2, $3)",
    )
    .bind(Kind::Revoked.as_str())
    .bind(user_id)
    .bind(serde_json::json!({ "by": "operator", "reason": reason, "grants": grants, "sessions": sessions }))
    .execute(&mut *tx)
    .await?;
    Ok(Ended { grants, sessions })
}
