//! Sign-in, consent and the account pages in a real headless Chromium (Debian's), driven by
//! Playwright: Allow lands on the client's loopback callback with code, state and iss; Deny
//! returns access_denied; a tampered CSRF token is refused. Every page is audited with axe-core
//! (WCAG 2.1 A and AA) in the light and the dark theme, must not scroll sideways at a phone's
//! width, and is screenshotted at 390 and 1280 px in both themes into
//! `test-artifacts/browser/` (`{page}-{phone|desktop}-{light|dark}.png`). Sign-in to Allow, and
//! revoking AI clients, are driven by the keyboard alone.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use testkit::oauth::{PASSWORD, authorize_url, pkce};

use crate::support::server_with_user;

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

pub(crate) fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Installs the pinned packages of `tests/browser` (playwright-core, axe-core, the MCP
/// TypeScript SDK) from the npm registry on first use; one install at a time, as the tests run
/// in parallel.
pub(crate) fn ensure_playwright() {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let modules = browser_dir().join("node_modules");
    if ["playwright-core", "axe-core", "@modelcontextprotocol/sdk"]
        .iter()
        .all(|package| modules.join(package).is_dir())
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(browser_dir())
        .status()
        .expect("npm is needed for the browser tests (apt-get install nodejs npm)");
    assert!(status.success(), "npm ci in tests/browser failed");
}

/// What every page must have shown: each of `pages` checked at both widths in both themes, with
/// no horizontal overflow, no axe-core violation (WCAG 2.1 A and AA) and a focus ring on
/// everything reached by Tab.
pub(crate) fn assert_checked(seen: &serde_json::Value, pages: &[&str]) {
    assert_eq!(seen["checkedPages"], serde_json::json!(pages));
    assert_eq!(
        seen["overflows"],
        serde_json::json!([]),
        "no page scrolls sideways"
    );
    assert_eq!(
        seen["violations"],
        serde_json::json!([]),
        "no accessibility violation:\n{:#}",
        seen["violations"]
    );
    assert_eq!(
        seen["missingFocusRings"],
        serde_json::json!([]),
        "focus is always visible"
    );
}

/// A loopback redirect target that records each request's path and query.
fn callback_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            if let Some(target) = line.split_whitespace().nth(1) {
                record.lock().unwrap().push(target.to_owned());
            }
            let body = "Connected. You can close this window.";
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

#[tokio::test]
async fn sign_in_and_consent_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium"
    );
    ensure_playwright();
    let (_db, server, endpoint) = server_with_user("browser@example.com").await;
    let (port, seen) = callback_server();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let client_id = endpoint.client(&redirect_uri).await;
    let allow_pkce = pkce();
    let scope = [("scope", "mcp:read mcp:trade")];
    let allow_url = authorize_url(
        &endpoint,
        &client_id,
        &redirect_uri,
        &allow_pkce.challenge,
        &scope,
    );
    let deny_url = authorize_url(
        &endpoint,
        &client_id,
        &redirect_uri,
        &pkce().challenge,
        &scope,
    );
    let csrf_url = authorize_url(
        &endpoint,
        &client_id,
        &redirect_uri,
        &pkce().challenge,
        &scope,
    );
    let read_url = authorize_url(
        &endpoint,
        &client_id,
        &redirect_uri,
        &pkce().challenge,
        &[("scope", "mcp:read")],
    );
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/browser");

    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("consent.mjs")
            .current_dir(browser_dir())
            .env("ALLOW_URL", allow_url)
            .env("DENY_URL", deny_url)
            .env("CSRF_URL", csrf_url)
            .env("READ_URL", read_url)
            .env("EMAIL", "browser@example.com")
            .env("PASSWORD", PASSWORD)
            .env("ARTIFACTS", &artifacts)
            .env("CHROMIUM", CHROMIUM)
            .output()
            .expect("node")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "browser run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen_by_browser: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(
        seen_by_browser["consoleErrors"],
        serde_json::json!([]),
        "no console errors"
    );
    assert_checked(
        &seen_by_browser,
        &["sign-in", "consent-trade", "consent-read", "error"],
    );
    // Who asks, where it sends you back, which account, what you allow: in that order.
    assert_eq!(
        seen_by_browser["consentOrder"],
        serde_json::json!([
            "Application",
            "Sends you back to",
            "CrossTrade account",
            "Permission to grant"
        ])
    );
    let consent_text = seen_by_browser["consentText"].as_str().unwrap();
    assert!(
        consent_text.contains("First time") && consent_text.contains("browser@example.com"),
        "{consent_text}"
    );
    // Allow is the primary action: it does not look like Deny.
    let styles = &seen_by_browser["allowStyle"];
    assert_ne!(styles["allow"], styles["deny"], "{styles}");
    assert_eq!(
        seen_by_browser["readOnlyOffers"],
        serde_json::json!(["mcp:read"])
    );
    let forgery = seen_by_browser["forgeryErrors"].as_array().unwrap();
    assert_eq!(forgery.len(), 1, "{forgery:?}");
    assert!(
        forgery[0]
            .as_str()
            .unwrap()
            .contains("/v1/oauth/mcp/consent")
            && forgery[0].as_str().unwrap().contains("403")
    );
    assert_eq!(seen_by_browser["signInTitle"], "Sign in · CrossTrade");
    assert_eq!(
        seen_by_browser["consentTitle"],
        "Authorize Test Client · CrossTrade"
    );
    // The request asked for trade: trade is preselected, read is still offered.
    assert_eq!(seen_by_browser["readPreselected"], false);
    assert_eq!(seen_by_browser["tradePreselected"], true);

    let allowed = url::Url::parse(seen_by_browser["allow"]["url"].as_str().unwrap()).unwrap();
    assert_eq!(allowed.port(), Some(port));
    assert_eq!(allowed.path(), "/callback");
    let pairs: Vec<(String, String)> = allowed
        .query_pairs()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["code", "state", "iss"]);
    assert_eq!(pairs[1].1, "st-123");
    assert_eq!(
        pairs[2].1, "http://127.0.0.1:8080",
        "iss is the configured issuer"
    );

    let denied = url::Url::parse(seen_by_browser["deny"]["url"].as_str().unwrap()).unwrap();
    assert_eq!(denied.port(), Some(port));
    assert!(
        denied
            .query_pairs()
            .any(|(k, v)| k == "error" && v == "access_denied")
    );
    assert!(!denied.query_pairs().any(|(k, _)| k == "code"));

    assert_eq!(seen_by_browser["csrf"]["status"], 403);
    assert!(
        seen_by_browser["csrfText"]
            .as_str()
            .unwrap()
            .contains("Request expired")
    );
    let callbacks: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.starts_with("/callback"))
        .cloned()
        .collect();
    assert_eq!(
        callbacks.len(),
        2,
        "Allow and Deny reached the callback, the forged form did not: {callbacks:?}"
    );

    // The code the browser carried works, once, for the granted scope.
    let code = &pairs[0].1;
    let exchanged = endpoint
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect_uri),
            ("client_id", &client_id),
            ("code_verifier", &allow_pkce.verifier),
        ])
        .await;
    assert_eq!(exchanged.status(), 200);
    let tokens: serde_json::Value = exchanged.json().await.unwrap();
    assert_eq!(tokens["scope"], "mcp:read mcp:trade");
    assert!(server.terminate().success());
}

