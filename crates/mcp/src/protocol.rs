//! JSON-RPC 2.0 envelopes and the protocol revisions served on the one endpoint.
//!
//! Era selection (MCP 2026-07-28 basic/versioning, "Backward Compatibility"): a request whose
//! `_meta` names `io.modelcontextprotocol/protocolVersion` is served statelessly as that
//! revision; `initialize` always selects the legacy handshake; anything else is a legacy request
//! whose revision is the `MCP-Protocol-Version` header (2025-06-18 and later) or 2025-03-26
//! when the header is absent (2025-11-25 basic/transports, "Protocol Version Header").

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// A protocol revision this server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Revision {
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl Revision {
    /// Every revision, newest first (the order of `supported` in -32022).
    pub const ALL: [Revision; 4] = [
        Revision::V2026_07_28,
        Revision::V2025_11_25,
        Revision::V2025_06_18,
        Revision::V2025_03_26,
    ];
    /// The answer to an `initialize` offering a version this server does not know.
    pub const LATEST_LEGACY: Revision = Revision::V2025_11_25;

    pub fn parse(version: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == version)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Revision::V2025_03_26 => "2025-03-26",
            Revision::V2025_06_18 => "2025-06-18",
            Revision::V2025_11_25 => "2025-11-25",
            Revision::V2026_07_28 => "2026-07-28",
        }
    }

    /// Per-request `_meta`, `resultType`, caching hints, no `initialize` (2026-07-28 and later).
    pub fn is_modern(self) -> bool {
        self >= Revision::V2026_07_28
    }

    /// `title`, `outputSchema` and `structuredContent` exist from 2025-06-18 on.
    pub fn has_structured_content(self) -> bool {
        self >= Revision::V2025_06_18
    }

    pub fn supported_list() -> Vec<&'static str> {
        Self::ALL.iter().map(|r| r.as_str()).collect()
    }

    /// The revisions a client may name in per-request `_meta` without `initialize`: the
    /// `supportedVersions` of `server/discover`.
    pub fn per_request_list() -> Vec<&'static str> {
        Self::ALL
            .iter()
            .filter(|r| r.is_modern())
            .map(|r| r.as_str())
            .collect()
    }
}

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28 basic/index, "Error Codes".
pub const HEADER_MISMATCH: i64 = -32020;
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// A JSON-RPC error and the HTTP status it travels with.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub status: StatusCode,
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn parse_error(detail: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            PARSE_ERROR,
            format!("Parse error: {detail}"),
        )
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, message)
    }

    /// Invalid params found while serving the request (unknown tool, bad cursor): 200.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(StatusCode::OK, INVALID_PARAMS, message)
    }

    /// Invalid params in the request envelope (missing required `_meta`): 400 on HTTP
    /// (2026-07-28 basic/index, "Per-request protocol fields").
    pub fn malformed_params(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_PARAMS, message)
    }

    /// Unknown method: 200 for legacy revisions, 404 for modern ones (2026-07-28
    /// transports/streamable-http, "Protocol Version Header").
    pub fn method_not_found(method: &str, modern: bool) -> Self {
        let status = if modern {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        Self::new(
            status,
            METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        )
    }

    pub fn header_mismatch(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, HEADER_MISMATCH, message)
    }

    /// -32022. `per_request`: the request named its version in `_meta` (the 2026-07-28
    /// era), so `supported` lists only the revisions served per request, the same list
    /// `server/discover` gives (2026-07-28 basic/versioning: the client retries with one of
    /// them); a legacy `MCP-Protocol-Version` header gets every revision.
    pub fn unsupported_version(requested: &str, per_request: bool) -> Self {
        let supported: Vec<&str> = if per_request {
            Revision::per_request_list()
        } else {
            Revision::supported_list()
        };
        Self {
            status: StatusCode::BAD_REQUEST,
            code: UNSUPPORTED_PROTOCOL_VERSION,
            message: "Unsupported protocol version".to_owned(),
            data: Some(json!({
                "supported": supported,
                "requested": requested,
            })),
        }
    }

    /// The JSON-RPC error response; `id` is `null` when the request's could not be read.
    pub fn to_response(&self, id: &Value) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let (Some(data), Some(object)) = (&self.data, error.as_object_mut()) {
            object.insert("data".to_owned(), data.clone());
        }
        json!({ "jsonrpc": "2.0", "id": id, "error": error })
    }
}

