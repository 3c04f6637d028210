//! The Add-On misbehaving under a stream of calls: it drops its socket, stalls, answers late,
//! closes and reconnects at random. Every call still ends in exactly one outcome (its own result,
//! or a 408-class error), no answer reaches the wrong caller, no idempotent trade reaches the
//! Add-On twice, and the bridge holds no call afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use addon_bridge::{AddonBridge, CallError, CallOutcome, CallRequest};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{hello, open, serve, settings, user_with_key};

const CALLERS: usize = 16;
const CALLS_PER_CALLER: usize = 25;
const DEADLINE: Duration = Duration::from_millis(400);

/// What the Add-On did, for the figures and the checks.
#[derive(Debug, Default)]
struct AddonLog {
    /// Markers of the `PlaceOrder` frames that reached the Add-On.
    orders: Vec<String>,
    calls: usize,
    drops: usize,
    closes: usize,
    stalls: usize,
    late: usize,
    connections: usize,
}

/// xorshift64: reproducible chaos without a dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Connects again and again until `stop`; on each call frame rolls what to do.
async fn chaotic_addon(
    url: String,
    key: String,
    log: Arc<Mutex<AddonLog>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    while !*stop.borrow() {
        let Ok(ws) = open(&url, Some(&format!("Bearer {key}"))).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        log.lock().unwrap().connections += 1;
        let (mut sink, mut stream) = ws.split();
        // One writer per connection, so a late answer does not hold up the others.
        let (out, mut outbox) = tokio::sync::mpsc::unbounded_channel::<Message>();
        let writer = tokio::spawn(async move {
            while let Some(message) = outbox.recv().await {
                let closing = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || closing {
                    return;
                }
            }
        });
        let _ = out.send(Message::text(hello("1.13.0")));
        loop {
            let message = tokio::select! {
                message = stream.next() => message,
                _ = stop.changed() => return,
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            match frame["type"].as_str() {
                Some("ping") => {
                    let _ = out.send(Message::text(r#"{"v":1,"type":"pong"}"#));
                    continue;
                }
                Some("call") => {}
                _ => continue,
            }
            let arguments = frame["arguments"].clone();
            let seen = {
                let mut log = log.lock().unwrap();
                log.calls += 1;
                if frame["tool"] == "PlaceOrder" {
                    log.orders
                        .push(arguments["marker"].as_str().unwrap().to_owned());
                }
                log.calls
            };
            let answer = Message::text(
                json!({"v": 1, "type": "result", "id": frame["id"], "ok": true, "content": {"echo": arguments}})
                    .to_string(),
            );
            // Every kind of fault happens early at least once; the rest is chance.
            let roll = match seen {
                10 => 0,
                25 => 2,
                40 => 4,
                55 => 10,
                _ => next(&mut seed) % 100,
            };
            match roll {
                // Gone without a close handshake, mid-call.
                0..2 => {
                    log.lock().unwrap().drops += 1;
                    writer.abort();
                    break;
                }
                // A clean close, mid-call.
                2..4 => {
                    log.lock().unwrap().closes += 1;
                    let _ = out.send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "restarting".into(),
                    })));
                    break;
                }
                // Never answered.
                4..10 => log.lock().unwrap().stalls += 1,
                // Answered late, often after the caller gave up.
                10..20 => {
                    log.lock().unwrap().late += 1;
                    let delay = Duration::from_millis(100 + next(&mut seed) % 500);
                    let out = out.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = out.send(answer);
                    });
                }
                _ => {
                    let _ = out.send(answer);
                }
            }
        }
        drop(out);
        let _ = writer.await;
        // Reconnect shortly, as the Add-On does.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[derive(Debug, Default)]
struct Outcomes {
    ok: usize,
    not_connected: usize,
    disconnected: usize,
    deadline: usize,
    retried_trades: usize,
}

async fn call(bridge: &AddonBridge, request: CallRequest) -> Result<CallOutcome, CallError> {
    // Every call ends by its deadline plus a bounded margin: never a hang.
    tokio::time::timeout(DEADLINE + Duration::from_secs(2), bridge.call(request))
        .await
        .expect("a call outlived its deadline")
}

fn count(outcomes: &mut Outcomes, result: &Result<CallOutcome, CallError>, marker: &str) {
    match result {
        Ok(CallOutcome::Ok(content)) => {
            assert_eq!(
                content["echo"]["marker"], marker,
                "an answer reached the wrong caller"
            );
            outcomes.ok += 1;
        }
        Ok(other) => panic!("unexpected outcome {other:?}"),
        Err(CallError::NotConnected) => outcomes.not_connected += 1,
        Err(CallError::Disconnected) => outcomes.disconnected += 1,
        Err(CallError::DeadlineExceeded) => outcomes.deadline += 1,
        Err(CallError::Unavailable) => panic!("the relay became unavailable"),
        Err(CallError::TooManyCalls) => panic!("the per-account cap refused a call"),
    }
}

