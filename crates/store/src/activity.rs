//! What each AI client did with its grant: every `tools/call`, counted per grant, per UTC day and
//! per tool, and the latest calls of each grant with when and how each ended. The AI Clients page
//! reads it.
//!
//! Recording is on the MCP hot path, so a call costs one uncontended lock and a few additions
//! in memory ([`Recorder::record`]); a background service writes what was recorded about once a
//! second in one statement (arrays unnested into both tables) and once more at shutdown, after
//! the last request has drained. A replica that crashes loses at most the last second of
//! activity. A batch the database refused is kept and written with the next one; while the
//! database is away, memory stays bounded (see [`MAX_PENDING_GRANTS`]).
//!
//! Rows belong to their grant (`ON DELETE CASCADE`); the maintenance job ([`prune`]) keeps the
//! last [`DAYS`] days and the last [`RECENT_PER_GRANT`] calls of each grant.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::Background;
use crate::clock::Clock;
use crate::tasks::Shutdown;

/// Days of activity the page shows and the tables keep (today included).
pub const DAYS: u32 = 7;
/// Latest calls kept per grant.
pub const RECENT_PER_GRANT: usize = 20;
/// How often recorded calls are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Grants with unwritten calls beyond which a batch the database refused is dropped rather
/// than kept for the next try.
pub const MAX_PENDING_GRANTS: usize = 100_000;

/// How one `tools/call` ended, as the AI Clients page tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The tool answered.
    Ok,
    /// The tool answered with an error (`isError`), arguments that did not validate included.
    ToolError,
    /// Held for the person's confirmation (or answered from a confirmation's state).
    Held,
    /// Refused before it ran: the grant's scope or the account's subscription does not allow it.
    Refused,
    /// The Add-On was not connected, dropped the call or did not answer in time.
    AddonUnavailable,
    /// Anything else: invalid parameters, a server failure.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::ToolError,
        Outcome::Held,
        Outcome::Refused,
        Outcome::AddonUnavailable,
        Outcome::Failed,
    ];

    /// The stored code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::Held => "held",
            Outcome::Refused => "refused",
            Outcome::AddonUnavailable => "addon_unavailable",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == code)
    }

    /// The words a person reads.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "Answered",
            Outcome::ToolError => "Tool error",
            Outcome::Held => "Held for your confirmation",
            Outcome::Refused => "Refused",
            Outcome::AddonUnavailable => "Add-On unavailable",
            Outcome::Failed => "Failed",
        }
    }

    /// Counted in `errors`: neither answered nor held.
    pub const fn is_error(self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::Held)
    }
}

/// Calls of one grant not written yet.
#[derive(Debug, Default)]
struct GrantCalls {
    /// One entry per (day, tool); a handful per grant, so a scan beats a map.
    counts: Vec<DayCount>,
    /// Oldest first, at most [`RECENT_PER_GRANT`].
    recent: VecDeque<Call>,
}

#[derive(Debug, Clone, Copy)]
struct DayCount {
    day: NaiveDate,
    tool: &'static str,
    trade: bool,
    calls: i64,
    errors: i64,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    at: DateTime<Utc>,
    tool: &'static str,
    trade: bool,
    outcome: Outcome,
}

impl GrantCalls {
    fn add(&mut self, count: DayCount) {
        match self
            .counts
            .iter_mut()
            .find(|c| c.day == count.day && c.tool == count.tool)
        {
            Some(existing) => {
                existing.calls += count.calls;
                existing.errors += count.errors;
                existing.trade = count.trade;
            }
            None => self.counts.push(count),
        }
    }

    fn remember(&mut self, call: Call) {
        if self.recent.len() == RECENT_PER_GRANT {
            self.recent.pop_front();
        }
        self.recent.push_back(call);
    }

    /// Folds in an older batch of the same grant that could not be written.
    fn absorb_older(&mut self, older: GrantCalls) {
        for count in older.counts {
            self.add(count);
        }
        let newer = std::mem::replace(&mut self.recent, older.recent);
        for call in newer {
            self.remember(call);
        }
    }
}

