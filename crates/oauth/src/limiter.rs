//! A per-replica request counter over a sliding minute, for limits that protect one process
//! (the token endpoint) rather than a shared quota (registration, counted in PostgreSQL).
//!
//! Memory is bounded and every request costs O(1): keys are hashed with a per-process random
//! key (no attacker-chosen collisions) into the current window's counts; the previous window's
//! counts weigh in proportionally to how much of it the sliding minute still covers. When the
//! current window fills before it ends, it becomes the previous one early: a flood of distinct
//! keys makes the limiter forget sooner (it never refuses a key it has not counted), and it can
//! never grow beyond two windows of `capacity` keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Keys counted per window before it is rotated early.
const DEFAULT_CAPACITY: usize = 50_000;

#[derive(Debug)]
pub struct WindowLimiter {
    limit: u32,
    window: Duration,
    capacity: usize,
    hasher: RandomState,
    windows: Mutex<Windows>,
}

#[derive(Debug)]
struct Windows {
    started: Instant,
    current: HashMap<u64, u32>,
    previous: HashMap<u64, u32>,
}

impl WindowLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_capacity(limit, window, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(limit: u32, window: Duration, capacity: usize) -> Self {
        Self {
            limit,
            window,
            capacity: capacity.max(1),
            hasher: RandomState::new(),
            windows: Mutex::new(Windows {
                started: Instant::now(),
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
        }
    }

    /// Counts one request for `key`; `Err(seconds)` to wait when over the limit (the refused
    /// request is not counted).
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.count(key, true)
    }

    /// Whether `key` is over the limit, without counting a request.
    pub fn peek(&self, key: &str) -> Result<(), u64> {
        self.count(key, false)
    }

    /// Counts one request for `key` whatever its count (an outcome known after the work).
    pub fn add(&self, key: &str) {
        let hash = self.hasher.hash_one(key);
        let mut windows = self.lock(Instant::now());
        let count = windows.current.entry(hash).or_insert(0);
        *count = count.saturating_add(1);
        self.rotate_if_full(&mut windows);
    }

    fn count(&self, key: &str, add: bool) -> Result<(), u64> {
        let now = Instant::now();
        let hash = self.hasher.hash_one(key);
        let mut windows = self.lock(now);
        let elapsed = now.duration_since(windows.started);
        let previous = windows.previous.get(&hash).copied().unwrap_or(0);
        let current = windows.current.get(&hash).copied().unwrap_or(0);
        // The part of the previous window still inside the sliding window.
        let remaining = self.window.saturating_sub(elapsed).as_secs_f64() / self.window_secs();
        let estimate = f64::from(current) + f64::from(previous) * remaining;
        if estimate >= f64::from(self.limit) {
            // Over the limit until enough of the previous window slides out, or at the latest
            // until the current window ends (its counts then start to weigh less at once).
            let window_ends = self.window.saturating_sub(elapsed).as_secs_f64();
            let wait = if previous > 0 && f64::from(current) < f64::from(self.limit) {
                let excess = estimate - f64::from(self.limit) + 1.0;
                (excess / f64::from(previous) * self.window_secs()).min(window_ends)
            } else {
                window_ends
            };
            let longest = self.window.as_secs().max(1);
            let wait = Duration::try_from_secs_f64(wait.ceil()).map_or(longest, |d| d.as_secs());
            return Err(wait.clamp(1, longest));
        }
        if add {
            windows.current.insert(hash, current.saturating_add(1));
            self.rotate_if_full(&mut windows);
        }
        Ok(())
    }

    fn window_secs(&self) -> f64 {
        self.window.as_secs_f64().max(f64::EPSILON)
    }

    /// The windows, rotated if the current one has ended.
    fn lock(&self, now: Instant) -> std::sync::MutexGuard<'_, Windows> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.duration_since(windows.started);
        if elapsed >= self.window {
            windows.previous = if elapsed >= self.window * 2 {
                HashMap::new()
            } else {
                std::mem::take(&mut windows.current)
            };
            windows.current = HashMap::new();
            windows.started = now;
        }
        windows
    }

    fn rotate_if_full(&self, windows: &mut Windows) {
        if windows.current.len() >= self.capacity {
            windows.previous = std::mem::take(&mut windows.current);
            windows.started = Instant::now();
        }
    }

    /// Keys held (for tests of the memory bound).
    pub fn keys_held(&self) -> usize {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        windows.current.len() + windows.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_within_the_window() {
        let limiter = WindowLimiter::new(2, Duration::from_secs(60));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let wait = limiter.check("a").unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(limiter.check("b").is_ok());
        let expired = WindowLimiter::new(1, Duration::from_millis(0));
        assert!(expired.check("a").is_ok() && expired.check("a").is_ok());
    }

    #[test]
    fn peek_does_not_count_and_add_always_does() {
        let limiter = WindowLimiter::new(2, Duration::from_secs(60));
        for _ in 0..5 {
            assert!(limiter.peek("a").is_ok());
        }
        limiter.add("a");
        limiter.add("a");
        assert!(limiter.peek("a").is_err());
        assert!(limiter.check("a").is_err());
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_two_windows_of_capacity() {
        let limiter = WindowLimiter::with_capacity(3, Duration::from_secs(60), 1000);
        for i in 0..100_000 {
            assert!(limiter.check(&format!("flood {i}")).is_ok());
            assert!(limiter.keys_held() <= 2000);
        }
    }
}
