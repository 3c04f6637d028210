//! Webhook signals and copier actions from the Add-On: stored once per Add-On id however often
//! they are resent, acknowledged every time, refused when malformed, and read back in pages.

use addon_bridge::CallOutcome;
use addon_bridge::data::{self, HistoryRequest};
use serde_json::{Value, json};
use uuid::Uuid;
use vocabulary::SignalFilter;

use crate::support::{Addon, serve, settings, user_with_key};

fn signal(signal_id: &str, received_at: &str, account: &str, outcome: &str) -> Value {
    let reason = (outcome != "order_placed").then_some("Position limit reached: max 2 contracts");
    json!({
        "signal_id": signal_id, "received_at": received_at, "source": "TradingView",
        "strategy": "ES Breakout v2", "alert": "Long entry", "account": account,
        "instrument": "ES 12-26", "action": "Buy", "quantity": 1, "order_type": "Market",
        "payload_summary": "action=buy qty=1 ticker=ES1! secret=s3cr3t price=5001.25",
        "outcome": outcome,
        "order_ids": if outcome == "order_placed" { json!(["O17"]) } else { json!([]) },
        "reason": reason, "latency_ms": 112,
    })
}

fn copier(action_id: &str, time: &str, follower: &str, outcome: &str) -> Value {
    let placed = outcome == "order_placed";
    json!({
        "action_id": action_id, "time": time, "copier": "Main", "leader_account": "Sim101",
        "leader_execution_id": "X17", "leader_order_id": "O17", "instrument": "ES 12-26",
        "leader_action": "Buy", "leader_quantity": 1, "leader_price": 5001.25,
        "follower_account": follower, "follower_instrument": "ES 12-26", "ratio": 1.0,
        "outcome": outcome,
        "follower_order_id": if placed { json!("O18") } else { Value::Null },
        "follower_quantity": if placed { json!(1) } else { Value::Null },
        "reason": if placed { Value::Null } else { json!("follower account Sim103 is not connected") },
    })
}

fn event(id: &str, kind: &str, data: &Value) -> String {
    json!({"v": 1, "type": "event", "id": id, "kind": kind, "data": data}).to_string()
}

fn filter(limit: u32) -> SignalFilter {
    SignalFilter {
        account: None,
        outcome: None,
        since: None,
        until: None,
        limit,
        cursor: None,
    }
}

/// The structured result of a history request that must succeed.
async fn history(db: &sqlx::PgPool, user_id: Uuid, request: HistoryRequest) -> Value {
    match data::history(db, user_id, &request).await.unwrap() {
        CallOutcome::Ok(value) => value,
        other @ CallOutcome::ToolError(_) => panic!("{other:?}"),
    }
}

async fn sends_acked(addon: &mut Addon, id: &str, kind: &str, data: &Value) {
    addon.send(&event(id, kind, data)).await;
    assert_eq!(
        addon.next_json().await,
        json!({"v": 1, "type": "event_ack", "id": id})
    );
}

#[tokio::test]
async fn a_resent_signal_or_copier_action_is_stored_once_and_acknowledged_every_time() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let (other_user, _, other_key) = user_with_key(&db).await;
    let webhook = signal("wh-1", "2026-11-20T14:29:59.870Z", "Sim101", "rejected");
    let copied = copier("cp-1", "2026-11-20T14:30:00.410Z", "Sim102", "order_placed");

    let mut addon = Addon::connect(&server.url, &key).await;
    for _ in 0..2 {
        sends_acked(&mut addon, "ev-1", "webhook_signal", &webhook).await;
        sends_acked(&mut addon, "ev-2", "copier_action", &copied).await;
    }
    // The Add-On reconnects and resends what it cannot know was stored.
    addon.drop_connection().await;
    let mut addon = Addon::connect(&server.url, &key).await;
    sends_acked(&mut addon, "ev-1", "webhook_signal", &webhook).await;
    sends_acked(&mut addon, "ev-2", "copier_action", &copied).await;

    // Another user's Add-On uses the same ids: its own rows.
    let mut other = Addon::connect(&server.url, &other_key).await;
    sends_acked(&mut other, "ev-1", "webhook_signal", &webhook).await;
    sends_acked(&mut other, "ev-2", "copier_action", &copied).await;

    for user in [user_id, other_user] {
        let signals = history(&db, user, HistoryRequest::WebhookSignals(filter(50))).await;
        assert_eq!(
            signals,
            json!({"signals": [{
                "signal_id": "wh-1", "received_at": "2026-11-20T14:29:59.870Z",
                "source": "TradingView", "strategy": "ES Breakout v2", "alert": "Long entry",
                "account": "Sim101", "instrument": "ES 12-26", "action": "Buy", "quantity": 1.0,
                "order_type": "Market",
                "payload_summary": "action=buy qty=1 ticker=ES1! secret=[redacted] price=5001.25",
                "outcome": "rejected", "order_ids": [],
                "reason": "Position limit reached: max 2 contracts", "latency_ms": 112,
            }], "next_cursor": null})
        );
        let actions = history(&db, user, HistoryRequest::CopierActions(filter(50))).await;
        assert_eq!(
            actions,
            json!({"actions": [{
                "action_id": "cp-1", "time": "2026-11-20T14:30:00.410Z", "copier": "Main",
                "leader_account": "Sim101", "leader_execution_id": "X17",
                "leader_order_id": "O17", "instrument": "ES 12-26", "leader_action": "Buy",
                "leader_quantity": 1.0, "leader_price": 5001.25, "follower_account": "Sim102",
                "follower_instrument": "ES 12-26", "ratio": 1.0, "outcome": "order_placed",
                "follower_order_id": "O18", "follower_quantity": 1.0, "reason": null,
            }], "next_cursor": null})
        );
    }
    let secrets: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM addon_webhook_signals WHERE payload_summary LIKE '%s3cr3t%'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(secrets, 0);
}

