//! Inputs PostgreSQL cannot store (NUL) and malformed PKCE verifiers: each is a clean client
//! error, never a server error. Regressions found while fuzzing the forms.

use reqwest::StatusCode;
use store::users::Tier;

use crate::support::{
    Browser, Flow, PASSWORD, Reply, Server, assert_oauth_error, authorize_url, location, param,
    pkce,
};

const EMAIL: &str = "h@example.com";

async fn setup() -> (Server, Flow) {
    let server = Server::start().await;
    server.user(EMAIL, Tier::Elite).await;
    let flow = Flow::new(&server, EMAIL).await;
    (server, flow)
}

/// One form POST, in-process.
async fn form(server: &Server, path: &str, body: &str, basic: Option<&str>) -> Reply {
    let mut request = server
        .http
        .post(server.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if let Some(basic) = basic {
        request = request.header("authorization", format!("Basic {basic}"));
    }
    server.oneshot(request).await
}

#[tokio::test]
async fn nul_in_token_and_revocation_forms_is_a_client_error() {
    let server = Server::in_process().await;
    server.user(EMAIL, Tier::Elite).await;
    for path in ["/v1/oauth/mcp/token", "/v1/oauth/mcp/revoke"] {
        let nul_param = form(
            &server,
            path,
            "grant_type=refresh_token&refresh_token=x&token=x&client_id=%00",
            None,
        )
        .await;
        assert_oauth_error(nul_param, StatusCode::BAD_REQUEST, "invalid_request").await;
        // base64("a\0:b"): the client id of HTTP Basic bypasses the form.
        let nul_basic = form(
            &server,
            path,
            "grant_type=refresh_token&refresh_token=x&token=x",
            Some("YQA6Yg=="),
        )
        .await;
        assert_oauth_error(nul_basic, StatusCode::UNAUTHORIZED, "invalid_client").await;
    }
    // An RFC 7523 assertion whose `sub` holds a NUL names the client too.
    let assertion = format!("e30.{}.sig", oauth::crypto::b64(br#"{"sub":"ctc_\u0000"}"#));
    let nul_sub = form(
        &server,
        "/v1/oauth/mcp/token",
        &format!(
            "grant_type=authorization_code&code=c&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
        ),
        None,
    )
    .await;
    assert_oauth_error(nul_sub, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn nul_in_an_authorization_request_is_a_page_or_a_redirect() {
    let (server, mut flow) = setup().await;
    let challenge = pkce().challenge;
    let page = server
        .http
        .get(authorize_url(
            &server,
            "ctc_\0",
            &flow.redirect_uri,
            &challenge,
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(page.headers().get("location").is_none());

    // Signed in, with a matching redirect: the NUL state is refused by redirect, not stored.
    let url = authorize_url(
        &server,
        &flow.client_id,
        &flow.redirect_uri,
        &challenge,
        &[],
    )
    .replace("state=st-123", "state=%00");
    let response = flow.browser.get(&server, &url).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let target = location(&response);
    assert_eq!(param(&target, "error").as_deref(), Some("invalid_request"));
}

#[tokio::test]
async fn nul_in_a_sign_in_email_is_an_ordinary_failure() {
    let (server, _flow) = setup().await;
    let client_id = server.client("http://127.0.0.1:45678/callback").await;
    let url = authorize_url(
        &server,
        &client_id,
        "http://127.0.0.1:45678/callback",
        &pkce().challenge,
        &[],
    );
    let mut browser = Browser::default();
    let failed = browser
        .sign_in(&server, &url, "h\0@example.com", PASSWORD)
        .await;
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_code_verifiers_are_refused_and_burn_the_code() {
    let (server, mut flow) = setup().await;
    for verifier in ["short", &"a".repeat(129), &format!("{}+", "a".repeat(42))] {
        let code = flow.code(&server, "mcp:read", "mcp:read").await;
        let refused = flow
            .exchange_with(&server, &code, &[("code_verifier", verifier)])
            .await;
        let body = assert_oauth_error(refused, StatusCode::BAD_REQUEST, "invalid_grant").await;
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("RFC 7636"),
            "{body}"
        );
        assert_eq!(
            flow.exchange(&server, &code).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
}
