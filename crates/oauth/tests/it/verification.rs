//! G1, G3, G4, G6: access-token verification, key rotation, revocation across replicas.

use std::time::{Duration, Instant};

use oauth::AccessError::{
    BadSignature, Expired, Malformed, NotYetValid, UnknownKey, WrongAudience, WrongIssuer,
};
use serde_json::{Value, json};
use store::users::Tier;
use testkit::wait::wait_until;

use crate::support::{Flow, Server};
use crate::token::decode_claims;

fn b64(value: &Value) -> String {
    oauth::crypto::b64(value.to_string().as_bytes())
}

async fn live_token(server: &Server) -> (Flow, String) {
    server.user("v@example.com", Tier::Elite).await;
    let mut flow = Flow::new(server, "v@example.com").await;
    let tokens = flow.tokens(server, "mcp:read", "mcp:read").await;
    (flow, tokens["access_token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn g1_g3_claims_and_header_checks() {
    let server = Server::start().await;
    let (_, token) = live_token(&server).await;
    let claims = decode_claims(&token);
    let header: Value = serde_json::from_slice(
        &oauth::crypto::b64_decode(token.split('.').next().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    for key in [
        "iss",
        "sub",
        "aud",
        "client_id",
        "scope",
        "jti",
        "gid",
        "iat",
        "exp",
    ] {
        assert!(claims.get(key).is_some(), "claim {key} in {claims}");
    }
    let keys = server.state.key_ring();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        change(&mut c);
        keys.sign(&c).unwrap()
    };
    let state = &server.state;
    let check = |token: String| async move { state.verify_access_token(&token).await };

    assert_eq!(
        check(with(&|c| c["aud"] = json!("https://other.example/mcp"))).await,
        Err(WrongAudience)
    );
    assert_eq!(
        check(with(&|c| c["iss"] = json!("https://evil.example"))).await,
        Err(WrongIssuer)
    );
    let now = claims["iat"].as_i64().unwrap();
    assert_eq!(
        check(with(&|c| c["exp"] = json!(now - 31))).await,
        Err(Expired)
    );
    assert!(
        check(with(&|c| c["exp"] = json!(now - 10))).await.is_ok(),
        "small leeway"
    );
    assert_eq!(
        check(with(&|c| c["nbf"] = json!(now + 120))).await,
        Err(NotYetValid)
    );
    assert_eq!(
        check(with(&|c| c["scope"] = json!("admin"))).await,
        Err(Malformed)
    );

    // Header tampering: alg none, HS256 with the public key as secret, unknown kid, wrong typ.
    let parts: Vec<&str> = token.split('.').collect();
    let forged = |header: Value| format!("{}.{}.{}", b64(&header), parts[1], parts[2]);
    let kid = header["kid"].clone();
    assert_eq!(
        check(format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "at+jwt"})),
            parts[1]
        ))
        .await,
        Err(Malformed)
    );
    assert_eq!(
        check(forged(json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}))).await,
        Err(Malformed)
    );
    assert_eq!(
        check(forged(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}))).await,
        Err(Malformed)
    );
    assert_eq!(
        check(forged(
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "unknown"})
        ))
        .await,
        Err(UnknownKey)
    );
    // A changed payload breaks the signature.
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&json!({"sub": "someone-else"})),
        parts[2]
    );
    assert_eq!(check(tampered).await, Err(BadSignature));
    assert_eq!(check("not a token".into()).await, Err(Malformed));
    assert!(check(token.clone()).await.is_ok());
}

