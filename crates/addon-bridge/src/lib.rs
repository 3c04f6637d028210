//! The CrossTrade Add-On bridge: the WebSocket endpoint NinjaTrader 8's Add-On holds open, and the
//! relay that forwards tool calls to it with correlation ids and deadlines.
//!
//! Invariants:
//! - A call ends exactly once: with the Add-On's answer, `NotConnected` at once when no Add-On
//!   is connected, `Disconnected` at once when the socket drops mid-call, or `DeadlineExceeded`
//!   at its deadline. Correlation ids are random per call; a late answer is logged and dropped.
//! - A call with an idempotency key reaches the Add-On at most once per user and key within
//!   24 h, on any replica; calls are never retried.
//! - Presence, cross-replica calls and their results live in Postgres; notifications carry ids
//!   only. Every replica listens; after a listener reconnect, everything pending is re-checked.
//! - Add-On keys are stored as SHA-256 only and never logged.
//!
//! Depends on `store` and `vocabulary` only; never on `mcp` or `oauth` (the binary adapts this
//! crate to `mcp::relay::ToolRelay`, passing the shared presence and call types through).

mod connection;
pub mod data;
pub mod jobs;
pub mod keys;
mod listener;
pub mod peer;
mod presence;
pub mod protocol;
mod relay;
mod retry;
pub mod signals;
pub mod watermarks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use sqlx::PgPool;
use store::Background;
use store::tasks::Shutdown;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

pub use connection::get_addon_ws;
pub use vocabulary::{AddonState, CallError, CallOutcome, CallRequest, Presence, TooOld};

/// The path of the Add-On's WebSocket.
pub const WS_PATH: &str = "/v1/addon/ws";

/// How the bridge behaves.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Used when a call asks for a zero deadline.
    pub default_deadline: Duration,
    /// Server pings every interval; two unanswered pings disconnect.
    pub heartbeat_interval: Duration,
    /// How often this replica proves it is alive in PostgreSQL. A replica silent for four
    /// periods (at least 3 s) is dead: its Add-On presence is removed and the calls routed to
    /// it fail at once as disconnected, instead of waiting for their deadlines.
    pub replica_heartbeat: Duration,
    /// Larger text frames get an `error` frame and are discarded; frames over twice this
    /// size end the connection.
    pub max_frame_bytes: usize,
    /// This replica's id in presence and call routing.
    pub instance_id: Uuid,
    /// Upgraded Add-On sockets this replica holds at most, in any phase; beyond it the
    /// upgrade is refused with 503 and `Retry-After` (the HTTP connection limit does not count
    /// upgraded sockets).
    pub max_sockets: usize,
    /// Calls one account may have in flight on this replica at once; beyond it a call fails
    /// at once with [`CallError::TooManyCalls`], so one account cannot hold every task and
    /// database connection of the replica.
    pub max_calls_per_account: usize,
    /// Links between replicas (see [`peer`]); without it every routed call goes through
    /// PostgreSQL.
    pub peer: Option<peer::PeerSettings>,
}

impl BridgeSettings {
    /// Production defaults: 10 s deadline, 15 s heartbeat, 4 MiB frames, a fresh instance id.
    pub fn new() -> Self {
        Self {
            default_deadline: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(15),
            replica_heartbeat: Duration::from_secs(2),
            max_frame_bytes: 4 * 1024 * 1024,
            instance_id: Uuid::new_v4(),
            max_sockets: 4096,
            max_calls_per_account: 16,
            peer: None,
        }
    }

    /// A replica whose heartbeat is older than this is dead.
    fn instance_stale_after(&self) -> Duration {
        (self.replica_heartbeat * 4).max(Duration::from_secs(3))
    }

    fn hard_frame_limit(&self) -> usize {
        self.max_frame_bytes.saturating_mul(2).max(64 * 1024)
    }
}

impl Default for BridgeSettings {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("invalid bridge settings: {0}")]
    Settings(&'static str),
}

