//! From a POST body to a reply: batches, era and revision selection, the 2026-07-28 header
//! checks, and the methods (`initialize`, `ping`, `server/discover`, `tools/list`,
//! `tools/call`). The Elite and scope gates sit in [`call_tool`], next to the catalog lookup.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};
use store::activity::Outcome;
use store::users::Tier;

use crate::McpState;
use crate::auth::Principal;
use crate::catalog::{
    self, BackendTool, Capabilities, DEFAULT_DEADLINE, JobRoute, Route, Tool, catalog,
};
use crate::confirm;
use crate::error::HttpError;
use crate::protocol::{
    META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION, META_SERVER_INFO, Message, Request, Revision,
    RpcError, classify, decode_header_value, result_response,
};
use crate::relay::{CallError, CallOutcome, CallRequest, Job, JobError, JobFilter, JobStart};
use vocabulary::{JobKind, JobState};

/// What the transport sends back.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A JSON-RPC response (or batch of them) with its HTTP status.
    Json(StatusCode, Value),
    /// A JSON-RPC response already serialized (a cached `tools/list`, a tool result written
    /// from its JSON text), with its HTTP status.
    Raw(StatusCode, axum::body::Bytes),
    /// Notifications and client responses: 202, no body.
    Accepted,
    /// An HTTP-level outcome of the product's error table.
    Http(HttpError),
}

/// A JSON-RPC result. A successful tool result whose JSON is also its `structuredContent` is
/// kept as that JSON text, serialized once: a single response writes it twice (escaped as the
/// text content, verbatim as `structuredContent`) without building or walking a tree.
#[derive(Debug)]
pub(crate) enum RpcResult {
    Tree(Value),
    ToolJson {
        json: String,
        /// The revision has `structuredContent` (2025-06-18 on).
        structured_content: bool,
    },
}

impl RpcResult {
    fn is_error(&self) -> bool {
        match self {
            RpcResult::Tree(result) => result.get("isError") == Some(&Value::Bool(true)),
            RpcResult::ToolJson { .. } => false,
        }
    }

    /// The result as a tree, where one is needed (a batch, a recorded outcome).
    fn into_value(self) -> Value {
        match self {
            RpcResult::Tree(result) => result,
            RpcResult::ToolJson {
                json,
                structured_content,
            } => {
                let mut result = Map::new();
                if structured_content {
                    let parsed = serde_json::from_str(&json).unwrap_or(Value::Null);
                    result.insert("structuredContent".to_owned(), parsed);
                }
                result.insert(
                    "content".to_owned(),
                    json!([{ "type": "text", "text": json }]),
                );
                result.insert("isError".to_owned(), Value::Bool(false));
                Value::Object(result)
            }
        }
    }
}

impl From<Value> for RpcResult {
    fn from(result: Value) -> Self {
        RpcResult::Tree(result)
    }
}

/// Why a request did not produce a result.
#[derive(Debug)]
enum Failure {
    Rpc(RpcError),
    Http(HttpError),
}

impl From<RpcError> for Failure {
    fn from(error: RpcError) -> Self {
        Failure::Rpc(error)
    }
}

impl From<HttpError> for Failure {
    fn from(error: HttpError) -> Self {
        Failure::Http(error)
    }
}

const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

/// Freshness of `tools/list` (2026-07-28 server/utilities/caching): short while Add-On tools
/// are hidden, so they reappear soon after the Add-On connects.
const TOOLS_TTL_CONNECTED: Duration = Duration::from_secs(60);
const TOOLS_TTL_DISCONNECTED: Duration = Duration::from_secs(5);
const DISCOVER_TTL: Duration = Duration::from_secs(3600);
/// The relay owns deadlines; this only stops a relay that forgot one from hanging a request.
const RELAY_GRACE: Duration = Duration::from_secs(2);

const INSTRUCTIONS: &str = "CrossTrade connects you to the user's NinjaTrader 8 through the \
    CrossTrade Add-On. Call GetMcpCapabilities first to see whether the Add-On is connected and \
    which scope you were granted. Tools that need NinjaTrader 8 are listed only while the \
    Add-On is connected. Trade tools act on real accounts: confirm every order action with the \
    user, and pass an idempotency_key so retries never repeat an action. The account's policy may \
    hold an order for the person's own approval. A client that shows forms asks them directly; \
    otherwise the tool answers with status confirmation_required and a confirm_url. Show that \
    URL to the person (never open or approve it yourself) and call ConfirmTrade with the \
    confirmation_id once they approved.";

/// Where the messages the server sends before a request's response go (`notifications/progress`,
/// `elicitation/create`), when its client can receive them: the POST is then answered with an
/// event stream.
pub(crate) type StreamSink = tokio::sync::mpsc::UnboundedSender<Value>;

/// Handles one POST body.
pub(crate) async fn handle_body(
    state: &McpState,
    principal: &Principal,
    headers: &HeaderMap,
    body: &[u8],
    progress: Option<&StreamSink>,
) -> Reply {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => {
            return Reply::Json(
                StatusCode::BAD_REQUEST,
                RpcError::parse_error(&err.to_string()).to_response(&Value::Null),
            );
        }
    };
    match value {
        Value::Array(items) => handle_batch(state, principal, headers, items).await,
        single => match classify(single) {
            Ok(Message::Request(request)) => {
                match handle_request(state, principal, headers, request, None, progress).await {
                    RequestReply::Json(status, body) => Reply::Json(status, body),
                    RequestReply::Raw(status, body) => Reply::Raw(status, body),
                    RequestReply::Http(error) => Reply::Http(error),
                }
            }
            Ok(Message::Response { id, result, error }) => {
                let Some(elicitation_id) = id
                    .as_str()
                    .filter(|id| id.starts_with(confirm::ELICITATION_PREFIX))
                else {
                    return Reply::Accepted;
                };
                match confirm::answer(
                    state,
                    principal,
                    elicitation_id,
                    result.as_ref(),
                    error.as_ref(),
                )
                .await
                {
                    Ok(true) => Reply::Accepted,
                    // Late, repeated, or for another connection: not accepted (2025-11-25
                    // basic/transports: an error status, a JSON-RPC error without id).
                    Ok(false) => Reply::Json(
                        StatusCode::BAD_REQUEST,
                        RpcError::invalid_request(
                            "Invalid Request: no confirmation is waiting for this answer",
                        )
                        .to_response(&Value::Null),
                    ),
                    // Not accepted: the client may send it again.
                    Err(err) => Reply::Http(HttpError::internal(
                        "recording a confirmation answer",
                        "The service is temporarily unavailable; retry shortly",
                        err,
                    )),
                }
            }
            Ok(Message::Notification) => Reply::Accepted,
            Err((id, error)) => Reply::Json(error.status, error.to_response(&id)),
        },
    }
}