/// Records tool calls in memory and writes them in the background. Cheap to share (`Arc`).
pub struct Recorder {
    db: PgPool,
    clock: Clock,
    pending: Mutex<HashMap<Uuid, GrantCalls>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder that writes nothing by itself (tests call [`Recorder::flush`]).
    pub fn new(db: PgPool, clock: Clock) -> Self {
        Self {
            db,
            clock,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// A recorder whose writer runs under the supervisor: every [`FLUSH_EVERY`], and once
    /// more when shutdown is signalled (after the HTTP server has drained).
    pub fn start(db: PgPool, clock: Clock, background: &Background) -> Arc<Self> {
        let recorder = Arc::new(Self::new(db, clock));
        let writer = Arc::clone(&recorder);
        background.tasks.spawn("activity writer", move |shutdown| {
            Arc::clone(&writer).write_every_second(shutdown)
        });
        recorder
    }

    /// Records one call of `tool` (which needs `mcp:trade` when `trade`) made with `grant_id`.
    pub fn record(&self, grant_id: Uuid, tool: &'static str, trade: bool, outcome: Outcome) {
        let at = self.clock.now();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let grant = pending.entry(grant_id).or_default();
        grant.add(DayCount {
            day: at.date_naive(),
            tool,
            trade,
            calls: 1,
            errors: i64::from(outcome.is_error()),
        });
        grant.remember(Call {
            at,
            tool,
            trade,
            outcome,
        });
    }

    /// Writes everything recorded so far in one statement. On failure the calls are kept for
    /// the next write (unless [`MAX_PENDING_GRANTS`] would be exceeded).
    pub async fn flush(&self) -> Result<(), sqlx::Error> {
        let batch = std::mem::take(&mut *self.lock());
        if batch.is_empty() {
            return Ok(());
        }
        let written = write(&self.db, &batch).await;
        if written.is_err() {
            self.put_back(batch);
        }
        written
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, GrantCalls>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put_back(&self, batch: HashMap<Uuid, GrantCalls>) {
        let mut pending = self.lock();
        if pending.len() + batch.len() > MAX_PENDING_GRANTS {
            tracing::error!(
                grants = batch.len(),
                "tool call activity could not be written and is dropped"
            );
            return;
        }
        for (grant_id, older) in batch {
            pending.entry(grant_id).or_default().absorb_older(older);
        }
    }

    async fn write_every_second(self: Arc<Self>, mut shutdown: Shutdown) {
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(FLUSH_EVERY) => false,
                () = shutdown.requested() => true,
            };
            if let Err(err) = self.flush().await {
                tracing::warn!(error = %err, "writing tool call activity failed; retrying");
            }
            if stopping {
                return;
            }
        }
    }
}

/// Both tables in one statement. Calls of a grant deleted meanwhile are skipped.
async fn write(db: &PgPool, batch: &HashMap<Uuid, GrantCalls>) -> Result<(), sqlx::Error> {
    let mut days = DayColumns::default();
    let mut calls = CallColumns::default();
    for (&grant_id, grant) in batch {
        for count in &grant.counts {
            days.grant_id.push(grant_id);
            days.day.push(count.day);
            days.tool.push(count.tool);
            days.trade.push(count.trade);
            days.calls.push(count.calls);
            days.errors.push(count.errors);
        }
        for call in &grant.recent {
            calls.grant_id.push(grant_id);
            calls.at.push(call.at);
            calls.tool.push(call.tool);
            calls.trade.push(call.trade);
            calls.outcome.push(call.outcome.as_str());
        }
    }
    // The data-modifying CTE runs to completion whether or not its output is read. `as _`: the
    // macro expects `&[String]` for `text[]`; the `&str` slices encode the same.
    sqlx::query!(
        "WITH days AS (
             INSERT INTO grant_tool_days (grant_id, day, tool, trade, calls, errors)
             SELECT d.grant_id, d.day, d.tool, d.trade, d.calls, d.errors
             FROM UNNEST($1::uuid[], $2::date[], $3::text[], $4::boolean[], $5::bigint[],
                         $6::bigint[]) AS d (grant_id, day, tool, trade, calls, errors)
             WHERE EXISTS (SELECT 1 FROM grants g WHERE g.grant_id = d.grant_id)
             ON CONFLICT (grant_id, day, tool) DO UPDATE
             SET calls = grant_tool_days.calls + excluded.calls,
                 errors = grant_tool_days.errors + excluded.errors,
                 trade = excluded.trade
             RETURNING 1)
         INSERT INTO grant_tool_calls (grant_id, at, tool, trade, outcome)
         SELECT c.grant_id, c.at, c.tool, c.trade, c.outcome
         FROM UNNEST($7::uuid[], $8::timestamptz[], $9::text[], $10::boolean[], $11::text[])
             AS c (grant_id, at, tool, trade, outcome)
         WHERE EXISTS (SELECT 1 FROM grants g WHERE g.grant_id = c.grant_id)",
        &days.grant_id,
        &days.day,
        days.tool.as_slice() as _,
        &days.trade,
        &days.calls,
        &days.errors,
        &calls.grant_id,
        &calls.at,
        calls.tool.as_slice() as _,
        &calls.trade,
        calls.outcome.as_slice() as _,
    )
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Default)]
struct DayColumns {
    grant_id: Vec<Uuid>,
    day: Vec<NaiveDate>,
    tool: Vec<&'static str>,
    trade: Vec<bool>,
    calls: Vec<i64>,
    errors: Vec<i64>,
}

