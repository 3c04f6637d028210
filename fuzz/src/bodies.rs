//! One function per hostile-input surface, each checking properties beyond "does not panic".
//! The fuzz targets call them with libFuzzer's inputs; `tests/it/fuzz_corpus.rs` includes this
//! file and calls them with every file under `fuzz/corpus/<target>/`, so the corpus is an
//! ordinary test. A failed property panics, which libFuzzer records as a crash.

use addon_bridge::protocol as addon;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use mcp::protocol::{Message, RpcError, classify, decode_header_value, result_response};
use oauth::crypto::{b64, pkce_matches, sha256};
use oauth::error::OAuthError;
use oauth::redirect_uri;
use oauth::register::{Source, normalise};
use oauth::scope::Scope;
use oauth::token::{FormParams, client_id_of};
use serde_json::{Value, json};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by the name of its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("jsonrpc_envelope", jsonrpc_envelope),
    ("registration_metadata", registration_metadata),
    ("redirect_uri", redirect_uri),
    ("token_form", token_form),
    ("addon_frame", addon_frame),
];

/// An OAuth error from a pure parser is the client's fault: 4xx, never a server error.
fn assert_client_error(error: &OAuthError) {
    match error {
        OAuthError::Client { status, .. } => assert!(status.is_client_error(), "{error:?}"),
        OAuthError::TooMany { .. } | OAuthError::Internal(_) => {
            panic!("a parser answered {error:?}")
        }
    }
}

/// Whether a JSON value could be stored in PostgreSQL `jsonb` (no NUL in any string or key).
fn storable(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.contains('\0'),
        Value::Array(items) => items.iter().all(storable),
        Value::Object(map) => map.iter().all(|(k, v)| !k.contains('\0') && storable(v)),
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------------
// JSON-RPC envelope (MCP POST body and the 2026-07-28 header encoding)

/// Input: a POST body. Also decoded as an `Mcp-Name`-style header value when it is UTF-8.
pub fn jsonrpc_envelope(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let decoded = decode_header_value(text);
        let sentinel = text.starts_with("=?base64?") && text.ends_with("?=") && text.len() >= 11;
        if !sentinel {
            assert_eq!(
                decoded.as_deref(),
                Some(text),
                "a plain header value changed"
            );
        }
    }
    match serde_json::from_slice::<Value>(data) {
        Err(err) => {
            check_error_response(&RpcError::parse_error(&err.to_string()), &Value::Null, None);
        }
        Ok(Value::Array(items)) => items.into_iter().for_each(check_message),
        Ok(single) => check_message(single),
    }
}

fn check_message(value: Value) {
    let original = value.clone();
    let readable_id = match original.get("id") {
        Some(id @ Value::String(_)) => Some(id.clone()),
        Some(id @ Value::Number(n)) if n.is_i64() || n.is_u64() => Some(id.clone()),
        _ => None,
    };
    match classify(value) {
        Ok(Message::Request(request)) => {
            assert_eq!(original["jsonrpc"], "2.0");
            assert_eq!(Some(&request.id), readable_id.as_ref());
            assert_eq!(original["method"].as_str(), Some(request.method.as_str()));
            let response = result_response(&request.id, json!({}));
            assert_eq!(response["jsonrpc"], "2.0");
            assert_eq!(response["id"], request.id);
            round_trips(&response);
        }
        Ok(Message::Notification) => {
            assert_eq!(original["jsonrpc"], "2.0");
            assert!(original.get("id").is_none() && original["method"].is_string());
        }
        Ok(Message::Response { id, result, error }) => {
            assert!(original.get("id").is_some() && original.get("method").is_none());
            assert!(original.get("result").is_some() || original.get("error").is_some());
            assert_eq!(id, readable_id.unwrap_or(Value::Null));
            assert_eq!(result.as_ref(), original.get("result"));
            assert_eq!(error.as_ref(), original.get("error"));
        }
        Err((id, error)) => check_error_response(&error, &id, readable_id.as_ref()),
    }
}

/// A JSON-RPC error response always carries `"jsonrpc": "2.0"`, an id that is a string, an
/// integer or null (the request's, when it could be read), and an integer code.
fn check_error_response(error: &RpcError, id: &Value, readable_id: Option<&Value>) {
    assert!(
        id.is_null() || id.is_string() || id.is_i64() || id.is_u64(),
        "id {id}"
    );
    if !id.is_null() {
        assert_eq!(Some(id), readable_id, "an id the request did not carry");
    }
    assert!(
        error.status == StatusCode::OK || error.status.is_client_error(),
        "{error:?}"
    );
    let response = error.to_response(id);
    assert_eq!(response["jsonrpc"], "2.0");
    assert_eq!(&response["id"], id);
    assert!(response["error"]["code"].is_i64());
    assert!(response["error"]["message"].is_string());
    assert!(response.get("result").is_none());
    round_trips(&response);
}

fn round_trips(response: &Value) {
    let bytes = serde_json::to_vec(response).expect("a response serialises");
    let again: Value = serde_json::from_slice(&bytes).expect("a response parses back");
    assert_eq!(&again, response);
}

