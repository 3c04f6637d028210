//! Beyond capacity and against slow or hostile clients: the server sheds load with 503 and
//! `Retry-After` instead of queueing, cuts slow senders off, refuses oversized and deeply nested
//! bodies with bounded memory, and its per-address limits hold under concurrent bursts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::oauth::{Browser, Flow, authorize_url, pkce};
use testkit::wait::{eventually, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ServerProcess, http, metrics_show, server_with_user_and};

/// Reads until the server closes the connection or `limit` passes; returns what was read and
/// whether the connection was closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut received = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
        }
    }
}

fn body_of(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {response}"))
}

fn header_of<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn plain_server(extra: &[(&str, &str)], db: &testkit::TestDb) -> ServerProcess {
    let url = db.url();
    let mut env = vec![("DATABASE_URL", url.as_str())];
    env.extend_from_slice(extra);
    ServerProcess::start("serve", &env)
}

#[tokio::test]
async fn slow_silent_or_oversized_header_senders_are_disconnected() {
    let db = testkit::TestDb::new().await;
    let server = plain_server(&[("CROSSTRADE_HTTP__HEADER_READ_TIMEOUT_MS", "1000")], &db);

    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut trickling = TcpStream::connect(server.addr).await.unwrap();
    trickling
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        // One header line every 200 ms: never a complete head.
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if trickling
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return Instant::now();
            }
        }
        Instant::now()
    });
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a silent connection stays open");
    let trickle_cut_at = trickle.await.unwrap();
    assert!(
        trickle_cut_at.duration_since(started) < Duration::from_secs(4),
        "a trickled header was accepted for {:?}",
        trickle_cut_at.duration_since(started)
    );

    // An idle keep-alive connection is closed after its request too.
    let mut keep_alive = TcpStream::connect(server.addr).await.unwrap();
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut keep_alive, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle keep-alive connection stays open");
    // An oversized head is refused before it is routed.
    let mut huge = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let _ = huge.write_all(head.as_bytes()).await;
    let (answer, closed) = read_until_closed(&mut huge, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(closed);
    // Prompt clients are unaffected.
    let healthy = http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
}

