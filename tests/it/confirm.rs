//! Orders a person confirms, end to end: a real MCP client (rmcp, which declares no
//! elicitation) places an order on an account with the default policy; the server holds it and
//! answers with the confirmation page's address; nothing reaches the Add-On until a person signs
//! in on that page in Chromium and approves; then ConfirmTrade sends it exactly once.
//!
//! The official Python SDK, which answers forms (`tests/browser/elicit.py`), against
//! `crosstrade dev --with-addon-sim`: the person accepts or declines the form inside the client,
//! at 2025-11-25 (on the POST's event stream) and at 2026-07-28 (an `input_required` result and
//! a retry). Accepted orders reach the simulated NinjaTrader 8 once; declined ones never.

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
use crate::step_up::ensure_python_sdk;
use crate::support::{DevWithAddonSim, dev_with_addon_sim_confirming, server_with_user};
use testkit::oauth::{Endpoint, Flow};

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
    // The AI Clients page tells what the client did: the order held for the person, then sent
    // through ConfirmTrade.
    let mut person = crate::account::account_browser(&endpoint, email).await;
    let mut html = String::new();
    let shown = testkit::wait::eventually(Duration::from_secs(10), async || {
        html = person
            .get(&endpoint, &endpoint.url("/account/ai-clients"))
            .await
            .text()
            .await
            .unwrap();
        html.contains(r#"<span class="badge held">Held for your confirmation</span>"#)
            && html.contains(r#"<span class="tool">ConfirmTrade</span>"#)
    })
    .await;
    assert!(shown, "{html}");

    client.cancel().await.unwrap();
    sim.abort();
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scripts).ok();
}

/// One run of `elicit.py`: the SDK places an order, the person answers the form.
async fn python_places_an_order(
    python: &Path,
    mcp_url: &str,
    token: &str,
    mode: &str,
    answer: &str,
    key: &str,
) -> Value {
    let mut harness = tokio::process::Command::new(python);
    harness
        .arg("elicit.py")
        .current_dir(browser_dir())
        .env("MCP_URL", mcp_url)
        .env("TOKEN", token)
        .env("MODE", mode)
        .env("ANSWER", answer)
        .env("KEY", key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        harness.spawn().expect("start elicit.py").wait_with_output(),
    )
    .await
    .expect("elicit.py finished within 60 s")
    .expect("elicit.py ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "elicit.py failed:\n{stdout}\n{stderr}"
    );
    let events: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let end = events.last().cloned().unwrap_or_default();
    assert_eq!(end["event"], "end", "{stdout}\n{stderr}");
    assert!(end.get("error").is_none(), "{stdout}\n{stderr}");
    let forms: Vec<&Value> = events.iter().filter(|e| e["event"] == "form").collect();
    assert_eq!(forms.len(), 1, "one form per order: {stdout}");
    // The person sees what would be sent, and the approval is not ticked for them.
    let form = forms[0];
    assert_eq!(form["mode"], "form");
    assert_eq!(form["fields"]["instrument"], "ES 12-26", "{form}");
    assert_eq!(form["fields"]["quantity"], "1", "{form}");
    assert_eq!(form["fields"]["limit_price"], "4000.25", "{form}");
    assert_eq!(form["fields"]["confirm"], false, "{form}");
    assert!(
        form["message"].as_str().unwrap().contains("PlaceOrder"),
        "{form}"
    );
    end
}

#[tokio::test]
async fn python_sdk_asks_the_person_inside_the_client_and_sends_only_accepted_orders() {
    let python = ensure_python_sdk();
    let scratch = testkit::scratch_dir("confirm-python");
    let data_dir = scratch.join("data").display().to_string();
    let DevWithAddonSim {
        server,
        public_url,
        elite_password,
    } = dev_with_addon_sim_confirming(&data_dir, "every").await;
    let endpoint = Endpoint::new(&public_url);
    let mut flow =
        Flow::new_with_password(&endpoint, "elite@demo.crosstrade.test", &elite_password).await;
    let tokens = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let token = tokens["access_token"].as_str().unwrap();
    let mcp_url = format!("{public_url}/v1/api/mcp");

    let (mut runs, mut accepted) = (0, 0);
    for mode in ["legacy", "2026-07-28"] {
        for answer in ["decline", "accept"] {
            let key = format!("python-{mode}-{answer}");
            let end = python_places_an_order(&python, &mcp_url, token, mode, answer, &key).await;
            let placed = &end["placeOrder"];
            // Newest first: this run's order is the first; every run held one.
            let confirmations = end["confirmations"].as_array().unwrap();
            assert_eq!(confirmations.len(), runs + 1, "{end}");
            runs += 1;
            let confirmation = confirmations[0].clone();
            assert_eq!(confirmation["tool"], "PlaceOrder", "{confirmation}");
            assert_eq!(confirmation["preview"]["arguments"]["limit_price"], 4000.25);
            assert_eq!(
                confirmation["channel"], "elicitation_form",
                "{confirmation}"
            );
            assert_eq!(confirmation["decided_via"], "elicitation", "{confirmation}");
            if answer == "accept" {
                accepted += 1;
                assert_eq!(placed["isError"], false, "{mode}: {end}");
                assert!(placed["content"]["order_id"].is_string(), "{mode}: {end}");
                assert_eq!(confirmation["state"], "used", "{confirmation}");
                assert_eq!(confirmation["decision"], "accept");
                assert_eq!(confirmation["outcome_code"], "ok");
            } else {
                assert_eq!(placed["isError"], true, "{mode}: {end}");
                assert_eq!(placed["content"]["status"], "declined", "{mode}: {end}");
                assert_eq!(confirmation["state"], "rejected", "{confirmation}");
                assert_eq!(confirmation["decision"], "decline");
                assert!(confirmation["outcome_code"].is_null());
            }
            // What reached the simulated NinjaTrader 8: one order per accepted form, none for
            // a declined one.
            let orders = end["orders"].as_array().unwrap();
            assert_eq!(orders.len(), accepted, "{mode} {answer}: {end}");
        }
    }
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scratch).ok();
}
