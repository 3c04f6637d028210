//! The simulated NinjaTrader 8: one consistent state that every tool reads and changes.
#![expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap,
    reason = "contract counts and line counts are small"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use crate::lock;
use crate::outbox::Outbox;

mod signals;

mod charts;

type Answer = Result<Value, String>;

#[derive(Debug, Clone)]
#[expect(clippy::struct_field_names, reason = "NinjaTrader's own field names")]
struct Order {
    id: String,
    account: String,
    instrument: String,
    action: String,
    order_type: String,
    quantity: i64,
    limit_price: Option<f64>,
    stop_price: Option<f64>,
    state: &'static str,
    fill_price: Option<f64>,
}

/// Accounts, positions, orders, executions, prices, scripts and backtests.
#[derive(Debug)]
pub struct Sim {
    cash: BTreeMap<String, f64>,
    realized: BTreeMap<String, f64>,
    /// (account, instrument) → (signed quantity, average price).
    positions: BTreeMap<(String, String), (i64, f64)>,
    orders: Vec<Order>,
    executions: Vec<Value>,
    prices: BTreeMap<String, f64>,
    backtests: Vec<Value>,
    strategies: BTreeMap<String, Value>,
    charts: charts::Charts,
    clock: store::clock::Clock,
    /// The simulated trading session begins when the simulator starts.
    session_start: String,
    scripts: PathBuf,
    backtest_wait: Duration,
    counter: u64,
    /// Jobs running now, by id, with their cancel flags.
    pub(crate) jobs: BTreeMap<String, std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The current connection's frames out, for events sent outside a call.
    pub(crate) events: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Events awaiting the backend's acknowledgement, kept across reconnects.
    outbox: Outbox,
    /// Whether the trade copier mirrors Sim101's fills (see [`Sim::with_copier`]).
    copier: bool,
    /// When the simulation began: the webhook backlog's times are fixed relative to it.
    started: chrono::DateTime<chrono::Utc>,
}

const EXAMPLE: &str = "namespace NinjaTrader.NinjaScript.Strategies\n{\n    public class SampleMaCross : Strategy\n    {\n        protected override void OnBarUpdate() { }\n    }\n}\n";

impl Sim {
    pub fn new(scripts: PathBuf, backtest_time: Duration) -> std::io::Result<Self> {
        for kind in ["Indicators", "Strategies", "AddOns", "DrawingTools"] {
            std::fs::create_dir_all(scripts.join(kind))?;
        }
        let sample = scripts.join("Strategies/SampleMaCross.cs");
        if !sample.exists() {
            std::fs::write(sample, EXAMPLE)?;
        }
        let accounts = [("Sim101", 100_000.0), ("Sim102", 50_000.0)];
        let clock = store::clock::Clock::system();
        Ok(Self {
            cash: accounts
                .iter()
                .map(|(a, c)| ((*a).to_owned(), *c))
                .collect(),
            realized: accounts
                .iter()
                .map(|(a, _)| ((*a).to_owned(), 0.0))
                .collect(),
            positions: BTreeMap::new(),
            orders: Vec::new(),
            executions: Vec::new(),
            prices: [
                ("ES 12-26", 5000.0),
                ("NQ 12-26", 18000.0),
                ("MES 12-26", 5000.0),
                ("CL 01-27", 70.0),
            ]
            .iter()
            .map(|(i, p)| ((*i).to_owned(), *p))
            .collect(),
            backtests: Vec::new(),
            strategies: BTreeMap::new(),
            started: clock.now(),
            session_start: clock.now().to_rfc3339(),
            clock,
            charts: charts::Charts::new(),
            scripts,
            backtest_wait: backtest_time,
            counter: 0,
            jobs: BTreeMap::new(),
            events: None,
            outbox: Outbox::default(),
            copier: false,
        })
    }

    /// Turns the trade copier on: every fill in Sim101 (not itself a copy) is copied to Sim102
    /// and skipped for Sim103, which is never connected, each reported as a `copier_action`.
    #[must_use]
    pub fn with_copier(mut self) -> Self {
        self.copier = true;
        self
    }

