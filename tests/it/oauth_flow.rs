//! The OAuth flow through the real binary, with every log line captured: no secret may appear.

use store::users::Tier;
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
    let added = run(
        &env,
        &[
            "users",
            "add",
            "--email",
            "logs@example.com",
            "--tier",
            Tier::Elite.as_str(),
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let added_logs = stderr(&added);

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