#[tokio::test]
async fn trickled_bodies_answer_408_on_every_route() {
    let db = testkit::TestDb::new().await;
    let server = plain_server(&[("CROSSTRADE_HTTP__BODY_READ_TIMEOUT_MS", "1000")], &db);
    for (path, content_type) in [
        ("/v1/api/mcp", "application/json"),
        ("/v1/oauth/mcp/token", "application/x-www-form-urlencoded"),
        ("/v1/oauth/mcp/register", "application/json"),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (mut reader, mut writer) = stream.into_split();
        let trickle = tokio::spawn(async move {
            for _ in 0..50 {
                if writer.write_all(b"aaaaa").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut received = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut received)).await;
        trickle.abort();
        let answer = String::from_utf8_lossy(&received).into_owned();
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{path}: {answer} after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{path}");
        assert_eq!(header_of(&answer, "connection"), Some("close"), "{path}");
        assert_eq!(
            body_of(&answer),
            json!({"error": "request_timeout", "message": "the request body was not received in time"}),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_body_sent_in_pieces_within_the_deadline_reaches_the_handler_whole() {
    let db = testkit::TestDb::new().await;
    let server = plain_server(&[], &db);
    let body = json!({
        "client_name": "Pieces ".repeat(20) + "end",
        "redirect_uris": ["https://pieces.example/cb"],
    })
    .to_string();
    let (first, rest) = body.split_at(40);
    let (second, third) = rest.split_at(60);
    // The first piece with the head (taken on the first poll) or after it (collected later).
    for with_head in [true, false] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let mut head = format!(
            "POST /v1/oauth/mcp/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if with_head {
            head.push_str(first);
        }
        stream.write_all(head.as_bytes()).await.unwrap();
        let pieces = if with_head {
            vec![second, third]
        } else {
            vec![first, second, third]
        };
        for piece in pieces {
            tokio::time::sleep(Duration::from_millis(150)).await;
            stream.write_all(piece.as_bytes()).await.unwrap();
        }
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 201"), "{with_head}: {answer}");
        assert_eq!(
            body_of(&answer)["client_name"],
            "Pieces ".repeat(20) + "end",
            "{with_head}"
        );
    }
}

#[tokio::test]
async fn oversized_bodies_answer_413_without_being_read() {
    let db = testkit::TestDb::new().await;
    let server = plain_server(&[], &db);
    // Declared too large: answered before a byte of the body is sent.
    for (path, declared) in [
        ("/v1/api/mcp", 4 * 1024 * 1024 + 1),
        ("/v1/oauth/mcp/token", 64 * 1024 + 1),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {declared}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert_eq!(body_of(&answer)["error"], "payload_too_large", "{path}");
    }
    // Chunked with no length: cut off once the limit is passed.
    let chunk = "a".repeat(64 * 1024);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/oauth/mcp/token HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
        if stream.write_all(framed.as_bytes()).await.is_err() {
            break;
        }
    }
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        body_of(&answer),
        json!({"error": "payload_too_large", "message": "the request body is larger than 65536 bytes"})
    );
}

#[tokio::test]
async fn deeply_nested_json_is_refused_cheaply() {
    let (_db, server, endpoint) = server_with_user_and("nested@example.com", &[]).await;
    let mut flow = Flow::new(&endpoint, "nested@example.com").await;
    let tokens = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let client = http();
    let depth = 1_000_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth / 5), "}".repeat(depth / 5));
    let in_params = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}}"#,
        "[".repeat(depth)
    );
    let requests = (0..4).flat_map(|_| [arrays.clone(), objects.clone(), in_params.clone()]);
    let answers = futures_join(requests.map(|body| {
        client
            .post(server.url("/v1/api/mcp"))
            .bearer_auth(&access)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .body(body)
            .send()
    }))
    .await;
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 400);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["id"], Value::Null);
        assert_eq!(body["error"]["code"], -32700, "{body}");
    }
    let registration = client
        .post(endpoint.url("/v1/oauth/mcp/register"))
        .header("content-type", "application/json")
        .body(format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(registration.status(), 400);
    let body: Value = registration.json().await.unwrap();
    assert_eq!(
        body["error"], "invalid_request",
        "a body that does not parse is a malformed request"
    );
    // Twelve bodies of up to 2 MB were parsed at once: memory stays bounded.
    let peak = peak_rss_kib(server.pid());
    assert!(peak < 200 * 1024, "peak RSS {peak} KiB");
    let healthy = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
}

