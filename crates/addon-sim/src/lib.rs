//! A simulated CrossTrade Add-On: connects to the backend's `/v1/addon/ws` with an Add-On key
//! and answers every Add-On tool from one consistent simulated NinjaTrader 8 (accounts,
//! positions, orders, executions, market data, NinjaScript files in a folder, backtests, charts
//! and the workspace), with
//! fault injection (latency, never answer, drop mid-call, old version), and a record of the
//! calls received for tests to await.

mod jobs;
mod outbox;
mod sim;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

pub use outbox::Outbox;
pub use sim::Sim;

/// The Add-On version the simulator announces unless told otherwise.
pub const DEFAULT_ADDON_VERSION: &str = "1.13.4";

/// How the simulator behaves.
#[derive(Clone)]
pub struct Options {
    pub url: String,
    pub key: String,
    pub addon_version: String,
    pub latency: Duration,
    /// Tools never answered ("*" for all).
    pub never_answer: Vec<String>,
    /// Drop the socket when this tool is called ("*" for any).
    pub drop_on: Option<String>,
    pub backtest: Duration,
    pub scripts_dir: PathBuf,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("url", &self.url)
            .field("key", &"[redacted]")
            .field("addon_version", &self.addon_version)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("bad key or url: {0}")]
    Request(String),
    #[error("scripts folder: {0}")]
    Io(#[from] std::io::Error),
}

fn matches(list: &[String], tool: &str) -> bool {
    list.iter().any(|t| t == "*" || t == tool)
}

/// The tools of the calls the simulator has received, in order of arrival, whether or not it
/// answers them: a test awaits a call reaching the Add-On instead of guessing how long it takes.
#[derive(Debug, Clone)]
pub struct Received(Arc<watch::Sender<Vec<ReceivedCall>>>);

/// A call's tool and the `traceparent` its frame carried.
type ReceivedCall = (String, Option<String>);

impl Default for Received {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(Vec::new())))
    }
}

impl Received {
    /// Returns once a call of `tool` has arrived (at once if one already has).
    pub async fn call(&self, tool: &str) {
        let mut calls = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while waiting.
        let _ = calls
            .wait_for(|calls| calls.iter().any(|(t, _)| t == tool))
            .await;
    }

    /// Every call received so far.
    pub fn tools(&self) -> Vec<String> {
        self.0
            .borrow()
            .iter()
            .map(|(tool, _)| tool.clone())
            .collect()
    }

    /// The `traceparent` of every call received so far, in order (`None` without one).
    pub fn traceparents(&self) -> Vec<Option<String>> {
        self.0.borrow().iter().map(|(_, tp)| tp.clone()).collect()
    }

    fn record(&self, tool: &str, traceparent: Option<&str>) {
        self.0.send_modify(|calls| {
            calls.push((tool.to_owned(), traceparent.map(str::to_owned)));
        });
    }
}

/// Connects once and serves until the socket ends. Returns the server's close code, if any.
pub async fn run(options: &Options) -> Result<Option<u16>, SimError> {
    run_observed(options, &Received::default()).await
}

/// As [`run`], recording every call received in `received`.
pub async fn run_observed(options: &Options, received: &Received) -> Result<Option<u16>, SimError> {
    let sim = Arc::new(Mutex::new(Sim::new(
        options.scripts_dir.clone(),
        options.backtest,
    )?));
    serve(options, sim, received).await
}

/// As [`run`], with a given simulated state (kept across reconnects by the caller).
pub async fn run_with(options: &Options, sim: Arc<Mutex<Sim>>) -> Result<Option<u16>, SimError> {
    serve(options, sim, &Received::default()).await
}

