//! The tool catalog: one declarative table ([`definitions`]) stating, per tool, its name, title,
//! description, input schema (generated from the Rust argument type), output schema, behaviour
//! annotations, the scope it requires and where it runs. Gating and dispatch read only this.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use vocabulary::JobKind;
use vocabulary::confirm::Gate;

use crate::auth::Scope;
use crate::protocol::Revision;

mod jobs;

use crate::relay::{HistoryFilter, HistoryRequest};
pub(crate) use confirm::{confirm_args, confirmations_args};
pub use jobs::JobRoute;
pub(crate) use jobs::{
    POLL_HINT, backtest_args, backtest_result, cancel_args, filter_of, get_args, job_json,
    summary_of,
};

mod confirm;
mod signals;
use vocabulary::{TrailingMode, TrailingRule};

pub mod charts;

/// Where a tool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// In this process; works without NinjaTrader 8.
    Backend(BackendTool),
    /// Relayed to the user's Add-On inside NinjaTrader 8, answered within `deadline`.
    Addon { deadline: Duration },
    /// Served from what the backend stored from the Add-On's events and calls (through the
    /// relay's `history`); works while NinjaTrader 8 is closed.
    Stored(StoredTool),
    /// A long job NinjaTrader 8 runs, recorded by the backend (see [`JobRoute`]).
    Job(JobRoute),
}

impl Route {
    /// Whether the tool needs the Add-On connected now (so `tools/list` hides it otherwise).
    pub fn needs_addon(self) -> bool {
        matches!(
            self,
            Route::Addon { .. }
                | Route::Job(JobRoute::Start(_) | JobRoute::Cancel)
                | Route::Backend(BackendTool::ConfirmTrade)
        )
    }
}

/// The tools served from stored Add-On history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredTool {
    Journal,
    Activity,
    Watermarks,
    WebhookHistory,
    CopierActivity,
}

/// Entries a history tool returns when `limit` is left out (as its input schema says).
const DEFAULT_HISTORY_LIMIT: u32 = 100;

impl StoredTool {
    /// The typed request for `arguments`, already valid against the tool's input schema; a
    /// time that is not RFC 3339 is the model's mistake, told back as a tool error.
    pub fn request(self, arguments: Value) -> Result<HistoryRequest, String> {
        let invalid = |err: serde_json::Error| format!("invalid arguments: {err}");
        match self {
            StoredTool::Journal => {
                let query: HistoryQuery = serde_json::from_value(arguments).map_err(invalid)?;
                Ok(HistoryRequest::Journal(HistoryFilter {
                    account: query.account,
                    instrument: query.instrument,
                    since: rfc3339("since", query.since.as_deref())?,
                    until: rfc3339("until", query.until.as_deref())?,
                    limit: Some(query.limit.unwrap_or(DEFAULT_HISTORY_LIMIT)),
                }))
            }
            StoredTool::Activity => {
                let query: LimitQuery = serde_json::from_value(arguments).map_err(invalid)?;
                Ok(HistoryRequest::Activity {
                    limit: query.limit.unwrap_or(DEFAULT_HISTORY_LIMIT),
                })
            }
            StoredTool::Watermarks => {
                let query: WatermarkQuery = serde_json::from_value(arguments).map_err(invalid)?;
                let trailing = query.trailing_drawdown.map(|amount| TrailingRule {
                    amount,
                    mode: match query.trailing_mode.unwrap_or_default() {
                        TrailingModeArg::Intraday => TrailingMode::Intraday,
                        TrailingModeArg::EndOfDay => TrailingMode::EndOfDay,
                    },
                    stop_at: query.trailing_stop_at,
                });
                Ok(HistoryRequest::Watermarks {
                    account: query.account,
                    trailing,
                })
            }
            StoredTool::WebhookHistory | StoredTool::CopierActivity => {
                signals::request(self, arguments)
            }
        }
    }
}

fn rfc3339(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    value
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|time| time.with_timezone(&Utc))
                .map_err(|_| {
                    format!("{name} must be an RFC 3339 time such as 2026-11-20T14:30:00Z")
                })
        })
        .transpose()
}

/// The tools served in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTool {
    Capabilities,
    /// Runs a call the person approved.
    ConfirmTrade,
    /// The account's confirmations.
    TradeConfirmations,
}

/// What the tool does to the world, for the MCP `annotations` (hints, 2025-03-26 server/tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads state only.
    Read,
    /// Changes something. `destructive` where it may remove or overwrite (orders, positions,
    /// files, chart objects); `idempotent` only where repeating the same call leaves the world as
    /// one call did (the others are made safe to retry by the `idempotency_key` argument, which
    /// the hint cannot promise for calls without one); `open_world` where it reaches beyond the
    /// user's own NinjaTrader 8 (a broker, a market).
    Write {
        destructive: bool,
        idempotent: bool,
        open_world: bool,
    },
}

impl Effect {
    /// A trade: it reaches the market and may close or replace what is there.
    pub const fn trade(idempotent: bool) -> Self {
        Effect::Write {
            destructive: true,
            idempotent,
            open_world: true,
        }
    }
}

/// The default Add-On deadline (DESIGN.md, "Deadlines").
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
const ADDON: Route = Route::Addon {
    deadline: DEFAULT_DEADLINE,
};

/// One row of the table, before schemas are compiled.
pub struct ToolDef {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub scope: Scope,
    pub route: Route,
    pub effect: Effect,
    /// The Add-On feature (from its `hello`) the tool needs; `tools/list` hides the tool
    /// while the connected Add-On does not announce it.
    pub needs_feature: Option<&'static str>,
    /// Calls the account's confirmation policy may hold for the person's decision.
    pub confirm: Option<Gate>,
    input_schema: Value,
    check: fn(&Value) -> Result<(), String>,
    output_schema: Option<Value>,
}

impl std::fmt::Debug for ToolDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolDef")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A read tool taking `A`, answering a `O`.
fn read<A: Args, O: JsonSchema>(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    route: Route,
) -> ToolDef {
    ToolDef {
        name,
        title,
        description,
        scope: Scope::Read,
        route,
        effect: Effect::Read,
        needs_feature: None,
        confirm: None,
        input_schema: schema_of::<A>(),
        check: check_as::<A>,
        output_schema: Some(schema_of::<O>()),
    }
}

/// A trade tool taking `A`, relayed to the Add-On.
fn trade<A: Args>(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    deadline: Duration,
    idempotent: bool,
) -> ToolDef {
    ToolDef {
        name,
        title,
        description,
        scope: Scope::Trade,
        route: Route::Addon { deadline },
        effect: Effect::trade(idempotent),
        needs_feature: None,
        confirm: None,
        input_schema: schema_of::<A>(),
        check: check_as::<A>,
        output_schema: None,
    }
}

