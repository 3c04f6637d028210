//! How Add-On-backed tools reach NinjaTrader 8: the relay interface the Add-On bridge implements.
//! Its presence, calls and outcomes are the shared vocabulary's, so the bridge answers in them
//! directly.

use tokio::sync::broadcast;

use crate::auth::BoxFuture;

pub use vocabulary::{
    CallError, CallOutcome, CallRequest, HistoryFilter, HistoryRequest, Job, JobError, JobFilter,
    JobStart, Presence,
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

    /// Starts a job in NinjaTrader 8 and answers at once with it. `Err` only when the start
    /// certainly never reached the Add-On, or the request is refused (a tool error).
    fn start_job<'a>(&'a self, start: JobStart) -> BoxFuture<'a, Result<Job, JobError>> {
        let _ = start;
        Box::pin(async { Err(JobError::Call(CallError::Unavailable)) })
    }

    /// One job of the user; `None` when there is none (or it is another user's).
    fn job<'a>(
        &'a self,
        user_id: uuid::Uuid,
        job_id: uuid::Uuid,
    ) -> BoxFuture<'a, Result<Option<Job>, CallError>> {
        let _ = (user_id, job_id);
        Box::pin(async { Err(CallError::Unavailable) })
    }

    /// The user's jobs, newest first.
    fn jobs<'a>(
        &'a self,
        user_id: uuid::Uuid,
        filter: JobFilter,
    ) -> BoxFuture<'a, Result<Vec<Job>, CallError>> {
        let _ = (user_id, filter);
        Box::pin(async { Err(CallError::Unavailable) })
    }

    /// Asks the Add-On to cancel a job; the job as it then stands.
    fn cancel_job<'a>(
        &'a self,
        user_id: uuid::Uuid,
        job_id: uuid::Uuid,
    ) -> BoxFuture<'a, Result<Job, JobError>> {
        let _ = (user_id, job_id);
        Box::pin(async { Err(JobError::Call(CallError::Unavailable)) })
    }

    /// The job once it changed past `after_version` or is final, or as it stands at `until`.
    fn wait_job<'a>(
        &'a self,
        user_id: uuid::Uuid,
        job_id: uuid::Uuid,
        after_version: i64,
        until: std::time::Instant,
    ) -> BoxFuture<'a, Result<Option<Job>, CallError>> {
        let _ = (after_version, until);
        self.job(user_id, job_id)
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
