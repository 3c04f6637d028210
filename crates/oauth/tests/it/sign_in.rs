//! Sign-in throttling aims at the guessing address, never at the account: the owner signs in
//! from a clean address however many guesses came from elsewhere; accounts are counted under
//! the database's own normalisation of the address.

use std::net::IpAddr;

use chrono::TimeDelta;
use reqwest::StatusCode;
use store::users::Tier;

use crate::support::{Browser, Endpoint, PASSWORD, Server, authorize_url, pkce};

const REDIRECT: &str = "http://127.0.0.1:45678/callback";

/// The server as seen from another loopback address (127.0.0.2 is the tests' trusted proxy).
fn from(server: &Server, ip: &str) -> Endpoint {
    Endpoint::from_address(&server.base, ip.parse::<IpAddr>().unwrap())
}

async fn attempt(from: &Endpoint, url: &str, email: &str, password: &str) -> reqwest::Response {
    Browser::default().sign_in(from, url, email, password).await
}

fn retry_after(response: &reqwest::Response) -> &str {
    response.headers()["retry-after"].to_str().unwrap()
}

#[tokio::test]
async fn guesses_from_one_address_do_not_lock_the_owner_out() {
    let server = Server::start().await;
    server.user("owner@example.com", Tier::Elite).await;
    let client_id = server.client(REDIRECT).await;
    let url = authorize_url(&server, &client_id, REDIRECT, &pkce().challenge, &[]);
    let attacker = from(&server, "127.0.0.3");
    for _ in 0..5 {
        let wrong = attempt(&attacker, &url, "owner@example.com", "guess!").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    // The guessing address is held back on this account, right password or not, for exactly
    // the time left until its oldest failure leaves the 15-minute window.
    server.clock.advance(TimeDelta::seconds(100));
    let held = attempt(&attacker, &url, "owner@example.com", PASSWORD).await;
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&held), "800");

    // The owner, from their own address, signs in.
    let owner = from(&server, "127.0.0.4");
    let signed_in = attempt(&owner, &url, "OWNER@example.com", PASSWORD).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);

    // Another address that fails once is free the first time, then waits 30 s × 2^(failures
    // on the account beyond 5), counted from its latest failure.
    let other = from(&server, "127.0.0.5");
    let first = attempt(&other, &url, "owner@example.com", "guess!").await;
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let second = attempt(&other, &url, "owner@example.com", "guess!").await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&second), "60");
    server.clock.advance(TimeDelta::seconds(45));
    let still = attempt(&other, &url, "owner@example.com", "guess!").await;
    assert_eq!(retry_after(&still), "15");
    server.clock.advance(TimeDelta::seconds(15));
    let third = attempt(&other, &url, "owner@example.com", "guess!").await;
    assert_eq!(third.status(), StatusCode::UNAUTHORIZED);
    let fourth = attempt(&other, &url, "owner@example.com", "guess!").await;
    assert_eq!(retry_after(&fourth), "120");

    // The held-back attempts were not counted; the owner is still fine, and so is the first
    // guessing address once its failures age out.
    assert_eq!(
        crate::support::count(&server, "SELECT count(*) FROM sign_in_failures").await,
        7
    );
    let again = attempt(&owner, &url, "owner@example.com", PASSWORD).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    server.clock.advance(TimeDelta::minutes(15));
    let later = attempt(&attacker, &url, "owner@example.com", PASSWORD).await;
    assert_eq!(later.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn accounts_are_counted_as_the_database_compares_addresses() {
    let server = Server::start().await;
    // Rust lowercases "İ" (U+0130) to "i̇" (i + U+0307), so a throttle keyed by Rust's
    // lowercase put these two different accounts under one counter.
    let dotted = "İnci@example.com";
    let combining = "i\u{307}nci@example.com";
    server.user(dotted, Tier::Elite).await;
    server.user(combining, Tier::Elite).await;
    let client_id = server.client(REDIRECT).await;
    let url = authorize_url(&server, &client_id, REDIRECT, &pkce().challenge, &[]);
    let attacker = from(&server, "127.0.0.3");
    for spelling in [
        dotted,
        "İnci@EXAMPLE.com",
        "  İnci@example.COM",
        "İNCI@example.com",
        dotted,
    ] {
        let wrong = attempt(&attacker, &url, spelling, "guess!").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{spelling}");
    }
    // Every spelling the lookup maps to one account was counted against that account.
    let keys: Vec<String> = sqlx::query_scalar("SELECT DISTINCT email_lower FROM sign_in_failures")
        .fetch_all(&server.db.pool().await)
        .await
        .unwrap();
    let key_of_dotted: String =
        sqlx::query_scalar("SELECT lower(email) FROM users WHERE email = $1")
            .bind(dotted)
            .fetch_one(&server.db.pool().await)
            .await
            .unwrap();
    assert_eq!(keys, [key_of_dotted]);
    let held = attempt(&attacker, &url, "İnci@Example.Com", PASSWORD).await;
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS);
    // The other account was not charged: the same address signs into it.
    let other = attempt(&attacker, &url, combining, PASSWORD).await;
    assert_eq!(other.status(), StatusCode::SEE_OTHER);
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// `__Host-` cookies (Secure, Path=/, no Domain) need the https issuer; this server answers
/// plain http on loopback, which is what a TLS-terminating proxy in front of it sends.
fn assert_host_cookie(set_cookie: &str) {
    assert!(set_cookie.starts_with("__Host-"), "{set_cookie}");
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"Secure"), "{set_cookie}");
    assert!(attributes.contains(&"Path=/"), "{set_cookie}");
    assert!(
        !attributes
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain")),
        "{set_cookie}"
    );
}