/// JSON-RPC batches exist only in 2025-03-26 (removed in 2025-06-18, changelog).
async fn handle_batch(
    state: &McpState,
    principal: &Principal,
    headers: &HeaderMap,
    items: Vec<Value>,
) -> Reply {
    let version = headers
        .get(PROTOCOL_VERSION_HEADER)
        .map(|value| value.to_str().unwrap_or(""));
    if version.is_some_and(|version| version != Revision::V2025_03_26.as_str()) {
        return Reply::Json(
            StatusCode::BAD_REQUEST,
            RpcError::invalid_request(
                "Invalid Request: JSON-RPC batches are only supported in protocol version \
                 2025-03-26",
            )
            .to_response(&Value::Null),
        );
    }
    if items.is_empty() {
        return Reply::Json(
            StatusCode::BAD_REQUEST,
            RpcError::invalid_request("Invalid Request: empty batch").to_response(&Value::Null),
        );
    }
    let mut responses = Vec::new();
    for item in items {
        match classify(item) {
            Ok(Message::Request(request)) if request.method == "initialize" => {
                // 2025-03-26 lifecycle: initialize MUST NOT be part of a batch.
                responses.push(
                    RpcError::invalid_request(
                        "Invalid Request: initialize must not be part of a batch",
                    )
                    .to_response(&request.id),
                );
            }
            Ok(Message::Request(request)) => {
                match handle_request(
                    state,
                    principal,
                    headers,
                    request,
                    Some(Revision::V2025_03_26),
                    None,
                )
                .await
                {
                    RequestReply::Json(_, body) => responses.push(body),
                    // Not produced for batch items.
                    RequestReply::Raw(..) => {}
                    // One HTTP-level outcome (403, 408, 503) answers the whole POST.
                    RequestReply::Http(error) => return Reply::Http(error),
                }
            }
            Ok(Message::Notification | Message::Response { .. }) => {}
            Err((id, error)) => responses.push(error.to_response(&id)),
        }
    }
    if responses.is_empty() {
        Reply::Accepted
    } else {
        Reply::Json(StatusCode::OK, Value::Array(responses))
    }
}

enum RequestReply {
    Json(StatusCode, Value),
    Raw(StatusCode, axum::body::Bytes),
    Http(HttpError),
}

async fn handle_request(
    state: &McpState,
    principal: &Principal,
    headers: &HeaderMap,
    request: Request,
    batch_revision: Option<Revision>,
    progress: Option<&StreamSink>,
) -> RequestReply {
    let id = request.id.clone();
    // `initialize` negotiates in its body and is never rejected for its header (CLIENTS.md 15),
    // unless `_meta` puts the request in the 2026-07-28 era, where `initialize` no longer
    // exists: it is then answered like any unknown method (404, -32601).
    if request.method == "initialize" && !names_per_request_revision(&request) {
        return match initialize(state, &request.params) {
            Ok(result) => {
                record_capabilities(state, principal, &request.params, &result).await;
                RequestReply::Json(StatusCode::OK, result_response(&id, result))
            }
            Err(error) => RequestReply::Json(error.status, error.to_response(&id)),
        };
    }
    let revision = match batch_revision {
        Some(revision) => Ok(revision),
        None => resolve_revision(headers, &request),
    };
    // A single `tools/list` (not in a batch, no test harness) is answered from its serialized
    // variant.
    if let Ok(revision) = revision
        && batch_revision.is_none()
        && request.method == "tools/list"
        && state.extension().is_none()
    {
        return match cached_tool_list(state, principal, revision, &request.params).await {
            Ok(result) => RequestReply::Raw(StatusCode::OK, raw_result_response(&id, &result)),
            Err(Failure::Rpc(error)) => RequestReply::Json(error.status, error.to_response(&id)),
            Err(Failure::Http(error)) => RequestReply::Http(error),
        };
    }
    let outcome = match revision {
        Ok(revision) => serve(state, principal, revision, &request, progress).await,
        Err(error) => Err(Failure::Rpc(error)),
    };
    match outcome {
        // A single request's tool result is written around its JSON text.
        Ok((
            revision,
            RpcResult::ToolJson {
                json,
                structured_content,
            },
        )) if batch_revision.is_none() => match tool_json_response(
            &id,
            &json,
            structured_content,
            revision.is_modern().then(|| server_info(state)).as_ref(),
        ) {
            Ok(body) => RequestReply::Raw(StatusCode::OK, body),
            Err(err) => RequestReply::Http(HttpError::internal(
                "serializing a tool result",
                "The service is temporarily unavailable; retry shortly",
                err,
            )),
        },
        Ok((revision, result)) => {
            let result = result.into_value();
            let result = if revision.is_modern() || request.method == "server/discover" {
                modern_envelope(state, result)
            } else {
                result
            };
            RequestReply::Json(StatusCode::OK, result_response(&id, result))
        }
        Err(Failure::Rpc(error)) => RequestReply::Json(error.status, error.to_response(&id)),
        Err(Failure::Http(error)) => RequestReply::Http(error),
    }
}

/// `{"jsonrpc":"2.0","id":…,"result":…}` for a successful tool result kept as JSON text: the
/// text escaped as its content, the same bytes as `structuredContent`, and under 2026-07-28 what
/// [`modern_envelope`] adds.
fn tool_json_response(
    id: &Value,
    json: &str,
    structured_content: bool,
    modern_server_info: Option<&Value>,
) -> serde_json::Result<axum::body::Bytes> {
    let mut body = Vec::with_capacity(2 * json.len() + 160);
    body.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    serde_json::to_writer(&mut body, id)?;
    body.extend_from_slice(b",\"result\":{\"content\":[{\"type\":\"text\",\"text\":");
    serde_json::to_writer(&mut body, json)?;
    body.extend_from_slice(b"}],\"isError\":false");
    if structured_content {
        body.extend_from_slice(b",\"structuredContent\":");
        body.extend_from_slice(json.as_bytes());
    }
    if let Some(server_info) = modern_server_info {
        body.extend_from_slice(b",\"resultType\":\"complete\",\"_meta\":{");
        serde_json::to_writer(&mut body, META_SERVER_INFO)?;
        body.push(b':');
        serde_json::to_writer(&mut body, server_info)?;
        body.push(b'}');
    }
    body.extend_from_slice(b"}}");
    Ok(body.into())
}

/// Whether `_meta` names a revision served per request (2026-07-28 and later).
fn names_per_request_revision(request: &Request) -> bool {
    request
        .params
        .get("_meta")
        .and_then(|meta| meta.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str)
        .and_then(Revision::parse)
        .is_some_and(Revision::is_modern)
}

