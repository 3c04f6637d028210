//! Trust boundaries at the token endpoint and around incident response: what an unauthenticated
//! caller can do to other users of the same client, and phases a revocation must not miss.

use std::net::{IpAddr, Ipv4Addr};

use reqwest::StatusCode;
use serde_json::Value;
use store::users::Tier;

use crate::support::{Endpoint, Flow, Server, assert_oauth_error};

/// The same server seen from another loopback source address (Linux routes all of 127/8 to
/// the loopback interface, so each address is a distinct client IP to the server).
fn from_address(server: &Server, last_octet: u8) -> Endpoint {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    Endpoint {
        base: server.base.clone(),
        http,
    }
}

/// 154 bogus refreshes naming one registered client id, from 11 addresses each under its own
/// limit, must not cost the client's real users anything: a refresh and a code exchange from a
/// twelfth address both succeed.
#[tokio::test]
async fn junk_naming_a_client_id_does_not_spend_its_users_budget() {
    let server = Server::start_with(|s| {
        s.token_requests_per_minute = 120;
        s.token_requests_per_grant_per_minute = 30;
    })
    .await;
    server.user("victim@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "victim@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;

    let mut attacks = Vec::new();
    for octet in 2..=12 {
        let attacker = from_address(&server, octet);
        let client_id = flow.client_id.clone();
        attacks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..14 {
                let response = attacker
                    .token(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &format!("bogus-{octet}-{i}")),
                        ("client_id", &client_id),
                    ])
                    .await;
                statuses.push(response.status());
            }
            statuses
        }));
    }
    let mut sent = 0;
    for attack in attacks {
        for status in attack.await.unwrap() {
            // Each address stays under its own limit: every junk request is simply refused.
            assert_eq!(status, StatusCode::BAD_REQUEST);
            sent += 1;
        }
    }
    assert_eq!(sent, 154);

    let user = from_address(&server, 13);
    let refreshed = flow
        .refresh(&user, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let exchanged = flow.exchange(&user, &code).await;
    assert_eq!(exchanged.status(), StatusCode::OK);
}

/// The per-grant budget is spent only by requests that proved possession, and only the
/// grant's own: another grant of the same client keeps refreshing.
#[tokio::test]
async fn the_grant_budget_is_charged_to_the_grant_that_proved_possession() {
    let server = Server::start_with(|s| s.token_requests_per_grant_per_minute = 2).await;
    server.user("a@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "a@example.com").await;
    let first: Value = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let second: Value = flow.tokens(&server, "mcp:read", "mcp:read").await;

    let mut token = first["refresh_token"].as_str().unwrap().to_owned();
    let response = flow.refresh(&server, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    token = response.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Junk naming the same client costs this grant nothing.
    for i in 0..5 {
        let junk = flow.refresh(&server, &format!("junk-{i}")).await;
        assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
    }
    let response = flow.refresh(&server, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    token = response.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The third proven refresh within the minute is over this grant's budget; nothing rotated,
    // so the same token still works once the budget allows.
    let limited = flow.refresh(&server, &token).await;
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_oauth_error(limited, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    let unrotated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE token_hash = sha256($1::bytea) AND rotated_at IS NULL",
    )
    .bind(token.as_bytes())
    .fetch_one(server.state.db())
    .await
    .unwrap();
    assert_eq!(unrotated, 1);
    // The other grant of the same client and user is untouched.
    let other = flow
        .refresh(&server, second["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(other.status(), StatusCode::OK);
}

/// A client id longer than any this server accepts is refused before it is looked up.
#[tokio::test]
async fn an_overlong_client_id_is_refused_before_any_work() {
    let server = Server::start().await;
    let long = format!("https://a.example/{}", "x".repeat(5000));
    for path in ["/v1/oauth/mcp/token", "/v1/oauth/mcp/revoke"] {
        let response = server
            .form(
                path,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "x"),
                    ("token", "x"),
                    ("client_id", &long),
                ],
            )
            .await;
        let body = assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
        assert!(!body.to_string().contains(&long[..100]), "{body}");
    }
}

/// `users revoke-all` (incident response) also burns the codes not yet exchanged: a code the
/// attacker holds cannot mint a new grant after it.
#[tokio::test]
async fn ending_everything_burns_codes_not_yet_exchanged() {
    let server = Server::start().await;
    let user_id = server.user("v@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "v@example.com").await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    let mut tx = server.state.db().begin().await.unwrap();
    oauth::grants::end_everything_for_user(&mut tx, user_id, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_oauth_error(
        flow.exchange(&server, &code).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert!(
        oauth::grants::list_grants(&server.state, user_id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A consent submitted after its browser session ended issues no code.
#[tokio::test]
async fn a_consent_after_the_session_ended_issues_no_code() {
    let server = Server::start().await;
    let user_id = server.user("s@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "s@example.com").await;
    let (transaction, csrf, _) = flow.consent_page(&server, "mcp:read").await;
    let mut tx = server.state.db().begin().await.unwrap();
    oauth::grants::end_everything_for_user(&mut tx, user_id, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let response = flow
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &transaction),
                ("csrf", &csrf),
                ("decision", "allow"),
                ("scope", "mcp:read"),
            ],
        )
        .await;
    assert_ne!(response.status(), StatusCode::SEE_OTHER);
    let codes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM authorization_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(server.state.db())
    .await
    .unwrap();
    assert_eq!(codes, 0);
}

/// The revocation endpoint verifies tokens and reads the database for anyone: it is limited
/// per address, and one address's limit leaves another's revocation working.
#[tokio::test]
async fn revocation_is_limited_per_address() {
    let server = Server::start_with(|s| s.token_requests_per_minute = 3).await;
    let attacker = from_address(&server, 20);
    for i in 0..3 {
        let response = attacker
            .form("/v1/oauth/mcp/revoke", &[("token", &format!("junk-{i}"))])
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let limited = attacker
        .form("/v1/oauth/mcp/revoke", &[("token", "junk")])
        .await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_oauth_error(limited, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    let other = from_address(&server, 21)
        .form("/v1/oauth/mcp/revoke", &[("token", "junk")])
        .await;
    assert_eq!(other.status(), StatusCode::OK);
}
