//! A1–A4: discovery documents, each one request in-process.

use serde_json::{Value, json};

use crate::support::Server;

#[tokio::test]
async fn a1_a2_authorization_server_metadata() {
    let server = Server::in_process().await;
    let response = server
        .oneshot(
            server
                .http
                .get(server.url("/.well-known/oauth-authorization-server")),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(
        response
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let body: Value = response.json();
    let base = &server.base;
    assert_eq!(
        body,
        json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/v1/oauth/mcp/authorize"),
            "token_endpoint": format!("{base}/v1/oauth/mcp/token"),
            "registration_endpoint": format!("{base}/v1/oauth/mcp/register"),
            "revocation_endpoint": format!("{base}/v1/oauth/mcp/revoke"),
            "jwks_uri": format!("{base}/v1/oauth/mcp/jwks"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["mcp:read", "mcp:trade"],
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": true,
        })
    );
    // Byte-equal issuer.
    assert_eq!(body["issuer"].as_str().unwrap(), server.base);
}

#[tokio::test]
async fn a4_protected_resource_metadata_at_both_paths() {
    let server = Server::in_process().await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/v1/api/mcp",
    ] {
        let response = server.oneshot(server.http.get(server.url(path))).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let body: Value = response.json();
        assert_eq!(
            body,
            json!({
                "resource": server.resource(),
                "authorization_servers": [server.base],
                "scopes_supported": ["mcp:read", "mcp:trade"],
                "bearer_methods_supported": ["header"],
                "resource_name": "CrossTrade MCP",
            })
        );
    }
    // The path-inserted AS metadata some clients probe answers too.
    let response = server
        .oneshot(
            server
                .http
                .get(server.url("/.well-known/oauth-authorization-server/v1/api/mcp")),
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn preflight_on_open_endpoints_and_jwks() {
    let server = Server::in_process().await;
    for path in [
        "/v1/oauth/mcp/register",
        "/v1/oauth/mcp/token",
        "/v1/oauth/mcp/revoke",
        "/.well-known/oauth-authorization-server",
    ] {
        let response = server
            .oneshot(
                server
                    .http
                    .request(reqwest::Method::OPTIONS, server.url(path))
                    .header("origin", "http://localhost:6274")
                    .header("access-control-request-method", "POST")
                    .header("access-control-request-headers", "content-type"),
            )
            .await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "*",
            "{path}"
        );
        assert!(
            response
                .headers()
                .get("access-control-allow-credentials")
                .is_none()
        );
    }
    let jwks: Value = server
        .oneshot(server.http.get(server.url("/v1/oauth/mcp/jwks")))
        .await
        .json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(keys[0].get("d").is_none(), "private half never published");
}
