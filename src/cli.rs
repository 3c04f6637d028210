//! The command line: one binary for the server and the operator's verbs.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use store::clock::Clock;
use store::secret::Secret;
use store::users::{self, Email, Tier};
use tokio::net::TcpListener;

use crate::adapters::{AddonAccountsAdapter, AddonRelay, OAuthTokenVerifier};
use crate::config::{Config, Sources};
use crate::database::{Database, Role};
use crate::readiness::Probe;
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
    Dev {
        /// Also run the Add-On simulator for the Elite demo account, so Add-On tools work.
        #[arg(long)]
        with_addon_sim: bool,
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

/// Minimum password length for accounts created from the CLI.
pub const MIN_PASSWORD_LEN: usize = 10;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = server::ShutdownSignal::install()?;
    let config = Config::load(&Sources::from_process(cli.config))?;
    telemetry::init(&config.log)?;
    match cli.command {
        Command::Serve => serve(config, shutdown).await,
        Command::Dev { with_addon_sim } => dev::run(config, shutdown, with_addon_sim).await,
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
            let master_secret = master_secret(&config)?;
            with_database(&config, Role::Tool("keys rotate"), async |db| {
                let lifetime =
                    std::time::Duration::from_secs(config.lifetimes.access_token_secs.get());
                let clock = Clock::system();
                // Make sure a key exists (and the secret matches it) before rotating.
                oauth::keys::KeyRing::load(&db.pool, master_secret.expose().as_bytes(), &clock)
                    .await
                    .map_err(|err| anyhow::anyhow!("{err}"))?;
                let kid = oauth::keys::rotate(
                    &db.pool,
                    master_secret.expose().as_bytes(),
                    lifetime,
                    &clock,
                )
                .await
                .map_err(|err| anyhow::anyhow!("rotating signing keys: {err}"))?;
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

/// The configured master secret, or the one kept in `data_dir/master.key` (created on first use).
pub fn master_secret(config: &Config) -> anyhow::Result<Secret> {
    if !config.master_secret.is_empty() {
        return Ok(config.master_secret.clone());
    }
    let path = config.data_dir.join("master.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim();
        if text.len() >= 32 {
            return Ok(Secret::new(text));
        }
        bail!(
            "{} is shorter than 32 characters; delete it or set master_secret",
            path.display()
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let secret = store::secret::random_password(48)
        .map_err(|err| anyhow::anyhow!("generating a master secret: {err}"))?;
    dev::write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(Secret::new(secret))
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

pub async fn serve(config: Config, shutdown: server::ShutdownSignal) -> anyhow::Result<()> {
    let db = Database::open(&config, Role::Server).await?;
    let outcome = serve_on(&config, &db, shutdown, |_, _| Ok(())).await;
    let closed = db.close().await;
    outcome.and(closed)
}

/// Migrates, binds, calls `ready` with the bound public and admin addresses, and serves until
/// shutdown.
pub async fn serve_on(
    config: &Config,
    db: &Database,
    shutdown: server::ShutdownSignal,
    ready: impl FnOnce(SocketAddr, Option<SocketAddr>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let applied = db.migrate().await?;
    let master_secret = master_secret(config)?;
    let oauth = oauth::OAuthState::start(
        config.oauth_settings(),
        db.pool.clone(),
        master_secret.expose().as_bytes(),
        Clock::system(),
    )
    .await
    .map_err(|err| anyhow::anyhow!("starting the OAuth service: {err}"))?;
    let metrics = server::install_metrics()?;
    let revocations = oauth.clone();
    let (readiness, probe) = Probe::start(&db.pool, move || revocations.revocations_live()).await;
    let admin = match config.admin_listen {
        Some(admin) => Some(
            TcpListener::bind(admin)
                .await
                .with_context(|| format!("binding {admin} (key `admin_listen`)"))?,
        ),
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {} (key `listen`)", config.listen))?;
    let addr = listener.local_addr()?;
    // Announced before the public address, so whoever waits for "listening" knows both.
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    if let Some(addr) = admin_addr {
        tracing::info!(%addr, "admin listening");
    }
    tracing::info!(%addr, migrations_applied = applied, public_url = config.public_url.as_str(), "listening");
    ready(addr, admin_addr)?;
    let addon = addon_bridge::AddonBridge::start(db.pool.clone(), config.bridge_settings())
        .await
        .map_err(|err| anyhow::anyhow!("starting the Add-On bridge: {err}"))?;
    let mcp = mcp::McpState::new(
        config.mcp_settings(),
        db.pool.clone(),
        std::sync::Arc::new(OAuthTokenVerifier(oauth.clone())),
        std::sync::Arc::new(AddonRelay {
            bridge: addon.clone(),
            db: db.pool.clone(),
        }),
    )
    .with_tier_cache(store::tiers::TierCache::start(db.pool.clone()));
    let state = AppState {
        db: db.pool.clone(),
        config: std::sync::Arc::new(config.clone()),
        oauth: oauth.clone(),
        mcp,
        account: oauth::account::AccountState {
            oauth,
            addon: std::sync::Arc::new(AddonAccountsAdapter {
                bridge: addon.clone(),
                db: db.pool.clone(),
            }),
        },
        addon,
        metrics,
        readiness,
    };
    server::serve(listener, admin, state, shutdown).await;
    probe.stop().await;
    Ok(())
}