/// The catalog, in the order `tools/list` shows it.
pub fn definitions() -> Vec<ToolDef> {
    let mut tools = core_definitions();
    tools.extend(signals::definitions());
    tools.extend(jobs::definitions());
    tools.extend(confirm::definitions());
    tools.extend(charts::definitions());
    for tool in &mut tools {
        tool.confirm = confirm::gate_of(tool.name);
    }
    tools
}

#[expect(clippy::too_many_lines, reason = "one declarative table")]
fn core_definitions() -> Vec<ToolDef> {
    vec![
        read::<NoArgs, Capabilities>(
            "GetMcpCapabilities",
            "CrossTrade MCP capabilities",
            "Report what this CrossTrade MCP connection can do right now: whether the CrossTrade \
             Add-On inside NinjaTrader 8 is connected (with its version, the NinjaTrader 8 \
             version and the Add-On's feature list) or was refused as older than 1.13.0, the \
             scope granted to this client \
             (mcp:read, or mcp:read plus mcp:trade), the account's subscription tier, the MCP \
             protocol revision in use and the server version. Works even when NinjaTrader 8 is \
             closed. Call this first when tools seem to be missing or calls fail with \
             addon_disconnected.",
            Route::Backend(BackendTool::Capabilities),
        ),
        read::<NoArgs, AccountsOutput>(
            "GetAccounts",
            "List trading accounts",
            "List the NinjaTrader 8 trading accounts visible to the CrossTrade Add-On, with \
             their connection, currency, cash value, buying power and realized/unrealized \
             profit and loss. Use the account names returned here as the `account` argument of \
             other tools.",
            ADDON,
        ),
        read::<NoArgs, ConnectionsOutput>(
            "GetConnections",
            "List broker connections",
            "List the NinjaTrader 8 data and broker connections (for example Rithmic, \
             Tradovate, CQG or Simulation) and whether each is connected.",
            ADDON,
        ),
        read::<AccountFilter, PositionsOutput>(
            "GetPositions",
            "List open positions",
            "List open positions (instrument, market position long/short, quantity, average \
             price, unrealized profit and loss), optionally for one account or instrument.",
            ADDON,
        ),
        read::<OrdersQuery, OrdersOutput>(
            "GetOrders",
            "List orders",
            "List orders with their id, account, instrument, action, type, quantity, prices \
             and state. By default only working (live) orders; pass `state` to see filled, \
             cancelled or all recent orders. Order ids from here are the `order_id` of \
             ModifyOrder and CancelOrder.",
            ADDON,
        ),
        read::<HistoryQuery, ExecutionsOutput>(
            "GetExecutions",
            "List executions",
            "List executions (fills) with time, account, instrument, action, quantity, price \
             and commission, newest first, optionally filtered by account, instrument and a \
             time window.",
            ADDON,
        ),
        read::<HistoryQuery, JournalOutput>(
            "GetJournal",
            "Read the trade journal",
            "Read the trade journal: completed round-trip trades with entry and exit times and \
             prices, quantity, profit and loss and duration, newest first, optionally filtered \
             by account, instrument and a time window.",
            Route::Stored(StoredTool::Journal),
        ),
        read::<LimitQuery, ActivityOutput>(
            "GetAddonActivity",
            "Read Add-On activity",
            "Read the log of tool calls this server relayed to the CrossTrade Add-On, newest \
             first: tool name, outcome (ok, tool_error, not_connected, disconnected, \
             deadline_exceeded or unavailable), latency in milliseconds, the server replica \
             that handled it, whether it was an idempotent repeat answered from the first \
             call, and when. Arguments are never logged. Webhook signals are in \
             GetWebhookHistory, copier actions in GetCopierActivity.",
            Route::Stored(StoredTool::Activity),
        ),
        read::<WatermarkQuery, WatermarksOutput>(
            "GetWatermarks",
            "Read account watermarks",
            "Read per-account watermarks of net liquidation value (cash plus open profit) from \
             the snapshots the Add-On reported: the latest value, the all-time and \
             current-session high and low with their times (a session starts where the Add-On \
             says, else at 17:00 America/Chicago), the drawdown from the high and the largest \
             drawdown with its peak and trough. With `trailing_drawdown` also the trailing \
             threshold (peak minus that amount, capped at `trailing_stop_at`; the peak follows \
             every value intraday, or session closes end_of_day), how far the latest value is \
             above it and when a value first reached it. Funded-account rules differ: give the \
             amount and mode your firm uses. Works while NinjaTrader 8 is closed.",
            Route::Stored(StoredTool::Watermarks),
        ),
        read::<MarketDataQuery, MarketDataOutput>(
            "GetMarketData",
            "Get market data",
            "Get a market data snapshot for one NinjaTrader 8 instrument (for example \"ES \
             12-26\" or \"NQ 03-27\"): last, bid, ask, volume, session high/low and, if \
             `bars` is set, recent bars of the given period.",
            ADDON,
        ),
        read::<ScriptKindFilter, ScriptFilesOutput>(
            "ListNinjaScriptFiles",
            "List NinjaScript files",
            "List NinjaScript source files (indicators, strategies, add-ons) in the user's \
             NinjaTrader 8 Documents folder, with their relative paths and last modification \
             times.",
            ADDON,
        ),
        read::<ScriptPath, ScriptFileOutput>(
            "ReadNinjaScriptFile",
            "Read a NinjaScript file",
            "Read the C# source of one NinjaScript file, by the relative path \
             ListNinjaScriptFiles returned (for example \"Strategies/MyStrategy.cs\").",
            ADDON,
        ),
        read::<BacktestQuery, BacktestResultsOutput>(
            "GetBacktestResults",
            "Read backtest results",
            "Read backtest jobs and their results (net profit, max drawdown, trade count, win \
             rate, profit factor, and the trades when `include_trades` is true): one job by \
             `job_id`, or the most recent backtests. Running backtests are listed with their \
             progress. Results are kept 30 days and are readable while NinjaTrader 8 is closed. \
             Does not start a backtest; RunStrategyBacktest does.",
            Route::Job(JobRoute::BacktestResults),
        ),
        trade::<PlaceOrderArgs>(
            "PlaceOrder",
            "Place an order",
            "Place a new order in NinjaTrader 8. Real money may be at stake: confirm account, \
             instrument, side, quantity and prices with the user before calling. Limit orders \
             need `limit_price`, stop-market orders `stop_price`, stop-limit orders both. Pass \
             an `idempotency_key` so a retry of the same request never places a second order.",
            DEFAULT_DEADLINE,
            false,
        ),
        trade::<ModifyOrderArgs>(
            "ModifyOrder",
            "Modify an order",
            "Change the quantity, limit price or stop price of a working order (by `order_id` \
             from GetOrders). At least one of them must be given.",
            DEFAULT_DEADLINE,
            true,
        ),
        trade::<CancelOrderArgs>(
            "CancelOrder",
            "Cancel an order",
            "Cancel one working order by `order_id` (from GetOrders).",
            DEFAULT_DEADLINE,
            true,
        ),
        trade::<CancelAllArgs>(
            "CancelAllOrders",
            "Cancel all orders",
            "Cancel every working order, optionally only those of one account and/or one \
             instrument. Positions stay open; use FlattenPosition or FlattenAll to close them.",
            DEFAULT_DEADLINE,
            true,
        ),
        trade::<PositionArgs>(
            "FlattenPosition",
            "Flatten a position",
            "Close the position of one account in one instrument at market and cancel that \
             instrument's working orders in the account.",
            DEFAULT_DEADLINE,
            true,
        ),
        trade::<FlattenAllArgs>(
            "FlattenAll",
            "Flatten everything",
            "Close every open position at market and cancel every working order, in one account \
             or (without `account`) in all accounts. Confirm with the user first.",
            DEFAULT_DEADLINE,
            true,
        ),
        trade::<PositionArgs>(
            "ReversePosition",
            "Reverse a position",
            "Reverse the position of one account in one instrument at market (long 2 becomes \
             short 2). Calling it twice reverses twice: pass an `idempotency_key` so a retry \
             does not.",
            DEFAULT_DEADLINE,
            false,
        ),
        jobs::start::<CompileArgs>(
            JobKind::Compile,
            "CompileNinjaScript",
            "Compile NinjaScript",
            "Start compiling all NinjaScript in NinjaTrader 8. Returns at once with a compile \
             job (`job_id`); compiling takes up to a few minutes. Follow it with GetJob: once \
             completed its result says whether the compile succeeded and lists the compiler \
             errors and warnings (file, line, code, message). Pass an `idempotency_key` so a \
             retry does not compile twice.",
            true,
        ),
        trade::<WriteScriptArgs>(
            "WriteNinjaScriptFile",
            "Write a NinjaScript file",
            "Create or overwrite one NinjaScript source file (relative path under the \
             NinjaTrader 8 NinjaScript folder, ending in .cs) with the given C# content. Run \
             CompileNinjaScript afterwards to check it.",
            DEFAULT_DEADLINE,
            true,
        ),
        jobs::start::<BacktestArgs>(
            JobKind::Backtest,
            "RunStrategyBacktest",
            "Run a strategy backtest",
            "Start a Strategy Analyzer backtest of a compiled NinjaScript strategy on one \
             instrument over a date range. Returns at once with a `job_id`; the backtest runs \
             inside NinjaTrader 8 (up to four hours) and keeps running if you disconnect. Poll \
             GetJob with the job_id every 10-30 seconds, or call it with `wait_seconds` (up to \
             50) to wait and receive progress; when it is completed read the full results with \
             GetBacktestResults. Cancel with CancelJob. Pass an `idempotency_key` so a retry \
             does not start a second backtest.",
            false,
        ),
        jobs::start::<DeployArgs>(
            JobKind::Deploy,
            "DeployStrategy",
            "Deploy a strategy",
            "Enable a compiled NinjaScript strategy on a live or simulation account for one \
             instrument. It will trade by itself until StopStrategy: confirm with the user \
             first. Returns at once with a deployment job (`job_id`); follow it with GetJob: \
             once completed its result holds the `strategy_id` of the running instance, for \
             StopStrategy. Pass an `idempotency_key` so a retry does not deploy twice.",
            false,
        ),
        trade::<StopStrategyArgs>(
            "StopStrategy",
            "Stop a strategy",
            "Disable a running strategy instance by the `strategy_id` DeployStrategy returned. \
             Its open position is left as is unless `flatten` is true.",
            DEFAULT_DEADLINE,
            true,
        ),
        trade::<AlertArgs>(
            "EmitAlert",
            "Emit an alert",
            "Raise an alert in NinjaTrader 8's Alerts Log (and its sound/popup, per the \
             user's settings) with a short message and priority.",
            DEFAULT_DEADLINE,
            false,
        ),
    ]
}

