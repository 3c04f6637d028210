use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp::{
    BoxFuture, CallError, CallOutcome, CallRequest, McpSettings, McpState, Presence, Principal,
    Scope, TokenRejection, TokenVerifier, ToolRelay,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sqlx::PgPool;
use store::users::{Email, Tier};
use testkit::TestDb;
use tokio::sync::broadcast;
use uuid::Uuid;
use vocabulary::{Job, JobError, JobFilter, JobStart, JobState, TooOld};

pub const PUBLIC_URL: &str = "https://app.crosstrade.example";
pub const BROWSER_ORIGIN: &str = "http://localhost:6274";
pub const RESOURCE_METADATA: &str =
    "https://app.crosstrade.example/.well-known/oauth-protected-resource";

/// Tokens → principals or rejections.
pub struct TableVerifier(HashMap<String, Result<Principal, TokenRejection>>);

impl TokenVerifier for TableVerifier {
    fn verify<'a>(
        &'a self,
        bearer_token: &'a str,
    ) -> BoxFuture<'a, Result<Principal, TokenRejection>> {
        let answer = self
            .0
            .get(bearer_token)
            .cloned()
            .unwrap_or(Err(TokenRejection::Unknown));
        Box::pin(async move { answer })
    }
}

/// How the fake Add-On answers calls.
#[derive(Debug, Clone)]
pub enum Behaviour {
    Answer(CallOutcome),
    Fail(CallError),
    /// Does not answer; the relay gives up at this (shortened) deadline.
    Slow(Duration),
}

pub struct TestRelay {
    presence: Mutex<HashMap<Uuid, Presence>>,
    behaviour: Mutex<Behaviour>,
    /// Jobs started through the relay, by id, and a counter bumped on every change.
    pub jobs: Mutex<HashMap<Uuid, (Uuid, Job)>>,
    job_changed: tokio::sync::watch::Sender<u64>,
    pub job_starts: Mutex<Vec<JobStart>>,
    changes: broadcast::Sender<Uuid>,
    pub calls: Mutex<Vec<CallRequest>>,
}

impl TestRelay {
    fn new() -> Self {
        Self {
            presence: Mutex::new(HashMap::new()),
            behaviour: Mutex::new(Behaviour::Answer(CallOutcome::Ok(json!({})))),
            changes: broadcast::channel(16).0,
            calls: Mutex::new(Vec::new()),
            jobs: Mutex::new(HashMap::new()),
            job_changed: tokio::sync::watch::channel(0).0,
            job_starts: Mutex::new(Vec::new()),
        }
    }

    fn connected(&self, user: Uuid) -> bool {
        self.presence
            .lock()
            .unwrap()
            .get(&user)
            .is_some_and(|p| p.connected)
    }

    /// Moves a job on as the Add-On's events would.
    pub fn advance(&self, job_id: Uuid, progress: f64, state: JobState) {
        let mut jobs = self.jobs.lock().unwrap();
        let (_, job) = jobs.get_mut(&job_id).unwrap();
        job.progress = Some(progress);
        job.message = Some(format!("step {progress}"));
        job.state = state;
        job.version += 1;
        if state.is_final() {
            job.finished_at = Some(job.updated_at);
            job.result = Some(json!({"net_profit": 1250.5}));
        }
        drop(jobs);
        self.job_changed.send_modify(|n| *n += 1);
    }

    /// The id of the only job started so far.
    pub fn only_job(&self) -> Uuid {
        let jobs = self.jobs.lock().unwrap();
        assert_eq!(jobs.len(), 1);
        *jobs.keys().next().unwrap()
    }

    pub fn connect(&self, user: Uuid) {
        self.connect_offering(user, &["orders", "ninjascript"]);
    }

