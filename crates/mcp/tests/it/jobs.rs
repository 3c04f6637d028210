//! Job tools at the endpoint: a start answers at once with the job, GetJob waits and streams
//! `notifications/progress` only to a client that asked for them, and HTTP outcomes keep their
//! status codes.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use vocabulary::JobState;

use crate::support::{App, spawn, spawn_listening};

/// Every `data:` payload of an event stream, in order.
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

async fn start_backtest(app: &App) -> String {
    let reply = app
        .call(
            "elite-trade",
            "RunStrategyBacktest",
            json!({"strategy":"SampleMaCross","instrument":"ES 12-26","from":"2026-01-02","to":"2026-03-31",
                   "idempotency_key":"bt-key-000001"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let result = &reply.json["result"]["structuredContent"];
    assert_eq!(result["job"]["state"], "running", "{}", reply.text);
    assert_eq!(result["job"]["kind"], "backtest");
    assert!(result["poll"].as_str().unwrap().contains("GetJob"));
    // The summary is what was asked, without the key.
    assert_eq!(result["job"]["summary"]["strategy"], "SampleMaCross");
    assert_eq!(result["job"]["summary"].get("idempotency_key"), None);
    result["job"]["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_waiting_get_job_streams_rising_progress_then_its_response() {
    let app = spawn_listening().await;
    app.relay.connect(app.users.elite);
    let job_id = start_backtest(&app).await;
    let started = app.relay.job_starts.lock().unwrap().clone();
    assert_eq!(started[0].idempotency_key.as_deref(), Some("bt-key-000001"));

    let relay = app.relay.clone();
    let id = app.relay.only_job();
    let driver = tokio::spawn(async move {
        for (progress, state) in [
            (0.2, JobState::Running),
            (0.2, JobState::Running),
            (0.6, JobState::Running),
            (1.0, JobState::Completed),
        ] {
            tokio::time::sleep(Duration::from_millis(150)).await;
            relay.advance(id, progress, state);
        }
    });
    let body = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{
        "name":"GetJob","arguments":{"job_id": job_id, "wait_seconds": 20},
        "_meta":{"progressToken":"tok-1"}}});
    let response = app
        .client
        .post(&app.url)
        .bearer_auth("elite-read")
        .header("mcp-protocol-version", "2025-11-25")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let messages = events(&response.text().await.unwrap());
    driver.await.unwrap();
    let (last, notifications) = messages.split_last().unwrap();
    let progress: Vec<f64> = notifications
        .iter()
        .map(|n| {
            assert_eq!(n["method"], "notifications/progress");
            assert_eq!(n["params"]["progressToken"], "tok-1");
            assert_eq!(n["params"]["total"], 100);
            n["params"]["progress"].as_f64().unwrap()
        })
        .collect();
    assert!(progress.len() >= 2, "{messages:?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert_eq!(last["id"], 7);
    assert_eq!(
        last["result"]["structuredContent"]["job"]["state"],
        "completed"
    );
}

#[tokio::test]
async fn without_a_token_or_a_stream_the_wait_answers_json() {
    let app = spawn_listening().await;
    app.relay.connect(app.users.elite);
    let job_id = start_backtest(&app).await;
    let id = app.relay.only_job();
    let relay = app.relay.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        relay.advance(id, 0.5, JobState::Running);
        tokio::time::sleep(Duration::from_millis(200)).await;
        relay.advance(id, 1.0, JobState::Completed);
    });
    // A progress token, but a client that reads only JSON.
    let body = json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{
        "name":"GetJob","arguments":{"job_id": job_id, "wait_seconds": 20},
        "_meta":{"progressToken":"tok-2"}}});
    let response = app
        .client
        .post(&app.url)
        .bearer_auth("elite-read")
        .header("mcp-protocol-version", "2025-11-25")
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let reply: Value = response.json().await.unwrap();
    assert_eq!(
        reply["result"]["structuredContent"]["job"]["state"], "completed",
        "the wait lasts until the job ends: {reply}"
    );
}

#[tokio::test]
async fn job_errors_keep_their_status_codes_and_bad_ids_are_tool_errors() {
    let app = spawn().await;
    // No Add-On: a start is the product's 408, and nothing is started.
    let reply = app
        .call(
            "elite-trade",
            "CompileNinjaScript",
            json!({"idempotency_key":"cmp-key-000001"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT, "{}", reply.text);
    assert_eq!(reply.json["error"], "addon_disconnected");
    assert!(app.relay.jobs.lock().unwrap().is_empty());

    // A read grant cannot start or cancel a job: 403 with the step-up challenge.
    app.relay.connect(app.users.elite);
    for tool in ["RunStrategyBacktest", "CancelJob"] {
        let reply = app.call("elite-read", tool, json!({})).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{tool}");
        assert!(
            reply
                .header("www-authenticate")
                .unwrap()
                .contains("insufficient_scope")
        );
    }

    for arguments in [
        json!({"job_id":"zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"}),
        json!({"job_id":"0190b6f0-0000-7000-8000-000000000000"}),
    ] {
        let reply = app.call("elite-read", "GetJob", arguments).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json["result"]["isError"], true, "{}", reply.text);
        let text = reply.json["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("ListJobs"), "{text}");
    }
    // Another user's job does not exist for this one.
    let job_id = start_backtest(&app).await;
    let only = app.relay.only_job();
    let (owner, _) = app.relay.jobs.lock().unwrap()[&only].clone();
    assert_eq!(owner, app.users.elite);
    let reply = app
        .call("elite-read", "GetJob", json!({"job_id": job_id}))
        .await;
    assert_eq!(reply.json["result"]["isError"], false);
    let reply = app
        .call(
            "elite-read",
            "GetBacktestResults",
            json!({"job_id": job_id}),
        )
        .await;
    assert_eq!(
        reply.json["result"]["structuredContent"]["results"][0]["job_id"],
        job_id.as_str()
    );
    let reply = app
        .call("elite-read", "ListJobs", json!({"kind":"compile"}))
        .await;
    assert_eq!(reply.json["result"]["structuredContent"]["jobs"], json!([]));
}
