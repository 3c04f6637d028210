//! `oauth_clients`: registered clients and fetched Client ID Metadata Documents.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

/// A client's stored metadata (as registered or fetched).
pub async fn metadata(
    db: impl PgExecutor<'_>,
    client_id: &str,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT metadata FROM oauth_clients WHERE client_id = $1",
        client_id
    )
    .fetch_optional(db)
    .await
}

pub async fn exists(db: impl PgExecutor<'_>, client_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM oauth_clients WHERE client_id = $1) AS "exists!""#,
        client_id
    )
    .fetch_one(db)
    .await
}

/// What the authorization endpoint needs of a client.
#[derive(Debug)]
pub struct Registered {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
}

pub async fn registered(
    db: impl PgExecutor<'_>,
    client_id: &str,
) -> Result<Option<Registered>, sqlx::Error> {
    sqlx::query_as!(
        Registered,
        "SELECT client_id, client_name, redirect_uris FROM oauth_clients WHERE client_id = $1",
        client_id
    )
    .fetch_optional(db)
    .await
}

pub async fn redirect_uris(
    db: impl PgExecutor<'_>,
    client_id: &str,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT redirect_uris FROM oauth_clients WHERE client_id = $1",
        client_id
    )
    .fetch_optional(db)
    .await
}

/// The client registered earlier with the same metadata from the same address.
pub async fn by_dedup_key(
    db: impl PgExecutor<'_>,
    dedup_key: &[u8],
) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT client_id, created_at FROM oauth_clients WHERE dedup_key = $1 LIMIT 1",
        dedup_key
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.client_id, row.created_at)))
}

/// A client from dynamic registration.
#[derive(Debug)]
pub struct NewRegistration<'a> {
    pub client_id: &'a str,
    pub metadata: &'a Value,
    pub dedup_key: &'a [u8],
    pub client_name: Option<&'a str>,
    pub redirect_uris: &'a [String],
    pub registered_ip: &'a str,
    pub now: DateTime<Utc>,
}

pub async fn insert_registration(
    db: impl PgExecutor<'_>,
    client: NewRegistration<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO oauth_clients
            (client_id, metadata, dedup_key, client_name, redirect_uris, registered_ip, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        client.client_id,
        client.metadata,
        client.dedup_key,
        client.client_name,
        client.redirect_uris,
        client.registered_ip,
        client.now,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A stored Client ID Metadata Document.
#[derive(Debug)]
pub struct StoredDocument {
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    /// Not past its cache lifetime at `now`.
    pub fresh: bool,
    /// The client has completed an authorization here.
    pub proven: bool,
}

pub async fn stored_document(
    db: impl PgExecutor<'_>,
    client_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<StoredDocument>, sqlx::Error> {
    sqlx::query_as!(
        StoredDocument,
        r#"SELECT client_name, redirect_uris,
             COALESCE(metadata_expires_at > $2, false) AS "fresh!",
             first_authorized_at IS NOT NULL AS "proven!"
           FROM oauth_clients WHERE client_id = $1 AND metadata_fetched_at IS NOT NULL"#,
        client_id,
        now,
    )
    .fetch_optional(db)
    .await
}

/// Deletes the oldest never-authorized documents of `host` beyond `keep`, unless `client_id`
/// is stored already; returns the deleted client ids.
pub async fn evict_unproven_documents(
    db: impl PgExecutor<'_>,
    host: &str,
    client_id: &str,
    keep: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "DELETE FROM oauth_clients WHERE client_id IN (
            SELECT client_id FROM oauth_clients
            WHERE metadata_host = $1 AND first_authorized_at IS NULL AND client_id <> $2
            ORDER BY created_at DESC, client_id OFFSET $3)
         AND NOT EXISTS (SELECT 1 FROM oauth_clients WHERE client_id = $2)
         RETURNING client_id",
        host,
        client_id,
        keep,
    )
    .fetch_all(db)
    .await
}

/// A fetched Client ID Metadata Document.
#[derive(Debug)]
pub struct FetchedDocument<'a> {
    pub client_id: &'a str,
    pub metadata: &'a Value,
    pub dedup_key: &'a [u8],
    pub client_name: Option<&'a str>,
    pub redirect_uris: &'a [String],
    pub host: &'a str,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Stores or refreshes a document. `Some(true)` when inserted, `Some(false)` when refreshed,
/// `None` when the client id belongs to a dynamically registered client.
pub async fn upsert_document(
    db: impl PgExecutor<'_>,
    document: FetchedDocument<'_>,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO oauth_clients
              (client_id, metadata, dedup_key, client_name, redirect_uris, registered_ip,
               created_at, metadata_fetched_at, metadata_expires_at, metadata_host)
           VALUES ($1, $2, $3, $4, $5, '', $6, $6, $7, $8)
           ON CONFLICT (client_id) DO UPDATE SET
              metadata = EXCLUDED.metadata, client_name = EXCLUDED.client_name,
              redirect_uris = EXCLUDED.redirect_uris,
              metadata_fetched_at = EXCLUDED.metadata_fetched_at,
              metadata_expires_at = EXCLUDED.metadata_expires_at
           WHERE oauth_clients.metadata_fetched_at IS NOT NULL
           RETURNING (xmax = 0) AS "inserted!""#,
        document.client_id,
        document.metadata,
        document.dedup_key,
        document.client_name,
        document.redirect_uris,
        document.now,
        document.expires_at,
        document.host,
    )
    .fetch_optional(db)
    .await
}

/// Deletes clients that never completed an authorization within a day; returns their ids.
pub async fn purge_unauthorized(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "DELETE FROM oauth_clients
         WHERE first_authorized_at IS NULL AND created_at < $1::timestamptz - interval '24 hours'
         RETURNING client_id",
        now,
    )
    .fetch_all(db)
    .await
}
