//! `registration_events`: dynamic registrations per address, for the hourly limit.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// Registration times from `ip_bucket` in the hour before `now`, oldest first.
pub async fn in_last_hour(
    db: impl PgExecutor<'_>,
    ip_bucket: &str,
    now: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT created_at FROM registration_events
         WHERE ip_bucket = $1 AND created_at > $2::timestamptz - interval '1 hour' ORDER BY created_at",
        ip_bucket,
        now,
    )
    .fetch_all(db)
    .await
}

pub async fn record(
    db: impl PgExecutor<'_>,
    ip_bucket: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO registration_events (ip_bucket, created_at) VALUES ($1, $2)",
        ip_bucket,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn purge_old(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM registration_events WHERE created_at < $1::timestamptz - interval '1 hour'",
        now
    )
    .execute(db)
    .await?;
    Ok(())
}
