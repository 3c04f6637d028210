//! C1–C18: the authorization endpoint, sign-in and consent.

use reqwest::StatusCode;
use store::users::Tier;

use crate::support::{
    Browser, Flow, PASSWORD, Server, authorize_url, hidden, location, param, pkce, query,
};

const REDIRECT: &str = "http://127.0.0.1:45678/callback";

fn assert_page_headers(response: &reqwest::Response) {
    let h = response.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    assert!(
        h.get("access-control-allow-origin").is_none(),
        "no CORS on authorize (C16)"
    );
}

async fn error_page(server: &Server, url: &str) -> String {
    let response = server.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response.headers().get("location").is_none(),
        "never redirected"
    );
    assert_page_headers(&response);
    response.text().await.unwrap()
}

#[tokio::test]
async fn c1_c2_c4_unsafe_errors_are_pages_never_redirects() {
    let server = Server::start().await;
    let client_id = server
        .client("https://claude.ai/api/mcp/auth_callback")
        .await;
    let challenge = pkce().challenge;

    let unknown = error_page(
        &server,
        &authorize_url(&server, "ctc_unknown", REDIRECT, &challenge, &[]),
    )
    .await;
    assert!(unknown.contains("not registered"), "{unknown}");

    let no_redirect =
        authorize_url(&server, &client_id, "", &challenge, &[]).replace("redirect_uri=&", "");
    assert!(
        error_page(&server, &no_redirect)
            .await
            .contains("no redirect_uri")
    );

    for attempt in [
        "https://claude.ai/api/mcp/auth_callback/",
        "https://claude.ai/api/mcp/auth_callback?x=1",
        "https://claude.ai/api/mcp/auth_callback.evil.com",
        "https://claude.ai.evil.com/api/mcp/auth_callback",
        "https://claude.ai@evil.com/api/mcp/auth_callback",
        "https://CLAUDE.AI/api/mcp/auth_callback",
        "https://claude.ai:443/api/mcp/auth_callback",
        "https://claude.ai/api/mcp/x/../auth_callback",
        "http://claude.ai/api/mcp/auth_callback",
        "https://evil.example/cb",
    ] {
        let page = error_page(
            &server,
            &authorize_url(&server, &client_id, attempt, &challenge, &[]),
        )
        .await;
        assert!(
            page.contains("not registered for this application"),
            "{attempt}: {page}"
        );
    }
}

