//! An independent, real client end to end: the official Rust MCP SDK (`rmcp`) walks 401 →
//! discovery → registration → browser consent → code exchange, calls tools under both protocol
//! eras, refreshes, and revokes.

use std::collections::HashMap;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use testkit::oauth::{Browser, Endpoint, PASSWORD, hidden, location};

use crate::support::ServerProcess;

const REDIRECT: &str = "http://127.0.0.1:47321/callback";

/// Signs in and allows `scope` in the browser; returns the callback URL with the code.
async fn consent(endpoint: &Endpoint, authorization_url: &str, email: &str, scope: &str) -> String {
    let mut browser = Browser::default();
    let signed_in = browser
        .sign_in(endpoint, authorization_url, email, PASSWORD)
        .await;
    assert_eq!(signed_in.status(), 303);
    let page = browser
        .get(endpoint, authorization_url)
        .await
        .text()
        .await
        .unwrap();
    let (transaction, csrf) = (hidden(&page, "transaction"), hidden(&page, "csrf"));
    let allowed = browser
        .post(
            endpoint,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &transaction),
                ("csrf", &csrf),
                ("decision", "allow"),
                ("scope", scope),
            ],
        )
        .await;
    assert_eq!(allowed.status(), 303);
    location(&allowed).to_string()
}

/// How the client starts its session: the `initialize` handshake at a version, or
/// `server/discover` (modern only, or probing and falling back like a dual-era client).
#[derive(Debug, Clone)]
enum Era {
    Initialize(ProtocolVersion),
    Discover,
    Auto,
}

async fn capabilities(mcp_url: &str, access_token: &str, era: Era) -> serde_json::Value {
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(mcp_url)
            .auth_header(access_token)
            .custom_headers(HashMap::new()),
    );
    let modern = vec![ProtocolVersion::V_2026_07_28];
    let client = match era {
        Era::Initialize(version) => {
            ClientConfig::default()
                .with_protocol_version(version)
                .serve(transport)
                .await
        }
        Era::Discover => {
            ClientConfig::default()
                .serve_with_lifecycle(
                    transport,
                    ClientLifecycleMode::Discover {
                        preferred_versions: modern,
                    },
                )
                .await
        }
        Era::Auto => {
            ClientConfig::default()
                .serve_with_lifecycle(
                    transport,
                    ClientLifecycleMode::Auto {
                        preferred_versions: modern,
                        legacy_version: Some(ProtocolVersion::V_2025_11_25),
                    },
                )
                .await
        }
    }
    .expect("connect");
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    assert!(
        names.contains(&"GetMcpCapabilities".to_owned()),
        "{names:?}"
    );
    let result = client
        .call_tool(CallToolRequestParams::new("GetMcpCapabilities"))
        .await
        .expect("tools/call");
    assert_ne!(result.is_error, Some(true), "{result:?}");
    // 2025-03-26 has no structuredContent; the same JSON is the text content.
    let text = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .expect("text content");
    let from_text: serde_json::Value = serde_json::from_str(&text).expect("JSON text");
    let structured = match result.structured_content.clone() {
        Some(structured) => {
            assert_eq!(structured, from_text, "text and structured content agree");
            structured
        }
        None => from_text,
    };
    client.cancel().await.ok();
    serde_json::json!({ "tools": names, "capabilities": structured })
}

#[tokio::test]
async fn rmcp_oauth_flow_then_tools_under_both_eras() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let env = [("DATABASE_URL", url.as_str())];
    crate::support::add_elite_user(&env, "rmcp@example.com");
    let server = ServerProcess::start(
        "serve",
        &[
            ("DATABASE_URL", url.as_str()),
            ("CROSSTRADE_PUBLIC_URL", "http://127.0.0.1:1"),
        ],
    );
    // The issuer must be where clients reach the server: restart on the bound port.
    let port = server.addr.port();
    drop(server);
    let public_url = format!("http://127.0.0.1:{port}");
    let server = ServerProcess::start_on(
        "serve",
        &[
            ("DATABASE_URL", url.as_str()),
            ("CROSSTRADE_PUBLIC_URL", public_url.as_str()),
        ],
        &format!("127.0.0.1:{port}"),
    );
    let endpoint = Endpoint::new(&server.url(""));
    let mcp_url = endpoint.resource();

    // 1. No token: 401 with the discovery challenge.
    let probe = endpoint
        .http
        .post(&mcp_url)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 401);
    let challenge = probe.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();

    // 2. The SDK discovers, registers and builds the authorization URL.
    let mut oauth = OAuthState::new(&mcp_url, None).await.expect("oauth state");
    oauth
        .start_authorization(
            AuthorizationRequest::new(REDIRECT)
                .with_client_name("rmcp end-to-end")
                .with_scopes(["mcp:read", "mcp:trade"])
                .with_challenge(challenge),
        )
        .await
        .expect("discovery and registration");
    let authorization_url = oauth
        .get_authorization_url()
        .await
        .expect("authorization url");
    assert!(
        authorization_url.starts_with(&format!("{public_url}/v1/oauth/mcp/authorize?")),
        "{authorization_url}"
    );

    // 3. The person signs in and allows trade; the SDK exchanges the code (checking iss).
    let callback = consent(
        &endpoint,
        &authorization_url,
        "rmcp@example.com",
        "mcp:trade",
    )
    .await;
    oauth
        .handle_callback_url(&callback)
        .await
        .expect("code exchange");
    let manager = oauth.into_authorization_manager().expect("authorized");
    let access = manager.get_access_token().await.expect("access token");

    // 4. Tools under the 2026-07-28 era and the initialize era.
    for (era, negotiated) in [
        (Era::Discover, "2026-07-28"),
        (Era::Auto, "2026-07-28"),
        (Era::Initialize(ProtocolVersion::V_2025_11_25), "2025-11-25"),
        (Era::Initialize(ProtocolVersion::V_2025_06_18), "2025-06-18"),
        (Era::Initialize(ProtocolVersion::V_2025_03_26), "2025-03-26"),
    ] {
        let seen = capabilities(&mcp_url, &access, era.clone()).await;
        assert_eq!(
            seen["capabilities"]["protocol_version"], negotiated,
            "{era:?}: {seen}"
        );
        assert_eq!(
            seen["capabilities"]["scope"], "mcp:read mcp:trade",
            "{era:?}: {seen}"
        );
        assert_eq!(seen["capabilities"]["tier"], "elite");
        assert!(
            seen["tools"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t != "PlaceOrder"),
            "Add-On tools hidden while it is not connected"
        );
    }

    // 5. Refresh through the SDK: a new access token that works.
    manager.refresh_token().await.expect("refresh");
    let refreshed = manager.get_access_token().await.expect("refreshed token");
    assert_ne!(refreshed, access);
    capabilities(
        &mcp_url,
        &refreshed,
        Era::Initialize(ProtocolVersion::V_2025_11_25),
    )
    .await;

    // 6. Revocation: the token stops working at the MCP endpoint.
    let credentials = manager.get_credentials().await.expect("credentials");
    let client_id = credentials.0;
    let revoked = endpoint
        .form(
            "/v1/oauth/mcp/revoke",
            &[("token", &refreshed), ("client_id", &client_id)],
        )
        .await;
    assert_eq!(revoked.status(), 200);
    let after = endpoint
        .http
        .post(&mcp_url)
        .bearer_auth(&refreshed)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    assert!(
        after.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\"")
    );
    assert!(server.terminate().success());
}