async fn futures_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn beyond_the_in_flight_limit_requests_are_shed_at_once() {
    let db = testkit::TestDb::new().await;
    let server = plain_server(
        &[
            ("CROSSTRADE_HTTP__MAX_IN_FLIGHT_REQUESTS", "2"),
            ("CROSSTRADE_HTTP__BODY_READ_TIMEOUT_MS", "20000"),
        ],
        &db,
    );
    // Two requests held in flight by bodies that have not arrived yet.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(
                b"POST /v1/oauth/mcp/token HTTP/1.1\r\nHost: x\r\n\
                  Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\n",
            )
            .await
            .unwrap();
        held.push(stream);
    }
    let client = http();
    // Both are being handled (a loaded machine may take a while to get there).
    wait_until(
        "the held requests in flight",
        Duration::from_secs(10),
        async || metrics_show(&server, "http_requests_in_flight 2").await,
    )
    .await;
    let discovery = server.url("/.well-known/oauth-authorization-server");
    let mut shed = None;
    eventually(Duration::from_secs(3), async || {
        let started = Instant::now();
        let response = client.get(&discovery).send().await.unwrap();
        if response.status() != 503 {
            return false;
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        shed = Some(response);
        true
    })
    .await;
    let Some(shed) = shed else {
        let mut states = Vec::new();
        for stream in &mut held {
            let mut buffer = [0u8; 512];
            let read =
                tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await;
            states.push(format!(
                "{read:?} {}",
                String::from_utf8_lossy(&buffer[..64])
            ));
        }
        panic!(
            "a third request was not shed; held: {states:?}; logs:\n{}",
            server.logs()
        );
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.headers()["content-type"], "application/json");
    assert_eq!(
        shed.json::<Value>().await.unwrap(),
        json!({"error": "server_error", "message": "the server is at capacity; retry shortly"})
    );
    // Probes answer at capacity.
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The held requests complete normally, and capacity comes back.
    for mut stream in held {
        stream.write_all(b"grant_type").await.unwrap();
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert_eq!(client.get(&discovery).send().await.unwrap().status(), 200);
    let metrics = client
        .get(server.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("http_requests_shed_total")
    );
}

#[tokio::test]
async fn beyond_the_connection_limit_connections_get_503_and_close() {
    let db = testkit::TestDb::new().await;
    let server = plain_server(&[("CROSSTRADE_HTTP__MAX_CONNECTIONS", "3")], &db);
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // No wait needed: a loopback connection is queued for `accept` before `connect` returns,
    // and the accept loop takes a slot for each connection before it accepts the next, so
    // these three hold the slots before the fourth is accepted.
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(closed);
    assert_eq!(header_of(&answer, "retry-after"), Some("1"));
    assert_eq!(
        body_of(&answer),
        json!({"error": "server_error", "message": "the server is at capacity; retry shortly"})
    );
    drop(idle.pop());
    let served = eventually(Duration::from_secs(3), async || {
        http()
            .get(server.url("/healthz"))
            .send()
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
    assert!(served, "a freed connection slot was not reused");
}

#[tokio::test]
async fn per_address_limits_hold_under_concurrent_bursts() {
    let (db, _server, endpoint) = server_with_user_and("burst@example.com", &[]).await;
    let client_id = endpoint.client("http://127.0.0.1:45678/callback").await;

    // Registration: 10 new clients per hour per address (one is registered above), counted
    // across the burst.
    let registrations = futures_join((0..25).map(|i| {
        let endpoint = endpoint.clone();
        async move {
            let response = endpoint
                .register(json!({ "redirect_uris": [format!("https://app{i}.example/cb")] }))
                .await;
            (
                response.status().as_u16(),
                response.headers().get("retry-after").is_some(),
            )
        }
    }))
    .await;
    let created = registrations
        .iter()
        .filter(|(status, _)| *status == 201)
        .count();
    let limited: Vec<_> = registrations
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert_eq!((created, limited.len()), (9, 16), "{registrations:?}");
    assert!(limited.iter().all(|(_, retry_after)| *retry_after));

    // Token endpoint: 120 requests per minute per address.
    let tokens = futures_join((0..200).map(|_| {
        let endpoint = endpoint.clone();
        async move {
            endpoint
                .token(&[("grant_type", "authorization_code"), ("code", "x")])
                .await
                .status()
                .as_u16()
        }
    }))
    .await;
    let throttled = tokens.iter().filter(|status| **status == 429).count();
    assert_eq!(throttled, 80, "{tokens:?}");

    // Sign-in: 20 failures per address per 15 minutes, even spread over many accounts at once.
    let url = authorize_url(
        &endpoint,
        &client_id,
        "http://127.0.0.1:45678/callback",
        &pkce().challenge,
        &[],
    );
    let attempts = futures_join((0..40).map(|i| {
        let endpoint = endpoint.clone();
        let url = url.clone();
        async move {
            let mut browser = Browser::default();
            browser
                .sign_in(
                    &endpoint,
                    &url,
                    &format!("guess{i}@example.com"),
                    "wrong password",
                )
                .await
                .status()
                .as_u16()
        }
    }))
    .await;
    let refused = attempts.iter().filter(|status| **status == 401).count();
    let throttled = attempts.iter().filter(|status| **status == 429).count();
    assert_eq!((refused, throttled), (20, 20), "{attempts:?}");
    let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM sign_in_failures")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(failures, 20, "{attempts:?}");
    // The address is now throttled, even with the right password.
    let mut browser = Browser::default();
    let throttled = browser
        .sign_in(
            &endpoint,
            &url,
            "burst@example.com",
            testkit::oauth::PASSWORD,
        )
        .await;
    assert_eq!(throttled.status(), 429);
}

#[tokio::test]
async fn a_burst_beyond_capacity_is_shed_at_once_instead_of_queued() {
    let (db, server, endpoint) = server_with_user_and(
        "shed@example.com",
        &[("CROSSTRADE_HTTP__MAX_IN_FLIGHT_REQUESTS", "8")],
    )
    .await;
    let (_, access) = crate::addon_path::trade_token(&endpoint, "shed@example.com").await;
    let scripts = testkit::scratch_dir("shed-scripts");
    let mut options =
        crate::addon_path::sim_options(&db, server.addr, "shed@example.com", &[], &scripts);
    // Each Add-On call takes 500 ms: eight of them fill the server.
    options.latency = Duration::from_millis(500);
    let _sim = tokio::spawn(async move { addon_sim::run(&options).await });
    assert!(crate::addon_path::addon_connected(&endpoint, &access).await);

    let started = Instant::now();
    let burst = futures_join((0..64).map(|_| {
        let (endpoint, access) = (endpoint.clone(), access.clone());
        async move {
            let sent = Instant::now();
            let reply =
                crate::support::tools_call(&endpoint, &access, "GetAccounts", json!({})).await;
            let status = reply.status().as_u16();
            let retry_after = reply.headers().get("retry-after").is_some();
            (status, retry_after, sent.elapsed())
        }
    }))
    .await;
    let wall = started.elapsed();
    let served: Vec<_> = burst.iter().filter(|(status, ..)| *status == 200).collect();
    let shed: Vec<_> = burst.iter().filter(|(status, ..)| *status == 503).collect();
    assert_eq!(served.len() + shed.len(), burst.len(), "{burst:?}");
    assert!(
        (1..=8).contains(&served.len()),
        "{} served at once",
        served.len()
    );
    assert!(shed.iter().all(|(_, retry_after, _)| *retry_after));
    let slowest_shed = shed.iter().map(|(.., latency)| *latency).max().unwrap();
    // Shed requests did not wait for capacity: they were answered well before one Add-On call
    // could finish.
    assert!(
        slowest_shed < Duration::from_millis(450),
        "a shed request waited {slowest_shed:?}"
    );
    // Queued, 64 calls of 500 ms eight at a time would take 4 s.
    assert!(wall < Duration::from_secs(2), "{wall:?}");
    eprintln!(
        "burst of 64 relayed calls (500 ms each) against 8 in-flight slots: {} served, {} shed \
         with 503 + Retry-After, slowest shed answer {slowest_shed:?}, burst over in {wall:?}",
        served.len(),
        shed.len()
    );
    std::fs::remove_dir_all(&scripts).ok();
}

/// One sign-in through the account page from `address` (forwarded by the trusted proxy):
/// status and whether `Retry-After` came with it.
async fn account_sign_in_from(
    endpoint: &testkit::oauth::Endpoint,
    address: &str,
    email: &str,
    password: &str,
) -> (u16, bool) {
    let page = endpoint
        .http
        .get(endpoint.url("/account/sign-in"))
        .header("x-forwarded-for", address)
        .send()
        .await
        .unwrap();
    if page.status() != 200 {
        return (
            page.status().as_u16(),
            page.headers().get("retry-after").is_some(),
        );
    }
    let mut browser = Browser::default();
    browser.absorb(page.headers());
    let html = page.text().await.unwrap();
    let response = endpoint
        .http
        .post(endpoint.url("/account/sign-in"))
        .header("x-forwarded-for", address)
        .header("cookie", browser.cookie_header())
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf", &testkit::oauth::hidden(&html, "csrf")),
            ("return_to", "/account"),
        ])
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.headers().get("retry-after").is_some(),
    )
}