    /// The user's Add-On connects announcing `features` in its hello.
    pub fn connect_offering(&self, user: Uuid, features: &[&str]) {
        self.presence.lock().unwrap().insert(
            user,
            Presence {
                connected: true,
                addon_version: Some("1.13.2".into()),
                nt8_version: Some("8.1.4.1".into()),
                features: features.iter().map(|f| (*f).to_owned()).collect(),
                too_old: None,
            },
        );
        let _ = self.changes.send(user);
    }

    /// The user's last Add-On was refused as `version`, and none is connected.
    pub fn refuse(&self, user: Uuid, version: &str) {
        let refused_at = "2026-12-01T09:30:00Z".parse().unwrap();
        self.presence.lock().unwrap().insert(
            user,
            Presence {
                too_old: Some(TooOld {
                    addon_version: version.into(),
                    nt8_version: "8.1.4.1".into(),
                    refused_at,
                }),
                ..Presence::default()
            },
        );
        let _ = self.changes.send(user);
    }

    pub fn disconnect(&self, user: Uuid) {
        self.presence.lock().unwrap().remove(&user);
        let _ = self.changes.send(user);
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl ToolRelay for TestRelay {
    fn presence(&self, user_id: Uuid) -> BoxFuture<'_, Presence> {
        let presence = self
            .presence
            .lock()
            .unwrap()
            .get(&user_id)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { presence })
    }

    fn call(&self, call: CallRequest) -> BoxFuture<'_, Result<CallOutcome, CallError>> {
        let connected = self
            .presence
            .lock()
            .unwrap()
            .get(&call.user_id)
            .is_some_and(|p| p.connected);
        self.calls.lock().unwrap().push(call);
        let behaviour = self.behaviour.lock().unwrap().clone();
        Box::pin(async move {
            if !connected {
                return Err(CallError::NotConnected);
            }
            match behaviour {
                Behaviour::Answer(outcome) => Ok(outcome),
                Behaviour::Fail(error) => Err(error),
                Behaviour::Slow(deadline) => {
                    tokio::time::sleep(deadline).await;
                    Err(CallError::DeadlineExceeded)
                }
            }
        })
    }

    fn presence_changes(&self) -> broadcast::Receiver<Uuid> {
        self.changes.subscribe()
    }

    fn start_job(&self, start: JobStart) -> BoxFuture<'_, Result<Job, JobError>> {
        let connected = self.connected(start.user_id);
        Box::pin(async move {
            if !connected {
                return Err(JobError::Call(CallError::NotConnected));
            }
            let now = "2026-12-01T10:00:00Z".parse().unwrap();
            let job = Job {
                job_id: Uuid::now_v7(),
                kind: start.kind,
                tool: start.tool.clone(),
                state: JobState::Running,
                progress: None,
                message: None,
                summary: start.summary.clone(),
                result: None,
                error: None,
                created_at: now,
                updated_at: now,
                finished_at: None,
                version: 1,
            };
            self.jobs
                .lock()
                .unwrap()
                .insert(job.job_id, (start.user_id, job.clone()));
            self.job_starts.lock().unwrap().push(start);
            Ok(job)
        })
    }

    fn job(&self, user_id: Uuid, job_id: Uuid) -> BoxFuture<'_, Result<Option<Job>, CallError>> {
        let job = self
            .jobs
            .lock()
            .unwrap()
            .get(&job_id)
            .filter(|(owner, _)| *owner == user_id)
            .map(|(_, job)| job.clone());
        Box::pin(async move { Ok(job) })
    }

    fn jobs(&self, user_id: Uuid, filter: JobFilter) -> BoxFuture<'_, Result<Vec<Job>, CallError>> {
        let jobs = self
            .jobs
            .lock()
            .unwrap()
            .values()
            .filter(|(owner, job)| *owner == user_id && filter.kind.is_none_or(|k| k == job.kind))
            .map(|(_, job)| job.clone())
            .collect();
        Box::pin(async move { Ok(jobs) })
    }

    fn wait_job(
        &self,
        user_id: Uuid,
        job_id: Uuid,
        after_version: i64,
        until: std::time::Instant,
    ) -> BoxFuture<'_, Result<Option<Job>, CallError>> {
        Box::pin(async move {
            let mut changed = self.job_changed.subscribe();
            loop {
                let job = self.job(user_id, job_id).await?;
                match &job {
                    Some(current)
                        if current.version <= after_version
                            && !current.state.is_final()
                            && std::time::Instant::now() < until => {}
                    _ => return Ok(job),
                }
                tokio::select! {
                    _ = changed.changed() => {}
                    () = tokio::time::sleep_until(until.into()) => {}
                }
            }
        })
    }
}

