//! `crosstrade-bench`: the parts of `bench/run` that a plain HTTP load generator cannot play.
//!
//! - `hello`: an axum hello-world server, the throughput ceiling of the machine;
//! - `prepare`: the whole OAuth flow for one account, printing its tokens for `wrk`;
//! - `exchange`, `refresh`, `register`: token-endpoint load, where every request needs a fresh
//!   code, the latest refresh token or a new redirect URI; after the load, the security
//!   properties are checked (a code is consumed atomically, a rotated refresh token presented
//!   again ends its grant);
//! - `idle-ws`: opens idle Add-On sockets and reads the server's resident memory around them.
//!
//! Every load command prints one JSON object on stdout: requests, errors, seconds, rps and the
//! p50, p99 and max latency in milliseconds.
#![expect(
    clippy::print_stdout,
    reason = "the driver's answer is its JSON on stdout"
)]
#![expect(
    clippy::cast_precision_loss,
    reason = "request counts and microsecond latencies are far below 2^52"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use testkit::oauth::{Endpoint, Flow};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Parser)]
#[command(about = "Load driver for the CrossTrade benchmark suite (bench/run)")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Account {
    /// The server's base URL, e.g. http://127.0.0.1:18080
    #[arg(long)]
    url: String,
    #[arg(long)]
    email: String,
    #[arg(long, default_value = testkit::oauth::PASSWORD)]
    password: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve "Hello, World!" at / with axum (the ceiling).
    Hello {
        #[arg(long)]
        listen: String,
        /// Microseconds of CPU the handler spends before answering (0: none). Measures what a
        /// request doing that much work costs with nothing else in the server.
        #[arg(long, default_value_t = 0)]
        work_us: u64,
    },
    /// Register a client, sign in, consent and exchange; print the token response.
    Prepare {
        #[command(flatten)]
        account: Account,
        #[arg(long, default_value = "mcp:trade")]
        scope: String,
    },
    /// Authorization-code exchanges: mint `codes` codes first, then exchange them all.
    Exchange {
        #[command(flatten)]
        account: Account,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        #[arg(long)]
        codes: usize,
    },
    /// Refresh-token rotation: one grant per connection, each rotating its token in a loop.
    Refresh {
        #[command(flatten)]
        account: Account,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        #[arg(long)]
        seconds: f64,
    },
    /// Dynamic client registration, each request with a new redirect URI.
    Register {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        #[arg(long)]
        seconds: f64,
    },
    /// Open idle Add-On sockets (one key per line in `keys`) in steps, reading the server's RSS.
    IdleWs {
        /// ws://host:port/v1/addon/ws
        #[arg(long)]
        url: String,
        #[arg(long)]
        keys: std::path::PathBuf,
        /// Cumulative socket counts at which memory is read, e.g. 1000,10000.
        #[arg(long, value_delimiter = ',')]
        steps: Vec<usize>,
        #[arg(long)]
        server_pid: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.command {
            Command::Hello { listen, work_us } => hello(&listen, work_us).await,
            Command::Prepare { account, scope } => prepare(&account, &scope).await,
            Command::Exchange {
                account,
                connections,
                codes,
            } => exchange(&account, connections, codes).await,
            Command::Refresh {
                account,
                connections,
                seconds,
            } => refresh(&account, connections, Duration::from_secs_f64(seconds)).await,
            Command::Register {
                url,
                connections,
                seconds,
            } => register(&url, connections, Duration::from_secs_f64(seconds)).await,
            Command::IdleWs {
                url,
                keys,
                steps,
                server_pid,
            } => idle_ws(&url, &keys, &steps, server_pid).await,
        }
    })
}

async fn hello(listen: &str, work_us: u64) -> anyhow::Result<()> {
    let work = Duration::from_micros(work_us);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move {
            if !work.is_zero() {
                spin(work);
            }
            "Hello, World!"
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Keeps the CPU busy for `work`.
fn spin(work: Duration) {
    let start = Instant::now();
    let mut rounds = 0_u64;
    while start.elapsed() < work {
        rounds = std::hint::black_box(rounds.wrapping_add(1));
    }
}

async fn prepare(account: &Account, scope: &str) -> anyhow::Result<()> {
    let server = Endpoint::new(&account.url);
    let mut flow = Flow::new_with_password(&server, &account.email, &account.password).await;
    let tokens = flow.tokens(&server, scope, scope).await;
    println!("{tokens}");
    Ok(())
}

/// Latencies of one scenario, merged from every connection.
#[derive(Default)]
struct Recorder {
    micros: Vec<u32>,
    errors: usize,
}

impl Recorder {
    fn record(&mut self, started: Instant, ok: bool) {
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.micros.push(micros);
        if !ok {
            self.errors += 1;
        }
    }

    fn merge(&mut self, other: Recorder) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
    }

    fn report(mut self, elapsed: Duration, extra: Value) -> Value {
        self.micros.sort_unstable();
        let quantile = |q: f64| -> f64 {
            if self.micros.is_empty() {
                return 0.0;
            }
            let rank = (q * (self.micros.len() - 1) as f64).round();
            // In range: rank is between 0 and len - 1.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "see above"
            )]
            let index = rank as usize;
            f64::from(self.micros[index]) / 1000.0
        };
        let seconds = elapsed.as_secs_f64();
        let mut report = json!({
            "requests": self.micros.len(),
            "errors": self.errors,
            "seconds": seconds,
            "rps": self.micros.len() as f64 / seconds,
            "p50_ms": quantile(0.50),
            "p99_ms": quantile(0.99),
            "max_ms": self.micros.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        });
        if let (Some(report), Value::Object(extra)) = (report.as_object_mut(), extra) {
            report.extend(extra);
        }
        report
    }
}

