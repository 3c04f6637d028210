//! The HTTP face of the endpoint: Origin check, CORS, bearer authentication, and the four
//! methods of Streamable HTTP (MCP 2025-11-25 basic/transports; 2026-07-28
//! transports/streamable-http). Replies are `application/json` (clients must accept it whatever
//! their `Accept` says, CLIENTS.md row 14), except a request that carries a `progressToken` or
//! calls a tool a person may have to confirm, from a client accepting `text/event-stream`: once
//! it reports progress or asks the person (`elicitation/create`), its POST is answered with an
//! event stream of those messages ending with the response.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use crate::McpState;
use crate::auth::{Authenticated, Principal, TokenRejection};
use crate::dispatch::{Reply, handle_body};
use crate::error::{HttpError, HttpRejection};

const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, MCP-Protocol-Version, \
                             Mcp-Session-Id, Last-Event-ID, Mcp-Method, Mcp-Name";
const EXPOSE_HEADERS: &str = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version";
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an open stream re-checks its token, so a revocation also ends the stream.
const RECHECK_TOKEN: Duration = Duration::from_secs(5);
const LIST_CHANGED: &str = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;

/// Extractor: the request's `Origin`, when present and allowed. A present, disallowed origin
/// is refused with 403 (DNS-rebinding protection, 2025-11-25 basic/transports "Security").
#[derive(Debug, Clone)]
pub(crate) struct CheckedOrigin(Option<HeaderValue>);

impl<S> FromRequestParts<S> for CheckedOrigin
where
    McpState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = HttpRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = McpState::from_ref(state);
        match parts.headers.get(header::ORIGIN) {
            None => Ok(Self(None)),
            Some(origin)
                if origin
                    .to_str()
                    .is_ok_and(|origin| state.origin_allowed(origin)) =>
            {
                Ok(Self(Some(origin.clone())))
            }
            Some(_) => Err(state.reject(HttpError::OriginNotAllowed)),
        }
    }
}

