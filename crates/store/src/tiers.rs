//! A per-replica cache of subscription tiers, so the MCP endpoint's Elite gate needs no database
//! round trip per `tools/call`.
//!
//! A trigger announces every tier change and every deleted user on the `tier_changed` channel;
//! the listener drops the user's entry. While the listener is disconnected the cache is bypassed
//! (every lookup reads PostgreSQL, as without a cache), and it starts empty after every
//! reconnect, because notifications sent meanwhile are lost. A lookup that raced with a
//! notification is not cached (an epoch counter tells), so a stale tier is never stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::users::{self, Tier, UserError};

const CHANNEL: &str = "tier_changed";
/// More entries than this and the cache starts over (memory stays bounded).
const MAX_ENTRIES: usize = 100_000;
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Tiers by user id, valid while the listener runs.
#[derive(Debug, Default)]
pub struct TierCache {
    entries: RwLock<HashMap<Uuid, Tier>>,
    listening: AtomicBool,
    /// Bumped by every notification and reset: a lookup that started in an older epoch is not
    /// cached.
    epoch: AtomicU64,
}

impl TierCache {
    /// A cache kept current by a listener on `db`, which runs until the pool is closed.
    pub fn start(db: PgPool) -> Arc<Self> {
        let cache = Arc::new(Self::default());
        let listening = Arc::clone(&cache);
        tokio::spawn(async move {
            loop {
                let outcome = listening.listen(&db).await;
                listening.reset(false);
                if db.is_closed() {
                    return;
                }
                if let Err(err) = outcome {
                    tracing::warn!(error = %err, "tier listener lost; reconnecting");
                }
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        });
        cache
    }

    /// The user's tier (`None`: no such user), from the cache when it is live.
    pub async fn tier(&self, db: &PgPool, user_id: Uuid) -> Result<Option<Tier>, UserError> {
        if self.listening.load(Ordering::SeqCst)
            && let Some(tier) = self
                .entries
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&user_id)
        {
            return Ok(Some(*tier));
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let tier = users::find_by_id(db, user_id).await?.map(|user| user.tier);
        if let Some(tier) = tier {
            self.put(epoch, user_id, tier);
        }
        Ok(tier)
    }

    /// Whether tier changes are being received (the cache is in use).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    fn put(&self, read_in: u64, user_id: Uuid, tier: Tier) {
        if !self.listening.load(Ordering::SeqCst) {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock that `changed` also takes: no notification can slip between.
        if self.epoch.load(Ordering::SeqCst) != read_in {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(user_id, tier);
    }

    fn changed(&self, user_id: Uuid) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.remove(&user_id);
    }

    fn reset(&self, listening: bool) {
        self.listening.store(false, Ordering::SeqCst);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.clear();
        self.listening.store(listening, Ordering::SeqCst);
    }

    async fn listen(&self, db: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(db).await?;
        listener.listen(CHANNEL).await?;
        // Anything cached before this point may have missed a notification.
        self.reset(true);
        loop {
            match listener.try_recv().await? {
                Some(notification) => match Uuid::parse_str(notification.payload()) {
                    Ok(user_id) => self.changed(user_id),
                    // Not ours to interpret: forget everything rather than guess.
                    Err(_) => self.reset(true),
                },
                // The connection dropped; notifications sent meanwhile are lost.
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_that_raced_a_change_is_not_cached() {
        let cache = TierCache::default();
        cache.reset(true);
        let user = Uuid::new_v4();
        let read_in = cache.epoch.load(Ordering::SeqCst);
        // The change is announced while the (old) tier was being read.
        cache.changed(user);
        cache.put(read_in, user, Tier::Elite);
        assert!(cache.entries.read().unwrap().get(&user).is_none());
        // A lookup that started after it is cached.
        cache.put(cache.epoch.load(Ordering::SeqCst), user, Tier::Pro);
        assert_eq!(cache.entries.read().unwrap().get(&user), Some(&Tier::Pro));
    }

    #[test]
    fn nothing_is_cached_or_served_while_not_listening() {
        let cache = TierCache::default();
        let user = Uuid::new_v4();
        cache.put(cache.epoch.load(Ordering::SeqCst), user, Tier::Elite);
        assert!(cache.entries.read().unwrap().is_empty());
        cache.reset(true);
        cache.put(cache.epoch.load(Ordering::SeqCst), user, Tier::Elite);
        cache.reset(false);
        assert!(cache.entries.read().unwrap().is_empty());
        assert!(!cache.is_listening());
    }
}
