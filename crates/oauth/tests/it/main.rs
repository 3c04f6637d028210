//! The OAuth behaviours of OAUTH-CHECKLIST.md (groups A–H; CIMD's B9 and B10 in cimd.rs)
//! against real PostgreSQL: flows over real HTTP on loopback, single requests (documents,
//! validation errors) through the router in-process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

mod authorize;
mod boundaries;
mod cimd;
mod confirmations;
mod discovery;
mod hostile;
mod registration;
mod revocation;
mod sign_in;
mod storage;
mod support;
mod token;
mod verification;
