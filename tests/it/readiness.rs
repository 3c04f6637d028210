//! `/healthz`, `/readyz` across a database outage, and `/metrics` on the admin listener only.

use std::time::{Duration, Instant};

use crate::support::{ServerProcess, http, postmaster_pid, signal};

#[tokio::test]
async fn https_deployments_send_hsts_and_http_ones_do_not() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let https = ServerProcess::start(
        "serve",
        &[
            ("DATABASE_URL", url.as_str()),
            ("CROSSTRADE_PUBLIC_URL", "https://app.crosstrade.example"),
        ],
    );
    let response = http()
        .get(https.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let metadata: serde_json::Value = response.json().await.unwrap();
    assert_eq!(metadata["issuer"], "https://app.crosstrade.example");
    assert!(https.terminate().success());
    let plain = ServerProcess::start("serve", &[("DATABASE_URL", url.as_str())]);
    let response = http().get(plain.url("/healthz")).send().await.unwrap();
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
    assert!(plain.terminate().success());
}

/// The probe contract: Kubernetes gives up on a probe after 1 s by default; `/readyz` must answer
/// well inside that whatever the database is doing.
const PROBE_ANSWER: Duration = Duration::from_millis(100);

/// `/readyz` once, failing the test if it took longer than [`PROBE_ANSWER`].
async fn readyz_timed(client: &reqwest::Client, server: &ServerProcess) -> reqwest::Response {
    let started = Instant::now();
    let response = client.get(server.url("/readyz")).send().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < PROBE_ANSWER,
        "/readyz took {took:?} (status {})",
        response.status()
    );
    response
}

/// Polls `/readyz` (every answer timed) until it answers `status`; returns how long that took.
async fn readyz_until(
    client: &reqwest::Client,
    server: &ServerProcess,
    status: u16,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let answered = testkit::wait::eventually(limit, async || {
        readyz_timed(client, server).await.status() == status
    })
    .await;
    assert!(
        answered,
        "/readyz did not answer {status} within {limit:?}; logs:\n{}",
        server.logs()
    );
    started.elapsed()
}