/// Browsers signed in at once: each sign-in is a deliberately slow password hash.
const BROWSERS: usize = 8;

/// Signs in `count` browsers in parallel, each with its own registered client.
async fn flows(server: &Endpoint, account: &Account, count: usize) -> Vec<Flow> {
    // One sign-in at a time: parallel attempts on one account each hold a failure slot while
    // the password is checked, and more than the per-account limit at once is throttled.
    let mut flows = Vec::new();
    for _ in 0..count {
        flows.push(Flow::new_with_password(server, &account.email, &account.password).await);
    }
    flows
}

/// A code and the browser (client, redirect URI, PKCE verifier) it was minted for.
type Minted = (Arc<Flow>, String);

async fn exchange(account: &Account, connections: usize, codes: usize) -> anyhow::Result<()> {
    let server = Endpoint::new(&account.url);
    // Minting needs a consent click per code; a few browsers do it in parallel.
    let minters = flows(&server, account, BROWSERS).await;
    let minted_at = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for mut flow in minters {
        let (server, next) = (server.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < codes + 1 {
                mine.push(flow.code(&server, "mcp:read", "mcp:read").await);
            }
            (Arc::new(flow), mine)
        }));
    }
    let mut work: Vec<Minted> = Vec::new();
    for task in tasks {
        let (flow, mine) = task.await?;
        work.extend(mine.into_iter().map(|code| (Arc::clone(&flow), code)));
    }
    let mint_seconds = minted_at.elapsed().as_secs_f64();
    // One code is kept back to check that a code is consumed exactly once under a race.
    let (race_flow, race_code) = work.pop().context("no code was minted")?;
    let work = Arc::new(Mutex::new(work));
    let first_used: Arc<Mutex<Option<Minted>>> = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (server, work, first_used) =
            (server.clone(), Arc::clone(&work), Arc::clone(&first_used));
        tasks.push(tokio::spawn(async move {
            let mut recorder = Recorder::default();
            loop {
                let Some((flow, code)) = work.lock().await.pop() else {
                    break;
                };
                let sent = Instant::now();
                let status = flow.exchange(&server, &code).await.status();
                recorder.record(sent, status == reqwest::StatusCode::OK);
                first_used.lock().await.get_or_insert((flow, code));
            }
            recorder
        }));
    }
    let mut recorder = Recorder::default();
    for task in tasks {
        recorder.merge(task.await?);
    }
    let elapsed = started.elapsed();
    // Security: a used code is refused; two racing exchanges of one code yield one token.
    let (flow, code) = first_used
        .lock()
        .await
        .take()
        .context("no exchange was made")?;
    let replay_refused = flow.exchange(&server, &code).await.status() == 400;
    let (a, b) = tokio::join!(
        race_flow.exchange(&server, &race_code),
        race_flow.exchange(&server, &race_code)
    );
    let winners = [a.status(), b.status()]
        .iter()
        .filter(|status| **status == reqwest::StatusCode::OK)
        .count();
    let checks = replay_refused && winners == 1;
    println!(
        "{}",
        recorder.report(
            elapsed,
            json!({ "mint_seconds": mint_seconds, "security_checks_passed": checks }),
        )
    );
    if !checks {
        bail!("security checks failed: replay refused {replay_refused}, race winners {winners}");
    }
    Ok(())
}

fn refresh_token_of(body: &Value) -> anyhow::Result<String> {
    body["refresh_token"]
        .as_str()
        .map(str::to_owned)
        .context("no refresh_token in the token response")
}

