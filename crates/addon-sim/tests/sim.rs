//! The simulator against a real bridge on loopback and a real database: a read tool, and a
//! PlaceOrder whose position shows in GetPositions and whose execution reaches the journal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use addon_bridge::{AddonBridge, BridgeSettings, CallOutcome, CallRequest};
use serde_json::json;

fn call(user_id: uuid::Uuid, tool: &str, arguments: serde_json::Value) -> CallRequest {
    CallRequest {
        user_id,
        tool: tool.to_owned(),
        arguments,
        deadline: Duration::from_secs(10),
        idempotency_key: None,
    }
}

#[tokio::test]
async fn the_simulator_answers_tools_with_consistent_state() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let background = store::Background::start(&db);
    let bridge = AddonBridge::start(db.clone(), BridgeSettings::new(), &background)
        .await
        .unwrap();
    let app = addon_bridge::router::<AddonBridge>().with_state(bridge.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let email =
        store::users::Email::parse(&format!("{}@example.com", uuid::Uuid::new_v4())).unwrap();
    let user_id = store::users::insert(&db, &email, "x", store::users::Tier::Elite)
        .await
        .unwrap()
        .id;
    let (_, key) = addon_bridge::keys::create(&db, user_id).await.unwrap();

    let mut changes = bridge.presence_changes();
    let scripts_dir = testkit::scratch_dir("addon-sim");
    let options = addon_sim::Options {
        url: format!("ws://{addr}/v1/addon/ws"),
        key,
        addon_version: "1.13.4".to_owned(),
        latency: Duration::ZERO,
        never_answer: vec![],
        drop_on: None,
        backtest: Duration::from_millis(10),
        scripts_dir: scripts_dir.clone(),
    };
    let sim = Arc::new(Mutex::new(
        addon_sim::Sim::new(options.scripts_dir.clone(), options.backtest).unwrap(),
    ));
    tokio::spawn(async move { addon_sim::run_with(&options, sim).await });
    assert_eq!(changes.recv().await.unwrap(), user_id);

    let listed = bridge.call(call(user_id, "GetAccounts", json!({}))).await;
    let Ok(CallOutcome::Ok(accounts)) = listed else {
        panic!("{listed:?}")
    };
    let names: Vec<_> = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(names, [json!("Sim101"), json!("Sim102")]);

    let placed = bridge
        .call(call(user_id, "PlaceOrder", json!({"account": "Sim101", "instrument": "ES 12-26", "action": "Buy", "order_type": "Market", "quantity": 2})))
        .await;
    let Ok(CallOutcome::Ok(order)) = placed else {
        panic!("{placed:?}")
    };
    assert_eq!(order["state"], "Filled");
    let Ok(CallOutcome::Ok(positions)) =
        bridge.call(call(user_id, "GetPositions", json!({}))).await
    else {
        panic!()
    };
    let position = &positions["positions"][0];
    assert_eq!(
        (
            &position["account"],
            &position["quantity"],
            &position["market_position"]
        ),
        (&json!("Sim101"), &json!(2), &json!("Long"))
    );

    let compiled = bridge
        .call(call(
            user_id,
            "WriteNinjaScriptFile",
            json!({"path": "Strategies/Bad.cs", "content": "namespace X { class Y {"}),
        ))
        .await;
    assert!(matches!(compiled, Ok(CallOutcome::Ok(_))));
    let Ok(CallOutcome::ToolError(errors)) = bridge
        .call(call(user_id, "CompileNinjaScript", json!({})))
        .await
    else {
        panic!()
    };
    assert!(errors.contains("CS1513"), "{errors}");

    let Ok(CallOutcome::Ok(flat)) = bridge.call(call(user_id, "FlattenAll", json!({}))).await
    else {
        panic!()
    };
    assert_eq!(flat["flattened"][0]["quantity"], 2);
    let Ok(CallOutcome::Ok(positions)) =
        bridge.call(call(user_id, "GetPositions", json!({}))).await
    else {
        panic!()
    };
    assert_eq!(positions["positions"], json!([]));
    // Both fills were sent as events; the next call on the same socket follows them, so they are
    // stored once their acknowledgements could have been sent. Wait for the rows.
    testkit::wait::wait_until(
        "both executions stored",
        Duration::from_millis(2500),
        async || {
            addon_bridge::data::executions(
                &db,
                user_id,
                &addon_bridge::data::HistoryFilter::default(),
            )
            .await
            .unwrap()
            .len()
                == 2
        },
    )
    .await;
    std::fs::remove_dir_all(&scripts_dir).ok();
}
