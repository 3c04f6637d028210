//! W3C trace context (`traceparent`) as the crates pass it on: into the Add-On's call frames,
//! over links between replicas. The binary installs where the current span's context comes from
//! when it exports traces; without that, [`current`] is `None` and nothing is passed on.

use std::sync::OnceLock;

static CURRENT: OnceLock<fn() -> Option<String>> = OnceLock::new();

/// Sets where [`current`] reads the current span's context. Only the first call counts.
pub fn install(current: fn() -> Option<String>) {
    let _ = CURRENT.set(current);
}

/// Whether traces are exported (the binary installed [`current`]'s source).
pub fn exporting() -> bool {
    CURRENT.get().is_some()
}

/// An INFO span that exists only while traces are exported (`Span::none()` otherwise), for the
/// spans below a request: with traces off they cost one atomic load.
#[macro_export]
macro_rules! trace_span {
    ($($arg:tt)*) => {
        if $crate::trace::exporting() {
            ::tracing::info_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The current span's `traceparent`, when traces are exported.
pub fn current() -> Option<String> {
    CURRENT.get().and_then(|current| current())
}

/// The trace id and parent span id of a well-formed version-00 `traceparent`
/// (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero).
pub fn parse(traceparent: &str) -> Option<([u8; 16], [u8; 8])> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "00" || flags.len() != 2 {
        return None;
    }
    u8::from_str_radix(flags, 16).ok()?;
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    hex::decode_to_slice(trace, &mut trace_id).ok()?;
    hex::decode_to_slice(span, &mut span_id).ok()?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id))
}

/// A sampled version-00 `traceparent`.
pub fn format(trace_id: &[u8; 16], span_id: &[u8; 8]) -> String {
    format!("00-{}-{}-01", hex::encode(trace_id), hex::encode(span_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (trace, span) = parse(tp).unwrap();
        assert_eq!(format(&trace, &span), tp);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(current(), None);
    }
}