pub struct Users {
    pub elite: Uuid,
    pub pro: Uuid,
    pub standard: Uuid,
}

pub struct App {
    pub base: String,
    pub url: String,
    /// Builds requests; [`App::send`] runs them through `router` in-process. Only an app from
    /// [`spawn_listening`] can also send them over a socket.
    pub client: reqwest::Client,
    router: axum::Router,
    pub relay: Arc<TestRelay>,
    pub db: PgPool,
    pub users: Users,
    verifier: Arc<TableVerifier>,
    _db: TestDb,
}

/// A reply: status, headers, raw body and the body as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn user(db: &PgPool, email: &str, tier: Tier) -> Uuid {
    store::users::insert(db, &Email::parse(email).unwrap(), "not-a-real-hash", tier)
        .await
        .unwrap()
        .id
}

/// A verifier answer that accepts the token.
#[expect(clippy::unnecessary_wraps, reason = "a row of the verifier's table")]
fn principal(user_id: Uuid, scope: Scope) -> Result<Principal, TokenRejection> {
    let principal = Principal {
        user_id,
        client_id: "client-1".into(),
        grant_id: Uuid::new_v4(),
        scope,
    };
    Ok(principal)
}

/// The endpoint with no socket: every request goes through [`App::send`].
pub async fn spawn() -> App {
    build(None).await
}

/// The endpoint also served on 127.0.0.1, for what needs a connection (open streams).
pub async fn spawn_listening() -> App {
    build(Some(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ))
    .await
}

