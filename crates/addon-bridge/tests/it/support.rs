//! A bridge served on 127.0.0.1:0, and a scripted Add-On client.

use std::time::Duration;

use addon_bridge::{AddonBridge, BridgeSettings};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// No test waits longer than this for anything.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub fn settings() -> BridgeSettings {
    BridgeSettings {
        default_deadline: Duration::from_secs(10),
        // Long enough that pings never matter unless a test wants them to.
        heartbeat_interval: Duration::from_secs(5),
        replica_heartbeat: Duration::from_secs(1),
        max_frame_bytes: 64 * 1024,
        instance_id: Uuid::new_v4(),
        max_sockets: 4096,
        max_calls_per_account: 16,
        // The database path; `replicas::linked` serves links.
        peer: None,
    }
}

pub struct Server {
    pub bridge: AddonBridge,
    pub url: String,
}

pub async fn serve(db: &PgPool, settings: BridgeSettings) -> Server {
    // Each server is a replica of its own: its own supervisor and notification hub.
    let background = store::Background::start(db);
    let bridge = AddonBridge::start(db.clone(), settings, &background)
        .await
        .unwrap();
    let app = addon_bridge::router::<AddonBridge>().with_state(bridge.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        bridge,
        url: format!("ws://{addr}/v1/addon/ws"),
    }
}

