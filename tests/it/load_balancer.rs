//! Three `crosstrade serve` replicas on one PostgreSQL behind HAProxy, configured with
//! `deploy/haproxy.cfg` exactly as shipped (its addresses from the environment): the OAuth flow,
//! MCP calls and an Add-On through the load balancer, revocation on every replica, and a rolling
//! restart and a `kill -9` under load (run with `--nocapture` to see the counts).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use testkit::oauth::{Endpoint, Flow};
use testkit::wait::{eventually, wait_for, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::addon_path::{sim_options, structured};
use crate::support::{ServerProcess, add_elite_user, signal, try_tools_call};

/// The backend's name in `deploy/haproxy.cfg`.
const BACKEND: &str = "crosstrade";
/// Every replica needs the same one (it encrypts the signing keys and keys the CSRF tokens).
const MASTER_SECRET: &str = "load-balancer-test-master-secret-shared-by-replicas";
const REPLICAS: usize = 3;

/// A client of `base` that reuses an idle connection only within HAProxy's keep-alive timeout
/// (10 s): a request sent on a connection HAProxy is closing at that instant fails in the
/// client, whatever the replicas do.
fn endpoint(base: &str, local: Option<IpAddr>) -> Endpoint {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_secs(5))
        .local_address(local)
        .build()
        .unwrap();
    Endpoint {
        base: base.to_owned(),
        http,
    }
}

