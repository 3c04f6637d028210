//! Traces over OTLP/HTTP (JSON encoding), when `traces.otlp_endpoint` is set; with it empty
//! no layer is installed and nothing is recorded.
//!
//! Every span of the service's crates that the log filter lets through becomes an OTLP span
//! (the spans below a request are created only while traces are exported). A span created with a
//! `traceparent` field (a request's `traceparent` header, an MCP request's
//! `_meta.traceparent`, a call arriving over a link between replicas) continues that trace;
//! any other continues its parent's, or starts one. Span fields become attributes; the spans'
//! fields are chosen so that none carries a secret (no token, key, cookie or query string).
//! Finished spans are queued without waiting (a full queue drops them, counted in
//! `otel_spans_dropped_total`) and posted in batches by a thread of their own.

use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};
#[cfg(test)]
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Finished spans waiting for the exporter.
const QUEUE: usize = 8192;
/// Spans per request to the collector, at most.
const BATCH: usize = 512;
/// A partial batch is sent after this long.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// One export may take this long; then its spans are dropped.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans are posted: `http://host:port[/prefix]`, to `{prefix}/v1/traces`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    authority: String,
    path: String,
}

impl Endpoint {
    /// Parses `traces.otlp_endpoint`. Only `http://`: send to a collector beside the replica,
    /// which forwards over TLS.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(raw)
            .map_err(|err| anyhow::anyhow!("key `traces.otlp_endpoint`: {err}"))?;
        if url.scheme() != "http" || url.query().is_some() || !url.username().is_empty() {
            anyhow::bail!(
                "key `traces.otlp_endpoint`: use http://host:port of an OpenTelemetry collector \
                 (no credentials, no query)"
            );
        }
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("key `traces.otlp_endpoint`: no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(Self {
            authority: if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            },
            path: format!("{}/v1/traces", url.path().trim_end_matches('/')),
        })
    }
}

enum Item {
    Span(Value),
    /// Send what is queued, then answer.
    Flush(std::sync::mpsc::Sender<()>),
}

static QUEUE_SENDER: OnceLock<SyncSender<Item>> = OnceLock::new();

/// The layer that records spans, and the thread that exports them.
pub fn layer(endpoint: Endpoint, service_name: &str) -> anyhow::Result<OtlpLayer> {
    let (queue, receiver) = sync_channel(QUEUE);
    let resource = json!({
        "attributes": [
            attribute("service.name", &Value::from(service_name)),
            attribute("service.version", &Value::from(env!("CARGO_PKG_VERSION"))),
            attribute("service.instance.id", &Value::from(uuid::Uuid::new_v4().to_string())),
        ],
    });
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || export(&receiver, &endpoint, &resource))?;
    let _ = QUEUE_SENDER.set(queue.clone());
    vocabulary::trace::install(current_traceparent);
    Ok(OtlpLayer { queue })
}

/// Sends the spans queued so far, waiting at most `within`. Nothing to do without a layer.
pub fn flush(within: Duration) {
    let Some(queue) = QUEUE_SENDER.get() else {
        return;
    };
    let (done, sent) = std::sync::mpsc::channel();
    if queue.send(Item::Flush(done)).is_ok() {
        let _ = sent.recv_timeout(within);
    }
}

/// The current span's context, for passing on (registered with [`vocabulary::trace`]).
fn current_traceparent() -> Option<String> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            let extensions = span.extensions();
            let data = extensions.get::<SpanData>()?;
            Some(vocabulary::trace::format(&data.trace_id, &data.span_id))
        })
        .flatten()
}

