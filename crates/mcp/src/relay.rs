//! How Add-On-backed tools reach NinjaTrader 8: the relay interface the Add-On bridge implements.

use std::time::Duration;

use tokio::sync::broadcast;

use crate::auth::BoxFuture;

/// What the backend knows about a user's Add-On connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AddonPresence {
    pub connected: bool,
    pub addon_version: Option<String>,
    pub nt8_version: Option<String>,
    pub features: Vec<String>,
}

/// One tool call to relay to a user's Add-On. `arguments` have already been validated against
/// the tool's input schema; `idempotency_key` is lifted out of them for trade tools.
#[derive(Debug, Clone)]
pub struct RelayCall {
    pub user_id: uuid::Uuid,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub deadline: Duration,
    pub idempotency_key: Option<String>,
}

/// What the Add-On answered.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayOutcome {
    /// The tool ran; its structured result.
    Ok(serde_json::Value),
    /// The tool ran and failed (rejected order, compile errors…): shown to the model as a
    /// tool result with `isError: true`.
    ToolError(String),
}

/// Why a call could not be relayed or answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("the Add-On is not connected")]
    NotConnected,
    #[error("the Add-On disconnected while the call was in flight")]
    Disconnected,
    #[error("the Add-On did not answer before the deadline")]
    DeadlineExceeded,
    #[error("the relay is unavailable")]
    Unavailable,
    /// The account has as many calls in flight as it may; nothing was relayed.
    #[error("too many calls in flight for this account")]
    TooManyCalls,
}

/// A question about what was stored from the Add-On, answered whether or not it is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryRequest {
    /// Completed round-trip trades, newest first.
    Journal(HistoryFilter),
    /// The Add-On's recent activity, newest first.
    Activity { limit: u32 },
    /// Per-account watermarks, for one account or all.
    Watermarks { account: Option<String> },
}

/// Which stored entries a history request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryFilter {
    pub account: Option<String>,
    pub instrument: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    pub limit: u32,
}

/// Relays tool calls to the Add-On of a user and reports its presence.
#[expect(
    clippy::elidable_lifetime_names,
    reason = "the contract spells out the borrow"
)]
pub trait ToolRelay: Send + Sync + 'static {
    fn presence<'a>(&'a self, user_id: uuid::Uuid) -> BoxFuture<'a, AddonPresence>;
    fn call<'a>(&'a self, call: RelayCall) -> BoxFuture<'a, Result<RelayOutcome, RelayError>>;
    /// Users whose Add-On connected or disconnected, for `notifications/tools/list_changed`.
    fn presence_changes(&self) -> broadcast::Receiver<uuid::Uuid>;

    /// Answers from what was stored from the Add-On (journal, activity, watermarks), whether
    /// or not it is connected now: the tool's structured result. A relay that stores nothing is
    /// unavailable.
    fn history<'a>(
        &'a self,
        user_id: uuid::Uuid,
        request: HistoryRequest,
    ) -> BoxFuture<'a, Result<serde_json::Value, RelayError>> {
        let _ = (user_id, request);
        Box::pin(async { Err(RelayError::Unavailable) })
    }
}

/// The relay used until the Add-On bridge is wired in: truthfully never connected.
#[derive(Debug)]
pub struct NotConnectedRelay {
    // Kept so receivers stay open (a closed channel would end every SSE stream at once).
    changes: broadcast::Sender<uuid::Uuid>,
}

impl NotConnectedRelay {
    pub fn new() -> Self {
        Self {
            changes: broadcast::channel(1).0,
        }
    }
}

impl Default for NotConnectedRelay {
    fn default() -> Self {
        Self::new()
    }
}

#[expect(
    clippy::elidable_lifetime_names,
    reason = "the contract spells out the borrow"
)]
impl ToolRelay for NotConnectedRelay {
    fn presence<'a>(&'a self, _user_id: uuid::Uuid) -> BoxFuture<'a, AddonPresence> {
        Box::pin(async { AddonPresence::default() })
    }

    fn call<'a>(&'a self, _call: RelayCall) -> BoxFuture<'a, Result<RelayOutcome, RelayError>> {
        Box::pin(async { Err(RelayError::NotConnected) })
    }

    fn presence_changes(&self) -> broadcast::Receiver<uuid::Uuid> {
        self.changes.subscribe()
    }
}
