//! The server under faults, with load running: PostgreSQL stopped and started again, the server
//! killed with SIGKILL mid-write, SIGTERM mid-load. Each scenario prints its figures (run with
//! `--nocapture` to see them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use store::users::Tier;
use testkit::oauth::{Endpoint, Flow, PASSWORD};

use crate::support::{ServerProcess, http, run, stderr};

/// One request of a load, as the client saw it.
#[derive(Debug, Clone)]
struct Sample {
    kind: &'static str,
    sent_at: Duration,
    latency: Duration,
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

type Samples = Arc<Mutex<Vec<Sample>>>;

async fn tools_call(endpoint: &Endpoint, access: &str) -> reqwest::Result<reqwest::Response> {
    endpoint
        .http
        .post(endpoint.resource())
        .bearer_auth(access)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "GetMcpCapabilities", "arguments": {}}}))
        .send()
        .await
}

async fn record(
    samples: &Samples,
    kind: &'static str,
    origin: Instant,
    sent: Instant,
    response: reqwest::Result<reqwest::Response>,
) -> Option<Value> {
    let latency = sent.elapsed();
    let (status, retry_after, body) = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|value| value.to_str().unwrap().to_owned());
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            (status, retry_after, body)
        }
        // The client gave up (10 s): recorded as a hang.
        Err(_) => (0, None, Value::Null),
    };
    samples.lock().unwrap().push(Sample {
        kind,
        sent_at: sent.duration_since(origin),
        latency,
        status,
        body: body.clone(),
        retry_after,
    });
    (status == 200).then_some(body)
}

