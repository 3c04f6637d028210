//! `refresh_tokens`: rotating refresh tokens, one family per grant.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

pub async fn insert(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    grant_id: Uuid,
    now: DateTime<Utc>,
    idle_expires_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, idle_expires_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        token_hash,
        grant_id,
        now,
        idle_expires_at,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A presented refresh token with its grant.
#[derive(Debug)]
pub struct Presented {
    pub grant_id: Uuid,
    pub idle_expires_at: DateTime<Utc>,
    /// The family's absolute end, when one is configured.
    pub expires_at: Option<DateTime<Utc>>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub successor_hash: Option<Vec<u8>>,
    pub client_id: String,
    pub user_id: Uuid,
    pub scope: String,
    pub resource: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub step_up_requested_at: Option<DateTime<Utc>>,
}

/// The token and its grant, the token's row locked: concurrent refreshes of one token run one
/// after the other.
pub async fn lock_presented(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Presented>, sqlx::Error> {
    sqlx::query_as!(
        Presented,
        "SELECT rt.grant_id, rt.idle_expires_at, rt.expires_at, rt.rotated_at, rt.successor_hash,
                g.client_id, g.user_id, g.scope, g.resource, g.revoked_at,
                g.step_up_requested_at
         FROM refresh_tokens rt JOIN grants g USING (grant_id)
         WHERE rt.token_hash = $1 FOR UPDATE OF rt",
        token_hash,
    )
    .fetch_optional(db)
    .await
}

/// Marks a token rotated to `successor_hash`.
pub async fn rotate(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    now: DateTime<Utc>,
    successor_hash: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE refresh_tokens SET rotated_at = $2, successor_hash = $3 WHERE token_hash = $1",
        token_hash,
        now,
        successor_hash,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// When a token was rotated, its row locked: `None` when it does not exist, `Some(None)` while
/// it is unused.
pub async fn lock_rotated_at(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Option<DateTime<Utc>>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT rotated_at FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        token_hash,
    )
    .fetch_optional(db)
    .await
}

/// The grant a refresh token belongs to: `(grant_id, client_id, user_id)`.
pub async fn grant_of(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<(Uuid, String, Uuid)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT g.grant_id, g.client_id, g.user_id
         FROM refresh_tokens rt JOIN grants g USING (grant_id)
         WHERE rt.token_hash = $1",
        token_hash,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.grant_id, row.client_id, row.user_id)))
}

/// Past their idle timeout (never later than their family's end), refresh tokens can only be refused; a day's
/// margin keeps a late replay answered as a replay.
pub async fn purge_expired(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM refresh_tokens
         WHERE idle_expires_at < $1::timestamptz - interval '1 day'",
        now
    )
    .execute(db)
    .await?;
    Ok(())
}
