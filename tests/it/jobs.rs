//! Jobs end to end: a real MCP client (rmcp) starts a backtest through `crosstrade dev
//! --with-addon-sim` and gets its answer at once, follows it with progress notifications, reads
//! the results and cancels another; and a job started on one replica whose starting replica is
//! killed is finished and read on another.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, ClientConfig, NumberOrString, ProgressNotificationParam, ProgressToken,
    ProtocolVersion, RequestParamsMeta,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use testkit::oauth::{Endpoint, Flow};
use testkit::wait::eventually;

use crate::addon_path::{addon_connected, call, sim_options, structured, trade_token};
use crate::support::{
    DevWithAddonSim, ServerProcess, dev_with_addon_sim, server_with_user, tools_call,
};

/// A client that records the progress values it is sent.
#[derive(Clone, Default)]
struct ProgressLog(Arc<Mutex<Vec<f64>>>);

impl ClientHandler for ProgressLog {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::default().with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.0.lock().unwrap().push(params.progress);
    }
}

async fn get_job_waiting(
    client: &RunningService<RoleClient, ProgressLog>,
    job_id: &str,
    token: &str,
) -> Value {
    let mut params = CallToolRequestParams::new("GetJob").with_arguments(
        json!({"job_id": job_id, "wait_seconds": 30})
            .as_object()
            .unwrap()
            .clone(),
    );
    params.set_progress_token(ProgressToken(NumberOrString::String(token.into())));
    structured(&client.call_tool(params).await.unwrap())
}

#[tokio::test]
async fn a_backtest_starts_at_once_reports_progress_and_keeps_its_results() {
    let scratch = testkit::scratch_dir("jobs-path");
    let data_dir = scratch.join("postgres").display().to_string();
    let DevWithAddonSim {
        server,
        public_url,
        elite_password,
    } = dev_with_addon_sim(&data_dir).await;
    let endpoint = Endpoint::new(&public_url);
    let mut flow =
        Flow::new_with_password(&endpoint, "elite@demo.crosstrade.test", &elite_password).await;
    let tokens = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let access = tokens["access_token"].as_str().unwrap();
    let log = ProgressLog::default();
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(endpoint.resource()).auth_header(access),
    );
    let client = log.clone().serve(transport).await.unwrap();
    eventually(Duration::from_secs(5), async || {
        client
            .list_all_tools()
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "RunStrategyBacktest")
    })
    .await;

    // The backtest takes the simulator 3 s; the tool answers long before.
    let args = json!({"strategy": "SampleMaCross", "instrument": "ES 12-26",
        "from": "2026-01-02", "to": "2026-03-31", "idempotency_key": "e2e-backtest-1"});
    let started = Instant::now();
    let first = call(&client, "RunStrategyBacktest", args.clone()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    let job_id = first["job"]["job_id"].as_str().unwrap().to_owned();
    assert!(
        matches!(first["job"]["state"].as_str(), Some("starting" | "running")),
        "{first}"
    );
    assert!(first["poll"].as_str().unwrap().contains("GetJob"));
    // A retry with the same key is the same job, not a second backtest.
    let again = call(&client, "RunStrategyBacktest", args).await;
    assert_eq!(again["job"]["job_id"], job_id.as_str());

    let done = get_job_waiting(&client, &job_id, "bt-progress").await;
    assert_eq!(done["job"]["state"], "completed", "{done}");
    let progress = log.0.lock().unwrap().clone();
    assert!(progress.len() >= 2, "progress notifications: {progress:?}");
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "progress must rise: {progress:?}"
    );

    let results = call(
        &client,
        "GetBacktestResults",
        json!({"job_id": job_id, "include_trades": false}),
    )
    .await;
    let result = &results["results"][0];
    assert_eq!(result["state"], "completed");
    assert_eq!(result["request"]["strategy"], "SampleMaCross");
    assert_eq!(result["result"]["net_profit"], 1250.5, "{results}");
    let listed = call(&client, "ListJobs", json!({"kind": "backtest"})).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");

    // A compile job reports the compiler's verdict as its result.
    let compile = call(&client, "CompileNinjaScript", json!({})).await;
    let compile_id = compile["job"]["job_id"].as_str().unwrap().to_owned();
    let compiled = get_job_waiting(&client, &compile_id, "compile-progress").await;
    assert_eq!(compiled["job"]["state"], "completed", "{compiled}");
    assert_eq!(compiled["job"]["result"]["success"], true, "{compiled}");

    // Cancelling a running backtest: cancelling, then cancelled once NinjaTrader stopped it.
    let second = call(
        &client,
        "RunStrategyBacktest",
        json!({"strategy": "SampleMaCross", "instrument": "NQ 12-26",
            "from": "2026-01-02", "to": "2026-03-31"}),
    )
    .await;
    let second_id = second["job"]["job_id"].as_str().unwrap().to_owned();
    let cancelling = call(&client, "CancelJob", json!({"job_id": second_id})).await;
    assert!(
        matches!(
            cancelling["job"]["state"].as_str(),
            Some("cancelling" | "cancelled")
        ),
        "{cancelling}"
    );
    let cancelled = get_job_waiting(&client, &second_id, "cancel-progress").await;
    assert_eq!(cancelled["job"]["state"], "cancelled", "{cancelled}");
    let active = call(&client, "ListJobs", json!({"state": "active"})).await;
    assert_eq!(active["jobs"], json!([]), "{active}");

    client.cancel().await.unwrap();
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&scratch).ok();
}