impl CheckedOrigin {
    /// CORS on the actual response, so browser clients can read it and its challenge.
    fn decorate(&self, mut response: Response) -> Response {
        if let Some(origin) = &self.0 {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        response
    }
}

/// POST: one JSON-RPC message (or a 2025-03-26 batch).
pub(crate) async fn post_mcp(
    State(state): State<McpState>,
    origin: CheckedOrigin,
    auth: Result<Authenticated, HttpRejection>,
    request: Request,
) -> Response {
    let response = match auth {
        // The body of a request without a valid token is not read (the route guard has
        // already bounded it): the discovery probe is answered from its head.
        Err(rejection) => rejection.into_response(),
        Ok(Authenticated(principal)) => {
            // The headers are moved out of the request rather than copied by an extractor.
            let (mut parts, body) = request.into_parts();
            let headers = std::mem::take(&mut parts.headers);
            match Bytes::from_request(Request::from_parts(parts, body), &()).await {
                Err(rejection) => rejection.into_response(),
                Ok(body) => {
                    let slot = wants_stream(&headers, &body)
                        .then(|| state.stream_slot(principal.user_id).ok())
                        .flatten();
                    if let Some(slot) = slot {
                        with_progress(state, principal, headers, body, slot).await
                    } else {
                        let reply = handle_body(&state, &principal, &headers, &body, None).await;
                        reply_response(&state, reply)
                    }
                }
            }
        }
    };
    origin.decorate(response)
}

fn reply_response(state: &McpState, reply: Reply) -> Response {
    match reply {
        // Serialized into one buffer: axum's `Json` writes through a `BytesMut` writer, a call
        // per token.
        Reply::Json(status, body) => match serde_json::to_vec(&body) {
            Ok(body) => json_response(status, body.into()),
            Err(err) => state
                .reject(HttpError::internal(
                    "serializing an MCP response",
                    "The service is temporarily unavailable; retry shortly",
                    err,
                ))
                .into_response(),
        },
        Reply::Raw(status, body) => json_response(status, body),
        Reply::Accepted => StatusCode::ACCEPTED.into_response(),
        Reply::Http(error) => state.reject(error).into_response(),
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A request that may send messages before its response: its client reads event streams and
/// it names a `progressToken` (progress) or a tool a person may have to confirm (a form asked
/// inside the client). A byte search; a false match only costs a task.
fn wants_stream(headers: &HeaderMap, body: &[u8]) -> bool {
    let needles = &*STREAM_NEEDLES;
    let contains = |needle: &memchr::memmem::Finder<'static>| needle.find(body).is_some();
    headers.get_all(header::ACCEPT).iter().any(|accept| {
        accept
            .to_str()
            .is_ok_and(|a| a.contains("text/event-stream"))
    }) && (contains(&needles.progress)
        || (contains(&needles.tools_call) && needles.gated.iter().any(contains)))
}

/// What [`wants_stream`] looks for, each searched with a prepared SIMD finder: a search per
/// needle over the body, not a comparison per byte.
struct StreamNeedles {
    progress: memchr::memmem::Finder<'static>,
    tools_call: memchr::memmem::Finder<'static>,
    /// The quoted names of the tools a confirmation may hold.
    gated: Vec<memchr::memmem::Finder<'static>>,
}

static STREAM_NEEDLES: std::sync::LazyLock<StreamNeedles> = std::sync::LazyLock::new(|| {
    let finder = |needle: &[u8]| memchr::memmem::Finder::new(needle).into_owned();
    StreamNeedles {
        progress: finder(b"\"progressToken\""),
        tools_call: finder(b"\"tools/call\""),
        gated: crate::catalog::catalog()
            .tools()
            .filter(|tool| tool.def.confirm.is_some())
            .map(|tool| finder(format!("\"{}\"", tool.def.name).as_bytes()))
            .collect(),
    }
});

/// Aborts the request's task when its stream is dropped: a client closing the stream cancels
/// the request (a GetJob wait), never the job it follows.
struct AbortOnDrop(tokio::task::JoinHandle<Reply>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the request in a task. Answered as JSON unless a message (a progress notification, an
/// `elicitation/create`) comes first; then as an event stream: the messages, then the response. Every HTTP-level outcome
/// (401, 403, 408, 429) is decided before any progress, so it keeps its status code.
async fn with_progress(
    state: McpState,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
    slot: crate::StreamSlot,
) -> Response {
    let (sink, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let request_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|request| request.get("id").cloned())
        .unwrap_or(serde_json::Value::Null);
    let task_state = state.clone();
    let mut task = AbortOnDrop(tokio::spawn(async move {
        handle_body(&task_state, &principal, &headers, &body, Some(&sink)).await
    }));
    let first = tokio::select! {
        biased;
        reply = &mut task.0 => {
            let reply = reply.unwrap_or(Reply::Http(HttpError::ServerError(
                "The request ended unexpectedly; retry it",
            )));
            return reply_response(&state, reply);
        }
        Some(first) = notifications.recv() => first,
    };
    let open = Streaming {
        pending: Some(first),
        notifications,
        task: Some(task),
        request_id,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(open, |mut open| async move {
        let message = open.next().await?;
        let event = Event::default().event("message").data(message.to_string());
        Some((Ok::<_, Infallible>(event), open))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The event stream answering a POST: its request's notifications, then its response.
struct Streaming {
    pending: Option<serde_json::Value>,
    notifications: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    task: Option<AbortOnDrop>,
    request_id: serde_json::Value,
    /// Counted against the stream caps while open.
    _slot: crate::StreamSlot,
}

impl Streaming {
    async fn next(&mut self) -> Option<serde_json::Value> {
        if let Some(pending) = self.pending.take() {
            return Some(pending);
        }
        // The task holds the sender: the channel closes once it has answered.
        if let Some(notification) = self.notifications.recv().await {
            return Some(notification);
        }
        let mut task = self.task.take()?;
        let reply = (&mut task.0).await.ok()?;
        match reply {
            Reply::Json(_, body) => Some(body),
            Reply::Raw(_, body) => serde_json::from_slice(&body).ok(),
            // Too late for a status code: the error as the request's JSON-RPC error.
            Reply::Http(error) => Some(serde_json::json!({
                "jsonrpc": "2.0",
                "id": self.request_id,
                "error": { "code": -32603, "message": error.to_string() },
            })),
            Reply::Accepted => None,
        }
    }
}

/// GET: the server-to-client SSE stream of the legacy revisions, carrying
/// `notifications/tools/list_changed` when this user's Add-On connects or disconnects.
/// 2026-07-28 has no GET stream (transports/streamable-http, "Backward Compatibility").
pub(crate) async fn get_mcp(
    State(state): State<McpState>,
    origin: CheckedOrigin,
    auth: Result<Authenticated, HttpRejection>,
    headers: HeaderMap,
) -> Response {
    let response = match auth {
        Err(rejection) => rejection.into_response(),
        Ok(Authenticated(_))
            if headers
                .get("mcp-protocol-version")
                .is_some_and(|version| version == "2026-07-28") =>
        {
            state.reject(HttpError::MethodNotAllowed).into_response()
        }
        Ok(Authenticated(principal)) => match state.stream_slot(principal.user_id) {
            Ok(slot) => {
                let token = crate::auth::bearer_token(&headers).unwrap_or_default();
                list_changed_stream(&state, &principal, token, slot)
            }
            Err(error) => state.reject(error).into_response(),
        },
    };
    origin.decorate(response)
}

/// `slot` is held by the stream and released when the client goes away.
fn list_changed_stream(
    state: &McpState,
    principal: &Principal,
    token: String,
    slot: crate::StreamSlot,
) -> Response {
    let user_id = principal.user_id;
    let changes = state.relay().presence_changes();
    let mut recheck = tokio::time::interval(RECHECK_TOKEN);
    recheck.reset();
    let open = (
        changes,
        recheck,
        state.clone(),
        token,
        state.closing(),
        slot,
    );
    let stream = futures_util::stream::unfold(open, move |open| async move {
        let (mut changes, mut recheck, state, token, mut closing, slot) = open;
        loop {
            if *closing.borrow() {
                return None;
            }
            tokio::select! {
                _ = closing.changed() => return None,
                received = changes.recv() => match received {
                    Ok(changed) if changed == user_id => break,
                    Ok(_) => {}
                    // Missed changes may include this user's: tell the client to look again.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return None,
                },
                _ = recheck.tick() => {
                    // A revoked or expired token ends its stream too; a verifier that cannot
                    // decide (database down) keeps it open.
                    match state.verifier().verify(&token).await {
                        Ok(_) | Err(TokenRejection::Unavailable) => {}
                        Err(_) => return None,
                    }
                }
            }
        }
        // Nothing reaches the client after its grant ended, not even "look again".
        if matches!(
            state.verifier().verify(&token).await,
            Err(rejection) if rejection != TokenRejection::Unavailable
        ) {
            return None;
        }
        let event = Event::default().event("message").data(LIST_CHANGED);
        Some((
            Ok::<_, Infallible>(event),
            (changes, recheck, state, token, closing, slot),
        ))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    // Stops proxies such as nginx from buffering the stream (2026-07-28 streamable-http).
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// DELETE: no session was issued, so there is none to terminate (2025-11-25
/// basic/transports, "Session Management": 405 is allowed).
pub(crate) async fn delete_mcp(
    State(state): State<McpState>,
    origin: CheckedOrigin,
    auth: Result<Authenticated, HttpRejection>,
) -> Response {
    let response = match auth {
        Err(rejection) => rejection.into_response(),
        Ok(_) => state.reject(HttpError::MethodNotAllowed).into_response(),
    };
    origin.decorate(response)
}

/// OPTIONS: the CORS preflight, answered without authentication (browsers never send
/// credentials on it). `Access-Control-Allow-Origin` only for allowed origins; never
/// `Allow-Credentials` (no cookies are used here).
pub(crate) async fn options_mcp(State(state): State<McpState>, headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(header::ALLOW, HeaderValue::from_static(ALLOW_METHODS));
    let allowed = headers
        .get(header::ORIGIN)
        .filter(|origin| origin.to_str().is_ok_and(|o| state.origin_allowed(o)));
    if let Some(origin) = allowed {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        // `Mcp-Param-*` names depend on tool schemas; echo the requested ones.
        let mut allow_headers = ALLOW_HEADERS.to_owned();
        if let Some(requested) = headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|value| value.to_str().ok())
        {
            for name in requested.split(',').map(str::trim) {
                if name.to_ascii_lowercase().starts_with("mcp-param-")
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    allow_headers.push_str(", ");
                    allow_headers.push_str(name);
                }
            }
        }
        if let Ok(value) = HeaderValue::from_str(&allow_headers) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
        out.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    if headers.contains_key(header::ORIGIN) {
        out.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(accept: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        headers
    }

    #[test]
    fn a_stream_is_wanted_for_progress_or_a_tool_a_person_may_confirm() {
        let events = accepting("application/json, text/event-stream");
        let call = |name: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{{}}}}}}"#
            )
        };
        for gated in [
            "PlaceOrder",
            "ModifyOrder",
            "ReversePosition",
            "FlattenPosition",
            "FlattenAll",
            "DeployStrategy",
            "StopStrategy",
            "CancelOrder",
            "CancelAllOrders",
        ] {
            assert!(wants_stream(&events, call(gated).as_bytes()), "{gated}");
        }
        for plain in ["GetMcpCapabilities", "GetAccounts", "Place", "PlaceOrders"] {
            assert!(!wants_stream(&events, call(plain).as_bytes()), "{plain}");
        }
        let progress = br#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"progressToken":7}}}"#;
        assert!(wants_stream(&events, progress));
        // The name alone, outside a tools/call, is not a gated call.
        let listed =
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"x":"PlaceOrder"}}"#;
        assert!(!wants_stream(&events, listed));
        // The name before the method is found as well.
        let reordered =
            br#"{"params":{"name":"CancelOrder"},"method":"tools/call","id":4,"jsonrpc":"2.0"}"#;
        assert!(wants_stream(&events, reordered));
        // A client that cannot read event streams gets JSON whatever it asks.
        assert!(!wants_stream(
            &accepting("application/json"),
            call("PlaceOrder").as_bytes()
        ));
        assert!(!wants_stream(&accepting("application/json"), progress));
    }
}
