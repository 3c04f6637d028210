//! The server under faults, with load running: PostgreSQL stopped and started again, the server
//! killed with SIGKILL mid-write, SIGTERM mid-load. Each scenario prints its figures (run with
//! `--nocapture` to see them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::oauth::{Endpoint, Flow};
use testkit::wait::{eventually, wait_for, wait_until};

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

/// Whether a request of `kind` sent at or after `since` (from the start of the load) was
/// answered `status`.
fn answered(samples: &Samples, kind: &str, status: u16, since: Duration) -> bool {
    samples
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.kind == kind && s.sent_at >= since && s.status == status)
}

async fn tools_call(endpoint: &Endpoint, access: &str) -> reqwest::Result<reqwest::Response> {
    crate::support::try_tools_call(endpoint, access, "GetMcpCapabilities", json!({})).await
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
    crate::support::add_elite_user(&env, "outage@example.com");
    let server = ServerProcess::start("serve", &env);
    let endpoint = Endpoint::new(&server.url(""));
    let client = http();

    let mut flow = Flow::new(&endpoint, "outage@example.com").await;
    let live = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    let trade = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let trade_access = trade["access_token"].as_str().unwrap().to_owned();
    // The Add-On stays connected through the outage.
    let created = run(
        &env,
        &["addon-keys", "create", "--email", "outage@example.com"],
        "",
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let scripts = testkit::scratch_dir("outage-scripts");
    let options = addon_sim::Options {
        url: format!("ws://{}/v1/addon/ws", server.addr),
        key: crate::support::stdout(&created).trim().to_owned(),
        addon_version: addon_sim::DEFAULT_ADDON_VERSION.to_owned(),
        latency: Duration::ZERO,
        never_answer: Vec::new(),
        drop_on: None,
        backtest: Duration::from_secs(1),
        scripts_dir: scripts.clone(),
    };
    let sim = tokio::spawn(async move { addon_sim::run(&options).await });
    assert!(crate::addon_path::addon_connected(&endpoint, &trade_access).await);
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

    // The trader's account pages and their JSON API, with the browser session of the sign-in.
    {
        let (endpoint, samples, stop) = (endpoint.clone(), Arc::clone(&samples), Arc::clone(&stop));
        let cookie = flow.browser.cookie_header();
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                for (kind, path) in [("account", "/v1/account/ai-clients"), ("page", "/account")] {
                    let sent = Instant::now();
                    let response = endpoint
                        .http
                        .get(endpoint.url(path))
                        .header("cookie", &cookie)
                        .send()
                        .await;
                    record(&samples, kind, origin, sent, response).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }

    // The outage starts once every kind of load has been answered as usual.
    wait_until(
        "every kind of load answered",
        Duration::from_secs(10),
        async || {
            answered(&samples, "call", 200, Duration::ZERO)
                && answered(&samples, "revoked", 401, Duration::ZERO)
                && answered(&samples, "refresh", 200, Duration::ZERO)
                && answered(&samples, "account", 200, Duration::ZERO)
                && answered(&samples, "page", 200, Duration::ZERO)
        },
    )
    .await;
    let cluster = private.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();
    let down_at = origin.elapsed();
    // Until the revocation listener has read the closed connection, cached grants are still
    // trusted, as a moment before the stop: no revocation can be pending then, since each
    // one's notification precedes the connection's end on the wire.
    wait_until(
        "the revocation listener noticed the outage",
        Duration::from_secs(2),
        async || {
            crate::support::logged(
                &server,
                "revocation listener lost; grants are read from the database",
            )
        },
    )
    .await;
    let noticed_at = origin.elapsed();
    // Readiness comes from a probe every second, so it notices within about two.
    let unready = eventually(
        (down_at + Duration::from_secs(3)).saturating_sub(origin.elapsed()),
        async || {
            client
                .get(server.url("/readyz"))
                .send()
                .await
                .unwrap()
                .status()
                == 503
        },
    )
    .await;
    assert!(unready, "/readyz kept answering 200 with the database down");
    // The outage lasts three seconds.
    tokio::time::sleep((down_at + Duration::from_secs(3)).saturating_sub(origin.elapsed())).await;
    let cluster = private.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.start())
        .await
        .unwrap()
        .unwrap();
    let up_at = origin.elapsed();

    let mut ready_at = None;
    let mut serving_at = None;
    eventually(
        (up_at + Duration::from_secs(10)).saturating_sub(origin.elapsed()),
        async || {
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
            ready_at.is_some() && serving_at.is_some()
        },
    )
    .await;
    // The load runs on until the refresh chain and the revoked token have been answered after
    // the outage too; the checks below say which did not.
    eventually(Duration::from_secs(5), async || {
        answered(&samples, "refresh", 200, up_at)
            && answered(&samples, "revoked", 401, up_at)
            && answered(&samples, "account", 200, up_at)
            && answered(&samples, "page", 200, up_at)
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let ready_after = ready_at
        .expect("readyz never returned to 200")
        .saturating_sub(up_at);
    let serving_after = serving_at
        .expect("tool calls never succeeded again")
        .saturating_sub(up_at);

    let samples = samples.lock().unwrap().clone();
    let slowest = samples.iter().map(|s| s.latency).max().unwrap();
    for sample in samples
        .iter()
        .filter(|s| s.sent_at > down_at && s.sent_at <= noticed_at)
    {
        let expected: &[u16] = if sample.kind == "revoked" {
            &[401, 503]
        } else {
            &[200, 503]
        };
        assert!(expected.contains(&sample.status), "{sample:?}");
    }
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent_at > noticed_at && s.sent_at + s.latency < up_at)
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
            "account" => {
                assert_eq!(sample.status, 503, "{sample:?}");
                assert_eq!(sample.body["error"], "server_error", "{sample:?}");
                assert_eq!(sample.retry_after.as_deref(), Some("5"), "{sample:?}");
            }
            "page" => {
                assert_eq!(sample.status, 503, "{sample:?}");
                assert_eq!(sample.retry_after.as_deref(), Some("5"), "{sample:?}");
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
    for kind in ["account", "page"] {
        assert!(
            samples
                .iter()
                .any(|s| s.kind == kind && s.sent_at > up_at && s.status == 200),
            "the {kind} requests were not served again after the outage"
        );
    }

    // The Add-On path works again: its socket survived, its presence is back.
    let mut relayed_after = None;
    eventually(
        (up_at + Duration::from_secs(5)).saturating_sub(origin.elapsed()),
        async || {
            let reply =
                crate::support::tools_call(&endpoint, &trade_access, "GetAccounts", json!({}))
                    .await;
            if reply.status() == 200 {
                let body: Value = reply.json().await.unwrap();
                if body["result"]["isError"] == false {
                    relayed_after = Some(origin.elapsed().saturating_sub(up_at));
                    return true;
                }
            }
            false
        },
    )
    .await;
    let relayed_after = relayed_after.expect("Add-On calls did not recover within 5 s");
    assert!(!sim.is_finished(), "the Add-On socket was dropped");

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
    // After the outage the listener reconnects on its own schedule (requests meanwhile read
    // PostgreSQL): wait for its connection, then kill it.
    let killed: Vec<bool> = wait_for(
        "the listener connection to be back after the outage",
        Duration::from_secs(10),
        async || {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'",
            )
            .fetch_all(&db)
            .await
            .unwrap();
            (!killed.is_empty()).then_some(killed)
        },
    )
    .await;
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
         refreshes 200/503: {}/{}, revoked-token calls 200: 0 of {}; Add-On relays 200 \
         {relayed_after:?} after; a grant ended in the database refused after {refused_after:?}",
        up_at.saturating_sub(down_at).as_secs_f64(),
        during.len(),
        count("call", 200),
        count("call", 503),
        count("refresh", 200),
        count("refresh", 503),
        revoked_statuses.len(),
    );
    db.close().await;
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scripts).ok();
}

