//! Test harness only: `tests/suite.rs` runs the official MCP conformance suite
//! (npm `@modelcontextprotocol/conformance`, pinned in `suite/package-lock.json`) against a test
//! instance of the real MCP endpoint, for the `2025-11-25` and `2026-07-28` requirement sets,
//! and holds the results to `baseline.toml`. The library holds the suite's fixtures
//! ([`Fixtures`]), plugged into that instance through `mcp`'s extension point; nothing in the
//! server depends on it.

mod fixtures;

pub use fixtures::Fixtures;
