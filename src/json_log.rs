//! The production log format: one JSON object per line, the shape of tracing-subscriber's JSON
//! format with the event flattened and the current span shown —
//! `{"timestamp", "level", <event fields>, "target", "span": {<fields>, "name"}, "spans": [...]}` —
//! composed in a per-thread buffer and handed to the writer whole. A span's fields are rendered
//! as JSON members once, when it opens, and copied into each line; tracing-subscriber's formatter
//! parses them back into a map for every line, which cost more than the rest of a request's
//! logging.

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
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        composed(&mut writer, |out| {
            let mut members = Members::new(out, true);
            fields.record(&mut members);
            members.result
        })
    }

    /// A field recorded after the span opened (declared `Empty`) is appended as a member.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        composed(&mut current.as_writer(), |out| {
            let mut members = Members::new(out, first);
            fields.record(&mut members);
            members.result
        })
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
        composed(&mut writer, |line| {
            let meta = event.metadata();
            line.push_str("{\"timestamp\":\"");
            write_timestamp(line);
            line.push_str("\",\"level\":\"");
            line.push_str(meta.level().as_str());
            line.push('"');
            let mut members = Members::new(line, false);
            event.record(&mut members);
            members.result?;
            line.push_str(",\"target\":");
            write_string(line, meta.target());
            let current = event
                .parent()
                .and_then(|id| ctx.span(id))
                .or_else(|| ctx.lookup_current());
            if let Some(span) = current {
                line.push_str(",\"span\":");
                write_span(line, &span);
                line.push_str(",\"spans\":[");
                for (index, span) in span.scope().from_root().enumerate() {
                    if index > 0 {
                        line.push(',');
                    }
                    write_span(line, &span);
                }
                line.push(']');
            }
            line.push_str("}\n");
            Ok(())
        })
    }
}

/// Composes text in this thread's buffer and writes it with one call: a write through `Writer`
/// is a dynamic call, and a span's field string would otherwise grow from empty, reallocating
/// as it goes. Nothing is written if composing fails.
fn composed(
    writer: &mut Writer<'_>,
    compose: impl FnOnce(&mut String) -> fmt::Result,
) -> fmt::Result {
    thread_local! {
        static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
    }
    BUFFER.with(|buffer| {
        // Busy only if composing re-entered the formatter (tracing drops events dispatched
        // from inside one): a second buffer then, never a panic in logging.
        let Ok(mut buffer) = buffer.try_borrow_mut() else {
            let mut own = String::new();
            return compose(&mut own).and_then(|()| writer.write_str(&own));
        };
        buffer.clear();
        let result = compose(&mut buffer).and_then(|()| writer.write_str(&buffer));
        // One huge value does not pin its memory for the thread's life.
        if buffer.capacity() > 64 * 1024 {
            *buffer = String::new();
        }
        result
    })
}

/// RFC 3339 in UTC with microseconds (`2026-12-02T19:53:04.194745Z`). The date and time up to
/// the second is formatted once per second per thread; a line adds only its microseconds.
fn write_timestamp(line: &mut String) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let (seconds, micros) = unix_time();
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != seconds {
            let time = i64::try_from(seconds)
                .ok()
                .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
                .unwrap_or_default();
            *prefix = time.format("%Y-%m-%dT%H:%M:%S").to_string();
            *cached = seconds;
        }
        line.push_str(prefix);
    });
    let mut digits = *b".000000Z";
    let mut rest = micros;
    for digit in digits[1..7].iter_mut().rev() {
        // `rest % 10` is below 10.
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    line.push_str(std::str::from_utf8(&digits).unwrap_or(".000000Z"));
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

fn write_span<S>(line: &mut String, span: &SpanRef<'_, S>)
where
    S: for<'lookup> LookupSpan<'lookup>,
{
    line.push('{');
    let extensions = span.extensions();
    if let Some(fields) = extensions.get::<FormattedFields<JsonMembers>>()
        && !fields.fields.is_empty()
    {
        line.push_str(&fields.fields);
        line.push(',');
    }
    line.push_str("\"name\":");
    write_string(line, span.name());
    line.push('}');
}

/// Writes each recorded field as a JSON member, a comma before all but the first.
struct Members<'a> {
    out: &'a mut String,
    first: bool,
    result: fmt::Result,
}

impl<'a> Members<'a> {
    fn new(out: &'a mut String, first: bool) -> Self {
        Self {
            out,
            first,
            result: Ok(()),
        }
    }

    fn member(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        }
        write_string(self.out, field.name());
        self.out.push(':');
        self.result = value(self.out);
    }
}

impl Visit for Members<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| {
            write_string(out, value);
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.push('"');
            write!(Escaped(out), "{value:?}")?;
            out.push('"');
            Ok(())
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |out| {
            out.push('"');
            write!(Escaped(out), "{value}")?;
            out.push('"');
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| {
            out.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        self.member(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.push_str("null");
                Ok(())
            }
        });
    }
}

fn write_string(out: &mut String, value: &str) {
    out.push('"');
    escape_into(out, value);
    out.push('"');
}

/// Escapes what it is given for the inside of a JSON string (formatted values).
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, value: &str) -> fmt::Result {
        escape_into(self.0, value);
        Ok(())
    }
}

/// Appends `value` escaped for the inside of a JSON string: quotes, backslashes and every
/// control character (terminal escape sequences included).
fn escape_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if is_plain(value) {
        out.push_str(value);
        return;
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
        out.push_str(&value[plain..index]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
        plain = index + 1;
    }
    out.push_str(&value[plain..]);
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
    fn a_value_that_logs_while_its_line_is_composed_leaves_the_line_whole() {
        struct Logs;
        impl fmt::Debug for Logs {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                tracing::info!(inner = "yes", "logged from a Debug impl");
                formatter.write_str("the outer value")
            }
        }
        let lines = capture(|| {
            let span = tracing::info_span!("request", request_id = "r-2");
            let _span = span.enter();
            tracing::info!(value = ?Logs, "outer");
        });
        // tracing drops an event dispatched from inside another one.
        let outer = lines.last().unwrap();
        assert_eq!(outer["message"], "outer");
        assert_eq!(outer["value"], "the outer value");
        assert_eq!(outer["span"]["request_id"], "r-2");
    }

    #[test]
    fn an_event_outside_any_span_has_no_span_keys() {
        let lines = capture(|| tracing::error!(count = -4_i64, "alone"));
        assert_eq!(lines[0]["count"], -4);
        assert_eq!(lines[0]["level"], "ERROR");
        assert!(lines[0].get("spans").is_none());
    }
}
