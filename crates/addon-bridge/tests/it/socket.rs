//! The socket's lifecycle: hello and welcome, version gate, replacement, heartbeat loss, key
//! revocation, malformed and oversized frames.

use std::time::Duration;

use addon_bridge::protocol::close;
use addon_bridge::{AddonState, CallOutcome, CallRequest, Presence, keys};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use testkit::wait::wait_until;

use crate::support::{
    Addon, PATIENCE, changed, hold_pool, serve, settings, small_pool, user_with_key,
};

fn request(user_id: uuid::Uuid, tool: &str) -> CallRequest {
    CallRequest {
        user_id,
        tool: tool.to_owned(),
        arguments: json!({}),
        deadline: Duration::from_secs(10),
        idempotency_key: None,
    }
}

#[tokio::test]
async fn hello_gets_welcome_and_presence() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut changes = server.bridge.presence_changes();
    assert_eq!(server.bridge.presence(user_id).await, Presence::default());
    let addon = Addon::connect(&server.url, &key).await;
    assert_eq!(addon.welcome["v"], 1);
    assert_eq!(addon.welcome["heartbeat_interval_ms"], 5000);
    assert_eq!(addon.welcome["max_frame_bytes"], 65536);
    changed(&mut changes, user_id).await;
    let expected = Presence {
        connected: true,
        addon_version: Some("1.13.0".to_owned()),
        nt8_version: Some("8.1.4.1".to_owned()),
        features: vec!["orders".to_owned(), "backtest".to_owned()],
        too_old: None,
    };
    assert_eq!(server.bridge.presence(user_id).await, expected);
    let (instance, version): (uuid::Uuid, String) =
        sqlx::query_as("SELECT instance_id, addon_version FROM addon_presence WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        (instance, version.as_str()),
        (server.bridge.instance_id(), "1.13.0")
    );
    addon.drop_connection().await;
    changed(&mut changes, user_id).await;
    assert_eq!(server.bridge.presence(user_id).await, Presence::default());
}

#[tokio::test]
async fn versions_below_1_13_are_refused_with_4001_and_an_update_reason() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    for version in ["1.12.9", "0.9", "garbage"] {
        let mut addon = Addon::connect_hello(&server.url, &key, version).await;
        let (code, reason) = addon.closed().await;
        assert_eq!(code, close::VERSION_UNSUPPORTED);
        assert_eq!(
            reason,
            format!(
                "CrossTrade Add-On {version} is not supported: update it to v1.13.0 or newer and reconnect"
            )
        );
    }
    assert!(!server.bridge.presence(user_id).await.connected);
    let mut addon = Addon::connect_hello(&server.url, &key, "1.13.1").await;
    assert_eq!(addon.next_json().await["type"], "welcome");
}

#[tokio::test]
async fn a_first_frame_that_is_not_hello_closes_with_4000() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (_, _, key) = user_with_key(&db).await;
    let ws = crate::support::open(&server.url, Some(&format!("Bearer {key}")))
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    sink.send(tokio_tungstenite::tungstenite::Message::text(
        "{\"type\":\"pong\"}",
    ))
    .await
    .unwrap();
    let frame = stream.next().await.unwrap().unwrap();
    let tokio_tungstenite::tungstenite::Message::Close(Some(close_frame)) = frame else {
        panic!("{frame:?}")
    };
    assert_eq!(u16::from(close_frame.code), close::PROTOCOL_ERROR);
    assert_eq!(
        close_frame.reason.as_str(),
        "expected hello: first frame must be a hello"
    );
}

#[tokio::test]
async fn a_new_connection_replaces_the_old_one_with_4002() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut old = Addon::connect(&server.url, &key).await;
    let mut new = Addon::connect_hello(&server.url, &key, "1.14.2").await;
    assert_eq!(new.next_json().await["type"], "welcome");
    assert_eq!(
        old.closed().await,
        (
            close::REPLACED,
            "replaced by a newer connection of this account".to_owned()
        )
    );
    assert_eq!(
        server
            .bridge
            .presence(user_id)
            .await
            .addon_version
            .as_deref(),
        Some("1.14.2")
    );
    // Calls go to the new socket.
    let bridge = server.bridge.clone();
    let call = tokio::spawn(async move { bridge.call(request(user_id, "GetAccounts")).await });
    let frame = new.next_call().await;
    new.answer(&frame, json!({"accounts": []})).await;
    assert_eq!(
        call.await.unwrap(),
        Ok(CallOutcome::Ok(json!({"accounts": []})))
    );
    // The old socket's cleanup did not remove the new presence.
    assert!(server.bridge.presence(user_id).await.connected);
}

