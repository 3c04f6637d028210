//! B1–B8: dynamic client registration. Validation (B1–B6) is one request each, in-process;
//! the per-address limit (B7) needs the peer address of a real connection.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Server, assert_oauth_error, count};

#[tokio::test]
async fn b1_valid_public_registration() {
    let server = Server::in_process().await;
    let response = server
        .register_oneshot(json!({
            "client_name": "Claude Code",
            "redirect_uris": ["http://localhost:3118/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "scope": "mcp:read mcp:trade",
            "unknown_extension": {"ignored": true},
        }))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json();
    assert!(body["client_id"].as_str().unwrap().starts_with("ctc_"));
    assert!(body["client_id_issued_at"].is_i64());
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert_eq!(
        body["redirect_uris"],
        json!(["http://localhost:3118/callback"])
    );
    assert_eq!(
        body["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(body["response_types"], json!(["code"]));
    assert_eq!(body["client_name"], "Claude Code");
    assert_eq!(body["scope"], "mcp:read mcp:trade");
    assert!(body.get("client_secret").is_none());
    assert!(body.get("unknown_extension").is_none());
}

#[tokio::test]
async fn b2_secret_methods_register_public_clients_others_are_refused() {
    let server = Server::in_process().await;
    for (i, method) in [
        None,
        Some("client_secret_post"),
        Some("client_secret_basic"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body =
            json!({ "redirect_uris": [format!("https://claude.ai/api/mcp/auth_callback{i}")] });
        if let Some(method) = method {
            body["token_endpoint_auth_method"] = json!(method);
        }
        let response = server.register_oneshot(body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{method:?}");
        let body: Value = response.json();
        assert_eq!(body["token_endpoint_auth_method"], "none");
        assert!(body.get("client_secret").is_none());
    }
    for method in ["private_key_jwt", "tls_client_auth", "magic"] {
        let response = server
            .register_oneshot(json!({ "redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": method }))
            .await;
        assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
    }
}

#[tokio::test]
async fn b3_grant_and_response_types() {
    let server = Server::in_process().await;
    for body in [
        json!({ "redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"] }),
        json!({ "redirect_uris": ["https://a.example/cb"], "grant_types": ["authorization_code", "password"] }),
        json!({ "redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"] }),
        json!({ "redirect_uris": ["https://a.example/cb"], "response_types": ["token"] }),
        json!({ "redirect_uris": ["https://a.example/cb"], "response_types": ["code", "id_token"] }),
        json!({ "redirect_uris": ["https://a.example/cb"], "scope": "mcp:read admin" }),
        json!({ "redirect_uris": ["https://a.example/cb"], "logo_uri": "http://a.example/logo.png" }),
        json!({ "redirect_uris": ["https://a.example/cb"], "client_uri": "javascript:alert(1)" }),
    ] {
        assert_oauth_error(
            server.register_oneshot(body).await,
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
        )
        .await;
    }
    assert_eq!(
        count(&server, "SELECT count(*) FROM oauth_clients").await,
        0
    );
}

#[tokio::test]
async fn b4_bad_redirect_uris_refuse_the_whole_registration() {
    let server = Server::in_process().await;
    for uri in [
        "http://example.com/callback",
        "https://claude.ai/cb#fragment",
        "javascript:alert(1)",
        "data:text/html,x",
        "file:///etc/passwd",
        "/relative",
        "https://user@claude.ai/cb",
    ] {
        let response = server
            .register_oneshot(json!({ "redirect_uris": ["https://ok.example/cb", uri] }))
            .await;
        assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
    }
    assert_oauth_error(
        server.register_oneshot(json!({ "client_name": "x" })).await,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
    )
    .await;
    assert_oauth_error(
        server
            .register_oneshot(json!({ "redirect_uris": [] }))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
    )
    .await;
    assert_eq!(
        count(&server, "SELECT count(*) FROM oauth_clients").await,
        0
    );
}

#[tokio::test]
async fn b5_loopback_and_hosted_callbacks_without_application_type() {
    let server = Server::in_process().await;
    let response = server
        .register_oneshot(json!({
            "client_name": "Cursor",
            "redirect_uris": [
                "http://localhost:33418/callback",
                "http://127.0.0.1/callback",
                "cursor://anysphere.cursor-mcp/oauth/callback",
                "https://www.cursor.com/agents/mcp/oauth/callback",
            ],
            "token_endpoint_auth_method": "none",
        }))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json();
    assert_eq!(
        body["redirect_uris"].as_array().unwrap().len(),
        4,
        "echoed exactly"
    );
}

#[tokio::test]
async fn b6_size_limits_before_any_write() {
    let server = Server::in_process().await;
    let huge =
        json!({ "redirect_uris": ["https://a.example/cb"], "client_name": "x".repeat(20_000) });
    let response = server.register_oneshot(huge).await;
    assert_oauth_error(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_client_metadata",
    )
    .await;
    let many: Vec<String> = (0..11)
        .map(|i| format!("https://a.example/cb{i}"))
        .collect();
    assert_oauth_error(
        server
            .register_oneshot(json!({ "redirect_uris": many }))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
    )
    .await;
    let long_name =
        json!({ "redirect_uris": ["https://a.example/cb"], "client_name": "n".repeat(201) });
    assert_oauth_error(
        server.register_oneshot(long_name).await,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
    )
    .await;
    let not_json = server
        .oneshot(
            server
                .http
                .post(server.url("/v1/oauth/mcp/register"))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    // Product doc 000: a malformed body is a malformed request.
    assert_oauth_error(not_json, StatusCode::BAD_REQUEST, "invalid_request").await;
    let wrong_type = server
        .oneshot(
            server
                .http
                .post(server.url("/v1/oauth/mcp/register"))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_oauth_error(wrong_type, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(
        count(&server, "SELECT count(*) FROM oauth_clients").await,
        0
    );
    assert_eq!(
        count(&server, "SELECT count(*) FROM registration_events").await,
        0
    );
}

#[tokio::test]
async fn b7_dedup_and_hourly_limit_per_real_client_ip() {
    let server = Server::start().await;
    let same = json!({ "client_name": "Same", "redirect_uris": ["https://same.example/cb"] });
    let first: Value = server.register(same.clone()).await.json().await.unwrap();
    for _ in 0..3 {
        let again = server.register(same.clone()).await;
        assert_eq!(again.status(), StatusCode::CREATED);
        let again: Value = again.json().await.unwrap();
        assert_eq!(
            again["client_id"], first["client_id"],
            "identical metadata returns the same client"
        );
    }
    for i in 1..10 {
        let response = server
            .register(json!({ "redirect_uris": [format!("https://n{i}.example/cb")] }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "client {i}");
    }
    // The 11th new client within the hour.
    let response = server
        .register(json!({ "redirect_uris": ["https://eleventh.example/cb"] }))
        .await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_oauth_error(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_registrations",
    )
    .await;
    // Re-registering an existing client still works at the limit.
    assert_eq!(
        server.register(same.clone()).await.status(),
        StatusCode::CREATED
    );
    // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = server
        .http
        .post(server.url("/v1/oauth/mcp/register"))
        .header("x-forwarded-for", "198.51.100.1")
        .json(&json!({ "redirect_uris": ["https://spoof.example/cb"] }))
        .send()
        .await
        .unwrap();
    assert_oauth_error(
        spoofed,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_registrations",
    )
    .await;
    // An hour later the window has moved.
    server.clock.advance(chrono::TimeDelta::minutes(61));
    let later = server
        .register(json!({ "redirect_uris": ["https://later.example/cb"] }))
        .await;
    assert_eq!(later.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn b7_trusted_proxy_forwarded_address_is_the_key() {
    // The test server trusts 127.0.0.2; connect from it so X-Forwarded-For counts.
    let server = Server::start_with(|s| s.registrations_per_hour = 1).await;
    let from_proxy = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let register = |ip: &'static str, host: &'static str| {
        from_proxy
            .post(server.url("/v1/oauth/mcp/register"))
            .header("x-forwarded-for", format!("203.0.113.77, {ip}"))
            .json(&json!({ "redirect_uris": [format!("https://{host}/cb")] }))
            .send()
    };
    assert_eq!(
        register("198.51.100.1", "a.example")
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        register("198.51.100.1", "b.example")
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        register("198.51.100.2", "c.example")
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn b8_clients_never_authorized_are_reaped_with_their_grants() {
    let server = Server::start().await;
    server
        .user("reap@example.com", store::users::Tier::Elite)
        .await;
    let unused = server.client("https://unused.example/cb").await;
    let mut flow = crate::support::Flow::new(&server, "reap@example.com").await;
    flow.tokens(&server, "mcp:read", "mcp:read").await;

    server.clock.advance(chrono::TimeDelta::hours(25));
    let removed = oauth::maintenance::reap(&server.state).await.unwrap();
    assert_eq!(removed, 1);
    let remaining: Vec<String> = sqlx::query_scalar("SELECT client_id FROM oauth_clients")
        .fetch_all(&server.db.pool().await)
        .await
        .unwrap();
    assert_eq!(
        remaining,
        vec![flow.client_id.clone()],
        "{unused} removed, the authorized client kept"
    );
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM security_events WHERE kind = 'client_deleted'"
        )
        .await,
        1
    );

    // Deleting a client ends every grant it had, on this replica at once.
    let mut flow = crate::support::Flow::new(&server, "reap@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let access = tokens["access_token"].as_str().unwrap();
    assert!(server.state.verify_access_token(access).await.is_ok());
    sqlx::query("DELETE FROM oauth_clients WHERE client_id = $1")
        .bind(&flow.client_id)
        .execute(&server.db.pool().await)
        .await
        .unwrap();
    testkit::wait::wait_until(
        "the deleted client's grant refused",
        std::time::Duration::from_secs(1),
        async || server.state.verify_access_token(access).await == Err(oauth::AccessError::Revoked),
    )
    .await;
}

/// Product doc 000: a body that is not a JSON registration request is `invalid_request`;
/// acceptable JSON with missing or malformed `redirect_uris` is `invalid_client_metadata`. The
/// descriptions say what is wrong.
#[tokio::test]
async fn malformed_bodies_are_invalid_request_and_bad_redirect_uris_invalid_client_metadata() {
    let server = Server::in_process().await;
    let register = || server.http.post(server.url("/v1/oauth/mcp/register"));
    let not_json = server
        .oneshot(
            register()
                .header("content-type", "application/json")
                .body("{\"redirect_uris\": ["),
        )
        .await;
    let body = assert_oauth_error(not_json, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    let form = server
        .oneshot(
            register()
                .header("content-type", "application/x-www-form-urlencoded")
                .body("redirect_uris=https://a.example/cb"),
        )
        .await;
    let body = assert_oauth_error(form, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("Content-Type: application/json"),
        "{body}"
    );
    let array = server
        .register_oneshot(json!([{ "redirect_uris": ["https://a.example/cb"] }]))
        .await;
    assert_oauth_error(array, StatusCode::BAD_REQUEST, "invalid_request").await;
    let missing = server.register_oneshot(json!({ "client_name": "x" })).await;
    let body =
        assert_oauth_error(missing, StatusCode::BAD_REQUEST, "invalid_client_metadata").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("redirect_uris is required"),
        "{body}"
    );
    let malformed = server
        .register_oneshot(json!({ "redirect_uris": "https://a.example/cb" }))
        .await;
    let body = assert_oauth_error(
        malformed,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("array of strings"),
        "{body}"
    );
    assert_eq!(
        count(&server, "SELECT count(*) FROM oauth_clients").await,
        0
    );
}
