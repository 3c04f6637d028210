//! Two replicas linked directly: calls to the Add-On on A made on B travel over B's link to A,
//! not through `addon_calls`; a link that breaks with a call on it ends that call once and
//! never sends it again; a link that cannot be proven falls back to the database.

use std::time::Duration;

use addon_bridge::{CallError, CallOutcome, CallRequest};
use serde_json::json;
use sqlx::PgPool;

use crate::support::{Addon, changed, serve_linked, settings, user_with_key};

const SECRET: &[u8] = b"the replicas' shared master secret, 32+";

fn request(user_id: uuid::Uuid, n: u32) -> CallRequest {
    CallRequest {
        user_id,
        tool: "GetOrders".to_owned(),
        arguments: json!({"n": n}),
        deadline: Duration::from_secs(20),
        idempotency_key: None,
    }
}

async fn routed_rows(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM addon_calls")
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn calls_between_linked_replicas_travel_over_the_link() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let a = serve_linked(&db, settings(), SECRET).await;
    let b = serve_linked(&db, settings(), SECRET).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut changes_b = b.bridge.presence_changes();
    let mut addon = Addon::connect(&a.url, &key).await;
    changed(&mut changes_b, user_id).await;

    let mut calls = Vec::new();
    for n in 0..16 {
        let bridge = b.bridge.clone();
        calls.push(tokio::spawn(async move {
            (n, bridge.call(request(user_id, n)).await)
        }));
    }
    let mut frames = Vec::new();
    for _ in 0..16 {
        frames.push(addon.next_call().await);
    }
    for frame in frames.iter().rev() {
        addon
            .answer(frame, json!({"echo": frame["arguments"]["n"]}))
            .await;
    }
    for call in calls {
        let (n, result) = call.await.unwrap();
        assert_eq!(result, Ok(CallOutcome::Ok(json!({"echo": n}))));
    }
    assert_eq!(
        routed_rows(&db).await,
        0,
        "no call went through the database"
    );
    let activity = addon_bridge::data::activity(&db, user_id, 1).await.unwrap();
    assert_eq!(activity[0].instance_id, b.bridge.instance_id());
}

#[tokio::test]
async fn a_link_that_breaks_with_a_call_on_it_ends_the_call_once() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let a = serve_linked(&db, settings(), SECRET).await;
    let b = serve_linked(&db, settings(), SECRET).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut changes_b = b.bridge.presence_changes();
    let mut addon = Addon::connect(&a.url, &key).await;
    changed(&mut changes_b, user_id).await;

    let bridge = b.bridge.clone();
    let call = tokio::spawn(async move { bridge.call(request(user_id, 1)).await });
    // The call reached the Add-On; replica A dies before answering.
    let frame = addon.next_call().await;
    assert_eq!(frame["arguments"]["n"], 1);
    a.bridge.shutdown().await;
    let result = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call ends when the link breaks, not at its deadline")
        .unwrap();
    assert_eq!(result, Err(CallError::Disconnected));
    assert_eq!(
        routed_rows(&db).await,
        0,
        "it was not sent again through the database"
    );
}

#[tokio::test]
async fn a_replica_without_the_secret_cannot_link_and_its_calls_take_the_database() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let a = serve_linked(&db, settings(), SECRET).await;
    let b = serve_linked(&db, settings(), b"another deployment's master secret!!").await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut changes_b = b.bridge.presence_changes();
    let mut addon = Addon::connect(&a.url, &key).await;
    changed(&mut changes_b, user_id).await;

    let bridge = b.bridge.clone();
    let call = tokio::spawn(async move { bridge.call(request(user_id, 7)).await });
    let frame = addon.next_call().await;
    addon.answer(&frame, json!({"echo": 7})).await;
    assert_eq!(call.await.unwrap(), Ok(CallOutcome::Ok(json!({"echo": 7}))));
    assert_eq!(routed_rows(&db).await, 1, "routed through the database");
}