#[tokio::test]
async fn two_missed_heartbeats_disconnect() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let mut s = settings();
    s.heartbeat_interval = Duration::from_millis(200);
    let server = serve(&db, s).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut changes = server.bridge.presence_changes();
    let mut addon = Addon::connect(&server.url, &key).await;
    changed(&mut changes, user_id).await;
    let started = std::time::Instant::now();
    addon.stop_reading();
    changed(&mut changes, user_id).await;
    assert!(!server.bridge.presence(user_id).await.connected);
    // Two intervals unanswered, closed on the third tick.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

const TOO_OLD: &str = "Add-On 1.12.4 is connected but too old — update to 1.13.0 or later";

#[tokio::test]
async fn a_refused_addon_is_too_old_on_every_replica_until_a_supported_one_connects() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let here = serve(&db, settings()).await;
    let there = serve(&db, settings()).await;
    let (user_id, key_id, key) = user_with_key(&db).await;
    // The other replica has cached "not connected": the refusal must reach it anyway.
    assert_eq!(there.bridge.presence(user_id).await, Presence::default());

    let mut addon = Addon::connect_hello(&here.url, &key, "1.12.4").await;
    assert_eq!(addon.closed().await.0, close::VERSION_UNSUPPORTED);
    let (recorded_key, version, nt8, refused_at): (
        uuid::Uuid,
        String,
        String,
        chrono::DateTime<chrono::Utc>,
    ) = sqlx::query_as(
        "SELECT key_id, addon_version, nt8_version, refused_at FROM addon_refusals
         WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (recorded_key, version.as_str(), nt8.as_str()),
        (key_id, "1.12.4", "8.1.4.1")
    );
    let presence = here.bridge.presence(user_id).await;
    assert!(!presence.connected && presence.features.is_empty());
    let too_old = presence.too_old.clone().unwrap();
    assert_eq!(
        (too_old.addon_version.as_str(), too_old.nt8_version.as_str()),
        ("1.12.4", "8.1.4.1")
    );
    assert_eq!(too_old.refused_at, refused_at);
    assert_eq!(presence.state(), AddonState::TooOld);
    assert_eq!(presence.status(), TOO_OLD);
    wait_until("the other replica sees the refusal", PATIENCE, async || {
        there.bridge.presence(user_id).await.too_old.is_some()
    })
    .await;

    // Another refusal replaces it: one row per user.
    let mut addon = Addon::connect_hello(&here.url, &key, "1.12.5").await;
    assert_eq!(addon.closed().await.0, close::VERSION_UNSUPPORTED);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM addon_refusals")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert_eq!(
        here.bridge.presence(user_id).await.status(),
        TOO_OLD.replace("1.12.4", "1.12.5")
    );

    // A supported Add-On connecting (on the other replica) ends the report everywhere.
    let addon = Addon::connect(&there.url, &key).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM addon_refusals")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(
        there.bridge.presence(user_id).await.state(),
        AddonState::Connected
    );
    wait_until("this replica sees the connection", PATIENCE, async || {
        here.bridge.presence(user_id).await.connected
    })
    .await;
    let mut changes = here.bridge.presence_changes();
    addon.drop_connection().await;
    changed(&mut changes, user_id).await;
    assert_eq!(here.bridge.presence(user_id).await, Presence::default());
}

#[tokio::test]
async fn a_refusal_is_shown_only_while_its_key_is_live_and_never_written_with_a_revoked_one() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, key_id, key) = user_with_key(&db).await;
    let mut addon = Addon::connect_hello(&server.url, &key, "1.12.4").await;
    assert_eq!(addon.closed().await.0, close::VERSION_UNSUPPORTED);
    assert_eq!(
        server.bridge.presence(user_id).await.state(),
        AddonState::TooOld
    );
    assert!(keys::revoke(&db, user_id, key_id).await.unwrap());
    wait_until("the refusal is no longer shown", PATIENCE, async || {
        server.bridge.presence(user_id).await == Presence::default()
    })
    .await;

    // A key revoked after the upgrade writes nothing, whether the revocation closes the socket
    // before its hello is read (4003) or the refusal finds the key revoked (4001).
    let (user_id, key_id, key) = user_with_key(&db).await;
    let mut addon = Addon::connect_silent(&server.url, &key).await;
    assert!(keys::revoke(&db, user_id, key_id).await.unwrap());
    addon.try_send(&crate::support::hello("1.12.4")).await;
    let (code, _) = addon.closed().await;
    assert!(
        code == close::KEY_REVOKED || code == close::VERSION_UNSUPPORTED,
        "{code}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM addon_refusals WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn revoking_the_key_closes_its_socket_with_4003() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, key_id, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    assert!(keys::revoke(&db, user_id, key_id).await.unwrap());
    assert_eq!(
        addon.closed().await,
        (close::KEY_REVOKED, "the Add-On key was revoked".to_owned())
    );
}

