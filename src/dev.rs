//! `crosstrade dev`: the server on the embedded database, seeded with two demo accounts whose
//! credentials are kept in `data_dir` so every run prints the same ones.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use store::users::{self, Email, Tier};

use crate::config::{Config, Existing, write_private};
use crate::database::{Database, Role};
use crate::server::serve_on;

const DEMO_ACCOUNTS: [(&str, Tier); 2] = [
    ("elite@demo.crosstrade.test", Tier::Elite),
    ("pro@demo.crosstrade.test", Tier::Pro),
];
const CREDENTIALS_FILE: &str = "demo-credentials";

pub async fn run(
    mut config: Config,
    shutdown: crate::server::ShutdownSignal,
    simulator_backtest: Option<std::time::Duration>,
    trade_confirmation: vocabulary::confirm::Policy,
) -> anyhow::Result<()> {
    // Browser-based MCP clients (the MCP Inspector) run on this computer during development.
    config.loopback_origins = true;
    let db = Database::open(&config, Role::Server).await?;
    let outcome = async {
        db.migrate().await?;
        let accounts = seed(&config, &db).await?;
        for (address, _) in DEMO_ACCOUNTS {
            let email = Email::parse(address)?;
            if let Some(user) = users::find_by_email(&db.pool, &email).await? {
                store::confirmations::set_policy(&db.pool, user.id, &trade_confirmation).await?;
            }
        }
        let simulator = if let Some(backtest) = simulator_backtest {
            let elite = Email::parse(DEMO_ACCOUNTS[0].0)?;
            let user = users::find_by_email(&db.pool, &elite)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the demo account is missing"))?;
            // One simulator key at a time: the previous run's is revoked.
            let remembered = config.data_dir.join("addon-sim.key-id");
            if let Some(old) = std::fs::read_to_string(&remembered)
                .ok()
                .and_then(|text| text.trim().parse::<uuid::Uuid>().ok())
            {
                addon_bridge::keys::revoke(&db.pool, user.id, old).await?;
            }
            let (key_id, key) = addon_bridge::keys::create(&db.pool, user.id).await?;
            write_private(&remembered, &key_id.to_string(), Existing::Replace)
                .with_context(|| format!("writing {}", remembered.display()))?;
            Some((key, backtest))
        } else {
            None
        };
        serve_on(&config, &db, shutdown, |addr, admin| {
            print_banner(&config, addr, admin, &accounts)?;
            if let Some((key, backtest)) = simulator {
                spawn_simulator(&config, addr, key, backtest)?;
            }
            Ok(())
        })
        .await
    }
    .await;
    let closed = db.close().await;
    outcome.and(closed)
}

/// Creates the demo accounts when absent and sets their passwords to the remembered ones.
async fn seed(config: &Config, db: &Database) -> anyhow::Result<Vec<(String, String, Tier)>> {
    let remembered = load_or_create_passwords(&config.data_dir)?;
    let mut accounts = Vec::new();
    for ((address, tier), password) in DEMO_ACCOUNTS.into_iter().zip(remembered) {
        let email = Email::parse(address)?;
        let hash = {
            let password = password.clone();
            tokio::task::spawn_blocking(move || store::password::hash(&password)).await??
        };
        match users::find_by_email(&db.pool, &email).await? {
            Some(_) => users::set_password_hash(&db.pool, &email, &hash).await?,
            None => drop(users::insert(&db.pool, &email, &hash, tier).await?),
        }
        let tier = users::find_by_email(&db.pool, &email)
            .await?
            .map_or(tier, |user| user.tier);
        accounts.push((address.to_owned(), password, tier));
    }
    Ok(accounts)
}

/// Runs the Add-On simulator in-process for the Elite demo account, reconnecting when the
/// connection ends (its state is kept across reconnects).
fn spawn_simulator(
    config: &Config,
    addr: std::net::SocketAddr,
    key: String,
    backtest: std::time::Duration,
) -> anyhow::Result<()> {
    let scripts_dir = config.data_dir.join("addon-sim").join("NinjaScript");
    std::fs::create_dir_all(&scripts_dir)
        .with_context(|| format!("creating {}", scripts_dir.display()))?;
    let options = addon_sim::Options {
        url: format!("ws://{addr}/v1/addon/ws"),
        key,
        addon_version: addon_sim::DEFAULT_ADDON_VERSION.to_owned(),
        latency: std::time::Duration::ZERO,
        never_answer: Vec::new(),
        drop_on: None,
        backtest,
        scripts_dir: scripts_dir.clone(),
    };
    let sim = std::sync::Arc::new(std::sync::Mutex::new(
        addon_sim::Sim::new(scripts_dir, options.backtest)?.with_copier(),
    ));
    tokio::spawn(async move {
        loop {
            match addon_sim::run_with(&options, std::sync::Arc::clone(&sim)).await {
                Ok(code) => tracing::info!(?code, "Add-On simulator disconnected; reconnecting"),
                Err(err) => tracing::warn!(error = %err, "Add-On simulator failed; retrying"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    writeln!(
        std::io::stdout(),
        "\nAdd-On simulator connected for elite@demo.crosstrade.test (Add-On tools are live)."
    )?;
    Ok(())
}

fn load_or_create_passwords(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = data_dir.join(CREDENTIALS_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let passwords: Vec<String> = text.lines().map(str::to_owned).collect();
        if passwords.len() == DEMO_ACCOUNTS.len() && passwords.iter().all(|p| p.len() >= 16) {
            return Ok(passwords);
        }
    }
    let passwords = DEMO_ACCOUNTS
        .iter()
        .map(|_| store::secret::random_password(20))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| anyhow::anyhow!("generating demo passwords: {err}"))?;
    write_private(&path, &passwords.join("\n"), Existing::Replace)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(passwords)
}

fn print_banner(
    config: &Config,
    addr: std::net::SocketAddr,
    admin: Option<std::net::SocketAddr>,
    accounts: &[(String, String, Tier)],
) -> anyhow::Result<()> {
    let mcp_url = format!("{}/v1/api/mcp", config.public_url.as_str());
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "CrossTrade MCP backend (dev mode) listening on http://{addr}"
    )?;
    if let Some(admin) = admin {
        writeln!(out, "Metrics (admin listener): http://{admin}/metrics")?;
    }
    writeln!(out)?;
    writeln!(out, "MCP server URL: {mcp_url}")?;
    writeln!(out)?;
    writeln!(out, "Demo accounts (sign in on the consent page):")?;
    for (email, password, tier) in accounts {
        writeln!(out, "  {tier:<8} {email:<30} password: {password}")?;
    }
    writeln!(out)?;
    writeln!(out, "Connect Claude Code:")?;
    writeln!(
        out,
        "  claude mcp add --transport http crosstrade {mcp_url}"
    )?;
    out.flush()?;
    Ok(())
}
