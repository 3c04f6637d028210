//! Revision negotiation, both eras, batches, the 2026-07-28 header checks and JSON-RPC errors.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{modern_request, server_info, spawn};

fn initialize(version: &str) -> Value {
    json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name":"test-client","version":"1.0.0"}}})
}

#[tokio::test]
async fn initialize_negotiates_in_the_body_whatever_the_header_says() {
    let app = spawn().await;
    for (offered, header, answered) in [
        ("2025-03-26", None, "2025-03-26"),
        ("2025-06-18", Some("2025-06-18"), "2025-06-18"),
        ("2025-11-25", Some("2025-11-25"), "2025-11-25"),
        // Claude's add-time probe style, and newer clients: never rejected for the header.
        ("2025-11-25", Some("2026-07-28"), "2025-11-25"),
        ("2025-06-18", Some("2099-01-01"), "2025-06-18"),
        // A modern-only or unknown future version: the latest legacy one.
        ("2026-07-28", Some("2026-07-28"), "2025-11-25"),
        ("2099-01-01", None, "2025-11-25"),
    ] {
        let headers: Vec<(&str, &str)> = header
            .map(|h| vec![("mcp-protocol-version", h)])
            .unwrap_or_default();
        let reply = app
            .post(Some("standard-read"), &headers, &initialize(offered))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{offered} {header:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("mcp-session-id"), None);
        let result = &reply.json["result"];
        assert_eq!(result["protocolVersion"], answered, "{offered} {header:?}");
        assert_eq!(
            result["capabilities"],
            json!({"tools":{"listChanged":true}})
        );
        assert_eq!(result["serverInfo"], server_info());
        assert!(
            result["instructions"]
                .as_str()
                .unwrap()
                .contains("GetMcpCapabilities")
        );
        assert_eq!(result.get("resultType"), None);
        assert_eq!(reply.json["id"], 0);
    }
    let reply = app
        .post(
            Some("standard-read"),
            &[],
            &json!({"jsonrpc":"2.0","id":5,"method":"initialize","params":{}}),
        )
        .await;
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":5,"error":{"code":-32602,"message":"Invalid params: initialize needs a string protocolVersion"}})
    );
}

#[tokio::test]
async fn notifications_and_client_responses_are_202_without_body() {
    let app = spawn().await;
    for body in [
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}),
        json!({"jsonrpc":"2.0","id":"s-1","result":{}}),
    ] {
        for version in [None, Some("2025-11-25"), Some("2026-07-28")] {
            let headers: Vec<(&str, &str)> = version
                .map(|v| vec![("mcp-protocol-version", v)])
                .unwrap_or_default();
            let reply = app.post(Some("elite-read"), &headers, &body).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{body} {version:?}");
            assert_eq!(reply.text, "");
        }
    }
}

#[tokio::test]
async fn ping_and_initialize_are_legacy_only() {
    let app = spawn().await;
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let reply = app.legacy("pro-trade", version, "ping", json!({})).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json, json!({"jsonrpc":"2.0","id":1,"result":{}}));
    }
    // 2026-07-28 removed both (conformance `server-stateless`): 404 and -32601, like any
    // method the revision lacks.
    for method in ["ping", "initialize"] {
        let reply = app.modern("pro-trade", method, json!({})).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(
            reply.json,
            json!({"jsonrpc":"2.0","id":"m-1","error":{"code":-32601,
                "message":format!("Method not found: {method}")}})
        );
    }
}

#[tokio::test]
async fn server_discover_as_the_sdks_probe_it() {
    let app = spawn().await;
    // Python SDK 2.x / TypeScript SDK: `_meta` envelope, MCP-Protocol-Version and Mcp-Method.
    let (headers, body) = modern_request("server/discover", json!({}));
    for accept in [
        "application/json, text/event-stream",
        "text/event-stream",
        "*/*",
    ] {
        let mut request = app
            .client
            .post(&app.url)
            .bearer_auth("standard-read")
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(body.to_string());
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let reply = app.send(request).await;
        assert_eq!(reply.status, StatusCode::OK, "{accept}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let instructions = reply.json["result"]["instructions"].clone();
        assert_eq!(
            reply.json,
            json!({"jsonrpc":"2.0","id":"m-1","result":{
                "resultType":"complete",
                "supportedVersions":["2026-07-28"],
                "capabilities":{"tools":{}},
                "instructions": instructions,
                "ttlMs":3_600_000,
                "cacheScope":"public",
                "_meta":{"io.modelcontextprotocol/serverInfo":server_info()}}})
        );
    }
    // A modern client proposing a version this server does not know gets -32022 with the
    // versions it may name per request (those of server/discover), and retries.
    let reply = app
        .post(
            Some("standard-read"),
            &[
                ("mcp-protocol-version", "2099-01-01"),
                ("mcp-method", "server/discover"),
            ],
            &json!({"jsonrpc":"2.0","id":2,"method":"server/discover","params":{"_meta":{
                "io.modelcontextprotocol/protocolVersion":"2099-01-01",
                "io.modelcontextprotocol/clientCapabilities":{}}}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":2,"error":{"code":-32022,"message":"Unsupported protocol version",
            "data":{"supported":["2026-07-28"],"requested":"2099-01-01"}}})
    );
}

#[tokio::test]
async fn an_unknown_legacy_header_version_is_400_unsupported() {
    let app = spawn().await;
    let reply = app
        .legacy("elite-read", "2024-01-01", "tools/list", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json["error"]["code"], -32022);
    assert_eq!(reply.json["error"]["data"]["requested"], "2024-01-01");
    assert_eq!(
        reply.json["error"]["data"]["supported"],
        json!(["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"])
    );
}