/// The Add-On bridge of this replica. Cheap to clone.
#[derive(Clone)]
pub struct AddonBridge {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AddonBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddonBridge")
            .field("instance_id", &self.inner.settings.instance_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: PgPool,
    settings: BridgeSettings,
    /// Live sockets on this replica, by user.
    conns: Mutex<HashMap<Uuid, connection::Handle>>,
    /// Every upgraded socket on this replica, registered or still before its hello, by
    /// connection id: a key's revocation closes them in any phase.
    sockets: Mutex<HashMap<Uuid, connection::Socket>>,
    /// Sockets upgraded or being upgraded, against [`BridgeSettings::max_sockets`].
    socket_slots: Arc<AtomicUsize>,
    waiters: relay::Waiters,
    /// Presence of Add-Ons not on this replica, kept current by the listener.
    remote_presence: presence::PresenceCache,
    changes: broadcast::Sender<Uuid>,
    shutdown: watch::Sender<bool>,
    /// Connection tasks still running (shutdown waits for them).
    tasks: watch::Sender<usize>,
    /// Calls held by this replica: queued for a socket or awaiting the Add-On's answer.
    live_calls: Arc<AtomicUsize>,
    /// Calls in flight per account on this replica, against `max_calls_per_account`.
    account_calls: Mutex<HashMap<Uuid, usize>>,
    /// Links to the other replicas, for calls to sockets they hold.
    peers: peer::Peers,
}

/// One of an account's in-flight calls, released when the call's task ends (not when its
/// caller stops waiting: the call still runs to its outcome).
pub(crate) struct AccountCall {
    bridge: AddonBridge,
    user_id: Uuid,
}

impl Drop for AccountCall {
    fn drop(&mut self) {
        let mut calls = self.bridge.account_calls();
        if let Some(n) = calls.get_mut(&self.user_id) {
            *n -= 1;
            if *n == 0 {
                calls.remove(&self.user_id);
            }
        }
    }
}

/// One call counted in [`AddonBridge::live_calls`] until dropped.
#[derive(Debug)]
pub(crate) struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        let left = self.0.fetch_sub(1, Ordering::SeqCst) - 1;
        #[expect(clippy::cast_precision_loss, reason = "a gauge of a small count")]
        metrics::gauge!("addon_live_calls").set(left as f64);
    }
}

impl AddonBridge {
    /// Registers this replica, then starts its listener and heartbeat under `background`.
    /// Waits (briefly) for the listener so that nothing sent right after start is missed; if
    /// the database is down it keeps trying in the background.
    pub async fn start(
        db: PgPool,
        settings: BridgeSettings,
        background: &Background,
    ) -> Result<Self, BridgeError> {
        if settings.heartbeat_interval.is_zero() {
            return Err(BridgeError::Settings("heartbeat_interval must be positive"));
        }
        if settings.replica_heartbeat.is_zero() {
            return Err(BridgeError::Settings("replica_heartbeat must be positive"));
        }
        if settings.default_deadline.is_zero() {
            return Err(BridgeError::Settings("default_deadline must be positive"));
        }
        if settings.max_calls_per_account == 0 {
            return Err(BridgeError::Settings(
                "max_calls_per_account must be positive",
            ));
        }
        if settings.max_sockets == 0 {
            return Err(BridgeError::Settings("max_sockets must be positive"));
        }
        if settings.max_frame_bytes < 1024 {
            return Err(BridgeError::Settings(
                "max_frame_bytes must be at least 1024",
            ));
        }
        let bridge = Self {
            inner: Arc::new(Inner {
                db,
                settings,
                conns: Mutex::new(HashMap::new()),
                sockets: Mutex::new(HashMap::new()),
                socket_slots: Arc::new(AtomicUsize::new(0)),
                waiters: relay::Waiters::default(),
                remote_presence: presence::PresenceCache::default(),
                changes: broadcast::channel(256).0,
                shutdown: watch::channel(false).0,
                tasks: watch::channel(0).0,
                live_calls: Arc::new(AtomicUsize::new(0)),
                account_calls: Mutex::new(HashMap::new()),
                peers: peer::Peers::default(),
            }),
        };
        if let Err(err) = bridge.beat().await {
            tracing::warn!(error = %err, "add-on bridge: first instance heartbeat failed");
        }
        let ready = listener::start(&bridge, background);
        let beating = bridge.clone();
        background
            .tasks
            .spawn("add-on replica heartbeat", move |shutdown| {
                beating.clone().heartbeat_loop(shutdown)
            });
        if tokio::time::timeout(Duration::from_secs(5), ready)
            .await
            .is_err()
        {
            tracing::warn!("add-on bridge: listener not connected yet; continuing to retry");
        }
        Ok(bridge)
    }

