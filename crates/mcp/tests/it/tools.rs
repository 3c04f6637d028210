//! `tools/list` filtering and caching hints, `tools/call` results, validation and relaying.

use std::time::Duration;

use mcp::CallOutcome;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Behaviour, spawn, tool_named, tool_names};

const READ_ADDON_TOOLS: [&str; 12] = [
    "GetAccounts",
    "GetConnections",
    "GetPositions",
    "GetOrders",
    "GetExecutions",
    "GetJournal",
    "GetAddonActivity",
    "GetWatermarks",
    "GetMarketData",
    "ListNinjaScriptFiles",
    "ReadNinjaScriptFile",
    "GetBacktestResults",
];
/// Listed after the others, visible without the Add-On.
const READ_JOB_TOOLS: [&str; 2] = ["GetJob", "ListJobs"];
const TRADE_TOOLS: [&str; 13] = [
    "PlaceOrder",
    "ModifyOrder",
    "CancelOrder",
    "CancelAllOrders",
    "FlattenPosition",
    "FlattenAll",
    "ReversePosition",
    "CompileNinjaScript",
    "WriteNinjaScriptFile",
    "RunStrategyBacktest",
    "DeployStrategy",
    "StopStrategy",
    "EmitAlert",
];
/// Listed only while the Add-On announces the "charts" feature.
const CHART_READ_TOOLS: [&str; 1] = ["GetCharts"];
const CHART_TRADE_TOOLS: [&str; 7] = [
    "OpenChart",
    "ApplyChartTemplate",
    "AddIndicator",
    "RemoveIndicator",
    "DrawPriceLevel",
    "RemovePriceLevel",
    "SaveWorkspace",
];

/// Stored history listed after the trade tools (served with or without the Add-On).
const STORED_SIGNAL_TOOLS: [&str; 2] = ["GetWebhookHistory", "GetCopierActivity"];

#[tokio::test]
async fn tools_list_follows_scope_and_addon_presence() {
    let app = spawn().await;
    // Without the Add-On only the backend tools are listed (capabilities, and the history the
    // backend stored from the Add-On), for both scopes.
    let offline = [
        "GetMcpCapabilities",
        "GetJournal",
        "GetAddonActivity",
        "GetWatermarks",
        "GetBacktestResults",
        "GetWebhookHistory",
        "GetCopierActivity",
        "GetJob",
        "ListJobs",
        "GetTradeConfirmations",
    ];
    for token in ["elite-read", "elite-trade"] {
        let reply = app
            .legacy(token, "2025-11-25", "tools/list", json!({}))
            .await;
        assert_eq!(tool_names(&reply), offline);
        let reply = app.modern(token, "tools/list", json!({})).await;
        assert_eq!(tool_names(&reply), offline);
        assert_eq!(reply.json["result"]["ttlMs"], 5000);
        assert_eq!(reply.json["result"]["cacheScope"], "private");
        assert_eq!(reply.json["result"]["resultType"], "complete");
    }

    app.relay.connect(app.users.elite);
    let mut read = vec!["GetMcpCapabilities"];
    read.extend(READ_ADDON_TOOLS);
    let mut all = read.clone();
    all.extend(TRADE_TOOLS);
    read.extend(STORED_SIGNAL_TOOLS);
    all.extend(STORED_SIGNAL_TOOLS);
    read.extend(READ_JOB_TOOLS);
    all.extend(READ_JOB_TOOLS);
    all.push("CancelJob");
    read.push("GetTradeConfirmations");
    all.extend(["ConfirmTrade", "GetTradeConfirmations"]);
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let reply = app
            .legacy("elite-read", version, "tools/list", json!({}))
            .await;
        assert_eq!(
            tool_names(&reply),
            read,
            "a read grant never sees trade tools"
        );
        assert_eq!(reply.json["result"].get("resultType"), None);
        assert_eq!(reply.json["result"].get("ttlMs"), None);
        let reply = app
            .legacy("elite-trade", version, "tools/list", json!({}))
            .await;
        assert_eq!(tool_names(&reply), all);
    }
    let reply = app.modern("elite-read", "tools/list", json!({})).await;
    assert_eq!(tool_names(&reply), read);
    assert_eq!(reply.json["result"]["ttlMs"], 60000);

    // Deterministic: the same list twice, byte for byte.
    let first = app
        .legacy("elite-trade", "2025-11-25", "tools/list", json!({}))
        .await;
    let second = app
        .legacy("elite-trade", "2025-11-25", "tools/list", json!({}))
        .await;
    assert_eq!(first.text, second.text);

    // Shapes per revision.
    let reply = app
        .legacy("elite-trade", "2025-03-26", "tools/list", json!({}))
        .await;
    let place = tool_named(&reply, "PlaceOrder");
    assert_eq!(place.get("title"), None);
    assert_eq!(
        place["annotations"],
        json!({"title":"Place an order","readOnlyHint":false,"destructiveHint":true,"idempotentHint":false,"openWorldHint":true})
    );
    let reply = app
        .legacy("elite-trade", "2025-06-18", "tools/list", json!({}))
        .await;
    let accounts = tool_named(&reply, "GetAccounts");
    assert_eq!(accounts["title"], "List trading accounts");
    assert_eq!(
        accounts["annotations"],
        json!({"readOnlyHint":true,"openWorldHint":false})
    );
    assert_eq!(
        accounts["inputSchema"],
        json!({"type":"object","additionalProperties":false})
    );
    assert_eq!(accounts["outputSchema"]["required"], json!(["accounts"]));
    let place = tool_named(&reply, "PlaceOrder");
    assert!(
        place["inputSchema"]["properties"]["idempotency_key"]["description"]
            .as_str()
            .unwrap()
            .contains("never performs the action twice")
    );

    app.relay.disconnect(app.users.elite);
    let reply = app
        .legacy("elite-trade", "2025-11-25", "tools/list", json!({}))
        .await;
    assert_eq!(tool_names(&reply), offline);
}

