//! Traces over OTLP/HTTP: two replicas export to a collector stand-in on loopback that accepts
//! OTLP/HTTP JSON as a collector does; a tool call made on B to the Add-On on A is one trace
//! from B's request (continuing the caller's `traceparent`) through auth, dispatch and the
//! relay, across the link to A, and into the Add-On's call frame; one made on C, which has no
//! link, continues on A through PostgreSQL. No secret is in any span.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use testkit::oauth::Endpoint;
use testkit::wait::eventually;

use crate::addon_path::{addon_connected, sim_options, trade_token};
use crate::support::{ServerProcess, server_with_user_and};

/// Every span posted to the stand-in, with its resource's `service.instance.id`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Value)>>>,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    async fn start(&self) -> String {
        let collector = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(async move |headers: HeaderMap, body: Bytes| {
                if headers.get("content-type").and_then(|v| v.to_str().ok())
                    != Some("application/json")
                {
                    return StatusCode::UNSUPPORTED_MEDIA_TYPE;
                }
                let text = String::from_utf8_lossy(&body).into_owned();
                let Ok(request) = serde_json::from_str::<Value>(&text) else {
                    return StatusCode::BAD_REQUEST;
                };
                collector.bodies.lock().unwrap().push(text);
                for resource in request["resourceSpans"].as_array().into_iter().flatten() {
                    let instance = attribute(&resource["resource"], "service.instance.id");
                    for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                        for span in scope["spans"].as_array().into_iter().flatten() {
                            collector
                                .spans
                                .lock()
                                .unwrap()
                                .push((instance.clone(), span.clone()));
                        }
                    }
                }
                StatusCode::OK
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// The spans of `trace_id` named `name`.
    fn named(&self, trace_id: &str, name: &str) -> Vec<(String, Value)> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, span)| span["traceId"] == trace_id && span["name"] == name)
            .cloned()
            .collect()
    }
}

