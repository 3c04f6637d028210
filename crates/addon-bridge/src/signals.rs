//! Webhook signals and trade-copier actions the Add-On reports (events `webhook_signal` and
//! `copier_action`): their wire form, their storage in `addon_webhook_signals` and
//! `addon_copier_actions` (one row per Add-On id, so a resent event stores nothing twice) and
//! the paged reads behind GetWebhookHistory and GetCopierActivity.
//!
//! Webhook secrets never reach the database: the Add-On sends a redacted one-line summary, and
//! the server drops secret-looking values from it (and from reasons) again before storing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgExecutor;
use sqlx::types::Json;
use uuid::Uuid;

use crate::CallOutcome;
use vocabulary::SignalFilter;

/// Longest id the Add-On may give a signal or a copier action.
const MAX_ID_CHARS: usize = 200;
/// Longest payload summary or reason stored, in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// Rows older than this are purged.
pub(crate) const RETENTION_DAYS: i32 = 90;

/// What the Add-On did with a webhook signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WebhookOutcome {
    OrderPlaced,
    Rejected,
    Ignored,
    Error,
}

impl WebhookOutcome {
    fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::OrderPlaced => "order_placed",
            WebhookOutcome::Rejected => "rejected",
            WebhookOutcome::Ignored => "ignored",
            WebhookOutcome::Error => "error",
        }
    }
}

/// What the copier did for one follower of one leader fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CopierOutcome {
    OrderPlaced,
    Skipped,
    Rejected,
    Error,
}

impl CopierOutcome {
    fn as_str(self) -> &'static str {
        match self {
            CopierOutcome::OrderPlaced => "order_placed",
            CopierOutcome::Skipped => "skipped",
            CopierOutcome::Rejected => "rejected",
            CopierOutcome::Error => "error",
        }
    }
}

/// A webhook signal the Add-On received (`event` of kind `webhook_signal`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookSignal {
    pub signal_id: String,
    pub received_at: DateTime<Utc>,
    pub source: Option<String>,
    pub strategy: Option<String>,
    pub alert: Option<String>,
    pub account: Option<String>,
    pub instrument: Option<String>,
    pub action: Option<String>,
    pub quantity: Option<f64>,
    pub order_type: Option<String>,
    pub payload_summary: Option<String>,
    pub outcome: WebhookOutcome,
    pub order_ids: Option<Vec<String>>,
    pub reason: Option<String>,
    pub latency_ms: Option<i64>,
}

/// One leader fill copied (or not) to one follower (`event` of kind `copier_action`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CopierAction {
    pub action_id: String,
    pub time: DateTime<Utc>,
    pub copier: Option<String>,
    pub leader_account: String,
    pub leader_execution_id: Option<String>,
    pub leader_order_id: Option<String>,
    pub instrument: Option<String>,
    pub leader_action: Option<String>,
    pub leader_quantity: Option<f64>,
    pub leader_price: Option<f64>,
    pub follower_account: String,
    pub follower_instrument: Option<String>,
    pub ratio: Option<f64>,
    pub outcome: CopierOutcome,
    pub follower_order_id: Option<String>,
    pub follower_quantity: Option<f64>,
    pub reason: Option<String>,
}

fn check_id(name: &str, id: &str) -> Result<(), String> {
    if id.trim().is_empty() || id.chars().count() > MAX_ID_CHARS {
        return Err(format!("{name} must be 1 to {MAX_ID_CHARS} characters"));
    }
    Ok(())
}

fn check_reason(placed: bool, reason: Option<&str>) -> Result<(), String> {
    if !placed && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err("reason is required unless the outcome is order_placed".to_owned());
    }
    Ok(())
}

impl WebhookSignal {
    /// Decodes `data`; `Err` says why the event is invalid.
    pub(crate) fn decode(data: serde_json::Value) -> Result<Self, String> {
        let signal: Self = serde_json::from_value(data).map_err(|err| err.to_string())?;
        check_id("signal_id", &signal.signal_id)?;
        check_reason(
            signal.outcome == WebhookOutcome::OrderPlaced,
            signal.reason.as_deref(),
        )?;
        Ok(signal)
    }
}

impl CopierAction {
    /// Decodes `data`; `Err` says why the event is invalid.
    pub(crate) fn decode(data: serde_json::Value) -> Result<Self, String> {
        let action: Self = serde_json::from_value(data).map_err(|err| err.to_string())?;
        check_id("action_id", &action.action_id)?;
        check_reason(
            action.outcome == CopierOutcome::OrderPlaced,
            action.reason.as_deref(),
        )?;
        Ok(action)
    }
}