#[tokio::test]
async fn c3_loopback_port_may_vary_nothing_else() {
    let server = Server::start().await;
    let client_id = server.client("http://127.0.0.1/cb").await;
    let challenge = pkce().challenge;
    let ok = server
        .http
        .get(authorize_url(
            &server,
            &client_id,
            "http://127.0.0.1:53123/cb",
            &challenge,
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "sign-in page");
    for bad in [
        "http://127.0.0.1:53123/other",
        "http://localhost:53123/cb",
        "https://127.0.0.1:53123/cb",
    ] {
        error_page(
            &server,
            &authorize_url(&server, &client_id, bad, &challenge, &[]),
        )
        .await;
    }
}

async fn redirect_error(server: &Server, url: &str, expected: &str) {
    let response = server.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{url}");
    let target = location(&response);
    assert!(target.as_str().starts_with(REDIRECT), "{target}");
    assert_eq!(
        param(&target, "error").as_deref(),
        Some(expected),
        "{target}"
    );
    assert_eq!(param(&target, "state").as_deref(), Some("st-123"));
    let iss: Vec<_> = query(&target)
        .into_iter()
        .filter(|(k, _)| k == "iss")
        .collect();
    assert_eq!(
        iss,
        vec![("iss".to_owned(), server.base.clone())],
        "exactly one iss (C10)"
    );
}

#[tokio::test]
async fn c5_to_c9_protocol_errors_redirect_with_state_and_iss() {
    let server = Server::start().await;
    let client_id = server.client(REDIRECT).await;
    let good = pkce().challenge;
    let base = authorize_url(&server, &client_id, REDIRECT, &good, &[]);
    // C5: no code_challenge.
    redirect_error(
        &server,
        &base.replace(&format!("code_challenge={good}&"), ""),
        "invalid_request",
    )
    .await;
    // C6: plain, or method omitted.
    redirect_error(
        &server,
        &base.replace("code_challenge_method=S256", "code_challenge_method=plain"),
        "invalid_request",
    )
    .await;
    redirect_error(
        &server,
        &base.replace("&code_challenge_method=S256", ""),
        "invalid_request",
    )
    .await;
    // C7: not 43 base64url characters.
    redirect_error(&server, &base.replace(&good, "short"), "invalid_request").await;
    redirect_error(
        &server,
        &base.replace(&good, &format!("{}+", &good[..42])),
        "invalid_request",
    )
    .await;
    // C8.
    redirect_error(
        &server,
        &base.replace("response_type=code", "response_type=token"),
        "unsupported_response_type",
    )
    .await;
    redirect_error(
        &server,
        &format!("{base}&scope=mcp%3Aadmin"),
        "invalid_scope",
    )
    .await;
    // C9: foreign, fragment, relative resource.
    for resource in [
        "https://other.example/v1/api/mcp",
        "v1/api/mcp",
        &format!("{}#x", server.resource()),
    ] {
        let url = authorize_url(
            &server,
            &client_id,
            REDIRECT,
            &good,
            &[("resource", resource)],
        );
        redirect_error(&server, &url, "invalid_target").await;
    }
    // Repeated parameters.
    redirect_error(
        &server,
        &format!("{base}&code_challenge_method=S256"),
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn c9_resource_trailing_slash_and_omission_are_accepted() {
    let server = Server::start().await;
    let client_id = server.client(REDIRECT).await;
    let challenge = pkce().challenge;
    for extra in [
        vec![],
        vec![("resource", server.resource())],
        vec![("resource", format!("{}/", server.resource()))],
    ] {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = server
            .http
            .get(authorize_url(
                &server, &client_id, REDIRECT, &challenge, &extra,
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn c10_c11_c13_c14_c15_consent_and_success_redirect() {
    let server = Server::start().await;
    server.user("trader@example.com", Tier::Elite).await;
    let client_id = server.client(REDIRECT).await;
    let challenge = pkce().challenge;
    let url = authorize_url(
        &server,
        &client_id,
        REDIRECT,
        &challenge,
        &[("scope", "mcp:read mcp:trade")],
    );

    let mut browser = Browser::default();
    let sign_in_page = browser.get(&server, &url).await;
    assert_eq!(sign_in_page.status(), StatusCode::OK);
    assert_page_headers(&sign_in_page);
    let html = sign_in_page.text().await.unwrap();
    assert!(
        !html.contains("<script"),
        "no scripts, no third-party resources"
    );
    assert!(
        !html.contains("https://"),
        "no third-party resources: {html}"
    );

    let signed_in = browser
        .sign_in(&server, &url, "trader@example.com", PASSWORD)
        .await;
    assert_eq!(
        signed_in.status(),
        StatusCode::SEE_OTHER,
        "303 after POST (C15)"
    );
    let session_cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("ct_session="))
        .unwrap();
    assert!(
        session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"),
        "{session_cookie}"
    );
    assert!(
        !session_cookie.contains("Secure"),
        "http issuer: no Secure flag"
    );

    // C11: an explicit page with name (self-asserted), redirect host, account, scopes.
    let consent = browser.get(&server, &url).await;
    assert_eq!(consent.status(), StatusCode::OK);
    assert_page_headers(&consent);
    let html = consent.text().await.unwrap();
    assert!(
        html.contains("Test Client") && html.contains("provided by the application itself"),
        "{html}"
    );
    assert!(html.contains("127.0.0.1") && html.contains("an application on this computer"));
    assert!(html.contains("trader@example.com"));
    // The application asked for trade: trade is preselected, read still offered.
    assert!(
        html.contains(r#"value="mcp:trade" checked"#),
        "the requested permission preselected: {html}"
    );
    assert!(
        html.contains(r#"value="mcp:read">"#),
        "read offered, not preselected: {html}"
    );
    assert!(
        html.contains(r#"class="choice trade""#),
        "trade offered and marked"
    );

    let transaction = hidden(&html, "transaction");
    let csrf = hidden(&html, "csrf");
    let allowed = browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &transaction),
                ("csrf", &csrf),
                ("decision", "allow"),
                ("scope", "mcp:trade"),
            ],
        )
        .await;
    assert_eq!(allowed.status(), StatusCode::SEE_OTHER);
    let target = location(&allowed);
    assert!(target.as_str().starts_with(REDIRECT));
    let pairs = query(&target);
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["code", "state", "iss"]);
    assert_eq!(param(&target, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&target, "iss").as_deref(), Some(server.base.as_str()));

    // The transaction is single-use.
    let again = browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &transaction),
                ("csrf", &csrf),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn c12_consent_csrf_is_bound_to_session_and_transaction() {
    let server = Server::start().await;
    server.user("a@example.com", Tier::Elite).await;
    server.user("b@example.com", Tier::Elite).await;
    let mut alice = Flow::new(&server, "a@example.com").await;
    let mut bob = Flow::new(&server, "b@example.com").await;
    let (alice_tx, alice_csrf, _) = alice.consent_page(&server, "mcp:read").await;
    let (bob_tx, bob_csrf, _) = bob.consent_page(&server, "mcp:read").await;

    let attempts: Vec<(&mut Browser, &str, &str)> = vec![];
    drop(attempts);
    // Missing CSRF token.
    let r = alice
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[("transaction", &alice_tx), ("decision", "allow")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("location").is_none());
    // Bob's token on Alice's transaction, in Bob's browser (another session).
    let r = bob
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &alice_tx),
                ("csrf", &alice_csrf),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Bob's CSRF token on Bob's transaction but without a session cookie.
    let r = server
        .form(
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &bob_tx),
                ("csrf", &bob_csrf),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Alice's transaction with Bob's CSRF token (minted for another transaction).
    let (alice_tx2, _, _) = alice.consent_page(&server, "mcp:read").await;
    let r = alice
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &alice_tx2),
                ("csrf", &bob_csrf),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let html = r.text().await.unwrap();
    assert!(html.contains("Request expired"), "{html}");
    assert_eq!(
        crate::support::count(&server, "SELECT count(*) FROM authorization_codes").await,
        0,
        "no code issued"
    );

    // Expired transactions are refused.
    let (tx3, csrf3, _) = alice.consent_page(&server, "mcp:read").await;
    server.clock.advance(chrono::TimeDelta::minutes(11));
    let r = alice
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &tx3),
                ("csrf", &csrf3),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn c17_no_remembered_consent_and_read_only_requests_never_offer_trade() {
    let server = Server::start().await;
    server.user("t@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "t@example.com").await;
    let (_, _, first) = flow.consent_page(&server, "mcp:read").await;
    assert!(
        first.contains("First time") && !first.contains("Authorized before"),
        "{first}"
    );
    flow.tokens(&server, "mcp:read", "mcp:read").await;
    // A second authorization shows the screen again (never auto-approved), saying it was
    // authorized before …
    let (_, _, html) = flow.consent_page(&server, "mcp:read").await;
    assert!(
        html.contains("Authorized before") && !html.contains("First time"),
        "{html}"
    );
    assert!(
        !html.contains("mcp:trade\">"),
        "read-only request offers no trade choice"
    );
    assert!(
        html.contains(r#"value="mcp:read" checked"#),
        "read requested: read preselected"
    );
    // … and asking for trade after a read grant asks again with trade offered.
    let (_, _, html) = flow.consent_page(&server, "mcp:read mcp:trade").await;
    assert!(html.contains(r#"value="mcp:trade""#));
    // Choosing a scope wider than requested is refused.
    let (tx, csrf, _) = flow.consent_page(&server, "mcp:read").await;
    let r = flow
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &tx),
                ("csrf", &csrf),
                ("decision", "allow"),
                ("scope", "mcp:trade"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn c18_deny_redirects_access_denied() {
    let server = Server::start().await;
    server.user("d@example.com", Tier::Pro).await;
    let mut flow = Flow::new(&server, "d@example.com").await;
    let (tx, csrf, _) = flow.consent_page(&server, "mcp:read").await;
    let r = flow
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[("transaction", &tx), ("csrf", &csrf), ("decision", "deny")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let target = location(&r);
    assert_eq!(param(&target, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&target, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&target, "iss").as_deref(), Some(server.base.as_str()));
    assert!(param(&target, "code").is_none());
    assert_eq!(
        crate::support::count(
            &server,
            "SELECT count(*) FROM security_events WHERE kind = 'consent_denied'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn sign_in_failures_are_generic_and_throttled() {
    let server = Server::start().await;
    server.user("s@example.com", Tier::Elite).await;
    let client_id = server.client(REDIRECT).await;
    let url = authorize_url(&server, &client_id, REDIRECT, &pkce().challenge, &[]);
    let mut browser = Browser::default();
    let wrong = browser
        .sign_in(&server, &url, "s@example.com", "wrong password!")
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let wrong_html = wrong.text().await.unwrap();
    let unknown = browser
        .sign_in(&server, &url, "nobody@example.com", "wrong password!")
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let unknown_html = unknown.text().await.unwrap();
    assert!(wrong_html.contains("The email or password is incorrect."));
    assert!(unknown_html.contains("The email or password is incorrect."));

    // Login CSRF: a form without the cookie's value is refused.
    let forged = server
        .form(
            "/v1/oauth/mcp/sign-in",
            &[
                ("email", "s@example.com"),
                ("password", PASSWORD),
                ("csrf", "x"),
                ("return_to", ""),
            ],
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    // Five failures per account in 15 minutes, then even the right password waits.
    for _ in 0..4 {
        browser
            .sign_in(&server, &url, "s@example.com", "wrong password!")
            .await;
    }
    let throttled = browser
        .sign_in(&server, &url, "s@example.com", PASSWORD)
        .await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()["retry-after"], "900");
    server.clock.advance(chrono::TimeDelta::minutes(16));
    let ok = browser
        .sign_in(&server, &url, "s@example.com", PASSWORD)
        .await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
}

/// "Not you? Use another account": the consent screen ends this browser's session and the same
/// authorization starts again at the sign-in page, where another account can consent.
#[tokio::test]
async fn not_you_ends_the_session_and_returns_to_the_same_authorization() {
    let server = Server::start().await;
    server.user("first@example.com", Tier::Elite).await;
    server.user("second@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "first@example.com").await;
    let (transaction, csrf, html) = flow.consent_page(&server, "mcp:read mcp:trade").await;
    assert!(html.contains("Not first@example.com?"), "{html}");
    assert!(html.contains(r#"value="switch_account""#), "{html}");

    let switched = flow
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &transaction),
                ("csrf", &csrf),
                ("decision", "switch_account"),
            ],
        )
        .await;
    assert_eq!(switched.status(), StatusCode::SEE_OTHER);
    let cleared = switched
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("ct_session="))
        .expect("the session cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let again = location(&switched);
    assert_eq!(again.path(), "/v1/oauth/mcp/authorize", "{again}");
    assert_eq!(param(&again, "client_id"), Some(flow.client_id.clone()));
    assert_eq!(
        param(&again, "redirect_uri"),
        Some(flow.redirect_uri.clone())
    );
    assert_eq!(
        param(&again, "code_challenge"),
        Some(flow.pkce.challenge.clone())
    );
    assert_eq!(
        param(&again, "scope").as_deref(),
        Some("mcp:read mcp:trade")
    );
    let again = format!("{}?{}", again.path(), again.query().unwrap());
    assert_eq!(
        crate::support::count(&server, "SELECT count(*) FROM browser_sessions").await,
        0,
        "the session ended on the server too"
    );
    // The consent screen's transaction is spent.
    let replay = flow
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &transaction),
                ("csrf", &csrf),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(replay.status(), StatusCode::FORBIDDEN);

    // The same authorization, now as the other account.
    let url = server.url(&again);
    let mut browser = Browser::default();
    let sign_in = browser.get(&server, &url).await;
    assert!(
        sign_in
            .text()
            .await
            .unwrap()
            .contains("Sign in to continue")
    );
    let signed_in = browser
        .sign_in(&server, &url, "second@example.com", PASSWORD)
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let consent = browser.get(&server, &url).await.text().await.unwrap();
    assert!(consent.contains("second@example.com"), "{consent}");
    assert!(
        consent.contains(r#"value="mcp:trade" checked"#),
        "{consent}"
    );
}

/// A "Not you?" without this browser's consent screen (wrong CSRF) ends nothing.
#[tokio::test]
async fn not_you_needs_the_consent_screens_csrf() {
    let server = Server::start().await;
    server.user("first@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "first@example.com").await;
    let (transaction, _, _) = flow.consent_page(&server, "mcp:read").await;
    let forged = flow
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &transaction),
                ("csrf", "forged"),
                ("decision", "switch_account"),
            ],
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        crate::support::count(&server, "SELECT count(*) FROM browser_sessions").await,
        1
    );
}

/// A sign-in page that names an account (after a failed attempt) offers to start over with
/// another one: the same authorization, the form empty.
#[tokio::test]
async fn the_sign_in_page_offers_another_account_once_it_names_one() {
    let server = Server::start().await;
    server.user("first@example.com", Tier::Elite).await;
    let client_id = server.client(REDIRECT).await;
    let challenge = pkce().challenge;
    let url = authorize_url(
        &server,
        &client_id,
        REDIRECT,
        &challenge,
        &[("scope", "mcp:read")],
    );
    let mut browser = Browser::default();
    let blank = browser.get(&server, &url).await.text().await.unwrap();
    assert!(!blank.contains("Use another account"), "{blank}");
    let failed = browser
        .sign_in(&server, &url, "first@example.com", "not the password")
        .await;
    let html = failed.text().await.unwrap();
    assert!(html.contains("Not first@example.com?"), "{html}");
    let query = url.split_once('?').unwrap().1.replace('&', "&#38;");
    assert!(
        html.contains(&format!(r#"href="/v1/oauth/mcp/authorize?{query}""#)),
        "{html}"
    );
}
