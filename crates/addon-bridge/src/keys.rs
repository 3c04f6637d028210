//! Add-On keys: personal access tokens the Add-On presents in `Authorization: Bearer …`.
//!
//! A key is `ctak_` followed by 256 random bits in base64url (43 characters), so secret
//! scanners can recognise a leaked one and an MCP access token (a JWT) can never pass for one.
//! Only its SHA-256 is stored. Revoking a key fires a trigger whose notification closes the
//! key's live socket on whichever replica holds it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Every Add-On key starts with this.
pub const KEY_PREFIX: &str = "ctak_";
const KEY_RANDOM_BYTES: usize = 32;
/// Characters of the key kept in clear as a hint (`ctak_` and six more: 36 of 256 bits).
const HINT_LEN: usize = KEY_PREFIX.len() + 6;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("random source unavailable: {0}")]
    Random(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A key as listed to its owner: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeySummary {
    pub key_id: Uuid,
    /// The key's first characters, e.g. `ctak_Ab3xYz`.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who a presented key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyOwner {
    pub key_id: Uuid,
    pub user_id: Uuid,
}

fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Creates a key for `user_id`. Returns its id and the key, which is shown once and never
/// stored.
pub async fn create(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<(Uuid, String), KeyError> {
    let random = store::secret::random_bytes(KEY_RANDOM_BYTES)
        .map_err(|err| KeyError::Random(err.to_string()))?;
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let hint: String = key.chars().take(HINT_LEN).collect();
    let key_id = sqlx::query_scalar!(
        "INSERT INTO addon_keys (user_id, key_hash, hint) VALUES ($1, $2, $3) RETURNING key_id",
        user_id,
        hash(&key),
        hint,
    )
    .fetch_one(db)
    .await?;
    Ok((key_id, key))
}

/// Revokes one of `user_id`'s keys and closes its live socket on every replica. Returns false
/// when the key is unknown, someone else's, or already revoked.
pub async fn revoke(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    key_id: Uuid,
) -> Result<bool, KeyError> {
    let done = sqlx::query!(
        "UPDATE addon_keys SET revoked_at = now()
         WHERE key_id = $1 AND user_id = $2 AND revoked_at IS NULL",
        key_id,
        user_id,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes every live key of `user_id` (their sockets close on whichever replica holds them);
/// returns how many.
pub async fn revoke_all(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<u64, KeyError> {
    let done = sqlx::query!(
        "UPDATE addon_keys SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// `user_id`'s keys, newest first, revoked ones included.
pub async fn list(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Vec<KeySummary>, KeyError> {
    Ok(sqlx::query_as!(
        KeySummary,
        "SELECT key_id, hint, created_at, last_used_at, revoked_at FROM addon_keys
         WHERE user_id = $1 ORDER BY created_at DESC, key_id",
        user_id,
    )
    .fetch_all(db)
    .await?)
}

/// The owner of a live key, recording its use. Anything without the prefix (an MCP token, a
/// typo) is refused without a query.
pub(crate) async fn authenticate(
    db: impl PgExecutor<'_>,
    presented: &str,
) -> Result<Option<KeyOwner>, sqlx::Error> {
    if !looks_like_key(presented) {
        return Ok(None);
    }
    sqlx::query_as!(
        KeyOwner,
        "UPDATE addon_keys SET last_used_at = now()
         WHERE key_hash = $1 AND revoked_at IS NULL RETURNING key_id, user_id",
        hash(presented),
    )
    .fetch_optional(db)
    .await
}

/// Whether `candidate` has the shape of an Add-On key.
pub fn looks_like_key(candidate: &str) -> bool {
    candidate.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Whether the key exists and is not revoked.
pub(crate) async fn is_live(db: impl PgExecutor<'_>, key_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM addon_keys WHERE key_id = $1 AND revoked_at IS NULL)
             AS "live!""#,
        key_id,
    )
    .fetch_one(db)
    .await
}

/// Keys among `key_ids` that are revoked (for re-checking live sockets after a missed
/// notification).
pub(crate) async fn revoked_among(
    db: impl PgExecutor<'_>,
    key_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT key_id FROM addon_keys WHERE key_id = ANY($1) AND revoked_at IS NOT NULL",
        key_ids,
    )
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        assert!(looks_like_key(&format!("ctak_{}", "A".repeat(43))));
        assert!(!looks_like_key(&format!("ctak_{}", "A".repeat(42))));
        assert!(!looks_like_key(&format!("ctak_{}=", "A".repeat(42))));
        assert!(!looks_like_key("eyJhbGciOiJFZERTQSJ9.e30.sig"));
    }
}