/// Names whose values are never stored (`api_key=…`, `"secret": "…"`, `token:…`), matched
/// case-insensitively at the end of the name.
const SECRET_NAMES: [&str; 4] = ["key", "secret", "token", "password"];

/// `text` with secret-looking values replaced by `[redacted]`, then cut to
/// [`MAX_TEXT_CHARS`] characters (on a character boundary, with "…" when cut).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['=', ':']) {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        out.push_str(&after[..1]);
        let after = &after[1..];
        let name: String = before
            .trim_end_matches(['"', '\'', ' '])
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
            .to_ascii_lowercase();
        if SECRET_NAMES.iter().any(|secret| name.ends_with(secret)) {
            let value_start = after.len() - after.trim_start_matches([' ', '"', '\'']).len();
            out.push_str(&after[..value_start]);
            let value = &after[value_start..];
            let end = value
                .find(|c: char| c.is_whitespace() || "&,;\"'}]".contains(c))
                .unwrap_or(value.len());
            if end > 0 {
                out.push_str("[redacted]");
            }
            rest = &value[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    match out.char_indices().nth(MAX_TEXT_CHARS) {
        Some((cut, _)) => {
            let mut short = out[..cut].to_owned();
            short.pop();
            short.push('…');
            short
        }
        None => out,
    }
}

// ---- storage -------------------------------------------------------------------------------

/// Stores a signal once per (user, `signal_id`); a repeat stores nothing.
pub(crate) async fn store_webhook_signal(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    s: &WebhookSignal,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO addon_webhook_signals (user_id, signal_id, received_at, source, strategy,
           alert, account, instrument, action, quantity, order_type, payload_summary, outcome,
           reason, order_ids, latency_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT (user_id, signal_id) DO NOTHING",
        user_id,
        s.signal_id,
        s.received_at,
        s.source,
        s.strategy,
        s.alert,
        s.account,
        s.instrument,
        s.action,
        s.quantity,
        s.order_type,
        s.payload_summary.as_deref().map(redact),
        s.outcome.as_str(),
        s.reason.as_deref().map(redact),
        Json(s.order_ids.clone().unwrap_or_default()) as _,
        s.latency_ms,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores a copier action once per (user, `action_id`); a repeat stores nothing.
pub(crate) async fn store_copier_action(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    a: &CopierAction,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO addon_copier_actions (user_id, action_id, occurred_at, copier,
           leader_account, leader_execution_id, leader_order_id, instrument, leader_action,
           leader_quantity, leader_price, follower_account, follower_instrument, ratio,
           follower_quantity, follower_order_id, outcome, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
           $18)
         ON CONFLICT (user_id, action_id) DO NOTHING",
        user_id,
        a.action_id,
        a.time,
        a.copier,
        a.leader_account,
        a.leader_execution_id,
        a.leader_order_id,
        a.instrument,
        a.leader_action,
        a.leader_quantity,
        a.leader_price,
        a.follower_account,
        a.follower_instrument,
        a.ratio,
        a.follower_quantity,
        a.follower_order_id,
        a.outcome.as_str(),
        a.reason.as_deref().map(redact),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes signals and copier actions older than the retention.
pub(crate) async fn purge_old(db: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM addon_webhook_signals WHERE received_at < now() - make_interval(days => $1)",
        RETENTION_DAYS,
    )
    .execute(db)
    .await?;
    sqlx::query!(
        "DELETE FROM addon_copier_actions WHERE occurred_at < now() - make_interval(days => $1)",
        RETENTION_DAYS,
    )
    .execute(db)
    .await?;
    Ok(())
}

// ---- paged reads ---------------------------------------------------------------------------

/// Where the next page starts: the last entry's time and id, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    t: DateTime<Utc>,
    id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(json!(self).to_string())
    }

    fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

const BAD_CURSOR: &str = "cursor is not one this tool returned (pass back next_cursor \
     unchanged, or leave cursor out to start from the newest)";

/// A webhook signal as GetWebhookHistory returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookSignalEntry {
    pub signal_id: String,
    pub received_at: DateTime<Utc>,
    pub source: Option<String>,
    pub strategy: Option<String>,
    pub alert: Option<String>,
    pub account: Option<String>,
    pub instrument: Option<String>,
    pub action: Option<String>,
    pub quantity: Option<f64>,
    pub order_type: Option<String>,
    pub payload_summary: Option<String>,
    pub outcome: String,
    pub order_ids: Vec<String>,
    pub reason: Option<String>,
    pub latency_ms: Option<i64>,
}

/// A copier action as GetCopierActivity returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopierActionEntry {
    pub action_id: String,
    pub time: DateTime<Utc>,
    pub copier: Option<String>,
    pub leader_account: String,
    pub leader_execution_id: Option<String>,
    pub leader_order_id: Option<String>,
    pub instrument: Option<String>,
    pub leader_action: Option<String>,
    pub leader_quantity: Option<f64>,
    pub leader_price: Option<f64>,
    pub follower_account: String,
    pub follower_instrument: Option<String>,
    pub ratio: Option<f64>,
    pub outcome: String,
    pub follower_order_id: Option<String>,
    pub follower_quantity: Option<f64>,
    pub reason: Option<String>,
}

