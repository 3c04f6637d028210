//! The Add-On as the other crates see it: its presence, one call to it, and how a call ended.
//! The bridge produces them; the MCP server and the account pages read them.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// The oldest Add-On the bridge admits (product doc 000: "v1.13.0 or higher").
pub const MIN_ADDON_VERSION: (u64, u64, u64) = (1, 13, 0);

/// What the backend knows about a user's Add-On connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Presence {
    pub connected: bool,
    pub addon_version: Option<String>,
    pub nt8_version: Option<String>,
    pub features: Vec<String>,
    /// The last Add-On refused as older than [`MIN_ADDON_VERSION`], while none is connected:
    /// kept until a supported Add-On connects, for at most 24 hours after the refusal.
    pub too_old: Option<TooOld>,
}

/// An Add-On that connected with a version below [`MIN_ADDON_VERSION`] and was refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TooOld {
    /// The version its hello announced (shortened, without control characters).
    pub addon_version: String,
    pub nt8_version: String,
    pub refused_at: DateTime<Utc>,
}

/// The product's sentence for a refused Add-On.
impl fmt::Display for TooOld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor, patch) = MIN_ADDON_VERSION;
        write!(
            f,
            "Add-On {} is connected but too old — update to {major}.{minor}.{patch} or later",
            self.addon_version
        )
    }
}

/// The Add-On's state in one word, as the MCP tools and the account API report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddonState {
    Connected,
    /// Not connected because the last Add-On that tried is below the minimum version.
    TooOld,
    NotConnected,
}

impl AddonState {
    pub fn as_str(self) -> &'static str {
        match self {
            AddonState::Connected => "connected",
            AddonState::TooOld => "too_old",
            AddonState::NotConnected => "not_connected",
        }
    }
}

impl Presence {
    /// A connected Add-On wins over a refused one.
    pub fn state(&self) -> AddonState {
        match (self.connected, &self.too_old) {
            (true, _) => AddonState::Connected,
            (false, Some(_)) => AddonState::TooOld,
            (false, None) => AddonState::NotConnected,
        }
    }

    /// The state in one sentence, the same wherever it is shown (`GetMcpCapabilities`, the
    /// account page and API).
    pub fn status(&self) -> String {
        match (self.connected, &self.too_old) {
            (true, _) => format!(
                "Add-On {} is connected",
                self.addon_version.as_deref().unwrap_or("(unknown version)")
            ),
            (false, Some(too_old)) => too_old.to_string(),
            (false, None) => {
                "Add-On is not connected: open NinjaTrader 8 and the CrossTrade Add-On panel"
                    .to_owned()
            }
        }
    }
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

    #[test]
    fn a_refused_addon_reads_as_the_product_says_until_one_connects() {
        let mut presence = Presence {
            too_old: Some(TooOld {
                addon_version: "1.12.4".to_owned(),
                nt8_version: "8.1.4.1".to_owned(),
                refused_at: DateTime::UNIX_EPOCH,
            }),
            ..Presence::default()
        };
        assert_eq!(presence.state(), AddonState::TooOld);
        assert_eq!(
            presence.status(),
            "Add-On 1.12.4 is connected but too old — update to 1.13.0 or later"
        );
        presence.connected = true;
        presence.addon_version = Some("1.13.2".to_owned());
        assert_eq!(presence.state(), AddonState::Connected);
        assert_eq!(presence.status(), "Add-On 1.13.2 is connected");
        assert_eq!(Presence::default().state(), AddonState::NotConnected);
    }

    /// The stored form of outcomes: rows written before a release must still read back.
    #[test]
    fn stored_forms_are_fixed() {
        let stored = serde_json::to_value(CallError::DeadlineExceeded).unwrap();
        assert_eq!(stored, Value::from("deadline_exceeded"));
        let stored = serde_json::to_value(CallOutcome::ToolError("no".to_owned())).unwrap();
        assert_eq!(stored, serde_json::json!({ "tool_error": "no" }));
    }
}
