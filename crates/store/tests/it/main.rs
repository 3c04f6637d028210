//! Integration tests of the store crate against a real PostgreSQL, one database per test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

mod confirmations;
mod hub;
