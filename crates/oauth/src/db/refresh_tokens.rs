//! `refresh_tokens`: rotating refresh tokens, one family per grant.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A presented refresh token with its grant.
#[derive(Debug)]
pub struct Presented {
    pub grant_id: Uuid,
    pub idle_expires_at: DateTime<Utc>,
    /// The family's absolute end, when one is configured.
    pub expires_at: Option<DateTime<Utc>>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub client_id: String,
    pub user_id: Uuid,
    pub scope: String,
    pub resource: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub step_up_requested_at: Option<DateTime<Utc>>,
}

/// The token and its grant, as last committed (no lock).
pub async fn presented(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Presented>, sqlx::Error> {
    sqlx::query_as!(
        Presented,
        "SELECT rt.grant_id, rt.idle_expires_at, rt.expires_at, rt.rotated_at,
                g.client_id, g.user_id, g.scope, g.resource, g.revoked_at, g.step_up_requested_at
         FROM refresh_tokens rt JOIN grants g USING (grant_id)
         WHERE rt.token_hash = $1",
        token_hash,
    )
    .fetch_optional(db)
    .await
}

/// What decides a repeat of a rotated token.
#[derive(Debug)]
pub struct Rotation {
    pub rotated_at: Option<DateTime<Utc>>,
    pub successor_hash: Option<Vec<u8>>,
    /// When the token's grant was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The token's rotation, its row locked: concurrent refreshes of one token run one after the
/// other.
pub async fn lock_rotation(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Rotation>, sqlx::Error> {
    sqlx::query_as!(
        Rotation,
        "SELECT rt.rotated_at, rt.successor_hash, g.revoked_at
         FROM refresh_tokens rt JOIN grants g USING (grant_id)
         WHERE rt.token_hash = $1 FOR UPDATE OF rt",
        token_hash,
    )
    .fetch_optional(db)
    .await
}

/// A first rotation: the presented token, its successor and the security event to record.
#[derive(Debug)]
pub struct FirstRotation<'a> {
    pub token_hash: &'a [u8],
    pub grant_id: Uuid,
    pub successor_hash: &'a [u8],
    pub now: DateTime<Utc>,
    /// The successor's idle timeout, never past the family's end.
    pub successor_idle_expires_at: DateTime<Utc>,
    pub event_kind: &'a str,
    pub client_id: &'a str,
    pub user_id: Uuid,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: serde_json::Value,
}

/// Rotates a token that was never rotated, in one statement and one commit: marks it rotated,
/// inserts its successor, touches the grant and records the event.
///
/// The grant's row is locked first and must be live once the lock is held, so a revocation
/// either commits before (nothing rotates) or waits for this rotation and then ends the pair
/// it made. The token's `UPDATE` condition is the claim: of concurrent rotations one matches.
/// False when nothing rotated: rotated concurrently, expired, or the grant ended.
pub async fn rotate_first(
    db: impl PgExecutor<'_>,
    rotation: FirstRotation<'_>,
) -> Result<bool, sqlx::Error> {
    let rotated = sqlx::query_scalar!(
        r#"WITH live AS (
            SELECT grant_id FROM grants
            WHERE grant_id = $2 AND revoked_at IS NULL
            FOR NO KEY UPDATE
         ), rotated AS (
            UPDATE refresh_tokens rt SET rotated_at = $4, successor_hash = $3
            FROM live
            WHERE rt.token_hash = $1 AND rt.grant_id = live.grant_id AND rt.rotated_at IS NULL
              AND rt.idle_expires_at > $4 AND (rt.expires_at IS NULL OR rt.expires_at > $4)
            RETURNING rt.grant_id, rt.expires_at
         ), successor AS (
            INSERT INTO refresh_tokens
                (token_hash, grant_id, created_at, idle_expires_at, expires_at)
            SELECT $3, grant_id, $4, $5, expires_at FROM rotated
         ), touched AS (
            UPDATE grants g SET last_used_at = $4 FROM rotated
            WHERE g.grant_id = rotated.grant_id
         ), recorded AS (
            INSERT INTO security_events (kind, client_id, user_id, ip, user_agent, detail)
            SELECT $6, $7, $8, $9, $10, $11 FROM rotated
         )
         SELECT count(*) AS "rotated!" FROM rotated"#,
        rotation.token_hash,
        rotation.grant_id,
        rotation.successor_hash,
        rotation.now,
        rotation.successor_idle_expires_at,
        rotation.event_kind,
        rotation.client_id,
        rotation.user_id,
        rotation.ip,
        rotation.user_agent,
        rotation.detail,
    )
    .fetch_one(db)
    .await?;
    Ok(rotated == 1)
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
