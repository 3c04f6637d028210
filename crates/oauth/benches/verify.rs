//! Micro-benchmarks of access-token verification and the PKCE check.
//!
//! - `verify/cold`: a token seen for the first time (Ed25519 signature, claims, the grant's
//!   state from the grant cache);
//! - `verify/cached`: the same token again (SHA-256 of the token, the verified-token cache, the
//!   grant cache);
//! - `pkce/s256`: base64url(SHA-256(verifier)) compared in constant time.
//!
//! `cargo bench -p oauth` (needs PostgreSQL binaries, like the tests: the signing keys and the
//! grant live in a throw-away database). CI only compiles it.
#![expect(clippy::unwrap_used, reason = "benchmark set-up")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use oauth::scope::Scope;
use oauth::token::sign_access_token;
use oauth::{OAuthSettings, OAuthState};
use store::clock::Clock;
use uuid::Uuid;

const ISSUER: &str = "http://127.0.0.1:8080";

fn settings() -> OAuthSettings {
    OAuthSettings {
        issuer: ISSUER.to_owned(),
        authorization_code_lifetime: Duration::from_secs(60),
        access_token_lifetime: Duration::from_secs(3600),
        refresh_token_lifetime: None,
        refresh_token_idle_lifetime: Duration::from_secs(14 * 86400),
        registrations_per_hour: 10,
        sign_in_failures_per_ip: 20,
        sign_in_failures_per_account: 5,
        sign_in_delay_base: Duration::from_secs(30),
        password_checks_at_once: 8,
        password_check_wait: Duration::from_secs(5),
        token_requests_per_minute: 1000,
        token_requests_per_grant_per_minute: 1000,
        trusted_proxies: Vec::new(),
    }
}

fn verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (state, user_id, grant_id) = runtime.block_on(async {
        let db = testkit::TestDb::new().await.pool().await;
        let background = store::Background::start(&db);
        let state = OAuthState::start(
            settings(),
            db.clone(),
            &[7; 32],
            Clock::system(),
            &background,
        )
        .await
        .unwrap();
        let user_id: Uuid = sqlx::query_scalar(
            "INSERT INTO users (email, password_hash, tier) \
             VALUES ('bench@example.com', 'none', 'elite') RETURNING id",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, metadata, dedup_key, redirect_uris, registered_ip) \
             VALUES ('bench-client', '{}', '\\x00', ARRAY['http://127.0.0.1/cb'], '127.0.0.1')",
        )
        .execute(&db)
        .await
        .unwrap();
        let grant_id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO grants (grant_id, user_id, client_id, scope, resource, redirect_uri) \
             VALUES ($1, $2, 'bench-client', 'mcp:read', $3, 'http://127.0.0.1/cb')",
        )
        .bind(grant_id)
        .bind(user_id)
        .bind(format!("{ISSUER}/v1/api/mcp"))
        .execute(&db)
        .await
        .unwrap();
        // The grant cache is used once the revocation listener is connected.
        while !state.revocations_live() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (state, user_id, grant_id)
    });
    let sign =
        || sign_access_token(&state, user_id, "bench-client", grant_id, Scope::Read).unwrap();
    let token = sign();
    runtime.block_on(state.verify_access_token(&token)).unwrap();

    c.bench_function("verify/cold", |b| {
        b.iter_batched(
            sign,
            |token| {
                runtime
                    .block_on(state.verify_access_token(black_box(&token)))
                    .is_ok()
            },
            BatchSize::SmallInput,
        );
    });
    c.bench_function("verify/cached", |b| {
        b.iter(|| {
            runtime
                .block_on(state.verify_access_token(black_box(&token)))
                .is_ok()
        });
    });
}

fn pkce(c: &mut Criterion) {
    // RFC 7636 Appendix B.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    assert!(oauth::crypto::pkce_matches(verifier, challenge));
    c.bench_function("pkce/s256", |b| {
        b.iter(|| oauth::crypto::pkce_matches(black_box(verifier), black_box(challenge)));
    });
}

criterion_group!(benches, verify, pkce);
criterion_main!(benches);
