//! `signing_keys`: the access-token signing keys, private halves sealed with the master secret.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

pub async fn live_count(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM signing_keys WHERE retired_at IS NULL"#)
        .fetch_one(db)
        .await
}

#[derive(Debug)]
pub struct Row {
    pub kid: String,
    pub public_key: Vec<u8>,
    pub private_key_encrypted: Vec<u8>,
    pub retired_at: Option<DateTime<Utc>>,
    pub verify_until: Option<DateTime<Utc>>,
}

/// Keys that still verify at `now`, oldest first.
pub async fn verifying(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as!(
        Row,
        "SELECT kid, public_key, private_key_encrypted, retired_at, verify_until
         FROM signing_keys WHERE verify_until IS NULL OR verify_until > $1
         ORDER BY created_at",
        now,
    )
    .fetch_all(db)
    .await
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    kid: &str,
    algorithm: &str,
    public_key: &[u8],
    private_key_encrypted: &[u8],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO signing_keys (kid, algorithm, public_key, private_key_encrypted, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        kid,
        algorithm,
        public_key,
        private_key_encrypted,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Retires the signing key: it signs no more and verifies until `verify_until`.
pub async fn retire_current(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    verify_until: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE signing_keys SET retired_at = $1, verify_until = $2 WHERE retired_at IS NULL",
        now,
        verify_until,
    )
    .execute(db)
    .await?;
    Ok(())
}
