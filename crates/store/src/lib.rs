//! Shared persistence for the CrossTrade backend.
//!
//! Owns the one migration stream (`MIGRATOR`), the pool options every crate uses, the embedded
//! PostgreSQL cluster that serves `cargo run` and the tests, the clock, and the accounts (users)
//! that the OAuth and MCP crates both read. It depends on no feature crate, only on `vocabulary`
//! (the `Tier` of an account).

/// A boxed, sendable future: the one shape of the cross-crate traits' methods (object-safe
/// without `async-trait`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub mod clock;
pub mod cluster;
pub mod credentials;
pub mod notified;
pub mod password;
pub mod secret;
pub mod tiers;
pub mod users;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, migrate::Migrator};

/// Every schema change, embedded at compile time from the workspace `migrations/` folder.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

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