/// A free loopback port (bound, then released for the process that takes it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy running `deploy/haproxy.cfg` in the foreground; killed on drop.
struct HaProxy {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

/// One server line of `show stat`.
#[derive(Debug, Clone)]
struct ServerStat {
    name: String,
    /// `UP`, `DOWN`, `DRAIN`, `MAINT`, or a transition such as `DOWN 1/2`.
    status: String,
    /// The last health check's result (`L7OK` once `/readyz` answered 200).
    check: String,
    /// Sessions open to the server now (an Add-On WebSocket is one for as long as it lasts).
    sessions: u32,
}

impl HaProxy {
    fn start(scratch: &Path, bind: SocketAddr, replicas: &[SocketAddr]) -> Self {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg");
        let socket = scratch.join("haproxy.sock");
        let log = scratch.join("haproxy.log");
        let mut command = Command::new("haproxy");
        command
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .env("CT_BIND", bind.to_string())
            .env("CT_STATS_SOCKET", &socket)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(scratch.join("haproxy.err")).unwrap());
        for (n, replica) in replicas.iter().enumerate() {
            command.env(format!("CT_REPLICA_{}", n + 1), replica.to_string());
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "haproxy is not installed (these tests run HAProxy in front of the replicas): \
                 apt-get install haproxy"
            ),
            Err(err) => panic!("starting haproxy: {err}"),
        };
        Self { child, socket, log }
    }

    /// One command on the runtime API (the stats socket); its answer.
    async fn command(&self, command: &str) -> std::io::Result<String> {
        let mut stream = tokio::net::UnixStream::connect(&self.socket).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        let mut answer = String::new();
        // Without `prompt`, HAProxy answers one command and closes.
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    /// The backend's servers as `show stat` reports them.
    async fn servers(&self) -> Vec<ServerStat> {
        let Ok(csv) = self.command("show stat").await else {
            return Vec::new();
        };
        let mut lines = csv.lines();
        let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
            return Vec::new();
        };
        let columns: Vec<&str> = header.split(',').collect();
        let column = |name: &str| columns.iter().position(|c| *c == name).unwrap();
        let (proxy, server, status, check, sessions) = (
            column("pxname"),
            column("svname"),
            column("status"),
            column("check_status"),
            column("scur"),
        );
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|fields| {
                fields.len() > sessions
                    && fields[proxy] == BACKEND
                    && fields[server] != "BACKEND"
                    && fields[server] != "FRONTEND"
            })
            .map(|fields| ServerStat {
                name: fields[server].to_owned(),
                status: fields[status].to_owned(),
                check: fields[check].to_owned(),
                sessions: fields[sessions].parse().unwrap_or(0),
            })
            .collect()
    }

    async fn server(&self, name: &str) -> Option<ServerStat> {
        self.servers().await.into_iter().find(|s| s.name == name)
    }

    /// Waits until HAProxy has `name` UP with a passed `/readyz` check. (Servers start UP
    /// before any check, so the check's result is what tells.)
    async fn wait_up(&self, name: &str, limit: Duration) {
        let up = eventually(limit, async || {
            self.server(name)
                .await
                .is_some_and(|s| s.status == "UP" && s.check == "L7OK")
        })
        .await;
        assert!(
            up,
            "HAProxy never had {name} UP: {:?}\n{}",
            self.servers().await,
            self.logs()
        );
    }

    async fn set_state(&self, name: &str, state: &str) {
        let answer = self
            .command(&format!("set server {BACKEND}/{name} state {state}"))
            .await
            .unwrap();
        assert!(answer.trim().is_empty(), "set server {name}: {answer}");
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One replica: its name in HAProxy, its fixed public port, and its process while it runs.
struct Replica {
    name: String,
    listen: SocketAddr,
    process: Option<ServerProcess>,
}

impl Replica {
    fn process(&self) -> &ServerProcess {
        self.process.as_ref().expect("the replica runs")
    }

    /// A client talking to this replica alone, past the load balancer.
    fn direct(&self) -> Endpoint {
        endpoint(&format!("http://{}", self.listen), None)
    }
}

/// `crosstrade serve` on `listen`, as every replica is configured behind the load balancer.
fn start_replica(database_url: &str, public_url: &str, listen: SocketAddr) -> ServerProcess {
    ServerProcess::start_on(
        "serve",
        &[
            ("DATABASE_URL", database_url),
            ("CROSSTRADE_PUBLIC_URL", public_url),
            ("CROSSTRADE_MASTER_SECRET", MASTER_SECRET),
            // HAProxy connects from 127.0.0.1; clients' addresses come in X-Forwarded-For.
            ("CROSSTRADE_TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ],
        &listen.to_string(),
    )
}

/// Three replicas on one database, behind HAProxy.
struct Cluster {
    db: testkit::TestDb,
    replicas: Vec<Replica>,
    haproxy: HaProxy,
    public_url: String,
    bind: SocketAddr,
    scratch: PathBuf,
    /// What the harness did and when, for failure messages.
    events: Mutex<Vec<(Instant, String)>>,
}

impl Cluster {
    /// The database with one Elite account `email`, three replicas whose `public_url` is
    /// HAProxy's address and which trust HAProxy's `X-Forwarded-For`, and HAProxy with all three
    /// UP.
    async fn start(email: &str) -> Self {
        let db = testkit::TestDb::new().await;
        let url = db.url();
        add_elite_user(&[("DATABASE_URL", url.as_str())], email);
        let scratch = testkit::scratch_dir("load-balancer");
        let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let public_url = format!("http://{bind}");
        let replicas: Vec<Replica> = (1..=REPLICAS)
            .map(|n| {
                let listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
                Replica {
                    name: format!("r{n}"),
                    listen,
                    process: Some(start_replica(&url, &public_url, listen)),
                }
            })
            .collect();
        let listens: Vec<SocketAddr> = replicas.iter().map(|r| r.listen).collect();
        let haproxy = HaProxy::start(&scratch, bind, &listens);
        for replica in &replicas {
            haproxy
                .wait_up(&replica.name, Duration::from_secs(10))
                .await;
        }
        Self {
            db,
            replicas,
            haproxy,
            public_url,
            bind,
            scratch,
            events: Mutex::default(),
        }
    }

    fn note(&self, what: impl Into<String>) {
        self.events
            .lock()
            .unwrap()
            .push((Instant::now(), what.into()));
    }

    /// The events, in milliseconds since `origin`.
    fn timeline(&self, origin: Instant) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(at, what)| format!("{} ms {what}", at.duration_since(origin).as_millis()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A client of the load balancer.
    fn endpoint(&self) -> Endpoint {
        endpoint(&self.public_url, None)
    }

    /// A client of the load balancer connecting from another loopback address, which the
    /// replicas see through `X-Forwarded-For` (each address has its own token-request budget).
    fn endpoint_from(&self, local: IpAddr) -> Endpoint {
        endpoint(&self.public_url, Some(local))
    }

    /// The running replica holding the Add-On's socket, if one does.
    async fn addon_replica(&self) -> Option<usize> {
        for (n, replica) in self.replicas.iter().enumerate() {
            if let Some(process) = &replica.process
                && metric(process, "addon_connections").await >= 1.0
            {
                return Some(n);
            }
        }
        None
    }

    /// Restarts replica `n` as an operator does: drain it in HAProxy, wait for its requests to
    /// finish, SIGTERM, start it again on the same port, put it back and wait until HAProxy
    /// has it UP.
    async fn restart(&mut self, n: usize) {
        let name = self.replicas[n].name.clone();
        self.haproxy.set_state(&name, "drain").await;
        self.note(format!("{name} drained"));
        // What stays open is the Add-On's WebSocket, if this replica holds it.
        let sockets = metric(self.replicas[n].process(), "addon_connections").await;
        wait_until(
            "the drained replica's requests finished",
            Duration::from_secs(10),
            async || {
                self.haproxy
                    .server(&name)
                    .await
                    .is_some_and(|s| f64::from(s.sessions) <= sockets)
            },
        )
        .await;
        let process = self.replicas[n].process.take().expect("running");
        self.note(format!("{name} SIGTERM"));
        // Waiting on the process blocks; the load keeps running on the other workers.
        let status = tokio::task::block_in_place(|| process.terminate());
        self.note(format!("{name} exited"));
        assert!(status.success(), "{name} exited with {status:?}");
        let listen = self.replicas[n].listen;
        let process =
            tokio::task::block_in_place(|| start_replica(&self.db.url(), &self.public_url, listen));
        self.replicas[n].process = Some(process);
        self.note(format!("{name} started"));
        self.haproxy.set_state(&name, "ready").await;
        self.haproxy.wait_up(&name, Duration::from_secs(10)).await;
        self.note(format!("{name} UP"));
    }

    /// The simulated Add-On, connecting through the load balancer and reconnecting a second
    /// after its socket ends, as the real one does.
    fn spawn_addon(&self, email: &str) -> tokio::task::JoinHandle<()> {
        let options = sim_options(&self.db, self.bind, email, &[], &self.scratch);
        tokio::spawn(async move {
            let sim = Arc::new(Mutex::new(
                addon_sim::Sim::new(options.scripts_dir.clone(), options.backtest).unwrap(),
            ));
            loop {
                let _ = addon_sim::run_with(&options, Arc::clone(&sim)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

impl Drop for Cluster {
    #[expect(clippy::print_stderr, reason = "says where a failed test's logs are")]
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Kept for the failure: HAProxy's log (every request with its replica) and each
            // replica's.
            for replica in &self.replicas {
                if let Some(process) = &replica.process {
                    let log = self.scratch.join(format!("{}.log", replica.name));
                    std::fs::write(log, process.logs()).ok();
                }
            }
            eprintln!("load balancer logs kept in {}", self.scratch.display());
        } else {
            std::fs::remove_dir_all(&self.scratch).ok();
        }
    }
}

/// The sum of a metric's samples whose line starts with `prefix` (name and labels) on a
/// replica's admin listener.
async fn metric(server: &ServerProcess, prefix: &str) -> f64 {
    crate::support::metrics_text(server)
        .await
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(name, _)| name.starts_with(prefix))
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// Whether `GetMcpCapabilities` through `endpoint` says the Add-On is connected.
async fn addon_connected(endpoint: &Endpoint, access: &str) -> bool {
    let Ok(reply) = try_tools_call(endpoint, access, "GetMcpCapabilities", json!({})).await else {
        return false;
    };
    let body: Value = reply.json().await.unwrap_or(Value::Null);
    body["result"]["structuredContent"]["addon_connected"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_haproxy_oauth_tools_and_the_addon_reach_every_replica_and_revocation_too() {
    let email = "lb@example.com";
    let cluster = Cluster::start(email).await;
    let endpoint = cluster.endpoint();

    // The whole OAuth flow through the load balancer: its requests spread over the replicas.
    let mut flow = Flow::new(&endpoint, email).await;
    let tokens = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refreshed = flow
        .refresh(&endpoint, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status(), 200);
    let served_oauth: Vec<f64> = {
        let mut counts = Vec::new();
        for replica in &cluster.replicas {
            counts.push(metric(replica.process(), "http_requests_total{route=\"/v1/oauth").await);
        }
        counts
    };
    assert!(
        served_oauth.iter().filter(|&&c| c > 0.0).count() >= 2,
        "OAuth requests per replica: {served_oauth:?}"
    );

    // No overall timeout: the client may hold a stream open.
    let mcp_http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let transport = StreamableHttpClientTransport::with_client(
        mcp_http,
        StreamableHttpClientTransportConfig::with_uri(endpoint.resource()).auth_header(&access),
    );
    let client = ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .serve(transport)
        .await
        .unwrap();
    let names = |tools: Vec<rmcp::model::Tool>| -> Vec<String> {
        tools.iter().map(|t| t.name.to_string()).collect()
    };
    let before = names(client.list_all_tools().await.unwrap());
    assert!(
        before.iter().any(|n| n == "GetMcpCapabilities"),
        "{before:?}"
    );
    assert!(!before.iter().any(|n| n == "GetAccounts"), "{before:?}");

    // The Add-On connects through the load balancer too: its socket lands on one replica.
    let addon = cluster.spawn_addon(email);
    wait_until(
        "the Add-On connected",
        Duration::from_secs(10),
        async || addon_connected(&endpoint, &access).await,
    )
    .await;
    let after = names(client.list_all_tools().await.unwrap());
    assert!(after.iter().any(|n| n == "GetAccounts"), "{after:?}");
    let holder = cluster.addon_replica().await.expect("a replica holds it");

    // Add-On calls through the load balancer land on every replica; those off the socket's
    // replica are routed to it.
    let tool_calls = async || {
        let mut counts = Vec::new();
        for replica in &cluster.replicas {
            counts.push(
                metric(
                    replica.process(),
                    "mcp_tool_calls_total{tool=\"GetAccounts\",outcome=\"ok\"}",
                )
                .await,
            );
        }
        counts
    };
    let baseline = tool_calls().await;
    let calls = 36;
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let peer = client.peer().clone();
        running.spawn(async move {
            let result = peer
                .call_tool(
                    CallToolRequestParams::new("GetAccounts")
                        .with_arguments(serde_json::Map::new()),
                )
                .await
                .unwrap();
            structured(&result)
        });
        // A few at a time.
        if running.len() >= 4 {
            let accounts = running.join_next().await.unwrap().unwrap();
            assert!(accounts.to_string().contains("Sim101"), "{accounts}");
        }
    }
    while let Some(accounts) = running.join_next().await {
        let accounts = accounts.unwrap();
        assert!(accounts.to_string().contains("Sim101"), "{accounts}");
    }
    let per_replica: Vec<f64> = tool_calls()
        .await
        .iter()
        .zip(&baseline)
        .map(|(now, before)| now - before)
        .collect();
    eprintln!(
        "through HAProxy: {calls} GetAccounts answered, per replica {per_replica:?}, the Add-On on \
         r{}; OAuth requests per replica {served_oauth:?}",
        holder + 1
    );
    let counted = per_replica.iter().sum::<f64>();
    assert!((counted - f64::from(calls)).abs() < 0.5, "{per_replica:?}");
    assert!(per_replica[holder] > 0.0, "{per_replica:?}");
    assert!(
        per_replica
            .iter()
            .enumerate()
            .any(|(n, &c)| n != holder && c > 0.0),
        "no call was routed across replicas: {per_replica:?}"
    );
    client.cancel().await.ok();

    // Every replica has verified the token (and cached the grant) before it is revoked.
    for replica in &cluster.replicas {
        let reply = try_tools_call(&replica.direct(), &access, "GetMcpCapabilities", json!({}))
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{}", replica.name);
    }
    let clicked = Instant::now();
    let revoked = endpoint
        .form(
            "/v1/oauth/mcp/revoke",
            &[("token", &access), ("client_id", &flow.client_id)],
        )
        .await;
    assert_eq!(revoked.status(), 200);
    for replica in &cluster.replicas {
        let direct = replica.direct();
        wait_until(
            &format!("{} refuses the revoked token", replica.name),
            Duration::from_secs(1).saturating_sub(clicked.elapsed()),
            async || {
                try_tools_call(&direct, &access, "GetMcpCapabilities", json!({}))
                    .await
                    .is_ok_and(|reply| reply.status() == 401)
            },
        )
        .await;
    }
    eprintln!(
        "revocation: refused with 401 on all {REPLICAS} replicas {:?} after the request was sent",
        clicked.elapsed()
    );
    addon.abort();
}

/// What a request of the load is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `tools/call` of a tool the server answers itself (`GetMcpCapabilities`).
    Mcp,
    /// A refresh-token rotation.
    Refresh,
    /// `tools/call` of an Add-On tool (`GetAccounts`).
    Addon,
}

const KINDS: [Kind; 3] = [Kind::Mcp, Kind::Refresh, Kind::Addon];

/// One request of the load, as the client saw it.
#[derive(Debug, Clone)]
struct Sample {
    kind: Kind,
    phase: &'static str,
    sent: Instant,
    done: Instant,
    /// 0 when no HTTP answer came.
    status: u16,
    /// The body's `error`, or what went wrong.
    error: String,
    /// The body's `message`.
    message: String,
}

impl Sample {
    fn ok(&self) -> bool {
        self.status == 200 && self.error.is_empty()
    }

    /// Whether it was sent before `to` and answered after `from`.
    fn in_flight_during(&self, from: Instant, to: Instant) -> bool {
        self.sent <= to && from <= self.done
    }
}

#[derive(Clone)]
struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    phase: Arc<Mutex<&'static str>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    fn phase(&self) -> &'static str {
        *self.phase.lock().unwrap()
    }

    fn enter(&self, phase: &'static str) {
        *self.phase.lock().unwrap() = phase;
    }

    fn record(&self, kind: Kind, phase: &'static str, sent: Instant, answer: Answer) {
        let (status, error, message) = answer;
        self.samples.lock().unwrap().push(Sample {
            kind,
            phase,
            sent,
            done: Instant::now(),
            status,
            error,
            message,
        });
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Waits until every kind has had `n` more requests answered 200.
    async fn progress(&self, n: usize) {
        let start = self.samples();
        let done =
            |samples: &[Sample], kind| samples.iter().filter(|s| s.kind == kind && s.ok()).count();
        wait_until(
            "the load makes progress",
            Duration::from_secs(15),
            async || {
                let now = self.samples();
                KINDS
                    .iter()
                    .all(|&kind| done(&now, kind) >= done(&start, kind) + n)
            },
        )
        .await;
    }
}

/// What a request got: its status (0 without an HTTP answer), the body's `error` or what went
/// wrong (empty on success), and the body's `message`.
type Answer = (u16, String, String);

fn answer(status: u16, body: &Value, error: String) -> Answer {
    let message = body["message"].as_str().unwrap_or_default().to_owned();
    (status, error, message)
}

/// A tool call through `endpoint` (a tool error counts as a failure).
async fn call_tool(endpoint: &Endpoint, access: &str, tool: &str) -> Answer {
    match try_tools_call(endpoint, access, tool, json!({})).await {
        Ok(reply) => {
            let status = reply.status().as_u16();
            let body: Value = reply.json().await.unwrap_or(Value::Null);
            let error = if let Some(error) = body["error"].as_str() {
                error.to_owned()
            } else if body["result"]["isError"] != false {
                format!("not a tool result: {body}")
            } else {
                String::new()
            };
            answer(status, &body, error)
        }
        Err(err) => (0, error_chain(&err), String::new()),
    }
}

/// An error and its sources, for a failure message.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// A refresh through `endpoint`: on success the chain moves on to the successor.
async fn refresh(endpoint: &Endpoint, client_id: &str, chain: &mut String) -> Answer {
    let sent = endpoint
        .http
        .post(endpoint.url("/v1/oauth/mcp/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", chain.as_str()),
            ("client_id", client_id),
        ])
        .send()
        .await;
    match sent {
        Ok(reply) => {
            let status = reply.status().as_u16();
            let body: Value = reply.json().await.unwrap_or(Value::Null);
            match body["refresh_token"].as_str() {
                Some(successor) if status == 200 => {
                    successor.clone_into(chain);
                    answer(status, &body, String::new())
                }
                _ => {
                    let error = body["error"].as_str().unwrap_or("no token").to_owned();
                    answer(status, &body, error)
                }
            }
        }
        Err(err) => (0, error_chain(&err), String::new()),
    }
}

/// Counts per kind in `phase`: (ok, failed).
fn counts(samples: &[Sample], phase: &str, kind: Kind) -> (usize, usize) {
    let of: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.phase == phase && s.kind == kind)
        .collect();
    let ok = of.iter().filter(|s| s.ok()).count();
    (ok, of.len() - ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_haproxy_fails_no_request_and_kill_9_only_those_in_flight() {
    let email = "rolling@example.com";
    let started = Instant::now();
    let mut cluster = Cluster::start(email).await;
    let endpoint = cluster.endpoint();
    let mut flow = Flow::new(&endpoint, email).await;
    let access = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let addon = cluster.spawn_addon(email);
    wait_until(
        "the Add-On connected",
        Duration::from_secs(10),
        async || addon_connected(&endpoint, &access).await,
    )
    .await;

    let load = Load {
        samples: Arc::default(),
        phase: Arc::new(Mutex::new("steady")),
        stop: Arc::default(),
    };
    let mut tasks = Vec::new();
    let mut in_parallel = 0;
    // Server-answered tool calls and Add-On calls, two connections each.
    for (kind, tool) in [
        (Kind::Mcp, "GetMcpCapabilities"),
        (Kind::Addon, "GetAccounts"),
    ] {
        for _ in 0..2 {
            let (load, endpoint, access) = (load.clone(), endpoint.clone(), access.clone());
            in_parallel += 1;
            tasks.push(tokio::spawn(async move {
                while !load.stop.load(Ordering::SeqCst) {
                    let (phase, sent) = (load.phase(), Instant::now());
                    let answer = call_tool(&endpoint, &access, tool).await;
                    load.record(kind, phase, sent, answer);
                }
            }));
        }
    }
    // Refreshes: each chain is its own grant (a rotation racing another on one chain would be a
    // replay) and comes from its own address, as separate installs do, paced within the
    // per-address and per-grant token limits.
    for n in 0..5u8 {
        let tokens = flow
            .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
            .await;
        let mut chain = tokens["refresh_token"].as_str().unwrap().to_owned();
        let from = cluster.endpoint_from(IpAddr::from([127, 0, 0, 2 + n]));
        let (load, client_id) = (load.clone(), flow.client_id.clone());
        in_parallel += 1;
        tasks.push(tokio::spawn(async move {
            while !load.stop.load(Ordering::SeqCst) {
                let (phase, sent) = (load.phase(), Instant::now());
                let answer = refresh(&from, &client_id, &mut chain).await;
                load.record(Kind::Refresh, phase, sent, answer);
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
        }));
    }
    load.progress(3).await;

    // Rolling restart, one replica at a time. Add-On calls may fail (408) only if they were in
    // flight between the drain of the replica holding the Add-On's socket and the Add-On's
    // return.
    load.enter("rolling restart");
    let mut addon_away: Vec<(Instant, Instant)> = Vec::new();
    let mut reconnects = Vec::new();
    for n in 0..REPLICAS {
        let holder = cluster.addon_replica().await;
        cluster.note(format!("the Add-On on {holder:?}"));
        let held = holder == Some(n);
        let drained = Instant::now();
        cluster.restart(n).await;
        if held {
            let back = wait_for(
                "the Add-On back after its replica restarted",
                Duration::from_secs(10),
                async || addon_connected(&endpoint, &access).await.then(Instant::now),
            )
            .await;
            cluster.note("the Add-On back");
            reconnects.push(back - drained);
            addon_away.push((drained, back));
        }
        load.progress(2).await;
    }
    assert!(!reconnects.is_empty(), "the Add-On's replica was restarted");

    load.enter("after the restarts");
    load.progress(3).await;

    // kill -9 of a replica that does not hold the Add-On: only the requests in flight on it fail.
    load.enter("kill -9");
    let holder = cluster
        .addon_replica()
        .await
        .expect("the Add-On is connected");
    let victim = (holder + 1) % REPLICAS;
    let victim_name = cluster.replicas[victim].name.clone();
    let killed = Instant::now();
    signal(cluster.replicas[victim].process().pid(), "KILL");
    // Reaped: every socket it had is closed by now.
    let process = cluster.replicas[victim].process.as_mut().expect("running");
    tokio::task::block_in_place(|| process.wait_exit(Duration::from_secs(5)))
        .expect("the killed replica exits");
    let gone = Instant::now();
    wait_until(
        "HAProxy takes the killed replica out",
        Duration::from_secs(10),
        async || {
            cluster
                .haproxy
                .server(&victim_name)
                .await
                .is_some_and(|s| s.status.starts_with("DOWN"))
        },
    )
    .await;
    load.progress(3).await;
    load.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    addon.abort();
    // A request is the kill's if it was in flight when the replica died, whenever it was sent.
    let mut samples = load.samples();
    for sample in &mut samples {
        if sample.in_flight_during(killed, gone) {
            sample.phase = "kill -9";
        }
    }

    let phases = ["steady", "rolling restart", "after the restarts", "kill -9"];
    for phase in phases {
        let line: Vec<String> = KINDS
            .iter()
            .map(|&kind| {
                let (ok, failed) = counts(&samples, phase, kind);
                format!("{kind:?} {ok} ok / {failed} failed")
            })
            .collect();
        eprintln!("load balancer, {phase}: {}", line.join(", "));
    }
    let failures = |phase: &str| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.phase == phase && !s.ok())
            .collect()
    };
    let statuses = |phase: &str| -> Vec<String> {
        failures(phase)
            .iter()
            .map(|s| format!("{:?} {} {} {}", s.kind, s.status, s.error, s.message))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    eprintln!(
        "load balancer: failures while restarting {:?}, at the kill {:?}; the Add-On back \
         {reconnects:?} after its replica was drained; {victim_name} killed, gone after {:?}; \
         {in_parallel} connections; {:.1} s in all",
        statuses("rolling restart"),
        statuses("kill -9"),
        gone - killed,
        started.elapsed().as_secs_f32()
    );

    // Nothing fails outside the kill; Add-On calls only with the documented 408 while the
    // Add-On's replica restarts.
    let timeline = cluster.timeline(started);
    for phase in ["steady", "rolling restart", "after the restarts"] {
        for failure in failures(phase) {
            let context = format!(
                "{failure:?} sent at {} ms, answered at {} ms; timeline:\n{timeline}",
                failure.sent.duration_since(started).as_millis(),
                failure.done.duration_since(started).as_millis()
            );
            assert_eq!(failure.kind, Kind::Addon, "{phase}: {context}");
            assert_eq!(failure.status, 408, "{phase}: {context}");
            assert_eq!(failure.error, "addon_disconnected", "{phase}: {context}");
            assert!(
                addon_away
                    .iter()
                    .any(|&(from, to)| failure.in_flight_during(from, to)),
                "{phase}: an Add-On call failed while its replica was up: {context}"
            );
        }
    }
    for reconnect in &reconnects {
        assert!(*reconnect < Duration::from_secs(5), "{reconnects:?}");
    }
    // The kill: only requests in flight on the killed replica fail, each task had at most one.
    let killed_ones = failures("kill -9");
    for failure in &killed_ones {
        assert!(
            failure.in_flight_during(killed, gone),
            "a request failed that was not in flight at the kill: {failure:?}"
        );
    }
    assert!(
        killed_ones.len() <= in_parallel,
        "{} failed with {in_parallel} connections: {killed_ones:?}",
        killed_ones.len()
    );
}
