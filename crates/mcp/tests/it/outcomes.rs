//! DESIGN.md's HTTP outcome table, row by row, with exact status, headers and bodies.

use std::time::Duration;

use mcp::{CallError, CallOutcome};
use reqwest::StatusCode;
use serde_json::json;
use store::users::{Email, Tier};

use crate::support::{Behaviour, RESOURCE_METADATA, spawn};

fn no_token_challenge() -> String {
    format!(r#"Bearer resource_metadata="{RESOURCE_METADATA}", scope="mcp:read mcp:trade""#)
}

fn invalid_token_challenge() -> String {
    format!(r#"Bearer error="invalid_token", resource_metadata="{RESOURCE_METADATA}""#)
}

#[tokio::test]
async fn no_token_is_401_with_the_discovery_challenge_for_every_request() {
    let app = spawn().await;
    let bodies = [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}),
        json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}),
        json!({"jsonrpc":"2.0","id":1,"method":"ping"}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    ];
    for url in [app.url.clone(), format!("{}/", app.url)] {
        for body in &bodies {
            let reply = app
                .send(
                    app.client
                        .post(&url)
                        .header("mcp-protocol-version", "2025-11-25")
                        .body(body.to_string()),
                )
                .await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{url} {body}");
            assert_eq!(
                reply.header("www-authenticate"),
                Some(no_token_challenge().as_str())
            );
            assert_eq!(reply.text, "");
        }
        for request in [app.client.get(&url), app.client.delete(&url)] {
            let reply = app.send(request).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                reply.header("www-authenticate"),
                Some(no_token_challenge().as_str())
            );
            assert_eq!(reply.text, "");
        }
    }
}

#[tokio::test]
async fn refused_tokens_are_401_invalid_token_with_a_message() {
    let app = spawn().await;
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    for (token, message) in [
        ("expired", "The access token has expired"),
        ("revoked", "The access token has been revoked"),
        ("malformed", "The access token is malformed"),
        (
            "audience",
            "The access token was not issued for this resource",
        ),
        ("never-issued", "The access token is not recognized"),
    ] {
        let reply = app.post(Some(token), &[], &ping).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(invalid_token_challenge().as_str())
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            reply.json,
            json!({"error":"invalid_token","message":message})
        );
    }

    // A token in the query string is refused even when the header carries a valid one.
    let reply = app
        .send(
            app.client
                .post(format!("{}?access_token=elite-trade", app.url))
                .bearer_auth("elite-trade")
                .body(ping.to_string()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(invalid_token_challenge().as_str())
    );
    assert_eq!(
        reply.json,
        json!({"error":"invalid_token","message":"Access tokens are not accepted in the query string; send an Authorization: Bearer header"})
    );

    // Another scheme.
    let reply = app
        .send(
            app.client
                .post(&app.url)
                .header("authorization", "Basic ZWxpdGUtdHJhZGU6")
                .body(ping.to_string()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(invalid_token_challenge().as_str())
    );
    assert_eq!(
        reply.json,
        json!({"error":"invalid_token","message":"Only Bearer access tokens are accepted"})
    );

    // A valid token for an account that no longer exists.
    let reply = app.call("ghost", "GetMcpCapabilities", json!({})).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json,
        json!({"error":"invalid_token","message":"The account this access token was issued for no longer exists"})
    );
}

