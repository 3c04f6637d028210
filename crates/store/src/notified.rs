//! A per-replica map of values by id (a user, a grant), kept valid by a PostgreSQL `LISTEN`
//! channel that announces every change.
//!
//! While its listener is disconnected the map is bypassed (`get` finds nothing, `put` stores
//! nothing), and it starts empty after every reconnect, because notifications sent meanwhile are
//! lost. A lookup that raced with a notification is not stored: callers read [`epoch`] before the
//! database and hand it to [`put`], which refuses a value read in an older epoch.
//!
//! [`epoch`]: NotifiedMap::epoch
//! [`put`]: NotifiedMap::put

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use uuid::Uuid;

/// More entries than this and the map starts over (memory stays bounded).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub struct NotifiedMap<V> {
    entries: RwLock<HashMap<Uuid, V>>,
    listening: AtomicBool,
    /// Bumped by every notification and reset.
    epoch: AtomicU64,
}

impl<V> Default for NotifiedMap<V> {
    fn default() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            listening: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        }
    }
}

impl<V: Clone> NotifiedMap<V> {
    /// The stored value, only while the listener runs.
    pub fn get(&self, id: Uuid) -> Option<V> {
        if !self.listening.load(Ordering::SeqCst) {
            return None;
        }
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// The epoch to pass to [`NotifiedMap::put`], read before the database.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Stores a value read from the database in epoch `read_in`, unless a notification came
    /// since or the listener is down.
    pub fn put(&self, read_in: u64, id: Uuid, value: V) {
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
        entries.insert(id, value);
    }

    /// A notification for `id`.
    pub fn changed(&self, id: Uuid) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.remove(&id);
    }

    /// Forgets everything; `listening` says whether notifications are received from now on.
    pub fn reset(&self, listening: bool) {
        self.listening.store(false, Ordering::SeqCst);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.clear();
        self.listening.store(listening, Ordering::SeqCst);
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Held by the loop that feeds this map: however that loop ends (shutdown, panic), the map
    /// is bypassed from then on, since nothing invalidates it any more.
    pub fn feeder(&self) -> Feeder<'_, V> {
        Feeder(self)
    }
}

/// See [`NotifiedMap::feeder`].
#[derive(Debug)]
pub struct Feeder<'a, V>(&'a NotifiedMap<V>);

impl<V> Drop for Feeder<'_, V> {
    fn drop(&mut self) {
        let map = self.0;
        map.listening.store(false, Ordering::SeqCst);
        let mut entries = map.entries.write().unwrap_or_else(PoisonError::into_inner);
        map.epoch.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_that_raced_a_change_is_not_stored() {
        let map = NotifiedMap::default();
        map.reset(true);
        let user = Uuid::new_v4();
        let read_in = map.epoch();
        // The change is announced while the old value was being read.
        map.changed(user);
        map.put(read_in, user, 1);
        assert_eq!(map.get(user), None);
        // A lookup that started after it is stored.
        map.put(map.epoch(), user, 2);
        assert_eq!(map.get(user), Some(2));
        map.changed(user);
        assert_eq!(map.get(user), None);
    }

    #[test]
    fn a_map_whose_feeder_ended_is_bypassed() {
        let map = NotifiedMap::default();
        let user = Uuid::new_v4();
        {
            let _feeder = map.feeder();
            map.reset(true);
            map.put(map.epoch(), user, 1);
            assert_eq!(map.get(user), Some(1));
        }
        assert!(!map.is_listening());
        assert_eq!(map.get(user), None);
    }

    #[test]
    fn nothing_is_stored_or_served_while_not_listening() {
        let map = NotifiedMap::default();
        let user = Uuid::new_v4();
        map.put(map.epoch(), user, 1);
        map.reset(true);
        assert_eq!(map.get(user), None);
        map.put(map.epoch(), user, 1);
        map.reset(false);
        assert_eq!(map.get(user), None);
        assert!(!map.is_listening());
    }
}
