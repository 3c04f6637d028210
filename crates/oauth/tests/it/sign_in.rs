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
