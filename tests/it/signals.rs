//! Webhook history and copier activity end to end: `crosstrade dev --with-addon-sim`, a token
//! from the OAuth flow and rmcp. The simulator reports its webhook and copier backlog on every
//! welcome, and the copier mirrors fills in Sim101.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use testkit::oauth::{Endpoint, Flow};
use testkit::wait::wait_for;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{DevWithAddonSim, dev_with_addon_sim, run, stderr, stdout};

const ELITE: &str = "elite@demo.crosstrade.test";
const REPLACED: u16 = 4002;

type Client = RunningService<rmcp::RoleClient, ClientConfig>;

async fn call_raw(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(arguments.as_object().unwrap().clone());
    client.call_tool(params).await.unwrap()
}

async fn call(client: &Client, tool: &str, arguments: Value) -> Value {
    let result = call_raw(client, tool, arguments).await;
    assert_ne!(result.is_error, Some(true), "{tool}: {result:?}");
    // Trade tools publish no output schema: their result is the JSON text.
    result.structured_content.clone().unwrap_or_else(|| {
        let text = &result.content.first().unwrap().as_text().unwrap().text;
        serde_json::from_str(text).unwrap()
    })
}

fn ids(page: &Value, list: &str, id: &str) -> Vec<String> {
    page[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry[id].as_str().unwrap().to_owned())
        .collect()
}

/// Takes the simulator's place with a second key of the same account, until the simulator
/// reconnects and takes it back (4002 to this socket): the simulator's reconnect is real.
async fn make_the_simulator_reconnect(public_url: &str, data_dir: &str) {
    let created = run(
        &[("CROSSTRADE_DATA_DIR", data_dir)],
        &["addon-keys", "create", "--email", ELITE],
        "",
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let key = stdout(&created).trim().to_owned();
    let mut request = format!("{}/v1/addon/ws", public_url.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = json!({"v": 1, "type": "hello", "addon_version": "1.99.0",
                       "nt8_version": "8.1.4.1", "features": []});
    ws.send(Message::text(hello.to_string())).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(frame) = ws.next().await {
            if let Ok(Message::Close(Some(close))) = frame {
                return u16::from(close.code);
            }
        }
        0
    })
    .await
    .expect("the simulator did not come back");
    assert_eq!(closed, REPLACED);
}

#[tokio::test]
async fn webhook_history_and_copier_activity_through_the_simulator() {
    let scratch = testkit::scratch_dir("signals");
    let data_dir = scratch.join("postgres").display().to_string();
    let DevWithAddonSim {
        server,
        public_url,
        elite_password: password,
    } = dev_with_addon_sim(&data_dir).await;
    let endpoint = Endpoint::new(&public_url);
    let mut flow = Flow::new_with_password(&endpoint, ELITE, &password).await;
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

    // The backlog the simulator reports on its welcome, newest first.
    let backlog = ["wh-boot-4", "wh-boot-3", "wh-boot-2", "wh-boot-1"];
    let history = wait_for("the webhook backlog", Duration::from_secs(10), async || {
        let history = call(&client, "GetWebhookHistory", json!({})).await;
        (ids(&history, "signals", "signal_id") == backlog).then_some(history)
    })
    .await;
    assert_eq!(history["next_cursor"], Value::Null);
    let rejected = &history["signals"][1];
    assert_eq!(rejected["outcome"], "rejected", "{history}");
    assert_eq!(
        rejected["reason"],
        "Position limit reached: max 2 contracts"
    );
    assert_eq!(rejected["instrument"], "NQ 12-26");
    assert_eq!(rejected["order_ids"], json!([]));
    let placed = &history["signals"][3];
    assert_eq!(placed["outcome"], "order_placed", "{history}");
    assert_eq!(placed["order_ids"], json!(["WH-O1"]));
    assert_eq!(placed["source"], "TradingView");
    assert_eq!(history["signals"][2]["outcome"], "ignored");
    let only_rejected = call(
        &client,
        "GetWebhookHistory",
        json!({"outcome": "rejected", "account": "Sim101"}),
    )
    .await;
    assert_eq!(ids(&only_rejected, "signals", "signal_id"), ["wh-boot-3"]);

    // The simulator reconnects and reports its backlog again: nothing doubles.
    make_the_simulator_reconnect(&public_url, &data_dir).await;

    // A leader fill in Sim101: the copier places Sim102's order and skips Sim103.
    let order = call(
        &client,
        "PlaceOrder",
        json!({"account": "Sim101", "instrument": "ES 12-26", "action": "Buy",
               "order_type": "Market", "quantity": 1, "idempotency_key": "signals-e2e-1"}),
    )
    .await;
    let leader_order = order["order_id"].as_str().unwrap().to_owned();
    let activity = wait_for(
        "the copier's actions",
        Duration::from_secs(10),
        async || {
            let activity = call(&client, "GetCopierActivity", json!({"account": "Sim101"})).await;
            (activity["actions"].as_array().unwrap().len() == 4).then_some(activity)
        },
    )
    .await;
    let live: Vec<&Value> = activity["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["leader_order_id"] == leader_order.as_str())
        .collect();
    assert_eq!(live.len(), 2, "{activity}");
    let follower = live
        .iter()
        .find(|a| a["follower_account"] == "Sim102")
        .unwrap();
    assert_eq!(follower["outcome"], "order_placed", "{activity}");
    assert_eq!(follower["follower_quantity"], 1.0);
    assert_eq!(follower["leader_action"], "Buy");
    let follower_order = follower["follower_order_id"].as_str().unwrap();
    let skipped = live
        .iter()
        .find(|a| a["follower_account"] == "Sim103")
        .unwrap();
    assert_eq!(skipped["outcome"], "skipped", "{activity}");
    assert_eq!(
        skipped["reason"],
        "follower account Sim103 is not connected"
    );
    assert_eq!(skipped["follower_order_id"], Value::Null);
    let orders = call(
        &client,
        "GetOrders",
        json!({"account": "Sim102", "state": "filled"}),
    )
    .await;
    assert!(
        orders["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["order_id"] == follower_order),
        "{orders}"
    );

    // After the reconnect and the new fill, the backlog is still there once.
    let history = call(&client, "GetWebhookHistory", json!({})).await;
    assert_eq!(ids(&history, "signals", "signal_id"), backlog);
    let boot = call(&client, "GetCopierActivity", json!({"outcome": "skipped"})).await;
    assert_eq!(
        ids(&boot, "actions", "action_id")
            .iter()
            .filter(|id| id.as_str() == "cp-boot-2")
            .count(),
        1
    );

    // Pages of one, then a cursor this server never issued.
    let first = call(&client, "GetWebhookHistory", json!({"limit": 1})).await;
    assert_eq!(ids(&first, "signals", "signal_id"), ["wh-boot-4"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = call(
        &client,
        "GetWebhookHistory",
        json!({"limit": 1, "cursor": cursor}),
    )
    .await;
    assert_eq!(ids(&second, "signals", "signal_id"), ["wh-boot-3"]);
    let bad = call_raw(
        &client,
        "GetCopierActivity",
        json!({"cursor": "not-a-cursor"}),
    )
    .await;
    assert_eq!(bad.is_error, Some(true), "{bad:?}");

    client.cancel().await.ok();
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scratch).ok();
}