/// The postmaster and its children (backends, background workers).
fn cluster_processes(cluster: &store::cluster::Cluster) -> Vec<u32> {
    let postmaster = postmaster_pid(cluster.data_dir()).expect("cluster running");
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after its closing paren.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn readyz_answers_within_100ms_and_follows_the_database() {
    let private = testkit::private_cluster();
    let url = private.cluster.url("postgres");
    let server = ServerProcess::start(
        "serve",
        &[
            ("DATABASE_URL", url.as_str()),
            ("CROSSTRADE_DATABASE__ACQUIRE_TIMEOUT_MS", "1000"),
        ],
    );
    let client = http();

    for _ in 0..5 {
        let ready = readyz_timed(&client, &server).await;
        assert_eq!(ready.status(), 200);
        assert_eq!(
            ready.json::<serde_json::Value>().await.unwrap(),
            serde_json::json!({"status": "ready"})
        );
    }

    // A hung database (a stalled host, a network partition): connections open, nothing answers.
    let frozen = cluster_processes(&private.cluster);
    for pid in &frozen {
        signal(*pid, "STOP");
    }
    let hung = readyz_until(&client, &server, 503, Duration::from_secs(5)).await;
    // It stays 503 across probe runs. Nothing marks a probe run from outside, so sample it.
    for _ in 0..3 {
        assert_eq!(readyz_timed(&client, &server).await.status(), 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for pid in &frozen {
        signal(*pid, "CONT");
    }
    let thawed = readyz_until(&client, &server, 200, Duration::from_secs(5)).await;

    // A stopped database.
    let cluster = private.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();

    let noticed = readyz_until(&client, &server, 503, Duration::from_secs(5)).await;
    // It stays 503 across probe runs (sampled: nothing marks a probe run from outside).
    for _ in 0..5 {
        let down = readyz_timed(&client, &server).await;
        assert_eq!(down.status(), 503);
        assert_eq!(down.headers()["content-type"], "application/json");
        assert_eq!(
            down.json::<serde_json::Value>().await.unwrap(),
            serde_json::json!({
                "status": "unavailable",
                "error": "server_error",
                "message": "the database is not reachable",
            })
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The process itself is up.
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let cluster = private.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.start())
        .await
        .unwrap()
        .unwrap();

    let recovered = readyz_until(&client, &server, 200, Duration::from_secs(5)).await;
    eprintln!(
        "readyz: 503 {hung:?} after the database hung, 200 {thawed:?} after it resumed; \
         503 {noticed:?} after it stopped, 200 {recovered:?} after it returned"
    );
    assert!(server.terminate().success());
    // This process restarted the cluster, so it is PostgreSQL's parent: stop and reap it here.
    let cluster = private.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener_only() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let server = ServerProcess::start("serve", &[("DATABASE_URL", url.as_str())]);
    let client = http();

    let public = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let body = public.text().await.unwrap();
    assert!(!body.contains("http_requests_total"), "{body}");
    // Methods outside the standard set share one label: a client cannot grow the series.
    for method in ["BREW", "PROPFIND"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method, server.url("/nowhere"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }

    let metrics = client
        .get(server.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert_eq!(
        metrics.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = metrics.text().await.unwrap();
    for expected in [
        r#"http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"http_requests_total{route="unmatched",method="other",status="404"} 2"#,
        "readiness_database_up 1",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    // The probes answer on both listeners; the public routes only on the public one.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            client.get(server.url(path)).send().await.unwrap().status(),
            200
        );
        assert_eq!(
            client
                .get(server.admin_url(path))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let discovery = "/.well-known/oauth-authorization-server";
    assert_eq!(
        client
            .get(server.admin_url(discovery))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // One signal stops both listeners.
    let admin = server.admin.unwrap();
    assert!(server.terminate().success());
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());

    // An empty `admin_listen` turns it off.
    let server = ServerProcess::start(
        "serve",
        &[
            ("DATABASE_URL", url.as_str()),
            ("CROSSTRADE_ADMIN_LISTEN", ""),
        ],
    );
    assert_eq!(server.admin, None);
    assert!(
        !server.logs().contains("admin listening"),
        "{}",
        server.logs()
    );
    assert_eq!(
        client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(server.terminate().success());
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_client_sent_one_is_kept() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let server = ServerProcess::start("serve", &[("DATABASE_URL", url.as_str())]);
    let client = http();
    let mut ids = Vec::new();
    for path in [
        "/healthz",
        "/nowhere",
        "/.well-known/oauth-authorization-server",
    ] {
        let response = client.get(server.url(path)).send().await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(uuid.get_version_num(), 8, "{id}");
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let response = client
        .get(server.url("/healthz"))
        .header("x-request-id", "client-chosen-id-7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-id-7");
    // The log line of that request names it.
    let logged = testkit::wait::eventually(Duration::from_secs(5), async || {
        server
            .logs()
            .contains("\"request_id\":\"client-chosen-id-7\"")
    })
    .await;
    assert!(logged, "{}", server.logs());
}

/// Runtime workers hold their log lines while busy (`log_writer`): every request's line still
/// reaches the log once the server goes idle, without stopping it, exactly once, and the lines
/// of requests answered just before a SIGTERM are there after it.
#[tokio::test]
async fn every_request_is_logged_while_the_server_runs_and_at_shutdown() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let server = ServerProcess::start("serve", &[("DATABASE_URL", url.as_str())]);
    let client = http();
    let send = |ids: Vec<String>| {
        let mut requests = tokio::task::JoinSet::new();
        for id in ids {
            let request = client
                .get(server.url("/healthz"))
                .header("x-request-id", id);
            requests.spawn(async move { request.send().await.unwrap().status() });
        }
        requests
    };
    // Each line names its request twice (`span` and `spans`): count lines.
    let logged_once = |logs: &str, id: &str| {
        let named = format!("\"request_id\":\"{id}\"");
        logs.lines().filter(|line| line.contains(&named)).count() == 1
    };
    // More lines than a worker holds (16 KiB), 50 requests at a time.
    let burst: Vec<String> = (0..400).map(|i| format!("burst-{i:04}")).collect();
    for chunk in burst.chunks(50) {
        let statuses = send(chunk.to_vec()).join_all().await;
        assert!(statuses.iter().all(reqwest::StatusCode::is_success));
    }
    let all_logged = testkit::wait::eventually(Duration::from_secs(5), async || {
        let logs = server.logs();
        burst.iter().all(|id| logged_once(&logs, id))
    })
    .await;
    let logs = server.logs();
    let missing: Vec<&String> = burst.iter().filter(|id| !logged_once(&logs, id)).collect();
    assert!(all_logged, "not logged exactly once: {missing:?}");

    let last: Vec<String> = (0..20).map(|i| format!("last-{i:02}")).collect();
    let statuses = send(last.clone()).join_all().await;
    assert!(statuses.iter().all(reqwest::StatusCode::is_success));
    let (status, logs) = server.terminate_keeping_logs();
    assert!(status.success());
    for id in &last {
        assert!(logged_once(&logs, id), "{id} not logged exactly once");
    }
}
