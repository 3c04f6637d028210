//! B9, B10 and the full flow for clients identified by a Client ID Metadata Document, served by
//! a document server on loopback (allowed only by the test setting).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode as AxumStatus, Uri};
use axum::response::{IntoResponse, Response as AxumResponse};
use oauth::CimdSettings;
use reqwest::StatusCode;
use serde_json::{Value, json};
use store::users::Tier;

use crate::support::{
    Browser, Flow, PASSWORD, Server, assert_oauth_error, authorize_url, count, hidden, pkce,
};

const REDIRECT: &str = "http://127.0.0.1/callback";
const REQUESTED: &str = "http://127.0.0.1:53123/callback";

#[derive(Clone, Default)]
struct Served {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Option<Duration>,
    /// Sent in 1 KiB chunks without a Content-Length.
    chunked: bool,
}

/// A server of documents on 127.0.0.1 that counts every request it receives.
#[derive(Clone, Default)]
struct Documents {
    served: Arc<Mutex<HashMap<String, Served>>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Documents {
    async fn start() -> (Self, String) {
        let documents = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(documents.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (documents, base)
    }

    fn set(&self, path: &str, served: Served) {
        self.served.lock().unwrap().insert(path.to_owned(), served);
    }

    fn json(&self, path: &str, document: &Value, cache_control: Option<&str>) {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(value) = cache_control {
            headers.push(("cache-control", value.to_owned()));
        }
        self.set(
            path,
            Served {
                status: 200,
                headers,
                body: document.to_string(),
                ..Served::default()
            },
        );
    }

    fn hits(&self) -> usize {
        self.hits.lock().unwrap().len()
    }
}

async fn serve(State(documents): State<Documents>, uri: Uri) -> AxumResponse {
    let path = uri.path().to_owned();
    documents.hits.lock().unwrap().push(path.clone());
    let served = documents.served.lock().unwrap().get(&path).cloned();
    let Some(served) = served else {
        return AxumStatus::NOT_FOUND.into_response();
    };
    if let Some(delay) = served.delay {
        tokio::time::sleep(delay).await;
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &served.headers {
        headers.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    let status = AxumStatus::from_u16(served.status).unwrap();
    if served.chunked {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = served
            .body
            .into_bytes()
            .chunks(1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
        return (status, headers, body).into_response();
    }
    (status, headers, served.body).into_response()
}

fn test_settings() -> CimdSettings {
    CimdSettings {
        allow_loopback: true,
        fetch_timeout: Duration::from_millis(500),
        max_document_bytes: 5 * 1024,
        ..unlimited()
    }
}

/// Production settings without the fetch limits and the negative cache, for tests that watch
/// every fetch (the limits and the cache have tests of their own).
fn unlimited() -> CimdSettings {
    CimdSettings {
        fetches_per_address_per_minute: 10_000,
        fetches_per_minute: 10_000,
        negative_cache: Duration::ZERO,
        ..CimdSettings::default()
    }
}

/// The page says only that the document could not be fetched: no network or TLS detail.
fn assert_not_fetched(html: &str) {
    let alert = html
        .split_once(r#"role="alert">"#)
        .and_then(|(_, rest)| rest.split_once("</p>"))
        .map_or_else(
            || panic!("no alert: {html}"),
            |(alert, _)| testkit::oauth::unescape(alert),
        );
    assert_eq!(
        alert,
        "CrossTrade could not use this application's client metadata document: the client \
         metadata document could not be fetched."
    );
}

fn document(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Claude Code",
        "redirect_uris": [REDIRECT, "http://localhost/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

/// An authorization request that must end on an error page: 400, never a redirect.
async fn refused(server: &Server, client_id: &str) -> String {
    let url = authorize_url(server, client_id, REQUESTED, &pkce().challenge, &[]);
    let response = server.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{client_id}");
    assert!(response.headers().get("location").is_none());
    assert_eq!(response.headers()["cache-control"], "no-store");
    let html = response.text().await.unwrap();
    assert!(html.contains("client metadata document"), "{html}");
    html
}

/// An authorization request that must reach the sign-in page.
async fn accepted(server: &Server, client_id: &str) -> String {
    let url = authorize_url(server, client_id, REQUESTED, &pkce().challenge, &[]);
    let response = server.http.get(&url).send().await.unwrap();
    let status = response.status();
    let html = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Sign in"), "{html}");
    html
}

async fn token_refuses(server: &Server, client_id: &str) {
    let response = server
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", "whatever"),
            ("redirect_uri", REQUESTED),
            ("client_id", client_id),
            ("code_verifier", &pkce().verifier),
        ])
        .await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn metadata_advertises_cimd_with_public_clients() {
    let server = Server::start().await;
    let body: Value = server
        .http
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["client_id_metadata_document_supported"], true);
    assert_eq!(
        body["token_endpoint_auth_methods_supported"],
        json!(["none"])
    );
}

#[tokio::test]
async fn b9_malformed_urls_are_refused_without_a_fetch() {
    let (documents, base) = Documents::start().await;
    documents.json("/c", &document(&format!("{base}/c")), None);
    let server = Server::start_cimd(test_settings()).await;
    let port = base.rsplit(':').next().unwrap();
    for bad in [
        format!("{base}/c#frag"),
        format!("{base}/c?x=1"),
        format!("http://user@127.0.0.1:{port}/c"),
        format!("http://user:pw@127.0.0.1:{port}/c"),
        format!("{base}/a/../c"),
        format!("{base}/./c"),
        format!("{base}/a/%2e%2e/c"),
        format!("{base}/"),
        base.clone(),
        // http is allowed (by the test setting) only on a loopback address.
        "http://app.example/c".to_owned(),
        format!("{base}/{}", "x".repeat(2100)),
    ] {
        refused(&server, &bad).await;
        token_refuses(&server, &bad).await;
    }
    assert_eq!(documents.hits(), 0, "nothing was fetched");
    assert_eq!(
        count(&server, "SELECT count(*) FROM oauth_clients").await,
        0
    );
}

fn resolving(names: &[(&str, &[&str])]) -> CimdSettings {
    CimdSettings {
        static_hosts: names
            .iter()
            .map(|(name, ips)| {
                (
                    (*name).to_owned(),
                    ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                )
            })
            .collect(),
        fetch_timeout: Duration::from_millis(500),
        ..unlimited()
    }
}

#[tokio::test]
async fn b9_loopback_is_refused_without_the_test_setting() {
    let (documents, base) = Documents::start().await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    documents.json("/c", &document(&format!("{base}/c")), None);
    let server = Server::start_cimd(resolving(&[
        ("loopback.example", &["127.0.0.1"]),
        ("loopback6.example", &["::1"]),
    ]))
    .await;
    for (url, reason) in [
        (format!("{base}/c"), "must use https"),
        (format!("https://127.0.0.1:{port}/c"), "not an IP address"),
        (format!("https://[::1]:{port}/c"), "not an IP address"),
        (format!("https://localhost:{port}/c"), "public host"),
        (format!("https://2130706433:{port}/c"), "not an IP address"),
        (
            format!("https://loopback.example:{port}/c"),
            "could not be fetched",
        ),
        (
            format!("https://loopback6.example:{port}/c"),
            "could not be fetched",
        ),
    ] {
        let html = refused(&server, &url).await;
        assert!(html.contains(reason), "{url}: {html}");
        if reason == "could not be fetched" {
            assert_not_fetched(&html);
        }
        token_refuses(&server, &url).await;
    }
    assert_eq!(documents.hits(), 0, "no connection reached the server");
}

#[tokio::test]
async fn b9_private_and_metadata_addresses_are_refused_after_resolution() {
    let names: &[(&str, &[&str])] = &[
        ("ten.example", &["10.0.0.1"]),
        ("rfc1918.example", &["172.16.5.4"]),
        ("home.example", &["192.168.1.1"]),
        ("metadata.example", &["169.254.169.254"]),
        ("cgnat.example", &["100.64.0.1"]),
        ("zero.example", &["0.0.0.0"]),
        ("multicast.example", &["224.0.0.1"]),
        ("ec2v6.example", &["fd00:ec2::254"]),
        ("linklocal6.example", &["fe80::1"]),
        ("ula.example", &["fc00::1"]),
        ("mapped.example", &["::ffff:169.254.169.254"]),
        ("nat64.example", &["64:ff9b::a9fe:a9fe"]),
        // A public and a private answer together: refused, not raced.
        ("rebind.example", &["93.184.216.34", "10.0.0.1"]),
    ];
    let server = Server::start_cimd(resolving(names)).await;
    for (name, _) in names {
        let url = format!("https://{name}/client.json");
        let html = refused(&server, &url).await;
        assert_not_fetched(&html);
    }
    // Addresses written in the URL are refused by form, before any resolution.
    for url in [
        "https://10.0.0.1/client.json",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/latest/meta-data",
        "https://[::ffff:a9fe:a9fe]/client.json",
    ] {
        let html = refused(&server, url).await;
        assert!(html.contains("not an IP address"), "{url}: {html}");
    }
    assert_eq!(
        count(&server, "SELECT count(*) FROM oauth_clients").await,
        0
    );
}

#[tokio::test]
async fn b9_redirects_are_never_followed() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(test_settings()).await;
    let original = format!("{base}/moved");
    documents.json("/here", &document(&original), None);
    let targets = [
        (
            "/to-metadata",
            "http://169.254.169.254/latest/meta-data".to_owned(),
        ),
        ("/to-private", "https://10.0.0.1/client.json".to_owned()),
        ("/to-ula", "https://[fd00:ec2::254]/x".to_owned()),
        ("/moved", format!("{base}/here")),
    ];
    for (path, target) in &targets {
        for status in [301, 302, 303, 307, 308] {
            documents.set(
                path,
                Served {
                    status,
                    headers: vec![("location", target.clone())],
                    ..Served::default()
                },
            );
            let html = refused(&server, &format!("{base}{path}")).await;
            assert_not_fetched(&html);
        }
    }
    let hits = documents.hits.lock().unwrap().clone();
    assert_eq!(hits.len(), targets.len() * 5);
    assert!(!hits.contains(&"/here".to_owned()), "targets never fetched");
}

#[tokio::test]
async fn b9_size_and_time_are_capped() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(test_settings()).await;

    let url = format!("{base}/big");
    let mut big = document(&url);
    big["padding"] = json!("x".repeat(6 * 1024));
    documents.json("/big", &big, None);
    let html = refused(&server, &url).await;
    assert_not_fetched(&html);

    // Without a Content-Length: counted while it streams.
    let url = format!("{base}/chunked");
    let mut big = document(&url);
    big["padding"] = json!("x".repeat(6 * 1024));
    documents.set(
        "/chunked",
        Served {
            status: 200,
            headers: vec![("content-type", "application/json".to_owned())],
            body: big.to_string(),
            chunked: true,
            ..Served::default()
        },
    );
    let html = refused(&server, &url).await;
    assert_not_fetched(&html);
    // A document under the cap, streamed, is accepted.
    let url = format!("{base}/chunked-ok");
    documents.set(
        "/chunked-ok",
        Served {
            status: 200,
            headers: vec![("content-type", "application/json; charset=utf-8".to_owned())],
            body: document(&url).to_string(),
            chunked: true,
            ..Served::default()
        },
    );
    accepted(&server, &url).await;

    let url = format!("{base}/slow");
    documents.set(
        "/slow",
        Served {
            status: 200,
            headers: vec![("content-type", "application/json".to_owned())],
            body: document(&url).to_string(),
            delay: Some(Duration::from_secs(3)),
            ..Served::default()
        },
    );
    let started = std::time::Instant::now();
    let html = refused(&server, &url).await;
    assert_not_fetched(&html);
    assert!(started.elapsed() < Duration::from_secs(2));

    let url = format!("{base}/missing");
    let html = refused(&server, &url).await;
    assert_not_fetched(&html);
}

#[tokio::test]
async fn b9_document_rules_and_invalid_documents_are_not_cached() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(test_settings()).await;
    let url = format!("{base}/client.json");
    let cases: Vec<(&str, Value)> = vec![
        ("client_id is not its URL", {
            let mut d = document(&url);
            d["client_id"] = json!(format!("{url}/"));
            d
        }),
        ("client_id is not its URL", {
            let mut d = document(&url);
            d.as_object_mut().unwrap().remove("client_id");
            d
        }),
        ("no client_name", {
            let mut d = document(&url);
            d.as_object_mut().unwrap().remove("client_name");
            d
        }),
        ("no client_name", {
            let mut d = document(&url);
            d["client_name"] = json!("  ");
            d
        }),
        ("client_name must be at most 200 characters", {
            let mut d = document(&url);
            d["client_name"] = json!("x".repeat(201));
            d
        }),
        (
            "client_name must be at most 200 characters without control characters",
            {
                let mut d = document(&url);
                d["client_name"] = json!("Claude\u{202e}edoC");
                d
            },
        ),
        ("redirect_uris is required", {
            let mut d = document(&url);
            d.as_object_mut().unwrap().remove("redirect_uris");
            d
        }),
        ("uses http on a non-loopback host", {
            let mut d = document(&url);
            d["redirect_uris"] = json!(["http://evil.example/cb"]);
            d
        }),
        ("scheme \"javascript\" is not allowed", {
            let mut d = document(&url);
            d["redirect_uris"] = json!(["javascript:alert(1)"]);
            d
        }),
        ("token_endpoint_auth_method \"none\"", {
            let mut d = document(&url);
            d["token_endpoint_auth_method"] = json!("client_secret_basic");
            d
        }),
        ("logo_uri must be an https URL", {
            let mut d = document(&url);
            d["logo_uri"] = json!("http://app.example/logo.png");
            d
        }),
        ("client_uri must be an https URL", {
            let mut d = document(&url);
            d["client_uri"] = json!("javascript:alert(1)");
            d
        }),
        ("not a JSON object", json!(["a"])),
    ];
    let mut expected_hits = 0;
    for (reason, bad) in &cases {
        documents.json("/client.json", bad, Some("max-age=3600"));
        for _ in 0..2 {
            let html = refused(&server, &url).await;
            assert!(
                testkit::oauth::unescape(&html).contains(reason),
                "{reason}: {html}"
            );
            expected_hits += 1;
            assert_eq!(documents.hits(), expected_hits, "fetched again: {reason}");
        }
    }
    // Not JSON, or not served as JSON.
    for (content_type, body, reason) in [
        (
            Some("application/json"),
            "<html>".to_owned(),
            "not valid JSON",
        ),
        (
            Some("text/html"),
            document(&url).to_string(),
            "could not be fetched",
        ),
        (
            Some("text/plain"),
            document(&url).to_string(),
            "could not be fetched",
        ),
        (None, document(&url).to_string(), "could not be fetched"),
    ] {
        documents.set(
            "/client.json",
            Served {
                status: 200,
                headers: content_type
                    .map(|t| vec![("content-type", t.to_owned())])
                    .unwrap_or_default(),
                body,
                ..Served::default()
            },
        );
        let html = refused(&server, &url).await;
        assert!(html.contains(reason), "{reason}: {html}");
    }
    // A more specific JSON type is fine.
    documents.set(
        "/other.json",
        Served {
            status: 200,
            headers: vec![("content-type", "application/oauth-client+json".to_owned())],
            body: document(&format!("{base}/other.json")).to_string(),
            ..Served::default()
        },
    );
    accepted(&server, &format!("{base}/other.json")).await;
    assert_eq!(
        count(&server, "SELECT count(*) FROM oauth_clients").await,
        1,
        "an invalid document is never stored (only other.json is)"
    );
    token_refuses(&server, &url).await;

    // Fixed: accepted, and then the redirect URI rules of registration apply (C2/C3).
    documents.json("/client.json", &document(&url), None);
    accepted(&server, &url).await;
    for wrong in [
        "http://127.0.0.1:53123/other",
        "https://127.0.0.1:53123/callback",
        "http://evil.example/callback",
    ] {
        let response = server
            .http
            .get(authorize_url(&server, &url, wrong, &pkce().challenge, &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get("location").is_none());
    }
}

#[tokio::test]
async fn b9_valid_documents_are_cached_within_bounds() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(test_settings()).await;

    let url = format!("{base}/cached.json");
    documents.json("/cached.json", &document(&url), Some("public, max-age=600"));
    accepted(&server, &url).await;
    accepted(&server, &url).await;
    assert_eq!(documents.hits(), 1, "second authorization within max-age");
    server.clock.advance(chrono::TimeDelta::seconds(599));
    accepted(&server, &url).await;
    assert_eq!(documents.hits(), 1);
    server.clock.advance(chrono::TimeDelta::seconds(2));
    accepted(&server, &url).await;
    assert_eq!(documents.hits(), 2, "fetched again after max-age");

    // no-store and tiny max-age are raised to the 60 s minimum.
    let url = format!("{base}/nostore.json");
    documents.json("/nostore.json", &document(&url), Some("no-store"));
    accepted(&server, &url).await;
    accepted(&server, &url).await;
    assert_eq!(documents.hits(), 3);
    server.clock.advance(chrono::TimeDelta::seconds(61));
    accepted(&server, &url).await;
    assert_eq!(documents.hits(), 4);

    // A huge max-age is capped at 24 hours; no header means one hour.
    let url = format!("{base}/forever.json");
    documents.json("/forever.json", &document(&url), Some("max-age=99999999"));
    accepted(&server, &url).await;
    let url2 = format!("{base}/default.json");
    documents.json("/default.json", &document(&url2), None);
    accepted(&server, &url2).await;
    assert_eq!(documents.hits(), 6);
    server.clock.advance(chrono::TimeDelta::seconds(3601));
    accepted(&server, &url).await;
    accepted(&server, &url2).await;
    assert_eq!(
        documents.hits(),
        7,
        "the default hour passed; 24 hours did not"
    );
    server.clock.advance(chrono::TimeDelta::seconds(24 * 3600));
    accepted(&server, &url).await;
    assert_eq!(documents.hits(), 8);

    // A stored document that has expired and now fails is not used.
    documents.json("/forever.json", &json!({"client_id": "nope"}), None);
    server
        .clock
        .advance(chrono::TimeDelta::seconds(24 * 3600 + 1));
    refused(&server, &url).await;
}

/// Signs in through an authorization request for `client_id` and returns the flow.
async fn signed_in(server: &Server, client_id: &str, email: &str) -> Flow {
    let mut browser = Browser::default();
    let signed_in = browser
        .sign_in(
            server,
            &authorize_url(server, client_id, REQUESTED, &pkce().challenge, &[]),
            email,
            PASSWORD,
        )
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    Flow {
        client_id: client_id.to_owned(),
        redirect_uri: REQUESTED.to_owned(),
        pkce: pkce(),
        browser,
    }
}

#[tokio::test]
async fn full_flow_with_a_document_client() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(test_settings()).await;
    let user = server.user("cimd@example.com", Tier::Pro).await;
    let url = format!("{base}/oauth/client-metadata.json");
    documents.json(
        "/oauth/client-metadata.json",
        &document(&url),
        Some("max-age=3600"),
    );

    let mut flow = signed_in(&server, &url, "cimd@example.com").await;
    let (_, _, html) = flow.consent_page(&server, "mcp:read mcp:trade").await;
    assert!(html.contains("Claude Code"), "{html}");
    assert!(
        html.contains(r#"<code class="client-host">127.0.0.1</code>"#),
        "the client_id host is shown: {html}"
    );
    assert!(
        html.contains("loopback-only"),
        "loopback-only flagged: {html}"
    );
    let code = flow.code(&server, "mcp:read mcp:trade", "mcp:trade").await;
    let response = flow.exchange(&server, &code).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["scope"], "mcp:read mcp:trade");
    assert_eq!(documents.hits(), 1, "one fetch for the whole flow");
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM security_events WHERE kind = 'client_registered'
             AND detail->>'source' = 'client_id_metadata_document'"
        )
        .await,
        1
    );

    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refreshed = flow.refresh(&server, &refresh_token).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    let next = refreshed["refresh_token"].as_str().unwrap().to_owned();

