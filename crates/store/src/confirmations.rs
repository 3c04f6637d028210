//! Orders a person confirms: each account's policy, the confirmation rows (request, decision,
//! execution: the audit trail and the single-use ticket in one), and the elicitation
//! capabilities an MCP client declared for its grant.
//!
//! Every transition is one `UPDATE … WHERE state = … RETURNING`, so two replicas racing on a row
//! both read the outcome the database chose. Every statement that depends on the deadline
//! compares `expires_at` with `now()` itself, and reads report a `pending`/`approved` row past
//! its deadline as `expired`: correctness never waits for the reaper. A state change notifies
//! the `trade_confirmation` channel with the row's id (a trigger).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;
use vocabulary::confirm::{
    Channel, ConfirmationState, DecidedVia, Decision, Mode, Policy, Reason, canonical_json,
};

/// The notification channel a row's id is sent on when its state changes.
pub const CHANNEL: &str = "trade_confirmation";

/// SHA-256 of the tool's name, a NUL and the canonical JSON of its arguments: the same call
/// hashes the same whatever order its keys arrived in, and no tool/arguments split collides.
pub fn args_hash(tool: &str, arguments: &Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(tool.as_bytes());
    hasher.update([0]);
    hasher.update(canonical_json(arguments).as_bytes());
    hasher.finalize().into()
}

/// SHA-256 of a secret handed to the client (the 2026-07-28 `requestState`): only its hash is
/// stored, so the table alone cannot answer for the client.
pub fn state_hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Whether `secret` is the one whose hash was stored, compared in constant time.
pub fn state_matches(stored: Option<&[u8]>, secret: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    stored.is_some_and(|stored| bool::from(stored.ct_eq(&state_hash(secret))))
}

fn decode(err: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(err))
}

#[derive(Debug, thiserror::Error)]
#[error("unknown {what} {value:?} in trade_confirmations")]
struct UnknownName {
    what: &'static str,
    value: String,
}

fn parse<T>(
    what: &'static str,
    value: &str,
    parse_one: fn(&str) -> Option<T>,
) -> Result<T, sqlx::Error> {
    parse_one(value).ok_or_else(|| {
        decode(UnknownName {
            what,
            value: value.to_owned(),
        })
    })
}

fn parse_opt<T>(
    what: &'static str,
    value: Option<&str>,
    parse_one: fn(&str) -> Option<T>,
) -> Result<Option<T>, sqlx::Error> {
    value.map(|value| parse(what, value, parse_one)).transpose()
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Policy

/// The account's policy; `every` when it never chose one.
pub async fn policy(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Policy, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT mode, max_quantity, max_notional, confirm_cancels, page_only
         FROM trade_confirmation_policies WHERE user_id = $1",
        user_id,
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        return Ok(Policy::default());
    };
    let max_quantity = row
        .max_quantity
        .map(u32::try_from)
        .transpose()
        .map_err(decode)?;
    Policy::new(
        parse("mode", &row.mode, Mode::parse)?,
        max_quantity,
        row.max_notional,
        row.confirm_cancels,
        row.page_only,
    )
    .map_err(decode)
}

/// Stores the account's policy (replacing the previous one). A policy that does not validate
/// is refused before it reaches the database (whose CHECKs hold the same rules).
pub async fn set_policy(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    policy: &Policy,
) -> Result<(), sqlx::Error> {
    policy
        .validate()
        .map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    let max_quantity = policy
        .max_quantity
        .map(i32::try_from)
        .transpose()
        .map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    sqlx::query!(
        "INSERT INTO trade_confirmation_policies
             (user_id, mode, max_quantity, max_notional, confirm_cancels, page_only)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id) DO UPDATE SET
             mode = EXCLUDED.mode,
             max_quantity = EXCLUDED.max_quantity,
             max_notional = EXCLUDED.max_notional,
             confirm_cancels = EXCLUDED.confirm_cancels,
             page_only = EXCLUDED.page_only,
             updated_at = now()",
        user_id,
        policy.mode.as_str(),
        max_quantity,
        policy.max_notional,
        policy.confirm_cancels,
        policy.page_only,
    )
    .execute(db)
    .await
    .map(drop)
}

// ---------------------------------------------------------------------------------------------
// Confirmations

