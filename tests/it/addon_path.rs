//! The whole path a newcomer gets from `crosstrade dev --with-addon-sim`: a real MCP client
//! (rmcp) with a token from the OAuth flow → the server → the Add-On simulator → the result.

use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use testkit::oauth::{Endpoint, Flow};
use testkit::wait::{eventually, wait_for};

use crate::support::{
    DevWithAddonSim, ServerProcess, dev_with_addon_sim, server_with_user, tools_call,
};

pub(crate) fn structured(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "{result:?}");
    result.structured_content.clone().unwrap_or_else(|| {
        let text = result
            .content
            .first()
            .and_then(|c| c.as_text())
            .unwrap()
            .text
            .clone();
        serde_json::from_str(&text).unwrap()
    })
}

pub(crate) async fn call<H: rmcp::ClientHandler>(
    client: &RunningService<rmcp::RoleClient, H>,
    tool: &str,
    arguments: Value,
) -> Value {
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(arguments.as_object().unwrap().clone());
    structured(&client.call_tool(params).await.unwrap())
}

#[tokio::test]
async fn rmcp_through_the_server_to_the_addon_simulator() {
    let scratch = testkit::scratch_dir("addon-path");
    let data_dir = scratch.join("postgres").display().to_string();
    let DevWithAddonSim {
        server,
        public_url,
        elite_password: password,
    } = dev_with_addon_sim(&data_dir).await;

    let endpoint = Endpoint::new(&public_url);
    let mut flow =
        Flow::new_with_password(&endpoint, "elite@demo.crosstrade.test", &password).await;
    let tokens = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let access = tokens["access_token"].as_str().unwrap();

    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(endpoint.resource()).auth_header(access),
    );
    let client = ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .serve(transport)
        .await
        .unwrap();

    // The simulator connects right after the server starts listening.
    let mut names = Vec::new();
    eventually(Duration::from_secs(5), async || {
        names = client
            .list_all_tools()
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        names.iter().any(|n| n == "PlaceOrder")
    })
    .await;
    assert!(
        names.iter().any(|n| n == "PlaceOrder") && names.iter().any(|n| n == "GetPositions"),
        "{names:?}"
    );

    let capabilities = call(&client, "GetMcpCapabilities", json!({})).await;
    assert_eq!(capabilities["addon_connected"], true, "{capabilities}");
    assert_eq!(
        capabilities["addon_version"],
        addon_sim::DEFAULT_ADDON_VERSION
    );

    let accounts = call(&client, "GetAccounts", json!({})).await;
    assert!(accounts.to_string().contains("Sim101"), "{accounts}");

    let order = json!({
        "account": "Sim101",
        "instrument": "ES 12-26",
        "action": "Buy",
        "order_type": "Market",
        "quantity": 2,
        "idempotency_key": "e2e-order-1",
    });
    let first = call(&client, "PlaceOrder", order.clone()).await;
    // The agent retries the same order: the first outcome comes back, nothing is placed twice.
    let again = call(&client, "PlaceOrder", order).await;
    assert_eq!(first, again);

    let positions = call(&client, "GetPositions", json!({ "account": "Sim101" })).await;
    let es = positions["positions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["instrument"] == "ES 12-26")
        .unwrap()
        .clone();
    assert_eq!(es["quantity"], 2, "{positions}");
    assert_eq!(es["market_position"], "Long");

    // Close the position: the fills become a round trip in the journal, served from what the
    // backend stored from the Add-On's events.
    call(&client, "FlattenAll", json!({ "account": "Sim101" })).await;
    let journal = wait_for(
        "the round trip in the journal",
        Duration::from_secs(5),
        async || {
            let journal = call(&client, "GetJournal", json!({ "account": "Sim101" })).await;
            (!journal["trades"].as_array().unwrap().is_empty()).then_some(journal)
        },
    )
    .await;
    let trade = &journal["trades"][0];
    assert_eq!(trade["instrument"], "ES 12-26", "{journal}");
    assert_eq!(trade["direction"], "Long");
    assert_eq!(trade["quantity"], 2.0);
    let activity = call(&client, "GetAddonActivity", json!({})).await;
    let tools: Vec<&str> = activity["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tool"].as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"PlaceOrder") && tools.contains(&"FlattenAll"),
        "{activity}"
    );
    let watermarks = call(&client, "GetWatermarks", json!({ "account": "Sim101" })).await;
    assert!(watermarks["watermarks"].is_array(), "{watermarks}");

    // Operators see all of it in Prometheus' text format, on the admin listener.
    let metrics = endpoint
        .http
        .get(server.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let metrics = metrics.text().await.unwrap();
    for expected in [
        r#"http_requests_total{route="/v1/api/mcp",method="POST",status="200"}"#,
        r#"http_requests_total{route="/v1/oauth/mcp/token",method="POST",status="200"}"#,
        r#"mcp_tool_calls_total{tool="PlaceOrder",outcome="ok"} 2"#,
        r#"mcp_tool_calls_total{tool="GetJournal",outcome="ok"}"#,
        r#"addon_relay_duration_seconds_bucket{tool="GetAccounts",le="0.5"}"#,
        "addon_connections 1",
        r#"oauth_registrations_total{outcome="created"} 1"#,
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }

    client.cancel().await.ok();
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scratch).ok();
}