#[tokio::test]
async fn a_flapping_addon_under_load_loses_no_call_and_places_no_trade_twice() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let mut config = settings();
    config.heartbeat_interval = Duration::from_millis(500);
    let server = serve(&db, config).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let log = Arc::new(Mutex::new(AddonLog::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let addon = tokio::spawn(chaotic_addon(
        server.url.clone(),
        key,
        Arc::clone(&log),
        stop_rx,
    ));

    let started = Instant::now();
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let bridge = server.bridge.clone();
        callers.push(tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut trades: HashMap<String, Vec<Result<CallOutcome, CallError>>> = HashMap::new();
            for i in 0..CALLS_PER_CALLER {
                let marker = format!("{caller}-{i}");
                if i % 4 == 3 {
                    let request = || CallRequest {
                        user_id,
                        tool: "PlaceOrder".to_owned(),
                        arguments: json!({"account": "Sim101", "instrument": "ES 12-26", "action": "Buy",
                            "order_type": "Market", "quantity": 1, "marker": marker}),
                        deadline: DEADLINE,
                        idempotency_key: Some(format!("trade-{marker}")),
                    };
                    let first = call(&bridge, request()).await;
                    count(&mut outcomes, &first, &marker);
                    let mut attempts = vec![first];
                    // A client retries a failed trade with the same key.
                    if attempts[0].is_err() {
                        outcomes.retried_trades += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let retry = call(&bridge, request()).await;
                        count(&mut outcomes, &retry, &marker);
                        attempts.push(retry);
                    }
                    trades.insert(marker, attempts);
                } else {
                    let result = call(
                        &bridge,
                        CallRequest {
                            user_id,
                            tool: "GetAccounts".to_owned(),
                            arguments: json!({"marker": marker}),
                            deadline: DEADLINE,
                            idempotency_key: None,
                        },
                    )
                    .await;
                    count(&mut outcomes, &result, &marker);
                    // A client backs off briefly while the Add-On is away.
                    if result == Err(CallError::NotConnected) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (outcomes, trades)
        }));
    }
    let mut total = Outcomes::default();
    let mut trades = HashMap::new();
    for caller in callers {
        let (outcomes, placed) = caller.await.unwrap();
        total.ok += outcomes.ok;
        total.not_connected += outcomes.not_connected;
        total.disconnected += outcomes.disconnected;
        total.deadline += outcomes.deadline;
        total.retried_trades += outcomes.retried_trades;
        trades.extend(placed);
    }
    let elapsed = started.elapsed();
    stop_tx.send(true).unwrap();
    addon.await.unwrap();

    let log = std::mem::take(&mut *log.lock().unwrap());
    let calls = CALLERS * CALLS_PER_CALLER + total.retried_trades;
    assert_eq!(
        total.ok + total.not_connected + total.disconnected + total.deadline,
        calls,
        "every call has exactly one outcome"
    );
    // The chaos happened, and so did successes.
    assert!(
        log.drops > 0 && log.closes > 0 && log.stalls > 0 && log.late > 0,
        "{log:?}"
    );
    assert!(total.ok >= 50, "{total:?}");
    assert!(total.disconnected > 0 && total.deadline > 0, "{total:?}");

    // Each trade reached the Add-On at most once, whatever the retries.
    let mut reached: HashMap<&str, usize> = HashMap::new();
    for marker in &log.orders {
        *reached.entry(marker).or_default() += 1;
    }
    let twice: Vec<_> = reached.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "trades placed twice: {twice:?}");
    // A trade that succeeded did reach the Add-On; a retry after success is impossible.
    for (marker, attempts) in &trades {
        if attempts.iter().any(Result::is_ok) {
            assert_eq!(
                reached.get(marker.as_str()),
                Some(&1),
                "{marker}: {attempts:?}"
            );
        }
    }

    // Nothing is held once the storm is over.
    let idle = testkit::wait::eventually(Duration::from_secs(3), async || {
        server.bridge.live_calls() == 0
    })
    .await;
    assert!(idle, "{} calls still held", server.bridge.live_calls());

    {
        eprintln!(
            "add-on faults: {calls} calls from {CALLERS} callers in {elapsed:?}: {} answered, {} not connected, \
             {} disconnected, {} past deadline; {} trade retries; add-on saw {} calls over {} connections \
             ({} drops, {} closes, {} stalls, {} late answers); {} trades reached it, none twice; \
             live calls afterwards: 0",
            total.ok,
            total.not_connected,
            total.disconnected,
            total.deadline,
            total.retried_trades,
            log.calls,
            log.connections,
            log.drops,
            log.closes,
            log.stalls,
            log.late,
            log.orders.len(),
        );
    }
}
