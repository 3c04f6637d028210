//! Access-token signing keys (Ed25519, JWS `EdDSA`) kept in PostgreSQL so every replica signs and
//! verifies with the same set. Private halves are encrypted (ChaCha20-Poly1305, the key id as
//! associated data) under a key derived from the master secret.
//!
//! Rotation adds a key that signs from then on; the previous key stops signing but still verifies
//! until the longest access-token lifetime has passed, after which tokens it signed are refused.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use sqlx::PgPool;
use store::clock::Clock;

use crate::crypto::{b64, b64_decode, derive_key, random_token};
use crate::db::signing_keys;
use crate::error::Internal;

/// The JWS algorithm of every access token; nothing else is accepted (RFC 8725 §3.1).
pub const ALGORITHM: &str = "EdDSA";
/// RFC 9068 §2.1: the `typ` header of JWT access tokens.
pub const TOKEN_TYPE: &str = "at+jwt";
/// Announces a rotation to every replica.
pub const CHANNEL: &str = "signing_keys_changed";
/// Unknown `kid`s trigger a reload from the database at most this often.
/// Held while the key set changes, so one replica creates or rotates at a time.
const SIGNING_KEYS_LOCK: &str = "crosstrade signing keys";

const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

struct VerificationKey {
    key: VerifyingKey,
    verify_until: Option<DateTime<Utc>>,
}

struct KeySet {
    signing: Option<(String, SigningKey)>,
    verifying: HashMap<String, VerificationKey>,
    loaded_at: Instant,
}

/// The signing and verification keys of this deployment.
pub struct KeyRing {
    encryption_key: [u8; 32],
    keys: RwLock<KeySet>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

/// Why a JWT was refused before any claim was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    Malformed,
    UnknownKey,
    BadSignature,
    KeyExpired,
}

fn encryption_key(master_secret: &[u8]) -> [u8; 32] {
    derive_key(master_secret, "crosstrade signing-key encryption v1")
}

impl KeyRing {
    /// Loads the keys, creating the first one when the database has none.
    pub async fn load(db: &PgPool, master_secret: &[u8], clock: &Clock) -> Result<Self, Internal> {
        let ring = Self {
            encryption_key: encryption_key(master_secret),
            keys: RwLock::new(KeySet {
                signing: None,
                verifying: HashMap::new(),
                loaded_at: Instant::now(),
            }),
        };
        let mut tx = db.begin().await?;
        // One replica creates the first key; the others wait and then see it.
        store::lock::advisory_xact(&mut *tx, SIGNING_KEYS_LOCK).await?;
        let count = signing_keys::live_count(&mut *tx).await?;
        if count == 0 {
            insert_key(&mut tx, &ring.encryption_key, clock.now()).await?;
        }
        tx.commit().await?;
        ring.reload(db, clock).await?;
        Ok(ring)
    }

    /// Reads the current key set from the database.
    pub async fn reload(&self, db: &PgPool, clock: &Clock) -> Result<(), Internal> {
        let rows = signing_keys::verifying(db, clock.now()).await?;
        let mut signing = None;
        let mut verifying = HashMap::new();
        for signing_keys::Row {
            kid,
            public_key: public,
            private_key_encrypted: encrypted,
            retired_at,
            verify_until,
        } in rows
        {
            let key = verifying_key(&public)
                .ok_or_else(|| Internal::new(format!("signing key {kid}: bad public key")))?;
            if retired_at.is_none() {
                signing = Some((kid.clone(), self.decrypt(&kid, &encrypted)?));
            }
            verifying.insert(kid, VerificationKey { key, verify_until });
        }
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *keys = KeySet {
            signing,
            verifying,
            loaded_at: Instant::now(),
        };
        Ok(())
    }

