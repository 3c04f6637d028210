//! Jobs: long work NinjaTrader 8 does for a user (backtest, compile, deploy). Starting one
//! writes its row and relays the starting call with a server-chosen `job_id`; the Add-On then
//! reports `job_progress` and `job_result` events, stored by whichever replica holds its socket.
//! Nothing of a job lives in a replica's memory, so it survives the client going away, the
//! starting replica dying and the socket moving to another replica. Owns `addon_jobs`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;
use vocabulary::{Job, JobError, JobFilter, JobKind, JobStart, JobState};

use crate::protocol::{JobProgressEvent, JobResultEvent};
use crate::{AddonBridge, CallError, CallOutcome, CallRequest};

/// How long the caller of a start waits for the Add-On's confirmation before answering with
/// the job as it stands.
const START_ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// The starting call's deadline, and how long a job may stay unconfirmed.
const START_DEADLINE: Duration = Duration::from_secs(10);
const CONFIRM_WITHIN_SECS: i64 = 120;
/// Jobs an account may have open at once.
const MAX_OPEN_JOBS: i64 = 8;
/// Finished jobs are kept this long.
const KEPT_DAYS: i64 = 30;

/// The longest a job of `kind` may run before it is considered lost.
pub const fn max_duration(kind: JobKind) -> Duration {
    match kind {
        JobKind::Backtest => Duration::from_secs(4 * 3600),
        JobKind::Compile => Duration::from_secs(10 * 60),
        JobKind::Deploy => Duration::from_secs(5 * 60),
    }
}

struct JobRow {
    job_id: Uuid,
    kind: String,
    tool: String,
    state: String,
    progress: Option<f64>,
    message: Option<String>,
    summary: Value,
    result: Option<Value>,
    error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    version: i64,
}

impl JobRow {
    fn into_job(self) -> Result<Job, sqlx::Error> {
        // The table's CHECK constraints admit only these names.
        let corrupt = |what: &str| sqlx::Error::Decode(format!("addon_jobs.{what}").into());
        Ok(Job {
            job_id: self.job_id,
            kind: JobKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            tool: self.tool,
            state: JobState::parse(&self.state).ok_or_else(|| corrupt("state"))?,
            progress: self.progress,
            message: self.message,
            summary: self.summary,
            result: self.result,
            error: self.error,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            version: self.version,
        })
    }
}

/// Writes a new job unless the account has too many open or the key already names one.
/// Returns whether the row was written.
async fn insert(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    start: &JobStart,
) -> Result<bool, sqlx::Error> {
    let max_secs = i32::try_from(max_duration(start.kind).as_secs()).unwrap_or(i32::MAX);
    let inserted = sqlx::query_scalar!(
        "INSERT INTO addon_jobs (job_id, user_id, kind, tool, summary, state, idempotency_key,
           expires_at, max_secs)
         SELECT $1, $2, $3, $4, $5, 'starting', $6, now() + $7::bigint * interval '1 second', $8
         WHERE (SELECT count(*) FROM addon_jobs
                WHERE user_id = $2 AND state IN ('starting', 'running', 'cancelling')) < $9
         ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING job_id",
        job_id,
        start.user_id,
        start.kind.as_str(),
        start.tool,
        start.summary,
        start.idempotency_key,
        CONFIRM_WITHIN_SECS,
        max_secs,
        MAX_OPEN_JOBS,
    )
    .fetch_optional(db)
    .await?;
    Ok(inserted.is_some())
}

/// One job of `user_id`.
pub async fn job(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    job_id: Uuid,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as!(
        JobRow,
        "SELECT job_id, kind, tool, state, progress, message, summary, result, error, created_at,
           updated_at, finished_at, version
         FROM addon_jobs WHERE job_id = $1 AND user_id = $2",
        job_id,
        user_id,
    )
    .fetch_optional(db)
    .await?
    .map(JobRow::into_job)
    .transpose()
}