/// Reads SSE events until one with a `data:` line arrives; returns that data.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String) -> String {
    let read = async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|line| line.strip_prefix("data:")) {
                    return data.trim().to_owned();
                }
            }
            let chunk = response.chunk().await.unwrap().expect("stream ended");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no event within 10 s")
}

#[tokio::test]
async fn list_changed_follows_the_real_addon_and_calls_get_408_without_it() {
    let (db, server, endpoint) = server_with_user("sse@example.com").await;
    let (flow, access) = trade_token(&endpoint, "sse@example.com").await;

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
    let mut buffer = String::new();

    let scripts = testkit::scratch_dir("sse-scripts");
    let options = sim_options(&db, server.addr, "sse@example.com", &[], &scripts);
    let sim = tokio::spawn(async move { addon_sim::run(&options).await });
    let changed = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        changed,
        "Add-On connected"
    );

    sim.abort();
    assert_eq!(
        next_event(&mut stream, &mut buffer).await,
        changed,
        "Add-On gone"
    );

    let call = endpoint
        .http
        .post(endpoint.resource())
        .bearer_auth(&access)
        .header("mcp-protocol-version", "2025-11-25")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "GetAccounts", "arguments": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 408);
    let body: Value = call.json().await.unwrap();
    assert_eq!(body["error"], "addon_disconnected");
    assert!(
        body["message"].as_str().unwrap().contains("not connected"),
        "{body}"
    );

    // History stays readable while NinjaTrader is closed.
    let history = endpoint
        .http
        .post(endpoint.resource())
        .bearer_auth(&access)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "GetAddonActivity", "arguments": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), 200);
    let body: Value = history.json().await.unwrap();
    assert_eq!(body["result"]["isError"], false, "{body}");
    let entries = &body["result"]["structuredContent"]["entries"];
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["tool"] == "GetAccounts" && e["outcome"] == "not_connected"),
        "{body}"
    );

    // Revoking the token also ends its open stream (re-checked every few seconds).
    let revoked = endpoint
        .form(
            "/v1/oauth/mcp/revoke",
            &[("token", &access), ("client_id", &flow.client_id)],
        )
        .await;
    assert_eq!(revoked.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scripts).ok();
}

/// A stream whose grant ended carries nothing more, not even the next change, even when the
/// change comes before the stream's periodic token re-check.
#[tokio::test]
async fn a_revoked_grants_stream_carries_no_further_event() {
    let (db, server, endpoint) = server_with_user("sse-revoked@example.com").await;
    let (flow, access) = trade_token(&endpoint, "sse-revoked@example.com").await;
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
    let revoked = endpoint
        .form(
            "/v1/oauth/mcp/revoke",
            &[("token", &access), ("client_id", &flow.client_id)],
        )
        .await;
    assert_eq!(revoked.status(), 200);
    let scripts = testkit::scratch_dir("sse-revoked-scripts");
    let options = sim_options(&db, server.addr, "sse-revoked@example.com", &[], &scripts);
    let sim = tokio::spawn(async move { addon_sim::run(&options).await });
    let mut received = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its grant");
    assert!(!received.contains("list_changed"), "{received}");
    sim.abort();
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scripts).ok();
}

