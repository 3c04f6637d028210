//! GetWatermarks end to end: a real MCP client (rmcp) with a token from the OAuth flow →
//! `crosstrade dev --with-addon-sim` → the account snapshots the simulator reported after its
//! fills, checked against the rows stored in the dev database.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use testkit::oauth::{Endpoint, Flow};
use testkit::wait::{eventually, wait_for};

use crate::addon_path::call;
use crate::support::{DevWithAddonSim, dev_with_addon_sim};

/// A stored Sim101 snapshot.
#[derive(Debug, Clone, Copy)]
struct Row {
    taken_at: DateTime<Utc>,
    value: f64,
    session_start: Option<DateTime<Utc>>,
}

fn at(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("{value}")))
        .unwrap()
        .to_utc()
}

/// The first row with the highest (or lowest) value.
fn extreme(rows: &[Row], higher: fn(f64, f64) -> bool) -> Row {
    let mut best = rows[0];
    for row in rows {
        if higher(row.value, best.value) {
            best = *row;
        }
    }
    best
}

/// The intraday trailing threshold `min(peak - amount, stop_at)` at each row: its final value,
/// the peak, and the first row at or below its threshold then.
fn trailing(rows: &[Row], amount: f64, stop_at: f64) -> (f64, f64, Option<DateTime<Utc>>) {
    let mut peak = f64::MIN;
    let mut breached = None;
    for row in rows {
        peak = peak.max(row.value);
        if breached.is_none() && row.value <= (peak - amount).min(stop_at) {
            breached = Some(row.taken_at);
        }
    }
    (peak, (peak - amount).min(stop_at), breached)
}

