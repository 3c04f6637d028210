//! Orders a person confirms, end to end: a real MCP client (rmcp, which declares no
//! elicitation) places an order on an account with the default policy; the server holds it and
//! answers with the confirmation page's address; nothing reaches the Add-On until a person signs
//! in on that page in Chromium and approves; then ConfirmTrade sends it exactly once.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::addon_path::{addon_connected, sim_options, trade_token};
use crate::browser::{CHROMIUM, browser_dir, ensure_playwright};
use crate::support::server_with_user;

async fn call_raw(
    client: &RunningService<rmcp::RoleClient, ClientConfig>,
    tool: &str,
    arguments: Value,
) -> CallToolResult {
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(arguments.as_object().unwrap().clone());
    client.call_tool(params).await.unwrap()
}

/// The JSON a held or refused call explains itself with.
fn explained(result: &CallToolResult) -> Value {
    assert_eq!(result.is_error, Some(true), "{result:?}");
    let text = &result.content[0].as_text().unwrap().text;
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn an_order_is_sent_once_after_the_person_approves_it_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium"
    );
    ensure_playwright();
    let email = "person@example.com";
    let (db, server, endpoint) = server_with_user(email).await;
    let (_, access) = trade_token(&endpoint, email).await;
    let scripts = testkit::scratch_dir("confirm-scripts");
    let options = sim_options(&db, server.addr, email, &[], &scripts);
    let received = addon_sim::Received::default();
    let sim = tokio::spawn({
        let received = received.clone();
        async move { addon_sim::run_observed(&options, &received).await }
    });
    assert!(addon_connected(&endpoint, &access).await);
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(endpoint.resource()).auth_header(access),
    );
    let client = ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .serve(transport)
        .await
        .unwrap();

    let order = json!({"account": "Sim101", "instrument": "ES 12-26", "action": "Buy",
        "order_type": "Limit", "quantity": 2, "limit_price": 5001.25,
        "idempotency_key": "person-order-1"});
    let held = explained(&call_raw(&client, "PlaceOrder", order.clone()).await);
    assert_eq!(held["status"], "confirmation_required", "{held}");
    let confirm_url = held["confirm_url"].as_str().unwrap().to_owned();
    let id = held["confirmation_id"].as_str().unwrap().to_owned();
    // The page is on this server (its public URL here is the configured default).
    let path = confirm_url[confirm_url.find("/account/confirmations/").unwrap()..].to_owned();
    assert_eq!(path, format!("/account/confirmations/{id}"));

    // The model cannot send it on its own: before the click, ConfirmTrade sends nothing, and a
    // forged id is unknown.
    let early = explained(&call_raw(&client, "ConfirmTrade", json!({"confirmation_id": id})).await);
    assert_eq!(early["status"], "pending");
    let forged = explained(
        &call_raw(
            &client,
            "ConfirmTrade",
            json!({"confirmation_id": uuid::Uuid::new_v4().to_string()}),
        )
        .await,
    );
    assert_eq!(forged["status"], "not_found");
    assert!(!received.tools().iter().any(|t| t == "PlaceOrder"));

    // The person opens the link, signs in and approves.
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/browser");
    let base = server.url("");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("confirm-page.mjs")
            .current_dir(browser_dir())
            .env("BASE_URL", base)
            .env("CONFIRM_PATH", path)
            .env("EMAIL", email)
            .env("PASSWORD", testkit::oauth::PASSWORD)
            .env("ARTIFACTS", &artifacts)
            .env("CHROMIUM", CHROMIUM)
            .output()
            .expect("node")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "browser run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        seen["after"].as_str().unwrap().contains("Approved"),
        "{seen}"
    );

    // Now the model sends it, once; a retried confirm or order sends nothing again.
    let sent = call_raw(
        &client,
        "ConfirmTrade",
        json!({"confirmation_id": id, "wait_seconds": 5}),
    )
    .await;
    assert_ne!(sent.is_error, Some(true), "{sent:?}");
    tokio::time::timeout(Duration::from_secs(5), received.call("PlaceOrder"))
        .await
        .expect("the order reached the Add-On");
    let again = explained(&call_raw(&client, "ConfirmTrade", json!({"confirmation_id": id})).await);
    assert_eq!(again["status"], "used");
    let retried = explained(&call_raw(&client, "PlaceOrder", order).await);
    assert_eq!(retried["status"], "used");
    let placed = received
        .tools()
        .iter()
        .filter(|t| *t == "PlaceOrder")
        .count();
    assert_eq!(placed, 1, "{:?}", received.tools());

    client.cancel().await.unwrap();
    sim.abort();
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scripts).ok();
}