#[tokio::test]
async fn malformed_signals_and_copier_actions_are_invalid_and_not_stored() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let good_signal = signal("wh-1", "2026-11-20T14:29:59Z", "Sim101", "order_placed");
    let good_action = copier("cp-1", "2026-11-20T14:30:00Z", "Sim103", "skipped");
    let with = |base: &Value, field: &str, value: Value| {
        let mut changed = base.clone();
        changed[field] = value;
        changed
    };
    let without = |base: &Value, field: &str| {
        let mut changed = base.clone();
        changed.as_object_mut().unwrap().remove(field);
        changed
    };
    let cases = [
        (
            "webhook_signal",
            with(&good_signal, "outcome", json!("maybe")),
        ),
        ("webhook_signal", without(&good_signal, "signal_id")),
        ("webhook_signal", with(&good_signal, "signal_id", json!(""))),
        ("webhook_signal", without(&good_signal, "received_at")),
        ("webhook_signal", without(&good_signal, "outcome")),
        (
            "webhook_signal",
            with(&good_signal, "received_at", json!("yesterday")),
        ),
        (
            "webhook_signal",
            with(&good_signal, "alert", json!("Long\u{0} entry")),
        ),
        (
            "webhook_signal",
            with(&good_signal, "raw_body", json!("{…}")),
        ),
        // Anything but a placed order says why.
        (
            "webhook_signal",
            with(&good_signal, "outcome", json!("ignored")),
        ),
        (
            "copier_action",
            with(&good_action, "outcome", json!("copied")),
        ),
        ("copier_action", without(&good_action, "action_id")),
        ("copier_action", without(&good_action, "time")),
        ("copier_action", without(&good_action, "follower_account")),
        ("copier_action", with(&good_action, "reason", Value::Null)),
        (
            "copier_action",
            with(&good_action, "copier", json!("Ma\u{0}in")),
        ),
    ];
    for (n, (kind, data)) in cases.iter().enumerate() {
        addon.send(&event(&format!("bad-{n}"), kind, data)).await;
        let frame = addon.next_json().await;
        assert_eq!(
            (frame["type"].as_str(), frame["code"].as_str()),
            (Some("error"), Some("invalid_event")),
            "{kind} {data}: {frame}"
        );
    }
    // The socket goes on, and the good forms are accepted.
    sends_acked(&mut addon, "ok-1", "webhook_signal", &good_signal).await;
    sends_acked(&mut addon, "ok-2", "copier_action", &good_action).await;
    let stored: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM addon_webhook_signals),
                (SELECT count(*) FROM addon_copier_actions)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(stored, (1, 1));
    let signals = history(&db, user_id, HistoryRequest::WebhookSignals(filter(5))).await;
    assert_eq!(signals["signals"][0]["order_ids"], json!(["O17"]));
}