/// The revision of a non-`initialize` request, or the error that rejects it.
fn resolve_revision(headers: &HeaderMap, request: &Request) -> Result<Revision, RpcError> {
    let meta = request.params.get("_meta").and_then(Value::as_object);
    let meta_version = match meta.and_then(|meta| meta.get(META_PROTOCOL_VERSION)) {
        None => None,
        Some(Value::String(version)) => Some(version.as_str()),
        Some(_) => {
            return Err(RpcError::malformed_params(format!(
                "Invalid params: _meta[\"{META_PROTOCOL_VERSION}\"] must be a string"
            )));
        }
    };
    let header = headers
        .get(PROTOCOL_VERSION_HEADER)
        .map(|value| {
            value.to_str().map_err(|_| {
                RpcError::header_mismatch(
                    "Header mismatch: MCP-Protocol-Version contains invalid characters",
                )
            })
        })
        .transpose()?;
    let revision = match (meta_version, header) {
        // 2026-07-28 transports/streamable-http, "Protocol Version Header".
        (Some(meta), None) => {
            return Err(RpcError::header_mismatch(format!(
                "Header mismatch: MCP-Protocol-Version header is missing; the body names \
                 '{meta}'"
            )));
        }
        (Some(meta), Some(header)) if header != meta => {
            return Err(RpcError::header_mismatch(format!(
                "Header mismatch: MCP-Protocol-Version header value '{header}' does not match \
                 body value '{meta}'"
            )));
        }
        (Some(meta), Some(_)) => {
            Revision::parse(meta).ok_or_else(|| RpcError::unsupported_version(meta, true))?
        }
        // Clients before 2025-06-18 send no header (2025-11-25 basic/transports).
        (None, None) => Revision::V2025_03_26,
        (None, Some(header)) => match Revision::parse(header) {
            Some(revision) if revision.is_modern() => {
                return Err(RpcError::malformed_params(format!(
                    "Invalid params: missing required _meta field \"{META_PROTOCOL_VERSION}\""
                )));
            }
            Some(revision) => revision,
            None => return Err(RpcError::unsupported_version(header, false)),
        },
    };
    if revision.is_modern() {
        check_modern_envelope(headers, request)?;
    }
    Ok(revision)
}

