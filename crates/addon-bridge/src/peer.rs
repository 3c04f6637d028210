//! Calls between replicas without a database round trip: the replica holding an Add-On socket
//! accepts a WebSocket from each other replica on its admin listener (`/internal/addon-relay`),
//! and calls routed to that socket travel over it as frames.
//!
//! Replicas prove to each other that they share `master_secret`: the accepting replica sends a
//! random challenge; the caller answers with an HMAC of it, its own instance id and the id it
//! meant to reach, under a key derived from the secret. A link to the wrong replica (an address
//! that is not the one advertised) is refused and the call takes the database path instead.
//!
//! A call leaves only once: when the link fails before the frame was handed over, the caller
//! routes it through PostgreSQL; once handed over, a broken link ends it as `Disconnected`
//! (it may have reached the Add-On) and it is never sent again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt as _, StreamExt as _};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::data::Stored;
use crate::{AddonBridge, CallError, CallOutcome};

type CallResult = Result<CallOutcome, CallError>;

/// The path of the accepting endpoint on the admin listener.
pub const PATH: &str = "/internal/addon-relay";
/// How long opening a link may take before the call takes the database path.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed link, calls to that replica take the database path this long.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The largest frame: a call's arguments or an answer, bounded like the Add-On's own frames.
const MAX_FRAME_BYTES: usize = 16 << 20;

/// How replicas reach and recognise each other.
#[derive(Clone)]
pub struct PeerSettings {
    /// `host:port` of this replica's admin listener as the other replicas reach it.
    pub advertise: String,
    /// HMAC key derived from `master_secret` (the same on every replica).
    pub key: [u8; 32],
}

impl std::fmt::Debug for PeerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSettings")
            .field("advertise", &self.advertise)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// HMAC accepts keys of any length; this is never reached.
fn unreachable_key() -> Hmac<Sha256> {
    <Hmac<Sha256>>::new(&hmac::digest::Key::<Hmac<Sha256>>::default())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    /// Accepting replica → caller, first.
    Challenge {
        nonce: String,
    },
    /// Caller → accepting replica: who it is, whom it meant, and the proof.
    Hello {
        from: Uuid,
        to: Uuid,
        mac: String,
    },
    /// Accepting replica → caller: calls may flow.
    Ready,
    Call {
        id: Uuid,
        user_id: Uuid,
        /// The socket the caller found in presence; another one on this replica is not it.
        connection_id: Uuid,
        tool: String,
        arguments: Value,
        remaining_ms: u64,
        /// The caller's trace, continued here.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    Result {
        id: Uuid,
        outcome: Stored,
    },
}

fn proof(key: &[u8; 32], nonce: &str, from: Uuid, to: Uuid) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable_key());
    mac.update(nonce.as_bytes());
    mac.update(from.as_bytes());
    mac.update(to.as_bytes());
    mac
}

// ---- the accepting side ------------------------------------------------------------------

impl AddonBridge {
    /// Accepts a link from another replica (the admin listener's [`PATH`]). Without peer
    /// settings (no advertised address) links are refused with 404.
    pub fn accept_peer(&self, upgrade: WebSocketUpgrade) -> Response {
        use axum::response::IntoResponse as _;
        let Some(settings) = self.inner.settings.peer.clone() else {
            return axum::http::StatusCode::NOT_FOUND.into_response();
        };
        let bridge = self.clone();
        upgrade
            .max_message_size(MAX_FRAME_BYTES)
            .on_upgrade(move |socket| async move { bridge.serve_peer(socket, settings.key).await })
    }

