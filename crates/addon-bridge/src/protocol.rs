//! The wire protocol between the backend and the Add-On (version 1), as `docs/addon-protocol.md`
//! documents it: JSON text frames with a `type`, close codes, and the minimum Add-On version.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// The protocol version this server speaks (`"v"` in every frame).
pub const PROTOCOL_VERSION: u64 = 1;
/// The oldest Add-On allowed to connect (product doc 000: "v1.13.0 or higher").
pub use vocabulary::addon::MIN_ADDON_VERSION;

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
    /// The start of the trading-hours session the snapshot belongs to, when the Add-On knows it.
    #[serde(default)]
    pub session_start: Option<DateTime<Utc>>,
}

/// Progress of a job the Add-On runs (`event` of kind `job_progress`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobProgressEvent {
    pub job_id: Uuid,
    /// From 0 to 1.
    pub progress: f64,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
}

/// The final state of a job the Add-On ran (`event` of kind `job_result`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobResultEvent {
    pub job_id: Uuid,
    pub state: JobEnd,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobEnd {
    Completed,
    Failed,
    Cancelled,
}

impl JobEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            JobEnd::Completed => "completed",
            JobEnd::Failed => "failed",
            JobEnd::Cancelled => "cancelled",
        }
    }
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
pub fn parse_version(raw: &str) -> Option<(u64, u64, u64)> {
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

/// A version from a refused hello as it is stored and shown: at most 32 characters, none of
/// them control characters (PostgreSQL text cannot hold NUL, and a page must not show them).
pub(crate) fn recorded_version(raw: &str) -> String {
    raw.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(32)
        .collect()
}

/// Reads the first frame: the hello, or the close code and reason to refuse it with.
pub(crate) fn decode_hello(text: &str) -> Result<Hello, (u16, String)> {
    let protocol_error = |why: &str| (close::PROTOCOL_ERROR, format!("expected hello: {why}"));
    let (value, version) = parse_envelope(text).map_err(|_| protocol_error("not a JSON object"))?;
    if value.get("type").and_then(Value::as_str) != Some("hello") {
        return Err(protocol_error("first frame must be a hello"));
    }
    if version.unwrap_or(PROTOCOL_VERSION) != PROTOCOL_VERSION {
        return Err((
            close::PROTOCOL_UNSUPPORTED,
            "this server speaks protocol version 1; update the CrossTrade Add-On".to_owned(),
        ));
    }
    serde_json::from_value(value)
        .map_err(|_| protocol_error("missing addon_version or nt8_version"))
}

/// The version gate: `Err` carries the 4001 close reason for an Add-On below the minimum.
pub(crate) fn check_addon_version(addon_version: &str) -> Result<(), String> {
    if parse_version(addon_version).is_none_or(|version| version < MIN_ADDON_VERSION) {
        Err(too_old_reason(addon_version))
    } else {
        Ok(())
    }
}

/// Decodes a frame after the hello. `Err` is the error frame to send back; the frame is
/// discarded and the connection goes on. The second value is the frame's raw `id`, echoed in
/// later errors about it.
pub(crate) fn decode_frame(
    text: &str,
    max_frame_bytes: usize,
) -> Result<(Inbound, Option<Value>), String> {
    if text.len() > max_frame_bytes {
        return Err(error(
            "frame_too_large",
            &format!("frames are limited to {max_frame_bytes} bytes; this one was discarded"),
            None,
        ));
    }
    let (value, version) =
        parse_envelope(text).map_err(|message| error("malformed_frame", &message, None))?;
    if version.is_some_and(|v| v != PROTOCOL_VERSION) {
        return Err(error(
            "unsupported_version",
            "this server speaks protocol version 1",
            value.get("id"),
        ));
    }
    let id = value.get("id").cloned();
    match serde_json::from_value(value) {
        Ok(frame) => Ok((frame, id)),
        Err(err) => Err(error("malformed_frame", &err.to_string(), id.as_ref())),
    }
}

/// An event the Add-On reports, decoded.
#[derive(Debug)]
pub(crate) enum Event {
    Execution(ExecutionEvent),
    Snapshot(AccountSnapshotEvent),
    JobProgress(JobProgressEvent),
    JobResult(JobResultEvent),
    WebhookSignal(crate::signals::WebhookSignal),
    CopierAction(crate::signals::CopierAction),
}

/// The event kinds this server stores.
pub const EVENT_KINDS: [&str; 6] = [
    "execution",
    "account_snapshot",
    "job_progress",
    "job_result",
    "webhook_signal",
    "copier_action",
];

/// Decodes an `event` frame's `kind` and `data`; `Err` is the error frame to send back.
pub(crate) fn decode_event(kind: &str, data: Value) -> Result<Event, String> {
    // PostgreSQL text cannot hold NUL: refused here as invalid, not answered with
    // `event_not_stored`, which asks the Add-On to resend an event that can never be stored.
    if has_nul(&data) {
        return Err(error(
            "invalid_event",
            "event strings must not contain NUL characters",
            None,
        ));
    }
    let parsed = match kind {
        "execution" => serde_json::from_value(data)
            .map(Event::Execution)
            .map_err(|err| err.to_string()),
        "account_snapshot" => serde_json::from_value(data)
            .map(Event::Snapshot)
            .map_err(|err| err.to_string()),
        "job_progress" => serde_json::from_value(data)
            .map(Event::JobProgress)
            .map_err(|err| err.to_string()),
        "job_result" => serde_json::from_value(data)
            .map(Event::JobResult)
            .map_err(|err| err.to_string()),
        "webhook_signal" => crate::signals::WebhookSignal::decode(data).map(Event::WebhookSignal),
        "copier_action" => crate::signals::CopierAction::decode(data).map(Event::CopierAction),
        _ => {
            return Err(error(
                "unknown_event",
                &format!("event kinds are {}", EVENT_KINDS.join(", ")),
                None,
            ));
        }
    };
    let event = parsed.map_err(|message| error("invalid_event", &message, None))?;
    match &event {
        Event::JobProgress(p) if !(0.0..=1.0).contains(&p.progress) => Err(error(
            "invalid_event",
            "job_progress.progress must be between 0 and 1",
            None,
        )),
        Event::JobResult(r) if r.state == JobEnd::Failed && r.error.is_none() => Err(error(
            "invalid_event",
            "a failed job_result needs an error saying why",
            None,
        )),
        _ => Ok(event),
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Stateless checks of the Add-On protocol for the fuzz targets and their corpus replay
/// (`fuzz/`): the same decoding the socket task runs, without a socket or a database.
pub mod check {
    use super::{Inbound, check_addon_version, decode_event, decode_frame, decode_hello};

    /// The outcome of a first frame: `Ok` when the Add-On would be admitted, otherwise the
    /// close code and reason the server would send.
    pub fn hello(text: &str) -> Result<(), (u16, String)> {
        let hello = decode_hello(text)?;
        check_addon_version(&hello.addon_version)
            .map_err(|reason| (super::close::VERSION_UNSUPPORTED, reason))
    }

    /// The frame the server would send back for a later frame when no call is pending (a
    /// `result` then answers `unknown_call`), or `None` when it sends nothing.
    pub fn frame(text: &str, max_frame_bytes: usize) -> Option<String> {
        let (frame, id) = match decode_frame(text, max_frame_bytes) {
            Ok(decoded) => decoded,
            Err(reply) => return Some(reply),
        };
        match frame {
            Inbound::Hello {} => Some(super::unexpected_hello()),
            Inbound::Ping {} => Some(super::pong()),
            Inbound::Pong {} => None,
            Inbound::Result { .. } => Some(super::unknown_call(id.as_ref())),
            Inbound::Event { kind, data, .. } => decode_event(&kind, data).err(),
        }
    }
}

pub(crate) fn unexpected_hello() -> String {
    error("unexpected_hello", "hello is only the first frame", None)
}

pub(crate) fn unknown_call(id: Option<&Value>) -> String {
    error(
        "unknown_call",
        "no call with this id is pending (it ended or its deadline passed)",
        id,
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

pub(crate) fn call(
    id: Uuid,
    tool: &str,
    arguments: &Value,
    deadline_ms: u128,
    traceparent: Option<&str>,
) -> String {
    let mut frame = json!({
        "v": PROTOCOL_VERSION,
        "type": "call",
        "id": id,
        "tool": tool,
        "arguments": arguments,
        "deadline_ms": deadline_ms,
    });
    if let (Some(traceparent), Some(map)) = (traceparent, frame.as_object_mut()) {
        map.insert("traceparent".to_owned(), Value::from(traceparent));
    }
    frame.to_string()
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
    fn events_that_cannot_be_stored_are_invalid() {
        let execution = json!({
            "execution_id": "E1", "account": "Sim\u{0}101", "instrument": "ES 12-26",
            "action": "Buy", "quantity": 1, "price": 5000.25,
        });
        let reply = decode_event("execution", execution).unwrap_err();
        assert!(reply.contains(r#""code":"invalid_event""#), "{reply}");
        let snapshot = json!({"account": "Sim101", "cash_value": 1, "net_liquidation": 1});
        assert!(decode_event("account_snapshot", snapshot).is_ok());
    }

    #[test]
    fn recorded_versions_are_short_and_printable() {
        assert_eq!(recorded_version(" 1.12.4 "), "1.12.4");
        assert_eq!(recorded_version("1.\u{0}12\n"), "1.12");
        assert_eq!(recorded_version(&"9".repeat(500)).len(), 32);
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