// ---------------------------------------------------------------------------------------------
// Registration metadata (RFC 7591) and Client ID Metadata Documents

/// Input: a registration request body.
pub fn registration_metadata(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for source in [Source::Registration, Source::Document] {
        match normalise(&request, source) {
            Err(error) => assert_client_error(&error),
            Ok(metadata) => check_metadata(&metadata.to_json(), source),
        }
    }
}

fn check_metadata(metadata: &Value, source: Source) {
    assert!(storable(metadata), "unstorable metadata {metadata}");
    let uris = metadata["redirect_uris"].as_array().expect("redirect_uris");
    assert!(!uris.is_empty());
    for (i, uri) in uris.iter().enumerate() {
        let uri = uri.as_str().expect("a string");
        assert_eq!(redirect_uri::validate(uri), Ok(()));
        assert!(!uris[..i].iter().any(|u| u == uri), "duplicate {uri}");
    }
    assert_eq!(metadata["token_endpoint_auth_method"], "none");
    let grants = metadata["grant_types"].as_array().expect("grant_types");
    assert!(grants.iter().any(|g| g == "authorization_code"));
    assert!(
        grants
            .iter()
            .all(|g| g == "authorization_code" || g == "refresh_token")
    );
    assert_eq!(metadata["response_types"], json!(["code"]));
    if let Some(scope) = metadata.get("scope") {
        let scope = scope.as_str().expect("scope is a string");
        assert!(Scope::parse_request(Some(scope)).is_ok(), "scope {scope:?}");
    }
    for key in ["client_uri", "logo_uri", "tos_uri", "policy_uri"] {
        if let Some(uri) = metadata.get(key) {
            let url = url::Url::parse(uri.as_str().expect("a string")).expect("an URL");
            assert_eq!(url.scheme(), "https", "{key}");
        }
    }
    if let Some(name) = metadata.get("client_name") {
        let name = name.as_str().expect("a string");
        assert!(!name.chars().any(char::is_control), "{name:?}");
    }
    // What is stored validates again to itself (the dedup key is computed from it).
    let again = normalise(metadata, source).expect("normalised metadata is valid");
    assert_eq!(&again.to_json(), metadata);
}

// ---------------------------------------------------------------------------------------------
// Redirect URIs (RFC 8252 §7.3, RFC 9700 §2.1)

/// Input: `registered`, optionally a newline and `requested` (otherwise both are the input).
pub fn redirect_uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (registered, requested) = text.split_once('\n').unwrap_or((text, text));
    for uri in [registered, requested] {
        check_redirect_uri(uri);
    }
    if redirect_uri::validate(registered).is_ok() && redirect_uri::matches(registered, requested) {
        let a = url::Url::parse(registered).expect("a valid URI parses");
        let b = url::Url::parse(requested).expect("a matching URI parses");
        assert_eq!(a.scheme(), b.scheme(), "{registered} ~ {requested}");
        assert_eq!(a.host_str(), b.host_str(), "{registered} ~ {requested}");
        assert_eq!(a.path(), b.path(), "{registered} ~ {requested}");
        assert_eq!(a.query(), b.query(), "{registered} ~ {requested}");
        assert_eq!(b.fragment(), None);
        assert!(b.username().is_empty() && b.password().is_none());
        if registered != requested {
            // Only a loopback port may differ (RFC 8252 §7.3).
            assert!(redirect_uri::is_loopback(registered) && redirect_uri::is_loopback(requested));
            assert_eq!(a.scheme(), "http");
        }
    }
}

fn check_redirect_uri(uri: &str) {
    let shown = redirect_uri::display_host(uri);
    let loopback = redirect_uri::is_loopback(uri);
    if redirect_uri::validate(uri).is_err() {
        return;
    }
    assert!(redirect_uri::matches(uri, uri));
    assert!(!uri.contains('#') && !uri.chars().any(char::is_control));
    let url = url::Url::parse(uri).expect("a valid URI parses");
    // The redirect is built from the parsed URL: it must parse back to itself.
    assert_eq!(url::Url::parse(url.as_str()).as_ref(), Ok(&url));
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{uri}"
    );
    assert!(
        !matches!(
            url.scheme(),
            "javascript" | "data" | "file" | "vbscript" | "blob" | "about" | "ws" | "wss"
        ),
        "{uri}"
    );
    match url.scheme() {
        "http" => {
            assert!(loopback, "{uri}");
            let host = url.host().expect("loopback host");
            let is_loopback_host = match host {
                url::Host::Domain(name) => name == "localhost",
                url::Host::Ipv4(ip) => ip.is_loopback(),
                url::Host::Ipv6(ip) => ip.is_loopback(),
            };
            assert!(is_loopback_host, "{uri}");
            assert_eq!(Some(shown.as_str()), url.host_str());
        }
        "https" => {
            assert!(!loopback);
            let host = url.host_str().expect("https has a host");
            assert!(!host.is_empty());
            // The consent page names the host the code is actually sent to.
            assert_eq!(shown, host, "{uri}");
        }
        _ => assert!(!loopback),
    }
}