    fn decrypt(&self, kid: &str, sealed: &[u8]) -> Result<SigningKey, Internal> {
        let (nonce, ciphertext) = sealed
            .split_at_checked(12)
            .ok_or_else(|| Internal::new(format!("signing key {kid}: truncated")))?;
        let cipher = ChaCha20Poly1305::new(&self.encryption_key.into());
        let nonce = Nonce::try_from(nonce).map_err(|_| Internal::new("bad nonce length"))?;
        let secret = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| {
                Internal::new(format!(
                    "signing key {kid} cannot be decrypted: the master secret differs from the \
                     one it was created with"
                ))
            })?;
        let bytes: [u8; 32] = secret
            .try_into()
            .map_err(|_| Internal::new(format!("signing key {kid}: bad length")))?;
        Ok(SigningKey::from_bytes(&bytes))
    }

    /// Signs `claims` as a compact JWS with the current key.
    pub fn sign(&self, claims: &Value) -> Result<String, Internal> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (kid, key) = keys
            .signing
            .as_ref()
            .ok_or_else(|| Internal::new("no active signing key"))?;
        let header = json!({ "alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": kid });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = key.sign(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", b64(&signature.to_bytes())))
    }

    /// Checks the header and signature of a compact JWS and returns the `kid` that verified it
    /// and its claims. Claims are not validated here.
    pub async fn verify(
        &self,
        token: &str,
        db: &PgPool,
        clock: &Clock,
    ) -> Result<(String, Value), JwtError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Value = b64_decode(header_b64)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(JwtError::Malformed)?;
        // The algorithm comes from our allow-list, never from the token (RFC 8725 §2.1).
        if header["alg"] != ALGORITHM
            || !header["typ"].as_str().is_some_and(|t| {
                t.eq_ignore_ascii_case(TOKEN_TYPE) || t.eq_ignore_ascii_case("application/at+jwt")
            })
            || header.get("crit").is_some()
        {
            return Err(JwtError::Malformed);
        }
        let kid = header["kid"].as_str().ok_or(JwtError::Malformed)?;
        let signature = b64_decode(signature_b64)
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(JwtError::Malformed)?;
        let key = if let Some(found) = self.verification_key(kid, clock) {
            found
        } else {
            if self.may_reload() {
                self.reload(db, clock)
                    .await
                    .map_err(|_| JwtError::UnknownKey)?;
            }
            self.verification_key(kid, clock)
                .ok_or(JwtError::UnknownKey)?
        }?;
        let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
        key.verify_strict(signing_input.as_bytes(), &signature)
            .map_err(|_| JwtError::BadSignature)?;
        let claims = b64_decode(claims_b64)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(Value::is_object)
            .ok_or(JwtError::Malformed)?;
        Ok((kid.to_owned(), claims))
    }

    /// Whether tokens signed by `kid` still verify (the key is known and not past
    /// `verify_until`), for tokens whose signature was checked before.
    pub fn still_verifies(&self, kid: &str, clock: &Clock) -> bool {
        matches!(self.verification_key(kid, clock), Some(Ok(_)))
    }

    fn verification_key(&self, kid: &str, clock: &Clock) -> Option<Result<VerifyingKey, JwtError>> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let found = keys.verifying.get(kid)?;
        Some(match found.verify_until {
            Some(until) if until <= clock.now() => Err(JwtError::KeyExpired),
            _ => Ok(found.key),
        })
    }

    fn may_reload(&self) -> bool {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.loaded_at.elapsed() >= RELOAD_INTERVAL
    }

    /// The public keys as a JWK Set (RFC 7517), for `jwks_uri`.
    pub fn jwks(&self) -> Value {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut list: Vec<(&String, &VerificationKey)> = keys.verifying.iter().collect();
        list.sort_by(|a, b| a.0.cmp(b.0));
        let keys: Vec<Value> = list
            .into_iter()
            .map(|(kid, key)| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": ALGORITHM,
                    "use": "sig",
                    "kid": kid,
                    "x": b64(key.key.as_bytes()),
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

fn verifying_key(public: &[u8]) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = public.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

async fn insert_key(
    tx: &mut sqlx::PgConnection,
    encryption_key: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<String, Internal> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|err| Internal::caused("CSPRNG", err))?;
    let signing = SigningKey::from_bytes(&secret);
    let kid = random_token()?[..16].to_owned();
    let mut nonce_bytes = [0u8; 12];
    getrandom::fill(&mut nonce_bytes).map_err(|err| Internal::caused("CSPRNG", err))?;
    let nonce = Nonce::from(nonce_bytes);
    let cipher = ChaCha20Poly1305::new(&(*encryption_key).into());
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &secret,
                aad: kid.as_bytes(),
            },
        )
        .map_err(|_| Internal::new("encrypting a signing key"))?;
    let mut sealed = nonce_bytes.to_vec();
    sealed.extend_from_slice(&ciphertext);
    signing_keys::insert(
        &mut *tx,
        &kid,
        ALGORITHM,
        signing.verifying_key().as_bytes().as_slice(),
        &sealed,
        now,
    )
    .await?;
    Ok(kid)
}

/// Adds a signing key and retires the current ones: they stop signing now and stop verifying
/// once `max_access_token_lifetime` has passed. Returns the new key id.
pub async fn rotate(
    db: &PgPool,
    master_secret: &[u8],
    max_access_token_lifetime: Duration,
    clock: &Clock,
) -> Result<String, Internal> {
    let now = clock.now();
    let until = now
        + chrono::TimeDelta::from_std(max_access_token_lifetime)
            .map_err(|_| Internal::new("access-token lifetime out of range"))?;
    let mut tx = db.begin().await?;
    store::lock::advisory_xact(&mut *tx, SIGNING_KEYS_LOCK).await?;
    signing_keys::retire_current(&mut *tx, now, until).await?;
    let kid = insert_key(&mut tx, &encryption_key(master_secret), now).await?;
    sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, &kid)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(kid)
}