/// Per-request metadata and the mirrored headers of 2026-07-28 (basic/index "_meta";
/// transports/streamable-http "Server Validation").
fn check_modern_envelope(headers: &HeaderMap, request: &Request) -> Result<(), RpcError> {
    let capabilities = request
        .params
        .get("_meta")
        .and_then(|meta| meta.get(META_CLIENT_CAPABILITIES));
    if !capabilities.is_some_and(Value::is_object) {
        return Err(RpcError::malformed_params(format!(
            "Invalid params: missing required _meta field \"{META_CLIENT_CAPABILITIES}\""
        )));
    }
    let header = |name: &str| -> Result<Option<&str>, RpcError> {
        headers
            .get(name)
            .map(|value| {
                value.to_str().map_err(|_| {
                    RpcError::header_mismatch(format!(
                        "Header mismatch: {name} contains invalid characters"
                    ))
                })
            })
            .transpose()
    };
    match header(METHOD_HEADER)? {
        None => {
            return Err(RpcError::header_mismatch(
                "Header mismatch: the Mcp-Method header is missing",
            ));
        }
        Some(method) if method != request.method => {
            return Err(RpcError::header_mismatch(format!(
                "Header mismatch: Mcp-Method header value '{method}' does not match body value \
                 '{}'",
                request.method
            )));
        }
        Some(_) => {}
    }
    let name_source = match request.method.as_str() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = name_source {
        let body = request.params.get(field).and_then(Value::as_str);
        match header(NAME_HEADER)? {
            None => {
                return Err(RpcError::header_mismatch(
                    "Header mismatch: the Mcp-Name header is missing",
                ));
            }
            Some(raw) => {
                let decoded = decode_header_value(raw).ok_or_else(|| {
                    RpcError::header_mismatch(
                        "Header mismatch: Mcp-Name is not valid =?base64?…?= encoding",
                    )
                })?;
                if Some(decoded.as_str()) != body {
                    return Err(RpcError::header_mismatch(format!(
                        "Header mismatch: Mcp-Name header value '{decoded}' does not match body \
                         value '{}'",
                        body.unwrap_or("")
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Adds what every 2026-07-28 result carries: `resultType` and the server's identity.
fn modern_envelope(state: &McpState, result: Value) -> Value {
    envelope(result, server_info(state))
}

fn envelope(mut result: Value, server_info: Value) -> Value {
    if let Some(object) = result.as_object_mut() {
        // A result that already says what it is (an `input_required` one) keeps it.
        object
            .entry("resultType")
            .or_insert_with(|| json!("complete"));
        let meta = object
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(META_SERVER_INFO.to_owned(), server_info);
        }
    }
    result
}

fn server_info(state: &McpState) -> Value {
    json!({
        "name": "crosstrade-mcp",
        "title": "CrossTrade MCP",
        "version": state.settings().server_version,
    })
}

/// The legacy handshake: the client's version when supported, else the latest legacy one
/// (2025-11-25 basic/lifecycle, "Version Negotiation").
fn initialize(state: &McpState, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
        return Err(RpcError::invalid_params(
            "Invalid params: initialize needs a string protocolVersion",
        ));
    };
    let negotiated = Revision::parse(requested)
        .filter(|revision| !revision.is_modern())
        .unwrap_or(Revision::LATEST_LEGACY);
    let mut result = json!({
        "protocolVersion": negotiated.as_str(),
        "capabilities": { "tools": { "listChanged": true } },
        "serverInfo": server_info(state),
        "instructions": INSTRUCTIONS,
    });
    if let Some(extension) = state.extension() {
        extension.extend_capabilities(false, &mut result["capabilities"]);
    }
    Ok(result)
}

/// Remembers whether the grant's client can show a form (elicitation), for its later calls:
/// the legacy revisions declare capabilities only here. A failure only means the link is used.
async fn record_capabilities(
    state: &McpState,
    principal: &Principal,
    params: &Map<String, Value>,
    result: &Value,
) {
    let revision = result["protocolVersion"].as_str().unwrap_or_default();
    let (form, url) = elicitation_modes(revision, params);
    let client_info = params
        .get("clientInfo")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Err(err) = store::confirmations::record_capabilities(
        state.db(),
        principal.grant_id,
        principal.user_id,
        revision,
        form,
        url,
        &client_info,
    )
    .await
    {
        tracing::warn!(error = %err, "recording the client's capabilities failed");
    }
}

/// The elicitation modes (form, url) a client declared: 2025-06-18 has only the form;
/// 2025-11-25 names them, an empty object meaning form only; 2025-03-26 has none.
fn elicitation_modes(revision: &str, params: &Map<String, Value>) -> (bool, bool) {
    let declared = params
        .get("capabilities")
        .and_then(|capabilities| capabilities.get("elicitation"))
        .and_then(Value::as_object);
    match (Revision::parse(revision), declared) {
        (Some(Revision::V2025_06_18), Some(_)) => (true, false),
        (Some(Revision::V2025_11_25), Some(modes)) if modes.is_empty() => (true, false),
        (Some(Revision::V2025_11_25), Some(modes)) => {
            (modes.contains_key("form"), modes.contains_key("url"))
        }
        _ => (false, false),
    }
}

async fn serve(
    state: &McpState,
    principal: &Principal,
    revision: Revision,
    request: &Request,
    progress: Option<&StreamSink>,
) -> Result<(Revision, RpcResult), Failure> {
    // Test harnesses only (the conformance fixtures); the binary's state has no extension.
    let extension = state.extension();
    if let Some(outcome) = extension.and_then(|extension| extension.serve(revision, request)) {
        return Ok((revision, outcome?.into()));
    }
    let mut result = match request.method.as_str() {
        // 2026-07-28 removed `ping` (and `initialize`, which only gets here in that era).
        "ping" if !revision.is_modern() => json!({}),
        "server/discover" => discover(),
        "tools/list" => list_tools(state, principal, revision, &request.params).await?,
        "tools/call" => {
            use tracing::Instrument as _;
            let tool = request
                .params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("");
            // A client may carry its trace in `_meta` instead of the header.
            let traceparent = request
                .params
                .get("_meta")
                .and_then(|meta| meta.get("traceparent"))
                .and_then(Value::as_str)
                .filter(|value| vocabulary::trace::parse(value).is_some());
            let span = vocabulary::trace_span!(
                "tools/call",
                tool,
                revision = revision.as_str(),
                traceparent
            );
            let result = call_tool(state, principal, revision, &request.params, progress)
                .instrument(span)
                .await?;
            return Ok((revision, result));
        }
        method => {
            return Err(RpcError::method_not_found(method, revision.is_modern()).into());
        }
    };
    if let Some(extension) = extension {
        match request.method.as_str() {
            "server/discover" => extension.extend_capabilities(true, &mut result["capabilities"]),
            "tools/list" => extension.extend_tool_list(revision, &mut result),
            _ => {}
        }
    }
    Ok((revision, result.into()))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn discover() -> Value {
    let modern = Revision::per_request_list();
    // Only per-request revisions: the legacy ones need `initialize`, which a client that
    // discovered this server does not send. No `listChanged`: `subscriptions/listen` is not
    // served; modern clients rely on `ttlMs`.
    json!({
        "supportedVersions": modern,
        "capabilities": { "tools": {} },
        "instructions": INSTRUCTIONS,
        "ttlMs": millis(DISCOVER_TTL),
        "cacheScope": "public",
    })
}

/// The `tools/list` result, serialized (modern envelope included): built once per revision,
/// scope, Add-On presence and announced features, since nothing else changes it.
async fn cached_tool_list(
    state: &McpState,
    principal: &Principal,
    revision: Revision,
    params: &Map<String, Value>,
) -> Result<axum::body::Bytes, Failure> {
    check_list_params(params)?;
    let presence = state.relay().presence(principal.user_id).await;
    let mut features = presence.features.clone();
    features.sort_unstable();
    let key = format!(
        "{}|{:?}|{}|{}",
        revision.as_str(),
        principal.scope,
        presence.connected,
        features.join(",")
    );
    state.tool_list(key, || {
        let mut result = tool_list(principal, revision, &presence);
        if revision.is_modern() {
            result = modern_envelope(state, result);
        }
        serde_json::to_vec(&result)
            .map(axum::body::Bytes::from)
            .map_err(|err| {
                Failure::from(HttpError::internal(
                    "serializing the tool list",
                    "The service is temporarily unavailable; retry shortly",
                    err,
                ))
            })
    })
}

/// `{"jsonrpc":"2.0","id":…,"result":…}` around an already serialized result.
fn raw_result_response(id: &Value, result: &[u8]) -> axum::body::Bytes {
    let id = serde_json::to_vec(id).unwrap_or_else(|_| b"null".to_vec());
    let mut body = Vec::with_capacity(result.len() + id.len() + 32);
    body.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    body.extend_from_slice(&id);
    body.extend_from_slice(b",\"result\":");
    body.extend_from_slice(result);
    body.push(b'}');
    body.into()
}

fn check_list_params(params: &Map<String, Value>) -> Result<(), Failure> {
    if params.get("cursor").is_some_and(|cursor| !cursor.is_null()) {
        return Err(RpcError::invalid_params(
            "Invalid params: unknown cursor (tools/list is not paginated)",
        )
        .into());
    }
    Ok(())
}

async fn list_tools(
    state: &McpState,
    principal: &Principal,
    revision: Revision,
    params: &Map<String, Value>,
) -> Result<Value, Failure> {
    check_list_params(params)?;
    let presence = state.relay().presence(principal.user_id).await;
    Ok(tool_list(principal, revision, &presence))
}

/// The tools this principal may call while the Add-On is as `presence` says.
fn tool_list(principal: &Principal, revision: Revision, presence: &vocabulary::Presence) -> Value {
    // Scope filter (2026-07-28 server/tools "Capabilities": the set may vary by authorization)
    // and presence filter (product doc 001: Add-On tools hidden while NT8 is not connected).
    let tools: Vec<Value> = catalog()
        .tools()
        .filter(|tool| principal.scope.covers(tool.def.scope))
        .filter(|tool| presence.connected || !tool.def.route.needs_addon())
        // An Add-On that does not announce a tool's feature would only refuse the call.
        .filter(|tool| {
            tool.def
                .needs_feature
                .is_none_or(|feature| presence.features.iter().any(|f| f == feature))
        })
        .map(|tool| tool.to_json(revision))
        .collect();
    // Moved in, not copied (`json!` would serialize a copy of every schema).
    let mut result = Value::Object(Map::from_iter([("tools".to_owned(), Value::Array(tools))]));
    if revision.is_modern()
        && let Some(object) = result.as_object_mut()
    {
        let ttl = if presence.connected {
            TOOLS_TTL_CONNECTED
        } else {
            TOOLS_TTL_DISCONNECTED
        };
        object.insert("ttlMs".to_owned(), json!(millis(ttl)));
        // Filtered per grant and per Add-On presence.
        object.insert("cacheScope".to_owned(), json!("private"));
    }
    result
}

/// `tools/call`, recorded for the AI Clients page once it has ended, whatever the outcome, when
/// the tool is one of the catalog's.
async fn call_tool(
    state: &McpState,
    principal: &Principal,
    revision: Revision,
    params: &Map<String, Value>,
    stream: Option<&StreamSink>,
) -> Result<RpcResult, Failure> {
    let mut seen = Seen::default();
    let outcome = gate_and_run(state, principal, revision, params, stream, &mut seen).await;
    if let (Some(recorder), Some(tool)) = (state.activity(), seen.tool) {
        recorder.record(
            principal.grant_id,
            tool.def.name,
            tool.def.scope == crate::Scope::Trade,
            activity_outcome(&outcome, seen.held),
        );
    }
    outcome
}

/// What [`gate_and_run`] found out on the way, for the activity record.
#[derive(Default)]
struct Seen {
    /// The catalog's tool of that name.
    tool: Option<&'static Tool>,
    /// The account's confirmation policy answered instead of the tool.
    held: bool,
}

/// How a `tools/call` ended, in the AI Clients page's words.
fn activity_outcome(outcome: &Result<RpcResult, Failure>, held: bool) -> Outcome {
    match outcome {
        Ok(_) if held => Outcome::Held,
        Ok(result) if result.is_error() => Outcome::ToolError,
        Ok(_) => Outcome::Ok,
        Err(Failure::Http(
            HttpError::SubscriptionRequired
            | HttpError::InsufficientScope
            | HttpError::InvalidToken(_),
        )) => Outcome::Refused,
        Err(Failure::Http(HttpError::AddonDisconnected(_))) => Outcome::AddonUnavailable,
        Err(_) => Outcome::Failed,
    }
}

/// `tools/call`: Elite gate, tool lookup, scope gate, argument validation, then dispatch.
async fn gate_and_run(
    state: &McpState,
    principal: &Principal,
    revision: Revision,
    params: &Map<String, Value>,
    stream: Option<&StreamSink>,
    seen: &mut Seen,
) -> Result<RpcResult, Failure> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(
            RpcError::invalid_params("Invalid params: tools/call needs a string name").into(),
        );
    };
    // Looked up before the gates so a refused call is recorded under its tool; an unknown
    // name is still answered after the Elite gate.
    seen.tool = catalog().get(name);
    // The tier is checked per request, so a downgrade takes effect at once (DESIGN.md): read
    // from PostgreSQL, or from a cache that every tier change invalidates.
    let tier = match state.tier_of(principal.user_id).await {
        Ok(Some(tier)) => tier,
        Ok(None) => {
            return Err(HttpError::InvalidToken(
                "The account this access token was issued for no longer exists",
            )
            .into());
        }
        Err(err) => {
            return Err(HttpError::internal(
                "reading the caller's tier",
                "The service is temporarily unavailable; retry shortly",
                err,
            )
            .into());
        }
    };
    if tier != Tier::Elite {
        return Err(HttpError::SubscriptionRequired.into());
    }
    let Some(tool) = seen.tool else {
        return Err(RpcError::invalid_params(format!("Unknown tool: {name}")).into());
    };
    if !principal.scope.covers(tool.def.scope) {
        state.verifier().step_up_requested(principal).await;
        return Err(HttpError::InsufficientScope.into());
    }
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(arguments) => arguments.clone(),
    };
    if let Err(message) = tool.validate_arguments(&arguments) {
        return Ok(tool_error(&message).into());
    }
    let progress = stream.and_then(|sink| {
        let token = params.get("_meta")?.get("progressToken")?;
        (token.is_string() || token.is_i64() || token.is_u64())
            .then(|| Progress::new(sink.clone(), token.clone()))
    });
    let caller = Caller {
        principal,
        tier,
        revision,
    };
    if let Some(gate) = tool.def.confirm {
        let asked = confirm::Asked {
            revision,
            tool: tool.def.name,
            gate,
            arguments: &arguments,
            stream,
            modern: revision.is_modern().then(|| confirm::ModernInput {
                request_state: params.get("requestState").filter(|state| !state.is_null()),
                response: params
                    .get("inputResponses")
                    .and_then(|responses| responses.get(confirm::INPUT_KEY)),
                shows_forms: declares_forms(params),
            }),
        };
        let held = confirm::hold(state, principal, asked)
            .await
            .map_err(|err| {
                HttpError::internal(
                    "holding a trade for confirmation",
                    "The service is temporarily unavailable; retry shortly",
                    err,
                )
            })?;
        match held {
            confirm::Held::Proceed => {}
            confirm::Held::Answer(answer) => {
                seen.held = true;
                count_tool_call(tool.def.name, "held");
                return Ok(answer.into());
            }
            confirm::Held::Claimed(claimed) => {
                return run_claimed(state, &caller, claimed.confirmation_id, claimed).await;
            }
            confirm::Held::NotConnected => {
                return Err(relay_failure(
                    state,
                    principal,
                    CallError::NotConnected,
                    DEFAULT_DEADLINE,
                )
                .await);
            }
            confirm::Held::InvalidState => {
                let mut error = RpcError::invalid_params("Invalid or expired requestState");
                error.data = Some(json!({"reason": "invalid_request_state"}));
                return Err(error.into());
            }
            // Approved inside the AI client while this request waited: run it once. The
            // response stream has started, so an Add-On gone meanwhile is a tool error; the
            // approval is kept for ConfirmTrade.
            confirm::Held::Approved(confirmation_id) => {
                return match take_approved(state, principal, confirmation_id).await {
                    Ok(Some(claimed)) => {
                        run_claimed(state, &caller, confirmation_id, claimed).await
                    }
                    Ok(None) => Ok(tool_error(
                        "the approval expired before the order could be sent; nothing was sent",
                    )
                    .into()),
                    // The claim was given back: ConfirmTrade can send it once the Add-On is back.
                    Err(Failure::Http(HttpError::AddonDisconnected(_))) => {
                        Ok(confirm::approved_but_disconnected(confirmation_id).into())
                    }
                    Err(failure) => Err(failure),
                };
            }
        }
    }
    run_route(state, &caller, tool, arguments, progress).await
}

/// Whether a 2026-07-28 request's `_meta` declares form elicitation (`{}` means form only).
fn declares_forms(params: &Map<String, Value>) -> bool {
    params
        .get("_meta")
        .and_then(|meta| meta.get(META_CLIENT_CAPABILITIES))
        .and_then(|capabilities| capabilities.get("elicitation"))
        .and_then(Value::as_object)
        .is_some_and(|modes| modes.is_empty() || modes.contains_key("form"))
}

/// ConfirmTrade: waits (up to `wait_seconds`) for the person's approval, takes it once, runs
/// the recorded call and records what the Add-On answered.
async fn confirm_trade(
    state: &McpState,
    caller: &Caller<'_>,
    arguments: Value,
) -> Result<RpcResult, Failure> {
    let principal = caller.principal;
    let (confirmation_id, wait) = match catalog::confirm_args(arguments) {
        Ok(args) => args,
        Err(message) => return Ok(tool_error(&message).into()),
    };
    let unavailable = |err: sqlx::Error| -> Failure {
        HttpError::internal(
            "reading a trade confirmation",
            "The service is temporarily unavailable; retry shortly",
            err,
        )
        .into()
    };
    let db = state.db();
    let until = std::time::Instant::now() + wait;
    let claimed = loop {
        if let Some(claimed) = take_approved(state, principal, confirmation_id).await? {
            break claimed;
        }
        let row = store::confirmations::find(db, confirmation_id, principal.user_id)
            .await
            .map_err(unavailable)?;
        let waiting = row.as_ref().is_some_and(|row| {
            row.state == vocabulary::confirm::ConfirmationState::Pending
                && row.grant_id == principal.grant_id
        });
        if !waiting || std::time::Instant::now() >= until {
            return Ok(confirm::not_runnable(state, principal, row.as_ref()).into());
        }
        tokio::time::sleep(CONFIRM_RECHECK.min(until - std::time::Instant::now())).await;
    };
    run_claimed(state, caller, confirmation_id, claimed).await
}

/// Takes an approved confirmation for execution, once. A call that cannot be sent now keeps its
/// approval: nothing is claimed and the usual 408 answers.
async fn take_approved(
    state: &McpState,
    principal: &Principal,
    confirmation_id: uuid::Uuid,
) -> Result<Option<store::confirmations::Claimed>, Failure> {
    let unavailable = |err: sqlx::Error| -> Failure {
        HttpError::internal(
            "claiming a trade confirmation",
            "The service is temporarily unavailable; retry shortly",
            err,
        )
        .into()
    };
    let db = state.db();
    let Some(claimed) =
        store::confirmations::claim(db, confirmation_id, principal.user_id, principal.grant_id)
            .await
            .map_err(unavailable)?
    else {
        return Ok(None);
    };
    // A call that cannot be sent now keeps its approval.
    if !state.relay().presence(principal.user_id).await.connected {
        store::confirmations::release(db, confirmation_id)
            .await
            .map_err(unavailable)?;
        return Err(
            relay_failure(state, principal, CallError::NotConnected, DEFAULT_DEADLINE).await,
        );
    }
    Ok(Some(claimed))
}

/// Runs a claimed confirmation's recorded call and records what the Add-On answered.
async fn run_claimed(
    state: &McpState,
    caller: &Caller<'_>,
    confirmation_id: uuid::Uuid,
    claimed: store::confirmations::Claimed,
) -> Result<RpcResult, Failure> {
    let Some(tool) = catalog().get(&claimed.tool) else {
        return Ok(tool_error("the confirmed tool no longer exists").into());
    };
    let mut arguments = claimed.arguments;
    // Even without the model's key, the confirmed call reaches the Add-On at most once.
    if let Some(object) = arguments.as_object_mut() {
        object
            .entry("idempotency_key")
            .or_insert_with(|| Value::String(format!("confirmation-{confirmation_id}")));
    }
    let outcome = Box::pin(run_route(state, caller, tool, arguments, None)).await;
    let outcome = outcome.map(RpcResult::into_value);
    let (code, recorded) = match &outcome {
        Ok(result) if result["isError"] == true => ("tool_error", result.clone()),
        Ok(result) => ("ok", result.clone()),
        Err(_) => (
            "relay_error",
            json!({"error": "the call got no answer from the Add-On"}),
        ),
    };
    if let Err(err) =
        store::confirmations::finish(state.db(), confirmation_id, code, &recorded).await
    {
        tracing::warn!(error = %err, "recording a confirmed call's outcome failed");
    }
    outcome.map(RpcResult::Tree)
}

/// How often ConfirmTrade re-reads a pending confirmation while it waits.
const CONFIRM_RECHECK: Duration = Duration::from_secs(1);

/// GetTradeConfirmations.
async fn trade_confirmations(
    state: &McpState,
    principal: &Principal,
    tool: &Tool,
    revision: Revision,
    arguments: Value,
) -> Result<RpcResult, Failure> {
    let (wanted, limit) = match catalog::confirmations_args(arguments) {
        Ok(args) => args,
        Err(message) => return Ok(tool_error(&message).into()),
    };
    let filter = store::confirmations::ListFilter {
        state: wanted,
        grant_id: None,
    };
    let rows = store::confirmations::list(state.db(), principal.user_id, filter, limit)
        .await
        .map_err(|err| {
            HttpError::internal(
                "listing trade confirmations",
                "The service is temporarily unavailable; retry shortly",
                err,
            )
        })?;
    let confirmations: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "confirmation_id": row.confirmation_id,
                "tool": row.tool,
                "preview": row.preview,
                "reason": row.reason,
                "channel": row.channel,
                "state": row.state,
                "client_id": row.client_id,
                "created_at": row.created_at,
                "expires_at": row.expires_at,
                "decided_at": row.decided_at,
                "decided_via": row.decided_via,
                "decision": row.decision,
                "used_at": row.used_at,
                "outcome_code": row.outcome_code,
            })
        })
        .collect();
    Ok(tool_output(
        tool,
        revision,
        json!({ "confirmations": confirmations }),
    ))
}