/// A token request that reports a dropped connection instead of panicking.
async fn try_token(
    endpoint: &Endpoint,
    params: &[(&str, &str)],
) -> reqwest::Result<reqwest::Response> {
    endpoint
        .http
        .post(endpoint.url("/v1/oauth/mcp/token"))
        .form(params)
        .send()
        .await
}

/// What the clients were told before the kill.
#[derive(Debug, Default)]
struct Acknowledged {
    clients: Vec<String>,
    /// (code, tokens) for each exchange answered 200.
    exchanges: Vec<(String, Value)>,
    /// The newest refresh token each chain was given.
    chains: Vec<Arc<Mutex<String>>>,
    rotations: usize,
}

#[tokio::test]
async fn sigkill_mid_writes_loses_nothing_acknowledged_and_doubles_nothing() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CROSSTRADE_RATE_LIMITS__REGISTRATIONS_PER_HOUR", "100000"),
        (
            "CROSSTRADE_RATE_LIMITS__TOKEN_REQUESTS_PER_MINUTE",
            "100000",
        ),
    ];
    crate::support::add_elite_user(&env, "crash@example.com");
    let server = ServerProcess::start("serve", &env);
    let endpoint = Endpoint::new(&server.url(""));

    // Codes waiting to be exchanged, and refresh chains to rotate.
    let mut coder = Flow::new(&endpoint, "crash@example.com").await;
    let mut codes = Vec::new();
    for _ in 0..24 {
        codes.push(coder.code(&endpoint, "mcp:read", "mcp:read").await);
    }
    let coder = Arc::new(coder);
    let mut chains = Vec::new();
    let mut rotator = Flow::new(&endpoint, "crash@example.com").await;
    for _ in 0..8 {
        let tokens = rotator.tokens(&endpoint, "mcp:read", "mcp:read").await;
        chains.push(Arc::new(Mutex::new(
            tokens["refresh_token"].as_str().unwrap().to_owned(),
        )));
    }
    let rotator = Arc::new(rotator);

    let acknowledged = Arc::new(Mutex::new(Acknowledged {
        chains: chains.clone(),
        ..Acknowledged::default()
    }));
    let queue = Arc::new(Mutex::new(codes.clone()));
    let mut load = Vec::new();
    for worker in 0..2 {
        let (endpoint, acknowledged) = (endpoint.clone(), Arc::clone(&acknowledged));
        load.push(tokio::spawn(async move {
            for n in 0.. {
                let Ok(response) = endpoint
                    .http
                    .post(endpoint.url("/v1/oauth/mcp/register"))
                    .json(&json!({"redirect_uris": [format!("https://crash-{worker}-{n}.example/cb")]}))
                    .send()
                    .await
                else {
                    return;
                };
                if response.status() == 201 {
                    let Ok(body) = response.json::<Value>().await else { return };
                    let client_id = body["client_id"].as_str().unwrap().to_owned();
                    acknowledged.lock().unwrap().clients.push(client_id);
                }
            }
        }));
    }
    for _ in 0..2 {
        let (endpoint, acknowledged, queue, coder) = (
            endpoint.clone(),
            Arc::clone(&acknowledged),
            Arc::clone(&queue),
            Arc::clone(&coder),
        );
        load.push(tokio::spawn(async move {
            loop {
                let Some(code) = queue.lock().unwrap().pop() else {
                    return;
                };
                let params = [
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", coder.redirect_uri.as_str()),
                    ("client_id", coder.client_id.as_str()),
                    ("code_verifier", coder.pkce.verifier.as_str()),
                ];
                let Ok(response) = try_token(&endpoint, &params).await else {
                    return;
                };
                if response.status() == 200 {
                    let Ok(tokens) = response.json::<Value>().await else {
                        return;
                    };
                    acknowledged.lock().unwrap().exchanges.push((code, tokens));
                }
                // Paced so that codes are still waiting when the kill comes.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for chain in &chains {
        let (endpoint, acknowledged, chain, rotator) = (
            endpoint.clone(),
            Arc::clone(&acknowledged),
            Arc::clone(chain),
            Arc::clone(&rotator),
        );
        load.push(tokio::spawn(async move {
            loop {
                let current = chain.lock().unwrap().clone();
                let params = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", current.as_str()),
                    ("client_id", rotator.client_id.as_str()),
                ];
                let Ok(response) = try_token(&endpoint, &params).await else {
                    return;
                };
                if response.status() != 200 {
                    continue;
                }
                let Ok(tokens) = response.json::<Value>().await else {
                    return;
                };
                *chain.lock().unwrap() = tokens["refresh_token"].as_str().unwrap().to_owned();
                acknowledged.lock().unwrap().rotations += 1;
            }
        }));
    }

    // The kill comes once every kind of write has been acknowledged at least once (the check
    // after the kill says which was not).
    eventually(Duration::from_secs(10), async || {
        let acknowledged = acknowledged.lock().unwrap();
        !acknowledged.clients.is_empty()
            && !acknowledged.exchanges.is_empty()
            && acknowledged.rotations > 0
    })
    .await;
    crate::support::signal(server.pid(), "KILL");
    for task in load {
        task.await.unwrap();
    }
    drop(server);
    let acknowledged = Arc::try_unwrap(acknowledged).unwrap().into_inner().unwrap();
    assert!(
        !acknowledged.clients.is_empty()
            && !acknowledged.exchanges.is_empty()
            && acknowledged.rotations > 0,
        "the kill came before any write: {acknowledged:?}"
    );

    let restarted = ServerProcess::start("serve", &env);
    let endpoint = Endpoint::new(&restarted.url(""));
    let pool = db.pool().await;

    // Every registration answered 201 exists.
    let clients: i64 =
        sqlx::query_scalar("SELECT count(*) FROM oauth_clients WHERE client_id = ANY($1)")
            .bind(&acknowledged.clients)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(clients, i64::try_from(acknowledged.clients.len()).unwrap());
    // Every exchange answered 200 gave tokens that work.
    for (_, tokens) in &acknowledged.exchanges {
        let access = tokens["access_token"].as_str().unwrap();
        assert_eq!(tools_call(&endpoint, access).await.unwrap().status(), 200);
    }
    // The newest refresh token of every chain works (a rotation committed unseen is covered by
    // the retry grace: the same successor is returned).
    for chain in &acknowledged.chains {
        let current = chain.lock().unwrap().clone();
        let response = rotator.refresh(&endpoint, &current).await;
        assert_eq!(response.status(), 200, "a refresh chain broke");
    }
    // No family has two live refresh tokens; no grant is half-written.
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT grant_id FROM refresh_tokens WHERE rotated_at IS NULL
         GROUP BY grant_id HAVING count(*) > 1) AS doubled",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(doubled, 0, "a refresh family has two live tokens");
    let tokenless: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM grants g
         WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = g.grant_id)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tokenless, 0, "a grant without its refresh token");
    let orphan_codes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM authorization_codes WHERE (used_at IS NULL) <> (grant_id IS NULL)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        orphan_codes, 0,
        "a code consumed without its grant, or the reverse"
    );
    // The AI Clients list shows exactly the live grants, each complete.
    let mut browser = rotator.browser.clone();
    let listed = browser
        .get(&endpoint, &endpoint.url("/v1/account/ai-clients"))
        .await;
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    let listed = listed["clients"].as_array().unwrap();
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM grants WHERE revoked_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(i64::try_from(listed.len()).unwrap(), live);
    for grant in listed {
        assert!(
            grant["client_id"].is_string() && grant["scope"] == "mcp:read",
            "{grant}"
        );
    }
    // No code is exchangeable twice: those acknowledged are spent; the rest work at most once.
    let spent: Vec<&String> = acknowledged
        .exchanges
        .iter()
        .map(|(code, _)| code)
        .collect();
    let mut late_successes = 0;
    for code in &codes {
        let first = coder.exchange(&endpoint, code).await.status();
        if spent.contains(&code) {
            assert_eq!(first, 400, "an acknowledged code was exchanged again");
        } else if first == 200 {
            late_successes += 1;
        }
        assert_eq!(coder.exchange(&endpoint, code).await.status(), 400);
    }

    eprintln!(
        "sigkill mid-writes: acknowledged before the kill: {} registrations, {} code exchanges, \
         {} refresh rotations across {} chains, {} codes not yet exchanged; after restart all registrations exist, all \
         acknowledged tokens work, every chain refreshes, 0 doubled refresh families, 0 \
         half-written grants or codes, {} never-acknowledged codes exchanged once, 0 exchanged twice",
        acknowledged.clients.len(),
        acknowledged.exchanges.len(),
        acknowledged.rotations,
        acknowledged.chains.len(),
        codes.len() - acknowledged.exchanges.len(),
        late_successes,
    );
    assert!(restarted.terminate().success());
}