/// A string attribute of a span or resource.
fn attribute(holder: &Value, key: &str) -> String {
    holder["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .and_then(|a| a["value"]["stringValue"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A `tools/call` with `params` (arguments empty) and an optional `traceparent` header; its
/// body once answered 200.
async fn call(
    endpoint: &Endpoint,
    access: &str,
    traceparent: Option<&str>,
    params: Value,
) -> String {
    let mut params = params;
    params["arguments"] = json!({});
    let mut request = endpoint
        .http
        .post(endpoint.resource())
        .bearer_auth(access)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
                .to_string(),
        );
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let reply = request.send().await.unwrap();
    assert_eq!(reply.status(), 200);
    reply.text().await.unwrap()
}

#[tokio::test]
async fn a_relayed_call_is_one_trace_across_replicas_and_into_the_addon() {
    let collector = Collector::default();
    let otlp = collector.start().await;
    let env = [("CROSSTRADE_TRACES__OTLP_ENDPOINT", otlp.as_str())];
    let (db, replica_a, _) = server_with_user_and("traced@example.com", &env).await;
    let url = db.url();
    let replica_b = ServerProcess::start(
        "serve",
        &[
            ("DATABASE_URL", url.as_str()),
            ("CROSSTRADE_TRACES__OTLP_ENDPOINT", otlp.as_str()),
        ],
    );
    // C advertises no link (its admin listener is on every address): its calls to A's socket
    // go through PostgreSQL.
    let replica_c = ServerProcess::start(
        "serve",
        &[
            ("DATABASE_URL", url.as_str()),
            ("CROSSTRADE_TRACES__OTLP_ENDPOINT", otlp.as_str()),
            ("CROSSTRADE_ADMIN_LISTEN", "0.0.0.0:0"),
        ],
    );
    let on_b = Endpoint::new(&replica_b.url(""));
    let (_, access) = trade_token(&on_b, "traced@example.com").await;
    let scripts = testkit::scratch_dir("traces-scripts");
    let options = sim_options(&db, replica_a.addr, "traced@example.com", &[], &scripts);
    let addon_key = options.key.clone();
    let received = addon_sim::Received::default();
    let sim = tokio::spawn({
        let received = received.clone();
        async move { addon_sim::run_observed(&options, &received).await }
    });
    assert!(addon_connected(&on_b, &access).await);

    // The caller's trace, in the W3C header.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let answer = call(
        &on_b,
        &access,
        Some(&traceparent),
        json!({"name": "GetAccounts"}),
    )
    .await;
    assert!(answer.contains("Sim101"), "{answer}");

    assert!(
        eventually(Duration::from_secs(10), async || {
            !collector.named(trace_id, "addon.call.linked").is_empty()
                && !collector.named(trace_id, "request").is_empty()
        })
        .await,
        "the linked call's span reached the collector; spans: {:?}",
        collector.spans.lock().unwrap()
    );
    let (b_instance, request) = collector.named(trace_id, "request")[0].clone();
    assert_eq!(request["parentSpanId"], caller_span, "{request}");
    assert_eq!(request["kind"], 2);
    assert_eq!(attribute(&request, "path"), "/v1/api/mcp");
    let (_, auth) = collector.named(trace_id, "auth")[0].clone();
    assert_eq!(auth["parentSpanId"], request["spanId"]);
    let (_, dispatch) = collector.named(trace_id, "tools/call")[0].clone();
    assert_eq!(dispatch["parentSpanId"], request["spanId"]);
    assert_eq!(attribute(&dispatch, "tool"), "GetAccounts");
    let (relay_instance, relay) = collector.named(trace_id, "addon.call")[0].clone();
    assert_eq!(relay_instance, b_instance);
    assert_eq!(relay["parentSpanId"], dispatch["spanId"]);
    assert_eq!(attribute(&relay, "path"), "link");
    // On replica A, continued from B's relay span.
    let (a_instance, linked) = collector.named(trace_id, "addon.call.linked")[0].clone();
    assert_ne!(a_instance, b_instance, "exported by the other replica");
    assert_eq!(linked["parentSpanId"], relay["spanId"]);
    assert_eq!(linked["kind"], 2);
    // And into the Add-On's frame.
    let into_addon = received
        .traceparents()
        .into_iter()
        .flatten()
        .find(|tp| tp.contains(trace_id))
        .expect("the call frame carries the trace");
    assert_eq!(
        into_addon,
        format!("00-{trace_id}-{}-01", linked["spanId"].as_str().unwrap())
    );

    // Through PostgreSQL (from C), the trace continues on A too.
    let routed_trace = "5ce0e9a56015fec5aadfa328ae398115";
    let on_c = Endpoint::new(&replica_c.url(""));
    let traceparent = format!("00-{routed_trace}-{caller_span}-01");
    let answer = call(
        &on_c,
        &access,
        Some(&traceparent),
        json!({"name": "GetAccounts"}),
    )
    .await;
    assert!(answer.contains("Sim101"), "{answer}");
    assert!(
        eventually(Duration::from_secs(10), async || {
            !collector
                .named(routed_trace, "addon.call.claimed")
                .is_empty()
                && !collector.named(routed_trace, "addon.call").is_empty()
        })
        .await
    );
    let (c_instance, routed) = collector.named(routed_trace, "addon.call")[0].clone();
    assert_eq!(attribute(&routed, "path"), "database");
    let (claimed_instance, claimed) =
        collector.named(routed_trace, "addon.call.claimed")[0].clone();
    assert_eq!(claimed_instance, a_instance);
    assert_ne!(c_instance, a_instance);
    assert_eq!(claimed["parentSpanId"], routed["spanId"]);
    assert!(
        received.traceparents().into_iter().flatten().any(|tp| tp
            == format!(
                "00-{routed_trace}-{}-01",
                claimed["spanId"].as_str().unwrap()
            )),
        "the routed call's frame carries A's span"
    );

    // A client without the header may carry its trace in `_meta`.
    let meta_trace = "0af7651916cd43dd8448eb211c80319c";
    let meta = json!({"name": "GetMcpCapabilities",
        "_meta": {"traceparent": format!("00-{meta_trace}-b7ad6b7169203331-01")}});
    call(&on_b, &access, None, meta).await;
    assert!(
        eventually(Duration::from_secs(10), async || {
            !collector.named(meta_trace, "tools/call").is_empty()
        })
        .await
    );
    let (_, from_meta) = collector.named(meta_trace, "tools/call")[0].clone();
    assert_eq!(from_meta["parentSpanId"], "b7ad6b7169203331");

    // No secret in any span: the access token, the Add-On key, the bearer scheme's value.
    let bodies = collector.bodies.lock().unwrap().join("\n");
    for secret in [access.as_str(), addon_key.as_str()] {
        assert!(!bodies.contains(secret), "a secret reached the collector");
    }
    assert!(
        !bodies.contains("Bearer"),
        "an Authorization value reached the collector"
    );

    sim.abort();
    assert!(replica_b.terminate().success());
    assert!(replica_c.terminate().success());
    drop(replica_a);
    std::fs::remove_dir_all(&scripts).ok();
}
