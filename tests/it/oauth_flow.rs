//! The OAuth flow through the real binary, with every log line captured: no secret may appear.

use testkit::oauth::{Endpoint, Flow, PASSWORD};

use crate::support::{ServerProcess, run, stderr};

#[tokio::test]
async fn a_full_flow_logs_no_secret() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CROSSTRADE_LOG__LEVEL", "debug"),
    ];
    let added_logs = crate::support::add_elite_user(&env, "logs@example.com");

    let server = ServerProcess::start("serve", &env);
    let endpoint = Endpoint::new(&server.url(""));
    let mut flow = Flow::new(&endpoint, "logs@example.com").await;
    let code = flow
        .code(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let tokens: serde_json::Value = flow.exchange(&endpoint, &code).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refreshed: serde_json::Value = flow
        .refresh(&endpoint, &refresh)
        .await
        .json()
        .await
        .unwrap();
    let revoked = endpoint
        .form(
            "/v1/oauth/mcp/revoke",
            &[
                ("token", refreshed["refresh_token"].as_str().unwrap()),
                ("client_id", &flow.client_id),
            ],
        )
        .await;
    assert_eq!(revoked.status(), 200);
    // A request with a bearer header and a token in the query string.
    let _ = endpoint
        .http
        .get(format!(
            "{}?access_token={access}",
            endpoint.url("/healthz")
        ))
        .header("authorization", format!("Bearer {access}"))
        .send()
        .await
        .unwrap();
    let status = server.terminate_keeping_logs();
    assert!(status.0.success());
    let logs = format!("{added_logs}\n{}", status.1);

    assert!(logs.contains("/v1/oauth/mcp/token"), "requests are logged");
    assert!(
        logs.contains("token_issued") && logs.contains("consent_granted"),
        "security events are logged"
    );
    let session = flow
        .browser
        .cookies
        .iter()
        .map(|(_, v)| v.clone())
        .collect::<Vec<_>>();
    let mut secrets = vec![
        PASSWORD.to_owned(),
        code,
        flow.pkce.verifier.clone(),
        access,
        refresh,
        refreshed["access_token"].as_str().unwrap().to_owned(),
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
    ];
    secrets.extend(session);
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(!logs.contains(&secret), "a secret reached the logs");
    }
}

#[tokio::test]
async fn a_database_dump_after_a_full_flow_holds_no_usable_secret() {
    use ed25519_dalek::SigningKey;

    let db = testkit::TestDb::new().await;
    let url = db.url();
    let master = "dump-test-master-secret-0123456789abcdef";
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CROSSTRADE_MASTER_SECRET", master),
    ];
    crate::support::add_elite_user(&env, "dump@example.com");
    let server = ServerProcess::start("serve", &env);
    let endpoint = Endpoint::new(&server.url(""));
    let mut flow = Flow::new(&endpoint, "dump@example.com").await;
    let code = flow
        .code(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let tokens: serde_json::Value = flow.exchange(&endpoint, &code).await.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refreshed: serde_json::Value = flow
        .refresh(&endpoint, &refresh)
        .await
        .json()
        .await
        .unwrap();
    let created = run(
        &env,
        &["addon-keys", "create", "--email", "dump@example.com"],
        "",
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let addon_key = crate::support::stdout(&created).trim().to_owned();
    assert!(addon_key.starts_with("ctak_"));

    let pg_dump = store::cluster::Binaries::locate().unwrap().path("pg_dump");
    // libpq refuses sqlx's own URL parameters; keep only those it knows.
    let mut libpq_url = url::Url::parse(&url).unwrap();
    let known: Vec<(String, String)> = libpq_url
        .query_pairs()
        .filter(|(key, _)| ["host", "port", "user", "password", "sslmode"].contains(&key.as_ref()))
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    libpq_url.query_pairs_mut().clear().extend_pairs(known);
    let libpq_url = libpq_url.to_string();
    let dump = std::process::Command::new(pg_dump)
        .args(["--data-only", "--dbname", &libpq_url])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8(dump.stdout).unwrap();
    // The dump is real: it holds the account, the grant, the tokens' hashes and the keys.
    for table in [
        "users",
        "grants",
        "refresh_tokens",
        "signing_keys",
        "addon_keys",
    ] {
        assert!(
            dump.contains(&format!("COPY public.{table} ")),
            "{table} missing"
        );
    }
    assert!(dump.contains("dump@example.com"));

    let mut secrets = vec![
        PASSWORD.to_owned(),
        master.to_owned(),
        code,
        flow.pkce.verifier.clone(),
        tokens["access_token"].as_str().unwrap().to_owned(),
        refresh,
        refreshed["access_token"].as_str().unwrap().to_owned(),
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
        addon_key.clone(),
        addon_key.trim_start_matches("ctak_").to_owned(),
    ];
    secrets.extend(flow.browser.cookies.iter().map(|(_, value)| value.clone()));
    for secret in &secrets {
        assert!(secret.len() >= 16, "{secret}");
        assert!(
            !dump.contains(secret.as_str()),
            "a usable secret is in the dump"
        );
    }
    // The signing keys' private halves are stored encrypted: no 32-byte window of the stored
    // bytes is the seed of the published public key.
    let pool = db.pool().await;
    let keys: Vec<(Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT public_key, private_key_encrypted FROM signing_keys")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(!keys.is_empty());
    for (public, stored) in keys {
        assert!(stored.len() > 32);
        for window in stored.windows(32) {
            let seed: [u8; 32] = window.try_into().unwrap();
            let derived = SigningKey::from_bytes(&seed).verifying_key();
            assert_ne!(derived.as_bytes().as_slice(), public.as_slice());
        }
    }
    let (status, logs) = server.terminate_keeping_logs();
    assert!(status.success());
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
    }
}