/// A catalog entry with its schemas compiled into validators.
#[derive(Debug)]
pub struct Tool {
    pub def: ToolDef,
    input: Validator,
    output: Option<Validator>,
}

/// A compiled JSON Schema; `Err` holds a compile error (a bug caught by the unit tests).
#[derive(Debug)]
struct Validator(Result<jsonschema::Validator, String>);

impl Validator {
    fn new(schema: &Value) -> Self {
        Self(jsonschema::validator_for(schema).map_err(|err| err.to_string()))
    }

    /// Every violation, each naming the field (JSON pointer) and the rule.
    fn violations(&self, instance: &Value) -> Vec<String> {
        match &self.0 {
            Ok(validator) => validator
                .iter_errors(instance)
                .map(|error| {
                    let field = error.instance_path().as_str();
                    let field = if field.is_empty() {
                        "(arguments)".to_owned()
                    } else {
                        field.trim_start_matches('/').replace('/', ".")
                    };
                    let schema_path = error.schema_path().as_str().to_owned();
                    let rule = schema_path
                        .rsplit('/')
                        .next()
                        .unwrap_or("schema")
                        .to_owned();
                    format!("{field}: {error} (rule: {rule})")
                })
                .collect(),
            Err(compile) => vec![format!("the schema does not compile: {compile}")],
        }
    }
}

/// The compiled catalog.
#[derive(Debug)]
pub struct Catalog {
    tools: Vec<Tool>,
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog {
    tools: definitions()
        .into_iter()
        .map(|def| Tool {
            input: Validator::new(&def.input_schema),
            output: def.output_schema.as_ref().map(Validator::new),
            def,
        })
        .collect(),
});

/// The process-wide catalog (schemas are compiled once).
pub fn catalog() -> &'static Catalog {
    &CATALOG
}

impl Catalog {
    pub fn tools(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|tool| tool.def.name == name)
    }
}

impl Tool {
    /// Checks call arguments against the input schema, then the rules a schema cannot state.
    /// The message names the field and the rule.
    pub fn validate_arguments(&self, arguments: &Value) -> Result<(), String> {
        let violations = self.input.violations(arguments);
        if !violations.is_empty() {
            return Err(format!(
                "Invalid arguments for {}: {}",
                self.def.name,
                violations.join("; ")
            ));
        }
        (self.def.check)(arguments)
            .map_err(|message| format!("Invalid arguments for {}: {message}", self.def.name))
    }

