//! Webhook history and copier activity: what the Add-On reported about the webhook signals it
//! received and the trade copier's actions, served from storage (newest first, in pages).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Args, Route, StoredTool, ToolDef, read, rfc3339};
use crate::relay::HistoryRequest;
use vocabulary::SignalFilter;

/// Entries a page holds when `limit` is left out (as the input schemas say).
const DEFAULT_PAGE: u32 = 50;

pub(super) fn definitions() -> Vec<ToolDef> {
    vec![
        read::<WebhookHistoryQuery, WebhookHistoryOutput>(
            "GetWebhookHistory",
            "Read webhook history",
            "Read the webhook signals the CrossTrade Add-On received (for example TradingView \
             alerts), newest first: when, source, strategy and alert name, a summary of the \
             payload (never the webhook secret), account and instrument, and the outcome — \
             order placed (with its order ids), rejected, ignored or error, and why. Filter by \
             account, outcome and a time window; page with `cursor` (pass back `next_cursor`). \
             Served from what the Add-On reported, so it works while NinjaTrader 8 is closed.",
            Route::Stored(StoredTool::WebhookHistory),
        ),
        read::<CopierActivityQuery, CopierActivityOutput>(
            "GetCopierActivity",
            "Read copier activity",
            "Read what the CrossTrade trade copier did, newest first: each leader fill (account, \
             instrument, side, quantity, price) and, for each follower account, the outcome — \
             order placed (follower order and quantity), skipped, rejected or error, and why. \
             Filter by account (leader or follower), outcome and a time window; page with \
             `cursor` (pass back `next_cursor`). Served from what the Add-On reported, so it \
             works while NinjaTrader 8 is closed.",
            Route::Stored(StoredTool::CopierActivity),
        ),
    ]
}

/// The history request for `arguments` (already valid against the tool's input schema).
pub(super) fn request(tool: StoredTool, arguments: Value) -> Result<HistoryRequest, String> {
    let invalid = |err: serde_json::Error| format!("invalid arguments: {err}");
    if tool == StoredTool::WebhookHistory {
        let query: WebhookHistoryQuery = serde_json::from_value(arguments).map_err(invalid)?;
        Ok(HistoryRequest::WebhookSignals(filter(
            query.account,
            query.outcome.map(WebhookOutcome::as_str),
            query.since.as_deref(),
            query.until.as_deref(),
            query.limit,
            query.cursor,
        )?))
    } else {
        let query: CopierActivityQuery = serde_json::from_value(arguments).map_err(invalid)?;
        Ok(HistoryRequest::CopierActions(filter(
            query.account,
            query.outcome.map(CopierOutcome::as_str),
            query.since.as_deref(),
            query.until.as_deref(),
            query.limit,
            query.cursor,
        )?))
    }
}

fn filter(
    account: Option<String>,
    outcome: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    limit: Option<u32>,
    cursor: Option<String>,
) -> Result<SignalFilter, String> {
    Ok(SignalFilter {
        account,
        outcome: outcome.map(str::to_owned),
        since: rfc3339("since", since)?,
        until: rfc3339("until", until)?,
        limit: limit.unwrap_or(DEFAULT_PAGE),
        cursor,
    })
}

// ---- arguments -----------------------------------------------------------------------------

/// What the Add-On did with a webhook signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
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

