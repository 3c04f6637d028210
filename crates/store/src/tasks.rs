//! The supervisor of a replica's background services (listeners, heartbeats, clean-ups, the
//! readiness probe) and their one shutdown signal.
//!
//! Services are started by the constructors of the states that need them, each under a name, and
//! owned here rather than detached: [`Supervisor::shutdown`] signals every service and waits (for
//! a bounded time) until each has ended. A service is a loop that must keep running: one that
//! panics or returns before shutdown is logged once with its name and started again after a
//! pause ([`RESTART_FIRST`], doubling up to [`RESTART_MAX`]).
//!
//! A supervisor dropped without [`Supervisor::shutdown`] leaves its services running until the
//! runtime ends (tests build states without a composition root).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Pause before a service that ended too early is started again; doubled up to [`RESTART_MAX`].
pub const RESTART_FIRST: Duration = Duration::from_secs(1);
pub const RESTART_MAX: Duration = Duration::from_secs(30);

/// Owns the background services of one replica. Cheap to clone; every clone is the same
/// supervisor.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    shutdown: watch::Sender<bool>,
    services: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("shutting_down", &*self.inner.shutdown.borrow())
            .finish_non_exhaustive()
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                shutdown: watch::channel(false).0,
                services: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The signal every service selects on.
    pub fn shutdown_signal(&self) -> Shutdown {
        Shutdown(self.inner.shutdown.subscribe())
    }

    /// Runs `service` until shutdown. `service` makes the loop's future from the shutdown
    /// signal; it is called again to restart the loop after a panic or an early return.
    /// Nothing is started once shutdown has begun.
    pub fn spawn<F, Fut>(&self, name: &'static str, mut service: F)
    where
        F: FnMut(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown_signal();
        if shutdown.is_requested() {
            tracing::debug!(task = name, "not started: shutting down");
            return;
        }
        let supervised = async move {
            let mut pause = Backoff::new(RESTART_FIRST, RESTART_MAX);
            loop {
                let mut run = AbortOnDrop(tokio::spawn(service(shutdown.clone())));
                let outcome = (&mut run.0).await;
                if shutdown.is_requested() {
                    return;
                }
                let delay = pause.next_delay();
                match outcome {
                    Err(err) if err.is_panic() => {
                        tracing::error!(task = name, restart_in = ?delay, "background task panicked");
                    }
                    _ => tracing::error!(
                        task = name,
                        restart_in = ?delay,
                        "background task ended before shutdown"
                    ),
                }
                let mut waiting = shutdown.clone();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = waiting.requested() => return,
                }
            }
        };
        let handle = tokio::spawn(supervised);
        let mut services = self
            .inner
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        services.retain(|(_, handle)| !handle.is_finished());
        services.push((name, handle));
    }

    /// Signals shutdown and waits until every service has ended, at most `within`; services
    /// still running then are aborted and named in the log. True when all ended by themselves.
    pub async fn shutdown(&self, within: Duration) -> bool {
        self.inner.shutdown.send_replace(true);
        let services = std::mem::take(
            &mut *self
                .inner
                .services
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let deadline = tokio::time::Instant::now() + within;
        let mut all_ended = true;
        for (name, mut handle) in services {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                tracing::warn!(task = name, "background task did not stop in time; aborted");
                handle.abort();
                all_ended = false;
            }
        }
        all_ended
    }
}

/// The shutdown signal as seen by one service.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once shutdown is signalled (never, if the supervisor is gone without it).
    pub async fn requested(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// A restarted task must not outlive the supervision that was cut short.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Exponential delays from `first` up to `max`, started over by [`Backoff::reset`].
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The delay to wait now; the following one is twice as long, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_starts_over() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 1000].map(Duration::from_millis).to_vec()
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }

    #[tokio::test]
    async fn a_service_runs_until_shutdown_and_is_restarted_after_a_panic() {
        let supervisor = Supervisor::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        supervisor.spawn("flaky", move |mut shutdown| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(run > 0, "the first run fails");
                shutdown.requested().await;
            }
        });
        // Restarted once, after the first pause.
        for _ in 0..100 {
            if runs.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(RESTART_FIRST / 10).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(supervisor.shutdown(Duration::from_secs(1)).await);
        // Nothing starts after shutdown.
        supervisor.spawn("late", |_| async {});
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_service_that_ignores_shutdown_is_aborted_after_the_grace() {
        let supervisor = Supervisor::new();
        supervisor.spawn("stubborn", |_| std::future::pending());
        assert!(!supervisor.shutdown(Duration::from_millis(50)).await);
    }
}
