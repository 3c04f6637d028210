//! A per-replica cache of where other replicas' Add-Ons are (or that they are nowhere), so
//! `tools/list` and `GetMcpCapabilities` need no database round trip for a user whose Add-On is
//! not on this replica.
//!
//! Every change of `addon_presence` is announced on the `addon_presence` channel and drops the
//! user's entry. While the listener is disconnected the cache is bypassed, and it starts empty
//! after every reconnect (notifications sent meanwhile are lost). A lookup that raced with a
//! notification is not cached (an epoch counter tells). An Add-On on another replica is cached
//! only briefly: that replica may die without a notification until it is swept. A refusal of a
//! too-old Add-On is announced on `addon_refused` and drops the entry too.

use std::time::{Duration, Instant};

use store::notified::NotifiedMap;
use uuid::Uuid;

use crate::Presence;

#[derive(Default)]
pub(crate) struct PresenceCache {
    entries: NotifiedMap<(Presence, Instant)>,
}

impl PresenceCache {
    /// The cached presence, if live: "nowhere" until a notification says otherwise; an Add-On
    /// on another replica, or one refused as too old (whose report expires with time, not
    /// with a notification), for at most `remote_for`.
    pub fn get(&self, user_id: Uuid, remote_for: Duration) -> Option<Presence> {
        let (presence, cached_at) = self.entries.get(user_id)?;
        let until_notified = !presence.connected && presence.too_old.is_none();
        (until_notified || cached_at.elapsed() < remote_for).then_some(presence)
    }

    /// The epoch to pass to [`PresenceCache::put`], read before the database.
    pub fn epoch(&self) -> u64 {
        self.entries.epoch()
    }

    pub fn put(&self, read_in: u64, user_id: Uuid, presence: Presence) {
        self.entries
            .put(read_in, user_id, (presence, Instant::now()));
    }

    pub fn changed(&self, user_id: Uuid) {
        self.entries.changed(user_id);
    }

    pub fn reset(&self, listening: bool) {
        self.entries.reset(listening);
    }

    /// See [`NotifiedMap::feeder`].
    pub fn feeder(&self) -> store::notified::Feeder<'_, (Presence, Instant)> {
        self.entries.feeder()
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

    #[test]
    fn a_refused_addon_is_cached_briefly() {
        let cache = PresenceCache::default();
        cache.reset(true);
        let user = Uuid::new_v4();
        let refused = Presence {
            too_old: Some(crate::TooOld {
                addon_version: "1.12.4".to_owned(),
                nt8_version: "8.1.4.1".to_owned(),
                refused_at: chrono::DateTime::UNIX_EPOCH,
            }),
            ..Presence::default()
        };
        cache.put(cache.epoch(), user, refused.clone());
        assert_eq!(cache.get(user, BRIEF), Some(refused));
        assert!(cache.get(user, Duration::ZERO).is_none());
    }
}