async fn job_by_key(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    key: &str,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as!(
        JobRow,
        "SELECT job_id, kind, tool, state, progress, message, summary, result, error, created_at,
           updated_at, finished_at, version
         FROM addon_jobs WHERE user_id = $1 AND idempotency_key = $2",
        user_id,
        key,
    )
    .fetch_optional(db)
    .await?
    .map(JobRow::into_job)
    .transpose()
}

/// The user's jobs, newest first.
pub async fn jobs(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    filter: &JobFilter,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as!(
        JobRow,
        "SELECT job_id, kind, tool, state, progress, message, summary, result, error, created_at,
           updated_at, finished_at, version
         FROM addon_jobs
         WHERE user_id = $1
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::bool IS NULL OR (finished_at IS NULL) = $3)
           AND ($4::timestamptz IS NULL OR created_at >= $4)
         ORDER BY created_at DESC, job_id DESC LIMIT $5",
        user_id,
        filter.kind.map(JobKind::as_str),
        filter.open,
        filter.since,
        i64::from(filter.limit),
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(JobRow::into_job)
    .collect()
}

/// The Add-On accepted the start: the job runs, and may now take its kind's full duration.
async fn confirm_started(db: impl PgExecutor<'_>, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE addon_jobs SET state = 'running', updated_at = now(), version = version + 1,
           expires_at = created_at + max_secs * interval '1 second'
         WHERE job_id = $1 AND state = 'starting'",
        job_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Fails an open job (a refused start, an Add-On that never confirmed it).
async fn fail(db: impl PgExecutor<'_>, job_id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE addon_jobs SET state = 'failed', error = $2, finished_at = now(),
           updated_at = now(), version = version + 1
         WHERE job_id = $1 AND finished_at IS NULL",
        job_id,
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Completes a job with the result an Add-On without jobs answered to the starting call.
async fn complete(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    result: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE addon_jobs SET state = 'completed', result = $2, progress = 1, finished_at = now(),
           updated_at = now(), version = version + 1
         WHERE job_id = $1 AND finished_at IS NULL",
        job_id,
        result,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets a job whose start never reached the Add-On.
async fn forget(db: impl PgExecutor<'_>, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM addon_jobs WHERE job_id = $1 AND state IN ('starting', 'failed')",
        job_id
    )
    .execute(db)
    .await?;
    Ok(())
}

async fn mark_cancelling(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    job_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE addon_jobs SET state = 'cancelling', updated_at = now(), version = version + 1
         WHERE job_id = $1 AND user_id = $2 AND state IN ('starting', 'running')",
        job_id,
        user_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores a `job_progress` event. Progress never goes back, and an event older than the last
/// one stored (a resend after a reconnect) changes nothing. Committed without waiting for the
/// WAL flush: a lost progress tick is followed by the next one or by the result.
pub(crate) async fn record_progress(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    event: &JobProgressEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH a AS (SELECT set_config('synchronous_commit', 'off', true))
         UPDATE addon_jobs SET
           progress = GREATEST(coalesce(progress, 0), $3),
           message = coalesce($4, message),
           progress_at = coalesce($5::timestamptz, now()),
           expires_at = CASE WHEN state = 'starting'
             THEN created_at + max_secs * interval '1 second' ELSE expires_at END,
           state = CASE WHEN state = 'starting' THEN 'running' ELSE state END,
           updated_at = now(), version = version + 1
         FROM a
         WHERE job_id = $1 AND user_id = $2 AND finished_at IS NULL
           AND (progress_at IS NULL OR progress_at <= coalesce($5::timestamptz, now()))
           AND (progress IS NULL OR progress < $3 OR message IS DISTINCT FROM coalesce($4, message))",
        event.job_id,
        user_id,
        event.progress,
        event.message,
        event.time,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores a `job_result` event: the first final state wins; a replay, or a result for a job
/// of another user, matches no row and changes nothing.
pub(crate) async fn record_result(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    event: &JobResultEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE addon_jobs SET state = $3, result = $4, error = $5,
           progress = CASE WHEN $3 = 'completed' THEN 1 ELSE progress END,
           finished_at = coalesce($6, now()), updated_at = now(), version = version + 1
         WHERE job_id = $1 AND user_id = $2 AND finished_at IS NULL",
        event.job_id,
        user_id,
        event.state.as_str(),
        event.result,
        event.error,
        event.time,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Fails open jobs past their time, on any replica's heartbeat.
pub(crate) async fn expire(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE addon_jobs SET state = 'failed', finished_at = now(), updated_at = now(),
           version = version + 1,
           error = CASE WHEN state = 'starting'
             THEN 'the CrossTrade Add-On never confirmed the start (NinjaTrader 8 may have been closed)'
             ELSE 'NinjaTrader 8 reported no result in time (it may have been closed or restarted)'
           END
         WHERE state IN ('starting', 'running', 'cancelling') AND expires_at < now()",
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

pub(crate) async fn purge(db: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM addon_jobs WHERE finished_at < now() - $1::bigint * interval '1 day'",
        KEPT_DAYS,
    )
    .execute(db)
    .await?;
    Ok(())
}

fn unavailable(err: &sqlx::Error) -> CallError {
    tracing::warn!(error = %err, "add-on job storage failed");
    CallError::Unavailable
}

impl AddonBridge {
    /// Starts a job: writes it, relays the starting call with its `job_id`, and answers within
    /// about a second with the job as it stands. Fails only when the start certainly never
    /// reached the Add-On (not connected, too many calls, relay down: no job is left behind).
    pub async fn start_job(&self, start: JobStart) -> Result<Job, JobError> {
        let db = &self.inner.db;
        let job_id = Uuid::now_v7();
        if !insert(db, job_id, &start)
            .await
            .map_err(|e| unavailable(&e))?
        {
            if let Some(key) = &start.idempotency_key
                && let Some(first) = job_by_key(db, start.user_id, key)
                    .await
                    .map_err(|e| unavailable(&e))?
            {
                if first.tool != start.tool {
                    return Err(JobError::Refused(format!(
                        "this idempotency_key already started a {} job: use a new key",
                        first.tool
                    )));
                }
                return Ok(first);
            }
            return Err(JobError::Refused(format!(
                "this account already has {MAX_OPEN_JOBS} jobs open: wait for one to finish \
                 or cancel one with CancelJob"
            )));
        }
        let mut arguments = start.arguments;
        if let Some(object) = arguments.as_object_mut() {
            object.insert("job_id".to_owned(), Value::String(job_id.to_string()));
        }
        let call = CallRequest {
            user_id: start.user_id,
            tool: start.tool,
            arguments,
            deadline: START_DEADLINE,
            idempotency_key: None,
        };
        let (answered, answer) = tokio::sync::oneshot::channel();
        let bridge = self.clone();
        // The start runs to its outcome even when the caller stops waiting for it.
        tokio::spawn(async move {
            let outcome = bridge.call(call).await;
            if let Err(err) = bridge.settle_start(job_id, &outcome).await {
                tracing::warn!(error = %err, "recording a job start failed");
            }
            let _ = answered.send(outcome);
        });
        if let Ok(Ok(Err(
            error @ (CallError::NotConnected | CallError::TooManyCalls | CallError::Unavailable),
        ))) = tokio::time::timeout(START_ANSWER_WITHIN, answer).await
        {
            forget(db, job_id).await.map_err(|e| unavailable(&e))?;
            return Err(error.into());
        }
        job(db, start.user_id, job_id)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or(JobError::Call(CallError::Unavailable))
    }

    async fn settle_start(
        &self,
        job_id: Uuid,
        outcome: &Result<CallOutcome, CallError>,
    ) -> Result<(), sqlx::Error> {
        let db = &self.inner.db;
        match outcome {
            Ok(CallOutcome::Ok(content)) if accepted(content, job_id) => {
                confirm_started(db, job_id).await
            }
            // An Add-On without jobs ran the work inside the call and answered its result.
            Ok(CallOutcome::Ok(content)) => complete(db, job_id, content).await,
            Ok(CallOutcome::ToolError(message)) => fail(db, job_id, message).await,
            Err(CallError::NotConnected | CallError::TooManyCalls | CallError::Unavailable) => {
                fail(db, job_id, "the start never reached the CrossTrade Add-On").await
            }
            // The Add-On may have started it: its events move the job on, or the start window
            // ends it.
            Err(CallError::Disconnected | CallError::DeadlineExceeded) => Ok(()),
        }
    }

    /// One job of `user_id`, or `None` when there is no such job (or it is another user's).
    pub async fn job(&self, user_id: Uuid, job_id: Uuid) -> Result<Option<Job>, CallError> {
        job(&self.inner.db, user_id, job_id)
            .await
            .map_err(|e| unavailable(&e))
    }

    /// The user's jobs, newest first.
    pub async fn jobs(&self, user_id: Uuid, filter: &JobFilter) -> Result<Vec<Job>, CallError> {
        jobs(&self.inner.db, user_id, filter)
            .await
            .map_err(|e| unavailable(&e))
    }

    /// Asks the Add-On to cancel a job; it then reports `job_result` `cancelled` (or the final
    /// state it reached first). A finished job is returned as it is.
    pub async fn cancel_job(&self, user_id: Uuid, job_id: Uuid) -> Result<Job, JobError> {
        let db = &self.inner.db;
        let Some(current) = self.job(user_id, job_id).await? else {
            return Err(no_such_job(job_id));
        };
        if current.state.is_final() {
            return Ok(current);
        }
        let call = CallRequest {
            user_id,
            tool: "CancelJob".to_owned(),
            arguments: serde_json::json!({ "job_id": job_id }),
            deadline: START_DEADLINE,
            idempotency_key: None,
        };
        match self.call(call).await? {
            CallOutcome::Ok(_) => mark_cancelling(db, user_id, job_id)
                .await
                .map_err(|e| unavailable(&e))?,
            // The Add-On runs no such job (NinjaTrader restarted, or it already ended): no
            // result will come, so the job ends here instead of at its expiry.
            CallOutcome::ToolError(message) => {
                fail(
                    db,
                    job_id,
                    &format!("the CrossTrade Add-On is not running this job: {message}"),
                )
                .await
                .map_err(|e| unavailable(&e))?;
            }
        }
        self.job(user_id, job_id)
            .await?
            .ok_or_else(|| no_such_job(job_id))
    }

    /// The job once it has changed past `after_version` or is final, or as it stands at
    /// `until`. `None` when there is no such job.
    pub async fn wait_job(
        &self,
        user_id: Uuid,
        job_id: Uuid,
        after_version: i64,
        until: Instant,
    ) -> Result<Option<Job>, CallError> {
        // Registered before the first read, so a change after it is never missed.
        let mut waiter = self.inner.waiters.register(job_id);
        loop {
            let Some(job) = self.job(user_id, job_id).await? else {
                return Ok(None);
            };
            if job.version > after_version || job.state.is_final() || Instant::now() >= until {
                return Ok(Some(job));
            }
            tokio::select! {
                () = waiter.changed() => {}
                () = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }
}

/// The Add-On's answer to a start that it runs as a job: `{"job_id": <ours>, "state":
/// "running"}` (anything else is a finished result).
fn accepted(content: &Value, job_id: Uuid) -> bool {
    content.get("job_id").and_then(Value::as_str) == Some(job_id.to_string().as_str())
        && matches!(
            content.get("state").and_then(Value::as_str),
            Some("running" | "starting")
        )
}

fn no_such_job(job_id: Uuid) -> JobError {
    JobError::Refused(format!(
        "no job {job_id}: list this account's jobs with ListJobs"
    ))
}