#[tokio::test]
async fn malformed_and_oversized_frames_get_error_frames_and_the_socket_keeps_working() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let cases = [
        ("not json".to_owned(), "malformed_frame"),
        ("[1,2]".to_owned(), "malformed_frame"),
        (
            json!({"type": "launch_rockets"}).to_string(),
            "malformed_frame",
        ),
        (
            json!({"type": "result", "id": "not-a-uuid", "ok": true}).to_string(),
            "malformed_frame",
        ),
        (
            json!({"v": 2, "type": "pong"}).to_string(),
            "unsupported_version",
        ),
        (
            json!({"type": "hello", "addon_version": "1.13.0", "nt8_version": "8"}).to_string(),
            "unexpected_hello",
        ),
        (
            json!({"type": "result", "id": uuid::Uuid::new_v4(), "ok": true}).to_string(),
            "unknown_call",
        ),
        (
            json!({"type": "event", "kind": "weather", "data": {}}).to_string(),
            "unknown_event",
        ),
        (
            json!({"type": "event", "kind": "execution", "data": {"price": 1}}).to_string(),
            "invalid_event",
        ),
        (
            format!(
                "{{\"type\":\"pong\",\"pad\":\"{}\"}}",
                "x".repeat(70 * 1024)
            ),
            "frame_too_large",
        ),
    ];
    for (text, code) in cases {
        addon.send(&text).await;
        let frame = addon.next_json().await;
        assert_eq!(
            (frame["type"].as_str(), frame["code"].as_str()),
            (Some("error"), Some(code)),
            "{frame}"
        );
    }
    addon.send(&json!({"type": "ping"}).to_string()).await;
    assert_eq!(addon.next_json().await, json!({"v": 1, "type": "pong"}));
    // Still serving calls.
    let bridge = server.bridge.clone();
    let call = tokio::spawn(async move { bridge.call(request(user_id, "GetConnections")).await });
    let frame = addon.next_call().await;
    assert_eq!(frame["tool"], "GetConnections");
    addon
        .answer(&frame, json!({"connections": [{"name": "Sim"}]}))
        .await;
    assert_eq!(
        call.await.unwrap(),
        Ok(CallOutcome::Ok(json!({"connections": [{"name": "Sim"}]})))
    );
}

#[tokio::test]
async fn an_addon_that_answers_pings_stays_connected() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let mut s = settings();
    // Generous against a loaded machine: a pong may take up to two intervals.
    s.heartbeat_interval = Duration::from_secs(1);
    let server = serve(&db, s).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut changes = server.bridge.presence_changes();
    let mut addon = Addon::connect(&server.url, &key).await;
    changed(&mut changes, user_id).await;
    // Four pings answered: a silent Add-On would have been closed before the fourth.
    addon.pinged(4).await;
    assert!(server.bridge.presence(user_id).await.connected);
    assert!(changes.try_recv().is_err(), "no disconnect in between");
}

/// A socket that closes while the database refuses its presence delete (the pool exhausted, as
/// when thousands of sockets close at once) still has its presence cleared once the database
/// answers again; before, the row stayed and showed the Add-On connected until it reconnected.
#[tokio::test]
async fn presence_is_cleared_once_the_database_answers_again() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let bridge_pool = small_pool(&test_db.url()).await;
    let server = serve(&bridge_pool, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let addon = Addon::connect(&server.url, &key).await;
    let rows = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM addon_presence WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&db)
            .await
            .unwrap()
    };
    assert_eq!(rows().await, 1);

    // Hold every connection of the bridge's pool, so none reaches the delete.
    let (release, holder) = hold_pool(&bridge_pool);
    tokio::time::sleep(Duration::from_millis(700)).await;
    addon.drop_connection().await;
    // The delete has timed out (300 ms) by now and the row is still there.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        rows().await,
        1,
        "the delete should have failed while the pool was held"
    );
    release.send_replace(true);
    assert!(holder.await.unwrap() >= 1);

    let cleared = testkit::wait::eventually(PATIENCE, async || rows().await == 0).await;
    assert!(cleared, "the closed socket's presence is still there");
    // Cleared by the socket's own retry, not by the replica being swept as dead.
    let instances: i64 =
        sqlx::query_scalar("SELECT count(*) FROM addon_instances WHERE instance_id = $1")
            .bind(server.bridge.instance_id())
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(instances, 1);
}
