//! `addon-sim`: plays the CrossTrade Add-On against a backend (see `docs/addon-protocol.md`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use addon_sim::{Options, Sim, run_with};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Plays the CrossTrade Add-On for NinjaTrader 8 against a CrossTrade backend")]
struct Args {
    /// The backend's Add-On WebSocket, e.g. ws://127.0.0.1:8080/v1/addon/ws
    #[arg(long, env = "ADDON_SIM_URL")]
    url: String,
    /// The Add-On key (ctak_…). Prefer the environment variable so it stays out of `ps`.
    #[arg(long, env = "ADDON_SIM_KEY", hide_env_values = true)]
    key: String,
    /// Version to announce in hello (below 1.13.0 is refused: try 1.12.0).
    #[arg(long, default_value = addon_sim::DEFAULT_ADDON_VERSION)]
    addon_version: String,
    /// Delay before answering every call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Never answer calls of this tool ("*" for every tool). Repeatable.
    #[arg(long)]
    never_answer: Vec<String>,
    /// Drop the socket without a close frame when this tool is called ("*" for any).
    #[arg(long)]
    drop_on: Option<String>,
    /// How long a backtest takes, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    backtest_ms: u64,
    /// Folder of the simulated NinjaScript files (created with examples if missing).
    #[arg(long, default_value = "addon-sim-scripts")]
    scripts_dir: PathBuf,
    /// Connect once and exit instead of reconnecting.
    #[arg(long)]
    once: bool,
    /// Run the trade copier: every fill in Sim101 is copied to Sim102 and skipped for Sim103.
    #[arg(long)]
    copier: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let options = Options {
        url: args.url,
        key: args.key,
        addon_version: args.addon_version,
        latency: Duration::from_millis(args.latency_ms),
        never_answer: args.never_answer,
        drop_on: args.drop_on,
        backtest: Duration::from_millis(args.backtest_ms),
        scripts_dir: args.scripts_dir,
    };
    // One simulated NinjaTrader 8 across reconnects: positions stay, and events the backend
    // has not acknowledged are sent again.
    let sim = match Sim::new(options.scripts_dir.clone(), options.backtest) {
        Ok(sim) if args.copier => sim.with_copier(),
        Ok(sim) => sim,
        Err(err) => {
            tracing::error!(error = %err, "cannot prepare the scripts folder");
            return std::process::ExitCode::FAILURE;
        }
    };
    let sim = Arc::new(Mutex::new(sim));
    let mut backoff = Duration::from_secs(1);
    loop {
        match run_with(&options, Arc::clone(&sim)).await {
            Ok(Some(code @ (4000..=4003 | 4006))) => {
                tracing::error!(code, "the backend refused this Add-On; not reconnecting");
                return std::process::ExitCode::FAILURE;
            }
            Ok(code) => tracing::warn!(?code, "connection ended"),
            Err(err) => tracing::warn!(error = %err, "connection failed"),
        }
        if args.once {
            return std::process::ExitCode::SUCCESS;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
