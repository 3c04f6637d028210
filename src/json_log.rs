//! The production log format: one JSON object per line, the shape of tracing-subscriber's JSON
//! format with the event flattened and the current span shown —
//! `{"timestamp", "level", <event fields>, "target", "span": {<fields>, "name"}, "spans": [...]}` —
//! written straight into the line buffer. A span's fields are rendered as JSON members once,
//! when it opens, and copied into each line; tracing-subscriber's formatter parses them back into
//! a map for every line, which cost more than the rest of a request's logging.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// Formats events as JSON lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

/// Renders a span's fields as JSON object members (`"key":value,...`, no braces).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonMembers;

impl<'writer> FormatFields<'writer> for JsonMembers {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut members = Members::new(writer, true);
        fields.record(&mut members);
        members.result
    }

    /// A field recorded after the span opened (declared `Empty`) is appended as a member.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut members = Members::new(current.as_writer(), first);
        fields.record(&mut members);
        members.result
    }
}

impl<S> FormatEvent<S, JsonMembers> for JsonLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonMembers>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", meta.level())?;
        let mut members = Members::new(writer.by_ref(), false);
        event.record(&mut members);
        members.result?;
        writer.write_str(",\"target\":")?;
        write_string(&mut writer, meta.target())?;
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = current {
            writer.write_str(",\"span\":")?;
            write_span(&mut writer, &span)?;
            writer.write_str(",\"spans\":[")?;
            for (index, span) in span.scope().from_root().enumerate() {
                if index > 0 {
                    writer.write_char(',')?;
                }
                write_span(&mut writer, &span)?;
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}

/// RFC 3339 in UTC with microseconds (`2026-12-02T19:53:04.194745Z`). The date and time up to
/// the second is formatted once per second per thread; a line adds only its microseconds.
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let (seconds, micros) = unix_time();
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != seconds {
            prefix.clear();
            let time = i64::try_from(seconds)
                .ok()
                .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
                .unwrap_or_default();
            write!(prefix, "{}", time.format("%Y-%m-%dT%H:%M:%S"))?;
            *cached = seconds;
        }
        writer.write_str(prefix)
    })?;
    let mut digits = *b".000000Z";
    let mut rest = micros;
    for digit in digits[1..7].iter_mut().rev() {
        // `rest % 10` is below 10.
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    writer.write_str(std::str::from_utf8(&digits).unwrap_or(".000000Z"))
}

#[expect(
    clippy::disallowed_methods,
    reason = "log timestamps are wall-clock readings, never compared with an expiry"
)]
fn unix_time() -> (u64, u32) {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (elapsed.as_secs(), elapsed.subsec_micros())
}

fn write_span<S>(writer: &mut Writer<'_>, span: &SpanRef<'_, S>) -> fmt::Result
where
    S: for<'lookup> LookupSpan<'lookup>,
{
    writer.write_char('{')?;
    let extensions = span.extensions();
    if let Some(fields) = extensions.get::<FormattedFields<JsonMembers>>()
        && !fields.fields.is_empty()
    {
        writer.write_str(&fields.fields)?;
        writer.write_char(',')?;
    }
    writer.write_str("\"name\":")?;
    write_string(writer, span.name())?;
    writer.write_char('}')
}

/// Writes each recorded field as a JSON member, a comma before all but the first.
struct Members<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl<'writer> Members<'writer> {
    fn new(writer: Writer<'writer>, first: bool) -> Self {
        Self {
            writer,
            first,
            result: Ok(()),
        }
    }

    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'writer>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.write_member(field, value);
        }
    }

    fn write_member(
        &mut self,
        field: &Field,
        value: impl FnOnce(&mut Writer<'writer>) -> fmt::Result,
    ) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(',')?;
        }
        write_string(&mut self.writer, field.name())?;
        self.writer.write_char(':')?;
        value(&mut self.writer)
    }
}

impl Visit for Members<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |writer| write_string(writer, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |writer| {
            writer.write_char('"')?;
            write!(Escaped(writer), "{value:?}")?;
            writer.write_char('"')
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |writer| {
            writer.write_char('"')?;
            write!(Escaped(writer), "{value}")?;
            writer.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |writer| write!(writer, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        self.member(field, |writer| {
            if value.is_finite() {
                write!(writer, "{value}")
            } else {
                writer.write_str("null")
            }
        });
    }
}

fn write_string(writer: &mut Writer<'_>, value: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaped(writer).write_str(value)?;
    writer.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string: quotes, backslashes and every
/// control character (terminal escape sequences included).
struct Escaped<'a, 'writer>(&'a mut Writer<'writer>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, value: &str) -> fmt::Result {
        if is_plain(value) {
            return self.0.write_str(value);
        }
        let mut plain = 0;
        for (index, byte) in value.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&value[plain..index])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = index + 1;
        }
        self.0.write_str(&value[plain..])
    }
}

