//! The composition root and the HTTP server: the services started and joined by adapters
//! (`serve_on`), router composition, middleware, health endpoints, graceful shutdown.
//!
//! Two listeners: the public one (OAuth, MCP, Add-On, health probes) and the admin one
//! (`/metrics` and the probes), so operational data never reaches the internet through the
//! public port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{FromRef, Request, State};
use axum::http::header::Entry;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use sqlx::PgPool;
use store::Background;
use store::clock::Clock;
use store::tasks::Supervisor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Layer, Service};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::adapters::{AddonAccountsAdapter, AddonRelay, OAuthTokenVerifier};
use crate::config::Config;
use crate::database::{Database, Role};
use crate::http::{BodyBounds, Guard, InFlight, Limits};
use crate::readiness::Readiness;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest wait for the background services to stop at shutdown.
const BACKGROUND_GRACE: Duration = Duration::from_secs(5);
/// Connections the admin listener holds at once: a scraper and a few probes.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Everything handlers share, behind one `Arc`: the router clones its state for every request.
/// Feature crates take their parts through `FromRef`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppParts>);

#[derive(Debug)]
pub struct AppParts {
    pub db: PgPool,
    pub config: Arc<Config>,
    pub oauth: oauth::OAuthState,
    pub mcp: mcp::McpState,
    pub addon: addon_bridge::AddonBridge,
    pub account: oauth::account::AccountState,
    pub metrics: PrometheusHandle,
    pub readiness: Readiness,
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

macro_rules! part_from_state {
    ($($field:ident: $part:ty),* $(,)?) => {
        $(impl FromRef<AppState> for $part {
            fn from_ref(state: &AppState) -> Self {
                state.0.$field.clone()
            }
        })*
    };
}

part_from_state! {
    db: PgPool,
    config: Arc<Config>,
    oauth: oauth::OAuthState,
    mcp: mcp::McpState,
    addon: addon_bridge::AddonBridge,
    account: oauth::account::AccountState,
    metrics: PrometheusHandle,
    readiness: Readiness,
}

/// The whole application: routes, and around them the middleware every request passes.
pub fn app(
    state: AppState,
) -> impl Service<
    Request,
    Response = axum::http::Response<
        impl hyper::body::Body<Data = Bytes, Error = impl Into<tower::BoxError>> + Send + 'static,
    >,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let http = &state.config.http;
    // Probes answer even at capacity; everything else is shed beyond the in-flight limit. Every
    // handler but the MCP endpoint answers within the request timeout. MCP tool calls are
    // bounded by their own relay deadlines (up to 300 s for a backtest), and carry larger bodies
    // (NinjaScript source). `/metrics` is on the admin listener only.
    let in_flight = InFlight::new(http.max_in_flight_requests.get());
    let bounded = Router::new()
        .merge(oauth::router())
        .merge(addon_bridge::router())
        .merge(oauth::account::router())
        .layer(Guard {
            shed: Some(in_flight.clone()),
            body: Some(BodyBounds {
                limit: http.body_limit_bytes.get(),
                deadline: http.body_read_timeout(),
            }),
            handler_deadline: Some(http.request_timeout()),
        });
    let mcp = mcp::router().layer(Guard {
        shed: Some(in_flight),
        body: Some(BodyBounds {
            limit: http.mcp_body_limit_bytes.get(),
            deadline: http.body_read_timeout(),
        }),
        handler_deadline: None,
    });
    let router = bounded
        .merge(mcp)
        .merge(probes().layer(Guard::default()))
        // Counted by the same guard, under the `unmatched` route.
        .fallback_service(Guard::default().layer(tower::service_fn(not_found)));
    let https = state.config.public_url.is_https();
    around_routes(router.with_state(state), https)
}

/// Requests no route matches.
async fn not_found(_: Request) -> Result<Response, Infallible> {
    Ok(StatusCode::NOT_FOUND.into_response())
}