#[tokio::test]
async fn g4_rotation_keeps_old_tokens_until_the_longest_lifetime_passes() {
    let server = Server::start().await;
    let (mut flow, old_token) = live_token(&server).await;
    let old_kid = serde_json::from_slice::<Value>(
        &oauth::crypto::b64_decode(old_token.split('.').next().unwrap()).unwrap(),
    )
    .unwrap()["kid"]
        .clone();

    let new_kid = oauth::keys::rotate(
        server.state.db(),
        crate::support::MASTER,
        Duration::from_secs(3600),
        &server.clock,
    )
    .await
    .unwrap();
    // The rotation is announced: this replica picks the new key up by itself.
    wait_until("rotation seen", Duration::from_secs(2), async || {
        server
            .state
            .key_ring()
            .jwks()
            .to_string()
            .contains(&new_kid)
    })
    .await;
    let jwks = server.state.key_ring().jwks();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&new_kid.as_str()) && kids.contains(&old_kid.as_str().unwrap()),
        "both published: {kids:?}"
    );

    assert!(
        server.state.verify_access_token(&old_token).await.is_ok(),
        "old key still verifies"
    );
    let fresh = flow.tokens(&server, "mcp:read", "mcp:read").await;
    let fresh_token = fresh["access_token"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &oauth::crypto::b64_decode(fresh_token.split('.').next().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid, "new key signs");

    // Past the longest access-token lifetime a token from the retired key is refused, even if
    // its own expiry were later.
    server.clock.advance(chrono::TimeDelta::seconds(3601));
    assert_eq!(
        server.state.verify_access_token(&old_token).await,
        Err(UnknownKey)
    );
    // A second replica that loads later sees the same set.
    let replica = server.replica().await;
    assert!(
        replica.verify_access_token(fresh_token).await.is_ok(),
        "new key known to a new replica"
    );
    assert_eq!(
        replica.verify_access_token(&old_token).await,
        Err(UnknownKey)
    );
}

#[tokio::test]
async fn g6_revocation_reaches_another_replica_within_a_second() {
    let server = Server::start().await;
    let (flow, token) = live_token(&server).await;
    let replica = server.replica().await;
    // Let the replica's listener connect and warm its cache.
    wait_until(
        "the replica's listener",
        Duration::from_secs(5),
        async || replica.revocations_live(),
    )
    .await;
    assert!(replica.revocations_live());
    assert!(replica.verify_access_token(&token).await.is_ok());

    let started = Instant::now();
    let revoked = server
        .form(
            "/v1/oauth/mcp/revoke",
            &[("token", &token), ("client_id", &flow.client_id)],
        )
        .await;
    assert_eq!(revoked.status(), 200);
    // Within a second of the request, not of its answer.
    wait_until(
        "revoked on the replica",
        Duration::from_secs(1).saturating_sub(started.elapsed()),
        async || replica.verify_access_token(&token).await == Err(oauth::AccessError::Revoked),
    )
    .await;
}

#[tokio::test]
async fn a_lost_listener_fails_closed_and_resyncs_on_reconnect() {
    let server = Server::start().await;
    let (flow, token) = live_token(&server).await;
    let replica = server.replica().await;
    wait_until(
        "the replica's listener",
        Duration::from_secs(5),
        async || replica.revocations_live(),
    )
    .await;
    assert!(
        replica.verify_access_token(&token).await.is_ok(),
        "cached alive on the replica"
    );

    // Cut every LISTEN connection: notifications sent now would be lost.
    let pool = server.db.pool().await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()")
        .execute(&pool)
        .await
        .unwrap();
    // Revoke behind the replica's back: straight in the database, with the notification
    // trigger off, so only the reconnect's resync (or reading through while disconnected) can
    // reveal it.
    sqlx::query("ALTER TABLE grants DISABLE TRIGGER grants_revoked")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE grants SET revoked_at = now() WHERE client_id = $1")
        .bind(&flow.client_id)
        .execute(&pool)
        .await
        .unwrap();
    // The replica must not serve its stale "alive" entry: it reads the database (fails closed)
    // while disconnected and starts from an empty cache once reconnected.
    wait_until(
        "the grant revoked behind the replica's back refused (not served from a stale cache)",
        Duration::from_secs(2),
        async || replica.verify_access_token(&token).await == Err(oauth::AccessError::Revoked),
    )
    .await;
}
