//! Webhook signals and trade-copier actions as the Add-On reports them: a fixed backlog sent on
//! every welcome (stable ids, so a reconnect exercises the backend's de-duplication), and the
//! copier's actions for a leader fill.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

/// The copier's leader account; its followers are [`FOLLOWER`] (copied) and [`ABSENT`]
/// (never connected in the simulation, so always skipped).
pub const LEADER: &str = "Sim101";
pub const FOLLOWER: &str = "Sim102";
pub const ABSENT: &str = "Sim103";

fn at(start: DateTime<Utc>, minutes_before: i64, millis: i64) -> String {
    (start - Duration::minutes(minutes_before) + Duration::milliseconds(millis))
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn event(kind: &str, id: &str, data: Value) -> Value {
    let mut frame = json!({"v": 1, "type": "event", "id": format!("ev-{id}"), "kind": kind});
    frame["data"] = data;
    frame
}

/// What the Add-On received before this session: two alerts that placed orders, one the
/// position limit rejected and a duplicate it ignored, and what the copier did for the first
/// fill. Times are fixed relative to `start` (when the simulation began).
pub fn backlog(start: DateTime<Utc>) -> Vec<Value> {
    let signal = |id: &str,
                  minutes: i64,
                  alert: &str,
                  instrument: &str,
                  action: &str,
                  quantity: u32,
                  summary: &str,
                  outcome: &str,
                  orders: Value,
                  reason: Value,
                  latency: u32| {
        event(
            "webhook_signal",
            id,
            json!({
                "signal_id": id, "received_at": at(start, minutes, 870), "source": "TradingView",
                "strategy": if instrument.starts_with("NQ") { "NQ Momentum" } else { "ES Breakout v2" },
                "alert": alert, "account": LEADER, "instrument": instrument, "action": action,
                "quantity": quantity, "order_type": "Market", "payload_summary": summary,
                "outcome": outcome, "order_ids": orders, "reason": reason, "latency_ms": latency,
            }),
        )
    };
    let mut events = vec![
        signal(
            "wh-boot-1",
            50,
            "Long entry",
            "ES 12-26",
            "Buy",
            1,
            "action=buy qty=1 ticker=ES1! price=4998.50",
            "order_placed",
            json!(["WH-O1"]),
            Value::Null,
            112,
        ),
        signal(
            "wh-boot-2",
            40,
            "Long entry",
            "ES 12-26",
            "Buy",
            1,
            "action=buy qty=1 ticker=ES1! price=4998.75",
            "ignored",
            json!([]),
            json!("duplicate alert within 5 s"),
            3,
        ),
        signal(
            "wh-boot-3",
            30,
            "Long entry",
            "NQ 12-26",
            "Buy",
            3,
            "action=buy qty=3 ticker=NQ1! price=17990.00",
            "rejected",
            json!([]),
            json!("Position limit reached: max 2 contracts"),
            41,
        ),
        signal(
            "wh-boot-4",
            20,
            "Exit long",
            "ES 12-26",
            "Sell",
            1,
            "action=sell qty=1 ticker=ES1! price=5002.25",
            "order_placed",
            json!(["WH-O2"]),
            Value::Null,
            98,
        ),
    ];
    let leader_fill = Fill {
        execution_id: "WH-X1",
        order_id: "WH-O1",
        instrument: "ES 12-26",
        action: "Buy",
        quantity: 1,
        price: 4998.5,
    };
    let time = at(start, 50, 1280);
    events.push(placed("cp-boot-1", &time, &leader_fill, "CP-O1"));
    events.push(skipped("cp-boot-2", &time, &leader_fill));
    events
}

/// A leader fill the copier acts on.
#[derive(Debug, Clone, Copy)]
pub struct Fill<'a> {
    pub execution_id: &'a str,
    pub order_id: &'a str,
    pub instrument: &'a str,
    pub action: &'a str,
    pub quantity: i64,
    pub price: f64,
}

fn action(id: &str, time: &str, fill: &Fill<'_>, follower: &str, outcome: Value) -> Value {
    let mut data = json!({
        "action_id": id, "time": time, "copier": "Main", "leader_account": LEADER,
        "leader_execution_id": fill.execution_id, "leader_order_id": fill.order_id,
        "instrument": fill.instrument, "leader_action": fill.action,
        "leader_quantity": fill.quantity, "leader_price": fill.price,
        "follower_account": follower, "follower_instrument": fill.instrument, "ratio": 1.0,
    });
    if let (Some(data), Value::Object(outcome)) = (data.as_object_mut(), outcome) {
        data.extend(outcome);
    }
    event("copier_action", id, data)
}

/// The follower's order was placed (and, in the simulation, filled at once).
pub fn placed(id: &str, time: &str, fill: &Fill<'_>, follower_order: &str) -> Value {
    action(
        id,
        time,
        fill,
        FOLLOWER,
        json!({"outcome": "order_placed", "follower_order_id": follower_order,
               "follower_quantity": fill.quantity, "reason": null}),
    )
}

/// The absent follower was skipped.
pub fn skipped(id: &str, time: &str, fill: &Fill<'_>) -> Value {
    action(
        id,
        time,
        fill,
        ABSENT,
        json!({"outcome": "skipped", "follower_order_id": null, "follower_quantity": null,
               "reason": format!("follower account {ABSENT} is not connected")}),
    )
}