#[tokio::test]
async fn parallel_sign_ins_hash_a_bounded_number_of_passwords_at_once() {
    let (_db, server, endpoint) = server_with_user_and(
        "crowd@example.com",
        &[
            ("CROSSTRADE_TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
            ("CROSSTRADE_RATE_LIMITS__PASSWORD_CHECKS_AT_ONCE", "4"),
        ],
    )
    .await;
    // One sign-in first, so the baseline includes one argon2id working area.
    let (status, _) = account_sign_in_from(
        &endpoint,
        "10.9.9.9",
        "crowd@example.com",
        testkit::oauth::PASSWORD,
    )
    .await;
    assert_eq!(status, 303);
    let baseline = peak_rss_kib(server.pid());

    // 500 at once, each from its own address so no throttle stops them before the hash: a
    // fifth with the right password, a fifth guessing it, the rest unknown accounts.
    let started = Instant::now();
    let answers = futures_join((0..500u32).map(|i| {
        let endpoint = endpoint.clone();
        async move {
            let address = format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256 + 1);
            let (email, password) = match i % 5 {
                0 => ("crowd@example.com".to_owned(), testkit::oauth::PASSWORD),
                1 => ("crowd@example.com".to_owned(), "wrong password"),
                _ => (format!("nobody{i}@example.com"), "wrong password"),
            };
            account_sign_in_from(&endpoint, &address, &email, password).await
        }
    }))
    .await;
    let wall = started.elapsed();
    let peak = peak_rss_kib(server.pid());
    let count = |wanted: u16| answers.iter().filter(|(s, _)| *s == wanted).count();
    let (signed_in, refused, throttled, busy) = (count(303), count(401), count(429), count(503));
    eprintln!(
        "500 parallel sign-ins, 4 password checks at once: {signed_in} signed in, {refused} \
         refused, {throttled} throttled, {busy} busy (503) in {wall:?}; peak RSS {baseline} KiB \
         before, {peak} KiB after"
    );
    assert_eq!(signed_in + refused + throttled + busy, 500, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(status, retry_after)| ![429, 503].contains(status) || *retry_after),
        "{answers:?}"
    );
    assert!(signed_in + refused > 0, "{answers:?}");
    // Four 19 MiB working areas (kept for reuse) plus request buffers: measured +73 MiB. With
    // the cap but fresh memory for each check, the same burst peaked at +620 MiB; with no cap,
    // 200 such sign-ins peaked at +3.7 GiB.
    assert!(
        peak < baseline + 120 * 1024,
        "peak RSS grew from {baseline} KiB to {peak} KiB"
    );
    let ready = http().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let (status, _) = account_sign_in_from(
        &endpoint,
        "10.9.9.8",
        "crowd@example.com",
        testkit::oauth::PASSWORD,
    )
    .await;
    assert_eq!(status, 303);
}

