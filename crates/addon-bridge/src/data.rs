//! SQL of the bridge: presence, Add-Ons refused as too old, replica heartbeats, cross-replica
//! calls, events, and the read models served to backend tools (executions, journal, activity;
//! watermarks are in [`crate::watermarks`]).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use sqlx::types::Json;
use uuid::Uuid;

use crate::connection::Handle;
use crate::protocol::{AccountSnapshotEvent, ExecutionEvent};
use crate::{CallError, CallOutcome};
pub use vocabulary::{HistoryFilter, HistoryRequest};

/// How a call ended, as stored for idempotent replays and cross-replica results.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stored {
    Ok(Value),
    ToolError(String),
    Failed(CallError),
}

impl From<&Result<CallOutcome, CallError>> for Stored {
    fn from(result: &Result<CallOutcome, CallError>) -> Self {
        match result {
            Ok(CallOutcome::Ok(value)) => Stored::Ok(value.clone()),
            Ok(CallOutcome::ToolError(message)) => Stored::ToolError(message.clone()),
            Err(err) => Stored::Failed(*err),
        }
    }
}

impl From<Stored> for Result<CallOutcome, CallError> {
    fn from(stored: Stored) -> Self {
        match stored {
            Stored::Ok(value) => Ok(CallOutcome::Ok(value)),
            Stored::ToolError(message) => Ok(CallOutcome::ToolError(message)),
            Stored::Failed(err) => Err(err),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// ---- presence and replicas ----------------------------------------------------------------

#[derive(Debug)]
pub(crate) struct PresenceRow {
    pub instance_id: Uuid,
    pub connection_id: Uuid,
    pub addon_version: String,
    pub nt8_version: String,
    pub features: Json<Vec<String>>,
    /// Where the replica holding it takes calls over a link, if it does.
    pub relay_addr: Option<String>,
}

/// The user's presence on a live replica.
pub(crate) async fn presence_of(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    stale_after: Duration,
) -> Result<Option<PresenceRow>, sqlx::Error> {
    sqlx::query_as!(
        PresenceRow,
        r#"SELECT p.instance_id, p.connection_id, p.addon_version, p.nt8_version,
             p.features AS "features: Json<Vec<String>>", i.relay_addr
           FROM addon_presence p JOIN addon_instances i USING (instance_id)
           WHERE p.user_id = $1
             AND i.heartbeat_at > now() - $2::bigint * interval '1 millisecond'"#,
        user_id,
        millis(stale_after),
    )
    .fetch_optional(db)
    .await
}

/// The current connection id of a user, wherever it is.
pub(crate) async fn current_connection(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT connection_id FROM addon_presence WHERE user_id = $1",
        user_id
    )
    .fetch_optional(db)
    .await
}

/// Whether the key is live, holding its row `FOR SHARE` until the transaction ends: a
/// revocation (an `UPDATE` of the row) then waits, so presence written in the same transaction
/// is never left behind for a revoked key (the revocation trigger deletes it).
pub(crate) async fn lock_live_key(
    db: impl PgExecutor<'_>,
    key_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let live = sqlx::query_scalar!(
        "SELECT key_id FROM addon_keys WHERE key_id = $1 AND revoked_at IS NULL FOR SHARE",
        key_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(live.is_some())
}

/// Records `handle` as the user's one live connection (replacing any other). Call it inside
/// a transaction that has [`lock_live_key`]ed the handle's key.
pub(crate) async fn upsert_presence(
    db: impl PgExecutor<'_>,
    instance_id: Uuid,
    handle: &Handle,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO addon_presence
           (user_id, instance_id, connection_id, key_id, addon_version, nt8_version, features)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (user_id) DO UPDATE SET instance_id = EXCLUDED.instance_id,
           connection_id = EXCLUDED.connection_id, key_id = EXCLUDED.key_id,
           addon_version = EXCLUDED.addon_version, nt8_version = EXCLUDED.nt8_version,
           features = EXCLUDED.features, connected_since = now(), last_seen = now()",
        handle.user_id,
        instance_id,
        handle.connection_id,
        handle.key_id,
        handle.presence.addon_version.as_deref().unwrap_or_default(),
        handle.presence.nt8_version.as_deref().unwrap_or_default(),
        Json(&handle.presence.features) as _,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Removes a connection's presence unless a newer connection has replaced it.
pub(crate) async fn delete_presence(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    connection_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM addon_presence WHERE user_id = $1 AND connection_id = $2",
        user_id,
        connection_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

// ---- Add-Ons refused as too old ------------------------------------------------------------

/// How long after its refusal a too-old Add-On is still reported: long enough to be seen the
/// next time the user looks, short enough that an Add-On since uninstalled is forgotten.
pub(crate) const REFUSAL_SHOWN_FOR: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug)]
pub(crate) struct RefusalRow {
    pub addon_version: String,
    pub nt8_version: String,
    pub refused_at: DateTime<Utc>,
}

/// Records the user's Add-On as refused for its version (one row per user, the latest wins).
/// Call it inside a transaction that has [`lock_live_key`]ed the key, so a revoked key never
/// writes one.
pub(crate) async fn upsert_refusal(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    key_id: Uuid,
    addon_version: &str,
    nt8_version: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO addon_refusals (user_id, key_id, addon_version, nt8_version)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET key_id = EXCLUDED.key_id,
           addon_version = EXCLUDED.addon_version, nt8_version = EXCLUDED.nt8_version,
           refused_at = now()",
        user_id,
        key_id,
        addon_version,
        nt8_version,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets the user's refused Add-On: a supported one has connected.
pub(crate) async fn clear_refusal(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM addon_refusals WHERE user_id = $1", user_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The user's refused Add-On, if it was refused within [`REFUSAL_SHOWN_FOR`] with a key that
/// is still live.
pub(crate) async fn refusal_of(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> Result<Option<RefusalRow>, sqlx::Error> {
    sqlx::query_as!(
        RefusalRow,
        "SELECT r.addon_version, r.nt8_version, r.refused_at
         FROM addon_refusals r JOIN addon_keys k USING (key_id)
         WHERE r.user_id = $1 AND k.revoked_at IS NULL
           AND r.refused_at > now() - $2::bigint * interval '1 millisecond'",
        user_id,
        millis(REFUSAL_SHOWN_FOR),
    )
    .fetch_optional(db)
    .await
}

/// Refreshes this replica's heartbeat and its sockets' `last_seen`. True when the row had to be
/// created (first beat, or swept while this replica stalled).
pub(crate) async fn instance_heartbeat(
    db: &sqlx::PgPool,
    instance_id: Uuid,
    relay_addr: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let created = sqlx::query_scalar!(
        r#"INSERT INTO addon_instances (instance_id, relay_addr) VALUES ($1, $2)
           ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now(), relay_addr = $2
           RETURNING (xmax = 0) AS "created!""#,
        instance_id,
        relay_addr,
    )
    .fetch_one(db)
    .await?;
    sqlx::query!(
        "UPDATE addon_presence SET last_seen = now() WHERE instance_id = $1",
        instance_id,
    )
    .execute(db)
    .await?;
    Ok(created)
}

/// Deletes replicas whose heartbeat is stale (their presence goes with them, which notifies
/// `addon_presence`) and fails the calls routed to them (notifying `addon_result`).
pub(crate) async fn sweep_dead_instances(
    db: impl PgExecutor<'_>,
    stale_after: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH dead AS (
           DELETE FROM addon_instances
           WHERE heartbeat_at < now() - $1::bigint * interval '1 millisecond'
           RETURNING instance_id),
         failed AS (
           UPDATE addon_calls SET outcome = $2, completed_at = now()
           WHERE outcome IS NULL AND target_instance IN (SELECT instance_id FROM dead)
           RETURNING call_id)
         SELECT pg_notify('addon_result', call_id::text) FROM failed",
        millis(stale_after),
        Json(Stored::Failed(CallError::Disconnected)) as _,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A replica leaving: fail calls routed to it, then remove it and its presence.
pub(crate) async fn retire_instance(
    db: &sqlx::PgPool,
    instance_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH failed AS (
           UPDATE addon_calls SET outcome = $2, completed_at = now()
           WHERE outcome IS NULL AND target_instance = $1 RETURNING call_id)
         SELECT pg_notify('addon_result', call_id::text) FROM failed",
        instance_id,
        Json(Stored::Failed(CallError::Disconnected)) as _,
    )
    .execute(db)
    .await?;
    sqlx::query!(
        "DELETE FROM addon_instances WHERE instance_id = $1",
        instance_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Routing rows older than an hour (every deadline is far shorter), idempotency keys older
/// than 24 h, refusals no longer shown, and webhook signals and copier actions past their
/// retention.
pub(crate) async fn purge_old(db: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM addon_calls WHERE created_at < now() - interval '1 hour'")
        .execute(db)
        .await?;
    sqlx::query!("DELETE FROM addon_idempotency WHERE created_at < now() - interval '24 hours'")
        .execute(db)
        .await?;
    sqlx::query!(
        "DELETE FROM addon_refusals WHERE refused_at < now() - $1::bigint * interval '1 millisecond'",
        millis(REFUSAL_SHOWN_FOR),
    )
    .execute(db)
    .await?;
    crate::signals::purge_old(db).await
}

// ---- cross-replica calls ------------------------------------------------------------------

/// Writes a call for the replica holding the socket and wakes it (id only in the notification).
/// Committed without waiting for the WAL flush (visible to the other replica at once): a call
/// lost to a database crash never reached the Add-On, and its caller gets 408 at its deadline.
#[expect(clippy::too_many_arguments, reason = "one row's columns")]
pub(crate) async fn insert_call(
    db: impl PgExecutor<'_>,
    call_id: Uuid,
    user_id: Uuid,
    origin: Uuid,
    target: &PresenceRow,
    tool: &str,
    arguments: &Value,
    remaining: Duration,
    traceparent: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH a AS (SELECT set_config('synchronous_commit', 'off', true)),
         c AS (
           INSERT INTO addon_calls (call_id, user_id, origin_instance, target_instance,
             connection_id, tool, arguments, deadline_at, traceparent)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8::bigint * interval '1 millisecond', $9)
           RETURNING call_id)
         SELECT pg_notify('addon_call', call_id::text) FROM c, a",
        call_id,
        user_id,
        origin,
        target.instance_id,
        target.connection_id,
        tool,
        arguments,
        millis(remaining),
        traceparent,
    )
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug)]
pub(crate) struct ClaimedCall {
    pub call_id: Uuid,
    pub user_id: Uuid,
    pub connection_id: Uuid,
    pub tool: String,
    pub arguments: Json<Value>,
    pub remaining_ms: i64,
    /// The target connection still has presence under a live key. False once its key is
    /// revoked (the revocation deletes the presence), even before this replica hears of it.
    pub key_live: bool,
    /// The caller's trace, when traces are exported.
    pub traceparent: Option<String>,
}

/// Takes a call routed to this replica, once. A durable commit, unlike the rest of a routed
/// call's rows: a claim lost to a crash would let the call be claimed and sent again.
pub(crate) async fn claim_call(
    db: impl PgExecutor<'_>,
    call_id: Uuid,
    instance_id: Uuid,
) -> Result<Option<ClaimedCall>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedCall,
        r#"UPDATE addon_calls SET claimed_at = now()
           WHERE call_id = $1 AND target_instance = $2 AND claimed_at IS NULL
             AND outcome IS NULL AND deadline_at > now()
           RETURNING call_id, user_id, connection_id, tool,
             arguments AS "arguments: Json<Value>",
             (extract(epoch FROM deadline_at - now()) * 1000)::bigint AS "remaining_ms!",
             EXISTS (SELECT 1 FROM addon_presence p JOIN addon_keys k USING (key_id)
                     WHERE p.connection_id = addon_calls.connection_id
                       AND k.revoked_at IS NULL) AS "key_live!", traceparent"#,
        call_id,
        instance_id,
    )
    .fetch_optional(db)
    .await
}

/// Takes every unclaimed live call routed to this replica (after a listener reconnect).
pub(crate) async fn claim_unclaimed(
    db: impl PgExecutor<'_>,
    instance_id: Uuid,
) -> Result<Vec<ClaimedCall>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedCall,
        r#"UPDATE addon_calls SET claimed_at = now()
           WHERE target_instance = $1 AND claimed_at IS NULL AND outcome IS NULL
             AND deadline_at > now()
           RETURNING call_id, user_id, connection_id, tool,
             arguments AS "arguments: Json<Value>",
             (extract(epoch FROM deadline_at - now()) * 1000)::bigint AS "remaining_ms!",
             EXISTS (SELECT 1 FROM addon_presence p JOIN addon_keys k USING (key_id)
                     WHERE p.connection_id = addon_calls.connection_id
                       AND k.revoked_at IS NULL) AS "key_live!", traceparent"#,
        instance_id,
    )
    .fetch_all(db)
    .await
}

/// Records a call's outcome unless it already has one; wakes its origin. False when the call
/// had already ended (a late answer). Committed without waiting for the WAL flush: the claim
/// before it was durable, so a crash can lose the answer (the caller gets 408) but never
/// resend the call.
pub(crate) async fn complete_call(
    db: impl PgExecutor<'_>,
    call_id: Uuid,
    outcome: &Stored,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query_scalar!(
        "WITH a AS (SELECT set_config('synchronous_commit', 'off', true)),
         u AS (
           UPDATE addon_calls SET outcome = $2, completed_at = now()
           WHERE call_id = $1 AND outcome IS NULL RETURNING call_id)
         SELECT pg_notify('addon_result', call_id::text)::text FROM u, a",
        call_id,
        Json(outcome) as _,
    )
    .fetch_optional(db)
    .await?;
    Ok(done.is_some())
}

pub(crate) async fn call_outcome(
    db: impl PgExecutor<'_>,
    call_id: Uuid,
) -> Result<Option<Stored>, sqlx::Error> {
    let outcome = sqlx::query_scalar!(
        r#"SELECT outcome AS "outcome: Json<Stored>" FROM addon_calls WHERE call_id = $1"#,
        call_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(outcome.flatten().map(|json| json.0))
}

// ---- idempotency --------------------------------------------------------------------------

#[derive(Debug)]
pub(crate) struct IdempotencyRow {
    pub id: Uuid,
    pub tool: String,
    pub outcome: Option<Json<Stored>>,
    /// The first call can no longer be answered (its deadline passed long ago).
    pub abandoned: bool,
}

/// Claims `(user, key)` for a new call: a fresh key, or one older than 24 h. None when a live
/// claim exists.
pub(crate) async fn claim_idempotency(
    db: impl PgExecutor<'_>,
    id: Uuid,
    user_id: Uuid,
    key: &str,
    tool: &str,
    remaining: Duration,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query_scalar!(
        "INSERT INTO addon_idempotency (id, user_id, idem_key, tool, deadline_at)
         VALUES ($1, $2, $3, $4, now() + $5::bigint * interval '1 millisecond')
         ON CONFLICT (user_id, idem_key) DO UPDATE SET id = EXCLUDED.id, tool = EXCLUDED.tool,
           created_at = now(), deadline_at = EXCLUDED.deadline_at, outcome = NULL,
           completed_at = NULL
         WHERE addon_idempotency.created_at < now() - interval '24 hours'
         RETURNING id",
        id,
        user_id,
        key,
        tool,
        millis(remaining),
    )
    .fetch_optional(db)
    .await?;
    Ok(claimed == Some(id))
}

pub(crate) async fn idempotency_row(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    key: &str,
) -> Result<Option<IdempotencyRow>, sqlx::Error> {
    sqlx::query_as!(
        IdempotencyRow,
        r#"SELECT id, tool, outcome AS "outcome: Json<Stored>",
             (outcome IS NULL AND deadline_at < now() - interval '5 seconds') AS "abandoned!"
           FROM addon_idempotency
           WHERE user_id = $1 AND idem_key = $2 AND created_at >= now() - interval '24 hours'"#,
        user_id,
        key,
    )
    .fetch_optional(db)
    .await
}

pub(crate) async fn finish_idempotency(
    db: impl PgExecutor<'_>,
    id: Uuid,
    outcome: &Stored,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH u AS (
           UPDATE addon_idempotency SET outcome = $2, completed_at = now()
           WHERE id = $1 AND outcome IS NULL RETURNING id)
         SELECT pg_notify('addon_idem', id::text) FROM u",
        id,
        Json(outcome) as _,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Gives the key back (the call never left this server), waking anyone waiting on it.
pub(crate) async fn release_idempotency(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH d AS (DELETE FROM addon_idempotency WHERE id = $1 RETURNING id)
         SELECT pg_notify('addon_idem', id::text) FROM d",
        id,
    )
    .execute(db)
    .await?;
    Ok(())
}

// ---- activity log -------------------------------------------------------------------------

/// One relayed call as the activity log keeps it. Arguments are never stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActivityEntry {
    pub tool: String,
    /// ok, tool_error, not_connected, disconnected, deadline_exceeded or unavailable.
    pub outcome: String,
    pub latency_ms: i64,
    /// The replica that handled the call.
    pub instance_id: Uuid,
    /// True when the outcome was replayed for a repeated idempotency key.
    pub replayed: bool,
    pub created_at: DateTime<Utc>,
}

/// Appends to the activity log. Committed without waiting for the WAL flush (visible to
/// readers at once): the log is history for GetAddonActivity, and a durable commit here would
/// add a disk flush to every relayed call's answer.
pub(crate) async fn log_activity(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    tool: &str,
    outcome: &str,
    latency: Duration,
    instance_id: Uuid,
    replayed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH a AS (SELECT set_config('synchronous_commit', 'off', true))
         INSERT INTO addon_activity (user_id, tool, outcome, latency_ms, instance_id, replayed)
         SELECT $1, $2, $3, $4, $5, $6 FROM a",
        user_id,
        tool,
        outcome,
        millis(latency),
        instance_id,
        replayed,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The user's most recent relayed calls, newest first.
pub async fn activity(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    limit: u32,
) -> Result<Vec<ActivityEntry>, sqlx::Error> {
    sqlx::query_as!(
        ActivityEntry,
        "SELECT tool, outcome, latency_ms, instance_id, replayed, created_at
         FROM addon_activity WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
        user_id,
        i64::from(limit),
    )
    .fetch_all(db)
    .await
}

// ---- events: executions and account snapshots ---------------------------------------------

pub(crate) async fn store_execution(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    e: &ExecutionEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO addon_executions (user_id, execution_id, account, instrument, action,
           quantity, price, commission, order_id, executed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, now()))
         ON CONFLICT (user_id, execution_id) DO NOTHING",
        user_id,
        e.execution_id,
        e.account,
        e.instrument,
        e.action.as_str(),
        e.quantity,
        e.price,
        e.commission,
        e.order_id,
        e.time,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn store_snapshot(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    s: &AccountSnapshotEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO addon_account_snapshots (user_id, account, cash_value, net_liquidation,
           realized_pnl, unrealized_pnl, taken_at, session_start)
         VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, now()), $8)
         ON CONFLICT (user_id, account, taken_at) DO NOTHING",
        user_id,
        s.account,
        s.cash_value,
        s.net_liquidation,
        s.realized_pnl,
        s.unrealized_pnl,
        s.time,
        s.session_start,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Answers a history request with the tool's structured result.
pub async fn history(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    request: &HistoryRequest,
) -> Result<CallOutcome, sqlx::Error> {
    Ok(CallOutcome::Ok(match request {
        HistoryRequest::Journal(filter) => {
            serde_json::json!({ "trades": journal(db, user_id, filter).await? })
        }
        HistoryRequest::Activity { limit } => {
            serde_json::json!({ "entries": activity(db, user_id, *limit).await? })
        }
        HistoryRequest::Watermarks { account, trailing } => {
            let marks =
                crate::watermarks::watermarks(db, user_id, account.as_deref(), *trailing).await?;
            serde_json::json!({ "watermarks": marks })
        }
        HistoryRequest::WebhookSignals(filter) => {
            return crate::signals::webhook_history(db, user_id, filter).await;
        }
        HistoryRequest::CopierActions(filter) => {
            return crate::signals::copier_history(db, user_id, filter).await;
        }
    }))
}

/// The key of the Add-On socket connected for `user_id` now, on any replica.
pub async fn live_key(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT key_id FROM addon_presence WHERE user_id = $1",
        user_id
    )
    .fetch_optional(db)
    .await
}