    /// The frames to send after a welcome: a snapshot per account, then every event not yet
    /// acknowledged, the webhook and copier backlog included (same ids every time).
    pub fn welcome(&mut self) -> Vec<String> {
        let mut frames: Vec<String> = self.snapshots().iter().map(Value::to_string).collect();
        for event in signals::backlog(self.started) {
            self.outbox.hold(&event);
        }
        frames.extend(self.outbox.pending());
        frames
    }

    /// The frames of events to send now; those with an `id` are kept until acknowledged and
    /// sent again after the next welcome.
    pub fn post(&mut self, events: &[Value]) -> Vec<String> {
        events.iter().map(|event| self.outbox.post(event)).collect()
    }

    /// The backend stored the event with this id.
    pub fn acked(&mut self, id: &str) {
        self.outbox.acked(id);
    }

    /// How many events the backend has not acknowledged yet.
    pub fn unacknowledged(&self) -> usize {
        self.outbox.len()
    }

    pub(crate) fn backtest_wait(&self) -> Duration {
        self.backtest_wait
    }

    pub(crate) fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    fn now(&self) -> String {
        self.clock.now().to_rfc3339()
    }

    /// The price moves a quarter point at every look, deterministically.
    fn price(&mut self, instrument: &str) -> f64 {
        self.counter += 1;
        let step = if self.counter.is_multiple_of(3) {
            -0.25
        } else {
            0.25
        };
        let price = self.prices.entry(instrument.to_owned()).or_insert(100.0);
        *price += step;
        *price
    }

    /// Account snapshot events for every account.
    pub fn snapshots(&self) -> Vec<Value> {
        self.cash
            .keys()
            .map(|account| self.snapshot(account))
            .collect()
    }

    fn unrealized(&self, account: &str) -> f64 {
        self.positions
            .iter()
            .filter(|((a, _), _)| a == account)
            .map(|((_, i), (qty, avg))| {
                (self.prices.get(i).copied().unwrap_or(*avg) - avg) * *qty as f64
            })
            .sum()
    }

    fn snapshot(&self, account: &str) -> Value {
        let cash = self.cash.get(account).copied().unwrap_or_default();
        let unrealized = self.unrealized(account);
        json!({"v": 1, "type": "event", "kind": "account_snapshot", "data": {
            "account": account, "cash_value": cash, "net_liquidation": cash + unrealized,
            "realized_pnl": self.realized.get(account).copied().unwrap_or_default(),
            "unrealized_pnl": unrealized, "time": self.now(),
            "session_start": self.session_start,
        }})
    }

    fn account_json(&self, account: &str) -> Value {
        let cash = self.cash.get(account).copied().unwrap_or_default();
        let unrealized = self.unrealized(account);
        json!({"name": account, "connection": "Simulated Data Feed", "cash_value": cash,
               "net_liquidation": cash + unrealized, "realized_pnl": self.realized[account],
               "unrealized_pnl": unrealized, "buying_power": (cash + unrealized) * 4.0})
    }

    fn order_json(o: &Order) -> Value {
        json!({"order_id": o.id, "account": o.account, "instrument": o.instrument, "action": o.action,
               "order_type": o.order_type, "quantity": o.quantity, "limit_price": o.limit_price,
               "stop_price": o.stop_price, "state": o.state, "fill_price": o.fill_price})
    }

    /// Fills `quantity` (signed) at `price` as [`Sim::fill_one`] does; with the copier on, a
    /// fill in the leader account is then copied to its followers.
    fn fill(
        &mut self,
        account: &str,
        instrument: &str,
        signed: i64,
        price: f64,
        order_id: &str,
    ) -> Vec<Value> {
        let mut events = self.fill_one(account, instrument, signed, price, order_id);
        if self.copier && account == signals::LEADER {
            events.extend(self.copy(instrument, signed, price, order_id));
        }
        events
    }