async fn sim101_rows(data_dir: &Path) -> Vec<Row> {
    let options = store::cluster::running_connect_options(data_dir, "postgres").unwrap();
    let db = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let rows: Vec<(DateTime<Utc>, f64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT taken_at, net_liquidation, session_start FROM addon_account_snapshots
         WHERE account = 'Sim101' ORDER BY taken_at, id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    db.close().await;
    rows.into_iter()
        .map(|(taken_at, value, session_start)| Row {
            taken_at,
            value,
            session_start,
        })
        .collect()
}

#[tokio::test]
async fn watermarks_after_fills_match_the_snapshots_the_simulator_reported() {
    let scratch = testkit::scratch_dir("watermarks");
    let data_dir = scratch.join("postgres");
    let DevWithAddonSim {
        server,
        public_url,
        elite_password: password,
    } = dev_with_addon_sim(&data_dir.display().to_string()).await;
    let endpoint = Endpoint::new(&public_url);
    let mut flow =
        Flow::new_with_password(&endpoint, "elite@demo.crosstrade.test", &password).await;
    let tokens = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(endpoint.resource())
            .auth_header(tokens["access_token"].as_str().unwrap()),
    );
    let client = ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .serve(transport)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || client
            .list_all_tools()
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "PlaceOrder"))
        .await,
        "the simulator connected"
    );

    // Buy two ES and flatten: a snapshot after each fill, after the one sent on connecting.
    let order = json!({"account": "Sim101", "instrument": "ES 12-26", "action": "Buy",
        "order_type": "Market", "quantity": 2, "idempotency_key": "watermarks-buy-1"});
    call(&client, "PlaceOrder", order).await;
    call(&client, "FlattenAll", json!({ "account": "Sim101" })).await;
    let rows = wait_for(
        "three Sim101 snapshots stored",
        Duration::from_secs(5),
        async || {
            let rows = sim101_rows(&data_dir).await;
            (rows.len() >= 3).then_some(rows)
        },
    )
    .await;
    // The simulator's known balances: 100 000 at the start, 2.04 commission for the buy (its
    // open profit is 0 at the fill price); the last one is what GetAccounts reports now.
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(json!(rows[0].value), json!(100_000.0));
    assert_eq!(json!(rows[1].value), json!(100_000.0 - 2.04));
    let accounts = call(&client, "GetAccounts", json!({})).await;
    let sim101 = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Sim101")
        .unwrap();
    assert_eq!(
        sim101["net_liquidation"],
        json!(rows[2].value),
        "{accounts}"
    );
    let session_start = rows[0]
        .session_start
        .expect("the simulator states its session");
    assert!(rows.iter().all(|r| r.session_start == Some(session_start)));

    let marks = call(&client, "GetWatermarks", json!({ "account": "Sim101" })).await;
    let entries = marks["watermarks"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{marks}");
    let mark = &entries[0];
    let latest = rows[2];
    let high = extreme(&rows, |a, b| a > b);
    let low = extreme(&rows, |a, b| a < b);
    assert_eq!(mark["account"], "Sim101");
    assert_eq!(mark["basis"], "net_liquidation");
    assert_eq!(mark["latest"]["value"], json!(latest.value));
    assert_eq!(at(&mark["latest"]["at"]), latest.taken_at);
    assert_eq!(mark["all_time"]["high"], json!(high.value), "{mark}");
    assert_eq!(at(&mark["all_time"]["high_at"]), high.taken_at);
    assert_eq!(mark["all_time"]["low"], json!(low.value));
    assert_eq!(at(&mark["all_time"]["low_at"]), low.taken_at);
    // Every snapshot is in the simulator's one session, which opened at the first.
    assert_eq!(mark["session"]["source"], "addon");
    assert_eq!(at(&mark["session"]["start"]), session_start);
    assert_eq!(mark["session"]["open"], json!(100_000.0));
    assert_eq!(at(&mark["session"]["open_at"]), rows[0].taken_at);
    assert_eq!(mark["session"]["high"], mark["all_time"]["high"]);
    assert_eq!(mark["session"]["low"], mark["all_time"]["low"]);
    assert_eq!(
        mark["drawdown"]["from_high"],
        json!(high.value - latest.value)
    );
    // The largest fall runs from the starting 100 000 to the lowest value after it.
    assert_eq!(mark["drawdown"]["max"], json!(100_000.0 - low.value));
    assert_eq!(at(&mark["drawdown"]["max_peak_at"]), rows[0].taken_at);
    assert_eq!(at(&mark["drawdown"]["max_trough_at"]), low.taken_at);
    assert_eq!(mark["trailing"], Value::Null);

    // A trailing drawdown of 1 capped at 99 998.50: the buy's commission alone breaches it.
    let args = json!({"account": "Sim101", "trailing_drawdown": 1.0, "trailing_stop_at": 99_998.5});
    let trailed = call(&client, "GetWatermarks", args).await["watermarks"][0]["trailing"].clone();
    let (peak, threshold, breached) = trailing(&rows, 1.0, 99_998.5);
    assert_eq!(breached, Some(rows[1].taken_at));
    assert_eq!(trailed["mode"], "intraday");
    assert_eq!(trailed["amount"], json!(1.0));
    assert_eq!(trailed["stop_at"], json!(99_998.5));
    assert_eq!(trailed["peak"], json!(peak), "{trailed}");
    assert_eq!(trailed["threshold"], json!(threshold));
    assert_eq!(trailed["remaining"], json!(latest.value - threshold));
    assert_eq!(at(&trailed["breached_at"]), rows[1].taken_at);

    // End of day: no session has closed yet, so the threshold trails the starting balance.
    let args =
        json!({"account": "Sim101", "trailing_drawdown": 2_500, "trailing_mode": "end_of_day"});
    let trailed = call(&client, "GetWatermarks", args).await["watermarks"][0]["trailing"].clone();
    assert_eq!(
        trailed,
        json!({"mode": "end_of_day", "amount": 2_500.0, "stop_at": null, "peak": 100_000.0,
               "threshold": 97_500.0, "remaining": latest.value - 97_500.0, "breached_at": null})
    );

    // There is no per-instrument equity: `instrument` is refused, not ignored.
    let refused = client
        .call_tool(
            CallToolRequestParams::new("GetWatermarks").with_arguments(
                json!({"account": "Sim101", "instrument": "ES 12-26"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(refused.is_error, Some(true), "{refused:?}");

    client.cancel().await.ok();
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scratch).ok();
}