/// The JSON-RPC response carrying `result`, which is moved in (`json!` would serialize a deep
/// copy of it: the whole tool list, for `tools/list`).
pub fn result_response(id: &Value, result: Value) -> Value {
    let mut response = Map::with_capacity(3);
    response.insert("jsonrpc".to_owned(), Value::from("2.0"));
    response.insert("id".to_owned(), id.clone());
    response.insert("result".to_owned(), result);
    Value::Object(response)
}

/// A JSON-RPC request: `id` is a string or an integer (MCP basic, "Requests").
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Value,
    pub method: String,
    pub params: Map<String, Value>,
}

/// One JSON-RPC message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Request),
    Notification,
    /// A client's answer to a server request (`elicitation/create`): its id and its result or
    /// error.
    Response {
        id: Value,
        result: Option<Value>,
        error: Option<Value>,
    },
}

/// Classifies one JSON value as a JSON-RPC message. The error carries the request id when one
/// could be read.
pub fn classify(value: Value) -> Result<Message, (Value, RpcError)> {
    let Value::Object(mut object) = value else {
        return Err((
            Value::Null,
            RpcError::invalid_request("Invalid Request: a JSON-RPC message must be an object"),
        ));
    };
    let id = object.remove("id");
    let readable_id = match &id {
        Some(id @ Value::String(_)) => id.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n.clone()),
        _ => Value::Null,
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((
            readable_id,
            RpcError::invalid_request(r#"Invalid Request: "jsonrpc" must be "2.0""#),
        ));
    }
    let Some(method) = object.get("method") else {
        return if id.is_some() && (object.contains_key("result") || object.contains_key("error")) {
            Ok(Message::Response {
                id: readable_id,
                result: object.remove("result"),
                error: object.remove("error"),
            })
        } else {
            Err((
                readable_id,
                RpcError::invalid_request(r#"Invalid Request: "method" is missing"#),
            ))
        };
    };
    let Some(method) = method.as_str().map(str::to_owned) else {
        return Err((
            readable_id,
            RpcError::invalid_request(r#"Invalid Request: "method" must be a string"#),
        ));
    };
    let Some(id) = id else {
        return Ok(Message::Notification);
    };
    if readable_id.is_null() {
        return Err((
            Value::Null,
            RpcError::invalid_request(r#"Invalid Request: "id" must be a string or an integer"#),
        ));
    }
    let _ = id;
    let params = match object.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => {
            return Err((
                readable_id,
                RpcError::malformed_params(r#"Invalid params: "params" must be an object"#),
            ));
        }
    };
    Ok(Message::Request(Request {
        id: readable_id,
        method,
        params,
    }))
}

/// Decodes a header value that may use the `=?base64?…?=` sentinel (2026-07-28
/// transports/streamable-http, "Value Encoding").
pub fn decode_header_value(raw: &str) -> Option<String> {
    use base64::Engine as _;
    match raw
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions() {
        assert_eq!(Revision::parse("2025-06-18"), Some(Revision::V2025_06_18));
        assert_eq!(Revision::parse("2099-01-01"), None);
        assert!(Revision::V2026_07_28.is_modern());
        assert!(!Revision::V2025_11_25.is_modern());
        assert_eq!(
            Revision::supported_list(),
            ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"]
        );
        assert_eq!(Revision::per_request_list(), ["2026-07-28"]);
    }

    #[test]
    fn classification() {
        let request = classify(json!({"jsonrpc":"2.0","id":7,"method":"ping"})).unwrap();
        assert_eq!(
            request,
            Message::Request(Request {
                id: json!(7),
                method: "ping".into(),
                params: Map::new()
            })
        );
        assert_eq!(
            classify(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap(),
            Message::Notification
        );
        assert_eq!(
            classify(json!({"jsonrpc":"2.0","id":"a","result":{}})).unwrap(),
            Message::Response {
                id: json!("a"),
                result: Some(json!({})),
                error: None
            }
        );
        let (id, error) = classify(json!({"jsonrpc":"1.0","id":3,"method":"ping"})).unwrap_err();
        assert_eq!((id, error.code), (json!(3), INVALID_REQUEST));
        let (id, error) = classify(json!({"jsonrpc":"2.0","id":null,"method":"ping"})).unwrap_err();
        assert_eq!((id, error.code), (Value::Null, INVALID_REQUEST));
        let (_, error) =
            classify(json!({"jsonrpc":"2.0","id":1,"method":"x","params":[1]})).unwrap_err();
        assert_eq!(error.code, INVALID_PARAMS);
    }

    #[test]
    fn header_decoding() {
        assert_eq!(
            decode_header_value("PlaceOrder").as_deref(),
            Some("PlaceOrder")
        );
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(decode_header_value("=?base64?***?="), None);
    }
}
