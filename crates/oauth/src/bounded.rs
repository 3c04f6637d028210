//! Fixed-size in-process tables for limits (the token and revocation endpoints, CIMD fetches)
//! and negative caches that an attacker can feed with unlimited distinct keys: memory is
//! allocated once, every operation is O(1), and nothing is ever swept.
//!
//! A key goes to one slot chosen by a hash with a per-process random key, so nobody can aim two
//! keys at one slot. Two keys that do meet evict each other (the newcomer starts afresh): a
//! collision can forget a count, never charge one key for another's use.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Clone)]
struct Slot<V> {
    hash: u64,
    /// Window start (limiter) or expiry (cache).
    at: DateTime<Utc>,
    value: V,
}

#[derive(Debug)]
struct Table<V> {
    hasher: RandomState,
    slots: Mutex<Vec<Option<Slot<V>>>>,
}

impl<V: Clone> Table<V> {
    fn new(size: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            slots: Mutex::new(vec![None; size.max(1)]),
        }
    }

    /// Runs `f` on the key's slot (`None` when it holds nothing or another key's entry).
    fn with<R>(&self, key: &str, f: impl FnOnce(&mut Option<Slot<V>>, u64) -> R) -> R {
        let hash = self.hasher.hash_one(key);
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let len = slots.len();
        let index = usize::try_from(hash % len as u64).unwrap_or(0);
        let slot = &mut slots[index];
        if slot.as_ref().is_some_and(|s| s.hash != hash) {
            *slot = None;
        }
        f(slot, hash)
    }
}

/// At most `limit` events per key per fixed window.
#[derive(Debug)]
pub(crate) struct WindowCounter {
    limit: u32,
    window: TimeDelta,
    table: Table<u32>,
}

impl WindowCounter {
    pub(crate) fn new(limit: u32, window: TimeDelta, slots: usize) -> Self {
        Self {
            limit,
            window,
            table: Table::new(slots),
        }
    }

    /// Counts one event for `key`; `Err(seconds)` to wait when the key is at its limit.
    pub(crate) fn check(&self, key: &str, now: DateTime<Utc>) -> Result<(), u64> {
        self.table.with(key, |slot, hash| {
            let fresh = slot.as_ref().is_none_or(|s| now - s.at >= self.window);
            if fresh {
                *slot = Some(Slot {
                    hash,
                    at: now,
                    value: 0,
                });
            }
            let Some(entry) = slot.as_mut() else {
                return Ok(());
            };
            if entry.value >= self.limit {
                let left = entry.at + self.window - now;
                let secs = left.num_seconds() + i64::from(left.subsec_nanos() > 0);
                return Err(u64::try_from(secs).unwrap_or(1).max(1));
            }
            entry.value += 1;
            Ok(())
        })
    }
}

/// Values remembered for a while per key.
#[derive(Debug)]
pub(crate) struct ExpiringCache<V> {
    table: Table<V>,
}

impl<V: Clone> ExpiringCache<V> {
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            table: Table::new(slots),
        }
    }

    pub(crate) fn get(&self, key: &str, now: DateTime<Utc>) -> Option<V> {
        self.table.with(key, |slot, _| {
            slot.as_ref()
                .filter(|s| s.at > now)
                .map(|s| s.value.clone())
        })
    }

    pub(crate) fn insert(&self, key: &str, value: V, until: DateTime<Utc>) {
        self.table.with(key, |slot, hash| {
            *slot = Some(Slot {
                hash,
                at: until,
                value,
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn counts_per_key_within_the_window() {
        let counter = WindowCounter::new(2, TimeDelta::seconds(60), 1024);
        assert!(counter.check("a", at(0)).is_ok());
        assert!(counter.check("a", at(1)).is_ok());
        assert_eq!(counter.check("a", at(10)), Err(50));
        assert!(counter.check("b", at(10)).is_ok());
        assert!(counter.check("a", at(60)).is_ok());
        // A zero-length window never refuses.
        let expired = WindowCounter::new(1, TimeDelta::zero(), 1024);
        assert!(expired.check("a", at(0)).is_ok() && expired.check("a", at(0)).is_ok());
    }

    #[test]
    fn memory_is_fixed_and_collisions_only_forget() {
        // One slot: every key evicts the previous one; none is charged for another.
        let counter = WindowCounter::new(1, TimeDelta::seconds(60), 1);
        for i in 0..10_000 {
            assert!(counter.check(&format!("k{i}"), at(0)).is_ok());
        }
        // A flood of distinct keys is always answered and never refuses a key it has not seen.
        let counter = WindowCounter::new(3, TimeDelta::seconds(60), 1000);
        for i in 0..100_000 {
            assert!(counter.check(&format!("flood {i}"), at(0)).is_ok());
        }
        let cache = ExpiringCache::new(4);
        cache.insert("x", 1, at(60));
        assert_eq!(cache.get("x", at(59)), Some(1));
        assert_eq!(cache.get("x", at(60)), None);
        assert_eq!(cache.get("y", at(0)), None);
    }
}
