//! A revoked Add-On key through the real server, by each way a person or an operator revokes:
//! the account API, the Add-On keys page and `users revoke-all`. A socket opened
//! with the key before the revocation is closed with 4003 whether or not it has said hello; it
//! never gets a welcome or a call, and never replaces the account's live Add-On.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::account::account_browser;
use crate::addon_path::{addon_connected, sim_options, trade_token};
use crate::support::{run, server_with_user, stderr, stdout, tools_call};

const KEY_REVOKED: u16 = 4003;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An Add-On socket, upgraded with `key`, that has not said hello.
async fn upgraded(addr: std::net::SocketAddr, key: &str) -> Ws {
    let mut request = format!("ws://{addr}/v1/addon/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

fn hello() -> Message {
    Message::text(
        json!({"v": 1, "type": "hello", "addon_version": "1.99.0", "nt8_version": "8.1.4.1",
               "features": ["orders"]})
        .to_string(),
    )
}

/// The first frame the server sends (pings aside): it must be the 4003 close, never a welcome
/// or a call.
async fn first_frame_is_revoked(ws: &mut Ws, within: Duration) {
    let frame = tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the socket stayed open");
    match frame {
        Some(Ok(Message::Close(Some(close)))) => {
            assert_eq!(u16::from(close.code), KEY_REVOKED);
            assert_eq!(close.reason.as_str(), "the Add-On key was revoked");
        }
        other => panic!("expected the 4003 close first, got {other:?}"),
    }
}

fn addon_key(db: &testkit::TestDb, email: &str) -> String {
    let url = db.url();
    let created = run(
        &[("DATABASE_URL", url.as_str())],
        &["addon-keys", "create", "--email", email],
        "",
    );
    assert!(created.status.success(), "{}", stderr(&created));
    stdout(&created).trim().to_owned()
}

async fn capabilities(endpoint: &testkit::oauth::Endpoint, access: &str) -> Value {
    let reply = tools_call(endpoint, access, "GetMcpCapabilities", json!({})).await;
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    body["result"]["structuredContent"].clone()
}

#[tokio::test]
async fn a_key_revoked_on_the_account_api_cannot_register_or_replace_the_live_addon() {
    let email = "victim@example.com";
    let (db, server, endpoint) = server_with_user(email).await;
    let (_, access) = trade_token(&endpoint, email).await;
    // The victim's Add-On (its own key) is connected and answers calls.
    let scripts = testkit::scratch_dir("revoked-api");
    let options = sim_options(&db, server.addr, email, &[], &scripts);
    let sim = tokio::spawn(async move { addon_sim::run(&options).await });
    assert!(addon_connected(&endpoint, &access).await);

    // A second key, made and revoked through the account API; its socket is upgraded before.
    let mut browser = account_browser(&endpoint, email).await;
    let listed = browser
        .get(&endpoint, &endpoint.url("/v1/account/addon-keys"))
        .await;
    let csrf = listed.headers()["x-csrf-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let made = endpoint
        .http
        .post(endpoint.url("/v1/account/addon-keys"))
        .header("cookie", browser.cookie_header())
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let mut attacker = upgraded(server.addr, made["key"].as_str().unwrap()).await;
    let revoked = endpoint
        .http
        .delete(endpoint.url(&format!(
            "/v1/account/addon-keys/{}",
            made["key_id"].as_str().unwrap()
        )))
        .header("cookie", browser.cookie_header())
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);

    // Its hello after the revocation gets the close, nothing else.
    let _ = attacker.send(hello()).await;
    first_frame_is_revoked(&mut attacker, Duration::from_secs(5)).await;

    // The victim's Add-On was not replaced and still answers every call.
    let caps = capabilities(&endpoint, &access).await;
    assert_eq!(caps["addon_connected"], true, "{caps}");
    assert_eq!(
        caps["addon_version"],
        addon_sim::DEFAULT_ADDON_VERSION,
        "{caps}"
    );
    for _ in 0..3 {
        let reply = tools_call(&endpoint, &access, "GetAccounts", json!({})).await;
        assert_eq!(reply.status(), 200);
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["result"]["isError"], false, "{body}");
    }
    assert!(!sim.is_finished(), "the victim's Add-On was disconnected");
    sim.abort();
    std::fs::remove_dir_all(&scripts).ok();
}

#[tokio::test]
async fn users_revoke_all_closes_sockets_before_their_hello_with_4003() {
    let email = "incident-pending@example.com";
    let (db, server, _endpoint) = server_with_user(email).await;
    let mut silent = upgraded(server.addr, &addon_key(&db, email)).await;
    let mut late = upgraded(server.addr, &addon_key(&db, email)).await;

    let url = db.url();
    let revoked = run(
        &[("DATABASE_URL", url.as_str())],
        &["users", "revoke-all", "--email", email],
        "",
    );
    assert!(revoked.status.success(), "{}", stderr(&revoked));

    // Closed at once, not at the 10 s hello timeout (which would be 4000).
    first_frame_is_revoked(&mut silent, Duration::from_secs(5)).await;
    let _ = late.send(hello()).await;
    first_frame_is_revoked(&mut late, Duration::from_secs(5)).await;
    let pool = db.pool().await;
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM addon_presence")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(present, 0);
    // Nothing more ever arrives on either socket.
    for ws in [&mut silent, &mut late] {
        match ws.next().await {
            None | Some(Err(_) | Ok(Message::Close(_))) => {}
            Some(Ok(other)) => panic!("a frame after the close: {other:?}"),
        }
    }
}

/// The Add-On keys page's revoke button: a socket upgraded with the key before, silent or
/// saying hello after, is closed with 4003.
#[tokio::test]
async fn a_key_revoked_on_the_keys_page_closes_its_sockets_in_any_phase() {
    let email = "page-revoke@example.com";
    let (db, server, endpoint) = server_with_user(email).await;
    let key = addon_key(&db, email);
    let mut silent = upgraded(server.addr, &key).await;
    let mut late = upgraded(server.addr, &key).await;

    let mut browser = account_browser(&endpoint, email).await;
    let listed = browser
        .get(&endpoint, &endpoint.url("/account/addon-keys"))
        .await
        .text()
        .await
        .unwrap();
    let key_id: String =
        sqlx::query_scalar("SELECT key_id::text FROM addon_keys WHERE revoked_at IS NULL")
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
    let revoked = browser
        .post(
            &endpoint,
            &format!("/account/addon-keys/{key_id}/revoke"),
            &[("csrf", &testkit::oauth::hidden(&listed, "csrf"))],
        )
        .await;
    assert_eq!(revoked.status(), 303);

    first_frame_is_revoked(&mut silent, Duration::from_secs(5)).await;
    let _ = late.send(hello()).await;
    first_frame_is_revoked(&mut late, Duration::from_secs(5)).await;
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM addon_presence")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(present, 0);
    assert!(server.terminate().success());
}
