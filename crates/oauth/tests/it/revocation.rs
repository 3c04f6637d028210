//! F1–F5: RFC 7009 revocation.

use reqwest::StatusCode;
use store::users::Tier;

use crate::support::{Flow, Server, assert_oauth_error};

async fn revoke(server: &Server, params: &[(&str, &str)]) -> reqwest::Response {
    server.form("/v1/oauth/mcp/revoke", params).await
}

async fn assert_ok_empty(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.text().await.unwrap(), "");
}

#[tokio::test]
async fn f1_f2_revoking_either_token_ends_the_grant_at_once() {
    let server = Server::start().await;
    server.user("r@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "r@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_ok_empty(
        revoke(
            &server,
            &[("token", access), ("client_id", &flow.client_id)],
        )
        .await,
    )
    .await;
    assert_eq!(
        server.state.verify_access_token(access).await,
        Err(oauth::AccessError::Revoked)
    );
    assert_oauth_error(
        flow.refresh(&server, tokens["refresh_token"].as_str().unwrap())
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_ok_empty(
        revoke(
            &server,
            &[
                ("token", refresh),
                ("token_type_hint", "refresh_token"),
                ("client_id", &flow.client_id),
            ],
        )
        .await,
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
}

#[tokio::test]
async fn f3_unknown_tokens_get_the_same_200() {
    let server = Server::start().await;
    let client_id = server.client("https://a.example/cb").await;
    for token in [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.e30.",
        &"x".repeat(43),
    ] {
        assert_ok_empty(revoke(&server, &[("token", token), ("client_id", &client_id)]).await)
            .await;
    }
    assert_oauth_error(
        revoke(&server, &[("client_id", &client_id)]).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert_oauth_error(
        revoke(&server, &[("token", "x"), ("client_id", "ctc_unknown")]).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
}

#[tokio::test]
async fn f4_another_client_cannot_revoke() {
    let server = Server::start().await;
    server.user("r@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "r@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let other = server.client("https://other.example/cb").await;
    for token in [
        tokens["access_token"].as_str().unwrap(),
        tokens["refresh_token"].as_str().unwrap(),
    ] {
        assert_ok_empty(revoke(&server, &[("token", token), ("client_id", &other)]).await).await;
    }
    assert!(
        server
            .state
            .verify_access_token(tokens["access_token"].as_str().unwrap())
            .await
            .is_ok(),
        "token still works"
    );
    assert_eq!(
        flow.refresh(&server, tokens["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn f5_hints() {
    let server = Server::start().await;
    server.user("r@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "r@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let access = tokens["access_token"].as_str().unwrap();
    let unsupported = revoke(
        &server,
        &[
            ("token", access),
            ("token_type_hint", "id_token"),
            ("client_id", &flow.client_id),
        ],
    )
    .await;
    assert_oauth_error(
        unsupported,
        StatusCode::BAD_REQUEST,
        "unsupported_token_type",
    )
    .await;
    // A wrong hint still revokes.
    assert_ok_empty(
        revoke(
            &server,
            &[
                ("token", access),
                ("token_type_hint", "refresh_token"),
                ("client_id", &flow.client_id),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(
        server.state.verify_access_token(access).await,
        Err(oauth::AccessError::Revoked)
    );
}
