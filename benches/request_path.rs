//! The whole request path in-process, no socket: the production router (`server::app`, composed
//! as `crosstrade serve` composes it, on a real database, logging JSON lines to `/dev/null`)
//! answering MCP requests; and the hello-world handler with the production middleware added one
//! layer at a time, which prices each layer (the cost table in BENCHMARKS.md).
//!
//! `cargo bench --bench request_path` (needs PostgreSQL binaries, like the tests). CI only
//! compiles it.
#![expect(clippy::unwrap_used, reason = "benchmark set-up")]

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use crosstrade::config::{Config, Sources};
use crosstrade::database::{Database, Role};
use crosstrade::http::{BodyBounds, Guard, InFlight, Limits};
use crosstrade::server;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};
use tracing_subscriber::layer::SubscriberExt as _;

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"GetMcpCapabilities","arguments":{}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
const EMAIL: &str = "bench@bench.invalid";

/// The request wrk sends in `bench/run`, as the accept loop hands it to the router.
fn post(path: &str, body: &'static str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::post(path)
        .header(header::HOST, "127.0.0.1:18080")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut request = request.body(Body::from(body)).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    request
}

fn run<S, B>(runtime: &Runtime, service: &S, request: Request<Body>) -> u16
where
    S: Service<Request<Body>, Response = axum::http::Response<B>, Error = Infallible> + Clone,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    runtime.block_on(async {
        let response = service.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = Body::new(response.into_body());
        black_box(axum::body::to_bytes(body, usize::MAX).await.unwrap());
        status
    })
}

type Boxed = tower::util::BoxCloneSyncService<Request<Body>, axum::response::Response, Infallible>;

/// The hello-world handler under the first `depth` production layers, composed as
/// `server::app` composes them: the edge and the span around the router, the route's guard
/// (counting, then shedding, then the body read) around the route.
fn hello(depth: usize) -> Boxed {
    let guard = Guard {
        shed: (depth >= 4).then(|| InFlight::new(1024)),
        body: (depth >= 5).then_some(BodyBounds {
            limit: 4 * 1024 * 1024,
            deadline: Duration::from_secs(30),
        }),
        // As on the MCP route, whose tool calls have their own deadlines.
        handler_deadline: None,
    };
    let mut router = Router::new().route(
        "/",
        get(|| async { "Hello, World!" }).post(|| async { "Hello, World!" }),
    );
    if depth >= 3 {
        router = router.layer(guard);
    }
    match depth {
        0 => Boxed::new(router),
        1 => Boxed::new(
            tower::ServiceBuilder::new()
                .map_response(axum::response::IntoResponse::into_response)
                .service(server::Edge {
                    inner: router,
                    ids: server::RequestIds::new(),
                    hsts: false,
                }),
        ),
        _ => Boxed::new(
            tower::ServiceBuilder::new()
                .map_response(axum::response::IntoResponse::into_response)
                .service(server::around_routes(router, false)),
        ),
    }
}

const LAYERS: [&str; 6] = [
    "handler alone",
    "+ request id and sensitive headers",
    "+ request span and log line",
    "+ request counter",
    "+ load shedding",
    "+ body read within limits",
];

