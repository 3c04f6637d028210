//! The Add-On as the other crates see it: its presence, one call to it, and how a call ended.
//! The bridge produces them; the MCP server and the account pages read them.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

/// What the backend knows about a user's Add-On connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Presence {
    pub connected: bool,
    pub addon_version: Option<String>,
    pub nt8_version: Option<String>,
    pub features: Vec<String>,
}

/// One tool call for a user's Add-On. `arguments` have already been validated against the
/// tool's input schema.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub user_id: Uuid,
    /// PascalCase tool name, e.g. `PlaceOrder`.
    pub tool: String,
    pub arguments: Value,
    /// Zero means the bridge's default deadline.
    pub deadline: Duration,
    /// With a key, a repeat within 24 h returns the first outcome and never reaches the Add-On.
    pub idempotency_key: Option<String>,
}

/// What the Add-On answered. Stored as JSON for idempotent replays and cross-replica results,
/// so the serialized form is fixed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The tool ran; its structured result.
    Ok(Value),
    /// The tool ran and failed (rejected order, compile errors…): shown to the model as a
    /// tool result with `isError: true`.
    ToolError(String),
}

/// Why a call got no answer. The first three are the product's 408 `addon_disconnected`.
/// Stored as JSON like [`CallOutcome`], so the serialized form is fixed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CallError {
    #[error(
        "the CrossTrade Add-On is not connected: open NinjaTrader 8 and check the Add-On panel"
    )]
    NotConnected,
    #[error("the CrossTrade Add-On disconnected while the call was in flight")]
    Disconnected,
    #[error("the CrossTrade Add-On did not answer before the deadline")]
    DeadlineExceeded,
    #[error("the Add-On relay is temporarily unavailable")]
    Unavailable,
    /// The account already has as many calls in flight as it may; nothing was sent.
    #[error("too many calls in flight for this account")]
    TooManyCalls,
}

impl CallError {
    /// Stable code for logs, metrics and the activity table.
    pub fn code(self) -> &'static str {
        match self {
            CallError::NotConnected => "not_connected",
            CallError::Disconnected => "disconnected",
            CallError::DeadlineExceeded => "deadline_exceeded",
            CallError::Unavailable => "unavailable",
            CallError::TooManyCalls => "too_many_calls",
        }
    }
}

/// The stable code of a call's outcome: `ok`, `tool_error` or the [`CallError::code`].
pub fn outcome_code(result: &Result<CallOutcome, CallError>) -> &'static str {
    match result {
        Ok(CallOutcome::Ok(_)) => "ok",
        Ok(CallOutcome::ToolError(_)) => "tool_error",
        Err(err) => err.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored form of outcomes: rows written before a release must still read back.
    #[test]
    fn stored_forms_are_fixed() {
        let stored = serde_json::to_value(CallError::DeadlineExceeded).unwrap();
        assert_eq!(stored, Value::from("deadline_exceeded"));
        let stored = serde_json::to_value(CallOutcome::ToolError("no".to_owned())).unwrap();
        assert_eq!(stored, serde_json::json!({ "tool_error": "no" }));
    }
}
