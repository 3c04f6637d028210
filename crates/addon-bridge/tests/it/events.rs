//! Events from the Add-On feed executions, the journal and watermarks; calls feed the activity
//! log (without arguments).

use std::time::Duration;

use addon_bridge::data::{self, HistoryFilter};
use addon_bridge::watermarks;
use serde_json::json;

use crate::support::{Addon, serve, settings, user_with_key};

#[tokio::test]
async fn executions_and_snapshots_are_stored_acknowledged_and_served() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let fills = [
        ("E1", "Buy", 2.0, 5000.0, "2026-11-20T14:30:00Z"),
        ("E2", "Sell", 1.0, 5004.0, "2026-11-20T14:35:00Z"),
        ("E3", "Sell", 2.0, 5001.0, "2026-11-20T14:40:00Z"),
        ("E3", "Sell", 2.0, 5001.0, "2026-11-20T14:40:00Z"),
    ];
    for (n, (id, action, quantity, price, time)) in fills.iter().enumerate() {
        let event = json!({"v": 1, "type": "event", "id": format!("ev-{n}"), "kind": "execution", "data": {
            "execution_id": id, "account": "Sim101", "instrument": "ES 12-26", "action": action,
            "quantity": quantity, "price": price, "commission": 2.0, "time": time,
        }});
        addon.send(&event.to_string()).await;
        assert_eq!(
            addon.next_json().await,
            json!({"v": 1, "type": "event_ack", "id": format!("ev-{n}")})
        );
    }
    for (n, (value, time)) in [
        (50_000.0, "2026-11-20T14:00:00Z"),
        (50_400.0, "2026-11-20T15:00:00Z"),
        (50_100.0, "2026-11-20T16:00:00Z"),
    ]
    .iter()
    .enumerate()
    {
        let event = json!({"type": "event", "id": format!("snap-{n}"), "kind": "account_snapshot", "data": {
            "account": "Sim101", "cash_value": value, "net_liquidation": value, "time": time,
        }});
        addon.send(&event.to_string()).await;
        assert_eq!(addon.next_json().await["type"], "event_ack");
    }

    let executions = data::executions(&db, user_id, &HistoryFilter::default())
        .await
        .unwrap();
    let ids: Vec<_> = executions.iter().map(|e| e.execution_id.as_str()).collect();
    assert_eq!(ids, ["E1", "E2", "E3"]);
    assert_eq!(executions[1].price, 5004.0);

    let journal = data::journal(&db, user_id, &HistoryFilter::default())
        .await
        .unwrap();
    let summary: Vec<_> = journal
        .iter()
        .map(|t| {
            (
                t.direction,
                t.quantity,
                t.entry_price,
                t.exit_price,
                t.points,
            )
        })
        .collect();
    // Newest first: the long closed at 5001 (+1) and at 5004 (+4); the short left open is no trade yet.
    assert_eq!(
        summary,
        [
            ("Long", 1.0, 5000.0, 5001.0, 1.0),
            ("Long", 1.0, 5000.0, 5004.0, 4.0)
        ]
    );

    let marks = watermarks::watermarks(&db, user_id, Some("Sim101"), None)
        .await
        .unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(
        (
            marks[0].all_time.high,
            marks[0].all_time.low,
            marks[0].latest.value,
            marks[0].drawdown.from_high
        ),
        (50_400.0, 50_000.0, 50_100.0, 300.0)
    );
    assert!(
        watermarks::watermarks(&db, user_id, Some("Other"), None)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_activity_log_records_tool_outcome_latency_and_replica_but_no_arguments() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let bridge = server.bridge.clone();
    let call = tokio::spawn(async move {
        bridge
            .call(addon_bridge::CallRequest {
                user_id,
                tool: "EmitAlert".to_owned(),
                arguments: json!({"message": "secret-ish text"}),
                deadline: Duration::from_secs(10),
                idempotency_key: None,
            })
            .await
    });
    let frame = addon.next_call().await;
    addon.answer(&frame, json!({"shown": true})).await;
    call.await.unwrap().unwrap();
    let entries = data::activity(&db, user_id, 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            entries[0].tool.as_str(),
            entries[0].outcome.as_str(),
            entries[0].instance_id,
            entries[0].replayed
        ),
        ("EmitAlert", "ok", server.bridge.instance_id(), false)
    );
    assert!(entries[0].latency_ms >= 0 && entries[0].latency_ms < 10_000);
    let stored: String = sqlx::query_scalar("SELECT row_to_json(a)::text FROM addon_activity a")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(!stored.contains("secret-ish"), "{stored}");
}