// ---------------------------------------------------------------------------------------------
// Token and revocation requests (form, HTTP Basic, scope, PKCE)

/// Input: optional header lines (`Name: value`) and a blank line, then the form body. Without
/// a blank line the whole input is the body, sent as a form.
pub fn token_form(data: &[u8]) {
    let (headers, body) = split_form_input(data);
    let params = match FormParams::parse(&headers, body) {
        Ok(params) => params,
        Err(error) => {
            assert_client_error(&error);
            return;
        }
    };
    for key in [
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
        "resource",
        "token",
        "token_type_hint",
    ] {
        if let Some(value) = params.get(key) {
            assert!(!value.is_empty() && !value.contains('\0'), "{key}");
        }
    }
    match client_id_of(&headers, &params) {
        Ok(Some(id)) => assert!(
            !id.as_str().is_empty() && !id.as_str().chars().any(char::is_control),
            "{id:?}"
        ),
        Ok(None) => assert!(params.get("client_id").is_none()),
        Err(error) => assert_client_error(&error),
    }
    check_scope(params.get("scope"));
    if let Some(verifier) = params.get("code_verifier") {
        check_pkce(verifier, params.get("code_challenge"));
    }
    if let Some(code) = params.get("code") {
        // Anything at all may be checked as a verifier; only its own challenge matches.
        check_pkce(code, None);
    }
}

fn check_scope(raw: Option<&str>) {
    let items: Vec<&str> = raw
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    let known = items
        .iter()
        .all(|item| matches!(*item, "mcp:read" | "mcp:trade" | "offline_access"));
    match Scope::parse_request(raw) {
        Ok(scope) => {
            assert!(known, "{raw:?} accepted");
            assert_eq!(scope == Scope::Trade, items.contains(&"mcp:trade"));
            assert_eq!(Scope::from_stored(scope.as_str()), Some(scope));
            assert!(scope.covers(Scope::Read));
        }
        Err(_) => assert!(!known, "{raw:?} refused"),
    }
}

fn check_pkce(verifier: &str, challenge: Option<&str>) {
    let own = b64(&sha256(verifier.as_bytes()));
    assert_eq!(own.len(), 43);
    assert!(pkce_matches(verifier, &own));
    if let Some(challenge) = challenge {
        assert_eq!(pkce_matches(verifier, challenge), challenge == own);
    }
    let mut other = own.into_bytes();
    other[0] = if other[0] == b'A' { b'B' } else { b'A' };
    let other = String::from_utf8(other).expect("base64url is ASCII");
    assert!(!pkce_matches(verifier, &other));
}

/// The headers and body of a `token_form` input.
pub fn split_form_input(data: &[u8]) -> (HeaderMap, &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (
            &b"Content-Type: application/x-www-form-urlencoded"[..],
            data,
        ),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        if let Some((name, value)) = text.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    (headers, body)
}

// ---------------------------------------------------------------------------------------------
// Add-On frames (docs/addon-protocol.md)

/// The smallest `max_frame_bytes` the configuration allows, so the size limit is reachable.
const MAX_FRAME: usize = 1024;

/// Input: one text frame, handled both as the first frame (hello) and as a later one.
pub fn addon_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match addon::check::hello(text) {
        Ok(()) => {
            let value: Value = serde_json::from_str(text).expect("an admitted hello is JSON");
            let version = value["addon_version"].as_str().expect("addon_version");
            assert!(addon::parse_version(version) >= Some(addon::MIN_ADDON_VERSION));
        }
        Err((code, reason)) => {
            assert!(
                [
                    addon::close::PROTOCOL_ERROR,
                    addon::close::VERSION_UNSUPPORTED,
                    addon::close::PROTOCOL_UNSUPPORTED
                ]
                .contains(&code),
                "close code {code}"
            );
            assert!(
                reason.len() <= addon::MAX_CLOSE_REASON,
                "close reason of {} bytes",
                reason.len()
            );
        }
    }
    if let Some(reply) = addon::check::frame(text, MAX_FRAME) {
        let reply: Value = serde_json::from_str(&reply).expect("a reply is JSON");
        assert_eq!(reply["v"], addon::PROTOCOL_VERSION);
        match reply["type"].as_str() {
            Some("pong") => {}
            Some("error") => {
                assert!(reply["code"].is_string() && reply["message"].is_string());
                if text.len() > MAX_FRAME {
                    assert_eq!(reply["code"], "frame_too_large");
                }
            }
            other => panic!("reply of type {other:?}"),
        }
    } else {
        assert!(text.len() <= MAX_FRAME);
        // Nothing sent back for an event means it goes to the database: it must fit there.
        let value: Value = serde_json::from_str(text).expect("a silent frame is JSON");
        assert!(storable(&value["data"]), "an unstorable event was accepted");
    }
    if let Some((major, minor, patch)) = addon::parse_version(text) {
        let canonical = format!("{major}.{minor}.{patch}");
        assert_eq!(
            addon::parse_version(&canonical),
            Some((major, minor, patch))
        );
    }
}