#[tokio::test]
async fn https_cookies_carry_the_host_prefix_and_plain_names_are_ignored() {
    let server = Server::start_with(|s| s.issuer = "https://crosstrade.example".into()).await;
    server.user("trader@example.com", Tier::Elite).await;
    let client_id = server.client(REDIRECT).await;
    let url = authorize_url(&server, &client_id, REDIRECT, &pkce().challenge, &[]);

    let mut browser = Browser::default();
    let page = browser.get(&server, &url).await;
    let cookies = set_cookies(&page);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(
        cookies[0].starts_with("__Host-ct_login_csrf="),
        "{cookies:?}"
    );
    assert_host_cookie(&cookies[0]);
    let html = page.text().await.unwrap();
    let csrf = crate::support::hidden(&html, "csrf");
    let return_to = crate::support::hidden(&html, "return_to");
    let form = [
        ("email", "trader@example.com"),
        ("password", PASSWORD),
        ("csrf", csrf.as_str()),
        ("return_to", return_to.as_str()),
    ];

    // The same token under the plain name (as a sibling subdomain could plant it) is no cookie.
    let planted = server
        .http
        .post(server.url("/v1/oauth/mcp/sign-in"))
        .header("cookie", format!("ct_login_csrf={csrf}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(planted.status(), StatusCode::FORBIDDEN);

    let signed_in = browser.post(&server, "/v1/oauth/mcp/sign-in", &form).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let cookies = set_cookies(&signed_in);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-ct_session="))
        .unwrap_or_else(|| panic!("{cookies:?}"));
    assert_host_cookie(session);
    let cleared = cookies
        .iter()
        .find(|c| c.starts_with("__Host-ct_login_csrf="))
        .unwrap_or_else(|| panic!("{cookies:?}"));
    assert_host_cookie(cleared);
    assert!(
        cookies.iter().all(|c| c.starts_with("__Host-")),
        "{cookies:?}"
    );

    // The session works under its prefixed name and only under it.
    let consent = browser.get(&server, &url).await;
    assert!(
        consent
            .text()
            .await
            .unwrap()
            .contains("action=\"/v1/oauth/mcp/consent\"")
    );
    let id = browser
        .cookies
        .iter()
        .find(|(name, _)| name == "__Host-ct_session")
        .map(|(_, value)| value.clone())
        .unwrap();
    let unprefixed = server
        .http
        .get(&url)
        .header("cookie", format!("ct_session={id}"))
        .send()
        .await
        .unwrap();
    assert!(
        unprefixed
            .text()
            .await
            .unwrap()
            .contains("Sign in to continue")
    );
}

#[tokio::test]
async fn http_development_keeps_the_plain_cookie_names() {
    let server = Server::start().await;
    server.user("trader@example.com", Tier::Elite).await;
    let client_id = server.client(REDIRECT).await;
    let url = authorize_url(&server, &client_id, REDIRECT, &pkce().challenge, &[]);
    let mut browser = Browser::default();
    let page = browser.get(&server, &url).await;
    let cookies = set_cookies(&page);
    assert!(cookies[0].starts_with("ct_login_csrf="), "{cookies:?}");
    assert!(!cookies[0].contains("Secure"), "{cookies:?}");
    let signed_in = browser
        .sign_in(&server, &url, "trader@example.com", PASSWORD)
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let names: Vec<String> = set_cookies(&signed_in)
        .iter()
        .map(|c| c.split('=').next().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["ct_session", "ct_login_csrf"]);
}