#[derive(Default)]
struct CallColumns {
    grant_id: Vec<Uuid>,
    at: Vec<DateTime<Utc>>,
    tool: Vec<&'static str>,
    trade: Vec<bool>,
    outcome: Vec<&'static str>,
}

/// The first day of the window that ends today (`now`'s UTC day).
pub fn first_day(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive() - TimeDelta::days(i64::from(DAYS) - 1)
}

/// One tool's calls on one day, with one grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRow {
    pub grant_id: Uuid,
    pub day: NaiveDate,
    pub tool: String,
    pub trade: bool,
    pub calls: i64,
    pub errors: i64,
}

/// The per-day counts of the user's live grants since `since`.
pub async fn days_of_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    since: NaiveDate,
) -> Result<Vec<DayRow>, sqlx::Error> {
    sqlx::query_as!(
        DayRow,
        "SELECT d.grant_id, d.day, d.tool, d.trade, d.calls, d.errors
         FROM grant_tool_days d JOIN grants g USING (grant_id)
         WHERE g.user_id = $1 AND g.revoked_at IS NULL AND d.day >= $2
         ORDER BY d.grant_id, d.day, d.tool",
        user_id,
        since,
    )
    .fetch_all(db)
    .await
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRow {
    pub grant_id: Uuid,
    pub at: DateTime<Utc>,
    pub tool: String,
    pub trade: bool,
    pub outcome: Outcome,
}

/// The latest `per_grant` calls (since `since`) of each of the user's live grants, newest
/// first within a grant.
pub async fn recent_of_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    since: DateTime<Utc>,
    per_grant: i64,
) -> Result<Vec<CallRow>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT g.grant_id, c.at, c.tool, c.trade, c.outcome
         FROM grants g CROSS JOIN LATERAL (
             SELECT c.at, c.tool, c.trade, c.outcome, c.id FROM grant_tool_calls c
             WHERE c.grant_id = g.grant_id AND c.at >= $2
             ORDER BY c.at DESC, c.id DESC LIMIT $3) c
         WHERE g.user_id = $1 AND g.revoked_at IS NULL
         ORDER BY g.grant_id, c.at DESC, c.id DESC",
        user_id,
        since,
        per_grant,
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| {
            let outcome = Outcome::parse(&row.outcome).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown outcome {:?}", row.outcome).into())
            })?;
            Ok(CallRow {
                grant_id: row.grant_id,
                at: row.at,
                tool: row.tool,
                trade: row.trade,
                outcome,
            })
        })
        .collect()
}