#[tokio::test]
async fn a_job_outlives_its_client_and_the_replica_that_started_it() {
    let email = "jobs-kill@example.com";
    let (db, replica_a, on_a) = server_with_user(email).await;
    let replica_b = ServerProcess::start("serve", &[("DATABASE_URL", db.url().as_str())]);
    let on_b = Endpoint::new(&replica_b.url(""));
    let (_, access_a) = trade_token(&on_a, email).await;
    let (_, access_b) = trade_token(&on_b, email).await;

    // The Add-On is on B; its backtests take 4 s.
    let scripts = testkit::scratch_dir("jobs-kill-scripts");
    let mut options = sim_options(&db, replica_b.addr, email, &[], &scripts);
    options.backtest = Duration::from_secs(4);
    let sim = tokio::spawn(async move { addon_sim::run(&options).await });
    assert!(
        addon_connected(&on_a, &access_a).await,
        "A sees the Add-On on B"
    );

    // Started through A; the client reads the answer and goes away; then A dies.
    let args = json!({"strategy": "SampleMaCross", "instrument": "ES 12-26",
        "from": "2026-01-02", "to": "2026-03-31"});
    let reply = tools_call(&on_a, &access_a, "RunStrategyBacktest", args).await;
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    let job = &body["result"]["structuredContent"]["job"];
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    crate::support::signal(replica_a.pid(), "KILL");

    // B has the finished job: the Add-On's events were stored where they arrived.
    let mut last = Value::Null;
    eventually(Duration::from_secs(30), async || {
        let reply = tools_call(
            &on_b,
            &access_b,
            "GetJob",
            json!({"job_id": job_id, "wait_seconds": 10}),
        )
        .await;
        last = reply.json().await.unwrap();
        last["result"]["structuredContent"]["job"]["state"] == "completed"
    })
    .await;
    assert_eq!(
        last["result"]["structuredContent"]["job"]["state"], "completed",
        "{last}"
    );
    let reply = tools_call(
        &on_b,
        &access_b,
        "GetBacktestResults",
        json!({"job_id": job_id}),
    )
    .await;
    let results: Value = reply.json().await.unwrap();
    assert_eq!(
        results["result"]["structuredContent"]["results"][0]["result"]["net_profit"], 1250.5,
        "{results}"
    );
    sim.abort();
    drop(replica_a);
    assert!(replica_b.terminate().success());
    std::fs::remove_dir_all(&scripts).ok();
}

#[tokio::test]
async fn a_result_finished_while_the_addon_was_away_is_resent_to_another_replica() {
    let email = "jobs-move@example.com";
    let (db, replica_a, on_a) = server_with_user(email).await;
    let replica_b = ServerProcess::start("serve", &[("DATABASE_URL", db.url().as_str())]);
    let on_b = Endpoint::new(&replica_b.url(""));
    let (_, access_a) = trade_token(&on_a, email).await;
    let (_, access_b) = trade_token(&on_b, email).await;

    // One simulated NinjaTrader: connected to A first, to B once A is gone.
    let scripts = testkit::scratch_dir("jobs-move-scripts");
    let mut options = sim_options(&db, replica_a.addr, email, &[], &scripts);
    options.backtest = Duration::from_secs(3);
    let sim_state = Arc::new(Mutex::new(
        addon_sim::Sim::new(scripts.clone(), options.backtest).unwrap(),
    ));
    let mut on_replica_b = options.clone();
    on_replica_b.url = format!("ws://{}/v1/addon/ws", replica_b.addr);
    let sim = tokio::spawn({
        let sim_state = Arc::clone(&sim_state);
        async move {
            let _ = addon_sim::run_with(&options, Arc::clone(&sim_state)).await;
            loop {
                let _ = addon_sim::run_with(&on_replica_b, Arc::clone(&sim_state)).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    assert!(addon_connected(&on_a, &access_a).await);

    let args = json!({"strategy": "SampleMaCross", "instrument": "ES 12-26",
        "from": "2026-01-02", "to": "2026-03-31"});
    let reply = tools_call(&on_a, &access_a, "RunStrategyBacktest", args).await;
    let body: Value = reply.json().await.unwrap();
    let job_id = body["result"]["structuredContent"]["job"]["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The replica holding the socket dies mid-backtest; the result comes while the Add-On is
    // reconnecting, and is delivered to B after its welcome.
    crate::support::signal(replica_a.pid(), "KILL");
    let mut last = Value::Null;
    eventually(Duration::from_secs(40), async || {
        let reply = tools_call(
            &on_b,
            &access_b,
            "GetJob",
            json!({"job_id": job_id, "wait_seconds": 10}),
        )
        .await;
        last = reply.json().await.unwrap_or(Value::Null);
        last["result"]["structuredContent"]["job"]["state"] == "completed"
    })
    .await;
    let job = &last["result"]["structuredContent"]["job"];
    assert_eq!(job["state"], "completed", "{last}");
    assert_eq!(job["result"]["net_profit"], 1250.5, "{last}");
    sim.abort();
    drop(replica_a);
    assert!(replica_b.terminate().success());
    std::fs::remove_dir_all(&scripts).ok();
}
