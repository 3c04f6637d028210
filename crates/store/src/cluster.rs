//! A private PostgreSQL cluster run from the system's PostgreSQL binaries.
//!
//! Layout under the data directory (`data_dir`):
//! - `cluster/`: the PostgreSQL data directory (`initdb` on first start, reused afterwards);
//! - `run/`: the Unix socket (no TCP listener; the socket directory is `0700`, so only the
//!   cluster's OS account and root can connect);
//! - `postgres.log`: the server log;
//! - `crosstrade.lock`: held (advisory `flock`) by the process that owns the cluster.
//!
//! PostgreSQL refuses to run as root: when the caller is root, every PostgreSQL command runs as
//! the unprivileged `postgres` account through `runuser`, and the directories are handed to it.
//! Commands start in their own process group so a Ctrl-C in the terminal reaches the server,
//! which then stops the cluster itself, instead of killing PostgreSQL under in-flight requests.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

/// The socket file name is `.s.PGSQL.<port>`; the directory is private, so any port will do.
const SOCKET_PORT: u16 = 5432;
/// `sun_path` holds 108 bytes; leave room for the file name and the terminating NUL.
const MAX_SOCKET_DIR_LEN: usize = 90;
const SUPERUSER: &str = "postgres";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const POSTGRES_ACCOUNT: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or in \
         /usr/lib/postgresql/*/bin. Install them with `apt-get install postgresql`, set a \
         database URL (DATABASE_URL or CROSSTRADE_DATABASE__URL), or run everything in \
         containers with `docker compose up`."
    )]
    BinariesMissing,
    #[error(
        "running as root needs the unprivileged `{POSTGRES_ACCOUNT}` account to run PostgreSQL \
         and `runuser` (util-linux) to run PostgreSQL, which refuses to run as root; install the \
         postgresql package, which creates the account"
    )]
    NoPostgresAccount,
    #[error("data directory {path} is in use by another crosstrade process ({holder})")]
    Locked { path: PathBuf, holder: String },
    #[error("no running cluster in {0}")]
    NotRunning(PathBuf),
    #[error("data directory path {0} cannot be used (it contains a quote or is not UTF-8)")]
    UnusablePath(PathBuf),
    #[error("{action} failed: {detail}")]
    Command { action: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Looks on `PATH` first, then in the newest `/usr/lib/postgresql/<version>/bin`.
    pub fn locate() -> Result<Self, ClusterError> {
        #[expect(clippy::disallowed_methods, reason = "PATH lookup, like `which`")]
        let path = std::env::var_os("PATH").unwrap_or_default();
        Self::locate_in(
            std::env::split_paths(&path),
            Path::new("/usr/lib/postgresql"),
        )
    }

    /// Looks in `path_dirs`, then in the newest `<versions_root>/<version>/bin`.
    pub fn locate_in(
        path_dirs: impl IntoIterator<Item = PathBuf>,
        versions_root: &Path,
    ) -> Result<Self, ClusterError> {
        for dir in path_dirs {
            if let Some(found) = Self::from_dir_following_links(&dir) {
                return Ok(found);
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(versions_root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .collect();
        versions.sort();
        versions
            .into_iter()
            .rev()
            .find_map(|(_, dir)| Self::from_dir(&dir))
            .ok_or(ClusterError::BinariesMissing)
    }

    fn from_dir_following_links(dir: &Path) -> Option<Self> {
        // Debian links the binaries into a PATH directory; pg_ctl needs its real siblings.
        let pg_ctl = fs::canonicalize(dir.join("pg_ctl")).ok()?;
        Self::from_dir(pg_ctl.parent()?)
    }

    fn from_dir(dir: &Path) -> Option<Self> {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|name| dir.join(name).is_file())
            .then(|| Self {
                dir: dir.to_path_buf(),
            })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// How the cluster is started.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub data_dir: PathBuf,
    /// `false` turns off fsync and synchronous commit: for throw-away test clusters only.
    pub durable: bool,
}

/// An OS account PostgreSQL runs as when the caller is root.
#[derive(Debug, Clone)]
struct RunAs {
    uid: u32,
    gid: u32,
    runuser: String,
}

/// A PostgreSQL cluster in a data directory.
#[derive(Debug, Clone)]
pub struct Cluster {
    binaries: Binaries,
    data_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<RunAs>,
    durable: bool,
    /// The postmaster (or `runuser` above it) when this process started it.
    child: Arc<Mutex<Option<Child>>>,
}

impl Cluster {
    /// Prepares the directories and runs `initdb` when the cluster does not exist yet.
    /// Does not start PostgreSQL.
    pub fn init(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let binaries = Binaries::locate()?;
        fs::create_dir_all(&options.data_dir)
            .map_err(io_err(format!("creating {}", options.data_dir.display())))?;
        let data_dir = fs::canonicalize(&options.data_dir)
            .map_err(io_err(format!("resolving {}", options.data_dir.display())))?;
        if data_dir.to_str().is_none_or(|s| s.contains('\'')) {
            return Err(ClusterError::UnusablePath(data_dir));
        }
        let run_as = if running_as_root()? {
            Some(postgres_account()?)
        } else {
            None
        };
        let socket_dir = socket_dir_for(&data_dir);
        let cluster = Self {
            binaries,
            pgdata: data_dir.join("cluster"),
            data_dir,
            socket_dir,
            run_as,
            durable: options.durable,
            child: Arc::default(),
        };
        cluster.prepare_directories()?;
        if !cluster.pgdata.join("PG_VERSION").is_file() {
            cluster.initdb()?;
        }
        Ok(cluster)
    }

    fn prepare_directories(&self) -> Result<(), ClusterError> {
        for dir in [&self.data_dir, &self.socket_dir] {
            fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err(format!("restricting {}", dir.display())))?;
            self.hand_over(dir)?;
        }
        Ok(())
    }

    /// Gives a path to the account PostgreSQL runs as (only when that is not the caller).
    fn hand_over(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some(run_as) = &self.run_as {
            std::os::unix::fs::chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(io_err(
                format!("handing {} to {POSTGRES_ACCOUNT}", path.display()),
            ))?;
        }
        Ok(())
    }

    fn initdb(&self) -> Result<(), ClusterError> {
        // A half-finished initdb leaves a directory initdb refuses to reuse.
        if self.pgdata.exists() {
            fs::remove_dir_all(&self.pgdata).map_err(io_err(format!(
                "removing incomplete {}",
                self.pgdata.display()
            )))?;
        }
        let mut args = vec![
            "-D".into(),
            self.pgdata.display().to_string(),
            "-U".into(),
            SUPERUSER.into(),
            "--auth=trust".into(),
            "--encoding=UTF8".into(),
            "--locale=C".into(),
        ];
        if !self.durable {
            args.push("--no-sync".into());
        }
        self.run("initdb", &args).map(drop)
    }

    /// Starts PostgreSQL as a child of this process and waits until it accepts connections. A
    /// cluster that is already running (left behind by a process that was killed) is adopted
    /// as it is.
    pub fn start(&self) -> Result<(), ClusterError> {
        if self.is_running() {
            return Ok(());
        }
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_err("duplicating the log handle"))?;
        let argv = self.foreground_command();
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(io_err(format!("running {}", argv[0])))?;
        *self.lock_child() = Some(child);
        self.wait_ready()
    }

    /// The argv that runs PostgreSQL in the foreground for this cluster (logging to stderr).
    pub fn foreground_command(&self) -> Vec<String> {
        let mut argv = self.run_as_prefix();
        argv.extend([
            self.binaries.path("postgres").display().to_string(),
            "-D".into(),
            self.pgdata.display().to_string(),
            "-k".into(),
            self.socket_dir.display().to_string(),
            "-p".into(),
            SOCKET_PORT.to_string(),
        ]);
        let mut settings = vec![
            "listen_addresses=",
            "unix_socket_permissions=0700",
            "max_connections=200",
        ];
        if !self.durable {
            settings.extend([
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ]);
        }
        for setting in settings {
            argv.extend(["-c".to_owned(), setting.to_owned()]);
        }
        argv
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("postgres.log")
    }

    /// Waits until PostgreSQL reports itself ready in `postmaster.pid` (as `pg_ctl -w` does).
    pub fn wait_ready(&self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = self.pgdata.join("postmaster.pid");
        loop {
            let status = fs::read_to_string(&pid_file).unwrap_or_default();
            if status
                .lines()
                .nth(7)
                .is_some_and(|line| line.trim() == "ready")
            {
                return Ok(());
            }
            let exited = self
                .lock_child()
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let why = exited.map_or_else(
                    || format!("not ready after {START_TIMEOUT:?}"),
                    |status| format!("exited with {status}"),
                );
                return Err(ClusterError::Command {
                    action: "starting PostgreSQL".into(),
                    detail: format!("{why}\n{}", tail_of(&self.log_path())),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops PostgreSQL (fast shutdown: open sessions are ended, data is flushed) and reaps it.
    pub fn stop(&self) -> Result<(), ClusterError> {
        if self.is_running() {
            let args = [
                "stop",
                "-D",
                &self.pgdata.display().to_string(),
                "-m",
                "fast",
                "-w",
                "-s",
            ]
            .map(String::from);
            self.run("pg_ctl", &args)?;
        }
        if let Some(mut child) = self.lock_child().take() {
            child
                .wait()
                .map_err(io_err("waiting for PostgreSQL to exit"))?;
        }
        // A deep data directory's short socket directory under the temp dir is not left
        // behind: PostgreSQL has removed its socket and lock file by now. One still holding
        // something is kept.
        if !self.socket_dir.starts_with(&self.data_dir)
            && let Err(err) = fs::remove_dir(&self.socket_dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::debug!(error = %err, dir = %self.socket_dir.display(), "socket directory kept");
        }
        Ok(())
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_running(&self) -> bool {
        let args = ["status", "-D", &self.pgdata.display().to_string()].map(String::from);
        self.run("pg_ctl", &args).is_ok()
    }

    /// Options for connecting as the superuser to `database`.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(SOCKET_PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// A `postgres://` URL for `database`, for tools that take one.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost:{SOCKET_PORT}/{database}?host={}",
            self.socket_dir.display()
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The `pg_ctl` invocation (argv) that stops this cluster at once, for a watchdog process.
    pub fn immediate_stop_command(&self) -> Vec<String> {
        let mut argv = self.run_as_prefix();
        argv.extend([
            self.binaries.path("pg_ctl").display().to_string(),
            "stop".into(),
            "-D".into(),
            self.pgdata.display().to_string(),
            "-m".into(),
            "immediate".into(),
            "-w".into(),
            "-s".into(),
        ]);
        argv
    }

    fn run_as_prefix(&self) -> Vec<String> {
        match &self.run_as {
            Some(run_as) => {
                vec![
                    run_as.runuser.clone(),
                    "-u".into(),
                    POSTGRES_ACCOUNT.into(),
                    "--".into(),
                ]
            }
            None => Vec::new(),
        }
    }

    fn run(&self, program: &str, args: &[String]) -> Result<Output, ClusterError> {
        let mut argv = self.run_as_prefix();
        argv.push(self.binaries.path(program).display().to_string());
        argv.extend(args.iter().cloned());
        let action = format!("{program} {}", args.first().map_or("", String::as_str));
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .process_group(0)
            .output()
            .map_err(io_err(format!("running {}", argv[0])))?;
        if output.status.success() {
            Ok(output)
        } else {
            let detail = format!(
                "{}; {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            );
            Err(ClusterError::Command { action, detail })
        }
    }
}

/// The socket directory and port of the cluster running in `data_dir`, read from PostgreSQL's
/// own `postmaster.pid`, for processes that attach to a cluster another process owns.
pub fn running_connect_options(
    data_dir: &Path,
    database: &str,
) -> Result<PgConnectOptions, ClusterError> {
    let pid_file = data_dir.join("cluster").join("postmaster.pid");
    let contents = fs::read_to_string(&pid_file)
        .map_err(|_| ClusterError::NotRunning(data_dir.to_path_buf()))?;
    let lines: Vec<&str> = contents.lines().collect();
    let port = lines
        .get(3)
        .and_then(|line| line.trim().parse::<u16>().ok());
    let socket_dir = lines
        .get(4)
        .map(|line| line.trim())
        .filter(|line| !line.is_empty());
    match (port, socket_dir) {
        (Some(port), Some(socket_dir)) => Ok(PgConnectOptions::new()
            .socket(socket_dir)
            .port(port)
            .username(SUPERUSER)
            .database(database)),
        _ => Err(ClusterError::NotRunning(data_dir.to_path_buf())),
    }
}

/// Where a cluster in `data_dir` (canonical) puts its Unix socket: `run` inside it, or for a
/// data directory too deep for a socket path a short directory under the system temp dir named
/// after it.
pub fn socket_dir_for(data_dir: &Path) -> PathBuf {
    let preferred = data_dir.join("run");
    if preferred.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
        return preferred;
    }
    // Deep data directories do not fit in sun_path: use a short per-data-dir path instead.
    let digest = data_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
    std::env::temp_dir().join(format!("crosstrade-pg-{digest:016x}"))
}

fn running_as_root() -> Result<bool, ClusterError> {
    // /proc/self belongs to the process's effective uid.
    let meta = fs::metadata("/proc/self").map_err(io_err("reading /proc/self"))?;
    Ok(meta.uid() == 0)
}

fn postgres_account() -> Result<RunAs, ClusterError> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_err("reading /etc/passwd"))?;
    let (uid, gid) = passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&POSTGRES_ACCOUNT)).then_some(())?;
            Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
        })
        .ok_or(ClusterError::NoPostgresAccount)?;
    let runuser = [
        "/usr/sbin/runuser",
        "/sbin/runuser",
        "/usr/bin/runuser",
        "/bin/runuser",
    ]
    .into_iter()
    .find(|path| Path::new(path).is_file())
    .ok_or(ClusterError::NoPostgresAccount)?;
    Ok(RunAs {
        uid,
        gid,
        runuser: runuser.to_owned(),
    })
}

fn tail_of(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(10);
    format!(
        "last lines of {}:\n{}",
        log.display(),
        lines[start..].join("\n")
    )
}

/// Exclusive ownership of a data directory, held for the life of the owning process (the lock is
/// an advisory `flock`, released by the kernel even when the process is killed).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock, or returns `Ok(None)` when another process holds it.
    pub fn try_acquire(data_dir: &Path, role: &str) -> Result<Option<Self>, ClusterError> {
        fs::create_dir_all(data_dir).map_err(io_err(format!("creating {}", data_dir.display())))?;
        let path = data_dir.join("crosstrade.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(err)) => {
                return Err(io_err(format!("locking {}", path.display()))(err));
            }
        }
        file.set_len(0).map_err(io_err("writing the lock file"))?;
        file.rewind().map_err(io_err("writing the lock file"))?;
        writeln!(file, "pid {} ({role})", std::process::id())
            .map_err(io_err("writing the lock file"))?;
        Ok(Some(Self { _file: file }))
    }

    /// Takes the lock or fails, naming the process that holds it.
    pub fn acquire(data_dir: &Path, role: &str) -> Result<Self, ClusterError> {
        Self::try_acquire(data_dir, role)?.ok_or_else(|| ClusterError::Locked {
            path: data_dir.to_path_buf(),
            holder: Self::holder(data_dir),
        })
    }

    /// What the holding process wrote into the lock file.
    pub fn holder(data_dir: &Path) -> String {
        let mut text = String::new();
        File::open(data_dir.join("crosstrade.lock"))
            .and_then(|mut file| file.read_to_string(&mut text))
            .map_or_else(|_| "unknown".to_owned(), |_| text.trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_what_to_install() {
        let empty = std::env::temp_dir().join(format!("crosstrade-nobin-{}", std::process::id()));
        let err = Binaries::locate_in([empty.clone()], &empty).unwrap_err();
        assert!(matches!(err, ClusterError::BinariesMissing));
        let message = err.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("docker compose up"), "{message}");
    }

    #[test]
    fn versioned_directories_are_searched_newest_first() {
        let root = std::env::temp_dir().join(format!("crosstrade-pgroot-{}", std::process::id()));
        for version in ["9", "15", "16"] {
            let bin = root.join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            // Version 16 is incomplete and must be skipped.
            let names: &[&str] = if version == "16" {
                &["initdb"]
            } else {
                &["initdb", "pg_ctl", "postgres"]
            };
            for name in names {
                fs::write(bin.join(name), "").unwrap();
            }
        }
        let found = Binaries::locate_in(Vec::new(), &root).unwrap();
        assert_eq!(found.path("pg_ctl"), root.join("15/bin/pg_ctl"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn deep_data_directories_get_a_short_socket_directory() {
        let short = socket_dir_for(Path::new("/var/lib/crosstrade"));
        assert_eq!(short, Path::new("/var/lib/crosstrade/run"));
        let deep = PathBuf::from(format!("/{}", "d".repeat(120)));
        let dir = socket_dir_for(&deep);
        assert!(
            dir.as_os_str().len() <= MAX_SOCKET_DIR_LEN,
            "{}",
            dir.display()
        );
        assert_eq!(dir, socket_dir_for(&deep), "stable for one data directory");
    }
}