#[tokio::test]
async fn a_served_tool_list_is_the_one_built_for_its_variant() {
    let app = spawn().await;
    // A single `tools/list` is answered from its serialized variant; a batch item is built.
    for token in ["elite-read", "elite-trade"] {
        let mut lists = Vec::new();
        for _ in 0..2 {
            let single = app
                .post(
                    Some(token),
                    &[],
                    &json!({"jsonrpc": "2.0", "id": "s", "method": "tools/list"}),
                )
                .await;
            assert_eq!(single.status, StatusCode::OK, "{}", single.text);
            assert_eq!(single.headers["content-type"], "application/json");
            assert_eq!(single.json["jsonrpc"], "2.0");
            assert_eq!(single.json["id"], "s");
            lists.push(single.json["result"].clone());
        }
        let batch = app
            .post(
                Some(token),
                &[],
                &json!([{"jsonrpc": "2.0", "id": 7, "method": "tools/list"}]),
            )
            .await;
        assert_eq!(batch.json[0]["id"], 7, "{}", batch.text);
        assert_eq!(lists[0], lists[1]);
        assert_eq!(lists[0], batch.json[0]["result"], "{token}");
    }
    // The variant follows the Add-On's presence.
    let before = app
        .legacy("elite-trade", "2025-11-25", "tools/list", json!({}))
        .await;
    app.relay.connect(app.users.elite);
    let after = app
        .legacy("elite-trade", "2025-11-25", "tools/list", json!({}))
        .await;
    assert!(tool_names(&after).len() > tool_names(&before).len());
}