/// A call held for a person's decision.
#[derive(Debug, Clone)]
pub struct NewConfirmation {
    pub confirmation_id: Uuid,
    pub user_id: Uuid,
    pub grant_id: Uuid,
    pub client_id: String,
    pub tool: String,
    /// Exactly what is relayed once approved, `idempotency_key` included. Hashed with the tool
    /// by [`args_hash`] on insert.
    pub arguments: Value,
    pub idempotency_key: Option<String>,
    /// What the person is shown.
    pub preview: Value,
    pub reason: Reason,
    pub channel: Channel,
    /// The MCP revision the call came in with.
    pub revision: String,
    /// The JSON-RPC id of the `elicitation/create` request asking the person.
    pub elicitation_id: Option<String>,
    /// [`state_hash`] of the `requestState` secret handed to the client.
    pub state_hash: Option<[u8; 32]>,
    /// From now until the decision and the use must both have happened.
    pub ttl: Duration,
    /// Refused when the user already has this many open (pending or approved, unexpired) rows.
    pub max_open: u32,
}

/// A confirmation as the audit shows it. `state` is the effective one: a `pending` or
/// `approved` row past `expires_at` reads as `expired`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Confirmation {
    pub confirmation_id: Uuid,
    pub user_id: Uuid,
    pub grant_id: Uuid,
    pub client_id: String,
    pub tool: String,
    pub arguments: Value,
    #[serde(skip)]
    pub args_hash: Vec<u8>,
    pub idempotency_key: Option<String>,
    pub preview: Value,
    pub reason: Reason,
    pub channel: Channel,
    pub revision: String,
    #[serde(skip)]
    pub elicitation_id: Option<String>,
    /// [`state_hash`] of the `requestState` secret of a 2026-07-28 form.
    #[serde(skip)]
    pub state_hash: Option<Vec<u8>>,
    pub state: ConfirmationState,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_via: Option<DecidedVia>,
    pub decision: Option<Decision>,
    pub decided_ip: Option<String>,
    pub used_at: Option<DateTime<Utc>>,
    pub outcome_code: Option<String>,
    pub outcome: Option<Value>,
    pub finished_at: Option<DateTime<Utc>>,
}

struct Row {
    confirmation_id: Uuid,
    user_id: Uuid,
    grant_id: Uuid,
    client_id: String,
    tool: String,
    arguments: Value,
    args_hash: Vec<u8>,
    idempotency_key: Option<String>,
    preview: Value,
    reason: String,
    channel: String,
    revision: String,
    elicitation_id: Option<String>,
    state_hash: Option<Vec<u8>>,
    state: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    decided_via: Option<String>,
    decision: Option<String>,
    decided_ip: Option<String>,
    used_at: Option<DateTime<Utc>>,
    outcome_code: Option<String>,
    outcome: Option<Value>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<Row> for Confirmation {
    type Error = sqlx::Error;

    fn try_from(row: Row) -> Result<Self, Self::Error> {
        Ok(Confirmation {
            confirmation_id: row.confirmation_id,
            user_id: row.user_id,
            grant_id: row.grant_id,
            client_id: row.client_id,
            tool: row.tool,
            arguments: row.arguments,
            args_hash: row.args_hash,
            idempotency_key: row.idempotency_key,
            preview: row.preview,
            reason: parse("reason", &row.reason, Reason::parse)?,
            channel: parse("channel", &row.channel, Channel::parse)?,
            revision: row.revision,
            elicitation_id: row.elicitation_id,
            state_hash: row.state_hash,
            state: parse("state", &row.state, ConfirmationState::parse)?,
            created_at: row.created_at,
            expires_at: row.expires_at,
            decided_at: row.decided_at,
            decided_via: parse_opt("decided_via", row.decided_via.as_deref(), DecidedVia::parse)?,
            decision: parse_opt("decision", row.decision.as_deref(), Decision::parse)?,
            decided_ip: row.decided_ip,
            used_at: row.used_at,
            outcome_code: row.outcome_code,
            outcome: row.outcome,
            finished_at: row.finished_at,
        })
    }
}

/// What a successful claim hands the executor: the call exactly as the person saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub confirmation_id: Uuid,
    pub tool: String,
    pub arguments: Value,
    pub idempotency_key: Option<String>,
    pub channel: Channel,
}

struct ClaimedRow {
    confirmation_id: Uuid,
    tool: String,
    arguments: Value,
    idempotency_key: Option<String>,
    channel: String,
}

impl TryFrom<ClaimedRow> for Claimed {
    type Error = sqlx::Error;

