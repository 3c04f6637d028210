//! Jobs in the bridge: a start reaches the Add-On once with its `job_id`, its events are stored
//! once however often they are resent (and only for the job's own user), the first final state
//! wins, cancel goes through the Add-On, and a job nobody finishes fails at its expiry.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;
use vocabulary::{CallError, Job, JobError, JobKind, JobStart, JobState};

use crate::support::{Addon, Server, serve, settings, user_with_key};

fn start(user_id: Uuid, key: Option<&str>) -> JobStart {
    JobStart {
        user_id,
        kind: JobKind::Backtest,
        tool: "RunStrategyBacktest".to_owned(),
        arguments: json!({"strategy": "SampleMaCross", "instrument": "ES 12-26",
            "from": "2026-01-02", "to": "2026-03-31"}),
        summary: json!({"strategy": "SampleMaCross"}),
        idempotency_key: key.map(str::to_owned),
    }
}

fn event(id: &str, kind: &str, data: &Value) -> String {
    json!({"v": 1, "type": "event", "id": id, "kind": kind, "data": data}).to_string()
}

async fn sends_acked(addon: &mut Addon, id: &str, kind: &str, data: &Value) {
    addon.send(&event(id, kind, data)).await;
    assert_eq!(
        addon.next_json().await,
        json!({"v": 1, "type": "event_ack", "id": id})
    );
}

/// Starts a job the Add-On accepts; returns it and the id the Add-On was given.
async fn started(server: &Server, addon: &mut Addon, user_id: Uuid, key: Option<&str>) -> Job {
    let bridge = server.bridge.clone();
    let request = start(user_id, key);
    let pending = tokio::spawn(async move { bridge.start_job(request).await });
    let call = addon.next_call().await;
    assert_eq!(call["tool"], "RunStrategyBacktest");
    let job_id = call["arguments"]["job_id"].as_str().unwrap().to_owned();
    assert_eq!(call["arguments"]["strategy"], "SampleMaCross");
    addon
        .answer(&call, json!({"job_id": job_id, "state": "running"}))
        .await;
    let job = pending.await.unwrap().unwrap();
    assert_eq!(job.job_id.to_string(), job_id);
    assert_eq!(job.state, JobState::Running);
    job
}

async fn job(server: &Server, user_id: Uuid, job_id: Uuid) -> Job {
    server.bridge.job(user_id, job_id).await.unwrap().unwrap()
}

#[tokio::test]
async fn job_events_are_stored_once_for_their_own_user_and_the_first_end_wins() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let (other_user, _, other_key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let first = started(&server, &mut addon, user_id, None).await;
    let id = first.job_id;

    let progress = json!({"job_id": id, "progress": 0.4, "message": "Backtesting (40%)",
        "time": "2026-12-01T10:00:02Z"});
    for _ in 0..2 {
        sends_acked(&mut addon, "ev-p1", "job_progress", &progress).await;
    }
    let after_progress = job(&server, user_id, id).await;
    assert_eq!(after_progress.progress, Some(0.4));
    assert_eq!(after_progress.message.as_deref(), Some("Backtesting (40%)"));
    assert_eq!(after_progress.version, first.version + 1, "stored once");
    // An older tick resent after a newer one never moves progress back.
    let older = json!({"job_id": id, "progress": 0.2, "time": "2026-12-01T10:00:01Z"});
    sends_acked(&mut addon, "ev-p0", "job_progress", &older).await;
    assert_eq!(job(&server, user_id, id).await, after_progress);

    let result = json!({"job_id": id, "state": "completed",
        "result": {"net_profit": 1250.5, "trade_count": 42}, "time": "2026-12-01T10:00:05Z"});
    sends_acked(&mut addon, "ev-r1", "job_result", &result).await;
    let done = job(&server, user_id, id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.progress, Some(1.0));
    assert_eq!(
        done.result,
        Some(json!({"net_profit": 1250.5, "trade_count": 42}))
    );
    // Resent, resent after a reconnect, and a different late ending: all acknowledged, none
    // changes the job.
    sends_acked(&mut addon, "ev-r1", "job_result", &result).await;
    addon.drop_connection().await;
    let mut addon = Addon::connect(&server.url, &key).await;
    sends_acked(&mut addon, "ev-r1", "job_result", &result).await;
    let late = json!({"job_id": id, "state": "failed", "error": "NinjaTrader restarted"});
    sends_acked(&mut addon, "ev-r2", "job_result", &late).await;
    sends_acked(&mut addon, "ev-p2", "job_progress", &progress).await;
    assert_eq!(job(&server, user_id, id).await, done);

    // Another user's Add-On cannot touch it, nor see it.
    let mut other = Addon::connect(&server.url, &other_key).await;
    let mut second = Addon::connect(&server.url, &key).await;
    let running = started(&server, &mut second, user_id, None).await;
    let hijack = json!({"job_id": running.job_id, "state": "failed", "error": "hijacked"});
    sends_acked(&mut other, "ev-x", "job_result", &hijack).await;
    assert_eq!(job(&server, user_id, running.job_id).await, running);
    assert_eq!(
        server.bridge.job(other_user, running.job_id).await,
        Ok(None)
    );
}

#[tokio::test]
async fn malformed_job_events_are_invalid() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (_, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let id = Uuid::now_v7();
    for (kind, data) in [
        ("job_progress", json!({"job_id": id, "progress": 1.5})),
        ("job_progress", json!({"job_id": id, "progress": -0.1})),
        ("job_progress", json!({"job_id": "BT1", "progress": 0.5})),
        ("job_result", json!({"job_id": id, "state": "failed"})),
        ("job_result", json!({"job_id": id, "state": "done"})),
        (
            "job_result",
            json!({"job_id": id, "state": "completed", "extra": 1}),
        ),
    ] {
        addon.send(&event("ev-bad", kind, &data)).await;
        let reply = addon.next_json().await;
        assert_eq!(reply["type"], "error", "{kind} {data}: {reply}");
        assert_eq!(reply["code"], "invalid_event", "{kind} {data}: {reply}");
    }
}