#[tokio::test]
async fn batches_only_under_2025_03_26() {
    let app = spawn().await;
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"ping"},
        {"jsonrpc":"2.0","method":"notifications/initialized"},
        {"jsonrpc":"2.0","id":2,"method":"nope/nothing"},
        {"jsonrpc":"2.0","id":3,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}
    ]);
    for headers in [vec![], vec![("mcp-protocol-version", "2025-03-26")]] {
        let reply = app.post(Some("elite-read"), &headers, &batch).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json,
            json!([
                {"jsonrpc":"2.0","id":1,"result":{}},
                {"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"Method not found: nope/nothing"}},
                {"jsonrpc":"2.0","id":3,"error":{"code":-32600,"message":"Invalid Request: initialize must not be part of a batch"}}
            ])
        );
    }
    let notifications = json!([{"jsonrpc":"2.0","method":"notifications/initialized"}]);
    let reply = app.post(Some("elite-read"), &[], &notifications).await;
    assert_eq!(
        (reply.status, reply.text.as_str()),
        (StatusCode::ACCEPTED, "")
    );

    for version in ["2025-06-18", "2025-11-25", "2026-07-28"] {
        let reply = app
            .post(
                Some("elite-read"),
                &[("mcp-protocol-version", version)],
                &batch,
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{version}");
        assert_eq!(
            reply.json,
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: JSON-RPC batches are only supported in protocol version 2025-03-26"}})
        );
    }
    let reply = app.post(Some("elite-read"), &[], &json!([])).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: empty batch"}})
    );
}

#[tokio::test]
async fn modern_header_checks() {
    let app = spawn().await;
    let (_, body) = modern_request("tools/list", json!({}));
    let check = |headers: Vec<(&'static str, &'static str)>, code: i64, message: &'static str| {
        let body = body.clone();
        let app = &app;
        async move {
            let reply = app.post(Some("elite-read"), &headers, &body).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{headers:?}");
            assert_eq!(
                reply.json,
                json!({"jsonrpc":"2.0","id":"m-1","error":{"code":code,"message":message}}),
                "{headers:?}"
            );
        }
    };
    check(
        vec![("mcp-protocol-version", "2026-07-28")],
        -32020,
        "Header mismatch: the Mcp-Method header is missing",
    )
    .await;
    check(
        vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call")],
        -32020,
        "Header mismatch: Mcp-Method header value 'tools/call' does not match body value 'tools/list'",
    )
    .await;
    check(
        vec![("mcp-protocol-version", "2025-11-25"), ("mcp-method", "tools/list")],
        -32020,
        "Header mismatch: MCP-Protocol-Version header value '2025-11-25' does not match body value '2026-07-28'",
    )
    .await;
    check(
        vec![("mcp-method", "tools/list")],
        -32020,
        "Header mismatch: MCP-Protocol-Version header is missing; the body names '2026-07-28'",
    )
    .await;

    // Mcp-Name must match params.name; the base64 sentinel form is decoded first.
    let (_, call) = modern_request(
        "tools/call",
        json!({"name":"GetMcpCapabilities","arguments":{}}),
    );
    let base = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
    ];
    let reply = app
        .post(
            Some("elite-read"),
            &[base[0], base[1], ("mcp-name", "GetAccounts")],
            &call,
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json["error"],
        json!({"code":-32020,"message":"Header mismatch: Mcp-Name header value 'GetAccounts' does not match body value 'GetMcpCapabilities'"})
    );
    let reply = app.post(Some("elite-read"), &base, &call).await;
    assert_eq!(
        reply.json["error"]["message"],
        "Header mismatch: the Mcp-Name header is missing"
    );
    // "GetMcpCapabilities" in base64.
    let encoded = "=?base64?R2V0TWNwQ2FwYWJpbGl0aWVz?=";
    let reply = app
        .post(
            Some("elite-read"),
            &[base[0], base[1], ("mcp-name", encoded)],
            &call,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["result"]["isError"], false);

    // Required `_meta` fields.
    let reply = app
        .post(
            Some("elite-read"),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
            ],
            &json!({"jsonrpc":"2.0","id":9,"method":"tools/list","params":{"_meta":{
                "io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":9,"error":{"code":-32602,"message":"Invalid params: missing required _meta field \"io.modelcontextprotocol/clientCapabilities\""}})
    );
    let reply = app
        .post(
            Some("elite-read"),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
            ],
            &json!({"jsonrpc":"2.0","id":9,"method":"tools/list"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":9,"error":{"code":-32602,"message":"Invalid params: missing required _meta field \"io.modelcontextprotocol/protocolVersion\""}})
    );
}

#[tokio::test]
async fn json_rpc_mistakes_are_json_rpc_errors() {
    let app = spawn().await;
    let reply = app
        .legacy("elite-read", "2025-11-25", "resources/list", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found: resources/list"}})
    );
    let reply = app.modern("elite-read", "resources/list", json!({})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":"m-1","error":{"code":-32601,"message":"Method not found: resources/list"}})
    );
    let reply = app
        .send(
            app.client
                .post(&app.url)
                .bearer_auth("elite-read")
                .body("{not json"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json["id"], Value::Null);
    assert_eq!(reply.json["error"]["code"], -32700);
    let reply = app
        .post(
            Some("elite-read"),
            &[],
            &json!({"jsonrpc":"1.0","id":4,"method":"ping"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":4,"error":{"code":-32600,"message":"Invalid Request: \"jsonrpc\" must be \"2.0\""}})
    );
    let reply = app.call("elite-read", "NoSuchTool", json!({})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Unknown tool: NoSuchTool"}})
    );
    let reply = app
        .legacy(
            "elite-read",
            "2025-11-25",
            "tools/list",
            json!({"cursor":"abc"}),
        )
        .await;
    assert_eq!(reply.json["error"]["code"], -32602);
}
