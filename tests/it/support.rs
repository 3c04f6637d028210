//! Running the real `crosstrade` binary: a clean environment, captured logs, and the address
//! it listens on.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_crosstrade");

/// A command for the binary with only PATH kept from the test's environment, so a developer's
/// or CI's own variables (DATABASE_URL, CROSSTRADE_*) never leak into a test.
pub fn command(envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    #[expect(
        clippy::disallowed_methods,
        reason = "tests pass PATH through to the binary"
    )]
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("CROSSTRADE_LOG__FORMAT", "json");
    // Tests run in parallel: each server's admin listener takes a free port too.
    cmd.env("CROSSTRADE_ADMIN_LISTEN", "127.0.0.1:0");
    cmd.envs(envs.iter().copied());
    cmd
}

/// Runs a verb to completion, feeding `stdin`.
pub fn run(envs: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = command(envs)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crosstrade");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for crosstrade")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A running server process. Dropping it kills the process.
pub struct ServerProcess {
    child: Child,
    pub addr: std::net::SocketAddr,
    /// The admin listener's address (`/metrics`), when it is enabled.
    pub admin: Option<std::net::SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Disconnects once both pipe readers have read to the end.
    drained: Option<mpsc::Receiver<()>>,
}

impl ServerProcess {
    /// Starts `crosstrade <verb>` on a free port and waits until it listens.
    pub fn start(verb: &str, envs: &[(&str, &str)]) -> Self {
        Self::start_on(verb, envs, "127.0.0.1:0")
    }

    /// Starts `crosstrade <verb>` listening on `listen` and waits until it does.
    pub fn start_on(verb: &str, envs: &[(&str, &str)], listen: &str) -> Self {
        Self::start_with_args(&[verb], envs, listen)
    }

    /// Starts `crosstrade <args…>` listening on `listen` and waits until it does.
    pub fn start_with_args(args: &[&str], envs: &[(&str, &str)], listen: &str) -> Self {
        let mut child = command(envs)
            .args(args)
            .env("CROSSTRADE_LISTEN", listen)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crosstrade");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let (reading, drained) = mpsc::channel();
        collect_lines(
            child.stderr.take().expect("stderr"),
            Arc::clone(&logs),
            Some(addr_tx),
            reading.clone(),
        );
        collect_lines(
            child.stdout.take().expect("stdout"),
            Arc::clone(&stdout),
            None,
            reading,
        );
        let Ok((addr, admin)) = addr_rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!(
                "server did not start; logs:\n{}",
                logs.lock().unwrap().join("\n")
            );
        };
        Self {
            child,
            addr,
            admin,
            logs,
            stdout,
            drained: Some(drained),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self.admin.expect("the admin listener is enabled");
        format!("http://{admin}{path}")
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM; returns the exit status and every log line.
    pub fn terminate_keeping_logs(mut self) -> (std::process::ExitStatus, String) {
        let logs = Arc::clone(&self.logs);
        let drained = self.drained.take();
        let status = self.terminate();
        // Every line is kept once both readers reach the end of their pipes. A process the
        // server started could hold a pipe open; do not wait for it forever.
        if let Some(drained) = drained {
            let _ = drained.recv_timeout(Duration::from_secs(5));
        }
        let text = logs.lock().unwrap().join("\n");
        (status, text)
    }

    /// The exit status, if the process exits within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server ignored SIGTERM; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
}

/// Keeps every line of `stream`; `reading` is dropped at its end.
fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    addr_tx: Option<mpsc::Sender<(std::net::SocketAddr, Option<std::net::SocketAddr>)>>,
    reading: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let _reading = reading;
        // The admin address is logged just before the public one.
        let mut admin = None;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(tx) = &addr_tx
                && let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = event["addr"].as_str().and_then(|a| a.parse().ok())
            {
                if event["message"] == "admin listening" {
                    admin = Some(addr);
                } else if event["message"] == "listening" {
                    let _ = tx.send((addr, admin));
                }
            }
            into.lock().unwrap().push(line);
        }
    });
}

