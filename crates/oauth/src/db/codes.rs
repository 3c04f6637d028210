//! `authorization_codes`: one-time codes from consent to the token endpoint.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A code to issue, bound to the browser session that consented.
#[derive(Debug)]
pub struct NewCode<'a> {
    pub code_hash: &'a [u8],
    pub client_id: &'a str,
    pub user_id: Uuid,
    pub redirect_uri: &'a str,
    pub code_challenge: &'a str,
    pub scope: &'a str,
    pub resource: &'a str,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub session_hash: &'a [u8],
}

/// Issues a code only while its session lives, under a lock on the session's row: a session
/// ended at the same moment (sign-out everywhere, `users revoke-all`) either waits for this code
/// and then burns it, or has already ended and no code is issued. False when not issued.
pub async fn issue(db: impl PgExecutor<'_>, code: NewCode<'_>) -> Result<bool, sqlx::Error> {
    let issued = sqlx::query!(
        "WITH live AS (
            SELECT 1 FROM browser_sessions WHERE id_hash = $10 AND user_id = $3 FOR KEY SHARE
         )
         INSERT INTO authorization_codes
            (code_hash, client_id, user_id, redirect_uri, code_challenge, scope, resource,
             created_at, expires_at)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM live",
        code.code_hash,
        code.client_id,
        code.user_id,
        code.redirect_uri,
        code.code_challenge,
        code.scope,
        code.resource,
        code.now,
        code.expires_at,
        code.session_hash,
    )
    .execute(db)
    .await?;
    Ok(issued.rows_affected() == 1)
}

/// A code taken for exchange.
#[derive(Debug)]
pub struct Claimed {
    pub client_id: String,
    pub user_id: Uuid,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: String,
    pub resource: String,
    pub expires_at: DateTime<Utc>,
}

/// Marks a code used, once. None when unknown or used before.
pub async fn claim(
    db: impl PgExecutor<'_>,
    code_hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        "UPDATE authorization_codes SET used_at = $2
         WHERE code_hash = $1 AND used_at IS NULL
         RETURNING client_id, user_id, redirect_uri, code_challenge, scope, resource, expires_at",
        code_hash,
        now,
    )
    .fetch_optional(db)
    .await
}

/// A code not used yet, as last committed (no lock). Its claim is [`exchange`] or [`claim`].
pub async fn unused(
    db: impl PgExecutor<'_>,
    code_hash: &[u8],
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        "SELECT client_id, user_id, redirect_uri, code_challenge, scope, resource, expires_at
         FROM authorization_codes WHERE code_hash = $1 AND used_at IS NULL",
        code_hash,
    )
    .fetch_optional(db)
    .await
}

/// What an exchanged code becomes: its grant, the grant's first refresh token when the client
/// registered that grant type, and the security event to record.
#[derive(Debug)]
pub struct Exchange<'a> {
    pub code_hash: &'a [u8],
    pub grant_id: Uuid,
    pub now: DateTime<Utc>,
    /// The granted scope (a token may carry less).
    pub scope: &'a str,
    pub refresh_token_hash: Option<&'a [u8]>,
    pub refresh_idle_expires_at: DateTime<Utc>,
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub event_kind: &'a str,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: serde_json::Value,
}

/// Exchanges a code in one statement and one commit: claims it, creates its grant (attached to
/// the code, so a reuse revokes it), the refresh token and the event, and marks the client
/// authorized (it is then never purged as unused). The claim is the `UPDATE`'s condition: of concurrent exchanges one matches, and
/// the others change nothing and return false.
pub async fn exchange(
    db: impl PgExecutor<'_>,
    exchange: Exchange<'_>,
) -> Result<bool, sqlx::Error> {
    let exchanged = sqlx::query_scalar!(
        r#"WITH claimed AS (
            UPDATE authorization_codes SET used_at = $3, grant_id = $2
            WHERE code_hash = $1 AND used_at IS NULL
            RETURNING user_id, client_id, resource, redirect_uri
         ), granted AS (
            INSERT INTO grants
                (grant_id, user_id, client_id, scope, resource, redirect_uri, created_at,
                 last_used_at)
            SELECT $2, user_id, client_id, $4, resource, redirect_uri, $3, $3 FROM claimed
         ), refresh AS (
            INSERT INTO refresh_tokens
                (token_hash, grant_id, created_at, idle_expires_at, expires_at)
            SELECT $5, $2, $3, $6, $7 FROM claimed WHERE $5::bytea IS NOT NULL
         ), authorized AS (
            UPDATE oauth_clients c SET first_authorized_at = $3 FROM claimed
            WHERE c.client_id = claimed.client_id AND c.first_authorized_at IS NULL
         ), recorded AS (
            INSERT INTO security_events (kind, client_id, user_id, ip, user_agent, detail)
            SELECT $8, client_id, user_id, $9, $10, $11 FROM claimed
         )
         SELECT count(*) AS "exchanged!" FROM claimed"#,
        exchange.code_hash,
        exchange.grant_id,
        exchange.now,
        exchange.scope,
        exchange.refresh_token_hash,
        exchange.refresh_idle_expires_at,
        exchange.refresh_expires_at,
        exchange.event_kind,
        exchange.ip,
        exchange.user_agent,
        exchange.detail,
    )
    .fetch_one(db)
    .await?;
    Ok(exchanged == 1)
}

/// What the first use of a code produced.
#[derive(Debug)]
#[expect(clippy::struct_field_names, reason = "the columns' names")]
pub struct FirstUse {
    pub grant_id: Option<Uuid>,
    pub client_id: String,
    pub user_id: Uuid,
}

pub async fn first_use(
    db: impl PgExecutor<'_>,
    code_hash: &[u8],
) -> Result<Option<FirstUse>, sqlx::Error> {
    sqlx::query_as!(
        FirstUse,
        "SELECT grant_id, client_id, user_id FROM authorization_codes WHERE code_hash = $1",
        code_hash,
    )
    .fetch_optional(db)
    .await
}

/// Burns every unexchanged code of a user.
pub async fn burn_unused_of_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE authorization_codes SET used_at = now()
         WHERE user_id = $1 AND used_at IS NULL",
        user_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Codes expired for a day (kept that long so a late reuse is still detected).
pub async fn purge_expired(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM authorization_codes WHERE expires_at < $1::timestamptz - interval '1 day'",
        now
    )
    .execute(db)
    .await?;
    Ok(())
}
