//! `sign_in_failures`: failed (and in-flight) password sign-ins, by address and account.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// Failures since a moment, by address, by account and by both.
#[derive(Debug)]
pub struct Counts {
    pub by_ip: i64,
    pub ip_oldest: Option<DateTime<Utc>>,
    pub by_account: i64,
    pub here: i64,
    pub here_oldest: Option<DateTime<Utc>>,
    pub here_latest: Option<DateTime<Utc>>,
}

pub async fn counts(
    db: impl PgExecutor<'_>,
    ip_bucket: &str,
    account: &str,
    since: DateTime<Utc>,
) -> Result<Counts, sqlx::Error> {
    sqlx::query_as!(
        Counts,
        r#"SELECT
             count(*) FILTER (WHERE ip_bucket = $1) AS "by_ip!",
             min(created_at) FILTER (WHERE ip_bucket = $1) AS ip_oldest,
             count(*) FILTER (WHERE email_lower = $2) AS "by_account!",
             count(*) FILTER (WHERE ip_bucket = $1 AND email_lower = $2) AS "here!",
             min(created_at) FILTER (WHERE ip_bucket = $1 AND email_lower = $2) AS here_oldest,
             max(created_at) FILTER (WHERE ip_bucket = $1 AND email_lower = $2) AS here_latest
           FROM sign_in_failures
           WHERE (ip_bucket = $1 OR email_lower = $2) AND created_at > $3"#,
        ip_bucket,
        account,
        since,
    )
    .fetch_one(db)
    .await
}

/// Counts an attempt as failed before its password is checked; returns the row to give back
/// when it succeeds.
pub async fn reserve(
    db: impl PgExecutor<'_>,
    ip_bucket: &str,
    account: &str,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO sign_in_failures (ip_bucket, email_lower, created_at)
         VALUES ($1, $2, $3) RETURNING id",
        ip_bucket,
        account,
        now,
    )
    .fetch_one(db)
    .await
}

pub async fn give_back(db: impl PgExecutor<'_>, reserved: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM sign_in_failures WHERE id = $1", reserved)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn purge_old(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM sign_in_failures WHERE created_at < $1::timestamptz - interval '1 hour'",
        now
    )
    .execute(db)
    .await?;
    Ok(())
}