async fn build(listener: Option<tokio::net::TcpListener>) -> App {
    let test_db = TestDb::new().await;
    let db = test_db.pool().await;
    let users = Users {
        elite: user(&db, "elite@example.com", Tier::Elite).await,
        pro: user(&db, "pro@example.com", Tier::Pro).await,
        standard: user(&db, "standard@example.com", Tier::Standard).await,
    };
    // Orders relay at once here; the confirmation tests set the policy they exercise.
    let never = vocabulary::confirm::Policy {
        mode: vocabulary::confirm::Mode::Never,
        ..vocabulary::confirm::Policy::default()
    };
    for user in [users.elite, users.pro, users.standard] {
        store::confirmations::set_policy(&db, user, &never)
            .await
            .unwrap();
    }
    let mut tokens = HashMap::new();
    tokens.insert("elite-read".into(), principal(users.elite, Scope::Read));
    tokens.insert("elite-trade".into(), principal(users.elite, Scope::Trade));
    tokens.insert("pro-trade".into(), principal(users.pro, Scope::Trade));
    tokens.insert(
        "standard-read".into(),
        principal(users.standard, Scope::Read),
    );
    tokens.insert("ghost".into(), principal(Uuid::new_v4(), Scope::Trade));
    tokens.insert("expired".into(), Err(TokenRejection::Expired));
    tokens.insert("revoked".into(), Err(TokenRejection::Revoked));
    tokens.insert("malformed".into(), Err(TokenRejection::Malformed));
    tokens.insert("audience".into(), Err(TokenRejection::WrongAudience));
    tokens.insert("unavailable".into(), Err(TokenRejection::Unavailable));
    let relay = Arc::new(TestRelay::new());
    let verifier = Arc::new(TableVerifier(tokens));
    let router = replica(&db, &verifier, &relay);
    let base = match listener {
        Some(listener) => {
            let base = format!("http://{}", listener.local_addr().unwrap());
            let router = router.clone();
            tokio::spawn(async move {
                axum::serve(listener, router).await.unwrap();
            });
            base
        }
        // Never dialled: requests only carry it.
        None => PUBLIC_URL.to_owned(),
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    App {
        url: format!("{base}/v1/api/mcp"),
        base,
        client,
        router,
        relay,
        db,
        users,
        verifier,
        _db: test_db,
    }
}

/// One server instance on the database: the endpoint's router.
fn replica(db: &PgPool, verifier: &Arc<TableVerifier>, relay: &Arc<TestRelay>) -> axum::Router {
    let state = McpState::new(
        McpSettings {
            public_url: PUBLIC_URL.into(),
            allowed_origins: vec![BROWSER_ORIGIN.into()],
            allow_loopback_origins: false,
            server_version: "9.9.9-test".into(),
            streams: mcp::StreamLimits::default(),
        },
        db.clone(),
        verifier.clone(),
        relay.clone(),
    );
    axum::Router::new().merge(mcp::router()).with_state(state)
}

impl App {
    /// One request and its whole response, in-process.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let reply = testkit::oneshot::send(&self.router, request).await;
        let text = reply.text();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status: reply.status(),
            headers: reply.headers().clone(),
            text,
            json,
        }
    }

    /// POST a JSON body to another server instance on the same database (another replica behind
    /// the load balancer), with its own Add-On relay, which nothing reaches.
    pub async fn post_to_other_replica(
        &self,
        token: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Reply {
        let other = replica(&self.db, &self.verifier, &Arc::new(TestRelay::new()));
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(token)
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = testkit::oneshot::send(&other, request).await;
        let text = reply.text();
        Reply {
            status: reply.status(),
            headers: reply.headers().clone(),
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// POST a JSON body with a token and extra headers.
    pub async fn post(&self, token: Option<&str>, headers: &[(&str, &str)], body: &Value) -> Reply {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// A legacy request under `version` (no header for 2025-03-26).
    pub async fn legacy(&self, token: &str, version: &str, method: &str, params: Value) -> Reply {
        let body = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params});
        if version == "2025-03-26" {
            self.post(Some(token), &[], &body).await
        } else {
            self.post(Some(token), &[("mcp-protocol-version", version)], &body)
                .await
        }
    }

    /// A 2026-07-28 request with `_meta` and the mirrored headers, as the SDKs send it.
    pub async fn modern(&self, token: &str, method: &str, params: Value) -> Reply {
        let (headers, body) = modern_request(method, params);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.post(Some(token), &headers, &body).await
    }

    pub async fn call(&self, token: &str, name: &str, arguments: Value) -> Reply {
        self.legacy(
            token,
            "2025-11-25",
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        )
        .await
    }
}

pub fn modern_request(method: &str, params: Value) -> (Vec<(String, String)>, Value) {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "test-client", "version": "1.0.0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let mut headers = vec![
        ("mcp-protocol-version".to_owned(), "2026-07-28".to_owned()),
        ("mcp-method".to_owned(), method.to_owned()),
    ];
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        headers.push(("mcp-name".to_owned(), name.to_owned()));
    }
    (
        headers,
        json!({"jsonrpc":"2.0","id":"m-1","method":method,"params":params}),
    )
}

pub fn server_info() -> Value {
    json!({"name":"crosstrade-mcp","title":"CrossTrade MCP","version":"9.9.9-test"})
}

/// The tool called `name` in a `tools/list` reply.
pub fn tool_named<'a>(reply: &'a Reply, name: &str) -> &'a Value {
    reply.json["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tool| tool["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

pub fn tool_names(reply: &Reply) -> Vec<String> {
    reply.json["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap().to_owned())
        .collect()
}
