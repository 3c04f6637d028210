//! `grants`: what a user allowed a client, ended by revocation.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A live grant as the account pages list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
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
pub async fn live_of_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> Result<Vec<Summary>, sqlx::Error> {
    sqlx::query_as!(
        Summary,
        "SELECT g.grant_id, g.client_id, c.client_name, g.scope, g.redirect_uri, g.created_at,
                g.last_used_at
         FROM grants g JOIN oauth_clients c USING (client_id)
         WHERE g.user_id = $1 AND g.revoked_at IS NULL
         ORDER BY g.created_at DESC",
        user_id,
    )
    .fetch_all(db)
    .await
}

/// When the user last authorized the client (any grant, revoked or not), if ever.
pub async fn last_authorized(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    client_id: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT max(created_at) FROM grants WHERE user_id = $1 AND client_id = $2",
        user_id,
        client_id,
    )
    .fetch_one(db)
    .await
}

/// The client of one of the user's live grants.
pub async fn live_client(
    db: impl PgExecutor<'_>,
    grant_id: Uuid,
    user_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT client_id FROM grants WHERE grant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
        grant_id,
        user_id,
    )
    .fetch_optional(db)
    .await
}

/// `None` when the grant does not exist, `Some(None)` while it is live, else when it was
/// revoked.
pub async fn revoked_at(
    db: impl PgExecutor<'_>,
    grant_id: Uuid,
) -> Result<Option<Option<DateTime<Utc>>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT revoked_at FROM grants WHERE grant_id = $1",
        grant_id
    )
    .fetch_optional(db)
    .await
}

pub async fn touch(
    db: impl PgExecutor<'_>,
    grant_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE grants SET last_used_at = $2 WHERE grant_id = $1 AND revoked_at IS NULL",
        grant_id,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records that a call with this grant's token needed more scope than the grant holds.
pub async fn request_step_up(
    db: impl PgExecutor<'_>,
    grant_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE grants SET step_up_requested_at = $2 WHERE grant_id = $1 AND revoked_at IS NULL",
        grant_id,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Revokes one grant; false when it was not live.
pub async fn revoke(
    db: impl PgExecutor<'_>,
    grant_id: Uuid,
    now: DateTime<Utc>,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE grants SET revoked_at = $2, revoked_reason = $3
         WHERE grant_id = $1 AND revoked_at IS NULL",
        grant_id,
        now,
        reason,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// Revokes every live grant of a user; returns how many.
pub async fn revoke_all_of_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE grants SET revoked_at = now(), revoked_reason = $2
         WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
        reason,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}