    /// Checks a structured result against the output schema (MCP 2025-06-18 server/tools,
    /// "Output Schema": a server MUST return conforming results).
    pub fn validate_output(&self, output: &Value) -> Result<(), String> {
        match &self.output {
            Some(validator) => {
                let violations = validator.violations(output);
                if violations.is_empty() {
                    Ok(())
                } else {
                    Err(violations.join("; "))
                }
            }
            None => Ok(()),
        }
    }

    pub fn has_output_schema(&self) -> bool {
        self.def.output_schema.is_some()
    }

    /// The tool as `tools/list` shows it under `revision`.
    pub fn to_json(&self, revision: Revision) -> Value {
        let def = &self.def;
        let mut annotations = Map::new();
        match def.effect {
            Effect::Read => {
                annotations.insert("readOnlyHint".into(), json!(true));
                annotations.insert("openWorldHint".into(), json!(false));
            }
            Effect::Write {
                destructive,
                idempotent,
                open_world,
            } => {
                annotations.insert("readOnlyHint".into(), json!(false));
                annotations.insert("destructiveHint".into(), json!(destructive));
                annotations.insert("idempotentHint".into(), json!(idempotent));
                annotations.insert("openWorldHint".into(), json!(open_world));
            }
        }
        let mut tool = Map::new();
        tool.insert("name".into(), json!(def.name));
        if revision.has_structured_content() {
            tool.insert("title".into(), json!(def.title));
        } else {
            // 2025-03-26 has no `title` on tools, only on their annotations.
            annotations.insert("title".into(), json!(def.title));
        }
        tool.insert("description".into(), json!(def.description));
        tool.insert("inputSchema".into(), def.input_schema.clone());
        if revision.has_structured_content()
            && let Some(output) = &def.output_schema
        {
            tool.insert("outputSchema".into(), output.clone());
        }
        tool.insert("annotations".into(), Value::Object(annotations));
        // Each tool's auth policy as ChatGPT's Apps SDK reads it, at the top level and mirrored
        // in `_meta` for clients that read only that; other clients ignore both.
        let schemes = json!([{ "type": "oauth2", "scopes": [def.scope.as_str()] }]);
        tool.insert(
            "_meta".into(),
            json!({ "securitySchemes": schemes.clone() }),
        );
        tool.insert("securitySchemes".into(), schemes);
        Value::Object(tool)
    }
}

/// The tool table for the README: name, scope, route and description, from the catalog.
pub fn tool_table_markdown() -> String {
    let mut out = String::from("| Tool | Scope | Route | Description |\n|---|---|---|---|\n");
    for tool in catalog().tools() {
        let def = &tool.def;
        let route = match def.route {
            Route::Backend(_) => "backend".to_owned(),
            Route::Addon { deadline } => format!("Add-On ({} s)", deadline.as_secs()),
            Route::Stored(_) => "backend (Add-On history)".to_owned(),
            Route::Job(JobRoute::Start(_) | JobRoute::Cancel) => "Add-On (job)".to_owned(),
            Route::Job(_) => "backend (jobs)".to_owned(),
        };
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {} | {} |",
            def.name,
            def.scope.as_str(),
            route,
            def.description.replace('|', "\\|")
        );
    }
    out
}

/// Input schemas: JSON Schema 2020-12 (the MCP default dialect, 2025-11-25 basic "JSON Schema
/// Usage"), inlined (no `$ref`, which several clients cannot follow), no `$schema`/`title`.
fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Some(object) = schema.as_object_mut() {
        object.remove("title");
        object.remove("$schema");
    }
    schema
}

/// Argument types: deserializable, with schema, and cross-field rules.
trait Args: JsonSchema + DeserializeOwned {
    /// Rules the schema does not state (which fields one value of another requires).
    fn rules(&self) -> Result<(), String> {
        Ok(())
    }
}

fn check_as<A: Args>(arguments: &Value) -> Result<(), String> {
    let args: A = A::deserialize(arguments).map_err(|err| err.to_string())?;
    args.rules()
}

// ---- argument types -----------------------------------------------------------------------

// No arguments: `{"type":"object","additionalProperties":false}` (2025-11-25 server/tools).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}
impl Args for NoArgs {}

/// A client-chosen key that makes a trade call safe to retry.
#[derive(Debug, Deserialize, Serialize)]
pub struct IdempotencyKey(pub String);

impl JsonSchema for IdempotencyKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IdempotencyKey".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 8,
            "maxLength": 128,
            "pattern": "^[A-Za-z0-9._:-]+$",
            "description": "Optional. A unique key (8-128 characters: letters, digits, . _ : -) \
                for this action, for example a UUID. Repeating a call with the same key within \
                24 hours returns the first call's outcome and never performs the action twice. \
                Use a new key for each new action."
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountFilter {
    /// Only this account (a name from GetAccounts).
    #[schemars(length(min = 1, max = 100))]
    pub account: Option<String>,
    /// Only this instrument, as NinjaTrader 8 names it (for example "ES 12-26").
    #[schemars(length(min = 1, max = 100))]
    pub instrument: Option<String>,
}
impl Args for AccountFilter {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatermarkQuery {
    /// Only this account (a name from GetAccounts).
    #[schemars(length(min = 1, max = 100))]
    pub account: Option<String>,
    /// The trailing drawdown amount in account currency (for example 2500): the threshold
    /// trails the peak by this much. Without it no trailing threshold is computed.
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 1e12))]
    pub trailing_drawdown: Option<f64>,
    /// What moves the peak: intraday (every value, the default) or end_of_day (the last value
    /// of each completed session). Needs `trailing_drawdown`.
    pub trailing_mode: Option<TrailingModeArg>,
    /// The threshold never rises above this value (often the starting balance). Needs
    /// `trailing_drawdown`.
    #[schemars(range(min = -1e12, max = 1e12))]
    pub trailing_stop_at: Option<f64>,
}

