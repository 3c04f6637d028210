//! Waiting for a condition the system signals only through its state (a row, a metric, a
//! cache entry): checked again every [`POLL`] up to a limit, so a test takes as long as the
//! system does and fails with the name of what never happened.

use std::time::Duration;

use tokio::time::Instant;

/// How long to wait before checking again.
pub const POLL: Duration = Duration::from_millis(20);

/// Checks until `check` yields a value and returns it; panics naming `what` if none comes
/// within `limit`. `check` runs at least once, even with a zero limit.
pub async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    match poll(limit, &mut check).await {
        Some(value) => value,
        None => panic!("{what}: not within {limit:?}"),
    }
}

/// Checks until `check` holds; panics naming `what` if it does not within `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    wait_for(what, limit, async || check().await.then_some(())).await;
}

/// Checks until `check` holds; whether it did within `limit`, for a caller whose failure
/// message needs the state at the end.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    poll(limit, &mut async || check().await.then_some(()))
        .await
        .is_some()
}

async fn poll<T>(limit: Duration, check: &mut impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL.min(deadline - Instant::now())).await;
    }
}
