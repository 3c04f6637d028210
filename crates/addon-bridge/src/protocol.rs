//! The wire protocol between the backend and the Add-On (version 1), as `docs/addon-protocol.md`
//! documents it: JSON text frames with a `type`, close codes, and the minimum Add-On version.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// The protocol version this server speaks (`"v"` in every frame).
pub const PROTOCOL_VERSION: u64 = 1;
/// The oldest Add-On allowed to connect (product doc 000: "v1.13.0 or higher").
pub const MIN_ADDON_VERSION: (u64, u64, u64) = (1, 13, 0);

/// Close codes the server uses (RFC 6455 §7.4; 4000–4999 are ours).
pub mod close {
    /// The server is shutting down; reconnect (to another replica) after a short pause.
    pub const GOING_AWAY: u16 = 1001;
    /// The server could not record the connection; reconnect after a pause.
    pub const SERVER_ERROR: u16 = 1011;
    /// The first frame was not a valid hello, or none came in time.
    pub const PROTOCOL_ERROR: u16 = 4000;
    /// The Add-On is older than 1.13.0: the user must update it. Do not reconnect.
    pub const VERSION_UNSUPPORTED: u16 = 4001;
    /// A newer connection of the same user replaced this one. Do not reconnect.
    pub const REPLACED: u16 = 4002;
    /// The Add-On key was revoked. Do not reconnect with it.
    pub const KEY_REVOKED: u16 = 4003;
    /// Two heartbeats went unanswered.
    pub const HEARTBEAT_TIMEOUT: u16 = 4004;
    /// The hello asked for a protocol version this server does not speak.
    pub const PROTOCOL_UNSUPPORTED: u16 = 4006;
}

/// The first frame of the Add-On.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Hello {
    pub addon_version: String,
    pub nt8_version: String,
    #[serde(default)]
    pub features: Vec<String>,
}

/// A frame from the Add-On after its hello.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Inbound {
    Hello {},
    Result {
        id: Uuid,
        ok: bool,
        #[serde(default)]
        content: Value,
        #[serde(default)]
        error: Option<String>,
    },
    Event {
        #[serde(default)]
        id: Option<String>,
        kind: String,
        data: Value,
    },
    Ping {},
    Pong {},
}

/// An execution the Add-On reports (`event` of kind `execution`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecutionEvent {
    pub execution_id: String,
    pub account: String,
    pub instrument: String,
    pub action: TradeAction,
    pub quantity: f64,
    pub price: f64,
    #[serde(default)]
    pub commission: f64,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub(crate) enum TradeAction {
    Buy,
    Sell,
}

impl TradeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TradeAction::Buy => "Buy",
            TradeAction::Sell => "Sell",
        }
    }
}

/// An account snapshot the Add-On reports (`event` of kind `account_snapshot`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountSnapshotEvent {
    pub account: String,
    pub cash_value: f64,
    pub net_liquidation: f64,
    #[serde(default)]
    pub realized_pnl: f64,
    #[serde(default)]
    pub unrealized_pnl: f64,
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
}

/// Checks the envelope's `"v"` (absent means 1) and decodes a frame.
pub(crate) fn parse_envelope(text: &str) -> Result<(Value, Option<u64>), String> {
    let value: Value = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    if !value.is_object() {
        return Err("a frame is a JSON object".to_owned());
    }
    let version = match value.get("v") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or("\"v\" must be a positive integer")?),
    };
    Ok((value, version))
}

/// `major.minor.patch` with an optional `v` and any suffix after the numbers (`1.13.0-beta`).
pub(crate) fn parse_version(raw: &str) -> Option<(u64, u64, u64)> {
    let raw = raw.trim().trim_start_matches(['v', 'V']);
    let core = raw.split(['-', '+', ' ']).next()?;
    let mut parts = core.split('.').map(str::parse::<u64>);
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// Longest close reason: a close frame's payload is at most 125 bytes, two of them the code
/// (RFC 6455 §5.5).
pub const MAX_CLOSE_REASON: usize = 123;

/// The close reason for an Add-On below the minimum (at most [`MAX_CLOSE_REASON`] bytes).
pub(crate) fn too_old_reason(version: &str) -> String {
    const FIXED: usize =
        "CrossTrade Add-On  is not supported: update it to v1.13.0 or newer and reconnect".len();
    // Bytes, not characters: a version of multi-byte characters must not push the reason past
    // the limit, or no valid close frame can carry it and the Add-On never sees 4001.
    let mut shown = String::new();
    for c in version.chars().take(20) {
        if FIXED + shown.len() + c.len_utf8() > MAX_CLOSE_REASON {
            break;
        }
        shown.push(c);
    }
    format!(
        "CrossTrade Add-On {shown} is not supported: update it to v1.13.0 or newer and reconnect"
    )
}

pub(crate) fn welcome(connection_id: Uuid, heartbeat_ms: u128, max_frame_bytes: usize) -> String {
    json!({
        "v": PROTOCOL_VERSION,
        "type": "welcome",
        "connection_id": connection_id,
        "heartbeat_interval_ms": heartbeat_ms,
        "max_frame_bytes": max_frame_bytes,
    })
    .to_string()
}

pub(crate) fn call(id: Uuid, tool: &str, arguments: &Value, deadline_ms: u128) -> String {
    json!({
        "v": PROTOCOL_VERSION,
        "type": "call",
        "id": id,
        "tool": tool,
        "arguments": arguments,
        "deadline_ms": deadline_ms,
    })
    .to_string()
}

pub(crate) fn error(code: &str, message: &str, id: Option<&Value>) -> String {
    let mut frame = json!({
        "v": PROTOCOL_VERSION,
        "type": "error",
        "code": code,
        "message": message,
    });
    if let (Some(id), Some(map)) = (id, frame.as_object_mut()) {
        map.insert("id".to_owned(), id.clone());
    }
    frame.to_string()
}

pub(crate) fn event_ack(id: &str) -> String {
    json!({ "v": PROTOCOL_VERSION, "type": "event_ack", "id": id }).to_string()
}

pub(crate) fn pong() -> String {
    json!({ "v": PROTOCOL_VERSION, "type": "pong" }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.13.0"), Some((1, 13, 0)));
        assert_eq!(parse_version("v1.14"), Some((1, 14, 0)));
        assert_eq!(parse_version("1.13.2-beta.1"), Some((1, 13, 2)));
        assert_eq!(parse_version("banana"), None);
        assert!(parse_version("1.12.9") < Some(MIN_ADDON_VERSION));
        assert!(parse_version("2.0.0") > Some(MIN_ADDON_VERSION));
    }

    #[test]
    fn close_reason_fits() {
        assert!(too_old_reason(&"9".repeat(500)).len() <= MAX_CLOSE_REASON);
    }

    #[test]
    fn close_reason_fits_with_multibyte_versions() {
        for version in [
            "\u{1F600}".repeat(30),
            "é".repeat(30),
            "1.2.\u{10FFFF}".repeat(9),
        ] {
            let reason = too_old_reason(&version);
            assert!(
                reason.len() <= MAX_CLOSE_REASON,
                "{} bytes: {reason}",
                reason.len()
            );
        }
        assert!(too_old_reason("1.2.0").contains("1.2.0"));
    }
}
