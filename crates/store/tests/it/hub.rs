//! The notification hub: one `LISTEN` connection per replica, fan-out by channel, and the
//! events that keep caches honest across a lost connection or a lagging subscriber.

use std::time::Duration;

use sqlx::PgPool;
use store::Background;
use store::hub::{Event, Notice, Subscription};

const PATIENCE: Duration = Duration::from_secs(10);

async fn next(subscription: &mut Subscription) -> Event {
    tokio::time::timeout(PATIENCE, subscription.recv())
        .await
        .expect("no event within the patience")
}

async fn notify(db: &PgPool, channel: &str, payload: &str) {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(db)
        .await
        .unwrap();
}

fn notice(channel: &str, payload: &str) -> Event {
    Event::Notification(Notice {
        channel: channel.to_owned(),
        payload: payload.to_owned(),
    })
}

/// The hub's connections to this test's database (the cluster is shared with other tests).
async fn kill_listeners(db: &PgPool) -> usize {
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(db)
    .await
    .unwrap();
    killed.len()
}

#[tokio::test]
async fn subscribers_get_their_channels_only_and_resync_after_a_lost_connection() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let background = Background::start(&db);
    let mut a = background.hub.subscribe(&["hub_a"]);
    let mut b = background.hub.subscribe(&["hub_b"]);
    assert_eq!(next(&mut a).await, Event::Resynced);
    assert_eq!(next(&mut b).await, Event::Resynced);

    notify(&db, "hub_a", "a1").await;
    notify(&db, "hub_b", "b1").await;
    notify(&db, "hub_a", "a2").await;
    notify(&db, "hub_b", "b2").await;
    // In order, and nothing of the other channel in between.
    assert_eq!(next(&mut a).await, notice("hub_a", "a1"));
    assert_eq!(next(&mut a).await, notice("hub_a", "a2"));
    assert_eq!(next(&mut b).await, notice("hub_b", "b1"));
    assert_eq!(next(&mut b).await, notice("hub_b", "b2"));

    // One connection serves both subscribers.
    assert_eq!(kill_listeners(&db).await, 1);
    assert_eq!(next(&mut a).await, Event::Lost);
    assert_eq!(next(&mut b).await, Event::Lost);
    assert_eq!(next(&mut a).await, Event::Resynced);
    assert_eq!(next(&mut b).await, Event::Resynced);
    assert!(background.hub.is_connected());

    notify(&db, "hub_b", "b3").await;
    notify(&db, "hub_a", "a3").await;
    assert_eq!(next(&mut a).await, notice("hub_a", "a3"));
    assert_eq!(next(&mut b).await, notice("hub_b", "b3"));

    assert!(background.tasks.shutdown(PATIENCE).await);
    assert_eq!(next(&mut a).await, Event::Lost);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_and_blocks_no_one() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let background = Background::start(&db);
    let mut slow = background.hub.subscribe(&["hub_burst"]);
    let mut other = background.hub.subscribe(&["hub_other"]);
    assert_eq!(next(&mut slow).await, Event::Resynced);
    assert_eq!(next(&mut other).await, Event::Resynced);

    // More than a subscriber's queue holds, while `slow` reads nothing.
    sqlx::query("SELECT pg_notify('hub_burst', i::text) FROM generate_series(1, 5000) AS i")
        .execute(&db)
        .await
        .unwrap();
    notify(&db, "hub_other", "after").await;
    // The hub dispatches in order: the burst is behind it once this arrives.
    assert_eq!(next(&mut other).await, notice("hub_other", "after"));

    // Some notification was dropped for `slow`: it is told before anything else, as for a lost
    // connection, and resynced at once (the connection is fine).
    assert_eq!(next(&mut slow).await, Event::Lost);
    assert_eq!(next(&mut slow).await, Event::Resynced);
    assert!(matches!(next(&mut slow).await, Event::Notification(_)));
    assert!(background.hub.is_connected());
}

#[tokio::test]
async fn a_channel_subscribed_while_connected_is_listened_on_before_it_resyncs() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let background = Background::start(&db);
    let mut first = background.hub.subscribe(&["hub_first"]);
    assert_eq!(next(&mut first).await, Event::Resynced);

    let mut late = background.hub.subscribe(&["hub_late", "hub_first"]);
    assert_eq!(next(&mut late).await, Event::Resynced);
    notify(&db, "hub_late", "l1").await;
    notify(&db, "hub_first", "f1").await;
    assert_eq!(next(&mut late).await, notice("hub_late", "l1"));
    assert_eq!(next(&mut late).await, notice("hub_first", "f1"));
    // The earlier subscriber is neither reset nor sent the new channel.
    assert_eq!(next(&mut first).await, notice("hub_first", "f1"));
}