/// A token with both scopes, granted by the account through the OAuth flow.
pub(crate) async fn trade_token(endpoint: &Endpoint, email: &str) -> (Flow, String) {
    let mut flow = Flow::new(endpoint, email).await;
    let tokens = flow
        .tokens(endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    (flow, access)
}

/// The simulator, with a fresh Add-On key of `email`, connecting to the server at `addr` and
/// never answering the tools in `never_answer`.
pub(crate) fn sim_options(
    db: &testkit::TestDb,
    addr: std::net::SocketAddr,
    email: &str,
    never_answer: &[&str],
    scripts: &std::path::Path,
) -> addon_sim::Options {
    let url = db.url();
    let created = crate::support::run(
        &[("DATABASE_URL", url.as_str())],
        &["addon-keys", "create", "--email", email],
        "",
    );
    assert!(
        created.status.success(),
        "{}",
        crate::support::stderr(&created)
    );
    addon_sim::Options {
        url: format!("ws://{addr}/v1/addon/ws"),
        key: crate::support::stdout(&created).trim().to_owned(),
        addon_version: addon_sim::DEFAULT_ADDON_VERSION.to_owned(),
        latency: Duration::ZERO,
        never_answer: never_answer.iter().map(|tool| (*tool).to_owned()).collect(),
        drop_on: None,
        backtest: Duration::from_secs(1),
        scripts_dir: scripts.to_path_buf(),
    }
}

/// Waits (up to 5 s) until `GetMcpCapabilities` reports the Add-On connected.
pub(crate) async fn addon_connected(endpoint: &Endpoint, access: &str) -> bool {
    eventually(Duration::from_secs(5), async || {
        let reply = tools_call(endpoint, access, "GetMcpCapabilities", json!({})).await;
        let body: Value = reply.json().await.unwrap();
        body["result"]["structuredContent"]["addon_connected"] == true
    })
    .await
}

#[tokio::test]
async fn a_killed_replica_fails_calls_routed_to_it_promptly_and_loses_presence() {
    let (db, replica_a, _) = server_with_user("kill@example.com").await;
    let replica_b = ServerProcess::start("serve", &[("DATABASE_URL", db.url().as_str())]);
    let on_b = Endpoint::new(&replica_b.url(""));
    let (_, access) = trade_token(&on_b, "kill@example.com").await;

    // The Add-On connects to A and never saves workspaces.
    let scripts = testkit::scratch_dir("kill-scripts");
    let options = sim_options(
        &db,
        replica_a.addr,
        "kill@example.com",
        &["SaveWorkspace"],
        &scripts,
    );
    let received = addon_sim::Received::default();
    let sim = tokio::spawn({
        let received = received.clone();
        async move { addon_sim::run_observed(&options, &received).await }
    });
    assert!(
        addon_connected(&on_b, &access).await,
        "B sees the Add-On connected to A"
    );

    // A workspace save (30 s deadline) goes from B to A; then A dies without a word.
    let pending = tokio::spawn({
        let on_b = on_b.clone();
        let access = access.clone();
        async move {
            let args = json!({"name": "Held"});
            tools_call(&on_b, &access, "SaveWorkspace", args).await
        }
    });
    // A holds the call once its Add-On has it.
    tokio::time::timeout(Duration::from_secs(10), received.call("SaveWorkspace"))
        .await
        .expect("the save reached the Add-On through A");
    crate::support::signal(replica_a.pid(), "KILL");
    let killed = std::time::Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("B answered")
        .unwrap();
    let waited = killed.elapsed();
    assert_eq!(reply.status(), 408);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "addon_disconnected");
    assert!(
        body["message"].as_str().unwrap().contains("disconnected"),
        "{body}"
    );
    assert!(
        waited < Duration::from_secs(15),
        "answered {waited:?} after the kill, long before the 30 s deadline"
    );

    // The call on the link ended with the link, before B's sweep of the dead replica; within
    // a few heartbeats its presence is gone too: Add-On tools answer "not connected" at once.
    assert!(
        eventually(Duration::from_secs(10), async || {
            let reply = tools_call(&on_b, &access, "GetMcpCapabilities", json!({})).await;
            let body: Value = reply.json().await.unwrap();
            body["result"]["structuredContent"]["addon_connected"] == false
        })
        .await,
        "B forgets the dead replica's Add-On"
    );
    let reply = tools_call(&on_b, &access, "GetAccounts", json!({})).await;
    assert_eq!(reply.status(), 408);
    let body: Value = reply.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("not connected"),
        "{body}"
    );
    sim.abort();
    drop(replica_a);
    assert!(replica_b.terminate().success());
    std::fs::remove_dir_all(&scripts).ok();
}

#[tokio::test]
async fn sigterm_ends_pending_relays_in_408_closes_addon_sockets_and_exits_0() {
    let (db, server, endpoint) = server_with_user("term@example.com").await;
    let (_, access) = trade_token(&endpoint, "term@example.com").await;

    let scripts = testkit::scratch_dir("term-scripts");
    let options = sim_options(
        &db,
        server.addr,
        "term@example.com",
        &["GetAccounts"],
        &scripts,
    );
    let received = addon_sim::Received::default();
    let sim = tokio::spawn({
        let received = received.clone();
        async move { addon_sim::run_observed(&options, &received).await }
    });
    assert!(addon_connected(&endpoint, &access).await);

    // A call the Add-On will never answer is in flight when SIGTERM arrives.
    let pending = tokio::spawn({
        let endpoint = endpoint.clone();
        let access = access.clone();
        async move { tools_call(&endpoint, &access, "GetAccounts", json!({})).await }
    });
    tokio::time::timeout(Duration::from_secs(10), received.call("GetAccounts"))
        .await
        .expect("the call reached the Add-On");
    let signalled = std::time::Instant::now();
    crate::support::signal(server.pid(), "TERM");

    let reply = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(reply.status(), 408);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "addon_disconnected");
    let close = tokio::time::timeout(Duration::from_secs(5), sim)
        .await
        .expect("socket closed")
        .unwrap();
    assert_eq!(close.unwrap(), Some(1001), "a going-away close");
    assert!(server.terminate().success(), "exit 0");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "within the grace period"
    );
    std::fs::remove_dir_all(&scripts).ok();
}