#[tokio::test]
async fn verifier_unavailable_is_503_server_error() {
    let app = spawn().await;
    let reply = app
        .post(
            Some("unavailable"),
            &[],
            &json!({"jsonrpc":"2.0","id":1,"method":"ping"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("www-authenticate"), None);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(
        reply.json,
        json!({"error":"server_error","message":"Access tokens cannot be verified right now; retry shortly"})
    );
}

#[tokio::test]
async fn tools_call_below_elite_is_403_but_discovery_and_listing_work() {
    let app = spawn().await;
    for token in ["pro-trade", "standard-read"] {
        for version in ["2025-03-26", "2025-11-25"] {
            let reply = app
                .legacy(
                    token,
                    version,
                    "tools/call",
                    json!({"name":"GetMcpCapabilities","arguments":{}}),
                )
                .await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{token} {version}");
            assert_eq!(reply.header("www-authenticate"), None);
            assert_eq!(
                reply.json,
                json!({"error":"subscription_required","message":"MCP requires an Elite subscription"})
            );
        }
        let reply = app
            .modern(
                token,
                "tools/call",
                json!({"name":"GetMcpCapabilities","arguments":{}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(
            reply.json,
            json!({"error":"subscription_required","message":"MCP requires an Elite subscription"})
        );

        let reply = app
            .legacy(token, "2025-11-25", "initialize", json!({"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let reply = app
            .legacy(token, "2025-11-25", "tools/list", json!({}))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let reply = app.modern(token, "server/discover", json!({})).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn trade_tool_with_a_read_token_is_403_insufficient_scope() {
    let app = spawn().await;
    app.relay.connect(app.users.elite);
    let challenge = format!(
        r#"Bearer error="insufficient_scope", scope="mcp:read mcp:trade", resource_metadata="{RESOURCE_METADATA}""#
    );
    let arguments = json!({"order_id":"42"});
    let legacy = app
        .call("elite-read", "CancelOrder", arguments.clone())
        .await;
    let modern = app
        .modern(
            "elite-read",
            "tools/call",
            json!({"name":"CancelOrder","arguments":arguments}),
        )
        .await;
    for reply in [legacy, modern] {
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.header("www-authenticate"), Some(challenge.as_str()));
        assert_eq!(
            reply.json,
            json!({"error":"insufficient_scope","required":"mcp:trade"})
        );
    }
    assert_eq!(app.relay.call_count(), 0);
}

#[tokio::test]
async fn a_downgrade_takes_effect_on_the_next_call_without_a_new_token() {
    let app = spawn().await;
    let reply = app
        .call("elite-read", "GetMcpCapabilities", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["result"]["isError"], false);

    store::users::set_tier(
        &app.db,
        &Email::parse("elite@example.com").unwrap(),
        Tier::Pro,
    )
    .await
    .unwrap();
    let reply = app
        .call("elite-read", "GetMcpCapabilities", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json,
        json!({"error":"subscription_required","message":"MCP requires an Elite subscription"})
    );
}

#[tokio::test]
async fn addon_failures_are_408_saying_which_and_relay_outage_is_503() {
    let app = spawn().await;
    let args = json!({"account":"Sim101","instrument":"ES 12-26"});

    // Not connected: answered at once (the test relay never waits in this case).
    let reply = app
        .call("elite-trade", "FlattenPosition", args.clone())
        .await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        reply.json,
        json!({"error":"addon_disconnected","message":"The CrossTrade Add-On is not connected: open NinjaTrader 8 and check that the CrossTrade Add-On panel (v1.13.0 or later) shows connected"})
    );

    // Not connected because the last Add-On was too old: the message names its version.
    app.relay.refuse(app.users.elite, "1.12.4");
    let reply = app
        .call("elite-trade", "FlattenPosition", args.clone())
        .await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        reply.json,
        json!({"error":"addon_disconnected","message":"Add-On 1.12.4 is connected but too old — update to 1.13.0 or later"})
    );

    app.relay.connect(app.users.elite);
    app.relay.behave(Behaviour::Fail(CallError::Disconnected));
    let reply = app
        .call("elite-trade", "FlattenPosition", args.clone())
        .await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        reply.json,
        json!({"error":"addon_disconnected","message":"The CrossTrade Add-On disconnected while the call was in flight; its outcome is unknown, so check NinjaTrader 8 before retrying"})
    );

    app.relay.behave(Behaviour::Slow(Duration::from_millis(20)));
    let reply = app
        .call("elite-trade", "FlattenPosition", args.clone())
        .await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        reply.json,
        json!({"error":"addon_disconnected","message":"The CrossTrade Add-On did not answer within 10 s; check NinjaTrader 8 for the outcome before retrying"})
    );

    app.relay.behave(Behaviour::Fail(CallError::Unavailable));
    let reply = app
        .call("elite-trade", "FlattenPosition", args.clone())
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.json,
        json!({"error":"server_error","message":"The Add-On relay is temporarily unavailable; retry shortly"})
    );

    // The same outcome under 2026-07-28.
    app.relay.behave(Behaviour::Fail(CallError::Disconnected));
    let reply = app
        .modern(
            "elite-trade",
            "tools/call",
            json!({"name":"FlattenPosition","arguments":args}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reply.json["error"], "addon_disconnected");

    app.relay
        .behave(Behaviour::Answer(CallOutcome::Ok(json!("flat"))));
    let reply = app
        .call(
            "elite-trade",
            "FlattenPosition",
            json!({"account":"Sim101","instrument":"ES 12-26"}),
        )
        .await;
    assert_eq!(
        reply.json,
        json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"flat"}],"isError":false}})
    );
}

#[tokio::test]
async fn database_down_is_503_server_error() {
    let app = spawn().await;
    app.db.close().await;
    let reply = app
        .call("elite-read", "GetMcpCapabilities", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(
        reply.json,
        json!({"error":"server_error","message":"The service is temporarily unavailable; retry shortly"})
    );
    // Listing needs no database and keeps working.
    let reply = app
        .legacy("elite-read", "2025-11-25", "tools/list", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}