    /// The copier's answer to the leader fill just made: the follower's order, filled at the
    /// leader's price, and one `copier_action` per follower.
    fn copy(
        &mut self,
        instrument: &str,
        signed: i64,
        price: f64,
        leader_order: &str,
    ) -> Vec<Value> {
        let execution_id = self
            .executions
            .last()
            .and_then(|e| e["execution_id"].as_str())
            .unwrap_or_default()
            .to_owned();
        let follower_order = self.next_id("O");
        let action = if signed > 0 { "Buy" } else { "Sell" };
        self.orders.push(Order {
            id: follower_order.clone(),
            account: signals::FOLLOWER.to_owned(),
            instrument: instrument.to_owned(),
            action: action.to_owned(),
            order_type: "Market".to_owned(),
            quantity: signed.abs(),
            limit_price: None,
            stop_price: None,
            state: "Filled",
            fill_price: Some(price),
        });
        let mut events = self.fill_one(
            signals::FOLLOWER,
            instrument,
            signed,
            price,
            &follower_order,
        );
        let fill = signals::Fill {
            execution_id: &execution_id,
            order_id: leader_order,
            instrument,
            action,
            quantity: signed.abs(),
            price,
        };
        let time = self.now();
        events.push(signals::placed(
            &format!("cp-{execution_id}-{}", signals::FOLLOWER),
            &time,
            &fill,
            &follower_order,
        ));
        events.push(signals::skipped(
            &format!("cp-{execution_id}-{}", signals::ABSENT),
            &time,
            &fill,
        ));
        events
    }

    /// Fills `quantity` (signed) at `price`: position, cash, an execution and a snapshot event.
    fn fill_one(
        &mut self,
        account: &str,
        instrument: &str,
        signed: i64,
        price: f64,
        order_id: &str,
    ) -> Vec<Value> {
        let key = (account.to_owned(), instrument.to_owned());
        let (qty, avg) = self.positions.get(&key).copied().unwrap_or((0, 0.0));
        let new_qty = qty + signed;
        let closing = if qty != 0 && qty.signum() != signed.signum() {
            signed.abs().min(qty.abs())
        } else {
            0
        };
        let realized = (price - avg) * (closing * qty.signum()) as f64;
        *self.realized.entry(account.to_owned()).or_default() += realized;
        *self.cash.entry(account.to_owned()).or_default() += realized - 2.04;
        let new_avg = if new_qty == 0 {
            0.0
        } else if qty.signum() == new_qty.signum() && closing > 0 {
            avg
        } else if qty.signum() == new_qty.signum() {
            (avg * qty as f64 + price * signed as f64) / new_qty as f64
        } else {
            price
        };
        if new_qty == 0 {
            self.positions.remove(&key);
        } else {
            self.positions.insert(key, (new_qty, new_avg));
        }
        let execution_id = self.next_id("X");
        let execution = json!({"execution_id": execution_id, "account": account, "instrument": instrument,
            "action": if signed > 0 { "Buy" } else { "Sell" }, "quantity": signed.abs(), "price": price,
            "commission": 2.04, "order_id": order_id, "time": self.now()});
        self.executions.push(execution.clone());
        vec![
            json!({"v": 1, "type": "event", "id": format!("ev-{execution_id}"), "kind": "execution", "data": execution}),
            self.snapshot(account),
        ]
    }

    fn account_arg(&self, args: &Value) -> Result<String, String> {
        let account = args["account"].as_str().unwrap_or_default();
        if self.cash.contains_key(account) {
            Ok(account.to_owned())
        } else {
            Err(format!(
                "Unknown account '{account}'. Accounts: Sim101, Sim102"
            ))
        }
    }