    fn try_from(row: ClaimedRow) -> Result<Self, Self::Error> {
        Ok(Claimed {
            confirmation_id: row.confirmation_id,
            tool: row.tool,
            arguments: row.arguments,
            idempotency_key: row.idempotency_key,
            channel: parse("channel", &row.channel, Channel::parse)?,
        })
    }
}

/// The answer to a 2026-07-28 retry: accepted (and claimed in the same statement) or declined.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    Claimed(Claimed),
    Rejected,
}

/// Records a held call, unless the user already has `max_open` open rows (then `None`). The
/// count and the insert are one statement; two inserts racing at the cap may both pass it, so
/// the cap bounds spam, not an exact number.
pub async fn insert(
    db: impl PgExecutor<'_>,
    new: &NewConfirmation,
) -> Result<Option<Confirmation>, sqlx::Error> {
    let hash = args_hash(&new.tool, &new.arguments);
    let row = sqlx::query_as!(
        Row,
        r#"INSERT INTO trade_confirmations
               (confirmation_id, user_id, grant_id, client_id, tool, arguments, args_hash,
                idempotency_key, preview, reason, channel, revision, elicitation_id, state_hash,
                expires_at)
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                  now() + $15::bigint * interval '1 millisecond'
           WHERE (SELECT count(*) FROM trade_confirmations
                  WHERE user_id = $2 AND state IN ('pending', 'approved')
                    AND expires_at > now()) < $16::bigint
           RETURNING confirmation_id, user_id, grant_id, client_id, tool, arguments, args_hash,
               idempotency_key, preview, reason, channel, revision, elicitation_id, state_hash,
               CASE WHEN state IN ('pending', 'approved') AND expires_at <= now()
                    THEN 'expired' ELSE state END AS "state!",
               created_at, expires_at, decided_at, decided_via, decision, decided_ip, used_at,
               outcome_code, outcome, finished_at"#,
        new.confirmation_id,
        new.user_id,
        new.grant_id,
        new.client_id,
        new.tool,
        new.arguments,
        &hash[..],
        new.idempotency_key,
        new.preview,
        new.reason.as_str(),
        new.channel.as_str(),
        new.revision,
        new.elicitation_id,
        new.state_hash.as_ref().map(|hash| &hash[..]),
        millis(new.ttl),
        i64::from(new.max_open),
    )
    .fetch_optional(db)
    .await?;
    row.map(Confirmation::try_from).transpose()
}

/// The user's confirmation for an idempotency key: a used one within 24 hours first (its
/// outcome is replayed, never sent again), else the newest open one.
pub async fn open_by_key(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    idempotency_key: &str,
) -> Result<Option<Confirmation>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT confirmation_id, user_id, grant_id, client_id, tool, arguments, args_hash,
               idempotency_key, preview, reason, channel, revision, elicitation_id, state_hash,
               CASE WHEN state IN ('pending', 'approved') AND expires_at <= now()
                    THEN 'expired' ELSE state END AS "state!",
               created_at, expires_at, decided_at, decided_via, decision, decided_ip, used_at,
               outcome_code, outcome, finished_at
           FROM trade_confirmations
           WHERE user_id = $1 AND idempotency_key = $2
             AND ((state IN ('pending', 'approved') AND expires_at > now())
                  OR (state = 'used' AND used_at > now() - interval '24 hours'))
           ORDER BY state = 'used' DESC, created_at DESC
           LIMIT 1"#,
        user_id,
        idempotency_key,
    )
    .fetch_optional(db)
    .await?;
    row.map(Confirmation::try_from).transpose()
}

/// One of the user's confirmations; another user's id reads as absent.
pub async fn find(
    db: impl PgExecutor<'_>,
    confirmation_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Confirmation>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT confirmation_id, user_id, grant_id, client_id, tool, arguments, args_hash,
               idempotency_key, preview, reason, channel, revision, elicitation_id, state_hash,
               CASE WHEN state IN ('pending', 'approved') AND expires_at <= now()
                    THEN 'expired' ELSE state END AS "state!",
               created_at, expires_at, decided_at, decided_via, decision, decided_ip, used_at,
               outcome_code, outcome, finished_at
           FROM trade_confirmations
           WHERE confirmation_id = $1 AND user_id = $2"#,
        confirmation_id,
        user_id,
    )
    .fetch_optional(db)
    .await?;
    row.map(Confirmation::try_from).transpose()
}