/// Whether nothing in `value` needs escaping: most strings in a line. Whole 16-byte blocks are
/// checked without an early exit, which the compiler vectorizes; the rest (all of most keys and
/// short values) by table, which costs half of the same check byte by byte.
fn is_plain(value: &str) -> bool {
    let mut blocks = value.as_bytes().chunks_exact(16);
    blocks.all(|block| {
        block.iter().fold(0_u8, |found, &byte| {
            found
                | u8::from(byte < 0x20)
                | u8::from(byte == b'"')
                | u8::from(byte == b'\\')
                | u8::from(byte == 0x7f)
        }) == 0
    }) && blocks
        .remainder()
        .iter()
        .all(|&byte| !NEEDS_ESCAPE[usize::from(byte)])
}

/// The bytes a JSON string must escape, and DEL (terminal safety).
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < table.len() {
        table[byte] =
            byte < 0x20 || byte == 0x7f || byte == b'"' as usize || byte == b'\\' as usize;
        byte += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(emit: impl FnOnce()) -> Vec<Value> {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonMembers)
                .event_format(JsonLines)
                .with_writer(move || sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = lines.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn lines_are_json_with_the_event_flattened_and_the_spans_around_it() {
        let lines = capture(|| {
            let outer = tracing::info_span!("request", method = "POST", request_id = "r-1");
            let _outer = outer.enter();
            let inner = tracing::info_span!("relay", path = tracing::field::Empty, calls = 3_u64);
            let _inner = inner.enter();
            tracing::Span::current().record("path", "local");
            tracing::info!(
                status = 200,
                ratio = 0.5,
                ok = true,
                "finished processing request"
            );
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "finished processing request");
        assert_eq!(line["status"], 200);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["ok"], true);
        assert!(line["target"].as_str().unwrap().contains("json_log"));
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            line["span"],
            serde_json::json!({"calls": 3, "path": "local", "name": "relay"})
        );
        assert_eq!(line["spans"][0]["method"], "POST");
        assert_eq!(line["spans"][0]["request_id"], "r-1");
        assert_eq!(line["spans"][0]["name"], "request");
        assert_eq!(line["spans"][1]["name"], "relay");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds_and_follow_the_clock() {
        let now = || {
            let (seconds, micros) = unix_time();
            chrono::DateTime::from_timestamp(seconds.try_into().unwrap(), micros * 1000).unwrap()
        };
        let before = now();
        let lines = capture(|| {
            tracing::info!("first");
            std::thread::sleep(std::time::Duration::from_millis(1100));
            tracing::info!("second");
        });
        let after = now();
        let stamps: Vec<&str> = lines
            .iter()
            .map(|line| line["timestamp"].as_str().unwrap())
            .collect();
        for stamp in &stamps {
            // 2026-12-02T19:53:04.194745Z
            assert_eq!(stamp.len(), 27, "{stamp}");
            let parsed = chrono::DateTime::parse_from_rfc3339(stamp).unwrap();
            assert!(parsed >= before, "{stamp}");
            assert!(parsed <= after, "{stamp}");
        }
        // A new second is formatted anew, not taken from the previous line.
        assert_ne!(stamps[0][..19], stamps[1][..19]);
    }

    #[test]
    fn strings_are_escaped_control_characters_included() {
        let hostile = "quote \" backslash \\ newline \n tab \t bell \u{7} escape \u{1b}[31m é ✓";
        let lines = capture(|| {
            tracing::warn!(value = hostile, debugged = ?hostile, "{hostile}");
        });
        let line = &lines[0];
        assert_eq!(line["value"], hostile);
        assert_eq!(line["debugged"], format!("{hostile:?}"));
        assert_eq!(line["message"], hostile);
        assert!(line.get("span").is_none());
    }

    #[test]
    fn a_string_is_plain_exactly_when_no_byte_needs_escaping() {
        let base = "990da90d-de1e-8e97-8000-000000000000 /v1/api/mcp é ✓ ~";
        assert!(is_plain(base));
        assert!(is_plain(""));
        for at in [0, 1, 15, 16, 17, 31, 32, base.len()] {
            for special in ['"', '\\', '\n', '\t', '\u{0}', '\u{1b}', '\u{1f}', '\u{7f}'] {
                let mut spoiled = base.to_owned();
                spoiled.insert(at, special);
                assert!(!is_plain(&spoiled), "{special:?} at {at}");
            }
        }
    }

    #[test]
    fn every_ascii_byte_is_plain_or_not_wherever_it_stands() {
        for byte in 0_u8..0x80 {
            let special = byte < 0x20 || byte == 0x7f || byte == b'"' || byte == b'\\';
            for len in [1, 5, 16, 17, 40] {
                for at in [0, len / 2, len - 1] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    let value = String::from_utf8(bytes).unwrap();
                    assert_eq!(is_plain(&value), !special, "{byte:#04x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn an_event_outside_any_span_has_no_span_keys() {
        let lines = capture(|| tracing::error!(count = -4_i64, "alone"));
        assert_eq!(lines[0]["count"], -4);
        assert_eq!(lines[0]["level"], "ERROR");
        assert!(lines[0].get("spans").is_none());
    }
}