/// Production composition on a throw-away database: the application, one signed-in trader's
/// access token, and the database (kept until the end).
fn production(
    runtime: &Runtime,
) -> (
    impl Service<
        Request<Body>,
        Response = axum::http::Response<
            impl axum::body::HttpBody<Data = axum::body::Bytes, Error = impl Into<tower::BoxError>>
            + Send
            + 'static,
        >,
        Error = Infallible,
    > + Clone,
    String,
    testkit::TestDb,
) {
    runtime.block_on(async {
        let test_db = testkit::TestDb::new().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let env = [
            ("CROSSTRADE_DATABASE__URL", test_db.url()),
            ("CROSSTRADE_PUBLIC_URL", base.clone()),
            (
                "CROSSTRADE_MASTER_SECRET",
                "bench-master-secret-0123456789abcdef".to_owned(),
            ),
            ("CROSSTRADE_LOG__FORMAT", "json".to_owned()),
        ];
        let sources = Sources {
            file: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        };
        let config = Config::load(&sources).unwrap();
        let dev_null = Arc::new(std::fs::File::create("/dev/null").unwrap());
        crosstrade::telemetry::init_writing_to(&config.log, &config.traces, dev_null).unwrap();
        let db = Database::open(&config, Role::Server).await.unwrap();
        db.migrate().await.unwrap();
        let background = store::Background::start(&db.pool);
        let metrics = server::install_metrics(&background.tasks).unwrap();
        let state = server::compose(&config, &db.pool, &background, metrics, None)
            .await
            .unwrap();
        let hash = store::password::hash(testkit::oauth::PASSWORD).unwrap();
        let email = store::users::Email::parse(EMAIL).unwrap();
        store::users::insert(&db.pool, &email, &hash, store::users::Tier::Elite)
            .await
            .unwrap();
        let router = server::app(state);
        let limits = Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(1),
        };
        tokio::spawn(crosstrade::http::serve(
            listener,
            router.clone(),
            limits,
            std::future::pending(),
            async {},
        ));
        let endpoint = testkit::oauth::Endpoint::new(&base);
        let mut flow = testkit::oauth::Flow::new(&endpoint, EMAIL).await;
        let tokens = flow.tokens(&endpoint, "mcp:trade", "mcp:trade").await;
        // The grant and tier caches are warm after the first call, as under load.
        let token = tokens["access_token"].as_str().unwrap().to_owned();
        (router, token, test_db)
    })
}

fn request_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, token, _db) = production(&runtime);

    for (depth, name) in LAYERS.iter().enumerate() {
        let router = hello(depth);
        assert_eq!(run(&runtime, &router, post("/", CALL, None)), 200, "{name}");
        c.bench_function(&format!("layers/{depth} {name}"), |b| {
            b.iter(|| run(&runtime, &router, post("/", CALL, None)));
        });
    }

    let router = &app;
    let token = token.as_str();
    for (name, body, token, status) in [
        ("401 without a token", CALL, None, 401),
        ("tools/call GetMcpCapabilities", CALL, Some(token), 200),
        ("tools/list", LIST, Some(token), 200),
    ] {
        assert_eq!(
            run(&runtime, router, post("/v1/api/mcp", body, token)),
            status,
            "{name}"
        );
        c.bench_function(&format!("app/{name}"), |b| {
            b.iter(|| run(&runtime, router, post("/v1/api/mcp", body, token)));
        });
    }

    // The span and log line in the JSON lines of `json_log` and in tracing-subscriber's own JSON
    // format (what the server used before), each installed for this thread only. Last: a
    // second dispatcher makes every callsite ask which one is interested.
    let router = hello(2);
    let dev_null = Arc::new(std::fs::File::create("/dev/null").unwrap());
    let formats = [
        (
            "JSON lines",
            tracing::Dispatch::new(
                tracing_subscriber::registry()
                    .with(tracing_subscriber::EnvFilter::new("info"))
                    .with(
                        tracing_subscriber::fmt::layer()
                            .fmt_fields(crosstrade::json_log::JsonMembers)
                            .event_format(crosstrade::json_log::JsonLines)
                            .with_writer(Arc::clone(&dev_null)),
                    ),
            ),
        ),
        (
            "tracing-subscriber's JSON",
            tracing::Dispatch::new(
                tracing_subscriber::registry()
                    .with(tracing_subscriber::EnvFilter::new("info"))
                    .with(
                        tracing_subscriber::fmt::layer()
                            .json()
                            .flatten_event(true)
                            .with_current_span(true)
                            .with_writer(dev_null),
                    ),
            ),
        ),
    ];
    for (format, dispatch) in formats {
        tracing::dispatcher::with_default(&dispatch, || {
            c.bench_function(&format!("log format/{format}"), |b| {
                b.iter(|| run(&runtime, &router, post("/", CALL, None)));
            });
        });
    }
}

criterion_group!(benches, request_path);
criterion_main!(benches);
