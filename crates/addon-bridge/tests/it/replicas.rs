//! Two bridges on one database: the Add-On on A, calls on B.

use std::time::{Duration, Instant};

use addon_bridge::{CallError, CallOutcome, CallRequest, Presence};
use serde_json::json;

use crate::support::{Addon, changed, serve, settings, user, user_with_key};

fn request(user_id: uuid::Uuid, tool: &str, arguments: serde_json::Value) -> CallRequest {
    CallRequest {
        user_id,
        tool: tool.to_owned(),
        arguments,
        deadline: Duration::from_secs(20),
        idempotency_key: None,
    }
}

#[tokio::test]
async fn a_call_on_b_reaches_the_addon_on_a_with_payloads_over_8000_bytes() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let a = serve(&db, settings()).await;
    let b = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut changes_b = b.bridge.presence_changes();
    let mut addon = Addon::connect(&a.url, &key).await;
    changed(&mut changes_b, user_id).await;
    assert_eq!(
        b.bridge.presence(user_id).await.addon_version.as_deref(),
        Some("1.13.0")
    );

    let source = "// strategy\n".repeat(2000);
    let bridge = b.bridge.clone();
    let arguments = json!({"path": "Strategies/Big.cs", "content": source});
    let call = tokio::spawn(async move {
        bridge
            .call(request(user_id, "WriteNinjaScriptFile", arguments))
            .await
    });
    let frame = addon.next_call().await;
    assert_eq!(
        frame["arguments"]["content"].as_str().unwrap().len(),
        source.len()
    );
    let big = "x".repeat(20_000);
    addon.answer(&frame, json!({"content": big})).await;
    assert_eq!(
        call.await.unwrap(),
        Ok(CallOutcome::Ok(json!({"content": big})))
    );
    let activity = addon_bridge::data::activity(&db, user_id, 1).await.unwrap();
    assert_eq!(
        (activity[0].outcome.as_str(), activity[0].instance_id),
        ("ok", b.bridge.instance_id())
    );
}

#[tokio::test]
async fn concurrent_calls_across_replicas_get_their_own_replies() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let a = serve(&db, settings()).await;
    let b = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&a.url, &key).await;
    let mut calls = Vec::new();
    for n in 0..16 {
        let bridge = if n % 2 == 0 {
            a.bridge.clone()
        } else {
            b.bridge.clone()
        };
        calls.push(tokio::spawn(async move {
            (
                n,
                bridge
                    .call(request(user_id, "GetOrders", json!({"n": n})))
                    .await,
            )
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
}

#[tokio::test]
async fn deadline_and_drop_hold_across_replicas() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let a = serve(&db, settings()).await;
    let b = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&a.url, &key).await;

    let bridge = b.bridge.clone();
    let started = Instant::now();
    let call = tokio::spawn(async move {
        bridge
            .call(CallRequest {
                deadline: Duration::from_millis(500),
                ..request(user_id, "GetOrders", json!({}))
            })
            .await
    });
    addon.next_call().await;
    assert_eq!(call.await.unwrap(), Err(CallError::DeadlineExceeded));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );

    let bridge = b.bridge.clone();
    let call =
        tokio::spawn(async move { bridge.call(request(user_id, "GetOrders", json!({}))).await });
    addon.next_call().await;
    let started = Instant::now();
    addon.drop_connection().await;
    assert_eq!(call.await.unwrap(), Err(CallError::Disconnected));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The notification of the drop (not a late one of the connect) reached replica B.
    let b_bridge = b.bridge.clone();
    testkit::wait::wait_until(
        "replica B to see the Add-On gone",
        Duration::from_secs(10),
        async || !b_bridge.presence(user_id).await.connected,
    )
    .await;
    assert_eq!(
        b.bridge
            .call(request(user_id, "GetOrders", json!({})))
            .await,
        Err(CallError::NotConnected)
    );
}

#[tokio::test]
async fn a_shut_down_fails_calls_on_b_promptly_and_cleans_presence() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let a = serve(&db, settings()).await;
    let b = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&a.url, &key).await;
    let mut changes_b = b.bridge.presence_changes();
    let bridge = b.bridge.clone();
    let call =
        tokio::spawn(async move { bridge.call(request(user_id, "GetOrders", json!({}))).await });
    addon.next_call().await;
    let started = Instant::now();
    a.bridge.shutdown().await;
    assert_eq!(call.await.unwrap(), Err(CallError::Disconnected));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        addon.closed().await,
        (1001, "server shutting down".to_owned())
    );
    changed(&mut changes_b, user_id).await;
    assert_eq!(b.bridge.presence(user_id).await, Presence::default());
    let instances: i64 =
        sqlx::query_scalar("SELECT count(*) FROM addon_instances WHERE instance_id = $1")
            .bind(a.bridge.instance_id())
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(instances, 0);
}

#[tokio::test]
async fn a_dead_replica_is_swept_its_presence_removed_and_its_calls_failed() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let mut s = settings();
    s.heartbeat_interval = Duration::from_millis(200);
    let b = serve(&db, s).await;
    let user_id = user(&db).await;
    let (key_id, _) = addon_bridge::keys::create(&db, user_id).await.unwrap();
    let dead = uuid::Uuid::new_v4();
    let call_id = uuid::Uuid::new_v4();
    let mut changes = b.bridge.presence_changes();
    // A replica that stopped beating an hour ago, with a socket and a call routed to it.
    sqlx::query("INSERT INTO addon_instances (instance_id, heartbeat_at) VALUES ($1, now() - interval '1 hour')")
        .bind(dead)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO addon_presence (user_id, instance_id, connection_id, key_id, addon_version, nt8_version) \
         VALUES ($1, $2, gen_random_uuid(), $3, '1.13.0', '8.1')",
    )
    .bind(user_id)
    .bind(dead)
    .bind(key_id)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO addon_calls (call_id, user_id, origin_instance, target_instance, connection_id, tool, arguments, deadline_at) \
         VALUES ($1, $2, $3, $4, gen_random_uuid(), 'GetOrders', '{}', now() + interval '1 minute')",
    )
    .bind(call_id)
    .bind(user_id)
    .bind(b.bridge.instance_id())
    .bind(dead)
    .execute(&db)
    .await
    .unwrap();
    // A stale presence never counts as connected.
    assert!(!b.bridge.presence(user_id).await.connected);
    // Once for the insert above, once for the sweep.
    changed(&mut changes, user_id).await;
    changed(&mut changes, user_id).await;
    let presence: i64 =
        sqlx::query_scalar("SELECT count(*) FROM addon_presence WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(presence, 0);
    let outcome: serde_json::Value =
        sqlx::query_scalar("SELECT outcome FROM addon_calls WHERE call_id = $1")
            .bind(call_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(outcome, json!({"failed": "disconnected"}));
}
