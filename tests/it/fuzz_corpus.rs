//! The fuzz corpus (`fuzz/corpus/<target>/`) as ordinary tests: every file through its fuzz
//! target's body (the same code libFuzzer runs, included from `fuzz/src/bodies.rs`), and the
//! JSON-RPC, registration, token, revocation and authorization corpora over HTTP against a real
//! server, which must answer each with a clean 2xx, 3xx or 4xx and stay healthy.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::Value;
use testkit::oauth::{Flow, pkce};

use crate::support::server_with_user;

#[path = "../../fuzz/src/bodies.rs"]
mod bodies;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{} has only {} files",
        dir.display(),
        files.len()
    );
    files
}

#[test]
fn every_corpus_file_passes_its_fuzz_target() {
    let mut failures = Vec::new();
    for &(target, body) in bodies::TARGETS {
        for (path, data) in corpus(target) {
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "failed: {failures:#?}");
}

/// A clean answer: below 500 and, unless it has no body by design, a JSON object.
async fn assert_clean(what: &str, response: reqwest::Response) {
    let status = response.status();
    let body = response.bytes().await.unwrap();
    assert!(
        !status.is_server_error(),
        "{what}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    if (status != StatusCode::ACCEPTED && status != StatusCode::OK) || !body.is_empty() {
        let json: Value = serde_json::from_slice(&body).unwrap_or_else(|err| {
            panic!(
                "{what}: {status}, not JSON ({err}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        assert!(json.is_object() || json.is_array(), "{what}: {json}");
    }
}

#[tokio::test]
async fn the_corpus_over_http_gets_clean_answers_and_the_server_stays_healthy() {
    let email = "fuzz@example.com";
    let (_db, server, endpoint) = server_with_user(email).await;
    let mut flow = Flow::new(&endpoint, email).await;
    let tokens = flow
        .tokens(&endpoint, "mcp:read mcp:trade", "mcp:trade")
        .await;
    let access = tokens["access_token"].as_str().unwrap();
    let http = &endpoint.http;

    for (i, (path, data)) in corpus("jsonrpc_envelope").into_iter().enumerate() {
        let mut request = http
            .post(endpoint.resource())
            .bearer_auth(access)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(data);
        // Half the bodies with the header, half without: both eras' paths.
        if i % 2 == 0 {
            request = request.header("mcp-protocol-version", "2025-11-25");
        }
        assert_clean(&path.display().to_string(), request.send().await.unwrap()).await;
    }

    for (path, data) in corpus("registration_metadata") {
        let response = http
            .post(endpoint.url("/v1/oauth/mcp/register"))
            .header("content-type", "application/json")
            .body(data)
            .send()
            .await
            .unwrap();
        assert_clean(&path.display().to_string(), response).await;
    }

    for (path, data) in corpus("token_form") {
        let (headers, body) = bodies::split_form_input(&data);
        for route in ["/v1/oauth/mcp/token", "/v1/oauth/mcp/revoke"] {
            let mut request = http.post(endpoint.url(route)).body(body.to_vec());
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_bytes());
            }
            let response = request.send().await.unwrap();
            // Revocation answers 200 with no body (RFC 7009 §2.2).
            assert_clean(&format!("{route} {}", path.display()), response).await;
        }
        // The same bytes as an authorization request's query: a page, never a server error.
        let query = String::from_utf8_lossy(body);
        let response = http
            .get(format!(
                "{}?{query}",
                endpoint.url("/v1/oauth/mcp/authorize")
            ))
            .send()
            .await
            .unwrap();
        assert!(
            !response.status().is_server_error(),
            "authorize {}: {}",
            path.display(),
            response.status()
        );
    }

    // Every redirect URI of the corpus requested for a client registered with a loopback one.
    for (path, data) in corpus("redirect_uri") {
        let text = String::from_utf8_lossy(&data);
        let requested = text
            .split_once('\n')
            .map_or(&*text, |(_, requested)| requested);
        // A NUL state, which PostgreSQL text cannot store, once the redirect matches.
        let url = testkit::oauth::authorize_url(
            &endpoint,
            &flow.client_id,
            requested,
            &pkce().challenge,
            &[],
        )
        .replace("state=st-123", "state=%00");
        let response = flow.browser.get(&endpoint, &url).await;
        assert!(
            !response.status().is_server_error(),
            "authorize {}: {}",
            path.display(),
            response.status()
        );
    }

    let ready = http.get(endpoint.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ping = http
        .post(endpoint.resource())
        .bearer_auth(access)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), StatusCode::OK);
    drop(server);
}
