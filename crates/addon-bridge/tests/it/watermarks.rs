//! Watermarks are computed from the stored snapshots in time order, whatever order the Add-On
//! sent them in, and a resent snapshot is stored once.

use addon_bridge::CallOutcome;
use addon_bridge::data::{self, HistoryRequest};
use addon_bridge::watermarks::{TrailingMode, TrailingRule};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{Addon, serve, settings, user_with_key};

/// (time, net liquidation, session start) of Sim101, in time order: two CME days and a
/// snapshot that states its session.
const SERIES: [(&str, f64, Option<&str>); 6] = [
    ("2026-11-19T14:00:00Z", 50_000.0, None),
    ("2026-11-19T15:00:00Z", 50_800.0, None),
    ("2026-11-19T20:00:00Z", 50_300.0, None),
    ("2026-11-20T14:00:00Z", 50_600.0, None),
    (
        "2026-11-20T15:00:00Z",
        49_600.0,
        Some("2026-11-19T23:00:00Z"),
    ),
    (
        "2026-11-20T16:00:00Z",
        50_100.0,
        Some("2026-11-19T23:00:00Z"),
    ),
];

async fn send_snapshot(
    addon: &mut Addon,
    id: &str,
    (time, value, session): (&str, f64, Option<&str>),
) {
    let mut data = json!({
        "account": "Sim101", "cash_value": value, "net_liquidation": value, "time": time,
    });
    if let Some(start) = session {
        data["session_start"] = json!(start);
    }
    let event =
        json!({"v": 1, "type": "event", "id": id, "kind": "account_snapshot", "data": data});
    addon.send(&event.to_string()).await;
    assert_eq!(
        addon.next_json().await,
        json!({"v": 1, "type": "event_ack", "id": id}),
        "a replay is acknowledged like the first copy"
    );
}

async fn rows(db: &PgPool, user_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM addon_account_snapshots WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn answer(db: &PgPool, user_id: Uuid, trailing: Option<TrailingRule>) -> Value {
    let request = HistoryRequest::Watermarks {
        account: Some("Sim101".to_owned()),
        trailing,
    };
    match data::history(db, user_id, &request).await.unwrap() {
        CallOutcome::Ok(value) => value,
        CallOutcome::ToolError(message) => panic!("{message}"),
    }
}

#[tokio::test]
async fn out_of_order_and_replayed_snapshots_give_the_same_watermarks_once_each() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;

    // One Add-On sends the series in order.
    let (in_order, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    for (n, snapshot) in SERIES.iter().enumerate() {
        send_snapshot(&mut addon, &format!("s-{n}"), *snapshot).await;
    }

    // Another sends it shuffled, resends some under new ids, and resends again after a
    // reconnect.
    let (shuffled, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    for (n, i) in [3, 0, 5, 1, 3, 4, 2, 0].into_iter().enumerate() {
        send_snapshot(&mut addon, &format!("r-{n}"), SERIES[i]).await;
    }
    addon.drop_connection().await;
    let mut addon = Addon::connect(&server.url, &key).await;
    for (n, i) in [5, 4, 1].into_iter().enumerate() {
        send_snapshot(&mut addon, &format!("again-{n}"), SERIES[i]).await;
    }

    assert_eq!(rows(&db, in_order).await, 6);
    assert_eq!(rows(&db, shuffled).await, 6, "one row per snapshot");

    let rules = [
        None,
        Some(TrailingRule {
            amount: 1_000.0,
            mode: TrailingMode::Intraday,
            stop_at: None,
        }),
        Some(TrailingRule {
            amount: 1_000.0,
            mode: TrailingMode::EndOfDay,
            stop_at: Some(49_250.0),
        }),
    ];
    for trailing in rules {
        assert_eq!(
            answer(&db, in_order, trailing).await,
            answer(&db, shuffled, trailing).await,
            "{trailing:?}"
        );
    }

    assert_eq!(
        answer(&db, shuffled, rules[1]).await,
        json!({"watermarks": [{
            "account": "Sim101",
            "basis": "net_liquidation",
            "latest": {"value": 50_100.0, "at": "2026-11-20T16:00:00Z"},
            "all_time": {"high": 50_800.0, "high_at": "2026-11-19T15:00:00Z",
                         "low": 49_600.0, "low_at": "2026-11-20T15:00:00Z"},
            "session": {"start": "2026-11-19T23:00:00Z", "source": "addon",
                        "open": 50_600.0, "open_at": "2026-11-20T14:00:00Z",
                        "high": 50_600.0, "high_at": "2026-11-20T14:00:00Z",
                        "low": 49_600.0, "low_at": "2026-11-20T15:00:00Z"},
            "drawdown": {"from_high": 700.0, "max": 1_200.0,
                         "max_peak_at": "2026-11-19T15:00:00Z",
                         "max_trough_at": "2026-11-20T15:00:00Z"},
            "trailing": {"mode": "intraday", "amount": 1_000.0, "stop_at": null,
                         "peak": 50_800.0, "threshold": 49_800.0, "remaining": 300.0,
                         "breached_at": "2026-11-20T15:00:00Z"},
        }]})
    );
    // End of day: Thursday closed at 50 300, so 49 300, capped at 49 250; never reached.
    assert_eq!(
        answer(&db, shuffled, rules[2]).await["watermarks"][0]["trailing"],
        json!({"mode": "end_of_day", "amount": 1_000.0, "stop_at": 49_250.0,
               "peak": 50_300.0, "threshold": 49_250.0, "remaining": 850.0,
               "breached_at": null})
    );
    assert_eq!(
        answer(&db, shuffled, None).await["watermarks"][0]["trailing"],
        Value::Null
    );
    // Another user's snapshots are theirs alone.
    let (stranger, _, _) = user_with_key(&db).await;
    assert_eq!(answer(&db, stranger, None).await, json!({"watermarks": []}));
}
