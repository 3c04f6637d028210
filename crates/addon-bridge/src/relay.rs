//! Relaying a call: to a socket on this replica directly, or through Postgres to the replica
//! that holds it; idempotency keys; the activity log.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::connection::{Command, PendingCall, Responder};
use crate::data::{self, Stored};
use crate::{AddonBridge, CallError, CallOutcome, CallRequest};

/// How often a waiter re-reads the database even without a notification (a lost notification
/// then costs at most this much, never the answer).
const RECHECK_EVERY: Duration = Duration::from_secs(1);

type CallResult = Result<CallOutcome, CallError>;

/// Local tasks waiting for a row to change (a call's outcome, an idempotency key's outcome),
/// woken by notifications.
#[derive(Default)]
pub(crate) struct Waiters(Mutex<HashMap<Uuid, watch::Sender<u64>>>);

pub(crate) struct Waiter<'a> {
    id: Uuid,
    rx: watch::Receiver<u64>,
    waiters: &'a Waiters,
}

impl Waiters {
    /// Register before reading the row, so a change after the read is never missed.
    pub fn register(&self, id: Uuid) -> Waiter<'_> {
        let rx = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Waiter {
            id,
            rx,
            waiters: self,
        }
    }

    pub fn wake(&self, id: Uuid) {
        if let Some(tx) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Callers waiting on a row.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// After a listener reconnect: every waiter re-reads its row.
    pub fn wake_all(&self) {
        for tx in self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            tx.send_modify(|n| *n += 1);
        }
    }
}

impl Waiter<'_> {
    /// Returns on a wake-up or after [`RECHECK_EVERY`].
    pub(crate) async fn changed(&mut self) {
        let _ = tokio::time::timeout(RECHECK_EVERY, self.rx.changed()).await;
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut map = self
            .waiters
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.get(&self.id).is_some_and(|tx| tx.receiver_count() <= 1) {
            map.remove(&self.id);
        }
    }
}

impl AddonBridge {
    /// Relays a call to the user's Add-On and returns its answer, or why there is none. Runs
    /// to completion (outcome recorded) even if the caller stops waiting.
    ///
    /// Fails at once with [`CallError::TooManyCalls`] when the account already has its
    /// maximum in flight on this replica.
    pub async fn call(&self, call: CallRequest) -> CallResult {
        let Some(slot) = self.account_call(call.user_id) else {
            metrics::counter!("addon_calls_refused_total", "reason" => "per_account").increment(1);
            return Err(CallError::TooManyCalls);
        };
        let this = self.clone();
        let span = vocabulary::trace_span!(
            "addon.call",
            tool = %call.tool,
            path = tracing::field::Empty,
        );
        // The slot lives as long as the call's task, which outlives an impatient caller.
        tokio::spawn(
            async move {
                let _slot = slot;
                this.run_call(call).await
            }
            .instrument(span),
        )
        .await
        .unwrap_or(Err(CallError::Unavailable))
    }

    async fn run_call(&self, mut call: CallRequest) -> CallResult {
        let started = Instant::now();
        if call.deadline.is_zero() {
            call.deadline = self.inner.settings.default_deadline;
        }
        let deadline = started + call.deadline;
        let (result, replayed) = if self.is_shutting_down() {
            (Err(CallError::Unavailable), false)
        } else if let Some(key) = call.idempotency_key.clone() {
            self.idempotent(&call, &key, deadline).await
        } else {
            (self.relay(&call, deadline).await, false)
        };
        let code = vocabulary::addon::outcome_code(&result);
        tracing::info!(
            tool = %call.tool,
            outcome = code,
            replayed,
            latency_ms = started.elapsed().as_millis(),
            "add-on call"
        );
        if let Err(err) = data::log_activity(
            &self.inner.db,
            call.user_id,
            &call.tool,
            code,
            started.elapsed(),
            self.instance_id(),
            replayed,
        )
        .await
        {
            tracing::warn!(error = %err, "add-on activity log write failed");
        }
        result
    }

    /// The first call with a key runs; repeats get its stored outcome (waiting while it is
    /// still running). Returns the result and whether it was a replay.
    async fn idempotent(
        &self,
        call: &CallRequest,
        key: &str,
        deadline: Instant,
    ) -> (CallResult, bool) {
        let db = &self.inner.db;
        loop {
            let id = Uuid::new_v4();
            let remaining = deadline.saturating_duration_since(Instant::now());
            match data::claim_idempotency(db, id, call.user_id, key, &call.tool, remaining).await {
                Err(err) => {
                    tracing::warn!(error = %err, "idempotency claim failed");
                    return (Err(CallError::Unavailable), false);
                }
                Ok(true) => {
                    let result = self.relay(call, deadline).await;
                    self.record_idempotent(id, &result).await;
                    return (result, false);
                }
                Ok(false) => {}
            }
            // None: the first call gave its key back, so try to claim it.
            if let Some(done) = self.await_idempotent(call, key, deadline).await {
                return (done, true);
            }
        }
    }

