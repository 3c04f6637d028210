//! Chart and workspace tools end to end: rmcp with tokens from the OAuth flow against
//! `crosstrade dev --with-addon-sim`, whose simulated NinjaTrader 8 keeps the charts.

use std::time::Duration;

use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::{ClientConfig, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use testkit::oauth::{Endpoint, Flow};
use testkit::wait::eventually;

use crate::addon_path::call;
use crate::support::{DevWithAddonSim, dev_with_addon_sim, tools_call};

const DEMO_ELITE: &str = "elite@demo.crosstrade.test";

async fn client(
    endpoint: &Endpoint,
    access: &str,
) -> RunningService<rmcp::RoleClient, ClientConfig> {
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(endpoint.resource()).auth_header(access),
    );
    ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .serve(transport)
        .await
        .unwrap()
}

/// The one chart GetCharts lists.
async fn only_chart(client: &RunningService<rmcp::RoleClient, ClientConfig>) -> Value {
    let listed = call(client, "GetCharts", json!({})).await;
    let charts = listed["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 1, "{listed}");
    charts[0].clone()
}

#[tokio::test]
async fn charts_are_opened_changed_and_saved_through_the_addon() {
    let scratch = testkit::scratch_dir("charts");
    let data_dir = scratch.join("postgres").display().to_string();
    let DevWithAddonSim {
        server,
        public_url,
        elite_password: password,
    } = dev_with_addon_sim(&data_dir).await;
    let endpoint = Endpoint::new(&public_url);
    let mut flow = Flow::new_with_password(&endpoint, DEMO_ELITE, &password).await;
    let tokens = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let trade = client(&endpoint, tokens["access_token"].as_str().unwrap()).await;

    // The simulator announces "charts", so the chart tools appear once it is connected.
    let mut names = Vec::new();
    eventually(Duration::from_secs(5), async || {
        names = trade
            .list_all_tools()
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        names.iter().any(|n| n == "OpenChart")
    })
    .await;
    for tool in [
        "GetCharts",
        "OpenChart",
        "ApplyChartTemplate",
        "AddIndicator",
        "RemoveIndicator",
        "DrawPriceLevel",
        "RemovePriceLevel",
        "SaveWorkspace",
    ] {
        assert!(names.iter().any(|n| n == tool), "{tool} missing: {names:?}");
    }
    assert_eq!(
        call(&trade, "GetCharts", json!({})).await["charts"],
        json!([])
    );

    // The agent retries the same OpenChart: one window, the first answer twice.
    let open = json!({"instrument": "ES 12-26", "timeframe": {"type": "Minute", "value": 5},
        "days_back": 3, "idempotency_key": "e2e-open-chart-1"});
    let opened = call(&trade, "OpenChart", open.clone()).await;
    assert_eq!(call(&trade, "OpenChart", open).await, opened);
    let chart_id = opened["chart_id"].as_str().unwrap().to_owned();
    assert_eq!(opened["instrument"], "ES 12-26");
    assert_eq!(opened["timeframe"], json!({"type": "Minute", "value": 5}));
    assert_eq!(opened["template"], "Default");
    let chart = only_chart(&trade).await;
    assert_eq!(chart["chart_id"], chart_id.as_str());
    assert_eq!(chart["indicators"], json!([]));

    let added = call(
        &trade,
        "AddIndicator",
        json!({"chart_id": chart_id, "indicator": "SMA", "parameters": {"Period": 20},
            "idempotency_key": "e2e-add-sma-1"}),
    )
    .await;
    assert_eq!(added["chart_id"], chart_id.as_str());
    let indicator_id = added["indicator_id"].as_str().unwrap().to_owned();
    let chart = only_chart(&trade).await;
    assert_eq!(
        chart["indicators"],
        json!([{"indicator_id": indicator_id, "name": "SMA", "parameters": {"Period": 20}, "panel": 1}])
    );

    let drawn = call(
        &trade,
        "DrawPriceLevel",
        json!({"chart_id": chart_id, "price": 4987.25, "label": "Stop", "color": "#FF0000",
            "style": "Dash", "idempotency_key": "e2e-draw-stop-1"}),
    )
    .await;
    let drawing_id = drawn["drawing_id"].as_str().unwrap().to_owned();
    let chart = only_chart(&trade).await;
    assert_eq!(
        chart["price_levels"],
        json!([{"drawing_id": drawing_id, "price": 4987.25, "label": "Stop", "color": "#FF0000", "style": "Dash"}])
    );

    let removed = call(
        &trade,
        "RemoveIndicator",
        json!({"chart_id": chart_id, "indicator_id": indicator_id}),
    )
    .await;
    assert_eq!(removed, json!({"removed": true}));
    assert_eq!(only_chart(&trade).await["indicators"], json!([]));
    let removed = call(
        &trade,
        "RemovePriceLevel",
        json!({"chart_id": chart_id, "drawing_id": drawing_id}),
    )
    .await;
    assert_eq!(removed, json!({"removed": true}));
    assert_eq!(only_chart(&trade).await["price_levels"], json!([]));

    // Removing it again is the model's mistake, told back as a tool error.
    let again = trade
        .call_tool(
            rmcp::model::CallToolRequestParams::new("RemovePriceLevel").with_arguments(
                json!({"chart_id": chart_id, "drawing_id": drawing_id})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(again.is_error, Some(true));
    let text = &again.content[0].as_text().unwrap().text;
    assert_eq!(
        text,
        &format!("no price level {drawing_id} on chart {chart_id}")
    );

    let applied = call(
        &trade,
        "ApplyChartTemplate",
        json!({"chart_id": chart_id, "template": "Scalping"}),
    )
    .await;
    assert_eq!(applied["template"], "Scalping");
    let chart = only_chart(&trade).await;
    assert_eq!(chart, applied);
    let indicators: Vec<(&Value, &Value)> = chart["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (&i["name"], &i["parameters"]))
        .collect();
    assert_eq!(
        indicators,
        [
            (&json!("EMA"), &json!({"Period": 9})),
            (&json!("EMA"), &json!({"Period": 21})),
            (&json!("VWAP"), &json!({})),
        ]
    );

    let saved = call(&trade, "SaveWorkspace", json!({"name": "E2E Charts"})).await;
    assert_eq!(saved["workspace"], "E2E Charts");
    assert!(
        saved["path"]
            .as_str()
            .unwrap()
            .ends_with(r"\E2E Charts.xml"),
        "{saved}"
    );
    let listed = call(&trade, "GetCharts", json!({})).await;
    assert_eq!(listed["workspace"], "E2E Charts");
    assert_eq!(listed["charts"], json!([chart]));

    // A read grant sees the charts but may not change them: 403 insufficient_scope, and
    // nothing reaches NinjaTrader 8.
    let mut flow = Flow::new_with_password(&endpoint, DEMO_ELITE, &password).await;
    let tokens = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    let read_access = tokens["access_token"].as_str().unwrap();
    assert_eq!(tokens["scope"], "mcp:read");
    let read = client(&endpoint, read_access).await;
    let listed_read: Vec<String> = read
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        listed_read.iter().any(|n| n == "GetCharts"),
        "{listed_read:?}"
    );
    assert!(
        !listed_read.iter().any(|n| n == "OpenChart"),
        "{listed_read:?}"
    );
    assert_eq!(call(&read, "GetCharts", json!({})).await, listed);
    for (tool, arguments) in [
        (
            "OpenChart",
            json!({"instrument": "NQ 12-26", "timeframe": {"type": "Tick", "value": 500}}),
        ),
        (
            "DrawPriceLevel",
            json!({"chart_id": chart_id, "price": 5000.0}),
        ),
    ] {
        let refused = tools_call(&endpoint, read_access, tool, arguments).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{tool}");
        let challenge = refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge
                .starts_with(r#"Bearer error="insufficient_scope", scope="mcp:read mcp:trade""#),
            "{challenge}"
        );
        let body: Value = refused.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": "insufficient_scope", "required": "mcp:trade"})
        );
    }
    assert_eq!(call(&trade, "GetCharts", json!({})).await, listed);

    read.cancel().await.ok();
    trade.cancel().await.ok();
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scratch).ok();
}
