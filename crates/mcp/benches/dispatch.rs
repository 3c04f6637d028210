//! Micro-benchmarks of the MCP endpoint's own work: JSON-RPC parsing, argument validation,
//! and whole POSTs through the router (bearer extraction, dispatch, the Elite gate from the tier
//! cache, the reply) with a verifier that accepts one token and no Add-On.
//!
//! `cargo bench -p mcp` (needs PostgreSQL binaries, like the tests: the tier cache reads one
//! account from a throw-away database). CI only compiles it.
#![expect(clippy::unwrap_used, reason = "benchmark set-up")]

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use mcp::auth::{BoxFuture, Principal, Scope, TokenRejection, TokenVerifier};
use mcp::catalog::catalog;
use mcp::protocol::classify;
use mcp::{McpSettings, McpState, NotConnectedRelay};
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"GetMcpCapabilities","arguments":{}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;

struct OneToken(Principal);

impl TokenVerifier for OneToken {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, TokenRejection>> {
        Box::pin(async move {
            if token == "bench" {
                Ok(self.0.clone())
            } else {
                Err(TokenRejection::Unknown)
            }
        })
    }
}

fn parse(c: &mut Criterion) {
    c.bench_function("jsonrpc/parse tools/call", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_str(black_box(CALL)).unwrap();
            black_box(classify(value).is_ok())
        });
    });
}

fn validate(c: &mut Criterion) {
    let tool = catalog().get("PlaceOrder").unwrap();
    let arguments = json!({
        "account": "Sim101", "instrument": "ES 12-26", "action": "Buy", "order_type": "Limit",
        "quantity": 1, "limit_price": 5000.25, "idempotency_key": "bench-order-0001",
    });
    assert_eq!(tool.validate_arguments(&arguments), Ok(()));
    c.bench_function("arguments/validate PlaceOrder", |b| {
        b.iter(|| black_box(tool.validate_arguments(black_box(&arguments)).is_ok()));
    });
}

fn dispatch(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let router = runtime.block_on(async {
        let db = testkit::TestDb::new().await.pool().await;
        let user_id: Uuid = sqlx::query_scalar(
            "INSERT INTO users (email, password_hash, tier) \
             VALUES ('bench@example.com', 'none', 'elite') RETURNING id",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        let background = store::Background::start(&db);
        let tiers = store::tiers::TierCache::start(&background);
        // Recorded as the server records every call (written in the background).
        let activity = store::activity::Recorder::start(
            db.clone(),
            store::clock::Clock::system(),
            &background,
        );
        while !tiers.is_listening() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let principal = Principal {
            user_id,
            client_id: "bench-client".into(),
            grant_id: Uuid::new_v4(),
            scope: Scope::Trade,
        };
        let state = McpState::new(
            McpSettings {
                public_url: "http://127.0.0.1:8080".into(),
                allowed_origins: Vec::new(),
                allow_loopback_origins: false,
                server_version: "bench".into(),
                streams: mcp::StreamLimits::default(),
            },
            db,
            Arc::new(OneToken(principal)),
            Arc::new(NotConnectedRelay::new()),
        )
        .with_tier_cache(tiers)
        .with_activity(activity);
        axum::Router::new().merge(mcp::router()).with_state(state)
    });
    let post = |body: &'static str| {
        Request::post("/v1/api/mcp")
            .header("authorization", "Bearer bench")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(Body::from(body))
            .unwrap()
    };
    for (name, body) in [
        ("tools/call GetMcpCapabilities", CALL),
        ("tools/list", LIST),
    ] {
        let first = runtime
            .block_on(router.clone().oneshot(post(body)))
            .unwrap();
        assert_eq!(first.status(), 200, "{name}");
        c.bench_function(&format!("dispatch/{name}"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let response = router.clone().oneshot(post(body)).await.unwrap();
                    black_box(axum::body::to_bytes(response.into_body(), usize::MAX).await)
                })
            });
        });
    }
}

criterion_group!(benches, parse, validate, dispatch);
criterion_main!(benches);