    async fn serve_peer(self, mut socket: WebSocket, key: [u8; 32]) {
        let me = self.instance_id();
        let Some(nonce) = store::secret::random_bytes(32).ok().map(hex::encode) else {
            return;
        };
        if send_frame(
            &mut socket,
            &Frame::Challenge {
                nonce: nonce.clone(),
            },
        )
        .await
        .is_err()
        {
            return;
        }
        let hello = tokio::time::timeout(CONNECT_TIMEOUT, socket.recv()).await;
        let Ok(Some(Ok(Message::Text(text)))) = hello else {
            return;
        };
        let Ok(Frame::Hello { from, to, mac }) = serde_json::from_str(text.as_str()) else {
            return;
        };
        let genuine = hex::decode(&mac)
            .is_ok_and(|mac| proof(&key, &nonce, from, to).verify_slice(&mac).is_ok());
        if !genuine || to != me {
            tracing::warn!(%from, "replica link refused: wrong proof or not meant for this replica");
            return;
        }
        if send_frame(&mut socket, &Frame::Ready).await.is_err() {
            return;
        }
        let (results, mut outgoing) = mpsc::unbounded_channel::<Frame>();
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            tokio::select! {
                inbound = socket.recv() => {
                    let Some(Ok(message)) = inbound else { break };
                    let Message::Text(text) = message else { continue };
                    self.take_peer_call(text.as_str(), &results);
                }
                Some(frame) = outgoing.recv() => {
                    if send_frame(&mut socket, &frame).await.is_err() {
                        break;
                    }
                }
                () = crate::until_true(&mut shutdown) => break,
            }
        }
    }

    /// Runs one frame a linked replica sent: a call, answered on `results` when it ends.
    fn take_peer_call(&self, text: &str, results: &mpsc::UnboundedSender<Frame>) {
        let Ok(Frame::Call {
            id,
            user_id,
            connection_id,
            tool,
            arguments,
            remaining_ms,
            traceparent,
        }) = serde_json::from_str::<Frame>(text)
        else {
            tracing::warn!("unexpected frame on a replica link");
            return;
        };
        let bridge = self.clone();
        let results = results.clone();
        let span = vocabulary::trace_span!(
            "addon.call.linked",
            tool = %tool,
            traceparent = traceparent.as_deref()
        );
        tokio::spawn(
            async move {
                let deadline = Instant::now() + Duration::from_millis(remaining_ms);
                let result = bridge
                    .call_from_peer(id, user_id, connection_id, tool, arguments, deadline)
                    .await;
                let _ = results.send(Frame::Result {
                    id,
                    outcome: Stored::from(&result),
                });
            }
            .instrument(span),
        );
    }

    /// A call another replica sent over a link: to the local socket it was meant for only.
    async fn call_from_peer(
        &self,
        id: Uuid,
        user_id: Uuid,
        connection_id: Uuid,
        tool: String,
        arguments: Value,
        deadline: Instant,
    ) -> CallResult {
        // Never to a socket that is closing (revoked key, replaced, shutting down) or to
        // another connection than the one the caller found.
        let Some(handle) = self
            .local(user_id)
            .filter(|h| h.connection_id == connection_id && !h.is_closing())
        else {
            return Err(CallError::Disconnected);
        };
        self.deliver(&handle, id, tool, arguments, deadline).await
    }
}

async fn send_frame(socket: &mut WebSocket, frame: &Frame) -> Result<(), ()> {
    let text = serde_json::to_string(frame).map_err(drop)?;
    socket.send(Message::Text(text.into())).await.map_err(drop)
}

// ---- the calling side --------------------------------------------------------------------

/// Open links to other replicas, by instance id.
#[derive(Default)]
pub(crate) struct Peers {
    /// One entry per replica called; its own lock, so opening a link to one replica never
    /// holds up calls to another.
    links: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<Link>>>>,
}

impl Peers {
    fn entry(&self, instance_id: Uuid) -> Arc<tokio::sync::Mutex<Link>> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        // Replicas that are gone leave their entry behind: forget ended links now and then.
        if links.len() > 64 {
            links.retain(|_, link| {
                link.try_lock().map_or(
                    true,
                    |link| matches!(&*link, Link::Open(open) if !open.frames.is_closed()),
                )
            });
        }
        Arc::clone(
            links
                .entry(instance_id)
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Link::Failed(None)))),
        )
    }
}

enum Link {
    Open(Arc<Open>),
    /// The last attempt failed at this time (`None`: never tried).
    Failed(Option<Instant>),
}

struct Open {
    frames: mpsc::UnboundedSender<String>,
    pending: Mutex<HashMap<Uuid, oneshot::Sender<CallResult>>>,
}

impl Open {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<CallResult>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a call's entry when its caller stops waiting, however it stops.
struct PendingGuard<'a> {
    open: &'a Open,
    id: Uuid,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.open.pending().remove(&self.id);
    }
}

