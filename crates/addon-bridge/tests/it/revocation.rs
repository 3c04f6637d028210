//! A revoked Add-On key keeps no socket and gains none, in any phase: before its hello, while
//! registering, or registered. The account's live Add-On (another key) is never replaced by
//! it, and no call ever reaches it.

use std::time::Duration;

use addon_bridge::protocol::close;
use addon_bridge::{CallOutcome, CallRequest, keys};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{Addon, Frame, Server, hello, serve, settings, user_with_key};

fn revoked() -> Frame {
    Frame::Close(close::KEY_REVOKED, "the Add-On key was revoked".to_owned())
}

/// A call from `server` to `user_id` answered by `addon`, which must be the one receiving it.
async fn call_answered_by(server: &Server, addon: &mut Addon, user_id: Uuid) {
    let bridge = server.bridge.clone();
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
    addon.answer(&frame, json!({"accounts": ["Sim101"]})).await;
    assert_eq!(
        call.await.unwrap(),
        Ok(CallOutcome::Ok(json!({"accounts": ["Sim101"]})))
    );
}

async fn presence_key(db: &PgPool, user_id: Uuid) -> Option<Uuid> {
    sqlx::query_scalar("SELECT key_id FROM addon_presence WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_revoked_before_its_hello_is_refused_4003_and_never_replaces_the_live_addon() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, victim_key_id, victim_key) = user_with_key(&db).await;
    let (stolen_id, stolen) = keys::create(&db, user_id).await.unwrap();
    let mut victim = Addon::connect(&server.url, &victim_key).await;
    let mut attacker = Addon::connect_silent(&server.url, &stolen).await;

    assert!(keys::revoke(&db, user_id, stolen_id).await.unwrap());
    attacker.try_send(&hello("1.13.0")).await;
    // The very first frame is the close: no welcome, no call.
    assert_eq!(attacker.next().await, revoked());

    assert_eq!(presence_key(&db, user_id).await, Some(victim_key_id));
    call_answered_by(&server, &mut victim, user_id).await;
    call_answered_by(&server, &mut victim, user_id).await;
}

#[tokio::test]
async fn a_socket_waiting_for_its_hello_is_closed_4003_at_once_when_its_key_is_revoked() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, key_id, key) = user_with_key(&db).await;
    let mut silent = Addon::connect_silent(&server.url, &key).await;
    let started = std::time::Instant::now();
    assert!(keys::revoke(&db, user_id, key_id).await.unwrap());
    // Well before the 10 s hello timeout (which would close with 4000).
    let first = tokio::time::timeout(Duration::from_secs(5), silent.next())
        .await
        .expect("still open 5 s after the revocation");
    assert_eq!(first, revoked());
    eprintln!("closed {:?} after the revocation", started.elapsed());
}

#[tokio::test]
async fn revoke_all_closes_every_socket_of_the_account_in_any_phase_and_spares_other_accounts() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let (_, second) = keys::create(&db, user_id).await.unwrap();
    let (other_user, _, other_key) = user_with_key(&db).await;
    let mut live = Addon::connect(&server.url, &key).await;
    let mut waiting = Addon::connect_silent(&server.url, &second).await;
    let mut other = Addon::connect(&server.url, &other_key).await;

    assert_eq!(keys::revoke_all(&db, user_id).await.unwrap(), 2);
    assert_eq!(
        live.closed().await,
        (close::KEY_REVOKED, "the Add-On key was revoked".to_owned())
    );
    waiting.try_send(&hello("1.13.0")).await;
    assert_eq!(waiting.next().await, revoked());
    assert_eq!(presence_key(&db, user_id).await, None);
    assert!(!server.bridge.presence(user_id).await.connected);
    call_answered_by(&server, &mut other, other_user).await;
}

#[tokio::test]
async fn a_revocation_racing_the_registration_never_lets_the_revoked_socket_in() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, victim_key_id, victim_key) = user_with_key(&db).await;
    let (stolen_id, stolen) = keys::create(&db, user_id).await.unwrap();
    let mut victim = Addon::connect(&server.url, &victim_key).await;
    let mut attacker = Addon::connect_silent(&server.url, &stolen).await;

    // The revocation holds the key row while the hello arrives: registration must wait for it
    // and then see the key revoked.
    let mut revocation = db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM addon_keys WHERE key_id = $1 FOR UPDATE")
        .bind(stolen_id)
        .execute(&mut *revocation)
        .await
        .unwrap();
    attacker.send(&hello("1.13.0")).await;
    let blocked = testkit::wait::eventually(Duration::from_secs(10), async || {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
               AND query LIKE '%FROM addon_keys%FOR SHARE%'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        waiting > 0
    })
    .await;
    assert!(blocked, "registration never waited for the key row");
    assert!(
        keys::revoke(&mut *revocation, user_id, stolen_id)
            .await
            .unwrap()
    );
    revocation.commit().await.unwrap();

    assert_eq!(attacker.next().await, revoked());
    assert_eq!(presence_key(&db, user_id).await, Some(victim_key_id));
    call_answered_by(&server, &mut victim, user_id).await;
}