/// The user's confirmation asked with this `elicitation/create` id.
pub async fn find_by_elicitation(
    db: impl PgExecutor<'_>,
    elicitation_id: &str,
    user_id: Uuid,
) -> Result<Option<Confirmation>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT confirmation_id, user_id, grant_id, client_id, tool, arguments, args_hash,
               idempotency_key, preview, reason, channel, revision, elicitation_id, state_hash,
               CASE WHEN state IN ('pending', 'approved') AND expires_at <= now()
                    THEN 'expired' ELSE state END AS "state!",
               created_at, expires_at, decided_at, decided_via, decision, decided_ip, used_at,
               outcome_code, outcome, finished_at
           FROM trade_confirmations
           WHERE elicitation_id = $1 AND user_id = $2"#,
        elicitation_id,
        user_id,
    )
    .fetch_optional(db)
    .await?;
    row.map(Confirmation::try_from).transpose()
}

/// A client that answered our form with an error cannot show it after all: the pending
/// confirmation is decided on the CrossTrade page instead (`elicitation_form` → `link`).
/// `false` when the row is not this grant's pending form.
pub async fn fall_back_to_link(
    db: impl PgExecutor<'_>,
    elicitation_id: &str,
    user_id: Uuid,
    grant_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query!(
        "UPDATE trade_confirmations SET channel = 'link'
         WHERE elicitation_id = $1 AND user_id = $2 AND grant_id = $3
           AND state = 'pending' AND expires_at > now() AND channel = 'elicitation_form'",
        elicitation_id,
        user_id,
        grant_id,
    )
    .execute(db)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// The client's answer to an `elicitation/create` (2025-06-18, 2025-11-25), from the grant the
/// request was sent to: pending → approved when `accept`, else rejected; `decision` is what the
/// client answered. A URL-mode elicitation is only a way to open the page, so its answer can
/// reject but never approve. `None` when the row is not pending, expired, or not this grant's.
pub async fn answer_elicitation(
    db: impl PgExecutor<'_>,
    elicitation_id: &str,
    user_id: Uuid,
    grant_id: Uuid,
    accept: bool,
    decision: Decision,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "UPDATE trade_confirmations
         SET state = CASE WHEN $4 THEN 'approved' ELSE 'rejected' END,
             decided_at = now(), decided_via = 'elicitation', decision = $5
         WHERE elicitation_id = $1 AND user_id = $2 AND grant_id = $3
           AND state = 'pending' AND expires_at > now()
           AND (channel = 'elicitation_form' OR (channel = 'elicitation_url' AND NOT $4))
         RETURNING confirmation_id",
        elicitation_id,
        user_id,
        grant_id,
        accept,
        decision.as_str(),
    )
    .fetch_optional(db)
    .await
}

/// The person's decision on the CrossTrade page: pending → approved or rejected, only for a
/// row that asks through the page (`link`, `elicitation_url`). The new state, or `None` when
/// the row is not the user's, not pending, expired, or answered inside the AI client.
pub async fn decide_on_page(
    db: impl PgExecutor<'_>,
    confirmation_id: Uuid,
    user_id: Uuid,
    approve: bool,
    ip: Option<&str>,
) -> Result<Option<ConfirmationState>, sqlx::Error> {
    let state = sqlx::query_scalar!(
        "UPDATE trade_confirmations
         SET state = CASE WHEN $3 THEN 'approved' ELSE 'rejected' END,
             decision = CASE WHEN $3 THEN 'approve' ELSE 'reject' END,
             decided_at = now(), decided_via = 'page', decided_ip = $4
         WHERE confirmation_id = $1 AND user_id = $2
           AND state = 'pending' AND expires_at > now()
           AND channel IN ('link', 'elicitation_url')
         RETURNING state",
        confirmation_id,
        user_id,
        approve,
        ip,
    )
    .fetch_optional(db)
    .await?;
    state
        .map(|state| parse("state", &state, ConfirmationState::parse))
        .transpose()
}

/// Takes an approved confirmation for execution, once: approved → used. `None` when it is not
/// approved (pending, rejected, already used, expired) or belongs to another user or grant.
pub async fn claim(
    db: impl PgExecutor<'_>,
    confirmation_id: Uuid,
    user_id: Uuid,
    grant_id: Uuid,
) -> Result<Option<Claimed>, sqlx::Error> {
    let row = sqlx::query_as!(
        ClaimedRow,
        "UPDATE trade_confirmations SET state = 'used', used_at = now()
         WHERE confirmation_id = $1 AND user_id = $2 AND grant_id = $3
           AND state = 'approved' AND expires_at > now()
         RETURNING confirmation_id, tool, arguments, idempotency_key, channel",
        confirmation_id,
        user_id,
        grant_id,
    )
    .fetch_optional(db)
    .await?;
    row.map(Claimed::try_from).transpose()
}