/// The middleware every request passes, wrapped once around `routes` (not layered onto each
/// route: a request then clones and boxes these once, not once per route layer). Outermost
/// first: every request gets an id and its secrets in headers are marked before anything could
/// record them, then a span that carries the id. Behind https, HSTS: browsers must never fall
/// back to http for this host (OAuth 2.1 §1.5).
pub fn around_routes<S>(
    routes: S,
    https: bool,
) -> impl Service<
    Request,
    Response = axum::http::Response<
        impl hyper::body::Body<Data = Bytes, Error = impl Into<tower::BoxError>> + Send + 'static,
    >,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    Edge {
        inner: TraceLayer::new_for_http()
            .make_span_with(request_span)
            .on_request(())
            .on_response(DefaultOnResponse::new().level(Level::INFO))
            .layer(routes),
        ids: RequestIds::new(),
        hsts: https,
    }
}

/// The outermost layer, one pass over the headers each way: the request keeps the id it
/// brought or gets one, and its credentials (`Authorization`, `Cookie`) are marked sensitive
/// before anything could record them; the response carries the request's id, its `Set-Cookie`
/// marked sensitive, and, behind https, HSTS.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    pub inner: S,
    pub ids: RequestIds,
    pub hsts: bool,
}

impl<S, B> Service<Request> for Edge<S>
where
    S: Service<Request, Response = axum::http::Response<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = EdgeResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let headers = request.headers_mut();
        mark_sensitive(headers, header::AUTHORIZATION);
        mark_sensitive(headers, header::COOKIE);
        let request_id = match headers.get(&REQUEST_ID) {
            Some(id) => Some(id.clone()),
            None => self.ids.next().inspect(|id| {
                headers.insert(REQUEST_ID, id.clone());
            }),
        };
        EdgeResponse {
            inner: self.inner.call(request),
            request_id,
            hsts: self.hsts,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Edge`].
    pub struct EdgeResponse<F> {
        #[pin]
        inner: F,
        request_id: Option<HeaderValue>,
        hsts: bool,
    }
}

impl<F, B, E> Future for EdgeResponse<F>
where
    F: Future<Output = Result<axum::http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match std::task::ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(err) => return Poll::Ready(Err(err)),
        };
        let headers = response.headers_mut();
        if let Some(request_id) = this.request_id.take() {
            headers.entry(REQUEST_ID).or_insert(request_id);
        }
        mark_sensitive(headers, header::SET_COOKIE);
        if *this.hsts {
            headers.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains"),
            );
        }
        Poll::Ready(Ok(response))
    }
}

fn mark_sensitive(headers: &mut HeaderMap, name: HeaderName) {
    if let Entry::Occupied(mut values) = headers.entry(name) {
        for value in values.iter_mut() {
            value.set_sensitive(true);
        }
    }
}

/// Request ids for requests that bring none: UUIDv8 (RFC 9562 §5.8) made of a random per-process
/// prefix and a counter, unique across replicas without a system call per request. They name
/// requests in logs and traces; they guard nothing, so they need not be unpredictable.
#[derive(Debug, Clone)]
pub struct RequestIds {
    prefix: [u8; 8],
    next: Arc<AtomicU64>,
}

impl RequestIds {
    pub fn new() -> Self {
        let (prefix, _) = uuid::Uuid::new_v4().as_u64_pair();
        Self {
            prefix: prefix.to_be_bytes(),
            next: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    /// The next id, as the header's value (always one: a hyphenated UUID is a valid value).
    pub fn next(&self) -> Option<HeaderValue> {
        let counter = self.next.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.prefix);
        bytes[8..].copy_from_slice(&counter.to_be_bytes());
        let id = uuid::Builder::from_custom_bytes(bytes).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)).ok()
    }
}

/// The admin listener's routes: metrics and the probes, no middleware (nothing here reads a
/// body or a credential, and scrapes would only add noise to the request log and counters).
pub fn admin_app(state: AppState) -> Router {
    probes()
        .route("/metrics", get(get_metrics))
        .route(addon_bridge::peer::PATH, get(get_replica_link))
        .with_state(state)
}

/// Another replica's link for Add-On calls to sockets this one holds.
async fn get_replica_link(
    State(addon): State<addon_bridge::AddonBridge>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    addon.accept_peer(upgrade)
}

fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
}

/// The span of one request: method, path (never the query string, which may carry secrets) and
/// the request id.
pub fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    // W3C trace context: the trace this request continues, when traces are exported.
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .filter(|value| vocabulary::trace::parse(value).is_some());
    tracing::info_span!(
        "request",
        method = request.method().as_str(),
        path = request.uri().path(),
        request_id,
        traceparent,
    )
}

/// Installs the process's metrics recorder (Prometheus text format at `/metrics`) and keeps its
/// histograms trimmed under the supervisor.
pub fn install_metrics(tasks: &Supervisor) -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("addon_relay_duration_seconds".to_owned()),
            &[
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 300.0,
            ],
        )?
        .install_recorder()
        .map_err(|err| anyhow::anyhow!("installing the metrics recorder: {err}"))?;
    let upkeep = handle.clone();
    tasks.spawn("metrics upkeep", move |mut shutdown| {
        let upkeep = upkeep.clone();
        async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => upkeep.run_upkeep(),
                    () = shutdown.requested() => return,
                }
            }
        }
    });
    Ok(handle)
}

async fn get_metrics(State(metrics): State<PrometheusHandle>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

async fn get_healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Answers from the background probe's last result, never waiting on the database.
async fn get_readyz(State(readiness): State<Readiness>) -> Response {
    if readiness.is_ready() {
        return Json(json!({ "status": "ready" })).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "unavailable",
            "error": "server_error",
            "message": "the database is not reachable",
        })),
    )
        .into_response()
}

/// Serves until SIGTERM or Ctrl-C, then stops accepting connections on both listeners, ends
/// pending relays and Add-On sockets, and lets in-flight requests finish for up to the
/// configured grace period.
pub async fn serve(
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: AppState,
    shutdown: ShutdownSignal,
) {
    let http = &state.config.http;
    let limits = Limits {
        max_connections: http.max_connections.get(),
        header_read_timeout: http.header_read_timeout(),
        shutdown_grace: http.shutdown_grace(),
    };
    let admin_limits = Limits {
        max_connections: ADMIN_MAX_CONNECTIONS,
        ..limits
    };
    // One signal stops both listeners.
    let (stopping, stopped) = watch::channel(false);
    let stop_public = async move {
        shutdown.wait().await;
        let _ = stopping.send(true);
    };
    let admin = admin.map(|listener| (listener, admin_app(state.clone())));
    let admin_server = async move {
        if let Some((listener, router)) = admin {
            let mut stopped = stopped;
            let stop = async move {
                let _ = stopped.wait_for(|stopping| *stopping).await;
            };
            crate::http::serve(listener, router, admin_limits, stop, async {}).await;
        }
    };
    let addon = state.addon.clone();
    let mcp = state.mcp.clone();
    // Open MCP streams end, pending relays end in 408 and Add-On sockets get a going-away close
    // while HTTP requests drain.
    let on_stop = async move {
        mcp.close_streams();
        addon.shutdown().await;
    };
    let public_server = crate::http::serve(listener, app(state), limits, stop_public, on_stop);
    tokio::join!(public_server, admin_server);
}

/// SIGTERM and SIGINT, listened for from the moment this is created (before the cluster
/// starts), so a signal during start-up still shuts down cleanly instead of killing the process.
#[derive(Debug)]
pub struct ShutdownSignal {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    pub fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = self.interrupt.recv() => tracing::info!("Ctrl-C received; shutting down"),
        }
    }
}

/// `crosstrade serve`: the server on the configured database until shutdown.
pub async fn run(config: Config, shutdown: ShutdownSignal) -> anyhow::Result<()> {
    let db = Database::open(&config, Role::Server).await?;
    let outcome = serve_on(&config, &db, shutdown, |_, _| Ok(())).await;
    let closed = db.close().await;
    outcome.and(closed)
}

/// Migrates, binds, calls `ready` with the bound public and admin addresses, and serves until
/// shutdown. Owns the replica's background services: they start here and stop last, once the
/// listeners are closed and in-flight requests have drained (see ARCHITECTURE.md, "Shutdown").
pub async fn serve_on(
    config: &Config,
    db: &Database,
    shutdown: ShutdownSignal,
    ready: impl FnOnce(SocketAddr, Option<SocketAddr>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let applied = db.migrate().await?;
    let background = Background::start(&db.pool);
    let outcome = compose_and_serve(config, db, applied, &background, shutdown, ready).await;
    if !background.tasks.shutdown(BACKGROUND_GRACE).await {
        tracing::warn!("background services aborted after {BACKGROUND_GRACE:?}");
    }
    outcome
}

async fn compose_and_serve(
    config: &Config,
    db: &Database,
    applied: usize,
    background: &Background,
    shutdown: ShutdownSignal,
    ready: impl FnOnce(SocketAddr, Option<SocketAddr>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let metrics = install_metrics(&background.tasks)?;
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
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let state = compose(config, &db.pool, background, metrics, admin_addr).await?;
    // Announced before the public address, so whoever waits for "listening" knows both.
    if let Some(addr) = admin_addr {
        tracing::info!(%addr, "admin listening");
    }
    tracing::info!(%addr, migrations_applied = applied, public_url = config.public_url.as_str(), "listening");
    ready(addr, admin_addr)?;
    serve(listener, admin, state, shutdown).await;
    Ok(())
}

/// The application's state on a migrated database: the OAuth service, the readiness probe, the
/// Add-On bridge (advertising `admin_addr` to the other replicas) and the MCP endpoint, their
/// background work under `background`. Nothing is listening yet.
pub async fn compose(
    config: &Config,
    db: &PgPool,
    background: &Background,
    metrics: PrometheusHandle,
    admin_addr: Option<SocketAddr>,
) -> anyhow::Result<AppState> {
    let master_secret = config.load_master_secret()?;
    let oauth = oauth::OAuthState::start(
        config.oauth_settings(),
        db.clone(),
        master_secret.expose().as_bytes(),
        Clock::system(),
        background,
    )
    .await
    .context("starting the OAuth service")?;
    let revocations = oauth.clone();
    let readiness = crate::readiness::start(db, &background.tasks, move || {
        revocations.revocations_live()
    })
    .await;
    let bridge_settings = config.bridge_settings(master_secret.expose().as_bytes(), admin_addr);
    let addon = addon_bridge::AddonBridge::start(db.clone(), bridge_settings, background)
        .await
        .map_err(|err| anyhow::anyhow!("starting the Add-On bridge: {err}"))?;
    let mcp = mcp::McpState::new(
        config.mcp_settings(),
        db.clone(),
        Arc::new(OAuthTokenVerifier(oauth.clone())),
        Arc::new(AddonRelay {
            bridge: addon.clone(),
            db: db.clone(),
        }),
    )
    .with_tier_cache(store::tiers::TierCache::start(background))
    .with_activity(store::activity::Recorder::start(
        db.clone(),
        Clock::system(),
        background,
    ));
    Ok(AppState(Arc::new(AppParts {
        db: db.clone(),
        config: Arc::new(config.clone()),
        oauth: oauth.clone(),
        mcp,
        account: oauth::account::AccountState {
            oauth,
            addon: Arc::new(AddonAccountsAdapter {
                bridge: addon.clone(),
                db: db.clone(),
            }),
        },
        addon,
        metrics,
        readiness,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_version_8_uuids_sharing_the_process_prefix() {
        let ids = RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        let mut prefixes = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = ids.next().unwrap();
            let text = id.to_str().unwrap().to_owned();
            let uuid = uuid::Uuid::parse_str(&text).unwrap();
            assert_eq!(uuid.get_version_num(), 8, "{text}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{text}");
            prefixes.insert(uuid.as_u64_pair().0);
            assert!(seen.insert(text), "a request id repeated");
        }
        assert_eq!(prefixes.len(), 1);
        // Another process (here: another generator) starts from another random prefix.
        let other = RequestIds::new().next().unwrap();
        let other = uuid::Uuid::parse_str(other.to_str().unwrap()).unwrap();
        assert!(!prefixes.contains(&other.as_u64_pair().0));
    }
}