async fn refresh(account: &Account, connections: usize, duration: Duration) -> anyhow::Result<()> {
    let server = Endpoint::new(&account.url);
    // A few signed-in browsers, each consenting to several grants (one grant per connection).
    let mut signed_in = flows(&server, account, connections.min(BROWSERS)).await;
    if signed_in.is_empty() {
        bail!("no browser could sign in");
    }
    let mut grants = Vec::new();
    for index in 0..connections {
        let browser = index % signed_in.len();
        let tokens = signed_in[browser]
            .tokens(&server, "mcp:read", "mcp:read")
            .await;
        grants.push((browser, refresh_token_of(&tokens)?));
    }
    let signed_in: Vec<Arc<Flow>> = signed_in.into_iter().map(Arc::new).collect();
    let chains: Vec<(Arc<Flow>, String)> = grants
        .into_iter()
        .map(|(browser, first)| (Arc::clone(&signed_in[browser]), first))
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (flow, first) in chains {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut recorder = Recorder::default();
            let mut current = first.clone();
            while started.elapsed() < duration {
                let sent = Instant::now();
                let response = flow.refresh(&server, &current).await;
                let ok = response.status() == reqwest::StatusCode::OK;
                if ok {
                    let body: Value = response.json().await.unwrap_or_default();
                    if let Ok(next) = refresh_token_of(&body) {
                        current = next;
                    }
                }
                recorder.record(sent, ok);
            }
            (recorder, flow, first, current)
        }));
    }
    let mut recorder = Recorder::default();
    let mut chains = Vec::new();
    for task in tasks {
        let (part, flow, first, current) = task.await?;
        recorder.merge(part);
        chains.push((flow, first, current));
    }
    let elapsed = started.elapsed();
    // Security: the first, long-rotated token is refused and its replay ends the grant, so
    // the latest token stops working too.
    let (flow, first, current) = chains.first().context("no connection")?;
    let reuse_refused = flow.refresh(&server, first).await.status() == 400;
    let grant_ended = flow.refresh(&server, current).await.status() == 400;
    let checks = reuse_refused && grant_ended;
    println!(
        "{}",
        recorder.report(elapsed, json!({ "security_checks_passed": checks }))
    );
    if !checks {
        bail!("security checks failed: reuse refused {reuse_refused}, grant ended {grant_ended}");
    }
    Ok(())
}

async fn register(url: &str, connections: usize, duration: Duration) -> anyhow::Result<()> {
    let server = Endpoint::new(url);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut recorder = Recorder::default();
            let mut n = 0u64;
            while started.elapsed() < duration {
                n += 1;
                let body = json!({
                    "client_name": "Bench Client",
                    "redirect_uris": [format!("http://127.0.0.1/callback/{worker}/{n}")],
                });
                let sent = Instant::now();
                let status = server.register(body).await.status();
                recorder.record(sent, status == reqwest::StatusCode::CREATED);
            }
            recorder
        }));
    }
    let mut recorder = Recorder::default();
    for task in tasks {
        recorder.merge(task.await?);
    }
    println!("{}", recorder.report(started.elapsed(), json!({})));
    Ok(())
}

/// The resident set size of a process, in KiB, from `/proc`.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmRSS line")
}

async fn idle_ws(
    url: &str,
    keys: &std::path::Path,
    steps: &[usize],
    server_pid: u32,
) -> anyhow::Result<()> {
    let keys: Vec<String> = std::fs::read_to_string(keys)?
        .lines()
        .map(str::to_owned)
        .collect();
    let baseline = rss_kib(server_pid)?;
    let mut open = Vec::new();
    let mut results = Vec::new();
    for &step in steps {
        if step > keys.len() {
            bail!("{step} sockets need {step} keys; {} given", keys.len());
        }
        let started = Instant::now();
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        let mut connecting = Vec::new();
        for key in &keys[open.len()..step] {
            let (url, key, limit) = (url.to_owned(), key.clone(), Arc::clone(&limit));
            connecting.push(tokio::spawn(async move {
                let permit = limit.acquire_owned().await?;
                let mut request = url.into_client_request()?;
                request.headers_mut().insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {key}"))?,
                );
                let config = WebSocketConfig::default().read_buffer_size(4096);
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(request, Some(config), false)
                        .await?;
                let hello = json!({
                    "v": 1, "type": "hello", "addon_version": "1.13.4",
                    "nt8_version": "8.1.4.1", "features": ["orders"],
                });
                ws.send(Message::text(hello.to_string())).await?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(text))) if text.contains("\"welcome\"") => break,
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return Err(err.into()),
                        None => bail!("closed before the welcome"),
                    }
                }
                drop(permit);
                // Idle from here on: reading answers the server's pings.
                Ok::<_, anyhow::Error>(tokio::spawn(async move {
                    while let Some(Ok(_)) = ws.next().await {}
                }))
            }));
        }
        let mut failed = 0usize;
        for task in connecting {
            match task.await? {
                Ok(handle) => open.push(handle),
                Err(_) => failed += 1,
            }
        }
        if failed > 0 {
            bail!("{failed} of {step} sockets failed to connect");
        }
        let connect_seconds = started.elapsed().as_secs_f64();
        // Let the server finish its per-connection bookkeeping before reading memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = rss_kib(server_pid)?;
        results.push(json!({
            "connections": step,
            "connect_seconds": connect_seconds,
            "rss_kib": rss,
            "kib_per_connection": rss.saturating_sub(baseline) as f64 / step as f64,
        }));
    }
    println!(
        "{}",
        json!({ "baseline_rss_kib": baseline, "steps": results })
    );
    for handle in open {
        handle.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let recorder = Recorder {
            micros: (1..=100).collect(),
            errors: 0,
        };
        let report = recorder.report(Duration::from_secs(1), json!({}));
        assert_eq!(report["requests"], 100);
        assert_eq!(report["max_ms"], 0.1);
        assert!((report["p50_ms"].as_f64().unwrap() - 0.05).abs() < 0.0015);
    }
}