#[tokio::test]
async fn get_mcp_capabilities_works_without_nt8() {
    let app = spawn().await;
    for (version, structured) in [("2025-03-26", false), ("2025-11-25", true)] {
        let reply = app
            .legacy(
                "elite-read",
                version,
                "tools/call",
                json!({"name":"GetMcpCapabilities"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let expected = json!({"addon_connected":false,"addon_state":"not_connected",
            "addon_status":"Add-On is not connected: open NinjaTrader 8 and the CrossTrade Add-On panel",
            "addon_version":null,"nt8_version":null,
            "features":[],"scope":"mcp:read","tier":"elite","protocol_version":version,
            "server_version":"9.9.9-test"});
        let result = &reply.json["result"];
        assert_eq!(result["isError"], false);
        let text: serde_json::Value =
            serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, expected);
        if structured {
            assert_eq!(result["structuredContent"], expected);
        } else {
            assert_eq!(result.get("structuredContent"), None);
        }
    }
    app.relay.connect(app.users.elite);
    let reply = app
        .modern(
            "elite-trade",
            "tools/call",
            json!({"name":"GetMcpCapabilities","arguments":{}}),
        )
        .await;
    assert_eq!(
        reply.json["result"]["structuredContent"],
        json!({"addon_connected":true,"addon_state":"connected",
            "addon_status":"Add-On 1.13.2 is connected",
            "addon_version":"1.13.2","nt8_version":"8.1.4.1",
            "features":["orders","ninjascript"],"scope":"mcp:read mcp:trade","tier":"elite",
            "protocol_version":"2026-07-28","server_version":"9.9.9-test"})
    );
    assert_eq!(reply.json["result"]["resultType"], "complete");
    assert_eq!(app.relay.call_count(), 0);
}

#[tokio::test]
async fn a_refused_addon_is_reported_as_too_old_until_a_supported_one_connects() {
    let app = spawn().await;
    app.relay.refuse(app.users.elite, "1.12.4");
    let reply = app
        .modern(
            "elite-trade",
            "tools/call",
            json!({"name":"GetMcpCapabilities","arguments":{}}),
        )
        .await;
    assert_eq!(
        reply.json["result"]["structuredContent"],
        json!({"addon_connected":false,"addon_state":"too_old",
            "addon_status":"Add-On 1.12.4 is connected but too old — update to 1.13.0 or later",
            "addon_version":"1.12.4","nt8_version":"8.1.4.1",
            "addon_refused_at":"2026-12-01T09:30:00Z",
            "features":[],"scope":"mcp:read mcp:trade","tier":"elite",
            "protocol_version":"2026-07-28","server_version":"9.9.9-test"})
    );
    // Its tools stay hidden, as for an Add-On that is not connected.
    let listed = app.modern("elite-trade", "tools/list", json!({})).await;
    let names = tool_names(&listed);
    assert!(!names.iter().any(|n| n == "GetAccounts"), "{names:?}");

    app.relay.connect(app.users.elite);
    let reply = app
        .modern(
            "elite-trade",
            "tools/call",
            json!({"name":"GetMcpCapabilities","arguments":{}}),
        )
        .await;
    let capabilities = &reply.json["result"]["structuredContent"];
    assert_eq!(capabilities["addon_state"], "connected", "{capabilities}");
    assert_eq!(capabilities["addon_version"], "1.13.2");
    assert_eq!(capabilities.get("addon_refused_at"), None);
}

#[tokio::test]
async fn bad_arguments_are_tool_errors_naming_field_and_rule_and_never_relayed() {
    let app = spawn().await;
    app.relay.connect(app.users.elite);
    let base = json!({"account":"Sim101","instrument":"ES 12-26","action":"Buy",
        "order_type":"Limit","quantity":1,"limit_price":5000.25});
    let mut zero = base.clone();
    zero["quantity"] = json!(0);
    let mut no_limit = base.clone();
    no_limit.as_object_mut().unwrap().remove("limit_price");
    let mut wrong_side = base.clone();
    wrong_side["action"] = json!("BUY");
    for (arguments, message) in [
        (
            zero,
            "Invalid arguments for PlaceOrder: quantity: 0 is less than the minimum of 1 (rule: minimum)",
        ),
        (
            no_limit,
            "Invalid arguments for PlaceOrder: limit_price: required when order_type is Limit (rule: required)",
        ),
        (
            wrong_side,
            r#"Invalid arguments for PlaceOrder: action: "BUY" is not one of "Buy" or "Sell" (rule: enum)"#,
        ),
    ] {
        let reply = app.call("elite-trade", "PlaceOrder", arguments).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json,
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":message}],"isError":true}})
        );
    }
    let reply = app
        .call("elite-read", "GetOrders", json!({"limit": "ten"}))
        .await;
    assert_eq!(
        reply.json["result"]["content"][0]["text"],
        r#"Invalid arguments for GetOrders: limit: "ten" is not of types "null", "integer" (rule: type)"#
    );
    assert_eq!(app.relay.call_count(), 0);
}

#[tokio::test]
async fn trade_calls_are_relayed_with_the_idempotency_key_lifted_out() {
    let app = spawn().await;
    app.relay.connect(app.users.elite);
    app.relay.behave(Behaviour::Answer(CallOutcome::Ok(
        json!({"order_id":"o-1","state":"Working"}),
    )));
    let reply = app
        .call(
            "elite-trade",
            "PlaceOrder",
            json!({"account":"Sim101","instrument":"ES 12-26","action":"Buy","order_type":"Market",
                "quantity":2,"idempotency_key":"7d1f0c2e-key-0001"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json["result"],
        json!({"content":[{"type":"text","text":"{\"order_id\":\"o-1\",\"state\":\"Working\"}"}],"isError":false})
    );
    let calls = app.relay.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].user_id, app.users.elite);
    assert_eq!(calls[0].tool, "PlaceOrder");
    assert_eq!(
        calls[0].idempotency_key.as_deref(),
        Some("7d1f0c2e-key-0001")
    );
    assert_eq!(calls[0].deadline, Duration::from_secs(10));
    assert_eq!(
        calls[0].arguments,
        json!({"account":"Sim101","instrument":"ES 12-26","action":"Buy","order_type":"Market","quantity":2})
    );

    // Long work starts a job instead of holding the request.
    let reply = app
        .call("elite-trade", "CompileNinjaScript", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["result"]["isError"], false, "{}", reply.text);
    let starts = app.relay.job_starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].tool, "CompileNinjaScript");
    assert_eq!(starts[0].idempotency_key, None);
    assert_eq!(app.relay.call_count(), 1);

    app.relay.behave(Behaviour::Answer(CallOutcome::ToolError(
        "Order rejected: insufficient margin".into(),
    )));
    let reply = app
        .call("elite-trade", "CancelOrder", json!({"order_id":"o-1"}))
        .await;
    assert_eq!(
        reply.json["result"],
        json!({"content":[{"type":"text","text":"Order rejected: insufficient margin"}],"isError":true})
    );
}