async fn serve(
    options: &Options,
    sim: Arc<Mutex<Sim>>,
    received: &Received,
) -> Result<Option<u16>, SimError> {
    let mut request = options
        .url
        .as_str()
        .into_client_request()
        .map_err(|err| SimError::Request(err.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", options.key))
        .map_err(|_| SimError::Request("the key is not a valid header value".to_owned()))?;
    request.headers_mut().insert("authorization", bearer);
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    let (mut sink, mut stream) = ws.split();
    let hello = json!({
        "v": 1, "type": "hello", "addon_version": options.addon_version,
        "nt8_version": "8.1.4.1",
        "features": ["orders", "marketdata", "ninjascript", "backtest", "strategies", "jobs", "webhooks", "copier", "charts"],
    });
    sink.send(Message::text(hello.to_string())).await?;
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if sink.send(Message::text(frame)).await.is_err() {
                break;
            }
        }
        sink
    });
    let mut code = None;
    while let Some(message) = stream.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                code = frame.map(|f| u16::from(f.code));
                if let Some(code) = code {
                    tracing::warn!(code, "closed by the backend");
                }
                break;
            }
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "socket error");
                break;
            }
        };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match frame["type"].as_str() {
            Some("welcome") => {
                tracing::info!("connected");
                lock(&sim).events = Some(out_tx.clone());
                let frames = lock(&sim).welcome();
                for frame in frames {
                    let _ = out_tx.send(frame);
                }
            }
            Some("event_ack") => {
                if let Some(id) = frame["id"].as_str() {
                    lock(&sim).acked(id);
                }
            }
            Some("call") => {
                let tool = frame["tool"].as_str().unwrap_or_default().to_owned();
                received.record(&tool, frame["traceparent"].as_str());
                if options
                    .drop_on
                    .as_deref()
                    .is_some_and(|d| d == "*" || d == tool)
                {
                    tracing::warn!(%tool, "fault: dropping the socket mid-call");
                    writer.abort();
                    return Ok(None);
                }
                if matches(&options.never_answer, &tool) {
                    tracing::warn!(%tool, "fault: never answering");
                    continue;
                }
                if let Some(reply) = job_call(&sim, &tool, &frame) {
                    let _ = out_tx.send(reply.to_string());
                    continue;
                }
                let sim = Arc::clone(&sim);
                let out = out_tx.clone();
                let latency = options.latency;
                tokio::spawn(async move {
                    // Even a zero sleep waits for the timer's next millisecond tick.
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    let id = frame["id"].clone();
                    let arguments = frame["arguments"].clone();
                    let (result, events) = Sim::handle(&sim, &tool, &arguments).await;
                    let reply = match result {
                        Ok(content) => {
                            json!({"v": 1, "type": "result", "id": id, "ok": true, "content": content})
                        }
                        Err(error) => {
                            json!({"v": 1, "type": "result", "id": id, "ok": false, "error": error})
                        }
                    };
                    let _ = out.send(reply.to_string());
                    for frame in lock(&sim).post(&events) {
                        let _ = out.send(frame);
                    }
                });
            }
            Some("error") => tracing::warn!(frame = %frame, "backend reported an error"),
            _ => {}
        }
    }
    writer.abort();
    Ok(code)
}

/// Answers a job's start or cancel at once (the work reports by events); `None` for other
/// calls.
fn job_call(sim: &Arc<Mutex<Sim>>, tool: &str, frame: &Value) -> Option<Value> {
    let arguments = &frame["arguments"];
    let job_id = arguments["job_id"].as_str()?;
    let outcome = if jobs::JOB_TOOLS.contains(&tool) {
        Ok(jobs::start(sim, tool, job_id, arguments))
    } else if tool == "CancelJob" {
        jobs::cancel(sim, job_id)
    } else {
        return None;
    };
    let id = &frame["id"];
    Some(match outcome {
        Ok(content) => json!({"v": 1, "type": "result", "id": id, "ok": true, "content": content}),
        Err(error) => json!({"v": 1, "type": "result", "id": id, "ok": false, "error": error}),
    })
}

pub(crate) fn lock(sim: &Mutex<Sim>) -> std::sync::MutexGuard<'_, Sim> {
    sim.lock().unwrap_or_else(PoisonError::into_inner)
}