/// The admin listener's `/metrics` text.
pub async fn metrics_text(server: &ServerProcess) -> String {
    http()
        .get(server.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Whether the admin listener's `/metrics` has exactly `line` (a metric and its value).
pub async fn metrics_show(server: &ServerProcess, line: &str) -> bool {
    metrics_text(server).await.lines().any(|l| l == line)
}

/// Whether the server has logged `message` (its JSON log lines' `message` field).
pub fn logged(server: &ServerProcess, message: &str) -> bool {
    server.logs.lock().unwrap().iter().any(|line| {
        serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|event| event["message"] == message)
    })
}

/// The PID of the postmaster running in an embedded data directory, if any.
pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("cluster/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

pub fn process_alive(pid: u32) -> bool {
    // A zombie has exited; only its table entry is left for the parent to reap.
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        !status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

/// The real uid a process runs as.
pub fn process_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .expect("Uid line")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Creates an Elite account with password `testkit::oauth::PASSWORD` through the CLI; returns
/// the command's logs.
pub fn add_elite_user(env: &[(&str, &str)], email: &str) -> String {
    let added = run(
        env,
        &[
            "users",
            "add",
            "--email",
            email,
            "--tier",
            store::users::Tier::Elite.as_str(),
            "--password-stdin",
        ],
        &format!("{}\n", testkit::oauth::PASSWORD),
    );
    assert!(added.status.success(), "{}", stderr(&added));
    stderr(&added)
}

/// A fresh database with one Elite account (password `PASSWORD`) and a server on it.
pub async fn server_with_user(
    email: &str,
) -> (testkit::TestDb, ServerProcess, testkit::oauth::Endpoint) {
    server_with_user_and(email, &[]).await
}

/// [`server_with_user`] with extra environment for the server (limits, timeouts).
pub async fn server_with_user_and(
    email: &str,
    extra: &[(&str, &str)],
) -> (testkit::TestDb, ServerProcess, testkit::oauth::Endpoint) {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let env = [("DATABASE_URL", url.as_str())];
    add_elite_user(&env, email);
    let mut server_env = env.to_vec();
    server_env.extend_from_slice(extra);
    let server = ServerProcess::start("serve", &server_env);
    let endpoint = testkit::oauth::Endpoint::new(&server.url(""));
    (db, server, endpoint)
}

/// `tools/call` of `name` on the MCP endpoint (protocol 2025-11-25), or the transport error.
pub async fn try_tools_call(
    endpoint: &testkit::oauth::Endpoint,
    access: &str,
    name: &str,
    arguments: serde_json::Value,
) -> reqwest::Result<reqwest::Response> {
    endpoint
        .http
        .post(endpoint.resource())
        .bearer_auth(access)
        .header("mcp-protocol-version", "2025-11-25")
        .json(
            &serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}),
        )
        .send()
        .await
}

/// [`try_tools_call`] that fails the test on a transport error.
pub async fn tools_call(
    endpoint: &testkit::oauth::Endpoint,
    access: &str,
    name: &str,
    arguments: serde_json::Value,
) -> reqwest::Response {
    try_tools_call(endpoint, access, name, arguments)
        .await
        .unwrap()
}

/// `crosstrade dev --with-addon-sim` on a free loopback port, once its simulator is up.
pub struct DevWithAddonSim {
    pub server: ServerProcess,
    pub public_url: String,
    /// The Elite demo account's password, from the banner.
    pub elite_password: String,
}

pub async fn dev_with_addon_sim(data_dir: &str) -> DevWithAddonSim {
    // Orders are sent at once here; the confirmation tests ask for `every`.
    dev_with_addon_sim_confirming(data_dir, "never").await
}

/// [`dev_with_addon_sim`] with the demo accounts' trade confirmation policy (`every`, `never`).
pub async fn dev_with_addon_sim_confirming(data_dir: &str, policy: &str) -> DevWithAddonSim {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let public_url = format!("http://127.0.0.1:{port}");
    let server = ServerProcess::start_with_args(
        &["dev", "--with-addon-sim", "--trade-confirmation", policy],
        &[
            ("CROSSTRADE_DATA_DIR", data_dir),
            ("CROSSTRADE_PUBLIC_URL", public_url.as_str()),
        ],
        &format!("127.0.0.1:{port}"),
    );
    assert!(
        testkit::wait::eventually(Duration::from_secs(10), async || server
            .stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("Add-On simulator")))
        .await,
        "the Add-On simulator never started: {}",
        server.logs()
    );
    let elite_password = server
        .stdout
        .lock()
        .unwrap()
        .iter()
        .find(|line| line.contains("elite@demo.crosstrade.test"))
        .and_then(|line| line.split("password: ").nth(1))
        .expect("the banner prints the Elite demo account's password")
        .trim()
        .to_owned();
    DevWithAddonSim {
        server,
        public_url,
        elite_password,
    }
}