#[tokio::test]
async fn read_tools_return_structured_content_checked_against_their_schema() {
    let app = spawn().await;
    app.relay.connect(app.users.elite);
    let accounts = json!({"accounts":[{"name":"Sim101","cash_value":100_000.0}]});
    app.relay
        .behave(Behaviour::Answer(CallOutcome::Ok(accounts.clone())));
    let reply = app.call("elite-read", "GetAccounts", json!({})).await;
    assert_eq!(reply.json["result"]["structuredContent"], accounts);
    assert_eq!(reply.json["result"]["isError"], false);

    app.relay.behave(Behaviour::Answer(CallOutcome::Ok(json!([
        "not", "an", "object"
    ]))));
    let reply = app.call("elite-read", "GetAccounts", json!({})).await;
    assert_eq!(
        reply.json["result"],
        json!({"content":[{"type":"text","text":"GetAccounts returned data in an unexpected shape; the CrossTrade Add-On may need an update"}],"isError":true})
    );
}

/// The conformance suite's fixtures are never served by a state built without an extension, as
/// the binary's is.
#[tokio::test]
async fn conformance_fixtures_are_never_served_by_a_production_state() {
    let app = spawn().await;
    let reply = app.call("elite-trade", "test_simple_text", json!({})).await;
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Unknown tool: test_simple_text"}})
    );
    let reply = app
        .modern(
            "elite-trade",
            "tools/call",
            json!({"name":"test_input_required_result_elicitation","arguments":{}}),
        )
        .await;
    assert_eq!(reply.json["error"]["code"], -32602);
    for method in ["prompts/list", "resources/list", "completion/complete"] {
        let reply = app
            .legacy("elite-trade", "2025-11-25", method, json!({}))
            .await;
        assert_eq!(reply.json["error"]["code"], -32601, "{method}");
    }
    let legacy = app
        .legacy("elite-trade", "2025-11-25", "tools/list", json!({}))
        .await;
    let modern = app.modern("elite-trade", "tools/list", json!({})).await;
    for names in [tool_names(&legacy), tool_names(&modern)] {
        assert!(
            names
                .iter()
                .all(|name| !name.starts_with("test_") && name != "json_schema_2020_12_tool"),
            "{names:?}"
        );
    }
}

