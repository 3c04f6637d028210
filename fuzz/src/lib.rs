//! The fuzz targets' bodies, in `bodies.rs` so the root test suite can include the same file
//! and replay the checked-in corpus without libFuzzer.

#[path = "bodies.rs"]
pub mod bodies;
