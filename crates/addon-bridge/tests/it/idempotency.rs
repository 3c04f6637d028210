//! Trade idempotency: one Add-On call per (user, key), even after a timeout or concurrently.

use std::time::Duration;

use addon_bridge::{CallError, CallOutcome, CallRequest};
use serde_json::json;

use crate::support::{Addon, PATIENCE, hold_pool, serve, settings, small_pool, user_with_key};

fn place(user_id: uuid::Uuid, key: &str, deadline: Duration) -> CallRequest {
    CallRequest {
        user_id,
        tool: "PlaceOrder".to_owned(),
        arguments: json!({"account": "Sim101", "instrument": "ES 12-26", "action": "Buy", "order_type": "Market", "quantity": 1}),
        deadline,
        idempotency_key: Some(key.to_owned()),
    }
}

/// A read call whose frame proves nothing was queued before it on the socket.
async fn probe(bridge: &addon_bridge::AddonBridge, addon: &mut Addon, user_id: uuid::Uuid) {
    let bridge = bridge.clone();
    let call = tokio::spawn(async move {
        bridge
            .call(CallRequest {
                user_id,
                tool: "GetAccounts".to_owned(),
                arguments: json!({}),
                deadline: Duration::from_secs(10),
                idempotency_key: None,
            })
            .await
    });
    let frame = addon.next_call().await;
    assert_eq!(
        frame["tool"], "GetAccounts",
        "an unexpected call reached the Add-On: {frame}"
    );
    addon.answer(&frame, json!({})).await;
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_same_key_twice_reaches_the_addon_once() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let bridge = server.bridge.clone();
    let first = tokio::spawn(async move {
        bridge
            .call(place(user_id, "order-0001", Duration::from_secs(10)))
            .await
    });
    let frame = addon.next_call().await;
    addon
        .answer(&frame, json!({"order_id": "A1", "state": "Filled"}))
        .await;
    let expected = Ok(CallOutcome::Ok(
        json!({"order_id": "A1", "state": "Filled"}),
    ));
    assert_eq!(first.await.unwrap(), expected);
    assert_eq!(
        server
            .bridge
            .call(place(user_id, "order-0001", Duration::from_secs(10)))
            .await,
        expected
    );
    probe(&server.bridge, &mut addon, user_id).await;
    // A different key is a different action.
    let bridge = server.bridge.clone();
    let other = tokio::spawn(async move {
        bridge
            .call(place(user_id, "order-0002", Duration::from_secs(10)))
            .await
    });
    let frame = addon.next_call().await;
    assert_eq!(frame["tool"], "PlaceOrder");
    addon.answer(&frame, json!({"order_id": "A2"})).await;
    assert_eq!(
        other.await.unwrap(),
        Ok(CallOutcome::Ok(json!({"order_id": "A2"})))
    );
    let activity = addon_bridge::data::activity(&db, user_id, 10)
        .await
        .unwrap();
    let replays: Vec<_> = activity.iter().map(|a| a.replayed).collect();
    assert_eq!(replays, [false, false, true, false]);
}

#[tokio::test]
async fn a_retry_after_a_timeout_does_not_place_twice() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let bridge = server.bridge.clone();
    let first = tokio::spawn(async move {
        bridge
            .call(place(user_id, "order-timeout", Duration::from_millis(300)))
            .await
    });
    let frame = addon.next_call().await;
    assert_eq!(first.await.unwrap(), Err(CallError::DeadlineExceeded));
    // The Add-On answers late; the retry still gets the first call's 408, not a second order.
    addon.answer(&frame, json!({"order_id": "late"})).await;
    assert_eq!(
        server
            .bridge
            .call(place(user_id, "order-timeout", Duration::from_secs(10)))
            .await,
        Err(CallError::DeadlineExceeded)
    );
    let frame = addon.next_json().await;
    assert_eq!(frame["code"], "unknown_call");
    probe(&server.bridge, &mut addon, user_id).await;
}