/// Who calls a tool, once the tier and scope gates have let them.
struct Caller<'a> {
    principal: &'a Principal,
    tier: Tier,
    revision: Revision,
}

/// Runs a tool whose arguments are valid and whose caller may call it.
async fn run_route(
    state: &McpState,
    caller: &Caller<'_>,
    tool: &Tool,
    mut arguments: Value,
    progress: Option<Progress>,
) -> Result<RpcResult, Failure> {
    let (principal, tier, revision) = (caller.principal, caller.tier, caller.revision);
    match tool.def.route {
        Route::Backend(BackendTool::ConfirmTrade) => confirm_trade(state, caller, arguments).await,
        Route::Backend(BackendTool::TradeConfirmations) => {
            trade_confirmations(state, principal, tool, revision, arguments).await
        }
        Route::Backend(BackendTool::Capabilities) => {
            let presence = state.relay().presence(principal.user_id).await;
            let (addon_state, addon_status) = (presence.state(), presence.status());
            // A refused Add-On's versions are what the user needs to see (product doc 001:
            // "Confirm the version is v1.13.0 or higher").
            let (addon_version, nt8_version, addon_refused_at) = match presence.too_old {
                Some(too_old) if !presence.connected => (
                    Some(too_old.addon_version),
                    Some(too_old.nt8_version),
                    Some(
                        too_old
                            .refused_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ),
                ),
                _ => (presence.addon_version, presence.nt8_version, None),
            };
            let capabilities = Capabilities {
                addon_connected: presence.connected,
                addon_state: addon_state.as_str().to_owned(),
                addon_status,
                addon_version,
                nt8_version,
                addon_refused_at,
                features: presence.features,
                scope: principal.scope.token_scope().to_owned(),
                tier: tier.as_str().to_owned(),
                protocol_version: revision.as_str().to_owned(),
                server_version: state.settings().server_version.clone(),
            };
            count_tool_call(tool.def.name, "ok");
            // The output schema is derived from `Capabilities` itself: nothing to check.
            Ok(structured_output(revision, &capabilities))
        }
        Route::Addon { deadline } => {
            let idempotency_key = arguments
                .as_object_mut()
                .and_then(|arguments| arguments.remove("idempotency_key"))
                .and_then(|key| key.as_str().map(str::to_owned));
            let call = CallRequest {
                user_id: principal.user_id,
                tool: tool.def.name.to_owned(),
                arguments,
                deadline,
                idempotency_key,
            };
            let started = std::time::Instant::now();
            let outcome = match tokio::time::timeout(
                deadline + RELAY_GRACE,
                state.relay().call(call),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(CallError::DeadlineExceeded),
            };
            metrics::histogram!("addon_relay_duration_seconds", "tool" => tool.def.name)
                .record(started.elapsed().as_secs_f64());
            count_call(tool.def.name, &outcome);
            tracing::info!(
                tool = tool.def.name,
                outcome = match &outcome {
                    Ok(CallOutcome::Ok(_)) => "ok",
                    Ok(CallOutcome::ToolError(_)) => "tool_error",
                    Err(_) => "relay_error",
                },
                "tool call relayed"
            );
            match outcome {
                Ok(CallOutcome::Ok(value)) => Ok(tool_output(tool, revision, value)),
                Ok(CallOutcome::ToolError(message)) => Ok(tool_error(&message).into()),
                Err(error) => Err(relay_failure(state, principal, error, deadline).await),
            }
        }
        Route::Stored(stored) => {
            let request = match stored.request(arguments) {
                Ok(request) => request,
                Err(message) => return Ok(tool_error(&message).into()),
            };
            let outcome = state.relay().history(principal.user_id, request).await;
            count_call(tool.def.name, &outcome);
            match outcome {
                Ok(CallOutcome::Ok(value)) => Ok(tool_output(tool, revision, value)),
                Ok(CallOutcome::ToolError(message)) => Ok(tool_error(&message).into()),
                Err(error) => Err(HttpError::from_relay(&error, Duration::ZERO).into()),
            }
        }
        Route::Job(route) => {
            let outcome = job_tool(state, principal, tool, route, arguments, progress).await;
            let counted = match &outcome {
                Ok(Ok(value)) => Ok(CallOutcome::Ok(value.clone())),
                Ok(Err(message)) => Ok(CallOutcome::ToolError(message.clone())),
                Err(error) => Err(*error),
            };
            count_call(tool.def.name, &counted);
            match outcome {
                Ok(Ok(value)) => Ok(tool_output(tool, revision, value)),
                Ok(Err(message)) => Ok(tool_error(&message).into()),
                Err(error) => Err(relay_failure(state, principal, error, DEFAULT_DEADLINE).await),
            }
        }
    }
}