#[tokio::test]
async fn a_history_window_that_is_not_rfc_3339_is_told_back_not_ignored() {
    let app = spawn().await;
    let reply = app
        .call(
            "elite-read",
            "GetJournal",
            json!({ "since": "yesterday noon" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json["result"],
        json!({"content":[{"type":"text","text":"since must be an RFC 3339 time such as 2026-11-20T14:30:00Z"}],"isError":true})
    );
    // A valid window reaches the history store; this test's relay stores nothing, so it is
    // unavailable.
    let reply = app
        .call(
            "elite-read",
            "GetJournal",
            json!({ "since": "2026-11-20T14:30:00Z", "until": "2026-11-21T00:00:00+01:00" }),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.json
    );
}

/// Each tool names its auth policy for ChatGPT's Apps SDK: OAuth with exactly the scope it
/// needs, at the top level and mirrored in `_meta`, under every revision.
#[tokio::test]
async fn every_tool_declares_its_oauth_scope_for_the_apps_sdk() {
    let app = spawn().await;
    app.relay
        .connect_offering(app.users.elite, &["orders", "ninjascript", "charts"]);
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let reply = app
            .legacy("elite-trade", version, "tools/list", json!({}))
            .await;
        let tools = reply.json["result"]["tools"].as_array().unwrap();
        assert!(!tools.is_empty());
        for tool in tools {
            let name = tool["name"].as_str().unwrap();
            let scope = if TRADE_TOOLS.contains(&name)
                || CHART_TRADE_TOOLS.contains(&name)
                || name == "CancelJob"
                || name == "ConfirmTrade"
            {
                "mcp:trade"
            } else {
                "mcp:read"
            };
            let expected = json!([{ "type": "oauth2", "scopes": [scope] }]);
            assert_eq!(tool["securitySchemes"], expected, "{version} {name}");
            assert_eq!(
                tool["_meta"]["securitySchemes"], expected,
                "{version} {name}"
            );
        }
    }
}

/// Watermarks are per account (there is no per-instrument equity): `instrument` is refused as a
/// tool error the model can read, not silently dropped; trailing options need an amount.
#[tokio::test]
async fn watermarks_refuse_an_instrument_and_trailing_options_without_an_amount() {
    let app = spawn().await;
    for (arguments, message) in [
        (
            json!({"account": "Sim101", "instrument": "ES 12-26"}),
            "Invalid arguments for GetWatermarks: (arguments): Additional properties are not allowed ('instrument' was unexpected) (rule: additionalProperties)",
        ),
        (
            json!({"trailing_stop_at": 50_000}),
            "Invalid arguments for GetWatermarks: trailing_drawdown: required when trailing_mode or trailing_stop_at is given (rule: required)",
        ),
        (
            json!({"trailing_drawdown": -100, "trailing_mode": "intraday"}),
            "Invalid arguments for GetWatermarks: trailing_drawdown: -100 is less than or equal to the minimum of 0 (rule: exclusiveMinimum)",
        ),
    ] {
        let reply = app.call("elite-read", "GetWatermarks", arguments).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json["result"],
            json!({"content":[{"type":"text","text":message}],"isError":true})
        );
    }
    // Valid arguments reach the history store; this test's relay stores nothing.
    let reply = app
        .call(
            "elite-read",
            "GetWatermarks",
            json!({"account": "Sim101", "trailing_drawdown": 2500, "trailing_mode": "end_of_day", "trailing_stop_at": 50_000}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.json
    );
}

#[tokio::test]
async fn chart_tools_are_listed_only_while_the_addon_offers_charts() {
    let app = spawn().await;
    let mut read = vec!["GetMcpCapabilities"];
    read.extend(READ_ADDON_TOOLS);
    let mut all = read.clone();
    all.extend(TRADE_TOOLS);
    read.extend(STORED_SIGNAL_TOOLS);
    all.extend(STORED_SIGNAL_TOOLS);
    read.extend(READ_JOB_TOOLS);
    all.extend(READ_JOB_TOOLS);
    all.push("CancelJob");
    read.push("GetTradeConfirmations");
    all.extend(["ConfirmTrade", "GetTradeConfirmations"]);
    let has_chart_tool = |names: &[String]| {
        names.iter().any(|n| {
            CHART_READ_TOOLS.contains(&n.as_str()) || CHART_TRADE_TOOLS.contains(&n.as_str())
        })
    };

    // No Add-On: hidden, and a call is 408 without reaching any Add-On.
    for token in ["elite-read", "elite-trade"] {
        let reply = app.modern(token, "tools/list", json!({})).await;
        assert!(!has_chart_tool(&tool_names(&reply)), "{token}");
    }
    let open = json!({"instrument":"ES 12-26","timeframe":{"type":"Minute","value":5},
        "idempotency_key":"chart-open-0001"});
    let reply = app.call("elite-trade", "OpenChart", open.clone()).await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reply.json["error"], "addon_disconnected");

    // An Add-On without the feature: still hidden (it would refuse the call).
    app.relay.connect(app.users.elite);
    let reply = app
        .legacy("elite-trade", "2025-11-25", "tools/list", json!({}))
        .await;
    assert_eq!(tool_names(&reply), all);

    // With it: GetCharts for a read grant, every chart tool for a trade grant, after the rest.
    app.relay
        .connect_offering(app.users.elite, &["orders", "ninjascript", "charts"]);
    read.extend(CHART_READ_TOOLS);
    all.extend(CHART_READ_TOOLS);
    all.extend(CHART_TRADE_TOOLS);
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let reply = app
            .legacy("elite-read", version, "tools/list", json!({}))
            .await;
        assert_eq!(tool_names(&reply), read, "{version}");
        let reply = app
            .legacy("elite-trade", version, "tools/list", json!({}))
            .await;
        assert_eq!(tool_names(&reply), all, "{version}");
    }
    let reply = app.modern("elite-trade", "tools/list", json!({})).await;
    assert_eq!(tool_names(&reply), all);
    let draw = tool_named(&reply, "DrawPriceLevel");
    assert_eq!(
        draw["annotations"],
        json!({"readOnlyHint":false,"destructiveHint":false,"idempotentHint":false,"openWorldHint":false})
    );
    assert_eq!(
        draw["inputSchema"]["properties"]["color"]["pattern"],
        "^#[0-9A-Fa-f]{6}$"
    );
    assert!(draw["outputSchema"].is_object());

    // A write is relayed with its own deadline and the key lifted out; its answer is checked
    // against the output schema.
    let chart = json!({"chart_id":"c-1","instrument":"ES 12-26",
        "timeframe":{"type":"Minute","value":5},"template":null,"indicators":[],"price_levels":[]});
    app.relay
        .behave(Behaviour::Answer(CallOutcome::Ok(chart.clone())));
    let reply = app.call("elite-trade", "OpenChart", open).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["result"]["structuredContent"], chart);
    let calls = app.relay.calls.lock().unwrap().clone();
    let last = calls.last().unwrap();
    assert_eq!(last.tool, "OpenChart");
    assert_eq!(last.deadline, Duration::from_secs(30));
    assert_eq!(last.idempotency_key.as_deref(), Some("chart-open-0001"));
    assert_eq!(
        last.arguments,
        json!({"instrument":"ES 12-26","timeframe":{"type":"Minute","value":5}})
    );

    // A read grant lists GetCharts and may call it, but no chart write.
    app.relay.behave(Behaviour::Answer(CallOutcome::Ok(
        json!({"charts":[chart]}),
    )));
    let reply = app.call("elite-read", "GetCharts", json!({})).await;
    assert_eq!(reply.json["result"]["isError"], false, "{}", reply.json);
    let before = app.relay.call_count();
    let reply = app
        .call(
            "elite-read",
            "DrawPriceLevel",
            json!({"chart_id":"c-1","price":5000.0}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json,
        json!({"error":"insufficient_scope","required":"mcp:trade"})
    );
    assert_eq!(app.relay.call_count(), before);
}
