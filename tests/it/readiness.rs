//! `/healthz` and `/readyz` across a database outage.

use std::time::Duration;

use crate::support::{ServerProcess, http};

#[tokio::test]
async fn https_deployments_send_hsts_and_http_ones_do_not() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let https = ServerProcess::start(
        "serve",
        &[
            ("DATABASE_URL", url.as_str()),
            ("CROSSTRADE_PUBLIC_URL", "https://app.crosstrade.example"),
        ],
    );
    let response = http()
        .get(https.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let metadata: serde_json::Value = response.json().await.unwrap();
    assert_eq!(metadata["issuer"], "https://app.crosstrade.example");
    assert!(https.terminate().success());
    let plain = ServerProcess::start("serve", &[("DATABASE_URL", url.as_str())]);
    let response = http().get(plain.url("/healthz")).send().await.unwrap();
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
    assert!(plain.terminate().success());
}

#[tokio::test]
async fn readyz_follows_the_database_without_a_restart() {
    let private = testkit::private_cluster();
    let url = private.cluster.url("postgres");
    let server = ServerProcess::start(
        "serve",
        &[
            ("DATABASE_URL", url.as_str()),
            ("CROSSTRADE_DATABASE__ACQUIRE_TIMEOUT_MS", "1000"),
        ],
    );
    let client = http();

    let ready = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ready"})
    );

    let cluster = private.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();

    let started = std::time::Instant::now();
    let down = client.get(server.url("/readyz")).send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "readyz hung: {:?}",
        started.elapsed()
    );
    assert_eq!(down.status(), 503);
    assert_eq!(down.headers()["content-type"], "application/json");
    assert_eq!(
        down.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({
            "status": "unavailable",
            "error": "server_error",
            "message": "the database is not reachable",
        })
    );
    // The process itself is up.
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let cluster = private.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.start())
        .await
        .unwrap()
        .unwrap();

    let mut recovered = false;
    for _ in 0..50 {
        if client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "readyz did not return to 200; logs:\n{}",
        server.logs()
    );
    assert!(server.terminate().success());
    // This process restarted the cluster, so it is PostgreSQL's parent: stop and reap it here.
    let cluster = private.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();
}
