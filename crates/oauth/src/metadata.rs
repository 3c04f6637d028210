//! Discovery documents: RFC 8414 authorization-server metadata, RFC 9728 protected-resource
//! metadata (at the root and path-suffixed forms clients probe), and the JWK Set.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::scope::{READ, TRADE};
use crate::state::{OAuthState, paths};

fn cacheable(body: Value) -> Response {
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// RFC 8414 §2 with the MCP authorization profile's requirements (PKCE S256 advertised,
/// RFC 9207 `iss` in responses).
pub fn authorization_server_metadata(state: &OAuthState) -> Value {
    let settings = state.settings();
    json!({
        "issuer": settings.issuer,
        "authorization_endpoint": settings.url(paths::AUTHORIZE),
        "token_endpoint": settings.url(paths::TOKEN),
        "registration_endpoint": settings.url(paths::REGISTER),
        "revocation_endpoint": settings.url(paths::REVOKE),
        "jwks_uri": settings.url(paths::JWKS),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": [READ, TRADE],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
    })
}

/// RFC 9728 §2 for the MCP endpoint.
pub fn protected_resource_metadata(state: &OAuthState) -> Value {
    let settings = state.settings();
    json!({
        "resource": settings.resource(),
        "authorization_servers": [settings.issuer],
        "scopes_supported": [READ, TRADE],
        "bearer_methods_supported": ["header"],
        "resource_name": "CrossTrade MCP",
    })
}

pub async fn get_authorization_server_metadata(State(state): State<OAuthState>) -> Response {
    cacheable(authorization_server_metadata(&state))
}

pub async fn get_protected_resource_metadata(State(state): State<OAuthState>) -> Response {
    cacheable(protected_resource_metadata(&state))
}

pub async fn get_jwks(State(state): State<OAuthState>) -> Response {
    cacheable(state.inner.keys.jwks())
}