#[tokio::test]
async fn account_pages_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium"
    );
    ensure_playwright();
    let (db, server, endpoint) = server_with_user("pages@example.com").await;
    let mut flow = testkit::oauth::Flow::new(&endpoint, "pages@example.com").await;
    let tokens = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let mut desktop =
        testkit::oauth::Flow::new_for(&endpoint, "Claude Desktop", "pages@example.com", PASSWORD)
            .await;
    let read_access = desktop.tokens(&endpoint, "mcp:read", "mcp:read").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Activity to show: calls answered, refused, failed for want of the Add-On, and one with
    // invalid arguments, as the server records them.
    let order = serde_json::json!({"account": "Sim101", "instrument": "ES 12-26",
        "action": "Buy", "order_type": "Market", "quantity": 1});
    for (token, tool, arguments, status) in [
        (&access, "GetMcpCapabilities", serde_json::json!({}), 200),
        (&access, "GetMcpCapabilities", serde_json::json!({}), 200),
        (&access, "GetJournal", serde_json::json!({}), 200),
        (&access, "PlaceOrder", order.clone(), 408),
        (
            &access,
            "PlaceOrder",
            serde_json::json!({"quantity": "all"}),
            200,
        ),
        (
            &read_access,
            "GetMcpCapabilities",
            serde_json::json!({}),
            200,
        ),
        (&read_access, "PlaceOrder", order, 403),
    ] {
        let response = crate::support::tools_call(&endpoint, token, tool, arguments).await;
        assert_eq!(response.status(), status, "{tool}");
    }
    // The days before today: written as the server writes them, for a chart with history.
    let pool = db.pool().await;
    sqlx::query(
        "INSERT INTO grant_tool_days (grant_id, day, tool, trade, calls, errors)
         SELECT g.grant_id, (now() AT TIME ZONE 'UTC')::date - d.ago, t.tool, t.trade, (d.ago * t.scale) % 7 + 1, 0
         FROM grants g
         CROSS JOIN generate_series(1, 6) AS d (ago)
         CROSS JOIN (VALUES ('GetPositions', false, 3), ('GetOrders', false, 2),
                            ('PlaceOrder', true, 1)) AS t (tool, trade, scale)
         WHERE g.scope = 'mcp:trade' OR NOT t.trade",
    )
    .execute(&pool)
    .await
    .unwrap();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/browser");
    let base = server.url("");
    // Another browser signed in to the same account, to be signed out everywhere.
    let mut elsewhere = testkit::oauth::Browser::default();
    let page = elsewhere
        .get(&endpoint, &endpoint.url("/account/sign-in"))
        .await
        .text()
        .await
        .unwrap();
    let signed_in = elsewhere
        .post(
            &endpoint,
            "/account/sign-in",
            &[
                ("email", "pages@example.com"),
                ("password", PASSWORD),
                ("csrf", &testkit::oauth::hidden(&page, "csrf")),
                ("return_to", "/account"),
            ],
        )
        .await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(
        elsewhere
            .get(&endpoint, &endpoint.url("/account"))
            .await
            .status(),
        200
    );
    // Today's calls are written within about a second.
    let written = testkit::wait::eventually(std::time::Duration::from_secs(10), async || {
        let html = elsewhere
            .get(&endpoint, &endpoint.url("/account/ai-clients"))
            .await
            .text()
            .await
            .unwrap();
        html.contains("(today): 5 (2 trade)") && html.contains("(today): 2 (1 trade)")
    })
    .await;
    assert!(written, "today's calls never showed");

    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("account.mjs")
            .current_dir(browser_dir())
            .env("BASE_URL", base)
            .env("EMAIL", "pages@example.com")
            .env("PASSWORD", PASSWORD)
            .env("ARTIFACTS", &artifacts)
            .env("CHROMIUM", CHROMIUM)
            .output()
            .expect("node")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "browser run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(
        seen["consoleErrors"],
        serde_json::json!([]),
        "no console errors on any page"
    );
    assert_checked(
        &seen,
        &[
            "account-sign-in",
            "ai-clients",
            "ai-client-revoke",
            "ai-clients-revoke-all",
            "ai-clients-empty",
            "account",
            "addon-key-created",
            "addon-keys",
        ],
    );
    assert_eq!(seen["signInUrl"], "/account/sign-in");
    assert_eq!(seen["listUrl"], "/account/ai-clients");
    assert_eq!(
        seen["clientsBefore"],
        serde_json::json!(["Claude Desktop", "Test Client"])
    );
    assert!(seen["exactTimeOnHover"].as_str().unwrap().ends_with(" UTC"));
    assert_eq!(seen["listOverflows"], false, "readable at a phone's width");
    // What each did, as the browser shows it.
    assert_eq!(seen["chartBars"], serde_json::json!([7, 7]));
    let charts = seen["charts"].as_array().unwrap();
    assert!(
        charts[0]
            .as_str()
            .unwrap()
            .starts_with("Calls per day, last 7 days: ")
            && charts[0]
                .as_str()
                .unwrap()
                .ends_with("(today): 2 (1 trade)")
            && charts[1]
                .as_str()
                .unwrap()
                .ends_with("(today): 5 (2 trade)"),
        "{charts:?}"
    );
    let test_client = &seen["tools"][1];
    assert_eq!(test_client["client"], "Test Client");
    let rows: Vec<&str> = test_client["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_str().unwrap())
        .collect();
    // PlaceOrder: 27 calls on the six days before, 2 today (both failed); trade marked.
    assert!(rows.contains(&"PlaceOrder Trade 29 2"), "{rows:?}");
    assert!(rows.contains(&"GetMcpCapabilities 2 0"), "{rows:?}");
    assert_eq!(
        test_client["calls"][0]
            .as_str()
            .unwrap()
            .split(" just now")
            .next(),
        Some("PlaceOrder Trade Tool error"),
        "{test_client}"
    );
    assert_ne!(
        seen["barLight"], seen["barDark"],
        "the chart follows the theme"
    );
    assert_eq!(seen["confirmTitle"], "Revoke Test Client · CrossTrade");
    assert_eq!(
        seen["clientsAfterOne"],
        serde_json::json!(["Claude Desktop"])
    );
    assert_eq!(seen["revokeAllTitle"], "Revoke all AI clients · CrossTrade");
    assert_eq!(seen["clientsAfter"], serde_json::json!([]));
    assert!(
        seen["emptyState"]
            .as_str()
            .unwrap()
            .contains("No AI application is connected")
    );
    assert!(
        seen["overview"]
            .as_str()
            .unwrap()
            .contains("pages@example.com")
    );
    assert_eq!(seen["overviewOverflows"], false);
    assert!(seen["createdKey"].as_str().unwrap().starts_with("ctak_"));
    assert_eq!(
        seen["copyButtonVisible"], true,
        "the copy script runs under the page's CSP"
    );
    assert!(seen["keysPage"].as_str().unwrap().contains("not connected"));
    assert_eq!(seen["afterSignOut"], "/account/sign-in");
    assert_eq!(seen["accountAfterSignOut"], "/account/sign-in");
    assert_eq!(
        elsewhere
            .get(&endpoint, &endpoint.url("/account"))
            .await
            .status(),
        303,
        "every session ended"
    );

    // Both revokes made with the keyboard reached the MCP endpoint at once.
    for token in [&access, &read_access] {
        let after = endpoint
            .http
            .post(endpoint.resource())
            .bearer_auth(token)
            .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
            .header("mcp-protocol-version", "2025-11-25")
            .send()
            .await
            .unwrap();
        assert_eq!(after.status(), 401);
    }
    assert!(server.terminate().success());
}

