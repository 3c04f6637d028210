//! Connections and load: the accept loop with its limits, load shedding, bounded body reads and
//! graceful shutdown.
//!
//! Every resource a client can hold is bounded: connections per replica, requests being handled,
//! time to send headers (slowloris), time and bytes to send a body. Beyond a bound the server
//! answers at once (503 with `Retry-After`, 408, 413) instead of queueing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{self, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::{Layer, Service, ServiceExt};
use vocabulary::ErrorBody;

/// Seconds a shed client is told to wait before retrying.
const RETRY_AFTER_SECS: u32 = 1;
/// How long an over-capacity connection gets to receive its 503 before it is dropped.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest request head (request line and headers) buffered per connection: bounds the memory a
/// connection can pin before a request is even routed. Larger heads answer 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Pause after a failed `accept` (file descriptors exhausted), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The limits the accept loop and the middleware enforce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Accepts connections until `stop` resolves, then stops accepting (the listening socket is
/// closed, so new connections are refused), runs `on_stop`, asks every open connection to finish
/// its in-flight request and close, and waits for them up to the grace period.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    stop: impl Future<Output = ()>,
    on_stop: impl Future<Output = ()>,
) where
    S: Service<Request, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut stop = pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let closing = closing_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, remote, service, limits.header_read_timeout, closing).await;
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("stopped accepting connections");
    let _ = closing_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = async {
        let _ = slots.acquire_many(all).await;
    };
    if tokio::time::timeout(limits.shutdown_grace, async {
        tokio::join!(on_stop, drained)
    })
    .await
    .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "shutdown grace period over; closing open connections");
    }
}

async fn serve_connection<S, B>(
    stream: TcpStream,
    remote: SocketAddr,
    service: S,
    header_read_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) where
    S: Service<Request, Response = http::Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        service.clone().oneshot(request.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut connection = pin!(
        builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
    );
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            return;
        }
        _ = closing.wait_for(|closing| *closing) => {}
    }
    // Finish the request in flight, then close instead of waiting for another.
    connection.as_mut().graceful_shutdown();
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, "connection ended with an error during shutdown");
    }
}

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let refusal = Refusal::AtCapacity;
    let body = serde_json::to_string(&ErrorBody::new(refusal.code(), &refusal.message()))
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {RETRY_AFTER_SECS}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// The requests being handled at once; beyond it, 503 with `Retry-After` at once.
#[derive(Debug, Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    /// `http_requests_in_flight`, looked up once rather than per request.
    gauge: metrics::Gauge,
}

impl InFlight {
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            gauge: metrics::gauge!("http_requests_in_flight"),
        }
    }
}

/// Keeps `http_requests_in_flight` right however the request ends (cancelled included).
struct CountedInFlight<'a>(&'a metrics::Gauge);

impl<'a> CountedInFlight<'a> {
    fn new(gauge: &'a metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for CountedInFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// What every route's requests pass, in one layer around each route (one boxed future per
/// request, not one per check): each request is counted by route, method and status
/// (`http_requests_total`); beyond the in-flight limit it is shed with 503 at once (`shed`;
/// the probes are never shed; the permit is held until the response head is ready, so streamed
/// bodies do not hold it); its body is read within `body`'s limits before the handler runs;
/// a handler that has not answered within `handler_deadline` is answered 503 for it.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub shed: Option<InFlight>,
    pub body: Option<BodyBounds>,
    pub handler_deadline: Option<Duration>,
}

impl<S> Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: Arc::new(self.clone()),
        }
    }
}

/// A route behind its [`Guard`].
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = self.inner.clone();
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            let matched = request.extensions().get::<MatchedPath>().cloned();
            let method = request.method().clone();
            let response = guard.admit(route, request).await;
            let route = matched.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            REQUEST_COUNTERS.increment(route, &method, response.status());
            Ok(response)
        })
    }
}

impl Guard {
    async fn admit<S>(&self, route: S, request: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let _in_flight = match &self.shed {
            Some(in_flight) => {
                let Ok(permit) = in_flight.permits.try_acquire() else {
                    metrics::counter!("http_requests_shed_total").increment(1);
                    return Refusal::AtCapacity.into_response();
                };
                Some((permit, CountedInFlight::new(&in_flight.gauge)))
            }
            None => None,
        };
        let request = match self.body {
            Some(bounds) => match read_body(bounds, request).await {
                Ok(request) => request,
                Err(refusal) => return refusal.into_response(),
            },
            None => request,
        };
        let answered = match self.handler_deadline {
            Some(deadline) => match tokio::time::timeout(deadline, route.oneshot(request)).await {
                Ok(answered) => answered,
                Err(_elapsed) => {
                    metrics::counter!("http_requests_timed_out_total").increment(1);
                    return Refusal::TimedOut.into_response();
                }
            },
            None => route.oneshot(request).await,
        };
        match answered {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// The route label of requests no route matched (the router's fallback).
const UNMATCHED: &str = "unmatched";

/// What the server's own limits answer, before or instead of any route: `{error, message}`
/// with the status, code and headers of each case in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the connection or in-flight request limit: 503 with `Retry-After`.
    AtCapacity,
    /// A body larger than the route accepts: 413, and the connection is closed.
    BodyTooLarge { limit: usize },
    /// A body that could not be read: 400.
    BodyUnreadable,
    /// A body not received within the deadline: 408, and the connection is closed.
    BodyTooSlow,
    /// The handler did not answer within the request timeout: 503 with `Retry-After`.
    TimedOut,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::AtCapacity | Refusal::TimedOut => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyUnreadable => StatusCode::BAD_REQUEST,
            Refusal::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::AtCapacity | Refusal::TimedOut => "server_error",
            Refusal::BodyTooLarge { .. } => "payload_too_large",
            Refusal::BodyUnreadable => "invalid_request",
            Refusal::BodyTooSlow => "request_timeout",
        }
    }

