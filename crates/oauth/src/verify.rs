//! Access-token verification for the resource server, and grant revocation.
//!
//! A token is accepted when its signature verifies with a known key under the allowed algorithm,
//! its claims name this issuer and this resource, it is within its lifetime, and its grant is
//! alive. Grant state is cached in-process; every change that ends a grant is announced by a
//! database trigger on the `grant_ended` channel, and each replica's listener drops the cached
//! state. While the listener is disconnected the cache is bypassed (revocation fails closed),
//! and it starts empty after every reconnect.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use store::Background;
use store::clock::Clock;
use store::hub::{Event, Subscription};
use store::notified::NotifiedMap;
use store::tasks::{Shutdown, Supervisor};
use uuid::Uuid;

use crate::error::Internal;
use crate::keys::{JwtError, KeyRing};
use crate::scope::Scope;
use crate::state::OAuthState;
use vocabulary::Principal;

/// Clock skew tolerated on `exp`, `nbf` and `iat` (RFC 9068 §4).
const LEEWAY_SECONDS: i64 = 30;
/// `last_used_at` is written at most this often per grant.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);
const CHANNEL: &str = "grant_ended";
/// Signing keys are re-read at least this often.
const KEY_REFRESH: Duration = Duration::from_secs(60);

/// Why an access token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessError {
    Malformed,
    BadSignature,
    UnknownKey,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    Revoked,
    /// The grant's state could not be read (database down): not a client error.
    Unavailable,
}

impl AccessError {
    pub fn message(self) -> &'static str {
        match self {
            AccessError::Malformed => "the access token is malformed",
            AccessError::BadSignature | AccessError::UnknownKey => {
                "the access token was not issued by this server"
            }
            AccessError::Expired => "the access token has expired",
            AccessError::NotYetValid => "the access token is not valid yet",
            AccessError::WrongIssuer => "the access token was issued by another server",
            AccessError::WrongAudience => "the access token is not for this resource",
            AccessError::Revoked => "the access token has been revoked",
            AccessError::Unavailable => "token state is temporarily unavailable",
        }
    }
}

#[derive(Clone, Copy)]
struct CachedGrant {
    alive: bool,
    last_used_written: Instant,
}

/// Per-replica cache of grant liveness, by grant id. A lookup stores what it read only if no
/// notification and no listener reset came between its database read and its write (the
/// [`NotifiedMap`] epoch), so neither a revocation nor a reconnect that forgot one can be
/// overwritten by a stale "alive".
#[derive(Default)]
pub struct GrantCache {
    entries: NotifiedMap<CachedGrant>,
}

impl GrantCache {
    /// Whether revocations from other replicas are being received (the cache is in use).
    pub fn is_listening(&self) -> bool {
        self.entries.is_listening()
    }
}

/// Access tokens whose signature and claims were checked, by SHA-256 of the token, so a client
/// that sends the same token again costs a hash and a map lookup instead of an Ed25519
/// verification. An entry is used only until the token's `exp` (with the leeway) and while its
/// signing key still verifies; the grant is checked on every use, so revocation is unaffected.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: RwLock<HashMap<[u8; 32], VerifiedToken>>,
}

struct VerifiedToken {
    access: Principal,
    kid: String,
    exp: i64,
}

/// More entries than this and the cache starts over (memory stays bounded).
const MAX_VERIFIED_TOKENS: usize = 100_000;

impl VerifiedTokens {
    fn get(&self, digest: &[u8; 32], keys: &KeyRing, clock: &Clock) -> Option<Principal> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = entries.get(digest)?;
        (entry.exp + LEEWAY_SECONDS > clock.now().timestamp()
            && keys.still_verifies(&entry.kid, clock))
        .then(|| entry.access.clone())
    }

    fn put(&self, digest: [u8; 32], kid: String, exp: i64, access: &Principal) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_VERIFIED_TOKENS {
            entries.clear();
        }
        entries.insert(
            digest,
            VerifiedToken {
                access: access.clone(),
                kid,
                exp,
            },
        );
    }
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens").finish_non_exhaustive()
    }
}

