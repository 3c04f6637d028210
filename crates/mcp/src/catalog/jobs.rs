//! Jobs: the long tools (RunStrategyBacktest, CompileNinjaScript, DeployStrategy) answer at
//! once with a job the server stores; GetJob, ListJobs, GetBacktestResults and CancelJob follow
//! it. The descriptions teach the model to poll, or to wait with `wait_seconds`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;
use vocabulary::{Job, JobFilter, JobKind};

use super::{Args, Effect, IdempotencyKey, Route, ToolDef, check_as, read, schema_of, trade};
use crate::auth::Scope;

/// What a job tool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRoute {
    /// Starts a job of this kind in NinjaTrader 8 (needs the Add-On).
    Start(JobKind),
    /// One job, optionally waiting for news.
    Get,
    /// The account's jobs.
    List,
    /// Asks the Add-On to cancel a job (needs the Add-On).
    Cancel,
    /// Backtest jobs with their statistics.
    BacktestResults,
}

/// The longest a GetJob call waits, under the 60-second request timeout common in clients.
pub const MAX_WAIT_SECONDS: u32 = 50;
/// How the start tools tell the model to follow a job.
pub const POLL_HINT: &str = "Call GetJob with this job_id every 10-30 seconds, or with \
    wait_seconds (up to 50) to wait for it and receive progress, until its state is completed, \
    failed or cancelled.";

/// A start tool: trade scope, answered at once with the job.
pub(super) fn start<A: Args>(
    kind: JobKind,
    name: &'static str,
    title: &'static str,
    description: &'static str,
    idempotent: bool,
) -> ToolDef {
    ToolDef {
        name,
        title,
        description,
        scope: Scope::Trade,
        route: Route::Job(JobRoute::Start(kind)),
        effect: Effect::trade(idempotent),
        input_schema: schema_of::<A>(),
        check: check_as::<A>,
        output_schema: Some(schema_of::<StartOutput>()),
        needs_feature: None,
        confirm: None,
    }
}

pub(super) fn definitions() -> Vec<ToolDef> {
    let mut cancel = trade::<CancelJobArgs>(
        "CancelJob",
        "Cancel a job",
        "Cancel a running backtest, compile or deployment job by its `job_id`. The job moves \
         to `cancelling` and then to `cancelled` once NinjaTrader 8 has stopped it (or to the \
         final state it reached first); follow it with GetJob. A finished job is returned as \
         it is. Closing a request or disconnecting never cancels a job: only this tool does.",
        super::DEFAULT_DEADLINE,
        true,
    );
    cancel.route = Route::Job(JobRoute::Cancel);
    cancel.output_schema = Some(schema_of::<JobOutput>());
    vec![
        read::<GetJobArgs, JobOutput>(
            "GetJob",
            "Follow a job",
            "Read a backtest, compile or deployment job by the `job_id` RunStrategyBacktest, \
             CompileNinjaScript or DeployStrategy returned: its state (starting, running, \
             cancelling, completed, failed, cancelled), progress from 0 to 1 with NinjaTrader's \
             message, and once completed its result (or the error). With `wait_seconds` (up \
             to 50) it waits until the job finishes or the time is up, sending progress \
             notifications meanwhile when the request carries a progressToken; call it again \
             while the job is still running. Jobs keep running when you disconnect. Works while \
             NinjaTrader 8 is closed.",
            Route::Job(JobRoute::Get),
        ),
        read::<ListJobsArgs, JobsOutput>(
            "ListJobs",
            "List jobs",
            "List this account's backtest, compile and deployment jobs, newest first, with \
             state and progress: filter by `kind`, by `state` (active, finished or all) and by \
             start time. Finished jobs are kept 30 days. Works while NinjaTrader 8 is closed.",
            Route::Job(JobRoute::List),
        ),
        cancel,
    ]
}

/// The arguments the Add-On sees in the job's summary: what was asked, never file contents.
pub fn summary_of(arguments: &Value) -> Value {
    let mut summary = Map::new();
    if let Some(object) = arguments.as_object() {
        for (name, value) in object {
            if matches!(name.as_str(), "idempotency_key" | "content") {
                continue;
            }
            summary.insert(name.clone(), value.clone());
        }
    }
    Value::Object(summary)
}

/// The job list a [`ListJobsArgs`] asks for.
pub fn filter_of(arguments: Value) -> Result<JobFilter, String> {
    let args: ListJobsArgs =
        serde_json::from_value(arguments).map_err(|err| format!("invalid arguments: {err}"))?;
    Ok(JobFilter {
        kind: args.kind.map(JobKindArg::kind),
        open: match args.state.unwrap_or(StateFilter::All) {
            StateFilter::Active => Some(true),
            StateFilter::Finished => Some(false),
            StateFilter::All => None,
        },
        since: super::rfc3339("since", args.since.as_deref())?,
        limit: args.limit.unwrap_or(20),
    })
}

