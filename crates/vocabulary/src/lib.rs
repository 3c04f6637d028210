//! The vocabulary the CrossTrade crates share: the MCP scopes, the subscription tier, the
//! caller of an MCP request, the Add-On's presence and the outcome of a relayed call, the
//! confirmation policy for order-affecting calls, and the product's `{error, message}` body.
//!
//! `store`, `oauth`, `mcp` and `addon-bridge` all use these types, so the binary's adapters
//! pass them through instead of translating look-alike enums. The crate holds types and their
//! parsing only: no I/O, no state, and it depends on no workspace crate.

pub mod addon;
pub mod confirm;
pub mod envelope;
pub mod history;
pub mod job;
pub mod principal;
pub mod scope;
pub mod tier;
pub mod trace;

pub use addon::{AddonState, CallError, CallOutcome, CallRequest, Presence, TooOld};
pub use confirm::{
    Channel, ConfirmationState, DecidedVia, Decision, Gate, InvalidPolicy, Mode, Policy, Reason,
    Size,
};
pub use envelope::{ErrorBody, ErrorCodeTable, code_table_markdown};
pub use history::{HistoryFilter, HistoryRequest, SignalFilter, TrailingMode, TrailingRule};
pub use job::{Job, JobError, JobFilter, JobKind, JobStart, JobState};
pub use principal::Principal;
pub use scope::Scope;
pub use tier::{Tier, UnknownTier};
