//! The Add-On bridge over real WebSockets on loopback (tokio-tungstenite 0.29, as axum uses)
//! against real PostgreSQL, one database per test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::float_cmp,
    reason = "tests fail by panicking; prices are compared as written"
)]

mod corpus;
mod events;
mod fairness;
mod faults;
mod idempotency;
mod jobs;
mod keys;
mod links;
mod relay;
mod replicas;
mod revocation;
mod signals;
mod socket;
mod support;
mod watermarks;