/// A 2026-07-28 retry carrying the person's answer and the `requestState` secret: pending →
/// used (accepted, claimed in the same statement) or → rejected. Only the grant that was asked,
/// presenting the secret's hash and the same call's hash, gets an answer; a URL-mode answer
/// can only reject (the page decides). `None` otherwise, and for any replay.
#[expect(clippy::too_many_arguments, reason = "one statement's parameters")]
pub async fn claim_answered(
    db: impl PgExecutor<'_>,
    confirmation_id: Uuid,
    user_id: Uuid,
    grant_id: Uuid,
    state_hash: &[u8; 32],
    args_hash: &[u8; 32],
    accept: bool,
    decision: Decision,
) -> Result<Option<Answered>, sqlx::Error> {
    let row = sqlx::query!(
        "UPDATE trade_confirmations
         SET state = CASE WHEN $6 THEN 'used' ELSE 'rejected' END,
             used_at = CASE WHEN $6 THEN now() END,
             decided_at = now(), decided_via = 'elicitation', decision = $7
         WHERE confirmation_id = $1 AND user_id = $2 AND grant_id = $3
           AND state_hash = $4 AND args_hash = $5
           AND state = 'pending' AND expires_at > now()
           AND (channel = 'elicitation_form' OR (channel = 'elicitation_url' AND NOT $6))
         RETURNING confirmation_id, state, tool, arguments, idempotency_key, channel",
        confirmation_id,
        user_id,
        grant_id,
        &state_hash[..],
        &args_hash[..],
        accept,
        decision.as_str(),
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if row.state != ConfirmationState::Used.as_str() {
        return Ok(Some(Answered::Rejected));
    }
    Ok(Some(Answered::Claimed(Claimed::try_from(ClaimedRow {
        confirmation_id: row.confirmation_id,
        tool: row.tool,
        arguments: row.arguments,
        idempotency_key: row.idempotency_key,
        channel: row.channel,
    })?)))
}

/// Gives a claim back when the call provably never left (the Add-On was not connected): used →
/// approved, only while no outcome is recorded. A later claim may then run it before expiry.
pub async fn release(db: impl PgExecutor<'_>, confirmation_id: Uuid) -> Result<bool, sqlx::Error> {
    let released = sqlx::query!(
        "UPDATE trade_confirmations SET state = 'approved', used_at = NULL
         WHERE confirmation_id = $1 AND state = 'used' AND outcome IS NULL",
        confirmation_id,
    )
    .execute(db)
    .await?;
    Ok(released.rows_affected() == 1)
}

/// Records what the Add-On answered to the claimed call, once (`code` is
/// `vocabulary::addon::outcome_code`; `outcome` is replayed to a reused id or key).
pub async fn finish(
    db: impl PgExecutor<'_>,
    confirmation_id: Uuid,
    code: &str,
    outcome: &Value,
) -> Result<bool, sqlx::Error> {
    let finished = sqlx::query!(
        "UPDATE trade_confirmations
         SET outcome_code = $2, outcome = $3, finished_at = now()
         WHERE confirmation_id = $1 AND state = 'used' AND outcome IS NULL",
        confirmation_id,
        code,
        outcome,
    )
    .execute(db)
    .await?;
    Ok(finished.rows_affected() == 1)
}

/// The client that was asked went away before answering: pending → abandoned, so a late
/// answer finds nothing to approve.
pub async fn abandon(db: impl PgExecutor<'_>, confirmation_id: Uuid) -> Result<bool, sqlx::Error> {
    let abandoned = sqlx::query!(
        "UPDATE trade_confirmations
         SET state = 'abandoned', decided_at = now(), decided_via = 'client_gone'
         WHERE confirmation_id = $1 AND state = 'pending'",
        confirmation_id,
    )
    .execute(db)
    .await?;
    Ok(abandoned.rows_affected() == 1)
}

/// Which confirmations [`list`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only rows in this effective state (`pending` excludes expired rows).
    pub state: Option<ConfirmationState>,
    /// Only rows of this grant.
    pub grant_id: Option<Uuid>,
}

