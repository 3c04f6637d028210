//! A per-replica cache of where other replicas' Add-Ons are (or that they are nowhere), so
//! `tools/list` and `GetMcpCapabilities` need no database round trip for a user whose Add-On is
//! not on this replica.
//!
//! Every change of `addon_presence` is announced on the `addon_presence` channel and drops the
//! user's entry. While the listener is disconnected the cache is bypassed, and it starts empty
//! after every reconnect (notifications sent meanwhile are lost). A lookup that raced with a
//! notification is not cached (an epoch counter tells). An Add-On on another replica is cached
//! only briefly: that replica may die without a notification until it is swept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::Presence;

/// More entries than this and the cache starts over (memory stays bounded).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub(crate) struct PresenceCache {
    entries: RwLock<HashMap<Uuid, (Presence, Instant)>>,
    listening: AtomicBool,
    epoch: AtomicU64,
}

impl PresenceCache {
    /// The cached presence, if live: "nowhere" until a notification says otherwise, an Add-On
    /// on another replica for at most `remote_for`.
    pub fn get(&self, user_id: Uuid, remote_for: Duration) -> Option<Presence> {
        if !self.listening.load(Ordering::SeqCst) {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let (presence, cached_at) = entries.get(&user_id)?;
        (!presence.connected || cached_at.elapsed() < remote_for).then(|| presence.clone())
    }

    /// The epoch to pass to [`PresenceCache::put`], read before the database.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn put(&self, read_in: u64, user_id: Uuid, presence: Presence) {
        if !self.listening.load(Ordering::SeqCst) {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if self.epoch.load(Ordering::SeqCst) != read_in {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(user_id, (presence, Instant::now()));
    }

    pub fn changed(&self, user_id: Uuid) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.remove(&user_id);
    }

    pub fn reset(&self, listening: bool) {
        self.listening.store(false, Ordering::SeqCst);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.clear();
        self.listening.store(listening, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIEF: Duration = Duration::from_secs(2);

    #[test]
    fn cached_until_changed_and_never_while_not_listening() {
        let cache = PresenceCache::default();
        let user = Uuid::new_v4();
        cache.put(cache.epoch(), user, Presence::default());
        assert!(cache.get(user, BRIEF).is_none());
        cache.reset(true);
        cache.put(cache.epoch(), user, Presence::default());
        assert_eq!(cache.get(user, BRIEF), Some(Presence::default()));
        cache.changed(user);
        assert!(cache.get(user, BRIEF).is_none());
        // A read that started before the change is not cached.
        let read_in = cache.epoch();
        cache.changed(user);
        cache.put(read_in, user, Presence::default());
        assert!(cache.get(user, BRIEF).is_none());
        cache.put(cache.epoch(), user, Presence::default());
        cache.reset(false);
        assert!(cache.get(user, BRIEF).is_none());
    }

    #[test]
    fn an_addon_elsewhere_is_cached_briefly() {
        let cache = PresenceCache::default();
        cache.reset(true);
        let user = Uuid::new_v4();
        let elsewhere = Presence {
            connected: true,
            ..Presence::default()
        };
        cache.put(cache.epoch(), user, elsewhere.clone());
        assert_eq!(cache.get(user, BRIEF), Some(elsewhere));
        assert!(cache.get(user, Duration::ZERO).is_none());
    }
}
