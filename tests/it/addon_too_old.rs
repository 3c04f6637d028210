//! An Add-On below 1.13.0 through the real server: refused with 4001, then reported as too old
//! by `GetMcpCapabilities`, by the 408 of a tool that needs it, and by the account page and its
//! JSON, until a supported Add-On connects. An account whose Add-On never connected still reads
//! "not connected".

use std::time::Duration;

use serde_json::{Value, json};
use testkit::oauth::Endpoint;

use crate::account::account_browser;
use crate::addon_path::{addon_connected, sim_options, trade_token};
use crate::support::{add_elite_user, server_with_user, tools_call};

const TOO_OLD: &str = "Add-On 1.12.4 is connected but too old — update to 1.13.0 or later";
const NOT_CONNECTED: &str =
    "Add-On is not connected: open NinjaTrader 8 and the CrossTrade Add-On panel";

async fn capabilities(endpoint: &Endpoint, access: &str) -> Value {
    let reply = tools_call(endpoint, access, "GetMcpCapabilities", json!({})).await;
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["result"]["isError"], false, "{body}");
    body["result"]["structuredContent"].clone()
}

/// `GET /v1/account` of a signed-in browser.
async fn account_json(endpoint: &Endpoint, browser: &mut testkit::oauth::Browser) -> Value {
    let response = browser.get(endpoint, &endpoint.url("/v1/account")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers().contains_key("x-csrf-token"));
    response.json().await.unwrap()
}

async fn overview(endpoint: &Endpoint, browser: &mut testkit::oauth::Browser) -> String {
    let page = browser.get(endpoint, &endpoint.url("/account")).await;
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

#[tokio::test]
async fn an_addon_below_1_13_reads_as_too_old_everywhere_until_a_supported_one_connects() {
    let (db, server, endpoint) = server_with_user("old@example.com").await;
    let url = db.url();
    add_elite_user(&[("DATABASE_URL", url.as_str())], "never@example.com");
    let (_, access) = trade_token(&endpoint, "old@example.com").await;
    let mut browser = account_browser(&endpoint, "old@example.com").await;

    let scripts = testkit::scratch_dir("too-old-scripts");
    let mut options = sim_options(&db, server.addr, "old@example.com", &[], &scripts);
    options.addon_version = "1.12.4".to_owned();
    let closed = tokio::time::timeout(Duration::from_secs(10), addon_sim::run(&options))
        .await
        .expect("the server answers the hello")
        .unwrap();
    assert_eq!(
        closed,
        Some(addon_bridge::protocol::close::VERSION_UNSUPPORTED)
    );

    // GetMcpCapabilities, through the MCP endpoint.
    let caps = capabilities(&endpoint, &access).await;
    assert_eq!(caps["addon_connected"], false, "{caps}");
    assert_eq!(caps["addon_state"], "too_old");
    assert_eq!(caps["addon_status"], TOO_OLD);
    assert_eq!(caps["addon_version"], "1.12.4");
    assert_eq!(caps["nt8_version"], "8.1.4.1");
    let refused_at = caps["addon_refused_at"].as_str().unwrap().to_owned();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&refused_at).is_ok(),
        "{refused_at}"
    );

    // A tool that needs the Add-On: the product's 408, naming the refused version.
    let reply = tools_call(&endpoint, &access, "GetAccounts", json!({})).await;
    assert_eq!(reply.status(), 408);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "addon_disconnected", "message": TOO_OLD})
    );

    // The account page and its JSON.
    let page = overview(&endpoint, &mut browser).await;
    assert!(page.contains(TOO_OLD), "{page}");
    assert!(!page.contains("Not connected"), "{page}");
    let account = account_json(&endpoint, &mut browser).await;
    assert_eq!(account["email"], "old@example.com");
    assert_eq!(account["tier"], "elite");
    let addon = &account["addon"];
    assert_eq!(addon["state"], "too_old", "{account}");
    assert_eq!(addon["status"], TOO_OLD);
    assert_eq!(addon["connected"], false);
    assert_eq!(addon["too_old"]["addon_version"], "1.12.4");
    assert_eq!(addon["too_old"]["nt8_version"], "8.1.4.1");
    let stored =
        chrono::DateTime::parse_from_rfc3339(addon["too_old"]["refused_at"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        stored.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        refused_at
    );

    // An account whose Add-On never connected reads "not connected", as before.
    let (_, never_access) = trade_token(&endpoint, "never@example.com").await;
    let caps = capabilities(&endpoint, &never_access).await;
    assert_eq!(caps["addon_state"], "not_connected", "{caps}");
    assert_eq!(caps["addon_status"], NOT_CONNECTED);
    assert_eq!(caps["addon_version"], Value::Null);
    assert_eq!(caps.get("addon_refused_at"), None);
    let reply = tools_call(&endpoint, &never_access, "GetAccounts", json!({})).await;
    assert_eq!(reply.status(), 408);
    let body: Value = reply.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("not connected"),
        "{body}"
    );
    let mut never = account_browser(&endpoint, "never@example.com").await;
    let page = overview(&endpoint, &mut never).await;
    assert!(
        page.contains("Not connected") && !page.contains("too old"),
        "{page}"
    );
    let account = account_json(&endpoint, &mut never).await;
    assert_eq!(
        account["addon"],
        json!({"state": "not_connected", "status": NOT_CONNECTED, "connected": false,
            "addon_version": null, "nt8_version": null, "features": [], "too_old": null})
    );

    // A supported Add-On connects: the report ends everywhere.
    let options = sim_options(&db, server.addr, "old@example.com", &[], &scripts);
    let sim = tokio::spawn(async move { addon_sim::run(&options).await });
    assert!(addon_connected(&endpoint, &access).await);
    let caps = capabilities(&endpoint, &access).await;
    assert_eq!(caps["addon_state"], "connected", "{caps}");
    assert_eq!(caps["addon_version"], addon_sim::DEFAULT_ADDON_VERSION);
    assert_eq!(caps.get("addon_refused_at"), None);
    let page = overview(&endpoint, &mut browser).await;
    assert!(
        page.contains("Connected") && !page.contains("too old"),
        "{page}"
    );
    let account = account_json(&endpoint, &mut browser).await;
    assert_eq!(account["addon"]["state"], "connected", "{account}");
    assert_eq!(account["addon"]["too_old"], Value::Null);

    // Gone again: "not connected", the refusal is not back.
    sim.abort();
    let _ = sim.await;
    assert!(
        testkit::wait::eventually(Duration::from_secs(10), async || {
            capabilities(&endpoint, &access).await["addon_state"] == "not_connected"
        })
        .await
    );
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scripts).ok();
}
