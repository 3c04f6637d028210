//! Shared persistence for the CrossTrade backend.
//!
//! Owns the one migration stream (`MIGRATOR`), the pool options every crate uses, the embedded
//! PostgreSQL cluster that serves `cargo run` and the tests, the clock, the accounts (users)
//! that the OAuth and MCP crates both read, the trade confirmations (`confirmations`) the MCP
//! tools and the account pages both move on, what each AI client did (`activity`: recorded by
//! the MCP endpoint, shown on the AI Clients page), and what runs a replica in the background: the
//! supervisor of its services (`tasks`) and its one `LISTEN` connection (`hub`). It depends on
//! no feature crate, only on `vocabulary` (the `Tier` of an account, the confirmation policy).

/// A boxed, sendable future: the one shape of the cross-crate traits' methods (object-safe
/// without `async-trait`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub mod activity;
pub mod clock;
pub mod cluster;
pub mod confirmations;
pub mod credentials;
pub mod hub;
pub mod lock;
pub mod notified;
pub mod password;
pub mod secret;
pub mod tasks;
pub mod tiers;
pub mod users;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, migrate::Migrator};

/// Every schema change, embedded at compile time from the workspace `migrations/` folder.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// How many migrations the database has applied. The table is the migrator's own (absent
/// before the first migration), so this one statement is not described in `.sqlx/`.
pub async fn applied_migrations(conn: &mut sqlx::PgConnection) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(conn)
        .await
        .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

/// A round trip to the database, for readiness.
pub async fn ping(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!("SELECT 1 AS one")
        .fetch_one(conn)
        .await
        .map(drop)
}

/// What a service needs to run in the background: the supervisor that owns its loops and the
/// notification hub its caches subscribe to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Background {
    pub tasks: tasks::Supervisor,
    pub hub: hub::Hub,
}

impl Background {
    /// A new supervisor with the hub on `db` already running under it.
    pub fn start(db: &PgPool) -> Self {
        let tasks = tasks::Supervisor::new();
        let hub = hub::Hub::start(db, &tasks);
        Self { tasks, hub }
    }
}

/// Pool sizing and the time a request may wait for a connection.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// Opens a pool lazily: the server starts and answers `/readyz` 503 even while the database is
/// down, and connections are made again by themselves when it returns.
pub fn connect_lazy(options: PgConnectOptions, settings: PoolSettings) -> PgPool {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(true)
        .connect_lazy_with(options)
}