/// GetJob's job and how long to wait for it; a malformed id is told back as a tool error.
pub fn get_args(arguments: Value) -> Result<(Uuid, Duration), String> {
    let args: GetJobArgs =
        serde_json::from_value(arguments).map_err(|err| format!("invalid arguments: {err}"))?;
    let wait = args.wait_seconds.unwrap_or(0).min(MAX_WAIT_SECONDS);
    Ok((
        parse_job_id(&args.job_id)?,
        Duration::from_secs(u64::from(wait)),
    ))
}

/// CancelJob's job.
pub fn cancel_args(arguments: Value) -> Result<Uuid, String> {
    let args: CancelJobArgs =
        serde_json::from_value(arguments).map_err(|err| format!("invalid arguments: {err}"))?;
    // Cancelling twice cancels once: the key needs no record.
    drop(args.idempotency_key);
    parse_job_id(&args.job_id)
}

/// GetBacktestResults' job (if one), whether to include trades, and how many jobs otherwise.
pub fn backtest_args(arguments: Value) -> Result<(Option<Uuid>, bool, u32), String> {
    let args: super::BacktestQuery =
        serde_json::from_value(arguments).map_err(|err| format!("invalid arguments: {err}"))?;
    let job_id = args.job_id.as_deref().map(parse_job_id).transpose()?;
    Ok((
        job_id,
        args.include_trades.unwrap_or(false),
        args.limit.unwrap_or(10),
    ))
}

fn parse_job_id(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|_| {
        format!("job_id {text:?} is not a job id: use the job_id a start tool returned or ListJobs")
    })
}

/// A job as GetJob shows it.
pub fn job_json(job: &Job) -> Value {
    serde_json::to_value(job).unwrap_or(Value::Null)
}

/// GetBacktestResults' entry for a backtest job: what was asked, where it stands, and its
/// statistics; the trades only when asked for.
pub fn backtest_result(job: &Job, include_trades: bool) -> Value {
    let mut result = job.result.clone().unwrap_or(Value::Null);
    if !include_trades && let Some(object) = result.as_object_mut() {
        object.remove("trades");
    }
    serde_json::json!({
        "job_id": job.job_id,
        "state": job.state,
        "progress": job.progress,
        "request": job.summary,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "result": result,
        "error": job.error,
    })
}

// ---- arguments ------------------------------------------------------------------------------

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetJobArgs {
    /// The job's id, from RunStrategyBacktest, CompileNinjaScript, DeployStrategy or ListJobs.
    #[schemars(length(min = 36, max = 36))]
    pub job_id: String,
    /// Wait up to this many seconds (default 0: answer at once) for the job to finish.
    #[schemars(range(min = 0, max = 50))]
    pub wait_seconds: Option<u32>,
}
impl Args for GetJobArgs {}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKindArg {
    Backtest,
    Compile,
    Deploy,
}

impl JobKindArg {
    fn kind(self) -> JobKind {
        match self {
            JobKindArg::Backtest => JobKind::Backtest,
            JobKindArg::Compile => JobKind::Compile,
            JobKindArg::Deploy => JobKind::Deploy,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateFilter {
    /// Starting, running or cancelling.
    Active,
    /// Completed, failed or cancelled.
    Finished,
    All,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListJobsArgs {
    /// Only jobs of this kind.
    pub kind: Option<JobKindArg>,
    /// Active, finished or all jobs (default all).
    pub state: Option<StateFilter>,
    /// Only jobs started at or after this RFC 3339 time.
    pub since: Option<String>,
    /// At most this many jobs (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
}
impl Args for ListJobsArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelJobArgs {
    /// The job to cancel.
    #[schemars(length(min = 36, max = 36))]
    pub job_id: String,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for CancelJobArgs {}

// ---- outputs (schemas only: the values are the vocabulary's `Job` serialized) ---------------

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[expect(dead_code, reason = "only its schema is used")]
enum JobStateOut {
    Starting,
    Running,
    Cancelling,
    Completed,
    Failed,
    Cancelled,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct JobOut {
    job_id: String,
    kind: JobKindArg,
    /// The tool that started it.
    tool: String,
    state: JobStateOut,
    /// From 0 to 1, as NinjaTrader 8 last reported it.
    progress: Option<f64>,
    /// NinjaTrader 8's last progress message.
    message: Option<String>,
    /// What was asked.
    summary: Map<String, Value>,
    /// The outcome once completed.
    result: Option<Value>,
    /// Why it failed.
    error: Option<String>,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct JobOutput {
    job: JobOut,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct StartOutput {
    job: JobOut,
    /// How to follow the job.
    poll: String,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct JobsOutput {
    jobs: Vec<JobOut>,
}
