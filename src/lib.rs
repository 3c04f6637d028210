//! The `crosstrade` binary: configuration, logging, the database (external or embedded), router
//! composition and the CLI. Business logic lives in the workspace crates (`oauth`, `mcp`,
//! `addon-bridge`, `store`).

pub mod adapters;
pub mod cli;
pub mod config;
pub mod database;
pub mod dev;
pub mod http;
pub mod json_log;
pub mod log_writer;
pub mod otel;
pub mod readiness;
pub mod server;
pub mod telemetry;