/// A relay error as the HTTP outcome of the product's table. Not connected because the
/// Add-On is too old: the 408 says so and names it.
async fn relay_failure(
    state: &McpState,
    principal: &Principal,
    error: CallError,
    deadline: Duration,
) -> Failure {
    if error == CallError::NotConnected {
        let presence = state.relay().presence(principal.user_id).await;
        if let Some(too_old) = presence.too_old
            && !presence.connected
        {
            return HttpError::addon_too_old(&too_old).into();
        }
    }
    HttpError::from_relay(&error, deadline).into()
}

/// `notifications/progress` for one request: sent only when progress grows (2025-11-25
/// basic/utilities/progress: "The progress value MUST increase with each notification").
struct Progress {
    sink: StreamSink,
    token: Value,
    last: Option<f64>,
}

impl Progress {
    fn new(sink: StreamSink, token: Value) -> Self {
        Self {
            sink,
            token,
            last: None,
        }
    }

    fn report(&mut self, job: &Job) {
        let Some(fraction) = job.progress else {
            return;
        };
        let percent = (fraction * 100.0).clamp(0.0, 100.0);
        if self.last.is_some_and(|last| percent <= last) {
            return;
        }
        self.last = Some(percent);
        let mut params = json!({
            "progressToken": self.token,
            "progress": percent,
            "total": 100,
        });
        if let Some(message) = &job.message {
            params["message"] = json!(message);
        }
        let _ = self.sink.send(json!({
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": params,
        }));
    }
}

