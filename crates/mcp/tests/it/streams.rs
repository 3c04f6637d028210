//! The legacy GET stream, CORS and Origin, DELETE, and the trailing-slash path.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{BROWSER_ORIGIN, spawn, spawn_listening};

const LIST_CHANGED: &str = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;

/// Reads the SSE body until one `data:` line arrives, returning it.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String) -> String {
    loop {
        if let Some(start) = buffer.find("data: ") {
            let from = start + 6;
            if let Some(end) = buffer[from..].find('\n') {
                let data = buffer[from..from + end].trim_end_matches('\r').to_owned();
                buffer.drain(..from + end);
                return data;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("no event within 10 s")
            .unwrap()
            .expect("stream ended");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn get_stream_carries_list_changed_when_the_addon_comes_and_goes() {
    let app = spawn_listening().await;
    let mut response = app
        .client
        .get(&app.url)
        .bearer_auth("elite-read")
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert!(response.headers().get("mcp-session-id").is_none());
    let mut buffer = String::new();

    // The stream subscribed before the headers were sent, so no change can be missed.
    app.relay.connect(app.users.elite);
    assert_eq!(next_event(&mut response, &mut buffer).await, LIST_CHANGED);
    assert!(buffer.is_empty() || buffer.starts_with('\n'), "{buffer:?}");
    let reply = app
        .legacy("elite-read", "2025-11-25", "tools/list", json!({}))
        .await;
    assert_eq!(reply.json["result"]["tools"].as_array().unwrap().len(), 18);

    app.relay.disconnect(app.users.elite);
    assert_eq!(next_event(&mut response, &mut buffer).await, LIST_CHANGED);
    let reply = app
        .legacy("elite-read", "2025-11-25", "tools/list", json!({}))
        .await;
    // Capabilities, the tools served from stored Add-On history and the job readers stay.
    assert_eq!(reply.json["result"]["tools"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn get_under_2026_07_28_and_delete_are_405() {
    let app = spawn().await;
    let reply = app
        .send(app.client.delete(&app.url).bearer_auth("elite-read"))
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, POST, OPTIONS"));
    assert_eq!(
        reply.json,
        json!({"error":"method_not_allowed","message":"This server is stateless: there is no session to delete"})
    );
    let reply = app
        .send(
            app.client
                .get(&app.url)
                .bearer_auth("elite-read")
                .header("mcp-protocol-version", "2026-07-28"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn preflight_is_answered_without_auth_and_only_allowed_origins_get_cors() {
    let app = spawn().await;
    for url in [app.url.clone(), format!("{}/", app.url)] {
        let reply = app
            .send(
                app.client
                    .request(reqwest::Method::OPTIONS, &url)
                    .header("origin", BROWSER_ORIGIN)
                    .header("access-control-request-method", "POST")
                    .header(
                        "access-control-request-headers",
                        "authorization, content-type, mcp-param-region",
                    ),
            )
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some(BROWSER_ORIGIN)
        );
        assert_eq!(
            reply.header("access-control-allow-methods"),
            Some("GET, POST, DELETE, OPTIONS")
        );
        assert_eq!(
            reply.header("access-control-allow-headers"),
            Some(
                "Authorization, Content-Type, Accept, MCP-Protocol-Version, Mcp-Session-Id, Last-Event-ID, Mcp-Method, Mcp-Name, mcp-param-region"
            )
        );
        assert_eq!(
            reply.header("access-control-expose-headers"),
            Some("WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version")
        );
        assert_eq!(reply.header("access-control-allow-credentials"), None);
        assert_eq!(reply.header("vary"), Some("Origin"));
        assert_eq!(reply.text, "");
    }
    // The public origin is always allowed.
    let reply = app
        .send(
            app.client
                .request(reqwest::Method::OPTIONS, &app.url)
                .header("origin", "https://app.crosstrade.example"),
        )
        .await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.crosstrade.example")
    );
    let reply = app
        .send(
            app.client
                .request(reqwest::Method::OPTIONS, &app.url)
                .header("origin", "https://evil.example")
                .header("access-control-request-method", "POST"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(reply.header("access-control-allow-headers"), None);
}

#[tokio::test]
async fn origin_is_checked_and_cors_exposes_the_challenge() {
    let app = spawn().await;
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    let reply = app
        .post(
            Some("elite-read"),
            &[("origin", "https://evil.example")],
            &ping,
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json,
        json!({
            "error": "forbidden_origin",
            "message": "Requests from this Origin are not allowed; the server's \
                        `allowed_origins` setting admits an origin (the public URL's origin \
                        always is)"
        })
    );
    // Loopback origins not listed are development's (`crosstrade dev`), not production's.
    let reply = app
        .post(
            Some("elite-read"),
            &[("origin", "http://localhost:5173")],
            &ping,
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    let reply = app
        .post(None, &[("origin", "https://evil.example")], &ping)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    let reply = app.post(None, &[("origin", BROWSER_ORIGIN)], &ping).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some(BROWSER_ORIGIN)
    );
    assert_eq!(
        reply.header("access-control-expose-headers"),
        Some("WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version")
    );
    let reply = app
        .post(Some("elite-read"), &[("origin", BROWSER_ORIGIN)], &ping)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some(BROWSER_ORIGIN)
    );
    // No Origin (non-browser clients): no CORS headers, served.
    let reply = app.post(Some("elite-read"), &[], &ping).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn trailing_slash_is_served_directly_and_accept_is_lenient() {
    let app = spawn().await;
    let body = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    for accept in [
        None,
        Some("application/json"),
        Some("text/event-stream"),
        Some("*/*"),
    ] {
        let mut request = app
            .client
            .post(format!("{}/v1/api/mcp/", app.base))
            .bearer_auth("elite-read")
            .body(body.to_string());
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let reply = app.send(request).await;
        assert_eq!(reply.status, StatusCode::OK, "{accept:?}");
        assert_eq!(reply.header("location"), None);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.json, json!({"jsonrpc":"2.0","id":1,"result":{}}));
    }
}