/// What [`prune`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub days: u64,
    pub calls: u64,
}

/// Deletes the days before the window and the calls older than [`DAYS`] days or beyond the
/// latest [`RECENT_PER_GRANT`] of their grant.
pub async fn prune(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<Pruned, sqlx::Error> {
    let keep = i64::try_from(RECENT_PER_GRANT).unwrap_or(i64::MAX);
    let row = sqlx::query!(
        r#"WITH days AS (
               DELETE FROM grant_tool_days WHERE day < $1 RETURNING 1),
           calls AS (
               DELETE FROM grant_tool_calls
               WHERE at < $2
                  OR id IN (SELECT id FROM (
                         SELECT id, row_number() OVER (
                             PARTITION BY grant_id ORDER BY at DESC, id DESC) AS n
                         FROM grant_tool_calls) ranked
                     WHERE ranked.n > $3)
               RETURNING 1)
           SELECT (SELECT count(*) FROM days) AS "days!",
                  (SELECT count(*) FROM calls) AS "calls!""#,
        first_day(now),
        now - TimeDelta::days(i64::from(DAYS)),
        keep,
    )
    .fetch_one(db)
    .await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(Pruned {
        days: count(row.days),
        calls: count(row.calls),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
    }

    fn call(second: i64, tool: &'static str) -> Call {
        Call {
            at: DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap(),
            tool,
            trade: false,
            outcome: Outcome::Ok,
        }
    }

    #[test]
    fn outcome_codes_round_trip_and_errors_are_what_did_not_succeed() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Outcome::parse("nope"), None);
        let errors: Vec<_> = Outcome::ALL.into_iter().filter(|o| o.is_error()).collect();
        assert_eq!(
            errors,
            [
                Outcome::ToolError,
                Outcome::Refused,
                Outcome::AddonUnavailable,
                Outcome::Failed
            ]
        );
    }

    #[test]
    fn counts_add_up_per_day_and_tool() {
        let mut grant = GrantCalls::default();
        for (d, tool, errors) in [(1, "A", 0), (1, "A", 1), (1, "B", 0), (2, "A", 0)] {
            grant.add(DayCount {
                day: day(d),
                tool,
                trade: false,
                calls: 1,
                errors,
            });
        }
        let seen: Vec<_> = grant
            .counts
            .iter()
            .map(|c| (c.day, c.tool, c.calls, c.errors))
            .collect();
        assert_eq!(
            seen,
            [
                (day(1), "A", 2, 1),
                (day(1), "B", 1, 0),
                (day(2), "A", 1, 0)
            ]
        );
    }

    #[test]
    fn only_the_latest_calls_are_kept_and_a_failed_batch_goes_before_newer_calls() {
        let mut older = GrantCalls::default();
        for second in 0..30 {
            older.remember(call(second, "Old"));
        }
        assert_eq!(older.recent.len(), RECENT_PER_GRANT);
        assert_eq!(older.recent[0].at, call(10, "Old").at);
        let mut newer = GrantCalls::default();
        for second in 100..105 {
            newer.remember(call(second, "New"));
        }
        newer.absorb_older(older);
        assert_eq!(newer.recent.len(), RECENT_PER_GRANT);
        // The 15 newest of the old ones, then the 5 new ones, oldest first.
        assert_eq!(newer.recent[0].at, call(15, "Old").at);
        assert_eq!(newer.recent[14].tool, "Old");
        assert_eq!(newer.recent[15].tool, "New");
        assert_eq!(newer.recent[19].at, call(104, "New").at);
    }

    #[test]
    fn the_window_is_seven_days_ending_today() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T23:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(first_day(now), day(1));
    }
}
