//! End-to-end tests of the `crosstrade` binary against real PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

mod account;
mod activity;
mod addon_path;
mod addon_revocation;
mod addon_too_old;
mod browser;
mod charts;
mod cli;
mod compose;
mod confirm;
mod embedded;
mod fairness;
mod faults;
mod fuzz_corpus;
mod jobs;
mod load_balancer;
mod mcp_client;
mod oauth_flow;
mod overload;
mod readiness;
mod readme;
mod signals;
mod step_up;
mod support;
mod traces;
mod watermarks;