/// A replica that also takes the other replicas' links (on the same listener), proving itself
/// with `master_secret`.
pub async fn serve_linked(
    db: &PgPool,
    mut settings: BridgeSettings,
    master_secret: &[u8],
) -> Server {
    let background = store::Background::start(db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    settings.peer = Some(addon_bridge::peer::PeerSettings {
        advertise: addr.to_string(),
        key: link_key(master_secret),
    });
    let bridge = AddonBridge::start(db.clone(), settings, &background)
        .await
        .unwrap();
    let app = addon_bridge::router::<AddonBridge>()
        .route(
            addon_bridge::peer::PATH,
            axum::routing::get(
                async |axum::extract::State(bridge): axum::extract::State<AddonBridge>,
                       upgrade: axum::extract::ws::WebSocketUpgrade| {
                    bridge.accept_peer(upgrade)
                },
            ),
        )
        .with_state(bridge.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        bridge,
        url: format!("ws://{addr}/v1/addon/ws"),
    }
}

/// A link key per master secret: linked replicas only need to share it (the binary derives it
/// from `master_secret` with HMAC-SHA256, `oauth::crypto::derive_key`).
fn link_key(master_secret: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(master_secret).into()
}

pub async fn user(db: &PgPool) -> Uuid {
    let email = store::users::Email::parse(&format!("{}@example.com", Uuid::new_v4())).unwrap();
    store::users::insert(db, &email, "not-a-hash", store::users::Tier::Elite)
        .await
        .unwrap()
        .id
}

/// A user with an Add-On key: (user id, key id, key).
pub async fn user_with_key(db: &PgPool) -> (Uuid, Uuid, String) {
    let user_id = user(db).await;
    let (key_id, key) = addon_bridge::keys::create(db, user_id).await.unwrap();
    (user_id, key_id, key)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the socket with an `Authorization` header value (or none).
pub async fn open(url: &str, authorization: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_str(value).unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// What the Add-On received.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Json(Value),
    /// A close frame: code and reason.
    Close(u16, String),
    /// The socket ended without a close frame.
    Ended,
}

pub struct Addon {
    sink: SplitSink<Ws, Message>,
    frames: mpsc::UnboundedReceiver<Frame>,
    /// How many pings arrived (each answered by the socket library as it is read).
    pings: watch::Receiver<usize>,
    reader: tokio::task::JoinHandle<SplitStream<Ws>>,
    pub welcome: Value,
}

pub fn hello(version: &str) -> String {
    json!({
        "v": 1, "type": "hello", "addon_version": version, "nt8_version": "8.1.4.1",
        "features": ["orders", "backtest"],
    })
    .to_string()
}

impl Addon {
    /// Connects, says hello as `version`, and returns once welcomed.
    pub async fn connect(url: &str, key: &str) -> Self {
        let mut addon = Self::connect_hello(url, key, "1.13.0").await;
        let welcome = addon.next_json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        addon.welcome = welcome;
        addon
    }

    /// Connects and says hello; does not wait for the answer.
    pub async fn connect_hello(url: &str, key: &str, version: &str) -> Self {
        Self::connect_first(url, key, &hello(version)).await
    }

    /// Connects and sends `first` as the first frame; does not wait for the answer.
    pub async fn connect_first(url: &str, key: &str, first: &str) -> Self {
        let mut addon = Self::connect_silent(url, key).await;
        addon.send(first).await;
        addon
    }

    /// Connects (the upgrade succeeds) and sends nothing.
    pub async fn connect_silent(url: &str, key: &str) -> Self {
        let ws = open(url, Some(&format!("Bearer {key}"))).await.unwrap();
        let (sink, mut stream) = ws.split();
        let (tx, frames) = mpsc::unbounded_channel();
        let (pinged, pings) = watch::channel(0);
        let reader = tokio::spawn(async move {
            loop {
                let frame = match stream.next().await {
                    Some(Ok(Message::Ping(_))) => {
                        pinged.send_modify(|n| *n += 1);
                        continue;
                    }
                    Some(Ok(Message::Text(text))) => {
                        Frame::Json(serde_json::from_str(&text).unwrap())
                    }
                    Some(Ok(Message::Close(Some(close)))) => {
                        Frame::Close(u16::from(close.code), close.reason.to_string())
                    }
                    Some(Ok(Message::Close(None))) => {
                        Frame::Close(u16::from(CloseCode::Status), String::new())
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => Frame::Ended,
                };
                let end = !matches!(frame, Frame::Json(_));
                let _ = tx.send(frame);
                if end {
                    return stream;
                }
            }
        });
        Self {
            sink,
            frames,
            pings,
            reader,
            welcome: Value::Null,
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.sink.send(Message::text(text)).await.unwrap();
    }

    /// Sends, ignoring a socket the server has already closed.
    pub async fn try_send(&mut self, text: &str) {
        let _ = self.sink.send(Message::text(text)).await;
    }

    pub async fn next(&mut self) -> Frame {
        tokio::time::timeout(PATIENCE, self.frames.recv())
            .await
            .expect("no frame in time")
            .unwrap_or(Frame::Ended)
    }

    pub async fn next_json(&mut self) -> Value {
        match self.next().await {
            Frame::Json(value) => value,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// The next call frame.
    pub async fn next_call(&mut self) -> Value {
        let frame = self.next_json().await;
        assert_eq!(frame["type"], "call", "{frame}");
        frame
    }

    /// Waits for the server's close frame.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Frame::Close(code, reason) => return (code, reason),
                Frame::Json(_) => {}
                Frame::Ended => panic!("ended without a close frame"),
            }
        }
    }

    pub async fn answer(&mut self, call: &Value, content: Value) {
        let frame =
            json!({"v": 1, "type": "result", "id": call["id"], "ok": true, "content": content});
        self.send(&frame.to_string()).await;
    }

    /// Waits until `count` pings have arrived in all.
    pub async fn pinged(&mut self, count: usize) {
        tokio::time::timeout(PATIENCE, self.pings.wait_for(|n| *n >= count))
            .await
            .expect("not pinged in time")
            .expect("the reader ended");
    }

    /// Stops reading, so pings go unanswered.
    pub fn stop_reading(&mut self) {
        self.reader.abort();
    }

    /// Drops the TCP connection without a close handshake.
    pub async fn drop_connection(self) {
        self.reader.abort();
        if let Ok(stream) = self.reader.await {
            drop(stream);
        }
        drop(self.sink);
    }
}

/// Waits until `user_id` appears on `changes`.
pub async fn changed(changes: &mut tokio::sync::broadcast::Receiver<Uuid>, user_id: Uuid) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if changes.recv().await.unwrap() == user_id {
                return;
            }
        }
    })
    .await
    .expect("no presence change in time");
}

/// Holds every connection of `pool`, and keeps asking for one ahead of anyone else, until the
/// returned sender is set: the pool's users meanwhile time out as in an outage. The task answers
/// how many connections it held.
pub fn hold_pool(pool: &PgPool) -> (watch::Sender<bool>, tokio::task::JoinHandle<usize>) {
    let (release, mut released) = watch::channel(false);
    let pool = pool.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                acquired = pool.acquire() => {
                    if let Ok(connection) = acquired {
                        held.push(connection);
                    }
                }
                _ = released.wait_for(|released| *released) => return held.len(),
            }
        }
    });
    (release, holder)
}

/// A pool of two connections that gives up on an acquire after 300 ms.
pub async fn small_pool(url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(300))
        .connect(url)
        .await
        .unwrap()
}