    pub fn message(self) -> Cow<'static, str> {
        match self {
            Refusal::AtCapacity => "the server is at capacity; retry shortly".into(),
            Refusal::BodyTooLarge { limit } => {
                format!("the request body is larger than {limit} bytes").into()
            }
            Refusal::BodyUnreadable => "the request body could not be read".into(),
            Refusal::BodyTooSlow => "the request body was not received in time".into(),
            Refusal::TimedOut => "the server did not answer in time; retry shortly".into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let message = self.message();
        let mut response = (
            self.status(),
            axum::Json(ErrorBody::new(self.code(), &message)),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            Refusal::AtCapacity => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            // What took too long may be the database: the same pause as its other failures.
            Refusal::TimedOut => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(oauth::error::SERVER_ERROR_RETRY_AFTER_SECS),
                );
            }
            // The rest of the body may still be arriving: do not read it as the next request.
            Refusal::BodyTooLarge { .. } | Refusal::BodyTooSlow => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Refusal::BodyUnreadable => {}
        }
        response
    }
}

/// How many bytes a route accepts and how long a client may take to send them.
#[derive(Debug, Clone, Copy)]
pub struct BodyBounds {
    pub limit: usize,
    pub deadline: Duration,
}

/// Reads the whole request body within the size limit and the deadline: a trickled upload
/// answers 408 and an oversized one 413, whatever the handler is. A body that arrived with its
/// head (most) is its one frame, taken on the first poll without collecting it or arming a
/// timer; the rest of a body still arriving is collected under the deadline.
async fn read_body(bounds: BodyBounds, request: Request) -> Result<Request, Refusal> {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    ) {
        return Ok(request);
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let too_large = Refusal::BodyTooLarge {
        limit: bounds.limit,
    };
    if declared.is_some_and(|length| length > bounds.limit as u64) {
        return Err(too_large);
    }
    let (parts, mut body) = request.into_parts();
    let mut prefix = Bytes::new();
    let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
    match first {
        Poll::Ready(None) => return Ok(Request::from_parts(parts, Body::empty())),
        Poll::Ready(Some(Err(_))) => return Err(Refusal::BodyUnreadable),
        Poll::Ready(Some(Ok(frame))) => {
            prefix = frame.into_data().unwrap_or_default();
            if prefix.len() > bounds.limit {
                return Err(too_large);
            }
            if body.is_end_stream() {
                return Ok(Request::from_parts(parts, Body::from(prefix)));
            }
        }
        Poll::Pending => {}
    }
    let rest = axum::body::to_bytes(body, bounds.limit - prefix.len());
    let Ok(collected) = tokio::time::timeout(bounds.deadline, rest).await else {
        metrics::counter!("http_slow_bodies_total").increment(1);
        return Err(Refusal::BodyTooSlow);
    };
    match collected {
        Ok(rest) if prefix.is_empty() => Ok(Request::from_parts(parts, Body::from(rest))),
        Ok(rest) => {
            let mut whole = Vec::with_capacity(prefix.len() + rest.len());
            whole.extend_from_slice(&prefix);
            whole.extend_from_slice(&rest);
            Ok(Request::from_parts(parts, Body::from(whole)))
        }
        Err(err) => {
            let over_limit = err
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            Err(if over_limit {
                too_large
            } else {
                Refusal::BodyUnreadable
            })
        }
    }
}

/// `http_requests_total`'s handles by route, then method and status.
type CountersByRoute = HashMap<String, Vec<(&'static str, StatusCode, metrics::Counter)>>;

/// `http_requests_total`'s handles, registered once per route, method and status: a request
/// then costs a read lock and an atomic increment, not a registry lookup with three owned labels.
static REQUEST_COUNTERS: RequestCounters = RequestCounters(RwLock::new(None));

struct RequestCounters(RwLock<Option<CountersByRoute>>);

impl RequestCounters {
    fn increment(&self, route: &str, method: &Method, status: StatusCode) {
        // Methods outside the standard set share one label, so a client cannot grow the series.
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            Method::DELETE => "DELETE",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            _ => "other",
        };
        let find = |routes: &CountersByRoute| {
            routes
                .get(route)?
                .iter()
                .find(|(m, s, _)| *m == method && *s == status)
                .map(|(_, _, counter)| counter.increment(1))
        };
        let read = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if read.as_ref().and_then(find).is_some() {
            return;
        }
        drop(read);
        let mut write = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let routes = write.get_or_insert_with(HashMap::new);
        if find(routes).is_some() {
            return;
        }
        let counter = metrics::counter!(
            "http_requests_total",
            "route" => route.to_owned(),
            "method" => method,
            "status" => status.as_str().to_owned(),
        );
        counter.increment(1);
        routes
            .entry(route.to_owned())
            .or_default()
            .push((method, status, counter));
    }
}