    fn place(&mut self, args: &Value) -> (Answer, Vec<Value>) {
        let account = match self.account_arg(args) {
            Ok(a) => a,
            Err(e) => return (Err(e), vec![]),
        };
        let instrument = args["instrument"].as_str().unwrap_or("ES 12-26").to_owned();
        let action = args["action"].as_str().unwrap_or("Buy").to_owned();
        let quantity = args["quantity"].as_i64().unwrap_or(1);
        let order_type = args["order_type"].as_str().unwrap_or("Market").to_owned();
        let price = self.price(&instrument);
        let signed = if action == "Buy" { quantity } else { -quantity };
        let limit_price = args["limit_price"].as_f64();
        let marketable = match (order_type.as_str(), limit_price) {
            ("Market", _) => true,
            ("Limit", Some(limit)) => {
                if signed > 0 {
                    limit >= price
                } else {
                    limit <= price
                }
            }
            _ => false,
        };
        let id = self.next_id("O");
        let mut order = Order {
            id: id.clone(),
            account: account.clone(),
            instrument: instrument.clone(),
            action,
            order_type,
            quantity,
            limit_price,
            stop_price: args["stop_price"].as_f64(),
            state: "Working",
            fill_price: None,
        };
        let mut events = vec![];
        if marketable {
            order.state = "Filled";
            order.fill_price = Some(price);
            events = self.fill(&account, &instrument, signed, price, &id);
        }
        let json = Self::order_json(&order);
        self.orders.push(order);
        (Ok(json), events)
    }

    fn flatten(&mut self, account: Option<&str>, instrument: Option<&str>) -> (Answer, Vec<Value>) {
        let targets: Vec<_> = self
            .positions
            .iter()
            .filter(|((a, i), _)| {
                account.is_none_or(|x| x == a) && instrument.is_none_or(|x| x == i)
            })
            .map(|(k, (q, _))| (k.clone(), *q))
            .collect();
        let mut events = vec![];
        let mut closed = vec![];
        for ((a, i), qty) in targets {
            let price = self.price(&i);
            let id = self.next_id("O");
            events.extend(self.fill(&a, &i, -qty, price, &id));
            closed.push(json!({"account": a, "instrument": i, "quantity": qty, "price": price}));
        }
        for o in self.orders.iter_mut().filter(|o| {
            o.state == "Working"
                && account.is_none_or(|x| x == o.account)
                && instrument.is_none_or(|x| x == o.instrument)
        }) {
            o.state = "Cancelled";
        }
        (Ok(json!({"flattened": closed})), events)
    }