/// One page, newest first, and the cursor of the next one (`None` on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub entries: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Splits the one extra row read past the page into the next cursor.
fn page<T>(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| key(last).encode())
    } else {
        None
    };
    Page {
        entries: rows,
        next_cursor,
    }
}

/// The filter's cursor, decoded: `Err` is the tool error for one this server did not issue.
fn cursor_of(filter: &SignalFilter) -> Result<(Option<DateTime<Utc>>, Option<String>), String> {
    match filter.cursor.as_deref() {
        None => Ok((None, None)),
        Some(text) => Cursor::decode(text)
            .map(|c| (Some(c.t), Some(c.id)))
            .ok_or_else(|| BAD_CURSOR.to_owned()),
    }
}

/// One page of the user's webhook signals; `Ok(Err)` is a cursor this server did not issue.
pub async fn webhook_signals(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    filter: &SignalFilter,
) -> Result<Result<Page<WebhookSignalEntry>, String>, sqlx::Error> {
    let (after_t, after_id) = match cursor_of(filter) {
        Ok(cursor) => cursor,
        Err(message) => return Ok(Err(message)),
    };
    let rows = sqlx::query!(
        r#"SELECT signal_id, received_at, source, strategy, alert, account, instrument, action,
             quantity, order_type, payload_summary, outcome, reason,
             order_ids AS "order_ids: Json<Vec<String>>", latency_ms
           FROM addon_webhook_signals
           WHERE user_id = $1
             AND ($2::text IS NULL OR account = $2)
             AND ($3::text IS NULL OR outcome = $3)
             AND ($4::timestamptz IS NULL OR received_at >= $4)
             AND ($5::timestamptz IS NULL OR received_at <= $5)
             AND ($6::timestamptz IS NULL OR (received_at, signal_id) < ($6, $7::text))
           ORDER BY received_at DESC, signal_id DESC
           LIMIT $8"#,
        user_id,
        filter.account,
        filter.outcome,
        filter.since,
        filter.until,
        after_t,
        after_id,
        i64::from(filter.limit) + 1,
    )
    .fetch_all(db)
    .await?;
    let entries = rows
        .into_iter()
        .map(|r| WebhookSignalEntry {
            signal_id: r.signal_id,
            received_at: r.received_at,
            source: r.source,
            strategy: r.strategy,
            alert: r.alert,
            account: r.account,
            instrument: r.instrument,
            action: r.action,
            quantity: r.quantity,
            order_type: r.order_type,
            payload_summary: r.payload_summary,
            outcome: r.outcome,
            order_ids: r.order_ids.0,
            reason: r.reason,
            latency_ms: r.latency_ms,
        })
        .collect();
    Ok(Ok(page(entries, filter.limit, |e| Cursor {
        t: e.received_at,
        id: e.signal_id.clone(),
    })))
}