    /// This replica's id.
    pub fn instance_id(&self) -> Uuid {
        self.inner.settings.instance_id
    }

    /// Users whose Add-On connected, disconnected or was replaced, on any replica.
    pub fn presence_changes(&self) -> broadcast::Receiver<Uuid> {
        self.inner.changes.subscribe()
    }

    /// Whether a user's Add-On is connected (to any live replica), and what it reported; when
    /// none is, the last one refused as too old (see [`Presence::too_old`]).
    pub async fn presence(&self, user_id: Uuid) -> Presence {
        if let Some(handle) = self.local(user_id) {
            return handle.presence.clone();
        }
        // Another replica's Add-On is trusted from the cache for one replica heartbeat: a
        // replica that dies is announced only when it is swept.
        let cache = &self.inner.remote_presence;
        if let Some(presence) = cache.get(user_id, self.inner.settings.replica_heartbeat) {
            return presence;
        }
        let epoch = cache.epoch();
        let presence = match data::presence_of(
            &self.inner.db,
            user_id,
            self.inner.settings.instance_stale_after(),
        )
        .await
        {
            Ok(Some(row)) => Presence {
                connected: true,
                addon_version: Some(row.addon_version),
                nt8_version: Some(row.nt8_version),
                features: row.features.0,
                too_old: None,
            },
            Ok(None) => match data::refusal_of(&self.inner.db, user_id).await {
                Ok(refusal) => Presence {
                    too_old: refusal.map(|row| TooOld {
                        addon_version: row.addon_version,
                        nt8_version: row.nt8_version,
                        refused_at: row.refused_at,
                    }),
                    ..Presence::default()
                },
                Err(err) => {
                    tracing::warn!(error = %err, "add-on refusal lookup failed");
                    return Presence::default();
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "add-on presence lookup failed");
                return Presence::default();
            }
        };
        cache.put(epoch, user_id, presence.clone());
        presence
    }