impl OAuthState {
    /// Verifies a bearer access token for the MCP resource.
    pub async fn verify_access_token(&self, token: &str) -> Result<Principal, AccessError> {
        let inner = &self.inner;
        // SHA-256 of the token: the cache never holds bearer tokens themselves.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(verified) = inner.verified.get(&digest, &inner.keys, &inner.clock) {
            self.check_grant(verified.grant_id).await?;
            return Ok(verified);
        }
        let (kid, claims) = inner
            .keys
            .verify(token, &inner.db, &inner.clock)
            .await
            .map_err(|err| match err {
                JwtError::Malformed => AccessError::Malformed,
                JwtError::BadSignature => AccessError::BadSignature,
                JwtError::UnknownKey | JwtError::KeyExpired => AccessError::UnknownKey,
            })?;
        let now = inner.clock.now().timestamp();
        let settings = &inner.settings;
        let int = |key: &str| claims[key].as_i64().ok_or(AccessError::Malformed);
        if int("exp")? + LEEWAY_SECONDS <= now {
            return Err(AccessError::Expired);
        }
        if claims.get("nbf").is_some() && int("nbf")? - LEEWAY_SECONDS > now {
            return Err(AccessError::NotYetValid);
        }
        if int("iat")? - LEEWAY_SECONDS > now {
            return Err(AccessError::NotYetValid);
        }
        if claims["iss"].as_str() != Some(settings.issuer.as_str()) {
            return Err(AccessError::WrongIssuer);
        }
        let resource = settings.resource();
        let audience_ok = match &claims["aud"] {
            Value::String(aud) => *aud == resource,
            Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(resource.as_str())),
            _ => false,
        };
        if !audience_ok {
            return Err(AccessError::WrongAudience);
        }
        let uuid_claim = |key: &str| {
            claims[key]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or(AccessError::Malformed)
        };
        let user_id = uuid_claim("sub")?;
        let grant_id = uuid_claim("gid")?;
        let client_id = claims["client_id"]
            .as_str()
            .ok_or(AccessError::Malformed)?
            .to_owned();
        let scope = match claims["scope"].as_str() {
            Some("mcp:read") => Scope::Read,
            Some("mcp:read mcp:trade" | "mcp:trade mcp:read" | "mcp:trade") => Scope::Trade,
            _ => return Err(AccessError::Malformed),
        };
        self.check_grant(grant_id).await?;
        let access = Principal {
            user_id,
            client_id,
            grant_id,
            scope,
        };
        inner.verified.put(digest, kid, int("exp")?, &access);
        Ok(access)
    }

    async fn check_grant(&self, grant_id: Uuid) -> Result<(), AccessError> {
        let cache = &self.inner.grants.entries;
        // Read before the cache and the database: a change after this point refuses the write.
        let epoch = cache.epoch();
        if let Some(entry) = cache.get(grant_id) {
            if !entry.alive {
                return Err(AccessError::Revoked);
            }
            if entry.last_used_written.elapsed() >= LAST_USED_EVERY {
                cache.put(
                    epoch,
                    grant_id,
                    CachedGrant {
                        alive: true,
                        last_used_written: Instant::now(),
                    },
                );
                self.touch(grant_id);
            }
            return Ok(());
        }
        let revoked = crate::db::grants::revoked_at(&self.inner.db, grant_id)
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "grant lookup failed");
                AccessError::Unavailable
            })?;
        let alive = matches!(revoked, Some(None));
        cache.put(
            epoch,
            grant_id,
            CachedGrant {
                alive,
                last_used_written: Instant::now(),
            },
        );
        if alive {
            self.touch(grant_id);
            Ok(())
        } else {
            Err(AccessError::Revoked)
        }
    }

    /// Records use of a grant without holding up the request.
    fn touch(&self, grant_id: Uuid) {
        let db = self.inner.db.clone();
        let now = self.now();
        tokio::spawn(async move {
            let _ = crate::db::grants::touch(&db, grant_id, now).await;
        });
    }

    /// Whether this replica currently receives revocations (for readiness and tests).
    pub fn revocations_live(&self) -> bool {
        self.inner.grants.is_listening()
    }
}

/// Ends a grant: its access tokens fail at once on this replica and, through the trigger's
/// notification, on every other; its refresh tokens stop working. Returns whether it was live.
pub async fn revoke_grant(
    state: &OAuthState,
    grant_id: Uuid,
    reason: &str,
) -> Result<bool, Internal> {
    let revoked = crate::db::grants::revoke(state.db(), grant_id, state.now(), reason).await?;
    state.inner.grants.entries.changed(grant_id);
    Ok(revoked)
}