#[tokio::test]
async fn a_start_reaches_the_addon_once_per_key_and_leaves_nothing_when_it_cannot() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;

    // No Add-On: no job is left behind.
    assert_eq!(
        server
            .bridge
            .start_job(start(user_id, Some("bt-key-1")))
            .await,
        Err(JobError::Call(CallError::NotConnected))
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM addon_jobs")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 0);

    // With a key, a repeat is the first job and never reaches the Add-On again.
    let mut addon = Addon::connect(&server.url, &key).await;
    let first = started(&server, &mut addon, user_id, Some("bt-key-1")).await;
    let again = server
        .bridge
        .start_job(start(user_id, Some("bt-key-1")))
        .await
        .unwrap();
    assert_eq!(again.job_id, first.job_id);
    let mut compile = start(user_id, Some("bt-key-1"));
    compile.tool = "CompileNinjaScript".to_owned();
    compile.kind = JobKind::Compile;
    assert!(matches!(
        server.bridge.start_job(compile).await,
        Err(JobError::Refused(message)) if message.contains("RunStrategyBacktest")
    ));

    // The Add-On refuses a start: the job failed with its reason.
    let bridge = server.bridge.clone();
    let pending = tokio::spawn(async move { bridge.start_job(start(user_id, None)).await });
    let call = addon.next_call().await;
    let refusal = json!({"v": 1, "type": "result", "id": call["id"], "ok": false,
        "error": "Strategy 'SampleMaCross' is not compiled"});
    addon.send(&refusal.to_string()).await;
    let refused = pending.await.unwrap().unwrap();
    assert_eq!(refused.state, JobState::Failed);
    assert_eq!(
        refused.error.as_deref(),
        Some("Strategy 'SampleMaCross' is not compiled")
    );

    // An Add-On that runs the work inside the call answers the result itself: completed.
    let bridge = server.bridge.clone();
    let pending = tokio::spawn(async move { bridge.start_job(start(user_id, None)).await });
    let call = addon.next_call().await;
    addon
        .answer(&call, json!({"trade_count": 42, "net_profit": 1250.5}))
        .await;
    let finished = pending.await.unwrap().unwrap();
    assert_eq!(finished.state, JobState::Completed);
    assert_eq!(
        finished.result,
        Some(json!({"trade_count": 42, "net_profit": 1250.5}))
    );

    // Open jobs are capped per account.
    for _ in 1..8 {
        started(&server, &mut addon, user_id, None).await;
    }
    assert!(matches!(
        server.bridge.start_job(start(user_id, None)).await,
        Err(JobError::Refused(message)) if message.contains("CancelJob")
    ));
}

#[tokio::test]
async fn cancel_goes_through_the_addon_and_an_unfinished_job_fails_at_its_expiry() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, _, key) = user_with_key(&db).await;
    let mut addon = Addon::connect(&server.url, &key).await;
    let job = started(&server, &mut addon, user_id, None).await;

    let bridge = server.bridge.clone();
    let id = job.job_id;
    let cancelling = tokio::spawn(async move { bridge.cancel_job(user_id, id).await });
    let call = addon.next_call().await;
    assert_eq!(call["tool"], "CancelJob");
    assert_eq!(call["arguments"], json!({"job_id": id}));
    addon
        .answer(&call, json!({"job_id": id, "state": "cancelling"}))
        .await;
    assert_eq!(
        cancelling.await.unwrap().unwrap().state,
        JobState::Cancelling
    );
    // A waiter hears of the end as soon as it is stored.
    let bridge = server.bridge.clone();
    let version = job.version + 1;
    let waiting = tokio::spawn(async move {
        bridge
            .wait_job(
                user_id,
                id,
                version,
                Instant::now() + Duration::from_secs(10),
            )
            .await
    });
    sends_acked(
        &mut addon,
        "ev-c",
        "job_result",
        &json!({"job_id": id, "state": "cancelled"}),
    )
    .await;
    let ended = waiting.await.unwrap().unwrap().unwrap();
    assert_eq!(ended.state, JobState::Cancelled);
    // Cancelling a finished job changes nothing and asks nobody.
    assert_eq!(server.bridge.cancel_job(user_id, id).await.unwrap(), ended);

    // The Add-On no longer runs a job (NinjaTrader restarted): cancelling ends it at once.
    let orphan = started(&server, &mut addon, user_id, None).await;
    let bridge = server.bridge.clone();
    let orphan_id = orphan.job_id;
    let cancelling = tokio::spawn(async move { bridge.cancel_job(user_id, orphan_id).await });
    let call = addon.next_call().await;
    let refusal = json!({"v": 1, "type": "result", "id": call["id"], "ok": false,
        "error": format!("no running job {orphan_id}")});
    addon.send(&refusal.to_string()).await;
    let ended = cancelling.await.unwrap().unwrap();
    assert_eq!(ended.state, JobState::Failed);
    assert!(ended.error.unwrap().contains("not running this job"));

    // A job whose Add-On never reports a result fails once its time is up.
    let lost = started(&server, &mut addon, user_id, None).await;
    sqlx::query("UPDATE addon_jobs SET expires_at = now() - interval '1 second' WHERE job_id = $1")
        .bind(lost.job_id)
        .execute(&db)
        .await
        .unwrap();
    let failed = server
        .bridge
        .wait_job(
            user_id,
            lost.job_id,
            lost.version,
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("no result in time"),
        "{failed:?}"
    );
}
