//! `browser_sessions`: signed-in browsers, by the hash of their cookie.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// The live session's user and email.
pub async fn find(
    db: impl PgExecutor<'_>,
    id_hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT s.user_id, u.email FROM browser_sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id_hash = $1 AND s.expires_at > $2",
        id_hash,
        now,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.user_id, row.email)))
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    id_hash: &[u8],
    user_id: Uuid,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO browser_sessions (id_hash, user_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4)",
        id_hash,
        user_id,
        now,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn delete(db: impl PgExecutor<'_>, id_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM browser_sessions WHERE id_hash = $1", id_hash)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends every session of a user; returns how many.
pub async fn delete_all_of_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!("DELETE FROM browser_sessions WHERE user_id = $1", user_id)
        .execute(db)
        .await?;
    Ok(deleted.rows_affected())
}

pub async fn purge_expired(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM browser_sessions WHERE expires_at < $1", now)
        .execute(db)
        .await?;
    Ok(())
}
