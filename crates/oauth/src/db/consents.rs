//! `consent_transactions`: a consent page shown, awaiting the user's answer.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug)]
pub struct NewConsent<'a> {
    pub id: Uuid,
    pub session_hash: &'a [u8],
    pub csrf_hash: &'a [u8],
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub state: Option<&'a str>,
    pub code_challenge: &'a str,
    pub scope_offered: &'a str,
    pub resource: &'a str,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(db: impl PgExecutor<'_>, consent: NewConsent<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO consent_transactions
            (id, session_hash, csrf_hash, client_id, redirect_uri, state, code_challenge,
             scope_offered, resource, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        consent.id,
        consent.session_hash,
        consent.csrf_hash,
        consent.client_id,
        consent.redirect_uri,
        consent.state,
        consent.code_challenge,
        consent.scope_offered,
        consent.resource,
        consent.now,
        consent.expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A consent taken for its answer.
#[derive(Debug)]
pub struct Claimed {
    pub csrf_hash: Vec<u8>,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope_offered: String,
    pub resource: String,
}

/// Takes a live consent of this browser session, once.
pub async fn claim(
    db: impl PgExecutor<'_>,
    id: Uuid,
    session_hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        "UPDATE consent_transactions SET used_at = $3
         WHERE id = $1 AND session_hash = $2 AND used_at IS NULL AND expires_at > $3
         RETURNING csrf_hash, client_id, redirect_uri, state, code_challenge, scope_offered,
           resource",
        id,
        session_hash,
        now,
    )
    .fetch_optional(db)
    .await
}

pub async fn purge_expired(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM consent_transactions WHERE expires_at < $1",
        now
    )
    .execute(db)
    .await?;
    Ok(())
}
