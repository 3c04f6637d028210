//! One account cannot occupy the replica: its in-flight calls are capped (beyond: refused at
//! once, nothing sent) while other accounts are served; upgraded sockets have their own cap.

use std::time::Duration;

use addon_bridge::{BridgeSettings, CallError, CallOutcome, CallRequest};
use serde_json::json;
use tokio_tungstenite::tungstenite;

use crate::support::{Addon, open, serve, settings, user_with_key};

fn request(user_id: uuid::Uuid) -> CallRequest {
    CallRequest {
        user_id,
        tool: "GetAccounts".to_owned(),
        arguments: json!({}),
        deadline: Duration::from_secs(10),
        idempotency_key: None,
    }
}

#[tokio::test]
async fn an_account_at_its_call_cap_is_refused_at_once_and_other_accounts_are_served() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(
        &db,
        BridgeSettings {
            max_calls_per_account: 2,
            ..settings()
        },
    )
    .await;
    let (busy, _, busy_key) = user_with_key(&db).await;
    let (calm, _, calm_key) = user_with_key(&db).await;
    let mut busy_addon = Addon::connect(&server.url, &busy_key).await;
    let mut calm_addon = Addon::connect(&server.url, &calm_key).await;

    // Two calls held by the busy account's Add-On.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let bridge = server.bridge.clone();
            tokio::spawn(async move { bridge.call(request(busy)).await })
        })
        .collect();
    let first = busy_addon.next_call().await;
    let second = busy_addon.next_call().await;

    let refused = tokio::time::timeout(Duration::from_secs(2), server.bridge.call(request(busy)))
        .await
        .expect("a refused call answers at once");
    assert_eq!(refused, Err(CallError::TooManyCalls));

    // Another account is not affected.
    let bridge = server.bridge.clone();
    let other = tokio::spawn(async move { bridge.call(request(calm)).await });
    let frame = calm_addon.next_call().await;
    calm_addon.answer(&frame, json!({"accounts": []})).await;
    assert_eq!(
        other.await.unwrap(),
        Ok(CallOutcome::Ok(json!({"accounts": []})))
    );

    // An answer frees a slot.
    busy_addon.answer(&first, json!({"n": 1})).await;
    busy_addon.answer(&second, json!({"n": 2})).await;
    for call in held {
        assert!(call.await.unwrap().is_ok());
    }
    let bridge = server.bridge.clone();
    let again = tokio::spawn(async move { bridge.call(request(busy)).await });
    let frame = busy_addon.next_call().await;
    busy_addon.answer(&frame, json!({"n": 3})).await;
    assert_eq!(again.await.unwrap(), Ok(CallOutcome::Ok(json!({"n": 3}))));
}

#[tokio::test]
async fn upgrades_beyond_the_socket_cap_answer_503_with_retry_after() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(
        &db,
        BridgeSettings {
            max_sockets: 2,
            ..settings()
        },
    )
    .await;
    let (_, _, one) = user_with_key(&db).await;
    let (_, _, two) = user_with_key(&db).await;
    let (_, _, three) = user_with_key(&db).await;
    let _one = Addon::connect(&server.url, &one).await;
    // Still before its hello: it holds a slot all the same.
    let two_silent = Addon::connect_silent(&server.url, &two).await;

    let refused = open(&server.url, Some(&format!("Bearer {three}")))
        .await
        .expect_err("a third socket was upgraded");
    let tungstenite::Error::Http(response) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value =
        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body["error"], "server_error");

    // A socket that ends gives its slot back.
    two_silent.drop_connection().await;
    let welcomed = testkit::wait::eventually(Duration::from_secs(10), async || {
        open(&server.url, Some(&format!("Bearer {three}")))
            .await
            .is_ok()
    })
    .await;
    assert!(welcomed, "the freed slot was never given back");
}