impl Args for WatermarkQuery {
    fn rules(&self) -> Result<(), String> {
        if self.trailing_drawdown.is_none()
            && (self.trailing_mode.is_some() || self.trailing_stop_at.is_some())
        {
            return Err(
                "trailing_drawdown: required when trailing_mode or trailing_stop_at \
                        is given (rule: required)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
pub enum TrailingModeArg {
    #[default]
    #[serde(rename = "intraday")]
    Intraday,
    #[serde(rename = "end_of_day")]
    EndOfDay,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
pub enum OrderStateFilter {
    #[serde(rename = "working")]
    Working,
    #[serde(rename = "filled")]
    Filled,
    #[serde(rename = "cancelled")]
    Cancelled,
    #[serde(rename = "all")]
    All,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrdersQuery {
    /// Only this account (a name from GetAccounts).
    #[schemars(length(min = 1, max = 100))]
    pub account: Option<String>,
    /// Only this instrument (for example "ES 12-26").
    #[schemars(length(min = 1, max = 100))]
    pub instrument: Option<String>,
    /// Which orders: working (default), filled, cancelled or all.
    pub state: Option<OrderStateFilter>,
    /// At most this many orders (default 100).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
}
impl Args for OrdersQuery {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only this account (a name from GetAccounts).
    #[schemars(length(min = 1, max = 100))]
    pub account: Option<String>,
    /// Only this instrument (for example "ES 12-26").
    #[schemars(length(min = 1, max = 100))]
    pub instrument: Option<String>,
    /// Start of the window, RFC 3339 (for example "2026-11-20T14:30:00Z").
    #[schemars(length(min = 10, max = 40))]
    pub since: Option<String>,
    /// End of the window, RFC 3339.
    #[schemars(length(min = 10, max = 40))]
    pub until: Option<String>,
    /// At most this many entries (default 100).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
}
impl Args for HistoryQuery {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// At most this many entries (default 100).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
}
impl Args for LimitQuery {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketDataQuery {
    /// The instrument, as NinjaTrader 8 names it (for example "ES 12-26").
    #[schemars(length(min = 1, max = 100))]
    pub instrument: String,
    /// Also return this many recent bars (default none).
    #[schemars(range(min = 1, max = 500))]
    pub bars: Option<u32>,
    /// Bar period in minutes when `bars` is set (default 1).
    #[schemars(range(min = 1, max = 1440))]
    pub bar_minutes: Option<u32>,
}
impl Args for MarketDataQuery {}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
pub enum ScriptKind {
    Indicators,
    Strategies,
    AddOns,
    DrawingTools,
    All,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptKindFilter {
    /// Which folder to list (default All).
    pub kind: Option<ScriptKind>,
}
impl Args for ScriptKindFilter {}

/// A NinjaScript path relative to the NinjaScript folder, ending in ".cs".
/// Each segment starts with a letter, digit or underscore and has no dot, so ".." cannot occur.
const SCRIPT_PATH_PATTERN: &str =
    r"^[A-Za-z0-9_][A-Za-z0-9_ -]*(/[A-Za-z0-9_][A-Za-z0-9_ -]*)*\.cs$";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptPath {
    /// Relative path of the file, for example "Strategies/MyStrategy.cs" (no "..").
    #[schemars(length(min = 4, max = 260), regex(pattern = SCRIPT_PATH_PATTERN))]
    pub path: String,
}
impl Args for ScriptPath {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestQuery {
    /// One backtest job (from RunStrategyBacktest); without it, the most recent jobs.
    #[schemars(length(min = 1, max = 100))]
    pub job_id: Option<String>,
    /// Include the individual trades (default false).
    pub include_trades: Option<bool>,
    /// At most this many jobs when `job_id` is absent (default 10).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
}
impl Args for BacktestQuery {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum OrderAction {
    Buy,
    Sell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum OrderType {
    Market,
    Limit,
    StopMarket,
    StopLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TimeInForce {
    Day,
    Gtc,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderArgs {
    /// The account (a name from GetAccounts).
    #[schemars(length(min = 1, max = 100))]
    pub account: String,
    /// The instrument, as NinjaTrader 8 names it (for example "ES 12-26").
    #[schemars(length(min = 1, max = 100))]
    pub instrument: String,
    /// Buy or Sell.
    pub action: OrderAction,
    /// Market, Limit, StopMarket or StopLimit.
    pub order_type: OrderType,
    /// Number of contracts or shares, at least 1.
    #[schemars(range(min = 1, max = 10000))]
    pub quantity: u32,
    /// Limit price; required for Limit and StopLimit orders.
    #[schemars(range(min = 0.0))]
    pub limit_price: Option<f64>,
    /// Stop price; required for StopMarket and StopLimit orders.
    #[schemars(range(min = 0.0))]
    pub stop_price: Option<f64>,
    /// Day (default) or Gtc.
    pub time_in_force: Option<TimeInForce>,
    /// Optional OCO group id linking this order with others.
    #[schemars(length(min = 1, max = 100))]
    pub oco_id: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Args for PlaceOrderArgs {
    fn rules(&self) -> Result<(), String> {
        let needs_limit = matches!(self.order_type, OrderType::Limit | OrderType::StopLimit);
        let needs_stop = matches!(
            self.order_type,
            OrderType::StopMarket | OrderType::StopLimit
        );
        if needs_limit && self.limit_price.is_none() {
            return Err(format!(
                "limit_price: required when order_type is {:?} (rule: required)",
                self.order_type
            ));
        }
        if needs_stop && self.stop_price.is_none() {
            return Err(format!(
                "stop_price: required when order_type is {:?} (rule: required)",
                self.order_type
            ));
        }
        if !needs_limit && self.limit_price.is_some() {
            return Err(format!(
                "limit_price: not allowed when order_type is {:?} (rule: not allowed)",
                self.order_type
            ));
        }
        if !needs_stop && self.stop_price.is_some() {
            return Err(format!(
                "stop_price: not allowed when order_type is {:?} (rule: not allowed)",
                self.order_type
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModifyOrderArgs {
    /// The order to change (an id from GetOrders).
    #[schemars(length(min = 1, max = 100))]
    pub order_id: String,
    /// New quantity, at least 1.
    #[schemars(range(min = 1, max = 10000))]
    pub quantity: Option<u32>,
    /// New limit price.
    #[schemars(range(min = 0.0))]
    pub limit_price: Option<f64>,
    /// New stop price.
    #[schemars(range(min = 0.0))]
    pub stop_price: Option<f64>,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Args for ModifyOrderArgs {
    fn rules(&self) -> Result<(), String> {
        if self.quantity.is_none() && self.limit_price.is_none() && self.stop_price.is_none() {
            return Err(
                "quantity, limit_price, stop_price: at least one is required (rule: anyOf)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrderArgs {
    /// The order to cancel (an id from GetOrders).
    #[schemars(length(min = 1, max = 100))]
    pub order_id: String,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for CancelOrderArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelAllArgs {
    /// Only this account's orders.
    #[schemars(length(min = 1, max = 100))]
    pub account: Option<String>,
    /// Only this instrument's orders.
    #[schemars(length(min = 1, max = 100))]
    pub instrument: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for CancelAllArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PositionArgs {
    /// The account (a name from GetAccounts).
    #[schemars(length(min = 1, max = 100))]
    pub account: String,
    /// The instrument (for example "ES 12-26").
    #[schemars(length(min = 1, max = 100))]
    pub instrument: String,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for PositionArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlattenAllArgs {
    /// Only this account; without it, every account.
    #[schemars(length(min = 1, max = 100))]
    pub account: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for FlattenAllArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompileArgs {
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for CompileArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteScriptArgs {
    /// Relative path of the file, for example "Strategies/MyStrategy.cs" (no "..").
    #[schemars(length(min = 4, max = 260), regex(pattern = SCRIPT_PATH_PATTERN))]
    pub path: String,
    /// The complete C# source of the file.
    #[schemars(length(min = 1, max = 1_000_000))]
    pub content: String,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for WriteScriptArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestArgs {
    /// The strategy's class name (for example "MyStrategy").
    #[schemars(length(min = 1, max = 100))]
    pub strategy: String,
    /// The instrument (for example "ES 12-26").
    #[schemars(length(min = 1, max = 100))]
    pub instrument: String,
    /// First day, YYYY-MM-DD.
    #[schemars(regex(pattern = r"^\d{4}-\d{2}-\d{2}$"))]
    pub from: String,
    /// Last day, YYYY-MM-DD.
    #[schemars(regex(pattern = r"^\d{4}-\d{2}-\d{2}$"))]
    pub to: String,
    /// Strategy parameters by name (numbers, strings or booleans).
    pub parameters: Option<Map<String, Value>>,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Args for BacktestArgs {
    fn rules(&self) -> Result<(), String> {
        // ISO dates compare as strings.
        if self.from > self.to {
            return Err("to: must not be before from (rule: date order)".to_owned());
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployArgs {
    /// The strategy's class name (for example "MyStrategy").
    #[schemars(length(min = 1, max = 100))]
    pub strategy: String,
    /// The account to trade (a name from GetAccounts).
    #[schemars(length(min = 1, max = 100))]
    pub account: String,
    /// The instrument (for example "ES 12-26").
    #[schemars(length(min = 1, max = 100))]
    pub instrument: String,
    /// Strategy parameters by name (numbers, strings or booleans).
    pub parameters: Option<Map<String, Value>>,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for DeployArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopStrategyArgs {
    /// The running instance (the `strategy_id` DeployStrategy returned).
    #[schemars(length(min = 1, max = 100))]
    pub strategy_id: String,
    /// Also close the strategy's position (default false).
    pub flatten: Option<bool>,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for StopStrategyArgs {}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
pub enum AlertPriority {
    Low,
    Medium,
    High,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertArgs {
    /// The alert text.
    #[schemars(length(min = 1, max = 500))]
    pub message: String,
    /// Low, Medium (default) or High.
    pub priority: Option<AlertPriority>,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for AlertArgs {}

// ---- output types (for `outputSchema`) ----------------------------------------------------

/// A record as the Add-On reports it; fields vary by NinjaTrader 8 version.
type Record = Map<String, Value>;

/// GetMcpCapabilities' answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Capabilities {
    /// Whether the CrossTrade Add-On inside NinjaTrader 8 is connected now.
    pub addon_connected: bool,
    /// "connected", "too_old" (an Add-On below 1.13.0 tried to connect and was refused) or
    /// "not_connected".
    pub addon_state: String,
    /// The Add-On's state in one sentence, e.g. "Add-On 1.12.4 is connected but too old —
    /// update to 1.13.0 or later".
    pub addon_status: String,
    /// The Add-On's version: the connected one, or the one refused as too old.
    pub addon_version: Option<String>,
    /// The NinjaTrader 8 version the Add-On runs in.
    pub nt8_version: Option<String>,
    /// When the too-old Add-On was last refused (RFC 3339), while `addon_state` is "too_old".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addon_refused_at: Option<String>,
    /// Features the connected Add-On offers.
    pub features: Vec<String>,
    /// The scope granted to this client: "mcp:read" or "mcp:read mcp:trade".
    pub scope: String,
    /// The account's subscription tier: standard, pro or elite.
    pub tier: String,
    /// The MCP protocol revision of this request.
    pub protocol_version: String,
    /// This server's version.
    pub server_version: String,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct AccountsOutput {
    accounts: Vec<Record>,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ConnectionsOutput {
    connections: Vec<Record>,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct PositionsOutput {
    positions: Vec<Record>,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct OrdersOutput {
    orders: Vec<Record>,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ExecutionsOutput {
    executions: Vec<Record>,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct JournalOutput {
    trades: Vec<Record>,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ActivityOutput {
    /// Newest first.
    entries: Vec<ActivityEntry>,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ActivityEntry {
    /// The tool relayed.
    tool: String,
    /// ok, tool_error, not_connected, disconnected, deadline_exceeded or unavailable.
    outcome: String,
    latency_ms: i64,
    /// The server replica that handled the call.
    instance_id: String,
    /// True when an idempotent repeat was answered with the first call's outcome.
    replayed: bool,
    /// When the call ended (RFC 3339).
    created_at: String,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct WatermarksOutput {
    /// One entry per account with snapshots, by account name.
    watermarks: Vec<AccountWatermarks>,
}

/// An RFC 3339 time, for example "2026-11-20T14:30:00Z".
type Time = String;

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct AccountWatermarks {
    account: String,
    /// What the values measure: "net_liquidation" (cash plus open profit).
    basis: String,
    latest: ValueAt,
    all_time: HighLow,
    session: SessionMarks,
    drawdown: DrawdownMarks,
    /// Present when `trailing_drawdown` was given, else null.
    trailing: Option<TrailingMarks>,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ValueAt {
    value: f64,
    at: Time,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct HighLow {
    high: f64,
    high_at: Time,
    low: f64,
    low_at: Time,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct SessionMarks {
    /// When the current session (the latest snapshot's) started.
    start: Time,
    /// "addon" (the Add-On's trading hours) or "cme_globex" (17:00 America/Chicago).
    source: String,
    /// The first value at or after the start.
    open: f64,
    open_at: Time,
    high: f64,
    high_at: Time,
    low: f64,
    low_at: Time,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct DrawdownMarks {
    /// The all-time high minus the latest value.
    from_high: f64,
    /// The largest fall from a running peak to a later value.
    max: f64,
    /// Null while there was no fall.
    max_peak_at: Option<Time>,
    max_trough_at: Option<Time>,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct TrailingMarks {
    /// "intraday" or "end_of_day".
    mode: String,
    amount: f64,
    stop_at: Option<f64>,
    /// The peak the threshold trails now.
    peak: f64,
    /// min(peak - amount, stop_at).
    threshold: f64,
    /// The latest value minus the threshold (negative below it).
    remaining: f64,
    /// The first snapshot at or below the threshold of its time; null if none.
    breached_at: Option<Time>,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct MarketDataOutput {
    instrument: String,
    quote: Record,
    bars: Option<Vec<Record>>,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ScriptFilesOutput {
    files: Vec<Record>,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ScriptFileOutput {
    path: String,
    content: String,
}
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct BacktestResultsOutput {
    results: Vec<Record>,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_schema_compiles_and_names_are_valid() {
        let mut names = HashSet::new();
        for tool in catalog().tools() {
            let name = tool.def.name;
            assert!(names.insert(name), "duplicate {name}");
            assert!(name.len() <= 64 && !name.is_empty(), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
            assert!(name.chars().next().unwrap().is_ascii_uppercase(), "{name}");
            assert!(tool.input.0.is_ok(), "{name}: {:?}", tool.input.0);
            if let Some(output) = &tool.output {
                assert!(output.0.is_ok(), "{name}: {:?}", output.0);
            }
            let schema = &tool.def.input_schema;
            assert_eq!(schema["type"], "object", "{name}");
            assert!(!schema.to_string().contains("$ref"), "{name}: {schema}");
            assert!(schema.get("$schema").is_none());
            if tool.def.scope == Scope::Trade {
                // ConfirmTrade runs a confirmation at most once: the id is its key.
                assert!(
                    name == "ConfirmTrade"
                        || schema["properties"]["idempotency_key"]["description"]
                            .as_str()
                            .unwrap()
                            .contains("24 hours"),
                    "{name}: {schema}"
                );
            } else {
                assert!(tool.def.output_schema.is_some(), "{name}");
            }
        }
        for required in [
            "GetMcpCapabilities",
            "PlaceOrder",
            "ModifyOrder",
            "CancelOrder",
            "CancelAllOrders",
            "FlattenPosition",
            "FlattenAll",
            "ReversePosition",
            "CompileNinjaScript",
            "WriteNinjaScriptFile",
            "RunStrategyBacktest",
            "DeployStrategy",
            "StopStrategy",
            "EmitAlert",
        ] {
            assert!(names.contains(required), "{required} missing");
        }
    }

    #[test]
    fn long_running_tools_start_jobs_and_every_job_is_followed() {
        for (name, kind) in [
            ("CompileNinjaScript", JobKind::Compile),
            ("RunStrategyBacktest", JobKind::Backtest),
            ("DeployStrategy", JobKind::Deploy),
        ] {
            let tool = catalog().get(name).unwrap();
            assert_eq!(tool.def.route, Route::Job(JobRoute::Start(kind)), "{name}");
            assert!(tool.def.route.needs_addon());
            assert!(tool.def.description.contains("GetJob"), "{name}");
            assert!(tool.def.description.contains("idempotency_key"), "{name}");
            let output = &tool.def.output_schema.as_ref().unwrap()["properties"];
            assert!(output["job"]["properties"]["job_id"].is_object(), "{name}");
            assert!(output["poll"].is_object(), "{name}");
        }
        for (name, needs_addon) in [
            ("GetJob", false),
            ("ListJobs", false),
            ("GetBacktestResults", false),
            ("CancelJob", true),
        ] {
            let tool = catalog().get(name).unwrap();
            assert!(matches!(tool.def.route, Route::Job(_)), "{name}");
            assert_eq!(tool.def.route.needs_addon(), needs_addon, "{name}");
        }
        let get = catalog().get("GetJob").unwrap();
        assert!(get.def.description.contains("wait_seconds"));
        assert_eq!(
            get.def.input_schema["properties"]["wait_seconds"]["maximum"],
            json!(jobs::MAX_WAIT_SECONDS)
        );
        for (name, deadline) in [
            ("PlaceOrder", DEFAULT_DEADLINE),
            ("GetAccounts", DEFAULT_DEADLINE),
        ] {
            assert_eq!(
                catalog().get(name).unwrap().def.route,
                Route::Addon { deadline },
                "{name}"
            );
        }
    }

    #[test]
    fn order_affecting_tools_are_gated_and_nothing_else_is() {
        for tool in catalog().tools() {
            let expected = match tool.def.name {
                "PlaceOrder" | "ModifyOrder" | "ReversePosition" | "FlattenPosition"
                | "FlattenAll" => Some(Gate::Order),
                "DeployStrategy" => Some(Gate::Deploy),
                "StopStrategy" => Some(Gate::StopFlatten),
                "CancelOrder" | "CancelAllOrders" => Some(Gate::Cancel),
                _ => None,
            };
            assert_eq!(tool.def.confirm, expected, "{}", tool.def.name);
            if expected.is_some() {
                assert_eq!(tool.def.scope, Scope::Trade, "{}", tool.def.name);
            }
        }
    }

    #[test]
    fn validation_names_field_and_rule() {
        let place = catalog().get("PlaceOrder").unwrap();
        let ok = json!({"account":"Sim101","instrument":"ES 12-26","action":"Buy",
            "order_type":"Limit","quantity":1,"limit_price":5000.25,
            "idempotency_key":"3f7c9a1e-0000-4000-8000-000000000001"});
        assert_eq!(place.validate_arguments(&ok), Ok(()));

        let mut zero = ok.clone();
        zero["quantity"] = json!(0);
        let message = place.validate_arguments(&zero).unwrap_err();
        assert!(
            message.contains("quantity:") && message.contains("rule: minimum"),
            "{message}"
        );

        let mut no_limit = ok.clone();
        no_limit.as_object_mut().unwrap().remove("limit_price");
        let message = place.validate_arguments(&no_limit).unwrap_err();
        assert_eq!(
            message,
            "Invalid arguments for PlaceOrder: limit_price: required when order_type is Limit \
             (rule: required)"
        );

        let mut extra = ok.clone();
        extra["leverage"] = json!(10);
        let message = place.validate_arguments(&extra).unwrap_err();
        assert!(message.contains("rule: additionalProperties"), "{message}");

        let mut bad_key = ok;
        bad_key["idempotency_key"] = json!("no spaces allowed");
        let message = place.validate_arguments(&bad_key).unwrap_err();
        assert!(
            message.contains("idempotency_key:") && message.contains("rule: pattern"),
            "{message}"
        );

        let read = catalog().get("ReadNinjaScriptFile").unwrap();
        let message = read
            .validate_arguments(&json!({"path":"../../secrets.cs"}))
            .unwrap_err();
        assert!(
            message.contains("path:") && message.contains("rule: pattern"),
            "{message}"
        );
    }

    #[test]
    fn annotations_follow_the_effect() {
        let list = catalog()
            .get("GetAccounts")
            .unwrap()
            .to_json(Revision::V2025_11_25);
        assert_eq!(
            list["annotations"],
            json!({"readOnlyHint": true, "openWorldHint": false})
        );
        assert_eq!(list["title"], "List trading accounts");
        assert!(list.get("outputSchema").is_some());
        let place = catalog()
            .get("PlaceOrder")
            .unwrap()
            .to_json(Revision::V2025_03_26);
        assert_eq!(
            place["annotations"],
            json!({"readOnlyHint": false, "destructiveHint": true, "idempotentHint": false,
                   "openWorldHint": true, "title": "Place an order"})
        );
        assert!(place.get("title").is_none());
        let cancel = catalog()
            .get("CancelOrder")
            .unwrap()
            .to_json(Revision::V2026_07_28);
        assert_eq!(cancel["annotations"]["idempotentHint"], true);
    }

    #[test]
    fn watermarks_take_trailing_rules_and_no_instrument() {
        let tool = catalog().get("GetWatermarks").unwrap();
        let properties: Vec<&String> = tool.def.input_schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            properties,
            [
                "account",
                "trailing_drawdown",
                "trailing_mode",
                "trailing_stop_at"
            ]
        );
        let message = tool
            .validate_arguments(&json!({"account": "Sim101", "instrument": "ES 12-26"}))
            .unwrap_err();
        assert!(message.contains("rule: additionalProperties"), "{message}");
        let message = tool
            .validate_arguments(&json!({"trailing_drawdown": 0}))
            .unwrap_err();
        assert!(
            message.contains("trailing_drawdown:") && message.contains("rule: exclusiveMinimum"),
            "{message}"
        );
        assert_eq!(
            tool.validate_arguments(&json!({"trailing_mode": "end_of_day"})),
            Err(
                "Invalid arguments for GetWatermarks: trailing_drawdown: required when \
                 trailing_mode or trailing_stop_at is given (rule: required)"
                    .to_owned()
            )
        );
        let full = json!({"account": "Sim101", "trailing_drawdown": 2500,
            "trailing_mode": "end_of_day", "trailing_stop_at": 50000});
        assert_eq!(tool.validate_arguments(&full), Ok(()));
        assert_eq!(
            StoredTool::Watermarks.request(full),
            Ok(HistoryRequest::Watermarks {
                account: Some("Sim101".to_owned()),
                trailing: Some(TrailingRule {
                    amount: 2500.0,
                    mode: TrailingMode::EndOfDay,
                    stop_at: Some(50_000.0),
                }),
            })
        );
        assert_eq!(
            StoredTool::Watermarks.request(json!({"trailing_drawdown": 100.5})),
            Ok(HistoryRequest::Watermarks {
                account: None,
                trailing: Some(TrailingRule {
                    amount: 100.5,
                    mode: TrailingMode::Intraday,
                    stop_at: None,
                }),
            })
        );
        assert_eq!(
            StoredTool::Watermarks.request(json!({})),
            Ok(HistoryRequest::Watermarks {
                account: None,
                trailing: None,
            })
        );
        assert_eq!(
            tool.def.description,
            "Read per-account watermarks of net liquidation value (cash plus open profit) from \
             the snapshots the Add-On reported: the latest value, the all-time and \
             current-session high and low with their times (a session starts where the Add-On \
             says, else at 17:00 America/Chicago), the drawdown from the high and the largest \
             drawdown with its peak and trough. With `trailing_drawdown` also the trailing \
             threshold (peak minus that amount, capped at `trailing_stop_at`; the peak follows \
             every value intraday, or session closes end_of_day), how far the latest value is \
             above it and when a value first reached it. Funded-account rules differ: give the \
             amount and mode your firm uses. Works while NinjaTrader 8 is closed."
        );
    }

    #[test]
    fn watermark_output_schema_states_every_field() {
        let tool = catalog().get("GetWatermarks").unwrap();
        let mark = json!({
            "account": "Sim101", "basis": "net_liquidation",
            "latest": {"value": 50_120.0, "at": "2026-11-20T16:00:00Z"},
            "all_time": {"high": 50_500.0, "high_at": "2026-11-19T15:00:00Z",
                         "low": 49_000.0, "low_at": "2026-11-18T15:00:00Z"},
            "session": {"start": "2026-11-19T23:00:00Z", "source": "cme_globex",
                        "open": 50_010.0, "open_at": "2026-11-20T00:10:00Z",
                        "high": 50_200.0, "high_at": "2026-11-20T14:00:00Z",
                        "low": 49_950.0, "low_at": "2026-11-20T15:00:00Z"},
            "drawdown": {"from_high": 380.0, "max": 1_500.0,
                         "max_peak_at": "2026-11-17T15:00:00Z",
                         "max_trough_at": "2026-11-18T15:00:00Z"},
            "trailing": {"mode": "intraday", "amount": 2_500.0, "stop_at": null,
                         "peak": 50_500.0, "threshold": 48_000.0, "remaining": 2_120.0,
                         "breached_at": null},
        });
        assert_eq!(
            tool.validate_output(&json!({"watermarks": [mark.clone()]})),
            Ok(())
        );
        let mut untrailed = mark.clone();
        untrailed["trailing"] = Value::Null;
        untrailed["drawdown"]["max_peak_at"] = Value::Null;
        untrailed["drawdown"]["max_trough_at"] = Value::Null;
        assert_eq!(
            tool.validate_output(&json!({"watermarks": [untrailed]})),
            Ok(())
        );
        let mut missing = mark;
        missing["session"].as_object_mut().unwrap().remove("open");
        assert!(
            tool.validate_output(&json!({"watermarks": [missing]}))
                .is_err()
        );
    }

    #[test]
    fn markdown_lists_every_tool() {
        let table = tool_table_markdown();
        assert!(table.starts_with("| Tool | Scope | Route | Description |\n"));
        assert!(table.contains("| `GetMcpCapabilities` | `mcp:read` | backend | Report what"));
        assert!(table.contains("| `RunStrategyBacktest` | `mcp:trade` | Add-On (job) |"));
        assert!(table.contains("| `GetJob` | `mcp:read` | backend (jobs) |"));
        assert_eq!(table.lines().count(), catalog().tools().count() + 2);
    }
}
