//! How Add-On-backed tools reach NinjaTrader 8: the relay interface the Add-On bridge implements.
//! Its presence, calls and outcomes are the shared vocabulary's, so the bridge answers in them
//! directly.

use tokio::sync::broadcast;

use crate::auth::BoxFuture;

pub use vocabulary::{
    CallError, CallOutcome, CallRequest, HistoryFilter, HistoryRequest, Presence,
};

/// Relays tool calls to the Add-On of a user and reports its presence.
#[expect(
    clippy::elidable_lifetime_names,
    reason = "the contract spells out the borrow"
)]
pub trait ToolRelay: Send + Sync + 'static {
    fn presence<'a>(&'a self, user_id: uuid::Uuid) -> BoxFuture<'a, Presence>;
    fn call<'a>(&'a self, call: CallRequest) -> BoxFuture<'a, Result<CallOutcome, CallError>>;
    /// Users whose Add-On connected or disconnected, for `notifications/tools/list_changed`.
    fn presence_changes(&self) -> broadcast::Receiver<uuid::Uuid>;

    /// Answers from what was stored from the Add-On (journal, activity, watermarks), whether
    /// or not it is connected now: the tool's structured result, or a tool error the model can
    /// correct (a stale cursor, an unknown id). A relay that stores nothing is unavailable.
    fn history<'a>(
        &'a self,
        user_id: uuid::Uuid,
        request: HistoryRequest,
    ) -> BoxFuture<'a, Result<CallOutcome, CallError>> {
        let _ = (user_id, request);
        Box::pin(async { Err(CallError::Unavailable) })
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
    fn presence<'a>(&'a self, _user_id: uuid::Uuid) -> BoxFuture<'a, Presence> {
        Box::pin(async { Presence::default() })
    }

    fn call<'a>(&'a self, _call: CallRequest) -> BoxFuture<'a, Result<CallOutcome, CallError>> {
        Box::pin(async { Err(CallError::NotConnected) })
    }

    fn presence_changes(&self) -> broadcast::Receiver<uuid::Uuid> {
        self.changes.subscribe()
    }
}