/// What the copier did for one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CopierOutcome {
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookHistoryQuery {
    /// Only signals for this account (a name from GetAccounts).
    #[schemars(length(min = 1, max = 100))]
    pub account: Option<String>,
    /// Only this outcome: order_placed, rejected, ignored or error.
    pub outcome: Option<WebhookOutcome>,
    /// Start of the window, RFC 3339 (for example "2026-11-20T14:30:00Z").
    #[schemars(length(min = 10, max = 40))]
    pub since: Option<String>,
    /// End of the window, RFC 3339.
    #[schemars(length(min = 10, max = 40))]
    pub until: Option<String>,
    /// At most this many signals on the page (default 50).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page, unchanged, with the same filters.
    #[schemars(length(min = 1, max = 1000))]
    pub cursor: Option<String>,
}
impl Args for WebhookHistoryQuery {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopierActivityQuery {
    /// Only actions where this account is the leader or the follower.
    #[schemars(length(min = 1, max = 100))]
    pub account: Option<String>,
    /// Only this outcome: order_placed, skipped, rejected or error.
    pub outcome: Option<CopierOutcome>,
    /// Start of the window, RFC 3339 (for example "2026-11-20T14:30:00Z").
    #[schemars(length(min = 10, max = 40))]
    pub since: Option<String>,
    /// End of the window, RFC 3339.
    #[schemars(length(min = 10, max = 40))]
    pub until: Option<String>,
    /// At most this many actions on the page (default 50).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page, unchanged, with the same filters.
    #[schemars(length(min = 1, max = 1000))]
    pub cursor: Option<String>,
}
impl Args for CopierActivityQuery {}

// ---- outputs -------------------------------------------------------------------------------

/// Always present: a string while more pages follow, null on the last one.
struct NextCursor;

impl JsonSchema for NextCursor {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NextCursor".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "null"],
            "description": "Pass it as `cursor` for the next page; null on the last page."
        })
    }
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
pub(super) struct WebhookHistoryOutput {
    /// Newest first.
    signals: Vec<WebhookSignal>,
    next_cursor: NextCursor,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct WebhookSignal {
    /// The Add-On's id of the signal.
    signal_id: String,
    /// When the Add-On received it (RFC 3339).
    received_at: String,
    /// Where it came from, for example "TradingView".
    source: Option<String>,
    strategy: Option<String>,
    /// The alert's name.
    alert: Option<String>,
    account: Option<String>,
    instrument: Option<String>,
    /// Buy, Sell, Exit, … as the signal asked.
    action: Option<String>,
    quantity: Option<f64>,
    order_type: Option<String>,
    /// A one-line summary of the payload; secrets are never included.
    payload_summary: Option<String>,
    outcome: WebhookOutcome,
    /// The orders the signal placed.
    order_ids: Vec<String>,
    /// Why it was rejected, ignored or failed.
    reason: Option<String>,
    /// From receipt to the order's submission, in milliseconds.
    latency_ms: Option<i64>,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
pub(super) struct CopierActivityOutput {
    /// Newest first; one entry per leader fill and follower account.
    actions: Vec<CopierAction>,
    next_cursor: NextCursor,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct CopierAction {
    /// The Add-On's id of the action.
    action_id: String,
    /// When the copier acted (RFC 3339).
    time: String,
    /// The copier's name.
    copier: Option<String>,
    leader_account: String,
    leader_execution_id: Option<String>,
    leader_order_id: Option<String>,
    /// The leader's instrument.
    instrument: Option<String>,
    /// Buy or Sell.
    leader_action: Option<String>,
    leader_quantity: Option<f64>,
    leader_price: Option<f64>,
    follower_account: String,
    follower_instrument: Option<String>,
    /// Follower quantity per leader contract.
    ratio: Option<f64>,
    outcome: CopierOutcome,
    follower_order_id: Option<String>,
    follower_quantity: Option<f64>,
    /// Why it was skipped, rejected or failed.
    reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::catalog;
    use super::*;

    #[test]
    fn arguments_become_a_page_request() {
        let webhooks = request_of(
            StoredTool::WebhookHistory,
            json!({"account": "Sim101", "outcome": "rejected", "since": "2026-11-20T14:00:00Z",
                   "limit": 10, "cursor": "abc"}),
        );
        assert_eq!(
            webhooks,
            HistoryRequest::WebhookSignals(SignalFilter {
                account: Some("Sim101".to_owned()),
                outcome: Some("rejected".to_owned()),
                since: Some("2026-11-20T14:00:00Z".parse().unwrap()),
                until: None,
                limit: 10,
                cursor: Some("abc".to_owned()),
            })
        );
        let copier = request_of(StoredTool::CopierActivity, json!({}));
        assert_eq!(
            copier,
            HistoryRequest::CopierActions(SignalFilter {
                account: None,
                outcome: None,
                since: None,
                until: None,
                limit: DEFAULT_PAGE,
                cursor: None,
            })
        );
        let message = request(
            StoredTool::CopierActivity,
            json!({"until": "yesterday 5pm"}),
        )
        .unwrap_err();
        assert!(
            message.starts_with("until must be an RFC 3339 time"),
            "{message}"
        );
    }

    fn request_of(tool: StoredTool, arguments: Value) -> HistoryRequest {
        request(tool, arguments).unwrap()
    }

    #[test]
    fn input_schemas_state_the_filters_and_their_bounds() {
        let webhooks = catalog().get("GetWebhookHistory").unwrap();
        let schema = &webhooks.def.input_schema;
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(
            schema["properties"]["outcome"]["enum"],
            json!(["order_placed", "rejected", "ignored", "error", null])
        );
        assert_eq!(schema["properties"]["limit"]["maximum"], 500);
        assert!(
            webhooks
                .validate_arguments(&json!({"outcome": "skipped"}))
                .is_err()
        );
        assert!(webhooks.validate_arguments(&json!({"limit": 0})).is_err());
        assert!(webhooks.validate_arguments(&json!({"secret": 1})).is_err());
        assert_eq!(
            webhooks.validate_arguments(&json!({"account": "Sim101", "limit": 500})),
            Ok(())
        );
        let copier = catalog().get("GetCopierActivity").unwrap();
        assert_eq!(
            copier.def.input_schema["properties"]["outcome"]["enum"],
            json!(["order_placed", "skipped", "rejected", "error", null])
        );
        assert_eq!(
            copier.validate_arguments(&json!({"outcome": "skipped"})),
            Ok(())
        );
        for tool in [webhooks, copier] {
            assert_eq!(tool.def.scope, crate::auth::Scope::Read);
            assert!(matches!(tool.def.route, Route::Stored(_)));
            assert_eq!(tool.def.effect, super::super::Effect::Read);
        }
    }

    #[test]
    fn output_schemas_accept_what_the_bridge_returns_and_nothing_looser() {
        let webhooks = catalog().get("GetWebhookHistory").unwrap();
        let signal = json!({
            "signal_id": "wh-7f3a2c", "received_at": "2026-11-20T14:29:59.870Z",
            "source": "TradingView", "strategy": "ES Breakout v2", "alert": "Long entry",
            "account": "Sim101", "instrument": "ES 12-26", "action": "Buy", "quantity": 1.0,
            "order_type": "Market", "payload_summary": "action=buy qty=1 ticker=ES1!",
            "outcome": "rejected", "order_ids": [],
            "reason": "Position limit reached: max 2 contracts", "latency_ms": 112,
        });
        let page = json!({"signals": [signal], "next_cursor": "eyJ0Ijo"});
        assert_eq!(webhooks.validate_output(&page), Ok(()));
        let mut last = page.clone();
        last["next_cursor"] = Value::Null;
        last["signals"][0]["source"] = Value::Null;
        assert_eq!(webhooks.validate_output(&last), Ok(()));
        let mut wrong = page.clone();
        wrong["signals"][0]["outcome"] = json!("skipped");
        assert!(webhooks.validate_output(&wrong).is_err());
        assert!(webhooks.validate_output(&json!({"signals": []})).is_err());

        let copier = catalog().get("GetCopierActivity").unwrap();
        let action = json!({
            "action_id": "cp-55-Sim103", "time": "2026-11-20T14:30:00.410Z", "copier": "Main",
            "leader_account": "Sim101", "leader_execution_id": "X17", "leader_order_id": "O17",
            "instrument": "ES 12-26", "leader_action": "Buy", "leader_quantity": 1.0,
            "leader_price": 5001.25, "follower_account": "Sim103",
            "follower_instrument": "ES 12-26", "ratio": 1.0, "outcome": "skipped",
            "follower_order_id": null, "follower_quantity": null,
            "reason": "follower account Sim103 is not connected",
        });
        assert_eq!(
            copier.validate_output(&json!({"actions": [action], "next_cursor": null})),
            Ok(())
        );
        let mut leaderless = action.clone();
        leaderless["leader_account"] = Value::Null;
        assert!(
            copier
                .validate_output(&json!({"actions": [leaderless], "next_cursor": null}))
                .is_err()
        );
    }

    #[test]
    fn addon_activity_says_what_it_returns_and_where_the_rest_is() {
        let activity = catalog().get("GetAddonActivity").unwrap();
        let description = activity.def.description;
        for word in [
            "relayed",
            "tool_error",
            "deadline_exceeded",
            "Arguments are never logged",
            "GetWebhookHistory",
            "GetCopierActivity",
        ] {
            assert!(description.contains(word), "{word}: {description}");
        }
        assert!(!description.contains("webhook signals it handled"));
        let entry = json!({"tool": "PlaceOrder", "outcome": "ok", "latency_ms": 12,
            "instance_id": "0f6c2a9e-4b1d-4d8e-9f0a-1c2b3d4e5f60", "replayed": false,
            "created_at": "2026-11-20T14:30:00.123Z"});
        assert_eq!(
            activity.validate_output(&json!({"entries": [entry.clone()]})),
            Ok(())
        );
        let mut missing = entry;
        missing.as_object_mut().unwrap().remove("latency_ms");
        assert!(
            activity
                .validate_output(&json!({"entries": [missing]}))
                .is_err()
        );
    }
}