    /// Stores a keyed call's outcome for its repeats, or gives the key back when nothing left
    /// this server. A failed write is retried in the background until it lands (or the replica
    /// stops): until then a repeat waits, and without it the repeat would be answered 408 after
    /// the call's deadline instead of with the call's outcome (or, for a released key, refused a
    /// call that never ran).
    async fn record_idempotent(&self, id: Uuid, result: &CallResult) {
        // Nothing left this server: the key may be used again.
        let outcome = (*result != Err(CallError::NotConnected)).then(|| Stored::from(result));
        let db = self.inner.db.clone();
        let Err(error) = write_idempotent(&db, id, outcome.as_ref()).await else {
            return;
        };
        let what = match outcome {
            Some(_) => "idempotency outcome write",
            None => "idempotency key release",
        };
        let stopping = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            crate::retry::after_failure(what, id, &error, stopping, || {
                write_idempotent(&db, id, outcome.as_ref())
            })
            .await;
        });
    }

    /// Waits for another call's outcome under the same key. None when the key was released.
    async fn await_idempotent(
        &self,
        call: &CallRequest,
        key: &str,
        deadline: Instant,
    ) -> Option<CallResult> {
        let db = &self.inner.db;
        let mut waiter: Option<Waiter<'_>> = None;
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let row = match data::idempotency_row(db, call.user_id, key).await {
                Ok(Some(row)) => row,
                Ok(None) => return None,
                Err(err) => {
                    tracing::warn!(error = %err, "idempotency lookup failed");
                    return Some(Err(CallError::Unavailable));
                }
            };
            if row.tool != call.tool {
                return Some(Ok(CallOutcome::ToolError(format!(
                    "idempotency_key was already used for {} within the last 24 hours; use a new \
                     key for a new action",
                    row.tool
                ))));
            }
            if let Some(outcome) = row.outcome {
                return Some(outcome.0.into());
            }
            if row.abandoned {
                // The first call's replica died before recording an outcome: it may have
                // reached the Add-On, so it is not run again.
                return Some(Err(CallError::DeadlineExceeded));
            }
            if waiter.as_ref().is_none_or(|w| w.id != row.id) {
                // Registered, then read again at the top of the loop.
                waiter = Some(self.inner.waiters.register(row.id));
                continue;
            }
            let Some(w) = waiter.as_mut() else { continue };
            tokio::select! {
                () = w.changed() => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Some(Err(CallError::DeadlineExceeded));
                }
                () = crate::until_true(&mut shutdown) => return Some(Err(CallError::Disconnected)),
            }
        }
    }

    async fn relay(&self, call: &CallRequest, deadline: Instant) -> CallResult {
        if let Some(handle) = self.local(call.user_id) {
            tracing::Span::current().record("path", "local");
            if handle.is_closing() {
                // Revoked, replaced or shutting down: the call must not reach that socket.
                return Err(CallError::NotConnected);
            }
            let (tool, arguments) = (call.tool.clone(), call.arguments.clone());
            return self
                .deliver(&handle, Uuid::new_v4(), tool, arguments, deadline)
                .await;
        }
        self.relay_remote(call, deadline).await
    }

    /// Hands a call to a socket on this replica and waits for the Add-On's answer.
    pub(crate) async fn deliver(
        &self,
        handle: &crate::connection::Handle,
        id: Uuid,
        tool: String,
        arguments: serde_json::Value,
        deadline: Instant,
    ) -> CallResult {
        let (tx, rx) = oneshot::channel();
        let pending = PendingCall {
            id,
            tool,
            arguments,
            deadline,
            responder: Responder::Local(tx),
            traceparent: vocabulary::trace::current(),
            tracked: self.track_call(),
        };
        match tokio::time::timeout_at(deadline, handle.tx.send(Command::Call(Box::new(pending))))
            .await
        {
            Ok(Ok(())) => {}
            // The socket ended before the call left: it never reached the Add-On.
            Ok(Err(_)) => return Err(CallError::NotConnected),
            Err(_) => return Err(CallError::DeadlineExceeded),
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Disconnected),
            Err(_) => Err(CallError::DeadlineExceeded),
        }
    }

    /// The socket is on another replica (or nowhere): route through Postgres.
    async fn relay_remote(&self, call: &CallRequest, deadline: Instant) -> CallResult {
        let db = &self.inner.db;
        let me = self.instance_id();
        let target =
            match data::presence_of(db, call.user_id, self.inner.settings.instance_stale_after())
                .await
            {
                Ok(Some(row)) if row.instance_id != me => row,
                // Ours in the table but not in memory: the socket just ended.
                Ok(_) => return Err(CallError::NotConnected),
                Err(err) => {
                    tracing::warn!(error = %err, "add-on presence lookup failed");
                    return Err(CallError::Unavailable);
                }
            };
        if let Some(advertised) = target.relay_addr.as_deref()
            && let Some(result) = self
                .relay_direct(
                    target.instance_id,
                    advertised,
                    call,
                    target.connection_id,
                    deadline,
                )
                .await
        {
            return result;
        }
        metrics::counter!("addon_routed_calls_total", "path" => "database").increment(1);
        tracing::Span::current().record("path", "database");
        let call_id = Uuid::new_v4();
        let mut waiter = self.inner.waiters.register(call_id);
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Err(err) = data::insert_call(
            db,
            call_id,
            call.user_id,
            me,
            &target,
            &call.tool,
            &call.arguments,
            remaining,
            vocabulary::trace::current().as_deref(),
        )
        .await
        {
            tracing::warn!(error = %err, "add-on call routing failed");
            return Err(CallError::Unavailable);
        }
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            match data::call_outcome(db, call_id).await {
                Ok(Some(stored)) => return stored.into(),
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "add-on call outcome read failed"),
            }
            tokio::select! {
                () = waiter.changed() => {}
                () = tokio::time::sleep_until(deadline) => break,
                () = crate::until_true(&mut shutdown) => return Err(CallError::Disconnected),
            }
        }
        // Mark it ended so the other replica does not send it late; if an answer won the race,
        // it is the answer.
        let expired = Stored::Failed(CallError::DeadlineExceeded);
        match data::complete_call(db, call_id, &expired).await {
            Ok(true) | Err(_) => Err(CallError::DeadlineExceeded),
            Ok(false) => match data::call_outcome(db, call_id).await {
                Ok(Some(stored)) => stored.into(),
                _ => Err(CallError::DeadlineExceeded),
            },
        }
    }

    /// A call routed to this replica by another: hand it to the local socket.
    pub(crate) async fn take_remote_call(&self, claimed: data::ClaimedCall) {
        let span = vocabulary::trace_span!(
            "addon.call.claimed",
            tool = %claimed.tool,
            traceparent = claimed.traceparent.as_deref()
        );
        self.hand_over_remote_call(claimed).instrument(span).await;
    }

    async fn hand_over_remote_call(&self, claimed: data::ClaimedCall) {
        let call_id = claimed.call_id;
        // Never to a socket whose key was revoked, even before its close is under way here.
        let handle = self
            .local(claimed.user_id)
            .filter(|h| h.connection_id == claimed.connection_id && !h.is_closing())
            .filter(|_| claimed.key_live);
        let remaining = Duration::from_millis(u64::try_from(claimed.remaining_ms).unwrap_or(0));
        let sent = match handle {
            Some(handle) => handle
                .tx
                .send(Command::Call(Box::new(PendingCall {
                    id: call_id,
                    tool: claimed.tool,
                    arguments: claimed.arguments.0,
                    deadline: Instant::now() + remaining,
                    responder: Responder::Remote(call_id),
                    traceparent: vocabulary::trace::current(),
                    tracked: self.track_call(),
                })))
                .await
                .is_ok(),
            None => false,
        };
        if !sent {
            // The socket it was routed to is gone.
            self.complete_remote(call_id, Err(CallError::Disconnected));
        }
    }

    /// Records a routed call's outcome for its origin replica.
    pub(crate) fn complete_remote(&self, call_id: Uuid, result: CallResult) {
        let db = self.inner.db.clone();
        tokio::spawn(async move {
            match data::complete_call(&db, call_id, &Stored::from(&result)).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(%call_id, "late add-on answer dropped"),
                Err(err) => tracing::warn!(error = %err, "add-on call outcome write failed"),
            }
        });
    }
}

/// Stores a keyed call's outcome, or gives its key back (`None`), waking anyone waiting on it.
async fn write_idempotent(
    db: &sqlx::PgPool,
    id: Uuid,
    outcome: Option<&Stored>,
) -> Result<(), sqlx::Error> {
    match outcome {
        Some(outcome) => data::finish_idempotency(db, id, outcome).await,
        None => data::release_idempotency(db, id).await,
    }
}