async fn signed_up(env: &[(&str, &str)], email: &str) {
    let added = run(
        env,
        &[
            "users",
            "add",
            "--email",
            email,
            "--tier",
            Tier::Elite.as_str(),
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success(), "{}", stderr(&added));
}

#[tokio::test]
async fn a_database_outage_under_load_fails_fast_recovers_by_itself_and_keeps_revocations() {
    let private = testkit::private_cluster();
    let url = private.cluster.url("postgres");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CROSSTRADE_DATABASE__ACQUIRE_TIMEOUT_MS", "1000"),
        (
            "CROSSTRADE_RATE_LIMITS__TOKEN_REQUESTS_PER_MINUTE",
            "100000",
        ),
    ];
    signed_up(&env, "outage@example.com").await;
    let server = ServerProcess::start("serve", &env);
    let endpoint = Endpoint::new(&server.url(""));
    let client = http();

    let mut flow = Flow::new(&endpoint, "outage@example.com").await;
    let live = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    let revoked = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    let live_access = live["access_token"].as_str().unwrap().to_owned();
    let revoked_access = revoked["access_token"].as_str().unwrap().to_owned();
    let gone = endpoint
        .form(
            "/v1/oauth/mcp/revoke",
            &[
                ("token", revoked["refresh_token"].as_str().unwrap()),
                ("client_id", &flow.client_id),
            ],
        )
        .await;
    assert_eq!(gone.status(), 200);
    assert_eq!(
        tools_call(&endpoint, &revoked_access)
            .await
            .unwrap()
            .status(),
        401
    );

    // Load: tool calls with a live and a revoked token, and a refresh chain.
    let origin = Instant::now();
    let samples: Samples = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (kind, access) in [
        ("call", live_access.clone()),
        ("call", live_access.clone()),
        ("revoked", revoked_access.clone()),
    ] {
        let (endpoint, samples, stop) = (endpoint.clone(), Arc::clone(&samples), Arc::clone(&stop));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let response = tools_call(&endpoint, &access).await;
                record(&samples, kind, origin, sent, response).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    {
        let (endpoint, samples, stop) = (endpoint.clone(), Arc::clone(&samples), Arc::clone(&stop));
        let client_id = flow.client_id.clone();
        let mut refresh = live["refresh_token"].as_str().unwrap().to_owned();
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let response = endpoint
                    .token(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &refresh),
                        ("client_id", &client_id),
                    ])
                    .await;
                if let Some(body) = record(&samples, "refresh", origin, sent, Ok(response)).await {
                    refresh = body["refresh_token"].as_str().unwrap().to_owned();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cluster = private.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();
    let down_at = origin.elapsed();
    let unready = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(unready.status(), 503);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cluster = private.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.start())
        .await
        .unwrap()
        .unwrap();
    let up_at = origin.elapsed();

    let mut ready_at = None;
    let mut serving_at = None;
    while origin.elapsed() < up_at + Duration::from_secs(10) {
        if ready_at.is_none()
            && client
                .get(server.url("/readyz"))
                .send()
                .await
                .unwrap()
                .status()
                == 200
        {
            ready_at = Some(origin.elapsed());
        }
        if serving_at.is_none() {
            serving_at = samples
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.kind == "call" && s.sent_at > up_at && s.status == 200)
                .map(|s| s.sent_at + s.latency);
        }
        if ready_at.is_some() && serving_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let ready_after = ready_at.expect("readyz never returned to 200") - up_at;
    let serving_after = serving_at.expect("tool calls never succeeded again") - up_at;

    let samples = samples.lock().unwrap().clone();
    let slowest = samples.iter().map(|s| s.latency).max().unwrap();
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent_at > down_at && s.sent_at + s.latency < up_at)
        .collect();
    let count = |kind: &str, status: u16| {
        samples
            .iter()
            .filter(|s| s.kind == kind && s.status == status)
            .count()
    };
    // No request hung: each answered well within the 30 s request timeout.
    assert!(slowest < Duration::from_secs(5), "slowest {slowest:?}");
    // Requests that need the database failed fast and cleanly while it was down.
    assert!(
        during.len() > 20,
        "only {} requests during the outage",
        during.len()
    );
    for sample in &during {
        match sample.kind {
            "call" | "refresh" => {
                assert_eq!(sample.status, 503, "{sample:?}");
                assert_eq!(sample.body["error"], "server_error", "{sample:?}");
                assert!(sample.retry_after.is_some(), "{sample:?}");
            }
            _ => assert!([401, 503].contains(&sample.status), "{sample:?}"),
        }
    }
    // The revoked grant was never usable: not before, during or after.
    let revoked_statuses: Vec<u16> = samples
        .iter()
        .filter(|s| s.kind == "revoked")
        .map(|s| s.status)
        .collect();
    assert!(
        revoked_statuses
            .iter()
            .all(|status| [401, 503].contains(status)),
        "{revoked_statuses:?}"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.kind == "revoked" && s.sent_at > up_at && s.status == 401)
    );
    // Recovery without a restart, within 5 s.
    assert!(
        ready_after < Duration::from_secs(5),
        "ready after {ready_after:?}"
    );
    assert!(
        serving_after < Duration::from_secs(5),
        "serving after {serving_after:?}"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.kind == "refresh" && s.sent_at > up_at && s.status == 200),
        "the refresh chain did not survive the outage"
    );

    // The revocation listener is back: a grant ended elsewhere (another replica, an operator)
    // is refused here at once, even with the grant cached.
    assert_eq!(
        tools_call(&endpoint, &live_access).await.unwrap().status(),
        200
    );
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE grants SET revoked_at = now(), revoked_reason = 'incident' WHERE revoked_at IS NULL")
        .execute(&db)
        .await
        .unwrap();
    let ended = Instant::now();
    let mut refused_after = None;
    while ended.elapsed() < Duration::from_secs(2) {
        if tools_call(&endpoint, &live_access).await.unwrap().status() == 401 {
            refused_after = Some(ended.elapsed());
            break;
        }
    }
    let refused_after = refused_after.expect("a grant ended in the database stayed usable");

    // The listener's own connection dies and a grant ends before it is back: the notification
    // is lost, yet the cached grant is not served.
    let fresh = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    let fresh_access = fresh["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        tools_call(&endpoint, &fresh_access).await.unwrap().status(),
        200
    );
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "no listener connection found");
    sqlx::query("UPDATE grants SET revoked_at = now(), revoked_reason = 'incident' WHERE revoked_at IS NULL")
        .execute(&db)
        .await
        .unwrap();
    let ended = Instant::now();
    let mut statuses = Vec::new();
    while ended.elapsed() < Duration::from_secs(2) {
        statuses.push(
            tools_call(&endpoint, &fresh_access)
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.contains(&401), "{statuses:?}");
    assert!(
        !statuses.contains(&200),
        "a revoked grant was served: {statuses:?}"
    );

    eprintln!(
        "database outage: down {:.1} s; {} requests during it (all 503 server_error with Retry-After, \
         or 401 for the revoked grant); slowest answer {slowest:?}; /readyz 200 {ready_after:?} and \
         tool calls 200 {serving_after:?} after PostgreSQL came back; calls 200/503: {}/{}, \
         refreshes 200/503: {}/{}, revoked-token calls 200: 0 of {}; a grant ended in the database \
         refused after {refused_after:?}",
        (up_at - down_at).as_secs_f64(),
        during.len(),
        count("call", 200),
        count("call", 503),
        count("refresh", 200),
        count("refresh", 503),
        revoked_statuses.len(),
    );
    db.close().await;
    assert!(server.terminate().success());
}
