//! The command line: one binary for the server and the operator's verbs.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use store::users::{self, Email, Tier};
use tokio::net::TcpListener;

use crate::config::{Config, Sources};
use crate::database::{Database, Role};
use crate::server::{self, AppState};
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
    Dev,
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
    /// List accounts.
    List,
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

/// Minimum password length for accounts created from the CLI.
pub const MIN_PASSWORD_LEN: usize = 10;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&Sources::from_process(cli.config))?;
    telemetry::init(&config.log)?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Dev => dev::run(config).await,
        Command::Migrate => {
            let db = Database::open(&config, Role::Tool("migrate")).await?;
            let outcome = db.migrate().await;
            let closed = db.close().await;
            writeln!(std::io::stdout(), "migrations applied: {}", outcome?)?;
            closed
        }
        Command::Users(command) => users_command(&config, command).await,
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

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let db = Database::open(&config, Role::Server).await?;
    let outcome = serve_on(&config, &db, |_| Ok(())).await;
    let closed = db.close().await;
    outcome.and(closed)
}

/// Migrates, binds, calls `ready` with the bound address, and serves until shutdown.
pub async fn serve_on(
    config: &Config,
    db: &Database,
    ready: impl FnOnce(std::net::SocketAddr) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let applied = db.migrate().await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {} (key `listen`)", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, migrations_applied = applied, public_url = config.public_url.as_str(), "listening");
    ready(addr)?;
    let state = AppState {
        db: db.pool.clone(),
        config: std::sync::Arc::new(config.clone()),
    };
    server::serve(listener, state).await
}
