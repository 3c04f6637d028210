//! Test harness only: `tests/suite.rs` runs the official MCP conformance suite
//! (npm `@modelcontextprotocol/conformance`, pinned in `suite/package-lock.json`) against a test
//! instance of the real MCP endpoint, for the `2025-11-25` and `2026-07-28` requirement sets,
//! and holds the results to `baseline.toml`. This library is empty on purpose; nothing depends
//! on it.
