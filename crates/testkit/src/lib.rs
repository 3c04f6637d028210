//! Test support: real PostgreSQL for every test.
//!
//! With no `DATABASE_URL`, the first test of a test process starts one throw-away cluster (fsync
//! off) in a temporary directory from the system's PostgreSQL binaries. A watchdog process holds
//! the other end of a pipe from the test process; when the test process exits, however it exits
//! (success, failed assertion, panic, abort, kill), the pipe closes and the watchdog stops the
//! cluster at once and removes its directory. Each test gets a fresh database with every
//! migration applied.
//!
//! With `DATABASE_URL` set, databases are created on that server instead (the role needs
//! `CREATEDB`) and each is dropped when its [`TestDb`] is dropped.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support fails the test with a message"
)]

pub mod oauth;
pub mod oneshot;
pub mod wait;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use store::cluster::{Cluster, ClusterOptions};

/// Where test databases are created.
#[derive(Debug, Clone)]
enum Server {
    Cluster(Cluster),
    External(PgConnectOptions),
}

#[derive(Debug)]
struct Shared {
    server: Server,
    /// Held for the life of the process; dropping it at exit wakes the watchdog.
    _watchdog: Option<Mutex<ChildStdin>>,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

fn shared() -> &'static Shared {
    match SHARED.get_or_init(start_shared) {
        Ok(shared) => shared,
        Err(message) => panic!("test database server unavailable: {message}"),
    }
}

fn start_shared() -> Result<Shared, String> {
    #[expect(clippy::disallowed_methods, reason = "tests honour DATABASE_URL")]
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.is_empty()
    {
        let options = PgConnectOptions::from_str(&url).map_err(|err| err.to_string())?;
        return Ok(Shared {
            server: Server::External(options),
            _watchdog: None,
        });
    }
    let (cluster, watchdog) = start_private_cluster_with_watchdog()?;
    Ok(Shared {
        server: Server::Cluster(cluster),
        _watchdog: Some(Mutex::new(watchdog)),
    })
}

/// A throw-away cluster of its own (for tests that stop and start PostgreSQL), removed with its
/// directory when the test process exits. Keep the returned guard alive as long as the cluster.
pub fn private_cluster() -> PrivateCluster {
    match start_private_cluster_with_watchdog() {
        Ok((cluster, watchdog)) => PrivateCluster {
            cluster,
            _watchdog: watchdog,
        },
        Err(message) => panic!("private cluster: {message}"),
    }
}

/// A cluster from [`private_cluster`]; dropping it stops the cluster and removes its files.
#[derive(Debug)]
pub struct PrivateCluster {
    pub cluster: Cluster,
    _watchdog: ChildStdin,
}

fn start_private_cluster_with_watchdog() -> Result<(Cluster, ChildStdin), String> {
    let dir = scratch_dir("pg");
    let cluster = Cluster::init(&ClusterOptions {
        data_dir: dir.clone(),
        durable: false,
    })
    .map_err(|err| err.to_string())?;
    let watchdog = spawn_watchdog(&cluster, &dir)?;
    cluster.wait_ready().map_err(|err| err.to_string())?;
    Ok((cluster, watchdog))
}

/// A fresh empty directory under the system temp dir, unique to this process and call.
pub fn scratch_dir(purpose: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "crosstrade-test-{purpose}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    if let Err(err) = std::fs::create_dir_all(&dir) {
        panic!("creating {}: {err}", dir.display());
    }
    dir
}

/// Starts PostgreSQL under a `sh` that waits on a pipe: when every write end is closed (this
/// process exited, however it exited, or the guard was dropped), it stops the cluster at once,
/// reaps it, and deletes `dir`. Being PostgreSQL's parent, it leaves no zombie behind. `runuser`
/// stops itself when its child is stopped (a test freezing PostgreSQL with SIGSTOP); a group
/// with a stopped member that loses its parent is sent SIGHUP by the kernel, so the `sh`
/// ignores it, and continues `runuser` before the wait.
fn spawn_watchdog(cluster: &Cluster, dir: &std::path::Path) -> Result<ChildStdin, String> {
    let quote_all = |argv: Vec<String>| {
        argv.iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let script = format!(
        "trap '' HUP; {launch} >>{log} 2>&1 & pid=$!; cat >/dev/null; {stop} >/dev/null 2>&1; \
         kill -CONT $pid 2>/dev/null; wait $pid; rm -rf {dir} {data}",
        launch = quote_all(cluster.foreground_command()),
        log = shell_quote(&cluster.log_path().display().to_string()),
        stop = quote_all(cluster.immediate_stop_command()),
        dir = shell_quote(&dir.display().to_string()),
        data = shell_quote(&cluster.data_dir().display().to_string()),
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cluster.data_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|err| format!("starting the cluster watchdog: {err}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| "watchdog has no stdin".to_owned())
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// A fresh database with every migration applied, private to one test.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    options: PgConnectOptions,
    admin: PgConnectOptions,
    drop_on_exit: bool,
}

impl TestDb {
    pub async fn new() -> Self {
        let shared = shared();
        let (admin, drop_on_exit) = match &shared.server {
            Server::Cluster(cluster) => (cluster.connect_options("postgres"), false),
            Server::External(options) => (options.clone(), true),
        };
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = connect(&admin).await;
        if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
        {
            panic!("CREATE DATABASE {name}: {err}");
        }
        let _ = conn.close().await;
        let options = admin.clone().database(&name);
        let mut conn = connect(&options).await;
        if let Err(err) = store::MIGRATOR.run(&mut conn).await {
            panic!("migrating {name}: {err}");
        }
        let _ = conn.close().await;
        Self {
            name,
            options,
            admin,
            drop_on_exit,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// A `postgres://` URL for this database, for processes started by the test.
    pub fn url(&self) -> String {
        let mut url = self.options.to_url_lossy();
        // `to_url_lossy` keeps the socket directory as the `host` query parameter.
        url.set_path(&format!("/{}", self.name));
        url.to_string()
    }

    pub async fn pool(&self) -> PgPool {
        match PgPoolOptions::new()
            .max_connections(5)
            .connect_with(self.options.clone())
            .await
        {
            Ok(pool) => pool,
            Err(err) => panic!("connecting to {}: {err}", self.name),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.drop_on_exit {
            return;
        }
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a private one on a plain thread.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = admin.connect().await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

async fn connect(options: &PgConnectOptions) -> PgConnection {
    match PgConnection::connect_with(options).await {
        Ok(conn) => conn,
        Err(err) => panic!("connecting to the test database server: {err}"),
    }
}