    /// Stops accepting sockets, fails every pending call (`Disconnected`), closes sockets with
    /// 1001 Going Away, and removes this replica's presence so other replicas answer at once.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let mut tasks = self.inner.tasks.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(3), tasks.wait_for(|n| *n == 0)).await;
        if let Err(err) = data::retire_instance(&self.inner.db, self.instance_id()).await {
            tracing::warn!(error = %err, "add-on bridge: retiring instance failed");
        }
        tracing::info!(instance = %self.instance_id(), "add-on bridge shut down");
    }

    /// Calls this replica holds right now: queued for a socket, awaiting the Add-On's answer,
    /// or awaiting another replica's. Every call ends in one outcome and releases its entry, so
    /// this returns to zero when idle.
    pub fn live_calls(&self) -> usize {
        self.inner.live_calls.load(Ordering::SeqCst) + self.inner.waiters.len()
    }

    pub(crate) fn track_call(&self) -> Tracked {
        let now = self.inner.live_calls.fetch_add(1, Ordering::SeqCst) + 1;
        #[expect(clippy::cast_precision_loss, reason = "a gauge of a small count")]
        metrics::gauge!("addon_live_calls").set(now as f64);
        Tracked(Arc::clone(&self.inner.live_calls))
    }

    fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    fn local(&self, user_id: Uuid) -> Option<connection::Handle> {
        self.conns().get(&user_id).cloned()
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, connection::Handle>> {
        self.inner
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn account_calls(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, usize>> {
        self.inner
            .account_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one of the account's in-flight call slots, if it has one left.
    pub(crate) fn account_call(&self, user_id: Uuid) -> Option<AccountCall> {
        let mut calls = self.account_calls();
        let n = calls.entry(user_id).or_insert(0);
        if *n >= self.inner.settings.max_calls_per_account {
            return None;
        }
        *n += 1;
        Some(AccountCall {
            bridge: self.clone(),
            user_id,
        })
    }

    fn sockets(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, connection::Socket>> {
        self.inner
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes every socket of these keys with 4003, whatever phase it is in.
    fn close_revoked(&self, key_ids: &[Uuid]) {
        for socket in self.sockets().values() {
            if key_ids.contains(&socket.key_id) {
                socket.close_with(protocol::close::KEY_REVOKED, "the Add-On key was revoked");
            }
        }
    }

    /// Upgraded Add-On sockets on this replica, in any phase.
    pub fn open_sockets(&self) -> usize {
        self.inner.socket_slots.load(Ordering::SeqCst)
    }

    /// One replica heartbeat: refresh our row and our sockets' `last_seen`, and clean up after
    /// dead replicas. If our row had been swept (we stalled), re-announce our sockets.
    async fn beat(&self) -> Result<(), sqlx::Error> {
        let me = self.instance_id();
        let advertised = self
            .inner
            .settings
            .peer
            .as_ref()
            .map(|p| p.advertise.as_str());
        let recreated = data::instance_heartbeat(&self.inner.db, me, advertised).await?;
        if recreated {
            let handles: Vec<_> = self.conns().values().cloned().collect();
            for handle in handles {
                // Same rule as registering: never re-announce a socket whose key was revoked.
                let mut tx = self.inner.db.begin().await?;
                if data::lock_live_key(&mut *tx, handle.key_id).await? {
                    data::upsert_presence(&mut *tx, me, &handle).await?;
                    tx.commit().await?;
                } else {
                    handle.close_with(protocol::close::KEY_REVOKED, "the Add-On key was revoked");
                }
            }
        }
        data::sweep_dead_instances(&self.inner.db, self.inner.settings.instance_stale_after())
            .await?;
        Ok(())
    }

    async fn heartbeat_loop(self, mut shutdown: Shutdown) {
        let period = self.inner.settings.replica_heartbeat;
        let mut stopping = self.inner.shutdown.subscribe();
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = shutdown.requested() => return,
                // The bridge retires this replica's row: a beat now would bring it back.
                () = until_true(&mut stopping) => {
                    shutdown.requested().await;
                    return;
                }
            }
            if let Err(err) = self.beat().await {
                tracing::warn!(error = %err, "add-on bridge heartbeat failed");
            }
            match jobs::expire(&self.inner.db).await {
                Ok(0) => {}
                Ok(expired) => tracing::info!(expired, "add-on jobs expired without a result"),
                Err(err) => tracing::warn!(error = %err, "add-on job expiry failed"),
            }
            ticks += 1;
            // Old routing rows and expired idempotency keys, about once a minute.
            let every = u64::try_from(60_000 / period.as_millis().max(1)).unwrap_or(1);
            if ticks.is_multiple_of(every.max(1))
                && let Err(err) = purge(&self.inner.db).await
            {
                tracing::warn!(error = %err, "add-on bridge purge failed");
            }
        }
    }
}

async fn purge(db: &PgPool) -> Result<(), sqlx::Error> {
    data::purge_old(db).await?;
    jobs::purge(db).await
}

/// `GET /v1/addon/ws`, the Add-On's WebSocket.
pub fn router<S>() -> Router<S>
where
    AddonBridge: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new().route(WS_PATH, get(get_addon_ws))
}

/// Resolves once the flag is (or becomes) true; holds no lock across awaits.
pub(crate) async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