    // AI Clients lists it with the document's name.
    let grants = oauth::grants::list_grants(&server.state, user)
        .await
        .unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].client_id, url);
    assert_eq!(grants[0].client_name.as_deref(), Some("Claude Code"));
    assert_eq!(grants[0].redirect_uri, REQUESTED);

    // RFC 7009 revocation with the document URL as client_id ends the grant.
    let revoked = server
        .form(
            "/v1/oauth/mcp/revoke",
            &[
                ("token", &next),
                ("token_type_hint", "refresh_token"),
                ("client_id", &url),
            ],
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let after = flow.refresh(&server, &next).await;
    assert_oauth_error(after, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM grants WHERE revoked_at IS NOT NULL"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_document_that_drops_a_redirect_uri_stops_new_authorizations_with_it() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(test_settings()).await;
    server.user("drop@example.com", Tier::Pro).await;
    let url = format!("{base}/client.json");
    documents.json("/client.json", &document(&url), Some("max-age=60"));
    let mut flow = signed_in(&server, &url, "drop@example.com").await;
    let tokens = flow.tokens(&server, "mcp:read", "mcp:read").await;

    // A consent screen shown under the old document …
    let (transaction, csrf, _) = flow.consent_page(&server, "mcp:read").await;
    // … and then the document drops the redirect URI in use.
    let mut changed = document(&url);
    changed["redirect_uris"] = json!(["https://app.example/callback"]);
    documents.json("/client.json", &changed, Some("max-age=60"));
    server.clock.advance(chrono::TimeDelta::seconds(61));
    let html = {
        let response = flow
            .browser
            .get(
                &server,
                &authorize_url(&server, &url, REQUESTED, &pkce().challenge, &[]),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        response.text().await.unwrap()
    };
    assert!(html.contains("not registered"), "{html}");
    let response = flow
        .browser
        .post(
            &server,
            "/v1/oauth/mcp/consent",
            &[
                ("transaction", &transaction),
                ("csrf", &csrf),
                ("decision", "allow"),
                ("scope", "mcp:read"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("no longer registered")
    );

    // The grant made before the change keeps working until it is revoked (decision).
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(
        flow.refresh(&server, refresh_token).await.status(),
        StatusCode::OK
    );
    // The new redirect URI works.
    let response = server
        .http
        .get(authorize_url(
            &server,
            &url,
            "https://app.example/callback",
            &pkce().challenge,
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn b10_document_strings_are_escaped_and_hosts_shown() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(test_settings()).await;
    server.user("b10@example.com", Tier::Pro).await;
    let url = format!("{base}/evil.json");
    let mut evil = document(&url);
    evil["client_name"] = json!("<script>alert(1)</script>\"'&");
    evil["redirect_uris"] = json!([REDIRECT, "https://app.example/callback"]);
    evil["logo_uri"] = json!("https://app.example/logo.png");
    documents.json("/evil.json", &evil, None);

    let mut flow = signed_in(&server, &url, "b10@example.com").await;
    let (_, _, html) = flow.consent_page(&server, "mcp:read").await;
    assert!(!html.contains("<script>alert(1)"), "{html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#39;&#38;"),
        "{html}"
    );
    assert!(html.contains(r#"<code class="client-host">127.0.0.1</code>"#));
    assert!(
        !html.contains("loopback-only"),
        "has an https redirect too: {html}"
    );

    // The redirect host is what a web redirect shows.
    let page = flow
        .browser
        .get(
            &server,
            &authorize_url(
                &server,
                &url,
                "https://app.example/callback",
                &pkce().challenge,
                &[],
            ),
        )
        .await;
    let html = page.text().await.unwrap();
    assert!(html.contains("<code>app.example</code>"), "{html}");
    assert!(!hidden(&html, "transaction").is_empty());
}

#[tokio::test]
async fn registration_and_document_clients_do_not_mix() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(test_settings()).await;
    server.user("mix@example.com", Tier::Pro).await;
    let url = format!("{base}/client.json");
    documents.json("/client.json", &document(&url), None);
    let mut flow = signed_in(&server, &url, "mix@example.com").await;
    let code = flow.code(&server, "mcp:read", "mcp:read").await;

    // A registered client cannot redeem the document client's code (D3).
    let other = server.client(REDIRECT).await;
    let response = server
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REQUESTED),
            ("client_id", &other),
            ("code_verifier", &flow.pkce.verifier),
        ])
        .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // Document clients are not counted against the hourly registration limit.
    assert_eq!(
        count(&server, "SELECT count(*) FROM registration_events").await,
        1
    );
}

#[tokio::test]
async fn real_client_documents_are_accepted() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(test_settings()).await;
    // Claude's document lists a grant this server does not support; ChatGPT-style documents may
    // carry a scope of their own. Both are ignored, not refused.
    let url = format!("{base}/oauth/mcp-oauth-client-metadata");
    documents.json(
        "/oauth/mcp-oauth-client-metadata",
        &json!({
            "client_id": url,
            "client_name": "Claude",
            "client_uri": "https://claude.ai",
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
            "grant_types": [
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:jwt-bearer"
            ],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "scope": "openid profile",
        }),
        None,
    );
    let response = server
        .http
        .get(authorize_url(
            &server,
            &url,
            "https://claude.ai/api/mcp/auth_callback",
            &pkce().challenge,
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stored: Value = sqlx::query_scalar("SELECT metadata FROM oauth_clients")
        .fetch_one(&server.db.pool().await)
        .await
        .unwrap();
    assert_eq!(
        stored["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert!(stored.get("scope").is_none());

    // ChatGPT's declares private_key_jwt with a JWKS: accepted, served as a public client.
    let url = format!("{base}/oauth/chatgpt/client.json");
    documents.json(
        "/oauth/chatgpt/client.json",
        &json!({
            "client_id": url,
            "client_uri": "https://chatgpt.com/",
            "redirect_uris": ["https://chatgpt.com/connector/oauth/abc123"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "ChatGPT",
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "RS256",
            "jwks_uri": "https://chatgpt.com/oauth/jwks.json",
        }),
        None,
    );
    let response = server
        .http
        .get(authorize_url(
            &server,
            &url,
            "https://chatgpt.com/connector/oauth/abc123",
            &pkce().challenge,
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stored: Value =
        sqlx::query_scalar("SELECT metadata FROM oauth_clients WHERE client_id = $1")
            .bind(&url)
            .fetch_one(&server.db.pool().await)
            .await
            .unwrap();
    assert_eq!(stored["token_endpoint_auth_method"], "none");

    // Claude Code's: portless loopback redirect URIs, no application_type (CLIENTS row 3).
    let url = format!("{base}/oauth/claude-code-client-metadata");
    documents.json(
        "/oauth/claude-code-client-metadata",
        &json!({
            "client_id": url,
            "client_name": "Claude Code",
            "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }),
        None,
    );
    let response = server
        .http
        .get(authorize_url(
            &server,
            &url,
            "http://localhost:8080/callback",
            &pkce().challenge,
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// An https document server on 127.0.0.1 with a certificate for `name`, serving
/// `document(port)`; returns the port, the certificate (DER) and the request heads it received.
async fn tls_documents(
    name: &str,
    document: impl Fn(u16) -> String,
) -> (u16, Vec<u8>, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = document(port);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let heads = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let heads = heads.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    heads.lock().unwrap().push("TLS handshake failed".into());
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                heads
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Cache-Control: max-age=300\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, cert.to_vec(), seen)
}

#[tokio::test]
async fn https_documents_are_fetched_over_verified_tls_from_the_vetted_address() {
    let name = "docs.cimd-test.example";
    let url_for = |port: u16| format!("https://{name}:{port}/oauth/client.json");
    let (port, cert, heads) =
        tls_documents(name, |port| document(&url_for(port)).to_string()).await;
    let url = url_for(port);
    let settings = |roots: Vec<Vec<u8>>| CimdSettings {
        allow_loopback: true,
        static_hosts: vec![(name.to_owned(), vec!["127.0.0.1".parse().unwrap()])],
        extra_roots: roots,
        fetch_timeout: Duration::from_secs(2),
        ..unlimited()
    };

    // Trusted certificate: fetched, with the host name for SNI and Host.
    let server = Server::start_cimd(settings(vec![cert])).await;
    accepted(&server, &url).await;
    {
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(
            heads[0].starts_with("GET /oauth/client.json HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[0]
                .to_ascii_lowercase()
                .contains(&format!("host: {name}:{port}\r\n")),
            "{}",
            heads[0]
        );
    }

    // A certificate nobody vouches for: refused.
    let server = Server::start_cimd(settings(Vec::new())).await;
    let html = refused(&server, &url).await;
    assert_not_fetched(&html);

    // A certificate for another name: refused.
    let (other_port, other_cert, _) = tls_documents("elsewhere.example", |port| {
        document(&url_for(port)).to_string()
    })
    .await;
    let server = Server::start_cimd(settings(vec![other_cert])).await;
    let html = refused(&server, &url_for(other_port)).await;
    assert_not_fetched(&html);
}

/// An authorization request naming `client_id`, sent from another loopback address.
async fn from_address(server: &Server, ip: &str, client_id: &str) -> reqwest::Response {
    let endpoint = crate::support::Endpoint::from_address(&server.base, ip.parse().unwrap());
    let url = authorize_url(&endpoint, client_id, REQUESTED, &pkce().challenge, &[]);
    endpoint.http.get(&url).send().await.unwrap()
}

#[tokio::test]
async fn fetch_failures_look_the_same_whatever_the_network_said() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(CimdSettings {
        static_hosts: vec![(
            "tls.cimd-test.example".to_owned(),
            vec!["127.0.0.1".parse().unwrap()],
        )],
        ..test_settings()
    })
    .await;
    // Connection refused: a port nobody listens on any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    // Timeout: accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    documents.set(
        "/teapot",
        Served {
            status: 418,
            ..Served::default()
        },
    );
    let port = base.rsplit(':').next().unwrap();
    let mut pages = Vec::new();
    for url in [
        format!("http://127.0.0.1:{closed_port}/client.json"),
        format!("http://127.0.0.1:{silent_port}/client.json"),
        // TLS: an https URL whose server speaks plain HTTP.
        format!("https://tls.cimd-test.example:{port}/client.json"),
        // DNS: a name that does not resolve.
        "https://nowhere.invalid/client.json".to_owned(),
        format!("{base}/teapot"),
        format!("{base}/missing"),
    ] {
        let html = refused(&server, &url).await;
        assert_not_fetched(&html);
        pages.push(html);
    }
    assert!(pages.windows(2).all(|w| w[0] == w[1]), "{pages:#?}");
}

#[tokio::test]
async fn a_failed_url_is_remembered_for_a_minute_without_fetching() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(CimdSettings {
        negative_cache: Duration::from_secs(60),
        ..test_settings()
    })
    .await;
    let broken = format!("{base}/broken.json");
    for _ in 0..5 {
        assert_not_fetched(&refused(&server, &broken).await);
    }
    assert_eq!(documents.hits(), 1, "one fetch for five requests");

    // An invalid document too, with its reason.
    let invalid = format!("{base}/invalid.json");
    let mut wrong = document(&invalid);
    wrong["client_id"] = json!("https://elsewhere.example/c");
    documents.json("/invalid.json", &wrong, None);
    for _ in 0..3 {
        let html = refused(&server, &invalid).await;
        assert!(html.contains("client_id is not its URL"), "{html}");
    }
    assert_eq!(documents.hits(), 2);

    // Fixed documents are seen once the minute is over.
    documents.json("/broken.json", &document(&broken), None);
    documents.json("/invalid.json", &document(&invalid), None);
    server.clock.advance(chrono::TimeDelta::seconds(59));
    refused(&server, &broken).await;
    assert_eq!(documents.hits(), 2);
    server.clock.advance(chrono::TimeDelta::seconds(1));
    accepted(&server, &broken).await;
    accepted(&server, &invalid).await;
    assert_eq!(documents.hits(), 4);
}

#[tokio::test]
async fn fetches_are_limited_per_address_and_per_replica() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(CimdSettings {
        fetches_per_address_per_minute: 3,
        fetches_per_minute: 5,
        ..test_settings()
    })
    .await;
    let url = |i: u32| {
        let url = format!("{base}/c{i}.json");
        documents.json(&format!("/c{i}.json"), &document(&url), None);
        url
    };
    for i in 0..3 {
        let response = from_address(&server, "127.0.0.3", &url(i)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let limited = from_address(&server, "127.0.0.3", &url(3)).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "60");
    assert!(limited.headers().get("location").is_none());
    // A stored document costs no fetch, so it is served to a limited address.
    let stored = from_address(&server, "127.0.0.3", &url(0)).await;
    assert_eq!(stored.status(), StatusCode::OK);

    // Another address has its own budget, within the replica's.
    server.clock.advance(chrono::TimeDelta::seconds(20));
    for i in 4..6 {
        let response = from_address(&server, "127.0.0.4", &url(i)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let replica = from_address(&server, "127.0.0.4", &url(6)).await;
    assert_eq!(replica.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(replica.headers()["retry-after"], "40");
    assert_eq!(documents.hits(), 5);

    // A client that has completed an authorization is still refreshed when its document
    // expires: others cannot use up its budget.
    sqlx::query(
        "UPDATE oauth_clients SET first_authorized_at = $2, metadata_expires_at = $2
         WHERE client_id = $1",
    )
    .bind(url(0))
    .bind(server.clock.now())
    .execute(&server.db.pool().await)
    .await
    .unwrap();
    let proven = from_address(&server, "127.0.0.5", &url(0)).await;
    assert_eq!(proven.status(), StatusCode::OK);
    assert_eq!(documents.hits(), 6);
    let unproven = from_address(&server, "127.0.0.5", &url(7)).await;
    assert_eq!(unproven.status(), StatusCode::TOO_MANY_REQUESTS);

    server.clock.advance(chrono::TimeDelta::seconds(40));
    let later = from_address(&server, "127.0.0.3", &url(3)).await;
    assert_eq!(later.status(), StatusCode::OK);
    assert_eq!(documents.hits(), 7);
}

#[tokio::test]
async fn one_host_keeps_a_bounded_number_of_unused_documents() {
    let (documents, base) = Documents::start().await;
    let server = Server::start_cimd(CimdSettings {
        max_unproven_clients_per_host: 3,
        ..test_settings()
    })
    .await;
    let url = |i: u32| {
        let url = format!("{base}/c{i}.json");
        documents.json(&format!("/c{i}.json"), &document(&url), None);
        url
    };
    accepted(&server, &url(0)).await;
    // A client that completed an authorization is never replaced.
    sqlx::query("UPDATE oauth_clients SET first_authorized_at = now() WHERE client_id = $1")
        .bind(url(0))
        .execute(&server.db.pool().await)
        .await
        .unwrap();
    for i in 1..=6 {
        accepted(&server, &url(i)).await;
        server.clock.advance(chrono::TimeDelta::seconds(1));
    }
    let mut stored: Vec<String> = sqlx::query_scalar("SELECT client_id FROM oauth_clients")
        .fetch_all(&server.db.pool().await)
        .await
        .unwrap();
    stored.sort();
    assert_eq!(stored, [url(0), url(4), url(5), url(6)]);
    // A replaced document is fetched again when named again.
    accepted(&server, &url(1)).await;
    assert_eq!(
        count(&server, "SELECT count(*) FROM oauth_clients").await,
        4
    );
}