/// A held order (as the MCP side records one) opened signed out, signed in, and approved with
/// a click.
#[tokio::test]
async fn a_trade_confirmation_approved_in_chromium() {
    use store::confirmations::{self, NewConfirmation};
    use vocabulary::confirm::{Channel, ConfirmationState, Reason};

    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser tests need Debian's Chromium at {CHROMIUM}: apt-get install chromium"
    );
    ensure_playwright();
    let (db, server, endpoint) = server_with_user("confirm@example.com").await;
    let pool = db.pool().await;
    let email = store::users::Email::parse("confirm@example.com").unwrap();
    let user_id = store::users::find_by_email(&pool, &email)
        .await
        .unwrap()
        .unwrap()
        .id;
    let client_id = endpoint.client("http://127.0.0.1:45678/callback").await;
    let arguments = serde_json::json!({
        "account": "Sim101", "instrument": "ES 12-26", "action": "Buy",
        "order_type": "Limit", "quantity": 2, "limit_price": 5001.25,
    });
    let held = confirmations::insert(
        &pool,
        &NewConfirmation {
            confirmation_id: uuid::Uuid::new_v4(),
            user_id,
            grant_id: uuid::Uuid::new_v4(),
            client_id,
            tool: "PlaceOrder".to_owned(),
            preview: serde_json::json!({"tool": "PlaceOrder", "arguments": arguments,
                "estimated_notional": 500_125.0, "currency": "USD", "price": 5001.25,
                "price_basis": "limit_price", "point_value": 50}),
            arguments,
            idempotency_key: None,
            reason: Reason::PolicyEvery,
            channel: Channel::Link,
            revision: "2025-11-25".to_owned(),
            elicitation_id: None,
            state_hash: None,
            ttl: std::time::Duration::from_secs(300),
            max_open: 20,
        },
    )
    .await
    .unwrap()
    .unwrap();
    let id = held.confirmation_id;
    let path = format!("/account/confirmations/{id}");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/browser");
    let base = server.url("");
    let confirm_path = path.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("confirm-page.mjs")
            .current_dir(browser_dir())
            .env("BASE_URL", base)
            .env("CONFIRM_PATH", confirm_path)
            .env("EMAIL", "confirm@example.com")
            .env("PASSWORD", PASSWORD)
            .env("ARTIFACTS", &artifacts)
            .env("CHROMIUM", CHROMIUM)
            .output()
            .expect("node")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "browser run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["consoleErrors"], serde_json::json!([]));
    assert_eq!(seen["signInUrl"], "/account/sign-in");
    assert_eq!(seen["pageUrl"], path.as_str(), "back to the confirmation");
    assert_eq!(seen["title"], "Confirm: Place an order · CrossTrade");
    let before = seen["before"].as_str().unwrap();
    for shown in [
        "Test Client",
        "confirm@example.com",
        "ES 12-26",
        "Sim101",
        "≈ 500125.00 USD",
    ] {
        assert!(before.contains(shown), "{shown} in {before}");
    }
    assert_eq!(seen["phoneOverflows"], false, "readable at a phone's width");
    assert_checked(
        &seen,
        &[
            "confirmation-pending",
            "confirmation-approved",
            "confirmations",
        ],
    );
    assert!(
        seen["list"].as_str().unwrap().contains("Place an order"),
        "{}",
        seen["list"]
    );
    assert_eq!(seen["afterUrl"], path.as_str());
    assert!(
        seen["after"]
            .as_str()
            .unwrap()
            .contains("Approved. Go back to Test Client"),
        "{}",
        seen["after"]
    );
    assert_eq!(seen["buttonsAfter"], 0);
    let row = confirmations::find(&pool, id, user_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, ConfirmationState::Approved);
    assert_eq!(row.decided_via, Some(vocabulary::confirm::DecidedVia::Page));
    assert!(server.terminate().success());
}