struct SpanData {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    /// The parent is in another process (a header, a link, `_meta`).
    remote_parent: bool,
    start_unix_nanos: u128,
    attributes: Vec<(&'static str, Value)>,
}

#[derive(Default)]
struct Fields {
    traceparent: Option<String>,
    attributes: Vec<(&'static str, Value)>,
}

impl Fields {
    fn add(&mut self, field: &Field, value: Value) {
        match field.name() {
            "traceparent" => self.traceparent = value.as_str().map(str::to_owned),
            "message" => {}
            name => self.attributes.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.add(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.add(field, Value::from(format!("{value:?}")));
    }
}

/// Records the service's spans (see the module documentation).
pub struct OtlpLayer {
    queue: SyncSender<Item>,
}

impl std::fmt::Debug for OtlpLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpLayer").finish_non_exhaustive()
    }
}

impl OtlpLayer {
    /// Spans of the service's own crates; not the libraries'.
    fn wants(metadata: &Metadata<'_>) -> bool {
        const OWN: [&str; 5] = ["crosstrade", "mcp", "oauth", "addon_bridge", "store"];
        metadata.is_span()
            && OWN.iter().any(|own| {
                metadata
                    .target()
                    .strip_prefix(own)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if !Self::wants(span.metadata()) {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let remote = fields
            .traceparent
            .as_deref()
            .and_then(vocabulary::trace::parse);
        // The nearest recorded ancestor (a library's span in between is not recorded).
        let inherited = || {
            span.scope().skip(1).find_map(|ancestor| {
                let extensions = ancestor.extensions();
                let data = extensions.get::<SpanData>()?;
                Some((data.trace_id, data.span_id))
            })
        };
        let (trace_id, parent, remote_parent) = match remote {
            Some((trace_id, parent)) => (trace_id, Some(parent), true),
            None => match inherited() {
                Some((trace_id, parent)) => (trace_id, Some(parent), false),
                None => (random(), None, false),
            },
        };
        span.extensions_mut().insert(SpanData {
            trace_id,
            span_id: random(),
            parent,
            remote_parent,
            start_unix_nanos: unix_nanos(),
            attributes: fields.attributes,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(data) = span.extensions_mut().get_mut::<SpanData>() {
            data.attributes.extend(fields.attributes);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        // Server: the first span in this process of a trace; internal otherwise.
        let kind = if data.remote_parent || data.parent.is_none() {
            2
        } else {
            1
        };
        let attributes: Vec<Value> = data
            .attributes
            .iter()
            .map(|(key, value)| attribute(key, value))
            .collect();
        let record = json!({
            "traceId": hex::encode(data.trace_id),
            "spanId": hex::encode(data.span_id),
            "parentSpanId": data.parent.map(hex::encode).unwrap_or_default(),
            "name": span.name(),
            "kind": kind,
            "startTimeUnixNano": data.start_unix_nanos.to_string(),
            "endTimeUnixNano": unix_nanos().to_string(),
            "attributes": attributes,
        });
        if let Err(TrySendError::Full(_)) = self.queue.try_send(Item::Span(record)) {
            metrics::counter!("otel_spans_dropped_total").increment(1);
        }
    }
}

/// An OTLP `KeyValue` (JSON mapping: 64-bit integers as decimal strings).
fn attribute(key: &str, value: &Value) -> Value {
    let value = match value {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_f64() => json!({ "doubleValue": n }),
        Value::Number(n) => json!({ "intValue": n.to_string() }),
        Value::String(s) => json!({ "stringValue": s }),
        other => json!({ "stringValue": other.to_string() }),
    };
    json!({ "key": key, "value": value })
}

/// Trace and span ids: unique, not secret, so a per-thread generator (SplitMix64) seeded once,
/// instead of a system call per span.
fn random<const N: usize>() -> [u8; N] {
    thread_local! {
        // std seeds each RandomState from the OS (with its own fallback).
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8),
        );
    }
    let mut bytes = [0u8; N];
    for chunk in bytes.chunks_mut(8) {
        let next = STATE.with(|state| {
            let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            state.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        });
        chunk.copy_from_slice(&next.to_le_bytes()[..chunk.len()]);
    }
    bytes
}

#[expect(
    clippy::disallowed_methods,
    reason = "span timestamps are wall-clock readings, never compared with an expiry"
)]
fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos())
}

/// The exporter thread: batches spans and posts them; a failed post drops its batch.
fn export(receiver: &Receiver<Item>, endpoint: &Endpoint, resource: &Value) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut batch: Vec<Value> = Vec::new();
    let mut last_sent = Instant::now();
    loop {
        let mut flushed = None;
        match receiver.recv_timeout(FLUSH_EVERY) {
            Ok(Item::Span(span)) => batch.push(span),
            Ok(Item::Flush(done)) => flushed = Some(done),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let due = batch.len() >= BATCH || last_sent.elapsed() >= FLUSH_EVERY || flushed.is_some();
        if due && !batch.is_empty() {
            let body = json!({
                "resourceSpans": [{
                    "resource": resource,
                    "scopeSpans": [{
                        "scope": { "name": "crosstrade", "version": env!("CARGO_PKG_VERSION") },
                        "spans": std::mem::take(&mut batch),
                    }],
                }],
            });
            let posted = runtime.block_on(async {
                tokio::time::timeout(POST_TIMEOUT, post(endpoint, body.to_string())).await
            });
            match posted {
                Ok(Ok(status)) if (200..300).contains(&status) => {}
                Ok(Ok(status)) => tracing::warn!(status, "the trace collector refused a batch"),
                Ok(Err(err)) => tracing::warn!(error = %err, "sending traces failed"),
                Err(_) => tracing::warn!("sending traces timed out"),
            }
        }
        if due {
            last_sent = Instant::now();
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

async fn post(endpoint: &Endpoint, body: String) -> Result<u16, String> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let stream = tokio::net::TcpStream::connect(&endpoint.authority)
        .await
        .map_err(|err| err.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::post(endpoint.path.as_str())
        .header(hyper::header::HOST, endpoint.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())?;
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    fn spans(receiver: &Receiver<Item>) -> Vec<Value> {
        receiver
            .try_iter()
            .filter_map(|item| match item {
                Item::Span(span) => Some(span),
                Item::Flush(_) => None,
            })
            .collect()
    }

    #[test]
    fn children_continue_their_parents_trace_and_a_traceparent_field_continues_a_remote_one() {
        let (queue, receiver) = sync_channel(64);
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(OtlpLayer { queue })
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
        tracing::subscriber::with_default(subscriber, || {
            let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let request =
                tracing::info_span!("request", path = "/v1/api/mcp", traceparent = Some(remote));
            request.in_scope(|| {
                let auth = tracing::info_span!("auth");
                auth.in_scope(|| {
                    assert_eq!(
                        current_traceparent().map(|tp| tp[..35].to_owned()),
                        Some("00-4bf92f3577b34da6a3ce929d0e0e4736".to_owned())
                    );
                });
            });
            drop(request);
            let _root =
                tracing::info_span!("request", path = "/healthz", traceparent = None::<&str>);
        });
        let spans = spans(&receiver);
        let named = |name: &str| spans.iter().find(|s| s["name"] == name).cloned().unwrap();
        let request = named("request");
        let auth = named("auth");
        assert_eq!(request["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(request["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(request["kind"], 2);
        assert_eq!(auth["traceId"], request["traceId"]);
        assert_eq!(auth["parentSpanId"], request["spanId"]);
        assert_eq!(auth["kind"], 1);
        let root = spans
            .iter()
            .find(|s| s["name"] == "request" && s["parentSpanId"] == "")
            .unwrap();
        assert_ne!(root["traceId"], request["traceId"]);
        assert_eq!(
            root["attributes"],
            json!([{"key": "path", "value": {"stringValue": "/healthz"}}])
        );
    }

    #[test]
    fn endpoints() {
        let endpoint = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (endpoint.authority.as_str(), endpoint.path.as_str()),
            ("127.0.0.1:4318", "/v1/traces")
        );
        let endpoint = Endpoint::parse("http://collector/otlp/").unwrap();
        assert_eq!(
            (endpoint.authority.as_str(), endpoint.path.as_str()),
            ("collector:80", "/otlp/v1/traces")
        );
        for bad in [
            "https://collector:4318",
            "http://user:pw@collector",
            "http://c/?x=1",
            "collector:4318",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