    fn script_path(&self, args: &Value) -> Result<PathBuf, String> {
        let path = args["path"].as_str().unwrap_or_default();
        if path.is_empty()
            || path.contains("..")
            || path.starts_with('/')
            || !Path::new(path)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("cs"))
        {
            return Err(format!("invalid NinjaScript path '{path}'"));
        }
        Ok(self.scripts.join(path))
    }

    fn list_scripts(dir: &Path, root: &Path, out: &mut Vec<Value>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                Self::list_scripts(&path, root, out);
            } else if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("cs"))
            {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                let size = entry.metadata().map_or(0, |m| m.len());
                out.push(json!({"path": rel, "size": size}));
            }
        }
    }

    /// Compile errors: unbalanced braces or a missing namespace, per file.
    /// The compiler's report on every script: `success` and the errors (file, line, code).
    pub(crate) fn compile_report(&self) -> Value {
        let mut files = vec![];
        Self::list_scripts(&self.scripts, &self.scripts, &mut files);
        let mut errors = vec![];
        for file in &files {
            let path = file["path"].as_str().unwrap_or_default();
            let source = std::fs::read_to_string(self.scripts.join(path)).unwrap_or_default();
            let mut depth = 0i64;
            for (n, line) in source.lines().enumerate() {
                depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
                if depth < 0 {
                    errors.push(json!({"file": path, "line": n + 1, "code": "CS1022", "message": "Type or namespace definition, or end-of-file expected"}));
                    break;
                }
            }
            if depth > 0 {
                errors.push(json!({"file": path, "line": source.lines().count(), "code": "CS1513", "message": "} expected"}));
            }
            if !source.contains("namespace") {
                errors.push(json!({"file": path, "line": 1, "code": "CS0116", "message": "A namespace cannot directly contain members such as fields or methods"}));
            }
        }
        json!({"success": errors.is_empty(), "files": files.len(), "errors": errors})
    }

    fn compile(&self) -> Answer {
        let report = self.compile_report();
        if report["success"] == true {
            Ok(report)
        } else {
            let errors = &report["errors"];
            Err(format!(
                "Compilation failed with {} error(s): {errors}",
                errors.as_array().map_or(0, Vec::len),
            ))
        }
    }

    /// Answers one call; may wait (backtests). Returns the answer and events to send after it.
    pub async fn handle(sim: &Mutex<Sim>, tool: &str, args: &Value) -> (Answer, Vec<Value>) {
        if tool == "RunStrategyBacktest" {
            let wait = lock(sim).backtest_wait;
            tokio::time::sleep(wait).await;
        }
        lock(sim).answer(tool, args)
    }

    #[expect(clippy::too_many_lines, reason = "one arm per tool")]
    pub(crate) fn answer(&mut self, tool: &str, args: &Value) -> (Answer, Vec<Value>) {
        if let Some(answer) = self.charts.answer(tool, args, &self.prices) {
            return (answer, vec![]);
        }
        let account = args["account"].as_str();
        let instrument = args["instrument"].as_str();
        let result: Answer = match tool {
            "GetAccounts" => Ok(
                json!({"accounts": self.cash.keys().map(|a| self.account_json(a)).collect::<Vec<_>>()}),
            ),
            "GetConnections" => Ok(
                json!({"connections": [{"name": "Simulated Data Feed", "status": "Connected", "provider": "Simulator"}]}),
            ),
            "GetPositions" => Ok(json!({"positions": self.positions.iter()
                .filter(|((a, i), _)| account.is_none_or(|x| x == a) && instrument.is_none_or(|x| x == i))
                .map(|((a, i), (q, p))| json!({"account": a, "instrument": i, "quantity": q.abs(),
                    "market_position": if *q > 0 { "Long" } else { "Short" }, "average_price": p}))
                .collect::<Vec<_>>()})),
            "GetOrders" => {
                let state = args["state"].as_str().unwrap_or("working");
                let wanted = |o: &Order| match state {
                    "all" => true,
                    "filled" => o.state == "Filled",
                    "cancelled" => o.state == "Cancelled",
                    _ => o.state == "Working",
                };
                Ok(json!({"orders": self.orders.iter()
                    .filter(|o| wanted(o) && account.is_none_or(|x| x == o.account) && instrument.is_none_or(|x| x == o.instrument))
                    .map(Self::order_json).collect::<Vec<_>>()}))
            }
            "GetExecutions" => Ok(json!({"executions": self.executions.iter()
                .filter(|e| account.is_none_or(|x| e["account"] == x) && instrument.is_none_or(|x| e["instrument"] == x))
                .cloned().collect::<Vec<_>>()})),
            "GetMarketData" => {
                let instrument = instrument.unwrap_or("ES 12-26").to_owned();
                let last = self.price(&instrument);
                let bars = args["bars"].as_u64().map(|n| (0..n).map(|k| {
                    let close = last - 0.25 * (k % 7) as f64;
                    json!({"open": close - 0.5, "high": close + 0.75, "low": close - 1.0, "close": close, "volume": 1000 + k * 13})
                }).collect::<Vec<_>>());
                Ok(
                    json!({"instrument": instrument, "quote": {"last": last, "bid": last - 0.25, "ask": last + 0.25, "time": self.now()}, "bars": bars}),
                )
            }
            "ListNinjaScriptFiles" => {
                let mut files = vec![];
                let kind = args["kind"].as_str().filter(|k| *k != "All");
                let dir = kind.map_or(self.scripts.clone(), |k| self.scripts.join(k));
                Self::list_scripts(&dir, &self.scripts, &mut files);
                files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
                Ok(json!({"files": files}))
            }
            "ReadNinjaScriptFile" => self.script_path(args).and_then(|p| {
                std::fs::read_to_string(&p)
                    .map(|content| json!({"path": args["path"], "content": content}))
                    .map_err(|_| {
                        format!(
                            "no such file: {}",
                            args["path"].as_str().unwrap_or_default()
                        )
                    })
            }),
            "WriteNinjaScriptFile" => self.script_path(args).and_then(|p| {
                let content = args["content"].as_str().unwrap_or_default();
                p.parent()
                    .map(std::fs::create_dir_all)
                    .transpose()
                    .map_err(|e| e.to_string())?;
                std::fs::write(&p, content).map_err(|e| e.to_string())?;
                Ok(json!({"path": args["path"], "bytes": content.len()}))
            }),
            "CompileNinjaScript" => self.compile(),
            "GetBacktestResults" => Ok(json!({"results": self.backtests.iter()
                .filter(|b| args["job_id"].as_str().is_none_or(|j| b["job_id"] == j)).cloned().collect::<Vec<_>>()})),
            "RunStrategyBacktest" => {
                let job_id = self.next_id("BT");
                let result = json!({"job_id": job_id, "strategy": args["strategy"], "instrument": args["instrument"],
                    "from": args["from"], "to": args["to"], "trade_count": 42, "net_profit": 1250.5, "win_rate": 0.55,
                    "trades": [
                        {"entry_time": args["from"], "action": "Buy", "quantity": 1, "entry_price": 5000.25, "exit_price": 5004.75, "profit": 225.0},
                        {"entry_time": args["from"], "action": "Sell", "quantity": 1, "entry_price": 5006.0, "exit_price": 5008.5, "profit": -125.0},
                    ],
                    "max_drawdown": -612.0, "profit_factor": 1.31});
                self.backtests.push(result.clone());
                Ok(result)
            }
            "PlaceOrder" => return self.place(args),
            "ModifyOrder" | "CancelOrder" => {
                let id = args["order_id"].as_str().unwrap_or_default();
                match self.orders.iter_mut().find(|o| o.id == id) {
                    Some(o) if o.state == "Working" => {
                        if tool == "CancelOrder" {
                            o.state = "Cancelled";
                        } else {
                            o.quantity = args["quantity"].as_i64().unwrap_or(o.quantity);
                            o.limit_price = args["limit_price"].as_f64().or(o.limit_price);
                            o.stop_price = args["stop_price"].as_f64().or(o.stop_price);
                        }
                        Ok(Self::order_json(o))
                    }
                    Some(o) => Err(format!("order {id} is {} and cannot be changed", o.state)),
                    None => Err(format!("no order {id}")),
                }
            }
            "CancelAllOrders" => {
                let mut cancelled = vec![];
                for o in self.orders.iter_mut().filter(|o| {
                    o.state == "Working"
                        && account.is_none_or(|x| x == o.account)
                        && instrument.is_none_or(|x| x == o.instrument)
                }) {
                    o.state = "Cancelled";
                    cancelled.push(o.id.clone());
                }
                Ok(json!({"cancelled": cancelled}))
            }
            "FlattenPosition" => return self.flatten(account, instrument),
            "FlattenAll" => return self.flatten(account, None),
            "ReversePosition" => {
                let key = (
                    account.unwrap_or_default().to_owned(),
                    instrument.unwrap_or_default().to_owned(),
                );
                let Some((qty, _)) = self.positions.get(&key).copied() else {
                    return (Err("no position to reverse".to_owned()), vec![]);
                };
                let price = self.price(&key.1);
                let id = self.next_id("O");
                let events = self.fill(&key.0, &key.1, -2 * qty, price, &id);
                return (
                    Ok(
                        json!({"account": key.0, "instrument": key.1, "quantity": -qty, "price": price}),
                    ),
                    events,
                );
            }
            "DeployStrategy" => {
                let id = self.next_id("S");
                let s = json!({"strategy_id": id, "strategy": args["strategy"], "account": args["account"], "instrument": args["instrument"], "state": "Running"});
                self.strategies.insert(id, s.clone());
                Ok(s)
            }
            "StopStrategy" => {
                let id = args["strategy_id"].as_str().unwrap_or_default();
                match self.strategies.get_mut(id) {
                    Some(s) => {
                        s["state"] = json!("Stopped");
                        Ok(s.clone())
                    }
                    None => Err(format!("no running strategy {id}")),
                }
            }
            "EmitAlert" => Ok(
                json!({"shown": true, "message": args["message"], "priority": args["priority"].as_str().unwrap_or("Medium")}),
            ),
            other => Err(format!(
                "the CrossTrade Add-On does not know the tool {other}"
            )),
        };
        (result, vec![])
    }
}