#[tokio::test]
async fn sigterm_under_load_drains_in_flight_work_and_exits_0_within_the_grace_period() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (db, mut server, endpoint) = crate::support::server_with_user("drain@example.com").await;
    let (_, access) = crate::addon_path::trade_token(&endpoint, "drain@example.com").await;
    let scripts = testkit::scratch_dir("drain-scripts");
    let options = crate::addon_path::sim_options(
        &db,
        server.addr,
        "drain@example.com",
        &["GetAccounts"],
        &scripts,
    );
    let received = addon_sim::Received::default();
    let sim = tokio::spawn({
        let received = received.clone();
        async move { addon_sim::run_observed(&options, &received).await }
    });
    assert!(crate::addon_path::addon_connected(&endpoint, &access).await);

    // A relay the Add-On never answers, and a request whose body is still arriving.
    let pending = tokio::spawn({
        let (endpoint, access) = (endpoint.clone(), access.clone());
        async move {
            endpoint
                .http
                .post(endpoint.resource())
                .bearer_auth(&access)
                .header("mcp-protocol-version", "2025-11-25")
                .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "GetAccounts", "arguments": {}}}))
                .send()
                .await
        }
    });
    let mut uploading = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    uploading
        .write_all(
            b"POST /v1/oauth/mcp/token HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 24\r\n\r\ngrant_type=",
        )
        .await
        .unwrap();
    // An open server-to-client stream, as legacy clients keep.
    let mut stream = endpoint
        .http
        .get(endpoint.resource())
        .bearer_auth(&access)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let stream_ended = tokio::spawn(async move {
        while let Ok(Some(_)) = stream.chunk().await {}
        Instant::now()
    });
    // Both are in the server's hands: the relay has reached the Add-On, and the two of them are
    // the only requests in flight (the stream's permit ends with its head).
    tokio::time::timeout(Duration::from_secs(10), received.call("GetAccounts"))
        .await
        .expect("the pending relay reached the Add-On");
    wait_until(
        "the pending relay and the upload in flight",
        Duration::from_secs(10),
        async || crate::support::metrics_show(&server, "http_requests_in_flight 2").await,
    )
    .await;

    // Load: tool calls in a loop on 8 connections.
    let origin = Instant::now();
    let samples: Samples = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (endpoint, access, samples, stop) = (
            endpoint.clone(),
            access.clone(),
            Arc::clone(&samples),
            Arc::clone(&stop),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let response = tools_call(&endpoint, &access).await;
                let failed = response.is_err();
                record(&samples, "call", origin, sent, response).await;
                if failed {
                    return;
                }
            }
        }));
    }
    wait_until(
        "eight load calls answered",
        Duration::from_secs(10),
        async || {
            samples
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.status == 200)
                .count()
                >= 8
        },
    )
    .await;

    let signalled = Instant::now();
    let signalled_at = origin.elapsed();
    crate::support::signal(server.pid(), "TERM");
    wait_until(
        "the listening socket closed",
        Duration::from_secs(5),
        async || crate::support::logged(&server, "stopped accepting connections"),
    )
    .await;
    // No new connections.
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "a connection was accepted after SIGTERM"
    );
    // The upload in flight completes and is answered.
    uploading.write_all(b"refresh_token&x=1").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), uploading.read_to_end(&mut answer))
        .await
        .expect("the in-flight request was not answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid_request"), "{answer}");
    // The pending relay ends in 408; the Add-On gets a going-away close.
    let relay = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the pending relay was not answered")
        .unwrap()
        .unwrap();
    assert_eq!(relay.status(), 408);
    assert_eq!(
        relay.json::<Value>().await.unwrap()["error"],
        "addon_disconnected"
    );
    let close = tokio::time::timeout(Duration::from_secs(5), sim)
        .await
        .expect("the Add-On socket was not closed")
        .unwrap();
    assert_eq!(close.unwrap(), Some(1001));
    // The stream ends instead of holding the shutdown for the whole grace period.
    let stream_ended_at = tokio::time::timeout(Duration::from_secs(5), stream_ended)
        .await
        .expect("the SSE stream stayed open")
        .unwrap();
    assert!(stream_ended_at.duration_since(signalled) < Duration::from_secs(3));
    // Exit 0 within the grace period (10 s).
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("still running after the grace period");
    let exited_after = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(exited_after < Duration::from_secs(5), "{exited_after:?}");
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    // Every call answered was answered in full: 200 before and during the drain, never a 5xx.
    let samples = samples.lock().unwrap().clone();
    let answered: Vec<&Sample> = samples.iter().filter(|s| s.status != 0).collect();
    assert!(answered.iter().all(|s| s.status == 200), "{answered:?}");
    let after_signal = answered.iter().filter(|s| s.sent_at > signalled_at).count();
    eprintln!(
        "sigterm under load: {} tool calls answered 200 ({} of them sent after SIGTERM while \
         draining), {} refused once the connection closed, 0 errors; in-flight upload answered, \
         pending relay 408, SSE stream ended, Add-On closed 1001, exit 0 after {exited_after:?}",
        answered.len(),
        after_signal,
        samples.len() - answered.len(),
    );
    std::fs::remove_dir_all(&scripts).ok();
}
