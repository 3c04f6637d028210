//! The command line: one binary for the server and the operator's verbs.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use store::clock::Clock;
use store::confirmations;
use store::users::{self, Email, Tier};
use vocabulary::confirm::Policy;

use crate::config::{Config, Sources};
use crate::database::{Database, Role};
use crate::server;
use crate::{dev, telemetry};

#[derive(Debug, Parser)]
#[command(name = "crosstrade", version, about = "CrossTrade MCP backend")]
pub struct Cli {
    /// Configuration file read between the built-in defaults and CROSSTRADE_* variables.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations and serve HTTP until SIGTERM or Ctrl-C.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Serve on the embedded database with demo users, and print how to connect a client.
    Dev {
        /// Also run the Add-On simulator for the Elite demo account, so Add-On tools work.
        #[arg(long)]
        with_addon_sim: bool,
        /// How long the simulator's backtests run, in seconds (a real one takes minutes).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=14_400))]
        sim_backtest_secs: u64,
        /// The demo accounts' trade confirmation: `every` order waits for the person (the
        /// default, as for every new account) or `never`.
        #[arg(long, default_value = "every", value_parser = ["every", "never"])]
        trade_confirmation: String,
    },
    /// Manage Add-On keys (the credentials the CrossTrade Add-On connects with).
    #[command(subcommand)]
    AddonKeys(AddonKeysCommand),
    /// Manage access-token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum AddonKeysCommand {
    /// Create a key for an account; prints only the key (shown this once).
    Create {
        #[arg(long)]
        email: String,
    },
    /// Revoke one of an account's keys; its live connection is closed.
    Revoke {
        #[arg(long)]
        email: String,
        #[arg(long)]
        id: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a signing key; the current one stops signing now and stops verifying once the
    /// access-token lifetime has passed.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an account; the password is read from the first line of standard input.
    Add(AddUser),
    /// Change an account's subscription tier.
    SetTier {
        #[arg(long)]
        email: String,
        #[arg(long)]
        tier: Tier,
    },
    /// Choose which order-affecting tool calls of an account wait for the person's confirmation
    /// (an account that never chose confirms every one).
    SetTradeConfirmation(SetTradeConfirmation),
    /// List accounts.
    List,
    /// Incident response: end every AI client grant (refresh tokens stop working at once, access
    /// tokens on every replica within milliseconds), every browser session and every Add-On key
    /// of one account.
    RevokeAll {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Args)]
pub struct AddUser {
    #[arg(long)]
    email: String,
    #[arg(long)]
    tier: Tier,
    /// Read the password from standard input (the only way to give one, so it never appears in
    /// the process list or shell history).
    #[arg(long, required = true)]
    password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct SetTradeConfirmation {
    #[arg(long)]
    email: String,
    /// `every` order-affecting call, only those `above` a limit, or `never`.
    #[arg(long, value_parser = ["every", "above", "never"])]
    mode: String,
    /// Confirm an order of more than N contracts or shares (1 to 10000; used by `above`).
    #[arg(long, value_name = "N")]
    max_quantity: Option<u32>,
    /// Confirm an order whose estimated notional is above X in the account currency (used by
    /// `above`).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    max_notional: Option<f64>,
    /// Also confirm cancels (cancelling a protective stop leaves a position unprotected).
    #[arg(long)]
    confirm_cancels: bool,
    /// Accept a decision only on the CrossTrade page, never one given inside the AI client.
    #[arg(long)]
    page_only: bool,
}

/// Minimum password length for accounts created from the CLI.
pub const MIN_PASSWORD_LEN: usize = 10;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = server::ShutdownSignal::install()?;
    let config = Config::load(&Sources::from_process(cli.config))?;
    telemetry::init(&config.log, &config.traces)?;
    let outcome = run_command(cli.command, config, shutdown).await;
    // Spans still queued reach the collector before the process ends.
    crate::otel::flush(std::time::Duration::from_secs(2));
    outcome
}

async fn run_command(
    command: Command,
    config: Config,
    shutdown: server::ShutdownSignal,
) -> anyhow::Result<()> {
    match command {
        Command::Serve => server::run(config, shutdown).await,
        Command::Dev {
            with_addon_sim,
            sim_backtest_secs,
            trade_confirmation,
        } => {
            let simulator =
                with_addon_sim.then(|| std::time::Duration::from_secs(sim_backtest_secs));
            let policy = Policy::parse(&trade_confirmation, None, None, false, false)?;
            dev::run(config, shutdown, simulator, policy).await
        }
        Command::AddonKeys(command) => addon_keys_command(&config, command).await,
        Command::Migrate => {
            let db = Database::open(&config, Role::Tool("migrate")).await?;
            let outcome = db.migrate().await;
            let closed = db.close().await;
            writeln!(std::io::stdout(), "migrations applied: {}", outcome?)?;
            closed
        }
        Command::Users(command) => users_command(&config, command).await,
        Command::Keys(KeysCommand::Rotate) => {
            let master_secret = config.load_master_secret()?;
            with_database(&config, Role::Tool("keys rotate"), async |db| {
                let lifetime =
                    std::time::Duration::from_secs(config.lifetimes.access_token_secs.get());
                let clock = Clock::system();
                // Make sure a key exists (and the secret matches it) before rotating.
                oauth::keys::KeyRing::load(&db.pool, master_secret.expose().as_bytes(), &clock)
                    .await
                    .context("loading the signing keys")?;
                let kid = oauth::keys::rotate(
                    &db.pool,
                    master_secret.expose().as_bytes(),
                    lifetime,
                    &clock,
                )
                .await
                .context("rotating signing keys")?;
                writeln!(std::io::stdout(), "new signing key: {kid}")?;
                Ok(())
            })
            .await
        }
    }
}

/// Opens the database for a verb, migrates, runs `body`, and closes (stopping an embedded
/// cluster this process started) whether or not `body` succeeded.
async fn with_database(
    config: &Config,
    role: Role,
    body: impl AsyncFnOnce(&Database) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let db = Database::open(config, role).await?;
    let outcome = match db.migrate().await {
        Ok(_) => body(&db).await,
        Err(err) => Err(err),
    };
    let closed = db.close().await;
    outcome.and(closed)
}

async fn users_command(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add(add) => {
            debug_assert!(add.password_stdin);
            let email = Email::parse(&add.email)?;
            let password = read_password()?;
            let hash =
                tokio::task::spawn_blocking(move || store::password::hash(&password)).await??;
            with_database(config, Role::Tool("users add"), async |db| {
                let user = users::insert(&db.pool, &email, &hash, add.tier).await?;
                writeln!(
                    std::io::stdout(),
                    "{}\t{}\t{}",
                    user.id,
                    user.email,
                    user.tier
                )?;
                Ok(())
            })
            .await
        }
        UsersCommand::SetTier { email, tier } => {
            let email = Email::parse(&email)?;
            with_database(config, Role::Tool("users set-tier"), async |db| {
                let user = users::set_tier(&db.pool, &email, tier).await?;
                writeln!(
                    std::io::stdout(),
                    "{}\t{}\t{}",
                    user.id,
                    user.email,
                    user.tier
                )?;
                Ok(())
            })
            .await
        }
        UsersCommand::RevokeAll { email } => {
            let email = Email::parse(&email)?;
            with_database(config, Role::Tool("users revoke-all"), async |db| {
                let user = users::find_by_email(&db.pool, &email)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no user with email {}", email.as_str()))?;
                let mut tx = db.pool.begin().await?;
                let ended = oauth::grants::end_everything_for_user(
                    &mut tx,
                    user.id,
                    "revoked by an operator",
                )
                .await?;
                let keys = addon_bridge::keys::revoke_all(&mut *tx, user.id).await?;
                tx.commit().await?;
                writeln!(
                    std::io::stdout(),
                    "{}: ended {} AI client grants, {} browser sessions, {} Add-On keys",
                    user.email,
                    ended.grants,
                    ended.sessions,
                    keys
                )?;
                Ok(())
            })
            .await
        }
        UsersCommand::SetTradeConfirmation(set) => {
            let email = Email::parse(&set.email)?;
            let policy = Policy::parse(
                &set.mode,
                set.max_quantity,
                set.max_notional,
                set.confirm_cancels,
                set.page_only,
            )?;
            with_database(config, Role::Tool("users set-trade-confirmation"), async |db| {
                let user = users::find_by_email(&db.pool, &email)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no user with email {}", email.as_str()))?;
                confirmations::set_policy(&db.pool, user.id, &policy).await?;
                let limit = |value: Option<String>| value.unwrap_or_else(|| "none".to_owned());
                writeln!(
                    std::io::stdout(),
                    "{}\t{}\tmax_quantity={}\tmax_notional={}\tconfirm_cancels={}\tpage_only={}",
                    user.email,
                    policy.mode,
                    limit(policy.max_quantity.map(|n| n.to_string())),
                    limit(policy.max_notional.map(|x| x.to_string())),
                    policy.confirm_cancels,
                    policy.page_only,
                )?;
                Ok(())
            })
            .await
        }
        UsersCommand::List => {
            with_database(config, Role::Tool("users list"), async |db| {
                let mut out = std::io::stdout().lock();
                writeln!(out, "id\temail\ttier\tcreated_at")?;
                for user in users::list(&db.pool).await? {
                    let created = user.created_at.format("%Y-%m-%dT%H:%M:%SZ");
                    writeln!(out, "{}\t{}\t{}\t{created}", user.id, user.email, user.tier)?;
                }
                Ok(())
            })
            .await
        }
    }
}

async fn addon_keys_command(config: &Config, command: AddonKeysCommand) -> anyhow::Result<()> {
    let (email, role) = match &command {
        AddonKeysCommand::Create { email } => (email, Role::Tool("addon-keys create")),
        AddonKeysCommand::Revoke { email, .. } => (email, Role::Tool("addon-keys revoke")),
    };
    let email = Email::parse(email)?;
    with_database(config, role, async |db| {
        let user = users::find_by_email(&db.pool, &email)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no user with email {}", email.as_str()))?;
        match command {
            AddonKeysCommand::Create { .. } => {
                let (_, key) = addon_bridge::keys::create(&db.pool, user.id).await?;
                writeln!(std::io::stdout(), "{key}")?;
            }
            AddonKeysCommand::Revoke { id, .. } => {
                if !addon_bridge::keys::revoke(&db.pool, user.id, id).await? {
                    bail!("{} has no live Add-On key {id}", email.as_str());
                }
                writeln!(std::io::stdout(), "revoked {id}")?;
            }
        }
        Ok(())
    })
    .await
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.chars().count() < MIN_PASSWORD_LEN {
        bail!("the password on standard input must be at least {MIN_PASSWORD_LEN} characters");
    }
    Ok(password)
}
