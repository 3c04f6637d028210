//! The one home of wall-clock reads, so expiry can be tested without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// A source of the current time.
#[derive(Debug, Clone)]
pub struct Clock(ClockKind);

#[derive(Debug, Clone)]
enum ClockKind {
    System,
    /// Microseconds since the epoch, shared between clones and moved by tests.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn system() -> Self {
        Self(ClockKind::System)
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self(ClockKind::Manual(Arc::new(AtomicI64::new(
            start.timestamp_micros(),
        ))))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            #[expect(clippy::disallowed_methods, reason = "this is the clock's one home")]
            ClockKind::System => Utc::now(),
            ClockKind::Manual(micros) => {
                DateTime::from_timestamp_micros(micros.load(Ordering::SeqCst)).unwrap_or_default()
            }
        }
    }

    /// Moves a manual clock forward; a system clock ignores it.
    pub fn advance(&self, by: TimeDelta) {
        if let ClockKind::Manual(micros) = &self.0 {
            micros.fetch_add(by.num_microseconds().unwrap_or(i64::MAX), Ordering::SeqCst);
        }
    }
}
