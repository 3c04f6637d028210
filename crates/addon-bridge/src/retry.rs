//! Database writes that must not be lost to a passing outage (a pool exhausted by thousands of
//! sockets closing at once, a failover): retried with a doubling backoff until they succeed or
//! the replica stops.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

/// First and longest waits between attempts.
const FIRST_WAIT: Duration = Duration::from_millis(250);
const LONGEST_WAIT: Duration = Duration::from_secs(10);

/// Retries `write`, which has just failed with `error`, until it succeeds or `stopping` turns
/// true. Each `subject` (the row's id) waits its own fraction of the backoff, so writes that
/// failed together do not retry in step. The failure is logged once as a warning, the eventual
/// success once; attempts between are logged at debug.
pub(crate) async fn after_failure<F, Fut>(
    what: &'static str,
    subject: Uuid,
    error: &sqlx::Error,
    mut stopping: watch::Receiver<bool>,
    mut write: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), sqlx::Error>>,
{
    tracing::warn!(%error, %subject, "{what} failed; retrying");
    let spread = 0.5 + f64::from(subject.as_bytes()[15]) / 510.0;
    let mut wait = FIRST_WAIT;
    for attempt in 2_u32.. {
        tokio::select! {
            () = tokio::time::sleep(wait.mul_f64(spread)) => {}
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
        match write().await {
            Ok(()) => {
                tracing::info!(%subject, attempt, "{what} succeeded after retrying");
                return;
            }
            Err(error) => tracing::debug!(%error, %subject, attempt, "{what} failed"),
        }
        wait = (wait * 2).min(LONGEST_WAIT);
    }
}
