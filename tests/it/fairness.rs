//! Per-account fairness on the MCP endpoint through the real server: an account holding its
//! cap of Add-On calls or SSE streams gets 429 with `Retry-After`, while another account's tool
//! calls and streams and the OAuth endpoints keep answering.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::oauth::Endpoint;
use testkit::wait::{wait_for, wait_until};

use crate::addon_path::{addon_connected, sim_options, trade_token};
use crate::support::{add_elite_user, metrics_show, server_with_user_and, tools_call};

/// Generous: only to turn a hang into a failure, never a latency assertion.
const ANSWERS_WITHIN: Duration = Duration::from_secs(10);

async fn assert_too_many(response: reqwest::Response) {
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}

/// OAuth discovery and the token endpoint answer (a bogus code is `invalid_grant`).
async fn oauth_answers(endpoint: &Endpoint) {
    let metadata = tokio::time::timeout(
        ANSWERS_WITHIN,
        endpoint
            .http
            .get(endpoint.url("/.well-known/oauth-authorization-server"))
            .send(),
    )
    .await
    .expect("metadata hung")
    .unwrap();
    assert_eq!(metadata.status(), 200);
    let token = tokio::time::timeout(
        ANSWERS_WITHIN,
        endpoint.token(&[
            ("grant_type", "authorization_code"),
            ("code", "not-a-code"),
            ("redirect_uri", "http://127.0.0.1/cb"),
            ("client_id", "nobody"),
            ("code_verifier", &"v".repeat(43)),
        ]),
    )
    .await
    .expect("token endpoint hung");
    // An unknown client: RFC 6749 §5.2 invalid_client.
    assert_eq!(token.status(), 401);
}

#[tokio::test]
async fn an_account_holding_its_addon_call_cap_gets_429_while_others_and_oauth_answer() {
    let (db, server, endpoint) = server_with_user_and(
        "busy@example.com",
        &[("CROSSTRADE_HTTP__MAX_ADDON_CALLS_PER_ACCOUNT", "2")],
    )
    .await;
    add_elite_user(&[("DATABASE_URL", db.url().as_str())], "calm@example.com");
    let (_, busy) = trade_token(&endpoint, "busy@example.com").await;
    let (_, calm) = trade_token(&endpoint, "calm@example.com").await;
    let scripts = testkit::scratch_dir("fair-calls");
    // The busy account's Add-On never answers workspace saves (30 s deadline): they stay in
    // flight while the probes run.
    let busy_sim = sim_options(
        &db,
        server.addr,
        "busy@example.com",
        &["SaveWorkspace"],
        &scripts,
    );
    let calm_sim = sim_options(&db, server.addr, "calm@example.com", &[], &scripts);
    let sims = [
        tokio::spawn(async move { addon_sim::run(&busy_sim).await }),
        tokio::spawn(async move { addon_sim::run(&calm_sim).await }),
    ];
    assert!(addon_connected(&endpoint, &busy).await);
    assert!(addon_connected(&endpoint, &calm).await);

    let save = json!({"name": "Held"});
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (endpoint, busy, save) = (endpoint.clone(), busy.clone(), save.clone());
            tokio::spawn(async move { tools_call(&endpoint, &busy, "SaveWorkspace", save).await })
        })
        .collect();
    // Both held calls must be in the bridge before the probes start, so a probe is not what
    // pushes one of them over the cap: wait until the replica reports them live.
    wait_until(
        "the held saves in the bridge",
        Duration::from_secs(10),
        async || metrics_show(&server, "addon_live_calls 2").await,
    )
    .await;
    let refused = wait_for(
        "a call refused beyond the per-account cap",
        Duration::from_secs(15),
        async || {
            assert!(
                held.iter().all(|call| !call.is_finished()),
                "a held save ended early"
            );
            let reply = tokio::time::timeout(
                ANSWERS_WITHIN,
                tools_call(&endpoint, &busy, "GetAccounts", json!({})),
            )
            .await
            .expect("a call of a saturated account hung");
            if reply.status() == 429 {
                return Some(reply);
            }
            assert_eq!(reply.status(), 200);
            None
        },
    )
    .await;
    assert_too_many(refused).await;

    // Meanwhile another account's tool calls and the OAuth endpoints answer.
    for _ in 0..5 {
        let reply = tokio::time::timeout(
            ANSWERS_WITHIN,
            tools_call(&endpoint, &calm, "GetAccounts", json!({})),
        )
        .await
        .expect("another account's call hung");
        assert_eq!(reply.status(), 200);
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["result"]["isError"], false, "{body}");
        oauth_answers(&endpoint).await;
    }
    // Still saturated (the saves are still held): still refused.
    assert_too_many(tools_call(&endpoint, &busy, "GetPositions", json!({})).await).await;
    assert!(held.iter().all(|call| !call.is_finished()));

    for task in held {
        task.abort();
    }
    for sim in sims {
        sim.abort();
    }
    std::fs::remove_dir_all(&scripts).ok();
}

async fn open_stream(endpoint: &Endpoint, access: &str) -> reqwest::Response {
    tokio::time::timeout(
        ANSWERS_WITHIN,
        endpoint
            .http
            .get(endpoint.resource())
            .bearer_auth(access)
            .header("mcp-protocol-version", "2025-11-25")
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .expect("opening a stream hung")
    .unwrap()
}

#[tokio::test]
async fn an_account_holding_its_stream_cap_gets_429_while_others_open_streams() {
    let (db, _server, endpoint) = server_with_user_and(
        "streamer@example.com",
        &[("CROSSTRADE_HTTP__MAX_STREAMS_PER_ACCOUNT", "2")],
    )
    .await;
    add_elite_user(&[("DATABASE_URL", db.url().as_str())], "quiet@example.com");
    let (_, streamer) = trade_token(&endpoint, "streamer@example.com").await;
    let (_, quiet) = trade_token(&endpoint, "quiet@example.com").await;

    let first = open_stream(&endpoint, &streamer).await;
    let second = open_stream(&endpoint, &streamer).await;
    for stream in [&first, &second] {
        assert_eq!(stream.status(), 200);
        assert_eq!(stream.headers()["content-type"], "text/event-stream");
    }
    assert_too_many(open_stream(&endpoint, &streamer).await).await;

    // Another account opens its streams and calls tools; OAuth answers.
    let other = open_stream(&endpoint, &quiet).await;
    assert_eq!(other.status(), 200);
    let reply = tools_call(&endpoint, &quiet, "GetMcpCapabilities", json!({})).await;
    assert_eq!(reply.status(), 200);
    oauth_answers(&endpoint).await;

    // A stream the client closes gives its slot back (noticed at the latest at the next
    // keep-alive, 15 s).
    drop(first);
    let reopened = wait_for(
        "the slot of a closed stream given back",
        Duration::from_secs(25),
        async || {
            let stream = open_stream(&endpoint, &streamer).await;
            if stream.status() == 200 {
                return Some(stream);
            }
            assert_eq!(stream.status(), 429);
            None
        },
    )
    .await;
    drop(reopened);
    drop(second);
}