/// An execution reported by the Add-On.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Execution {
    pub execution_id: String,
    pub account: String,
    pub instrument: String,
    pub action: String,
    pub quantity: f64,
    pub price: f64,
    pub commission: f64,
    pub order_id: Option<String>,
    pub executed_at: DateTime<Utc>,
}

async fn executions_in(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    filter: &HistoryFilter,
    limit: Option<i64>,
) -> Result<Vec<Execution>, sqlx::Error> {
    sqlx::query_as!(
        Execution,
        "SELECT execution_id, account, instrument, action, quantity, price, commission,
           order_id, executed_at FROM addon_executions
         WHERE user_id = $1 AND ($2::text IS NULL OR account = $2)
           AND ($3::text IS NULL OR instrument = $3)
           AND ($4::timestamptz IS NULL OR executed_at >= $4)
           AND ($5::timestamptz IS NULL OR executed_at <= $5)
         ORDER BY executed_at, execution_id LIMIT $6",
        user_id,
        filter.account,
        filter.instrument,
        filter.since,
        filter.until,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Executions in time order (oldest first).
pub async fn executions(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    filter: &HistoryFilter,
) -> Result<Vec<Execution>, sqlx::Error> {
    let limit = i64::from(filter.limit.unwrap_or(100));
    executions_in(db, user_id, filter, Some(limit)).await
}

/// A closed (or partly closed) round trip in one account and instrument.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JournalTrade {
    pub account: String,
    pub instrument: String,
    /// "Long" or "Short".
    pub direction: &'static str,
    pub quantity: f64,
    pub entry_price: f64,
    pub exit_price: f64,
    pub opened_at: DateTime<Utc>,
    pub closed_at: DateTime<Utc>,
    /// Price points times quantity, before commission (instrument multipliers are the
    /// Add-On's business).
    pub points: f64,
    pub commission: f64,
}

#[derive(Debug, Clone, Copy)]
struct Lot {
    qty: f64,
    price: f64,
    at: DateTime<Utc>,
    commission_per_unit: f64,
}

/// Round trips matched first-in first-out from the executions in the window.
pub async fn journal(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    filter: &HistoryFilter,
) -> Result<Vec<JournalTrade>, sqlx::Error> {
    let fills = executions_in(db, user_id, filter, None).await?;
    let mut open: HashMap<(String, String), Vec<Lot>> = HashMap::new();
    let mut trades = Vec::new();
    for fill in fills {
        let signed = if fill.action == "Buy" {
            fill.quantity
        } else {
            -fill.quantity
        };
        let per_unit = fill.commission / fill.quantity;
        let lots = open
            .entry((fill.account.clone(), fill.instrument.clone()))
            .or_default();
        let mut remaining = signed;
        while remaining.abs() > f64::EPSILON
            && let Some(first) = lots.first_mut()
            && first.qty.signum() != remaining.signum()
        {
            let matched = first.qty.abs().min(remaining.abs());
            let long = first.qty > 0.0;
            let points = if long {
                fill.price - first.price
            } else {
                first.price - fill.price
            };
            trades.push(JournalTrade {
                account: fill.account.clone(),
                instrument: fill.instrument.clone(),
                direction: if long { "Long" } else { "Short" },
                quantity: matched,
                entry_price: first.price,
                exit_price: fill.price,
                opened_at: first.at,
                closed_at: fill.executed_at,
                points: points * matched,
                commission: (first.commission_per_unit + per_unit) * matched,
            });
            first.qty -= first.qty.signum() * matched;
            remaining -= remaining.signum() * matched;
            if first.qty.abs() <= f64::EPSILON {
                lots.remove(0);
            }
        }
        if remaining.abs() > f64::EPSILON {
            lots.push(Lot {
                qty: remaining,
                price: fill.price,
                at: fill.executed_at,
                commission_per_unit: per_unit,
            });
        }
    }
    trades.reverse();
    trades.truncate(usize::try_from(filter.limit.unwrap_or(100)).unwrap_or(usize::MAX));
    Ok(trades)
}
