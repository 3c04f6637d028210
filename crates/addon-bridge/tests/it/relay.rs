//! The 408 rows: not connected, dropped mid-call, deadline; late answers; concurrent calls.

use std::time::{Duration, Instant};

use addon_bridge::{CallError, CallOutcome, CallRequest};
use serde_json::json;

use crate::support::{Addon, serve, settings, user_with_key};

fn request(user_id: uuid::Uuid, tool: &str, deadline: Duration) -> CallRequest {
    CallRequest {
        user_id,
        tool: tool.to_owned(),
        arguments: json!({"account": "Sim101"}),
        deadline,
        idempotency_key: None,
    }
}

#[tokio::test]
async fn not_connected_fails_at_once() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, _) = user_with_key(&db).await;
    let started = Instant::now();
    let result = server
        .bridge
        .call(request(user_id, "GetPositions", Duration::from_secs(30)))
        .await;
    assert_eq!(result, Err(CallError::NotConnected));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let activity = addon_bridge::data::activity(&db, user_id, 10)
        .await
        .unwrap();
    assert_eq!(activity.len(), 1);
    assert_eq!(
        (activity[0].tool.as_str(), activity[0].outcome.as_str()),
        ("GetPositions", "not_connected")
    );
}

#[tokio::test]
async fn every_call_in_flight_fails_at_once_when_the_socket_drops() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let mut calls = Vec::new();
    for tool in ["GetPositions", "GetOrders", "PlaceOrder"] {
        let bridge = server.bridge.clone();
        calls.push(tokio::spawn(async move {
            bridge
                .call(request(user_id, tool, Duration::from_secs(30)))
                .await
        }));
    }
    for _ in 0..3 {
        addon.next_call().await;
    }
    let started = Instant::now();
    addon.drop_connection().await;
    for call in calls {
        assert_eq!(call.await.unwrap(), Err(CallError::Disconnected));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn no_answer_by_the_deadline_fails_at_the_deadline_and_a_late_answer_is_dropped() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let bridge = server.bridge.clone();
    let started = Instant::now();
    let call = tokio::spawn(async move {
        bridge
            .call(request(
                user_id,
                "GetMarketData",
                Duration::from_millis(400),
            ))
            .await
    });
    let first = addon.next_call().await;
    assert_eq!(first["tool"], "GetMarketData");
    assert_eq!(first["arguments"], json!({"account": "Sim101"}));
    let deadline_ms = first["deadline_ms"].as_u64().unwrap();
    assert!((300..=400).contains(&deadline_ms), "{deadline_ms}");
    assert_eq!(call.await.unwrap(), Err(CallError::DeadlineExceeded));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );

    // The next call gets its own answer, never the late one.
    let bridge = server.bridge.clone();
    let call = tokio::spawn(async move {
        bridge
            .call(request(user_id, "GetMarketData", Duration::from_secs(10)))
            .await
    });
    let second = addon.next_call().await;
    assert_ne!(second["id"], first["id"]);
    addon.answer(&first, json!({"late": true})).await;
    addon
        .answer(&second, json!({"quote": {"last": 5000.25}}))
        .await;
    assert_eq!(
        call.await.unwrap(),
        Ok(CallOutcome::Ok(json!({"quote": {"last": 5000.25}})))
    );
    // The late answer was refused as unknown_call, not delivered.
    let frame = addon.next_json().await;
    assert_eq!(
        (frame["type"].as_str(), frame["code"].as_str(), &frame["id"]),
        (Some("error"), Some("unknown_call"), &first["id"])
    );
}

#[tokio::test]
async fn tool_errors_come_back_as_tool_errors() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let bridge = server.bridge.clone();
    let call = tokio::spawn(async move {
        bridge
            .call(request(
                user_id,
                "CompileNinjaScript",
                Duration::from_secs(10),
            ))
            .await
    });
    let frame = addon.next_call().await;
    addon
        .send(&json!({"type": "result", "id": frame["id"], "ok": false, "error": "CS1002: ; expected"}).to_string())
        .await;
    assert_eq!(
        call.await.unwrap(),
        Ok(CallOutcome::ToolError("CS1002: ; expected".to_owned()))
    );
}

#[tokio::test]
async fn concurrent_calls_never_get_each_others_replies() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    // More calls at once than the default per-account cap (tested in fairness.rs).
    let server = serve(
        &db,
        addon_bridge::BridgeSettings {
            max_calls_per_account: 32,
            ..settings()
        },
    )
    .await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let mut calls = Vec::new();
    for n in 0..20 {
        let bridge = server.bridge.clone();
        calls.push(tokio::spawn(async move {
            let mut call = request(user_id, "GetOrders", Duration::from_secs(20));
            call.arguments = json!({"n": n});
            (n, bridge.call(call).await)
        }));
    }
    let mut frames = Vec::new();
    for _ in 0..20 {
        frames.push(addon.next_call().await);
    }
    // Answer in reverse order, each with its own argument echoed.
    for frame in frames.iter().rev() {
        addon
            .answer(frame, json!({"echo": frame["arguments"]["n"]}))
            .await;
    }
    for call in calls {
        let (n, result) = call.await.unwrap();
        assert_eq!(result, Ok(CallOutcome::Ok(json!({"echo": n}))));
    }
}