impl AddonBridge {
    /// Sends a call to the replica holding the socket over a link. `None` when no link could
    /// be used and nothing was sent: the caller then routes it through PostgreSQL.
    pub(crate) async fn relay_direct(
        &self,
        instance_id: Uuid,
        advertised: &str,
        call: &crate::CallRequest,
        connection_id: Uuid,
        deadline: Instant,
    ) -> Option<CallResult> {
        let settings = self.inner.settings.peer.as_ref()?;
        let open = self.link(instance_id, advertised, settings.key).await?;
        let id = Uuid::new_v4();
        let (tx, rx) = oneshot::channel();
        open.pending().insert(id, tx);
        let guard = PendingGuard { open: &open, id };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let frame = Frame::Call {
            id,
            user_id: call.user_id,
            connection_id,
            tool: call.tool.clone(),
            arguments: call.arguments.clone(),
            remaining_ms: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
            traceparent: vocabulary::trace::current(),
        };
        let text = serde_json::to_string(&frame).ok()?;
        if open.frames.send(text).is_err() {
            // The link ended before taking the frame: it never left.
            return None;
        }
        metrics::counter!("addon_routed_calls_total", "path" => "link").increment(1);
        tracing::Span::current().record("path", "link");
        let result = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            // The link broke with the call on it.
            Ok(Err(_)) => Err(CallError::Disconnected),
            Err(_) => Err(CallError::DeadlineExceeded),
        };
        drop(guard);
        Some(result)
    }

    /// The open link to `instance_id`, opening one when there is none (at most one attempt
    /// per [`RETRY_AFTER`] after a failure).
    async fn link(&self, instance_id: Uuid, advertised: &str, key: [u8; 32]) -> Option<Arc<Open>> {
        let entry = self.inner.peers.entry(instance_id);
        let mut link = entry.lock().await;
        match &*link {
            Link::Open(open) if !open.frames.is_closed() => return Some(Arc::clone(open)),
            Link::Failed(Some(at)) if at.elapsed() < RETRY_AFTER => return None,
            _ => {}
        }
        let opened = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.open_link(instance_id, advertised, key),
        )
        .await
        .ok()
        .flatten();
        if let Some(open) = opened {
            *link = Link::Open(Arc::clone(&open));
            return Some(open);
        }
        tracing::info!(%instance_id, advertised, "no link to the replica; routing its calls through the database");
        *link = Link::Failed(Some(Instant::now()));
        None
    }

    async fn open_link(
        &self,
        instance_id: Uuid,
        advertised: &str,
        key: [u8; 32],
    ) -> Option<Arc<Open>> {
        use tokio_tungstenite::tungstenite::Message as Ws;
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let url = format!("ws://{advertised}{PATH}");
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .ok()?;
        let (mut sink, mut stream) = socket.split();
        let text = |message: Option<Result<Ws, _>>| match message {
            Some(Ok(Ws::Text(text))) => serde_json::from_str::<Frame>(text.as_str()).ok(),
            _ => None,
        };
        let Some(Frame::Challenge { nonce }) = text(stream.next().await) else {
            return None;
        };
        let me = self.instance_id();
        let mac = hex::encode(proof(&key, &nonce, me, instance_id).finalize().into_bytes());
        let hello = serde_json::to_string(&Frame::Hello {
            from: me,
            to: instance_id,
            mac,
        })
        .ok()?;
        sink.send(Ws::Text(hello.into())).await.ok()?;
        let Some(Frame::Ready) = text(stream.next().await) else {
            return None;
        };
        let (frames, mut outgoing) = mpsc::unbounded_channel::<String>();
        let open = Arc::new(Open {
            frames,
            pending: Mutex::new(HashMap::new()),
        });
        let reader = Arc::clone(&open);
        let mut shutdown = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    inbound = stream.next() => {
                        let Some(Ok(message)) = inbound else { break };
                        let Ws::Text(text) = message else { continue };
                        if let Ok(Frame::Result { id, outcome }) = serde_json::from_str::<Frame>(text.as_str())
                            && let Some(waiter) = reader.pending().remove(&id)
                        {
                            let _ = waiter.send(outcome.into());
                        }
                    }
                    frame = outgoing.recv() => {
                        let Some(frame) = frame else { break };
                        if sink.send(Ws::Text(frame.into())).await.is_err() {
                            break;
                        }
                    }
                    () = crate::until_true(&mut shutdown) => break,
                }
            }
            // Calls still on the link end as disconnected: they may have reached the Add-On.
            outgoing.close();
            reader.pending().clear();
        });
        Some(open)
    }
}
