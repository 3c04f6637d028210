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

/// Records the grant a code produced (revoked if the code is ever presented again).
pub async fn attach_grant(
    db: impl PgExecutor<'_>,
    code_hash: &[u8],
    grant_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE authorization_codes SET grant_id = $2 WHERE code_hash = $1",
        code_hash,
        grant_id,
    )
    .execute(db)
    .await?;
    Ok(())
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