/// Keeps the grant cache current through the hub: drops a grant on its `grant_ended`
/// notification, wakes the key refresh on `signing_keys_changed`, and bypasses the cache while
/// notifications may be missed. Never waits on the database, so it keeps up with the hub.
pub(crate) fn start_revocation_listener(state: &OAuthState, background: &Background) {
    let (state, hub) = (state.clone(), background.hub.clone());
    background
        .tasks
        .spawn("revocation listener", move |shutdown| {
            let events = hub.subscribe(&[CHANNEL, crate::keys::CHANNEL]);
            listen(state.clone(), events, shutdown)
        });
}

async fn listen(state: OAuthState, mut events: Subscription, mut shutdown: Shutdown) {
    let grants = &state.inner.grants.entries;
    let _feeder = grants.feeder();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = shutdown.requested() => break,
        };
        match event {
            Event::Resynced => {
                // Anything cached before this point may have missed a notification.
                grants.reset(true);
                state.inner.keys_changed.notify_one();
                tracing::info!("revocation listener connected");
            }
            // Notifications may be missed from here until the next resync.
            Event::Lost => {
                grants.reset(false);
                tracing::warn!("revocation listener lost; grants are read from the database");
            }
            Event::Notification(notice) if notice.channel == crate::keys::CHANNEL => {
                state.inner.keys_changed.notify_one();
            }
            Event::Notification(notice) => {
                if let Ok(grant_id) = Uuid::parse_str(&notice.payload) {
                    grants.changed(grant_id);
                }
            }
        }
    }
}

/// Re-reads the signing keys after a rotation anywhere (and periodically, in case a notification
/// was lost), so every replica signs with the new key and retires the old one on time.
async fn reload_keys(state: &OAuthState) {
    if let Err(err) = state
        .inner
        .keys
        .reload(&state.inner.db, &state.inner.clock)
        .await
    {
        tracing::warn!(error = %err, "reloading signing keys failed");
    }
}

pub(crate) fn start_key_refresh(state: &OAuthState, tasks: &Supervisor) {
    let state = state.clone();
    tasks.spawn("signing key refresh", move |shutdown| {
        refresh_keys(state.clone(), shutdown)
    });
}

async fn refresh_keys(state: OAuthState, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(KEY_REFRESH) => {}
            () = state.inner.keys_changed.notified() => {}
            () = shutdown.requested() => return,
        }
        reload_keys(&state).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive() -> CachedGrant {
        CachedGrant {
            alive: true,
            last_used_written: Instant::now(),
        }
    }

    #[test]
    fn an_ended_grant_is_not_revived_by_a_late_lookup() {
        let cache = GrantCache::default();
        cache.entries.reset(true);
        let grant = Uuid::new_v4();
        // A lookup read "alive" from the database; the revocation notification lands first.
        let read_in = cache.entries.epoch();
        cache.entries.changed(grant);
        cache.entries.put(read_in, grant, alive());
        assert!(cache.entries.get(grant).is_none());
        // While the listener is down nothing is served from the cache.
        cache.entries.reset(false);
        cache.entries.put(cache.entries.epoch(), grant, alive());
        assert!(cache.entries.get(grant).is_none());
    }

    /// A lookup reads "alive"; the listener drops; the grant ends and its notification is lost;
    /// the listener reconnects and clears the cache; only then does the lookup write. The write
    /// must be refused, or the ended grant stays usable on this replica.
    #[test]
    fn a_lookup_spanning_a_listener_reconnect_is_not_stored() {
        let cache = GrantCache::default();
        cache.entries.reset(true);
        let grant = Uuid::new_v4();
        let read_in = cache.entries.epoch();
        cache.entries.reset(false);
        cache.entries.reset(true);
        cache.entries.put(read_in, grant, alive());
        assert!(cache.entries.get(grant).is_none());
        // A lookup that began after the reconnect is cached as usual.
        cache.entries.put(cache.entries.epoch(), grant, alive());
        assert!(cache.entries.get(grant).is_some_and(|entry| entry.alive));
    }
}