/// A handler that outlasts `request_timeout_ms` (a registration waiting on a table another
/// session holds locked) is answered for it: 503 `server_error` with a body and `Retry-After`,
/// counted; the next request is served once the lock is gone.
#[tokio::test]
async fn a_handler_past_the_request_timeout_is_answered_503_with_retry_after() {
    let db = testkit::TestDb::new().await;
    let server = plain_server(&[("CROSSTRADE_HTTP__REQUEST_TIMEOUT_MS", "500")], &db);
    let endpoint = testkit::oauth::Endpoint::new(&server.url(""));
    let pool = db.pool().await;
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE registration_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();

    let sent = Instant::now();
    let response = endpoint
        .register(json!({ "redirect_uris": ["https://app.example/cb"] }))
        .await;
    let waited = sent.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "server_error", "message": "the server did not answer in time; retry shortly"})
    );
    assert!(
        (Duration::from_millis(500)..Duration::from_secs(5)).contains(&waited),
        "answered after {waited:?}"
    );

    holder.rollback().await.unwrap();
    let response = endpoint
        .register(json!({ "redirect_uris": ["https://app.example/cb"] }))
        .await;
    assert_eq!(response.status(), 201);
    assert!(metrics_show(&server, "http_requests_timed_out_total 1").await);
    assert!(
        metrics_show(
            &server,
            r#"http_requests_total{route="/v1/oauth/mcp/register",method="POST",status="503"} 1"#
        )
        .await
    );
}