#[tokio::test]
async fn a_repeat_while_the_first_is_pending_waits_for_its_outcome() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let bridge = server.bridge.clone();
    let first = tokio::spawn(async move {
        bridge
            .call(place(user_id, "order-pending", Duration::from_secs(10)))
            .await
    });
    let frame = addon.next_call().await;
    let bridge = server.bridge.clone();
    let second = tokio::spawn(async move {
        bridge
            .call(place(user_id, "order-pending", Duration::from_secs(10)))
            .await
    });
    // The repeat is waiting: it has a row to wait on and sent nothing.
    tokio::task::yield_now().await;
    addon.answer(&frame, json!({"order_id": "P1"})).await;
    let expected = Ok(CallOutcome::Ok(json!({"order_id": "P1"})));
    assert_eq!(first.await.unwrap(), expected);
    assert_eq!(second.await.unwrap(), expected);
    probe(&server.bridge, &mut addon, user_id).await;
}

#[tokio::test]
async fn not_connected_gives_the_key_back() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    assert_eq!(
        server
            .bridge
            .call(place(user_id, "order-offline", Duration::from_secs(10)))
            .await,
        Err(CallError::NotConnected)
    );
    let mut addon = Addon::connect(&server.url, &key).await;
    let bridge = server.bridge.clone();
    let retry = tokio::spawn(async move {
        bridge
            .call(place(user_id, "order-offline", Duration::from_secs(10)))
            .await
    });
    let frame = addon.next_call().await;
    addon.answer(&frame, json!({"order_id": "O1"})).await;
    assert_eq!(
        retry.await.unwrap(),
        Ok(CallOutcome::Ok(json!({"order_id": "O1"})))
    );
}

#[tokio::test]
async fn a_key_reused_for_another_tool_is_a_tool_error() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let bridge = server.bridge.clone();
    let first = tokio::spawn(async move {
        bridge
            .call(place(user_id, "shared-key", Duration::from_secs(10)))
            .await
    });
    let frame = addon.next_call().await;
    addon.answer(&frame, json!({"order_id": "S1"})).await;
    first.await.unwrap().unwrap();
    let mut cancel = place(user_id, "shared-key", Duration::from_secs(10));
    cancel.tool = "CancelOrder".to_owned();
    assert_eq!(
        server.bridge.call(cancel).await,
        Ok(CallOutcome::ToolError(
            "idempotency_key was already used for PlaceOrder within the last 24 hours; use a new key for a new action".to_owned()
        ))
    );
    probe(&server.bridge, &mut addon, user_id).await;
}

#[tokio::test]
async fn an_outcome_write_lost_to_an_outage_reaches_the_repeat_once_the_database_answers() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let bridge_pool = small_pool(&test_db.url()).await;
    let server = serve(&bridge_pool, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let bridge = server.bridge.clone();
    let first = tokio::spawn(async move {
        bridge
            .call(place(user_id, "order-outage", Duration::from_secs(10)))
            .await
    });
    let frame = addon.next_call().await;
    // The key is claimed and the order is at the Add-On; then the database goes away.
    let (release, holder) = hold_pool(&bridge_pool);
    tokio::time::sleep(Duration::from_millis(700)).await;
    addon
        .answer(&frame, json!({"order_id": "O1", "state": "Filled"}))
        .await;
    let expected = Ok(CallOutcome::Ok(
        json!({"order_id": "O1", "state": "Filled"}),
    ));
    assert_eq!(first.await.unwrap(), expected);
    let stored = async || -> bool {
        sqlx::query_scalar(
            "SELECT outcome IS NOT NULL FROM addon_idempotency WHERE user_id = $1 AND idem_key = $2",
        )
        .bind(user_id)
        .bind("order-outage")
        .fetch_one(&db)
        .await
        .unwrap()
    };
    assert!(
        !stored().await,
        "the outcome write should have failed while the pool was held"
    );
    release.send_replace(true);
    assert!(holder.await.unwrap() >= 1);

    let landed = testkit::wait::eventually(PATIENCE, async || stored().await).await;
    assert!(landed, "the outcome was never stored");
    // The repeat gets the order's outcome, and nothing reaches the Add-On again.
    assert_eq!(
        server
            .bridge
            .call(place(user_id, "order-outage", Duration::from_secs(10)))
            .await,
        expected
    );
    probe(&server.bridge, &mut addon, user_id).await;
}