/// One page of the user's copier actions (`account` as leader or follower); `Ok(Err)` is a
/// cursor this server did not issue.
pub async fn copier_actions(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    filter: &SignalFilter,
) -> Result<Result<Page<CopierActionEntry>, String>, sqlx::Error> {
    let (after_t, after_id) = match cursor_of(filter) {
        Ok(cursor) => cursor,
        Err(message) => return Ok(Err(message)),
    };
    sqlx::query_as!(
        CopierActionEntry,
        r#"SELECT action_id, occurred_at AS time, copier, leader_account, leader_execution_id,
             leader_order_id, instrument, leader_action, leader_quantity, leader_price,
             follower_account, follower_instrument, ratio, outcome, follower_order_id,
             follower_quantity, reason
           FROM addon_copier_actions
           WHERE user_id = $1
             AND ($2::text IS NULL OR leader_account = $2 OR follower_account = $2)
             AND ($3::text IS NULL OR outcome = $3)
             AND ($4::timestamptz IS NULL OR occurred_at >= $4)
             AND ($5::timestamptz IS NULL OR occurred_at <= $5)
             AND ($6::timestamptz IS NULL OR (occurred_at, action_id) < ($6, $7::text))
           ORDER BY occurred_at DESC, action_id DESC
           LIMIT $8"#,
        user_id,
        filter.account,
        filter.outcome,
        filter.since,
        filter.until,
        after_t,
        after_id,
        i64::from(filter.limit) + 1,
    )
    .fetch_all(db)
    .await
    .map(|rows| {
        Ok(page(rows, filter.limit, |e| Cursor {
            t: e.time,
            id: e.action_id.clone(),
        }))
    })
}

/// GetWebhookHistory's structured result, or its tool error.
pub(crate) async fn webhook_history(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    filter: &SignalFilter,
) -> Result<CallOutcome, sqlx::Error> {
    Ok(match webhook_signals(db, user_id, filter).await? {
        Ok(page) => {
            CallOutcome::Ok(json!({ "signals": page.entries, "next_cursor": page.next_cursor }))
        }
        Err(message) => CallOutcome::ToolError(message),
    })
}

/// GetCopierActivity's structured result, or its tool error.
pub(crate) async fn copier_history(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    filter: &SignalFilter,
) -> Result<CallOutcome, sqlx::Error> {
    Ok(match copier_actions(db, user_id, filter).await? {
        Ok(page) => {
            CallOutcome::Ok(json!({ "actions": page.entries, "next_cursor": page.next_cursor }))
        }
        Err(message) => CallOutcome::ToolError(message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_dropped_from_summaries() {
        assert_eq!(
            redact("action=buy qty=1 ticker=ES1! key=abc123 price=5001.25"),
            "action=buy qty=1 ticker=ES1! key=[redacted] price=5001.25"
        );
        assert_eq!(
            redact(r#"{"Secret": "hunter2", "api_key":"k-1","token": 'x', "qty":1}"#),
            r#"{"Secret": "[redacted]", "api_key":"[redacted]","token": '[redacted]', "qty":1}"#
        );
        assert_eq!(
            redact("passWORD=p&access_token=t;ok=1"),
            "passWORD=[redacted]&access_token=[redacted];ok=1"
        );
        assert_eq!(redact("key="), "key=");
        assert_eq!(redact("time 14:30 ratio=1:2"), "time 14:30 ratio=1:2");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT_CHARS + 10);
        let cut = redact(&long);
        assert_eq!(cut.chars().count(), MAX_TEXT_CHARS);
        assert!(cut.ends_with('…'));
        let exact = "a".repeat(MAX_TEXT_CHARS);
        assert_eq!(redact(&exact), exact);
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let cursor = Cursor {
            t: "2026-11-20T14:30:00.410Z".parse().unwrap(),
            id: "cp-55-Sim102".to_owned(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("not-a-cursor"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode(r#"{"t":1}"#)), None);
    }

    #[test]
    fn reasons_are_required_unless_an_order_was_placed() {
        let rejected = json!({"signal_id": "wh-1", "received_at": "2026-11-20T14:29:59Z",
            "outcome": "rejected"});
        assert!(
            WebhookSignal::decode(rejected)
                .unwrap_err()
                .contains("reason")
        );
        let placed = json!({"signal_id": "wh-1", "received_at": "2026-11-20T14:29:59Z",
            "outcome": "order_placed", "order_ids": ["O1"]});
        assert!(WebhookSignal::decode(placed).is_ok());
        let empty_id = json!({"action_id": " ", "time": "2026-11-20T14:29:59Z",
            "leader_account": "Sim101", "follower_account": "Sim102", "outcome": "order_placed"});
        assert!(
            CopierAction::decode(empty_id)
                .unwrap_err()
                .contains("action_id")
        );
        let unknown = json!({"action_id": "c", "time": "2026-11-20T14:29:59Z",
            "leader_account": "Sim101", "follower_account": "Sim102", "outcome": "maybe"});
        assert!(CopierAction::decode(unknown).is_err());
    }
}