/// A job tool: the structured result, a tool error the model can correct, or a relay error.
async fn job_tool(
    state: &McpState,
    principal: &Principal,
    tool: &Tool,
    route: JobRoute,
    mut arguments: Value,
    mut progress: Option<Progress>,
) -> Result<Result<Value, String>, CallError> {
    let relay = state.relay();
    let user_id = principal.user_id;
    let refused = |error: JobError| match error {
        JobError::Refused(message) => Ok(Err(message)),
        JobError::Call(error) => Err(error),
    };
    match route {
        JobRoute::Start(kind) => {
            let idempotency_key = arguments
                .as_object_mut()
                .and_then(|arguments| arguments.remove("idempotency_key"))
                .and_then(|key| key.as_str().map(str::to_owned));
            let start = JobStart {
                user_id,
                kind,
                tool: tool.def.name.to_owned(),
                summary: catalog::summary_of(&arguments),
                arguments,
                idempotency_key,
            };
            match relay.start_job(start).await {
                Ok(job) if job.state == JobState::Failed => Ok(Err(format!(
                    "{} failed: {} (job {})",
                    tool.def.name,
                    job.error.as_deref().unwrap_or("no reason given"),
                    job.job_id
                ))),
                Ok(job) => Ok(Ok(
                    json!({ "job": catalog::job_json(&job), "poll": catalog::POLL_HINT }),
                )),
                Err(error) => refused(error),
            }
        }
        JobRoute::Get => {
            let (job_id, wait) = match catalog::get_args(arguments) {
                Ok(args) => args,
                Err(message) => return Ok(Err(message)),
            };
            let until = std::time::Instant::now() + wait;
            let mut job = relay.job(user_id, job_id).await?;
            while let Some(current) = &job {
                if let Some(progress) = progress.as_mut() {
                    progress.report(current);
                }
                if current.state.is_final() || std::time::Instant::now() >= until {
                    break;
                }
                job = relay
                    .wait_job(user_id, job_id, current.version, until)
                    .await?;
            }
            match job {
                Some(job) => Ok(Ok(json!({ "job": catalog::job_json(&job) }))),
                None => Ok(Err(format!(
                    "no job {job_id}: list this account's jobs with ListJobs"
                ))),
            }
        }
        JobRoute::List => {
            let filter = match catalog::filter_of(arguments) {
                Ok(filter) => filter,
                Err(message) => return Ok(Err(message)),
            };
            let jobs = relay.jobs(user_id, filter).await?;
            let jobs: Vec<Value> = jobs.iter().map(catalog::job_json).collect();
            Ok(Ok(json!({ "jobs": jobs })))
        }
        JobRoute::Cancel => {
            let job_id = match catalog::cancel_args(arguments) {
                Ok(job_id) => job_id,
                Err(message) => return Ok(Err(message)),
            };
            match relay.cancel_job(user_id, job_id).await {
                Ok(job) => Ok(Ok(json!({ "job": catalog::job_json(&job) }))),
                Err(error) => refused(error),
            }
        }
        JobRoute::BacktestResults => {
            let (job_id, include_trades, limit) = match catalog::backtest_args(arguments) {
                Ok(args) => args,
                Err(message) => return Ok(Err(message)),
            };
            let jobs = if let Some(job_id) = job_id {
                match relay.job(user_id, job_id).await? {
                    Some(job) if job.kind == JobKind::Backtest => vec![job],
                    Some(job) => {
                        return Ok(Err(format!(
                            "job {job_id} is a {} job, not a backtest: read it with GetJob",
                            job.kind.as_str()
                        )));
                    }
                    None => {
                        return Ok(Err(format!(
                            "no backtest job {job_id}: list backtests with ListJobs"
                        )));
                    }
                }
            } else {
                let filter = JobFilter {
                    kind: Some(JobKind::Backtest),
                    limit,
                    ..JobFilter::default()
                };
                relay.jobs(user_id, filter).await?
            };
            let results: Vec<Value> = jobs
                .iter()
                .map(|job| catalog::backtest_result(job, include_trades))
                .collect();
            Ok(Ok(json!({ "results": results })))
        }
    }
}

