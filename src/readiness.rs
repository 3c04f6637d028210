//! Readiness kept by a background probe, so `/readyz` answers from memory at once in every
//! database state (a Kubernetes probe gives up after 1 s by default; a per-request query took
//! ~2 s to say 503 while the database was down).
//!
//! The probe has its own connection, outside the pool: a replica whose pool is saturated by
//! traffic is busy, not broken, and taking it out of rotation would push its load onto the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, PgPool};
use store::tasks::{Shutdown, Supervisor};

/// Time between probes: how stale the answer can be.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a probe (connecting included) may take before the database counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Whether the database answered the last probe. Cheap to clone and read.
#[derive(Debug, Clone)]
pub struct Readiness {
    database_up: Arc<AtomicBool>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.database_up.load(Ordering::Relaxed)
    }
}

/// Probes once (so the state is known before the port is announced), then every second
/// (`PROBE_INTERVAL`) under the supervisor until shutdown, which closes the probe's connection.
/// `revocations_live` is sampled for the `oauth_revocation_listener_up` gauge only: while the
/// listener is down, tokens are checked against the database on every request, which is slower
/// but correct, so it does not make the replica unready.
pub async fn start(
    pool: &PgPool,
    tasks: &Supervisor,
    revocations_live: impl Fn() -> bool + Send + Sync + 'static,
) -> Readiness {
    let options = pool.connect_options();
    let mut conn = None;
    let up = probe(&options, &mut conn).await;
    let readiness = Readiness {
        database_up: Arc::new(AtomicBool::new(true)),
    };
    record(&readiness, &up, revocations_live());
    let revocations_live = Arc::new(revocations_live);
    let state = readiness.clone();
    let mut first = Some(conn);
    tasks.spawn("readiness probe", move |shutdown| {
        // A restarted probe opens its own connection.
        let conn = first.take().flatten();
        let (options, state) = (Arc::clone(&options), state.clone());
        let revocations_live = Arc::clone(&revocations_live);
        async move { keep_probing(&options, conn, &state, &*revocations_live, shutdown).await }
    });
    readiness
}

async fn keep_probing(
    options: &PgConnectOptions,
    mut conn: Option<PgConnection>,
    state: &Readiness,
    revocations_live: &(dyn Fn() -> bool + Send + Sync),
    mut shutdown: Shutdown,
) {
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = shutdown.requested() => break,
            _ = ticks.tick() => {}
        }
        let up = tokio::select! {
            () = shutdown.requested() => break,
            up = probe(options, &mut conn) => up,
        };
        record(state, &up, revocations_live());
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

/// `SELECT 1` on the probe's connection, (re)connecting first if there is none, within
/// [`PROBE_TIMEOUT`]. A failed or late probe drops the connection, which may be mid-query.
async fn probe(options: &PgConnectOptions, conn: &mut Option<PgConnection>) -> Result<(), String> {
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, async {
        let live = match conn {
            Some(live) => live,
            None => conn.insert(PgConnection::connect_with(options).await?),
        };
        store::ping(live).await
    })
    .await;
    let result = match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    if result.is_err() {
        *conn = None;
    }
    result
}

/// Stores the outcome; logs only changes, so an outage is two lines, not one per second.
fn record(readiness: &Readiness, up: &Result<(), String>, revocations_live: bool) {
    let was_up = readiness.database_up.swap(up.is_ok(), Ordering::Relaxed);
    match up {
        Err(reason) if was_up => tracing::warn!(%reason, "not ready: the database is unreachable"),
        Ok(()) if !was_up => tracing::info!("ready: the database answers"),
        _ => {}
    }
    metrics::gauge!("readiness_database_up").set(f64::from(u8::from(up.is_ok())));
    metrics::gauge!("oauth_revocation_listener_up").set(f64::from(u8::from(revocations_live)));
}