/// Follows `next_cursor` to the end; returns the ids of each page.
async fn pages(
    db: &sqlx::PgPool,
    user_id: Uuid,
    first: &SignalFilter,
    copier: bool,
) -> Vec<Vec<String>> {
    let (list, id) = if copier {
        ("actions", "action_id")
    } else {
        ("signals", "signal_id")
    };
    let mut filter = first.clone();
    let mut out = Vec::new();
    loop {
        let request = if copier {
            HistoryRequest::CopierActions(filter.clone())
        } else {
            HistoryRequest::WebhookSignals(filter.clone())
        };
        let page = history(db, user_id, request).await;
        out.push(
            page[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|entry| entry[id].as_str().unwrap().to_owned())
                .collect(),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => filter.cursor = Some(cursor.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test]
async fn history_pages_newest_first_with_filters_and_refuses_a_bad_cursor() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let signals = [
        ("wh-1", "2026-11-20T14:00:00Z", "Sim101", "order_placed"),
        ("wh-2", "2026-11-20T14:05:00Z", "Sim102", "rejected"),
        ("wh-3", "2026-11-20T14:10:00Z", "Sim101", "ignored"),
        // Two at the same instant: ordered by id, newest first.
        ("wh-4", "2026-11-20T14:15:00Z", "Sim101", "order_placed"),
        ("wh-5", "2026-11-20T14:15:00Z", "Sim102", "error"),
        ("wh-6", "2026-11-20T14:20:00Z", "Sim101", "rejected"),
        ("wh-7", "2026-11-20T14:25:00Z", "Sim101", "order_placed"),
    ];
    for (n, (id, time, account, outcome)) in signals.iter().enumerate() {
        let data = signal(id, time, account, outcome);
        sends_acked(&mut addon, &format!("ev-{n}"), "webhook_signal", &data).await;
    }
    let actions = [
        ("cp-1", "2026-11-20T14:00:00Z", "Sim102", "order_placed"),
        ("cp-2", "2026-11-20T14:00:00Z", "Sim103", "skipped"),
        ("cp-3", "2026-11-20T14:20:00Z", "Sim102", "order_placed"),
        ("cp-4", "2026-11-20T14:20:00Z", "Sim103", "skipped"),
    ];
    for (n, (id, time, follower, outcome)) in actions.iter().enumerate() {
        let data = copier(id, time, follower, outcome);
        sends_acked(&mut addon, &format!("cp-ev-{n}"), "copier_action", &data).await;
    }

    let ids = |page: &[&str]| page.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        pages(&db, user_id, &filter(3), false).await,
        [
            ids(&["wh-7", "wh-6", "wh-5"]),
            ids(&["wh-4", "wh-3", "wh-2"]),
            ids(&["wh-1"])
        ]
    );
    let sim101 = SignalFilter {
        account: Some("Sim101".to_owned()),
        ..filter(2)
    };
    assert_eq!(
        pages(&db, user_id, &sim101, false).await,
        [
            ids(&["wh-7", "wh-6"]),
            ids(&["wh-4", "wh-3"]),
            ids(&["wh-1"])
        ]
    );
    let placed_in_window = SignalFilter {
        outcome: Some("order_placed".to_owned()),
        since: Some("2026-11-20T14:05:00Z".parse().unwrap()),
        until: Some("2026-11-20T14:20:00Z".parse().unwrap()),
        ..filter(10)
    };
    assert_eq!(
        pages(&db, user_id, &placed_in_window, false).await,
        [ids(&["wh-4"])]
    );
    // Exactly `limit` entries left: no further page is promised.
    assert_eq!(
        pages(&db, user_id, &filter(7), false).await,
        [ids(&[
            "wh-7", "wh-6", "wh-5", "wh-4", "wh-3", "wh-2", "wh-1"
        ])]
    );

    // Copier actions match the account as leader or follower.
    assert_eq!(
        pages(&db, user_id, &filter(3), true).await,
        [ids(&["cp-4", "cp-3", "cp-2"]), ids(&["cp-1"])]
    );
    let follower = SignalFilter {
        account: Some("Sim103".to_owned()),
        ..filter(10)
    };
    assert_eq!(
        pages(&db, user_id, &follower, true).await,
        [ids(&["cp-4", "cp-2"])]
    );
    let leader = SignalFilter {
        account: Some("Sim101".to_owned()),
        outcome: Some("order_placed".to_owned()),
        ..filter(10)
    };
    assert_eq!(
        pages(&db, user_id, &leader, true).await,
        [ids(&["cp-3", "cp-1"])]
    );

    for cursor in ["not-a-cursor", "eyJ0IjoxfQ", ""] {
        for request in [
            HistoryRequest::WebhookSignals(SignalFilter {
                cursor: Some(cursor.to_owned()),
                ..filter(3)
            }),
            HistoryRequest::CopierActions(SignalFilter {
                cursor: Some(cursor.to_owned()),
                ..filter(3)
            }),
        ] {
            let outcome = data::history(&db, user_id, &request).await.unwrap();
            let CallOutcome::ToolError(message) = outcome else {
                panic!("{cursor:?}: {outcome:?}")
            };
            assert!(message.starts_with("cursor is not one"), "{message}");
        }
    }
}
