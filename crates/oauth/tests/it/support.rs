//! A real OAuth server on 127.0.0.1 over a fresh database, and a client that walks the flow the
//! way a browser and an MCP client would (no redirects followed, cookies by hand).

use std::net::SocketAddr;
use std::time::Duration;

use oauth::{CimdSettings, OAuthSettings, OAuthState};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use store::clock::Clock;
use store::users::{Email, Tier};
pub use testkit::TestDb;
pub use testkit::oauth::{
    Browser, Endpoint, Flow, PASSWORD, authorize_url, hidden, location, param, pkce, query,
};
pub use testkit::oneshot::Reply;
use uuid::Uuid;

pub const MASTER: &[u8] = b"a master secret of at least thirty-two bytes";

/// The issuer of a server with no socket: never dialled, only compared.
const IN_PROCESS_ISSUER: &str = "https://app.crosstrade.example";

pub struct Server {
    pub endpoint: Endpoint,
    pub base: String,
    pub state: OAuthState,
    /// The same router the socket serves, for [`Server::oneshot`].
    pub app: axum::Router,
    pub clock: Clock,
    pub db: TestDb,
}

impl std::ops::Deref for Server {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

pub fn settings(issuer: &str) -> OAuthSettings {
    OAuthSettings {
        issuer: issuer.to_owned(),
        authorization_code_lifetime: Duration::from_secs(60),
        access_token_lifetime: Duration::from_secs(3600),
        refresh_token_lifetime: None,
        refresh_token_idle_lifetime: Duration::from_secs(14 * 86400),
        registrations_per_hour: 10,
        sign_in_failures_per_ip: 20,
        sign_in_failures_per_account: 5,
        sign_in_delay_base: Duration::from_secs(30),
        password_checks_at_once: 8,
        password_check_wait: Duration::from_secs(5),
        token_requests_per_minute: 1000,
        token_requests_per_grant_per_minute: 1000,
        trusted_proxies: vec!["127.0.0.2/32".parse().unwrap()],
    }
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut OAuthSettings)) -> Self {
        let db = TestDb::new().await;
        Self::start_on(db, adjust).await
    }

    /// Another replica's OAuth service on the same database.
    pub async fn replica(&self) -> OAuthState {
        let mut settings = settings(&self.base);
        settings.trusted_proxies.clear();
        let db = self.db.pool().await;
        let background = store::Background::start(&db);
        OAuthState::start(settings, db, MASTER, self.clock.clone(), &background)
            .await
            .unwrap()
    }

    async fn start_on(db: TestDb, adjust: impl FnOnce(&mut OAuthSettings)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on_cimd(db, adjust, CimdSettings::default(), Some(listener)).await
    }

    /// A server with no socket, for tests of one request and its response: drive it with
    /// [`Server::oneshot`].
    pub async fn in_process() -> Self {
        Self::start_on_cimd(TestDb::new().await, |_| {}, CimdSettings::default(), None).await
    }

    /// A server with these Client ID Metadata Document settings.
    pub async fn start_cimd(cimd: CimdSettings) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on_cimd(TestDb::new().await, |_| {}, cimd, Some(listener)).await
    }

    async fn start_on_cimd(
        db: TestDb,
        adjust: impl FnOnce(&mut OAuthSettings),
        cimd: CimdSettings,
        listener: Option<tokio::net::TcpListener>,
    ) -> Self {
        let base = match &listener {
            Some(listener) => format!("http://{}", listener.local_addr().unwrap()),
            None => IN_PROCESS_ISSUER.to_owned(),
        };
        let mut settings = settings(&base);
        adjust(&mut settings);
        let clock = Clock::manual(Clock::system().now());
        let pool = db.pool().await;
        let background = store::Background::start(&pool);
        let state =
            OAuthState::start_with_cimd(settings, cimd, pool, MASTER, clock.clone(), &background)
                .await
                .unwrap();
        let app = oauth::router::<OAuthState>().with_state(state.clone());
        if let Some(listener) = listener {
            let app = app.clone();
            tokio::spawn(async move {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await
                .unwrap();
            });
        }
        Self {
            endpoint: Endpoint::new(&base),
            base,
            state,
            app,
            clock,
            db,
        }
    }

    /// Sends one request through the router in-process, from a loopback peer.
    pub async fn oneshot(&self, request: reqwest::RequestBuilder) -> Reply {
        testkit::oneshot::send(&self.app, request).await
    }

    /// `POST /v1/oauth/mcp/register` in-process.
    pub async fn register_oneshot(&self, body: Value) -> Reply {
        self.oneshot(
            self.http
                .post(self.url("/v1/oauth/mcp/register"))
                .json(&body),
        )
        .await
    }

    pub async fn user(&self, email: &str, tier: Tier) -> Uuid {
        let hash = store::password::hash(PASSWORD).unwrap();
        store::users::insert(
            &self.db.pool().await,
            &Email::parse(email).unwrap(),
            &hash,
            tier,
        )
        .await
        .unwrap()
        .id
    }
}

/// A response received over a socket or in-process.
pub trait Answer {
    fn into_reply(self) -> impl Future<Output = Reply>;
}

impl Answer for Response {
    fn into_reply(self) -> impl Future<Output = Reply> {
        Reply::read(self)
    }
}

impl Answer for Reply {
    async fn into_reply(self) -> Reply {
        self
    }
}

/// Asserts an RFC 6749 §5.2 error response.
pub async fn assert_oauth_error(response: impl Answer, status: StatusCode, code: &str) -> Value {
    let response = response.into_reply().await;
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body
}

pub async fn count(server: &Server, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&server.db.pool().await)
        .await
        .unwrap()
}
