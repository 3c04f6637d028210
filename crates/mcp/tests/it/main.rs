//! Integration tests of the MCP endpoint: the real router (in-process for one request and its
//! response, over loopback HTTP for open streams), a real Postgres per test, a table-driven
//! token verifier and a controllable relay.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

mod confirm;
mod jobs;
mod negotiation;
mod outcomes;
mod streams;
mod support;
mod tiers;
mod tools;