/// Counts a tool call by tool and outcome, for `/metrics`.
fn count_call(tool: &'static str, outcome: &Result<CallOutcome, CallError>) {
    count_tool_call(tool, vocabulary::addon::outcome_code(outcome));
}

/// `mcp_tool_calls_total`'s handles by tool and outcome (both from fixed sets), registered once
/// each: a call then costs a read lock and an atomic increment, not a registry lookup.
static TOOL_CALLS: std::sync::RwLock<Vec<(&str, &str, metrics::Counter)>> =
    std::sync::RwLock::new(Vec::new());

fn count_tool_call(tool: &'static str, outcome: &'static str) {
    let find = |counters: &[(&str, &str, metrics::Counter)]| {
        counters
            .iter()
            .find(|(t, o, _)| *t == tool && *o == outcome)
            .map(|(_, _, counter)| counter.increment(1))
    };
    let read = TOOL_CALLS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if find(&read).is_some() {
        return;
    }
    drop(read);
    let mut write = TOOL_CALLS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if find(&write).is_some() {
        return;
    }
    let counter = metrics::counter!("mcp_tool_calls_total", "tool" => tool, "outcome" => outcome);
    counter.increment(1);
    write.push((tool, outcome, counter));
}

/// A successful tool result: JSON text always, `structuredContent` where an output schema
/// is published (2025-06-18 server/tools, "Structured Content").
fn tool_output(tool: &Tool, revision: Revision, value: Value) -> RpcResult {
    if tool.has_output_schema() {
        if let Err(violations) = tool.validate_output(&value) {
            tracing::warn!(tool = tool.def.name, %violations, "tool output does not match its schema");
            return tool_error(&format!(
                "{} returned data in an unexpected shape; the CrossTrade Add-On may need an \
                 update",
                tool.def.name
            ))
            .into();
        }
        return structured_output(revision, &value);
    }
    let text = match value {
        Value::String(text) => text,
        other => json_text(&other),
    };
    json!({ "content": [{ "type": "text", "text": text }], "isError": false }).into()
}

/// A result whose shape matches the tool's output schema: the JSON as text, and as
/// `structuredContent` for revisions that have it.
fn structured_output(revision: Revision, value: &impl serde::Serialize) -> RpcResult {
    match serde_json::to_string(value) {
        Ok(json) => RpcResult::ToolJson {
            json,
            structured_content: revision.has_structured_content(),
        },
        Err(err) => {
            tracing::error!(error = %err, "serializing a tool result failed");
            tool_error("the result could not be serialized; retry the call").into()
        }
    }
}

/// `value` as JSON text: serialized into a byte buffer, not through `Display`'s formatter.
fn json_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A tool-level failure the model can read and correct (2025-11-25 server/tools, "Error
/// Handling": input validation errors are tool execution errors).
fn tool_error(message: &str) -> Value {
    json!({ "content": [{ "type": "text", "text": message }], "isError": true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_result_written_from_its_text_is_the_response_its_tree_would_make() {
        let value = json!({
            "accounts": [{"name": "Sim101", "note": "quote \" backslash \\ line\n tab\t ✓"}],
            "count": 1,
            "ratio": 0.25,
            "empty": null,
        });
        let server_info = json!({"name": "crosstrade-mcp", "version": "1.2.3"});
        for revision in &Revision::ALL {
            for id in [json!(7), json!("call-\"7\""), Value::Null] {
                let RpcResult::ToolJson {
                    json,
                    structured_content,
                } = structured_output(*revision, &value)
                else {
                    panic!("a structured result is kept as text");
                };
                let modern = revision.is_modern().then_some(&server_info);
                let written = tool_json_response(&id, &json, structured_content, modern).unwrap();
                let written: Value = serde_json::from_slice(&written).unwrap();
                let mut tree = structured_output(*revision, &value).into_value();
                if revision.is_modern() {
                    tree = envelope(tree, server_info.clone());
                }
                assert_eq!(written, result_response(&id, tree), "{revision:?} {id}");
                let result = &written["result"];
                assert_eq!(result["isError"], false);
                let text: Value =
                    serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
                assert_eq!(text, value);
                if revision.has_structured_content() {
                    assert_eq!(result["structuredContent"], value, "{revision:?}");
                } else {
                    assert_eq!(result.get("structuredContent"), None, "{revision:?}");
                }
            }
        }
    }

    #[test]
    fn every_end_of_a_tool_call_has_its_activity_outcome() {
        let answered = Ok(json!({"content": [], "isError": false}).into());
        assert_eq!(activity_outcome(&answered, false), Outcome::Ok);
        assert_eq!(activity_outcome(&answered, true), Outcome::Held);
        let structured = Ok(structured_output(Revision::V2025_11_25, &json!({"a": 1})));
        assert_eq!(activity_outcome(&structured, false), Outcome::Ok);
        assert_eq!(
            activity_outcome(&Ok(tool_error("bad arguments").into()), false),
            Outcome::ToolError
        );
        for refused in [
            HttpError::SubscriptionRequired,
            HttpError::InsufficientScope,
            HttpError::InvalidToken("gone"),
        ] {
            assert_eq!(
                activity_outcome(&Err(Failure::Http(refused)), false),
                Outcome::Refused
            );
        }
        let offline = HttpError::from_relay(&CallError::NotConnected, DEFAULT_DEADLINE);
        assert_eq!(
            activity_outcome(&Err(Failure::Http(offline)), false),
            Outcome::AddonUnavailable
        );
        for failed in [
            Failure::Rpc(RpcError::invalid_params("Invalid or expired requestState")),
            Failure::Http(HttpError::internal(
                "reading",
                "unavailable",
                std::io::Error::other("down"),
            )),
        ] {
            assert_eq!(activity_outcome(&Err(failed), false), Outcome::Failed);
        }
    }
}