/// The user's confirmations, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    filter: ListFilter,
    limit: u32,
) -> Result<Vec<Confirmation>, sqlx::Error> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT confirmation_id, user_id, grant_id, client_id, tool, arguments, args_hash,
               idempotency_key, preview, reason, channel, revision, elicitation_id, state_hash,
               CASE WHEN state IN ('pending', 'approved') AND expires_at <= now()
                    THEN 'expired' ELSE state END AS "state!",
               created_at, expires_at, decided_at, decided_via, decision, decided_ip, used_at,
               outcome_code, outcome, finished_at
           FROM trade_confirmations
           WHERE user_id = $1
             AND ($2::text IS NULL OR $2 = CASE
                      WHEN state IN ('pending', 'approved') AND expires_at <= now()
                      THEN 'expired' ELSE state END)
             AND ($3::uuid IS NULL OR grant_id = $3)
           ORDER BY created_at DESC, confirmation_id DESC
           LIMIT $4"#,
        user_id,
        filter.state.map(ConfirmationState::as_str),
        filter.grant_id,
        i64::from(limit),
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Confirmation::try_from).collect()
}

/// What one [`expire_and_purge`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Open rows past their deadline, now `expired`.
    pub expired: u64,
    /// Closed confirmations older than 90 days, deleted.
    pub confirmations: u64,
    /// Client capabilities untouched for 30 days, deleted.
    pub capabilities: u64,
}

/// The reaper's pass: writes `expired` on open rows past their deadline (waiters are notified),
/// deletes closed confirmations older than 90 days and capabilities untouched for 30 days. An
/// open row is never deleted in the pass that expires it.
pub async fn expire_and_purge(db: impl PgExecutor<'_>) -> Result<Purged, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH expired AS (
               UPDATE trade_confirmations
               SET state = 'expired',
                   decided_at = COALESCE(decided_at, now()),
                   decided_via = COALESCE(decided_via, 'expiry')
               WHERE state IN ('pending', 'approved') AND expires_at <= now()
               RETURNING 1),
           purged AS (
               DELETE FROM trade_confirmations
               WHERE created_at < now() - interval '90 days'
                 AND state NOT IN ('pending', 'approved')
               RETURNING 1),
           forgotten AS (
               DELETE FROM mcp_client_capabilities
               WHERE updated_at < now() - interval '30 days'
               RETURNING 1)
           SELECT (SELECT count(*) FROM expired) AS "expired!",
                  (SELECT count(*) FROM purged) AS "purged!",
                  (SELECT count(*) FROM forgotten) AS "forgotten!""#
    )
    .fetch_one(db)
    .await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(Purged {
        expired: count(row.expired),
        confirmations: count(row.purged),
        capabilities: count(row.forgotten),
    })
}

// ---------------------------------------------------------------------------------------------
// Client capabilities

/// What a grant's client declared in its last `initialize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCapabilities {
    pub revision: String,
    pub elicitation_form: bool,
    pub elicitation_url: bool,
}

/// Remembers what the grant's client declared; the last `initialize` wins. A row of another
/// user under the same grant id is left alone.
pub async fn record_capabilities(
    db: impl PgExecutor<'_>,
    grant_id: Uuid,
    user_id: Uuid,
    revision: &str,
    elicitation_form: bool,
    elicitation_url: bool,
    client_info: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO mcp_client_capabilities
             (grant_id, user_id, revision, elicitation_form, elicitation_url, client_info)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (grant_id) DO UPDATE SET
             revision = EXCLUDED.revision,
             elicitation_form = EXCLUDED.elicitation_form,
             elicitation_url = EXCLUDED.elicitation_url,
             client_info = EXCLUDED.client_info,
             updated_at = now()
         WHERE mcp_client_capabilities.user_id = EXCLUDED.user_id",
        grant_id,
        user_id,
        revision,
        elicitation_form,
        elicitation_url,
        client_info,
    )
    .execute(db)
    .await
    .map(drop)
}

/// What the grant's client last declared, if it ever initialized.
pub async fn capabilities(
    db: impl PgExecutor<'_>,
    grant_id: Uuid,
) -> Result<Option<ClientCapabilities>, sqlx::Error> {
    sqlx::query_as!(
        ClientCapabilities,
        "SELECT revision, elicitation_form, elicitation_url
         FROM mcp_client_capabilities WHERE grant_id = $1",
        grant_id,
    )
    .fetch_optional(db)
    .await
}
