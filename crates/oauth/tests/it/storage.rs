//! H1–H3: nothing usable at rest; events recorded without secrets.

use store::users::Tier;

use crate::support::{Flow, PASSWORD, Server, count};

#[tokio::test]
async fn h1_a_database_dump_holds_no_usable_secret() {
    let server = Server::start().await;
    server.user("h@example.com", Tier::Elite).await;
    let mut flow = Flow::new(&server, "h@example.com").await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;
    let tokens: serde_json::Value = flow.exchange(&server, &code).await.json().await.unwrap();
    let refreshed: serde_json::Value = flow
        .refresh(&server, tokens["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let session = flow
        .browser
        .cookies
        .iter()
        .find(|(k, _)| k == "ct_session")
        .unwrap()
        .1
        .clone();

    // Every row of every table, as text.
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&server.db.pool().await)
            .await
            .unwrap();
    let mut dump = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {table} t"
        )))
        .fetch_all(&server.db.pool().await)
        .await
        .unwrap();
        dump.push_str(&rows.join("\n"));
    }
    for secret in [
        code.as_str(),
        tokens["access_token"].as_str().unwrap(),
        tokens["refresh_token"].as_str().unwrap(),
        refreshed["refresh_token"].as_str().unwrap(),
        refreshed["access_token"].as_str().unwrap(),
        &session,
        &flow.pkce.verifier,
        PASSWORD,
    ] {
        assert!(!dump.contains(secret), "a secret is stored in the clear");
    }
    // The audit trail exists for each step.
    for kind in [
        "client_registered",
        "signed_in",
        "consent_granted",
        "token_issued",
        "token_refreshed",
    ] {
        assert!(
            count(
                &server,
                &format!("SELECT count(*) FROM security_events WHERE kind = '{kind}'")
            )
            .await
                >= 1,
            "{kind}"
        );
    }
}
