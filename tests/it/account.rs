//! The account pages and their JSON API through the real server: AI Clients (revoke is
//! immediate for the MCP endpoint and the token endpoint), Add-On keys, sign-out, CSRF, and
//! never an MCP token in place of the session.

use serde_json::Value;
use testkit::oauth::{Browser, Endpoint, Flow, PASSWORD, hidden, location};

use crate::support::{ServerProcess, run, server_with_user};

/// Signs a fresh browser in through /account/sign-in.
pub(crate) async fn account_browser(endpoint: &Endpoint, email: &str) -> Browser {
    let mut browser = Browser::default();
    let page = browser
        .get(
            endpoint,
            &endpoint.url("/account/sign-in?next=%2Faccount%2Fai-clients"),
        )
        .await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let signed_in = browser
        .post(
            endpoint,
            "/account/sign-in",
            &[
                ("email", email),
                ("password", PASSWORD),
                ("csrf", &hidden(&html, "csrf")),
                ("return_to", &hidden(&html, "return_to")),
            ],
        )
        .await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(location(&signed_in).path(), "/account/ai-clients");
    browser
}

async fn mcp_status(endpoint: &Endpoint, token: &str) -> u16 {
    endpoint
        .http
        .post(endpoint.resource())
        .bearer_auth(token)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
        .header("mcp-protocol-version", "2025-11-25")
        .header("accept", "application/json, text/event-stream")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn pages_need_a_session_and_send_the_page_headers() {
    let (_db, server, endpoint) = server_with_user("a@example.com").await;
    for path in ["/account", "/account/ai-clients", "/account/addon-keys"] {
        let response = endpoint.http.get(endpoint.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{path}");
        let target = location(&response);
        assert_eq!(target.path(), "/account/sign-in");
        assert_eq!(
            target.query_pairs().find(|(k, _)| k == "next").unwrap().1,
            path
        );
    }
    let mut browser = account_browser(&endpoint, "a@example.com").await;
    for path in ["/account", "/account/ai-clients", "/account/addon-keys"] {
        let response = browser.get(&endpoint, &endpoint.url(path)).await;
        assert_eq!(response.status(), 200, "{path}");
        let h = response.headers();
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert!(
            !h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("unsafe-inline")
        );
        assert_eq!(h["cache-control"], "no-store");
    }
    let overview = browser
        .get(&endpoint, &endpoint.url("/account"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        overview.contains("a@example.com")
            && overview.contains("elite")
            && overview.contains("v1.13.0 or newer")
    );
    assert!(overview.contains("Not connected"), "{overview}");
    let empty = browser
        .get(&endpoint, &endpoint.url("/account/ai-clients"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        empty.contains("No AI application is connected") && empty.contains("/v1/api/mcp"),
        "{empty}"
    );
    // An open redirect through `next` is refused.
    let page = browser
        .get(
            &endpoint,
            &endpoint.url("/account/sign-in?next=https%3A%2F%2Fevil.example%2F"),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(hidden(&page, "return_to"), "/account");
    assert!(server.terminate().success());
}

#[tokio::test]
async fn revoking_an_ai_client_is_immediate_everywhere() {
    let (_db, server, endpoint) = server_with_user("r@example.com").await;
    let mut flow = Flow::new(&endpoint, "r@example.com").await;
    let tokens = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(mcp_status(&endpoint, &access).await, 200);

    let mut browser = account_browser(&endpoint, "r@example.com").await;
    let html = browser
        .get(&endpoint, &endpoint.url("/account/ai-clients"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Test Client") && html.contains("Can trade") && html.contains("127.0.0.1"),
        "{html}"
    );
    assert!(
        html.contains("just now") && html.contains(" UTC\""),
        "relative time with the exact UTC time on hover"
    );

    // The JSON view, with its CSRF token.
    let listed = browser
        .get(&endpoint, &endpoint.url("/v1/account/ai-clients"))
        .await;
    assert_eq!(listed.status(), 200);
    let csrf = listed.headers()["x-csrf-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = listed.json().await.unwrap();
    let grant_id = body["clients"][0]["grant_id"].as_str().unwrap().to_owned();
    assert_eq!(body["clients"][0]["scope"], "mcp:trade");

    // An MCP token is never a substitute for the session.
    let with_token = endpoint
        .http
        .get(endpoint.url("/v1/account/ai-clients"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 401);
    assert_eq!(
        with_token.json::<Value>().await.unwrap()["error"],
        "unauthorized"
    );
    let cookies = browser.cookie_header();
    let delete = |csrf: Option<String>| {
        let mut request = endpoint
            .http
            .delete(endpoint.url(&format!("/v1/account/ai-clients/{grant_id}")))
            .header("cookie", cookies.clone());
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    let no_csrf = delete(None).await.unwrap();
    assert_eq!(no_csrf.status(), 403);
    assert_eq!(
        no_csrf.json::<Value>().await.unwrap()["error"],
        "csrf_failed"
    );
    assert_eq!(
        mcp_status(&endpoint, &access).await,
        200,
        "nothing revoked yet"
    );

    // The page path: a confirmation step, then the revoke.
    let confirm = browser
        .get(
            &endpoint,
            &endpoint.url(&format!("/account/ai-clients/{grant_id}/revoke")),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(
        confirm.contains("Revoke access for Test Client?"),
        "{confirm}"
    );
    let forged = browser
        .post(
            &endpoint,
            &format!("/account/ai-clients/{grant_id}/revoke"),
            &[("csrf", "forged")],
        )
        .await;
    assert_eq!(forged.status(), 403);
    let revoked = browser
        .post(
            &endpoint,
            &format!("/account/ai-clients/{grant_id}/revoke"),
            &[("csrf", &hidden(&confirm, "csrf"))],
        )
        .await;
    assert_eq!(revoked.status(), 303);
    assert_eq!(mcp_status(&endpoint, &access).await, 401);
    let refreshed = flow.refresh(&endpoint, &refresh).await;
    assert_eq!(refreshed.status(), 400);
    assert_eq!(
        refreshed.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let html = browser
        .get(&endpoint, &endpoint.url("/account/ai-clients"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains("Test Client"), "gone from the list");
    assert_eq!(
        delete(Some(csrf)).await.unwrap().status(),
        404,
        "already revoked"
    );
    assert!(server.terminate().success());
}

#[tokio::test]
async fn revoking_all_ai_clients_ends_every_grant_at_once() {
    let email = "all@example.com";
    let (_db, server, endpoint) = server_with_user(email).await;
    let mut flows = Vec::new();
    for name in ["Desk Assistant", "Night Trader"] {
        let mut flow = Flow::new_for(&endpoint, name, email, PASSWORD).await;
        let tokens = flow
            .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
            .await;
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(mcp_status(&endpoint, &access).await, 200);
        flows.push((flow, access, refresh));
    }
    let mut browser = account_browser(&endpoint, email).await;
    let list = browser
        .get(&endpoint, &endpoint.url("/account/ai-clients"))
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains(r#"href="/account/ai-clients/revoke-all">Revoke all AI clients</a>"#));

    // A confirmation step naming every client.
    let confirm = browser
        .get(&endpoint, &endpoint.url("/account/ai-clients/revoke-all"))
        .await;
    assert_eq!(confirm.status(), 200);
    let confirm = confirm.text().await.unwrap();
    assert!(
        confirm.contains("Revoke all 2 AI clients?")
            && confirm.contains("Desk Assistant")
            && confirm.contains("Night Trader"),
        "{confirm}"
    );
    let forged = browser
        .post(
            &endpoint,
            "/account/ai-clients/revoke-all",
            &[("csrf", "forged")],
        )
        .await;
    assert_eq!(forged.status(), 403);
    for (_, access, _) in &flows {
        assert_eq!(
            mcp_status(&endpoint, access).await,
            200,
            "nothing revoked yet"
        );
    }
    let revoked = browser
        .post(
            &endpoint,
            "/account/ai-clients/revoke-all",
            &[("csrf", &hidden(&confirm, "csrf"))],
        )
        .await;
    assert_eq!(revoked.status(), 303);
    assert_eq!(location(&revoked).path(), "/account/ai-clients");
    for (flow, access, refresh) in &flows {
        assert_eq!(mcp_status(&endpoint, access).await, 401);
        let refreshed = flow.refresh(&endpoint, refresh).await;
        assert_eq!(refreshed.status(), 400);
        assert_eq!(
            refreshed.json::<Value>().await.unwrap()["error"],
            "invalid_grant"
        );
    }
    let empty = browser
        .get(&endpoint, &endpoint.url("/account/ai-clients"))
        .await
        .text()
        .await
        .unwrap();
    assert!(empty.contains("No AI application is connected"), "{empty}");
    assert!(!empty.contains("Revoke all AI clients"));
    // Nothing left to revoke: back to the list.
    let again = browser
        .get(&endpoint, &endpoint.url("/account/ai-clients/revoke-all"))
        .await;
    assert_eq!(again.status(), 303);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn addon_keys_are_shown_once_listed_by_hint_and_revocable() {
    let (db, server, endpoint) = server_with_user("k@example.com").await;
    let mut browser = account_browser(&endpoint, "k@example.com").await;
    let page = browser
        .get(&endpoint, &endpoint.url("/account/addon-keys"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("You have no Add-On keys yet."));
    let created = browser
        .post(
            &endpoint,
            "/account/addon-keys",
            &[("csrf", &hidden(&page, "csrf"))],
        )
        .await;
    assert_eq!(created.status(), 200);
    let csp = created.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = created.text().await.unwrap();
    let key = html
        .split("value=\"")
        .find(|part| part.starts_with("ctak_"))
        .and_then(|part| part.split('"').next())
        .unwrap()
        .to_owned();
    assert!(html.contains("shown only this once"));

    let listed = browser
        .get(&endpoint, &endpoint.url("/account/addon-keys"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!listed.contains(&key), "never shown again");
    assert!(
        listed.contains(&key[..11]) && listed.contains("not connected"),
        "{listed}"
    );

    // JSON: list, create, revoke.
    let response = browser
        .get(&endpoint, &endpoint.url("/v1/account/addon-keys"))
        .await;
    let csrf = response.headers()["x-csrf-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let keys: Value = response.json().await.unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    assert!(keys.to_string().find("ctak_").is_some() && !keys.to_string().contains(&key));
    let made = endpoint
        .http
        .post(endpoint.url("/v1/account/addon-keys"))
        .header("cookie", browser.cookie_header())
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    assert!(made["key"].as_str().unwrap().starts_with("ctak_"));
    let id = made["key_id"].as_str().unwrap();
    let gone = endpoint
        .http
        .delete(endpoint.url(&format!("/v1/account/addon-keys/{id}")))
        .header("cookie", browser.cookie_header())
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);

    // Revoke the first one through the page.
    let listed = browser
        .get(&endpoint, &endpoint.url("/account/addon-keys"))
        .await
        .text()
        .await
        .unwrap();
    let first: String =
        sqlx::query_scalar("SELECT key_id::text FROM addon_keys WHERE revoked_at IS NULL")
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
    let revoked = browser
        .post(
            &endpoint,
            &format!("/account/addon-keys/{first}/revoke"),
            &[("csrf", &hidden(&listed, "csrf"))],
        )
        .await;
    assert_eq!(revoked.status(), 303);
    let listed = browser
        .get(&endpoint, &endpoint.url("/account/addon-keys"))
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains("You have no Add-On keys yet."), "{listed}");
    // The revoked key no longer opens the Add-On socket.
    let ws = endpoint
        .http
        .get(endpoint.url("/v1/addon/ws"))
        .bearer_auth(&key)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(ws.status(), 401);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn sign_out_here_or_everywhere() {
    let (_db, server, endpoint) = server_with_user("o@example.com").await;
    let mut first = account_browser(&endpoint, "o@example.com").await;
    let mut second = account_browser(&endpoint, "o@example.com").await;
    let page = first
        .get(&endpoint, &endpoint.url("/account"))
        .await
        .text()
        .await
        .unwrap();
    let out = first
        .post(
            &endpoint,
            "/account/sign-out",
            &[("csrf", &hidden(&page, "csrf"))],
        )
        .await;
    assert_eq!(out.status(), 303);
    assert_eq!(
        first
            .get(&endpoint, &endpoint.url("/account"))
            .await
            .status(),
        303,
        "this browser signed out"
    );
    assert_eq!(
        second
            .get(&endpoint, &endpoint.url("/account"))
            .await
            .status(),
        200,
        "the other one not"
    );

    let mut third = account_browser(&endpoint, "o@example.com").await;
    let page = third
        .get(&endpoint, &endpoint.url("/account"))
        .await
        .text()
        .await
        .unwrap();
    let out = third
        .post(
            &endpoint,
            "/account/sign-out",
            &[("csrf", &hidden(&page, "csrf")), ("everywhere", "on")],
        )
        .await;
    assert_eq!(out.status(), 303);
    assert_eq!(
        second
            .get(&endpoint, &endpoint.url("/account"))
            .await
            .status(),
        303,
        "signed out everywhere"
    );
    assert!(server.terminate().success());
}

#[tokio::test]
async fn another_users_grants_and_keys_are_404_and_csrf_failures_change_nothing() {
    let (db, server, endpoint) = server_with_user("owner@example.com").await;
    let url = db.url();
    run(
        &[("DATABASE_URL", url.as_str())],
        &[
            "users",
            "add",
            "--email",
            "intruder@example.com",
            "--tier",
            "elite",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    let mut flow = Flow::new(&endpoint, "owner@example.com").await;
    let tokens = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let mut owner = account_browser(&endpoint, "owner@example.com").await;
    let keys_page = owner
        .get(&endpoint, &endpoint.url("/account/addon-keys"))
        .await
        .text()
        .await
        .unwrap();
    owner
        .post(
            &endpoint,
            "/account/addon-keys",
            &[("csrf", &hidden(&keys_page, "csrf"))],
        )
        .await;
    let pool = db.pool().await;
    let grant_id: String = sqlx::query_scalar("SELECT grant_id::text FROM grants")
        .fetch_one(&pool)
        .await
        .unwrap();
    let key_id: String = sqlx::query_scalar("SELECT key_id::text FROM addon_keys")
        .fetch_one(&pool)
        .await
        .unwrap();

    let mut intruder = account_browser(&endpoint, "intruder@example.com").await;
    let listed = intruder
        .get(&endpoint, &endpoint.url("/v1/account/ai-clients"))
        .await;
    let csrf = listed.headers()["x-csrf-token"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        listed.json::<Value>().await.unwrap()["clients"],
        serde_json::json!([])
    );
    let keys: Value = intruder
        .get(&endpoint, &endpoint.url("/v1/account/addon-keys"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"], serde_json::json!([]));
    let cookies = intruder.cookie_header();
    for path in [
        format!("/v1/account/ai-clients/{grant_id}"),
        format!("/v1/account/addon-keys/{key_id}"),
    ] {
        let response = endpoint
            .http
            .delete(endpoint.url(&path))
            .header("cookie", &cookies)
            .header("x-csrf-token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    assert_eq!(
        intruder
            .get(
                &endpoint,
                &endpoint.url(&format!("/account/ai-clients/{grant_id}/revoke"))
            )
            .await
            .status(),
        404
    );
    let page = intruder
        .get(&endpoint, &endpoint.url("/account"))
        .await
        .text()
        .await
        .unwrap();
    let intruder_csrf = hidden(&page, "csrf");
    assert_eq!(
        intruder
            .post(
                &endpoint,
                &format!("/account/ai-clients/{grant_id}/revoke"),
                &[("csrf", &intruder_csrf)]
            )
            .await
            .status(),
        404
    );
    assert_eq!(
        intruder
            .post(
                &endpoint,
                &format!("/account/addon-keys/{key_id}/revoke"),
                &[("csrf", &intruder_csrf)]
            )
            .await
            .status(),
        404
    );

    // The owner without a valid CSRF token: refused, nothing changes.
    assert_eq!(
        owner
            .post(
                &endpoint,
                &format!("/account/addon-keys/{key_id}/revoke"),
                &[("csrf", "forged")]
            )
            .await
            .status(),
        403
    );
    let owner_cookies = owner.cookie_header();
    let no_csrf = endpoint
        .http
        .delete(endpoint.url(&format!("/v1/account/addon-keys/{key_id}")))
        .header("cookie", &owner_cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    let live_keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM addon_keys WHERE revoked_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(live_keys, 1);
    assert_eq!(
        mcp_status(&endpoint, &access).await,
        200,
        "the grant is intact"
    );
    assert!(server.terminate().success());
}

#[tokio::test]
async fn a_revoke_on_one_replica_stops_the_token_on_another_within_a_second() {
    let (db, first, endpoint) = server_with_user("two@example.com").await;
    let url = db.url();
    let second = ServerProcess::start("serve", &[("DATABASE_URL", url.as_str())]);
    let other = Endpoint::new(&second.url(""));
    let mut flow = Flow::new(&endpoint, "two@example.com").await;
    let tokens = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        mcp_status(&other, &access).await,
        200,
        "the other replica accepts it (and caches the grant)"
    );

    let mut browser = account_browser(&endpoint, "two@example.com").await;
    let grant_id: String = sqlx::query_scalar("SELECT grant_id::text FROM grants")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    let confirm = browser
        .get(
            &endpoint,
            &endpoint.url(&format!("/account/ai-clients/{grant_id}/revoke")),
        )
        .await
        .text()
        .await
        .unwrap();
    let clicked = std::time::Instant::now();
    let revoked = browser
        .post(
            &endpoint,
            &format!("/account/ai-clients/{grant_id}/revoke"),
            &[("csrf", &hidden(&confirm, "csrf"))],
        )
        .await;
    assert_eq!(revoked.status(), 303);
    // Within a second of the click, not of its answer.
    testkit::wait::wait_until(
        "refused on the other replica",
        std::time::Duration::from_secs(1).saturating_sub(clicked.elapsed()),
        async || mcp_status(&other, &access).await == 401,
    )
    .await;
    assert!(first.terminate().success());
    assert!(second.terminate().success());
}

#[tokio::test]
async fn guesses_from_another_address_leave_the_account_pages_reachable() {
    let (_db, _server, endpoint) = server_with_user("victim@example.com").await;
    let attacker = Endpoint::from_address(&endpoint.base, "127.0.0.3".parse().unwrap());
    for _ in 0..5 {
        let wrong = Browser::default()
            .account_sign_in(&attacker, "victim@example.com", "guess!")
            .await;
        assert_eq!(wrong.status(), 401);
    }
    let held = Browser::default()
        .account_sign_in(&attacker, "victim@example.com", PASSWORD)
        .await;
    assert_eq!(held.status(), 429);
    let wait: u64 = held.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&wait), "{wait}");

    // The owner, elsewhere, reaches AI Clients to revoke what was stolen.
    let owner = Endpoint::from_address(&endpoint.base, "127.0.0.4".parse().unwrap());
    let mut browser = Browser::default();
    let signed_in = browser
        .account_sign_in(&owner, "victim@example.com", PASSWORD)
        .await;
    assert_eq!(signed_in.status(), 303);
    let clients = browser.get(&owner, &owner.url("/account/ai-clients")).await;
    assert_eq!(clients.status(), 200);
}
