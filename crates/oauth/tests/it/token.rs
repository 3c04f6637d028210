//! D1–D10 and E1–E6: the token endpoint.

use reqwest::StatusCode;
use serde_json::Value;
use store::users::Tier;

use crate::support::{Flow, Server, assert_oauth_error, count};

async fn setup() -> (Server, Flow) {
    let server = Server::start().await;
    server.user("t@example.com", Tier::Elite).await;
    let flow = Flow::new(&server, "t@example.com").await;
    (server, flow)
}

#[tokio::test]
async fn d1_valid_exchange() {
    let (server, mut flow) = setup().await;
    let code = flow.code(&server, "mcp:read mcp:trade", "mcp:trade").await;
    let response = flow.exchange(&server, &code).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "mcp:read mcp:trade");
    assert_eq!(body["refresh_token"].as_str().unwrap().len(), 43);
    let access = body["access_token"].as_str().unwrap();
    let verified = server.state.verify_access_token(access).await.unwrap();
    assert_eq!(verified.client_id, flow.client_id);
    assert_eq!(verified.scope, oauth::scope::Scope::Trade);

    // JSON bodies are refused: the endpoint takes forms only.
    let json = server
        .http
        .post(server.url("/v1/oauth/mcp/token"))
        .json(&serde_json::json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .unwrap();
    assert_oauth_error(json, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn d2_pkce_mismatch_missing_verifier() {
    let (server, mut flow) = setup().await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    let wrong = flow
        .exchange_with(
            &server,
            &code,
            &[(
                "code_verifier",
                "a-wrong-verifier-that-is-long-enough-to-be-valid-shape",
            )],
        )
        .await;
    assert_oauth_error(wrong, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // The failed attempt consumed the code.
    assert_oauth_error(
        flow.exchange(&server, &code).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    let missing = flow
        .exchange_with(&server, &code, &[("code_verifier", "")])
        .await;
    assert_oauth_error(missing, StatusCode::BAD_REQUEST, "invalid_request").await;
    // A missing parameter is rejected before the code is touched.
    assert_eq!(flow.exchange(&server, &code).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn d3_code_of_another_client() {
    let (server, mut flow) = setup().await;
    let other = server.client("http://127.0.0.1:9999/other").await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    let response = flow
        .exchange_with(&server, &code, &[("client_id", &other)])
        .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

#[tokio::test]
async fn d4_redirect_uri_must_match_and_a_mismatch_burns_the_code() {
    let (server, mut flow) = setup().await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    let response = flow
        .exchange_with(
            &server,
            &code,
            &[("redirect_uri", "http://127.0.0.1:45679/callback")],
        )
        .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_oauth_error(
        flow.exchange(&server, &code).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn d5_expired_code() {
    let (server, mut flow) = setup().await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    server.clock.advance(chrono::TimeDelta::seconds(61));
    assert_oauth_error(
        flow.exchange(&server, &code).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn d6_code_reuse_revokes_everything_from_the_first_use() {
    for wait in [chrono::TimeDelta::zero(), chrono::TimeDelta::seconds(30)] {
        let (server, mut flow) = setup().await;
        let code = flow.code(&server, "mcp:read", "mcp:read").await;
        let first: Value = flow.exchange(&server, &code).await.json().await.unwrap();
        let access = first["access_token"].as_str().unwrap();
        let refresh = first["refresh_token"].as_str().unwrap();
        assert!(server.state.verify_access_token(access).await.is_ok());

        server.clock.advance(wait);
        assert_oauth_error(
            flow.exchange(&server, &code).await,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        )
        .await;
        assert_eq!(
            server.state.verify_access_token(access).await,
            Err(oauth::AccessError::Revoked)
        );
        assert_oauth_error(
            flow.refresh(&server, refresh).await,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        )
        .await;
        assert_eq!(
            count(
                &server,
                "SELECT count(*) FROM security_events WHERE kind = 'code_reuse'"
            )
            .await,
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn d7_concurrent_exchanges_yield_exactly_one_token() {
    let (server, mut flow) = setup().await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    // Each attempt on its own task, so they run in parallel on the worker threads.
    let attempts = (0..8).map(|_| {
        let endpoint = server.endpoint.clone();
        let form = [
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", flow.redirect_uri.clone()),
            ("client_id", flow.client_id.clone()),
            ("code_verifier", flow.pkce.verifier.clone()),
        ];
        tokio::spawn(async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            endpoint.token(&form).await.status()
        })
    });
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::BAD_REQUEST)
            .count(),
        7,
        "{statuses:?}"
    );
    // The other seven presented a used code: the grant its first use made is revoked.
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM grants WHERE revoked_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM security_events WHERE kind = 'code_reuse'"
        )
        .await,
        7
    );
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM security_events WHERE kind = 'token_issued'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn d8_resource_on_the_token_request() {
    let (server, mut flow) = setup().await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    let foreign = flow
        .exchange_with(&server, &code, &[("resource", "https://other.example/mcp")])
        .await;
    assert_oauth_error(foreign, StatusCode::BAD_REQUEST, "invalid_target").await;

    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    let slash = format!("{}/", server.resource());
    let ok = flow
        .exchange_with(&server, &code, &[("resource", &slash)])
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.unwrap();
    let claims = decode_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], server.resource());
}

pub fn decode_claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&oauth::crypto::b64_decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn d9_scope_can_only_narrow() {
    let (server, mut flow) = setup().await;
    let code = flow.code(&server, "mcp:read mcp:trade", "mcp:trade").await;
    let narrowed = flow
        .exchange_with(&server, &code, &[("scope", "mcp:read")])
        .await;
    let body: Value = narrowed.json().await.unwrap();
    assert_eq!(body["scope"], "mcp:read");
    assert_eq!(
        decode_claims(body["access_token"].as_str().unwrap())["scope"],
        "mcp:read"
    );

    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    let widened = flow
        .exchange_with(&server, &code, &[("scope", "mcp:read mcp:trade")])
        .await;
    assert_oauth_error(widened, StatusCode::BAD_REQUEST, "invalid_scope").await;
}

#[tokio::test]
async fn d10_grant_type_duplicates_unknown_client() {
    let (server, flow) = setup().await;
    let unsupported = server
        .token(&[("grant_type", "password"), ("client_id", &flow.client_id)])
        .await;
    assert_oauth_error(
        unsupported,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    )
    .await;
    let duplicated = server
        .http
        .post(server.url("/v1/oauth/mcp/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=authorization_code&code=a&code=b&client_id={}",
            flow.client_id
        ))
        .send()
        .await
        .unwrap();
    assert_oauth_error(duplicated, StatusCode::BAD_REQUEST, "invalid_request").await;
    let unknown = server
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "ctc_nope"),
            ("code", "x"),
            ("redirect_uri", "x"),
            ("code_verifier", "x"),
        ])
        .await;
    assert_oauth_error(unknown, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let no_client = server
        .token(&[("grant_type", "authorization_code"), ("code", "x")])
        .await;
    assert_oauth_error(no_client, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn e1_e2_rotation_and_replay_revokes_the_family() {
    let (server, mut flow) = setup().await;
    let first = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let at1 = first["access_token"].as_str().unwrap().to_owned();

    let second: Value = flow.refresh(&server, &rt1).await.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2, "rotated");
    assert_eq!(second["scope"], "mcp:read");
    assert!(
        server
            .state
            .verify_access_token(second["access_token"].as_str().unwrap())
            .await
            .is_ok()
    );

    // The successor is used; then the old token comes back: the whole grant dies.
    let third: Value = flow.refresh(&server, &rt2).await.json().await.unwrap();
    let rt3 = third["refresh_token"].as_str().unwrap().to_owned();
    assert_oauth_error(
        flow.refresh(&server, &rt1).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_oauth_error(
        flow.refresh(&server, &rt3).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        server.state.verify_access_token(&at1).await,
        Err(oauth::AccessError::Revoked)
    );
    assert_eq!(
        server
            .state
            .verify_access_token(third["access_token"].as_str().unwrap())
            .await,
        Err(oauth::AccessError::Revoked)
    );
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM security_events WHERE kind = 'refresh_replay'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn e3_grace_window_returns_the_same_successor() {
    let (server, mut flow) = setup().await;
    let first = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let a: Value = flow.refresh(&server, &rt1).await.json().await.unwrap();
    server.clock.advance(chrono::TimeDelta::seconds(59));
    let b: Value = flow.refresh(&server, &rt1).await.json().await.unwrap();
    assert_eq!(
        a["refresh_token"], b["refresh_token"],
        "same successor within the window"
    );
    assert!(
        server
            .state
            .verify_access_token(b["access_token"].as_str().unwrap())
            .await
            .is_ok()
    );

    // After the window: replay.
    server.clock.advance(chrono::TimeDelta::seconds(2));
    assert_oauth_error(
        flow.refresh(&server, &rt1).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_oauth_error(
        flow.refresh(&server, a["refresh_token"].as_str().unwrap())
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e4_concurrent_refreshes_end_on_one_live_pair() {
    let (server, mut flow) = setup().await;
    let first = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let attempts = (0..8).map(|_| {
        let endpoint = server.endpoint.clone();
        let (rt, client_id) = (rt1.clone(), flow.client_id.clone());
        tokio::spawn(async move {
            endpoint
                .token(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", &client_id),
                ])
                .await
        })
    });
    let mut successors = Vec::new();
    for response in futures_util::future::join_all(attempts).await {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        successors.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    successors.dedup();
    assert_eq!(successors.len(), 1, "one successor for all: {successors:?}");
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NULL"
        )
        .await,
        1,
        "never two live branches"
    );
    // Every answered refresh is recorded, the first rotation and the seven in its grace window.
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM security_events WHERE kind = 'token_refreshed'"
        )
        .await,
        8
    );
    assert_eq!(
        flow.refresh(&server, &successors[0]).await.status(),
        StatusCode::OK
    );
}

/// A revocation that commits while a refresh of its grant is in flight: the refresh hands out
/// nothing, where it could otherwise answer with a fresh pair for an ended grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_racing_a_revocation_hands_out_nothing() {
    let (server, mut flow) = setup().await;
    let first = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let rt = first["refresh_token"].as_str().unwrap().to_owned();
    let grant = only_grant(&server).await;
    let pool = server.db.pool().await;
    // The revoker holds the grant's row while the refresh runs into it.
    let mut revoker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM grants WHERE grant_id = $1 FOR UPDATE")
        .bind(grant)
        .execute(&mut *revoker)
        .await
        .unwrap();
    let refresh = {
        let endpoint = server.endpoint.clone();
        let client_id = flow.client_id.clone();
        tokio::spawn(async move {
            endpoint
                .token(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", &client_id),
                ])
                .await
        })
    };
    let mut waited = 0;
    while count(
        &server,
        "SELECT count(*) FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND wait_event IN ('transactionid', 'tuple')
           AND datname = current_database()",
    )
    .await
        == 0
    {
        waited += 1;
        assert!(waited < 500, "the refresh never waited for the grant's row");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sqlx::query(
        "UPDATE grants SET revoked_at = now(), revoked_reason = 'revoked by its user'
         WHERE grant_id = $1",
    )
    .bind(grant)
    .execute(&mut *revoker)
    .await
    .unwrap();
    revoker.commit().await.unwrap();
    assert_oauth_error(
        refresh.await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        count(&server, "SELECT count(*) FROM refresh_tokens").await,
        1,
        "no successor"
    );
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM security_events WHERE kind = 'token_refreshed'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn e5_refresh_token_bound_to_client_and_scope() {
    let (server, mut flow) = setup().await;
    let first = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let rt = first["refresh_token"].as_str().unwrap().to_owned();
    let other = server.client("http://127.0.0.1:9999/other").await;
    let stolen = server
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", &other),
        ])
        .await;
    assert_oauth_error(stolen, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let wider = server
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", &flow.client_id),
            ("scope", "mcp:trade"),
        ])
        .await;
    assert_oauth_error(wider, StatusCode::BAD_REQUEST, "invalid_scope").await;
    let foreign = server
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", &flow.client_id),
            ("resource", "https://other.example/"),
        ])
        .await;
    assert_oauth_error(foreign, StatusCode::BAD_REQUEST, "invalid_target").await;
    // None of that harmed the legitimate holder.
    assert_eq!(flow.refresh(&server, &rt).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn e6_idle_and_absolute_lifetimes_and_user_revocation() {
    let (server, mut flow) = setup().await;
    let first = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let rt = first["refresh_token"].as_str().unwrap().to_owned();
    server.clock.advance(chrono::TimeDelta::days(15));
    assert_oauth_error(
        flow.refresh(&server, &rt).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    // A rolling window (product doc 003): used every 10 days, a refresh chain outlives any
    // 30-day mark, and the connector never has to ask for consent again.
    let mut flow = Flow::new(&server, "t@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let mut rt = tokens["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..6 {
        server.clock.advance(chrono::TimeDelta::days(10));
        let refreshed = flow.refresh(&server, &rt).await;
        assert_eq!(
            refreshed.status(),
            StatusCode::OK,
            "a chain in use stays alive"
        );
        let body: Value = refreshed.json().await.unwrap();
        rt = body["refresh_token"].as_str().unwrap().to_owned();
    }

    // Revoked from the AI Clients page.
    let mut flow = Flow::new(&server, "t@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let user_id = server
        .state
        .verify_access_token(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap()
        .user_id;
    let grants = oauth::grants::list_grants(&server.state, user_id)
        .await
        .unwrap();
    let grant = grants
        .iter()
        .find(|g| g.client_id == flow.client_id)
        .unwrap();
    assert_eq!(grant.client_name.as_deref(), Some("Test Client"));
    assert!(
        oauth::grants::revoke_user_grant(&server.state, user_id, grant.grant_id)
            .await
            .unwrap()
    );
    assert_oauth_error(
        flow.refresh(&server, tokens["refresh_token"].as_str().unwrap())
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert!(
        oauth::grants::list_grants(&server.state, user_id)
            .await
            .unwrap()
            .iter()
            .all(|g| g.grant_id != grant.grant_id)
    );
}

#[tokio::test]
async fn h5_token_endpoint_is_rate_limited_with_retry_after() {
    let server = Server::start_with(|s| s.token_requests_per_minute = 3).await;
    let client_id = server.client("https://a.example/cb").await;
    for _ in 0..3 {
        let r = server
            .token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_id", &client_id),
            ])
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    let limited = server
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", &client_id),
        ])
        .await;
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_oauth_error(limited, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
}

#[tokio::test]
async fn a_client_assertion_names_the_client_when_client_id_is_left_out() {
    let (server, mut flow) = setup().await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    // As ChatGPT sends it (RFC 7523): the assertion is not verified — every client is public
    // here — but its `sub` says whose code this is.
    let claims = oauth::crypto::b64(
        serde_json::json!({ "iss": flow.client_id, "sub": flow.client_id })
            .to_string()
            .as_bytes(),
    );
    let assertion = format!("eyJhbGciOiJSUzI1NiJ9.{claims}.c2lnbmF0dXJl");
    let response = flow
        .exchange_with(
            &server,
            &code,
            &[
                ("client_id", ""),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // Naming another client gets nothing: the code is bound to its own.
    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    let other = server.client("https://other.example/cb").await;
    let claims = oauth::crypto::b64(serde_json::json!({ "sub": other }).to_string().as_bytes());
    let response = flow
        .exchange_with(
            &server,
            &code,
            &[
                ("client_id", ""),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &format!("e30.{claims}.c2ln")),
            ],
        )
        .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

#[tokio::test]
async fn expired_refresh_tokens_are_cleaned_up_and_stay_refused() {
    let (server, mut flow) = setup().await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        count(&server, "SELECT count(*) FROM refresh_tokens").await,
        1
    );
    server.clock.advance(chrono::TimeDelta::days(32));
    oauth::maintenance::reap(&server.state).await.unwrap();
    assert_eq!(
        count(&server, "SELECT count(*) FROM refresh_tokens").await,
        0
    );
    assert_oauth_error(
        flow.refresh(&server, &refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

async fn refresh_with(server: &Server, flow: &Flow, rt: &str, extra: &[(&str, &str)]) -> Value {
    let mut params = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("client_id", flow.client_id.as_str()),
    ];
    params.extend_from_slice(extra);
    let response = server.token(&params).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn only_grant(server: &Server) -> uuid::Uuid {
    sqlx::query_scalar("SELECT grant_id FROM grants")
        .fetch_one(&server.db.pool().await)
        .await
        .unwrap()
}

/// RFC 6749 §6: a refresh may narrow the scope, never widen it.
#[tokio::test]
async fn a_refresh_narrows_when_asked_and_never_widens() {
    let (server, mut flow) = setup().await;
    let tokens = flow
        .tokens(&server, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    let narrowed = refresh_with(&server, &flow, rt, &[("scope", "mcp:read")]).await;
    assert_eq!(narrowed["scope"], "mcp:read");
    assert_eq!(
        decode_claims(narrowed["access_token"].as_str().unwrap())["scope"],
        "mcp:read"
    );
    // The grant keeps its scope: the next refresh without a scope is trade again.
    let again = refresh_with(
        &server,
        &flow,
        narrowed["refresh_token"].as_str().unwrap(),
        &[],
    )
    .await;
    assert_eq!(again["scope"], "mcp:read mcp:trade");

    let mut flow = Flow::new(&server, "t@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let wider = server
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &flow.client_id),
            ("scope", "mcp:read mcp:trade"),
        ])
        .await;
    let body = assert_oauth_error(wider, StatusCode::BAD_REQUEST, "invalid_scope").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("mcp:trade"),
        "{body}"
    );
}

/// After a call needed mcp:trade (the MCP 403), a refresh that does not name its scope is the
/// client trying to step up: the read grant ends and `invalid_grant` sends the client to
/// authorize again. One that names its scope, or comes after the window, refreshes as usual.
#[tokio::test]
async fn a_refresh_right_after_insufficient_scope_ends_the_read_grant() {
    let (server, mut flow) = setup().await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let grant = only_grant(&server).await;
    server.state.request_step_up(grant).await;

    // Naming the scope it holds: the client knowingly stays at read.
    let kept = refresh_with(
        &server,
        &flow,
        tokens["refresh_token"].as_str().unwrap(),
        &[("scope", "mcp:read")],
    )
    .await;
    assert_eq!(kept["scope"], "mcp:read");

    let stepping_up = flow
        .refresh(&server, kept["refresh_token"].as_str().unwrap())
        .await;
    let body = assert_oauth_error(stepping_up, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("authorize again with scope mcp:trade"),
        "{body}"
    );
    let revoked: Option<String> =
        sqlx::query_scalar("SELECT revoked_reason FROM grants WHERE grant_id = $1")
            .bind(grant)
            .fetch_one(&server.db.pool().await)
            .await
            .unwrap();
    assert!(revoked.is_some_and(|reason| reason.contains("step-up")));
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM security_events WHERE kind = 'step_up'"
        )
        .await,
        1
    );
    assert!(matches!(
        server
            .state
            .verify_access_token(kept["access_token"].as_str().unwrap())
            .await,
        Err(oauth::AccessError::Revoked)
    ));

    // After the window a refresh is a refresh.
    let mut flow = Flow::new(&server, "t@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let grant: uuid::Uuid = sqlx::query_scalar(
        "SELECT grant_id FROM grants WHERE revoked_at IS NULL AND client_id = $1",
    )
    .bind(&flow.client_id)
    .fetch_one(&server.db.pool().await)
    .await
    .unwrap();
    server.state.request_step_up(grant).await;
    server.clock.advance(chrono::TimeDelta::minutes(3));
    let later = refresh_with(
        &server,
        &flow,
        tokens["refresh_token"].as_str().unwrap(),
        &[],
    )
    .await;
    assert_eq!(later["scope"], "mcp:read");
}

/// With `refresh_token_secs` configured, every family ends that long after its consent, however
/// often it is used.
#[tokio::test]
async fn an_absolute_refresh_lifetime_is_opt_in_and_ends_a_chain_in_use() {
    let server = Server::start_with(|settings| {
        settings.refresh_token_lifetime = Some(std::time::Duration::from_secs(30 * 86400));
    })
    .await;
    server.user("t@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "t@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let mut rt = tokens["refresh_token"].as_str().unwrap().to_owned();
    // Used every 10 days it stays alive until the 30-day absolute end.
    for _ in 0..2 {
        server.clock.advance(chrono::TimeDelta::days(10));
        let body: Value = flow.refresh(&server, &rt).await.json().await.unwrap();
        rt = body["refresh_token"].as_str().unwrap().to_owned();
    }
    server.clock.advance(chrono::TimeDelta::days(11));
    assert_oauth_error(
        flow.refresh(&server, &rt).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}
