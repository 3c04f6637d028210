//! `GET /v1/addon/ws`: authentication before the upgrade, then one task per socket that owns
//! it: hello and the version gate, calls out, results and events in, heartbeats, and the
//! failure of every pending call the moment the socket ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use store::credentials::{self, Flaw, Presented};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use uuid::Uuid;
use vocabulary::ErrorBody;

use crate::keys::{self, KeyOwner};
use crate::protocol::{self, Event, Hello, Inbound, close};
use crate::{AddonBridge, CallError, CallOutcome, Presence, data, jobs, signals};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// `Retry-After` of a refused upgrade (full or shutting down): the Add-On reconnects soon.
const RETRY_AFTER_SECS: u32 = 5;
/// How long a close frame may take to go out to a stuck peer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How much the socket reads per system call. The WebSocket library's default (128 KiB) is
/// zero-filled up front, so every idle Add-On would hold 128 KiB; frames are mostly small, and
/// a large one (NinjaScript source, up to the frame limit) still arrives whole, over several
/// reads.
const READ_CHUNK_BYTES: usize = 4 * 1024;

type CallResult = Result<CallOutcome, CallError>;

/// Where a call's answer goes.
pub(crate) enum Responder {
    /// A caller on this replica.
    Local(oneshot::Sender<CallResult>),
    /// A caller on another replica, through `addon_calls`.
    Remote(Uuid),
}

pub(crate) struct PendingCall {
    pub id: Uuid,
    pub tool: String,
    pub arguments: Value,
    pub deadline: Instant,
    pub responder: Responder,
    /// The trace the call belongs to, passed on to the Add-On when traces are exported.
    pub traceparent: Option<String>,
    /// Counts the call among the bridge's live calls until it is dropped, however it ends.
    #[expect(dead_code, reason = "held for its Drop")]
    pub tracked: crate::Tracked,
}

/// A socket's queue holds one block of 32 of these from its first moment, so the call (about
/// 150 bytes) is boxed: an idle socket's queue then takes under 1 KiB instead of about 5.
pub(crate) enum Command {
    Call(Box<PendingCall>),
    /// A frame from a helper task (event acknowledgements).
    Send(String),
}

/// Set to close a socket with this code and reason, in whatever phase it is.
type CloseSignal = watch::Sender<Option<(u16, String)>>;

fn signal_close(close: &CloseSignal, code: u16, reason: &str) {
    // The first reason wins: a revoked socket is not reported as replaced.
    close.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some((code, reason.to_owned()));
        true
    });
}

/// Resolves with the close code and reason once one is set (at once if already set).
async fn closing(close: &mut watch::Receiver<Option<(u16, String)>>) -> (u16, String) {
    match close.wait_for(Option::is_some).await {
        Ok(set) => set.clone().unwrap_or((close::GOING_AWAY, String::new())),
        Err(_) => (close::GOING_AWAY, String::new()),
    }
}

/// An upgraded socket in any phase (before or after its hello), as revocation sees it.
pub(crate) struct Socket {
    pub key_id: Uuid,
    close: CloseSignal,
}

impl Socket {
    pub fn close_with(&self, code: u16, reason: &str) {
        signal_close(&self.close, code, reason);
    }
}

/// A live socket as the rest of the bridge sees it.
#[derive(Clone)]
pub(crate) struct Handle {
    pub user_id: Uuid,
    pub connection_id: Uuid,
    pub key_id: Uuid,
    pub presence: Presence,
    pub tx: mpsc::Sender<Command>,
    /// Shared with the socket's [`Socket`] entry.
    pub close: CloseSignal,
}

impl Handle {
    pub fn close_with(&self, code: u16, reason: &str) {
        signal_close(&self.close, code, reason);
    }

    /// Being closed (revoked, replaced, shutting down): it must get no new call.
    pub fn is_closing(&self) -> bool {
        self.close.borrow().is_some()
    }
}

/// One of [`crate::BridgeSettings::max_sockets`], held from before the upgrade until the
/// socket's task ends.
pub(crate) struct SocketSlot(Arc<AtomicUsize>);

impl SocketSlot {
    fn reserve(slots: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        slots
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(Arc::clone(slots)))
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keeps the socket in [`AddonBridge::sockets`] until its task ends.
struct SocketEntry {
    bridge: AddonBridge,
    connection_id: Uuid,
    _slot: SocketSlot,
}

impl SocketEntry {
    fn new(bridge: &AddonBridge, key_id: Uuid, close: &CloseSignal, slot: SocketSlot) -> Self {
        let connection_id = Uuid::new_v4();
        bridge.sockets().insert(
            connection_id,
            Socket {
                key_id,
                close: close.clone(),
            },
        );
        Self {
            bridge: bridge.clone(),
            connection_id,
            _slot: slot,
        }
    }
}

impl Drop for SocketEntry {
    fn drop(&mut self) {
        self.bridge.sockets().remove(&self.connection_id);
    }
}

/// Why an Add-On's upgrade request was refused: the HTTP half of the Add-On contract (the
/// WebSocket half is [`crate::protocol::close`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpgradeRefusal {
    ShuttingDown,
    AtCapacity,
    KeyMissing,
    KeyInvalid,
    KeyCheckFailed,
}

impl UpgradeRefusal {
    fn status(self) -> StatusCode {
        match self {
            Self::ShuttingDown | Self::AtCapacity | Self::KeyCheckFailed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::KeyMissing | Self::KeyInvalid => StatusCode::UNAUTHORIZED,
        }
    }

    fn code(self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "invalid_token",
            _ => "server_error",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::ShuttingDown => "this server is shutting down; reconnect",
            Self::AtCapacity => {
                "this server holds as many Add-On connections as it can; reconnect shortly"
            }
            Self::KeyMissing => "an Add-On key is required: Authorization: Bearer ctak_…",
            Self::KeyInvalid => "the Add-On key is invalid or revoked",
            Self::KeyCheckFailed => "the server could not check the Add-On key; retry shortly",
        }
    }
}

impl IntoResponse for UpgradeRefusal {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response =
            (status, Json(ErrorBody::new(self.code(), self.message()))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// Upgrades to the Add-On WebSocket once the Add-On key checks out (401 before the upgrade
/// otherwise, so the key is never exchanged over an unauthenticated socket).
pub async fn get_addon_ws(
    State(bridge): State<AddonBridge>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if bridge.is_shutting_down() {
        return UpgradeRefusal::ShuttingDown.into_response();
    }
    // Upgraded sockets escape the HTTP connection limit, so they have their own.
    let settings = &bridge.inner.settings;
    let Some(slot) = SocketSlot::reserve(&bridge.inner.socket_slots, settings.max_sockets) else {
        metrics::counter!("addon_sockets_refused_total").increment(1);
        return UpgradeRefusal::AtCapacity.into_response();
    };
    let values = headers.get_all(header::AUTHORIZATION).iter();
    let presented = match credentials::bearer(values.map(HeaderValue::as_bytes)) {
        Presented::Bearer(key) => key,
        Presented::Nothing | Presented::Invalid(Flaw::NotBearer) => {
            return UpgradeRefusal::KeyMissing.into_response();
        }
        Presented::Invalid(_) => {
            return UpgradeRefusal::KeyInvalid.into_response();
        }
    };
    let owner = match keys::authenticate(&bridge.inner.db, presented).await {
        Ok(Some(owner)) => owner,
        Ok(None) => {
            return UpgradeRefusal::KeyInvalid.into_response();
        }
        Err(err) => {
            tracing::error!(error = %err, "add-on key lookup failed");
            return UpgradeRefusal::KeyCheckFailed.into_response();
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let hard = bridge.inner.settings.hard_frame_limit();
    upgrade
        .read_buffer_size(READ_CHUNK_BYTES)
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| run(bridge, socket, owner, slot))
}

/// Decrements the live-task count however the task ends.
struct TaskGuard(watch::Sender<usize>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

async fn close_socket(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

/// Waits for the hello: Ok, or the close code and reason to refuse with.
async fn read_hello(socket: &mut WebSocket) -> Result<Hello, (u16, String)> {
    let text = loop {
        match socket.recv().await {
            Some(Ok(Message::Text(text))) => break text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Binary(_))) => {
                return Err((
                    close::PROTOCOL_ERROR,
                    "expected hello: binary frame".to_owned(),
                ));
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                return Err((close::PROTOCOL_ERROR, String::new()));
            }
        }
    };
    protocol::decode_hello(&text)
}

async fn run(bridge: AddonBridge, mut socket: WebSocket, owner: KeyOwner, slot: SocketSlot) {
    bridge.inner.tasks.send_modify(|n| *n += 1);
    let _guard = TaskGuard(bridge.inner.tasks.clone());
    // From here a revocation notification (or the listener's re-check) closes this socket in
    // any phase.
    let close: CloseSignal = watch::channel(None).0;
    let entry = SocketEntry::new(&bridge, owner.key_id, &close, slot);
    let mut close_rx = close.subscribe();
    // A revocation between the key check and the line above sent its notification before
    // this socket could be found.
    match keys::is_live(&bridge.inner.db, owner.key_id).await {
        Ok(true) => {}
        Ok(false) => {
            return close_socket(
                &mut socket,
                close::KEY_REVOKED,
                "the Add-On key was revoked",
            )
            .await;
        }
        Err(err) => {
            tracing::error!(error = %err, "add-on key re-check failed");
            return close_socket(
                &mut socket,
                close::SERVER_ERROR,
                "server error; reconnect shortly",
            )
            .await;
        }
    }
    let mut shutdown = bridge.inner.shutdown.subscribe();
    let hello = tokio::select! {
        biased;
        (code, reason) = closing(&mut close_rx) => {
            return close_socket(&mut socket, code, &reason).await;
        }
        () = crate::until_true(&mut shutdown) => {
            return close_socket(&mut socket, close::GOING_AWAY, "server shutting down").await;
        }
        read = tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut socket)) => match read {
            Ok(Ok(hello)) => hello,
            Ok(Err((code, reason))) => return close_socket(&mut socket, code, &reason).await,
            Err(_) => {
                return close_socket(
                    &mut socket,
                    close::PROTOCOL_ERROR,
                    "expected hello: timed out",
                )
                .await;
            }
        },
    };
    if let Err(reason) = protocol::check_addon_version(&hello.addon_version) {
        tracing::info!(addon_version = %hello.addon_version, "add-on refused: too old");
        // Recorded before the close, so whoever the Add-On's user asks next sees why.
        record_refusal(&bridge, &owner, &hello).await;
        return close_socket(&mut socket, close::VERSION_UNSUPPORTED, &reason).await;
    }
    let (tx, rx) = mpsc::channel(64);
    let handle = Handle {
        user_id: owner.user_id,
        connection_id: entry.connection_id,
        key_id: owner.key_id,
        presence: Presence {
            connected: true,
            addon_version: Some(hello.addon_version),
            nt8_version: Some(hello.nt8_version),
            features: hello.features,
            too_old: None,
        },
        tx,
        close,
    };
    match register(&bridge, &handle).await {
        Ok(None) => {}
        Ok(Some((code, reason))) => return close_socket(&mut socket, code, &reason).await,
        Err(err) => {
            tracing::error!(error = %err, "add-on presence write failed");
            return close_socket(
                &mut socket,
                close::SERVER_ERROR,
                "server error; reconnect shortly",
            )
            .await;
        }
    }
    tracing::info!(
        connection_id = %handle.connection_id,
        addon_version = ?handle.presence.addon_version,
        "add-on connected"
    );
    let settings = &bridge.inner.settings;
    let welcome = protocol::welcome(
        handle.connection_id,
        settings.heartbeat_interval.as_millis(),
        settings.max_frame_bytes,
    );
    let mut conn = Conn {
        bridge: bridge.clone(),
        handle,
        pending: HashMap::new(),
    };
    let ended = if socket.send(Message::Text(welcome.into())).await.is_ok() {
        conn.serve(&mut socket, rx).await
    } else {
        Ended::Gone(rx)
    };
    conn.finish(socket, ended).await;
}

/// Records the refused Add-On for presence to report. The key row is held `FOR SHARE` as in
/// [`register`], so a key revoked since its check writes nothing. A failure is logged only:
/// the Add-On is refused either way.
async fn record_refusal(bridge: &AddonBridge, owner: &KeyOwner, hello: &Hello) {
    let recorded = async {
        let mut tx = bridge.inner.db.begin().await?;
        if !data::lock_live_key(&mut *tx, owner.key_id).await? {
            return Ok(false);
        }
        data::upsert_refusal(
            &mut *tx,
            owner.user_id,
            owner.key_id,
            &protocol::recorded_version(&hello.addon_version),
            &protocol::recorded_version(&hello.nt8_version),
        )
        .await?;
        tx.commit().await.map(|()| true)
    };
    match recorded.await {
        // This replica's cache learns at once; the others from the notification.
        Ok(true) => bridge.inner.remote_presence.changed(owner.user_id),
        Ok(false) => {}
        Err::<_, sqlx::Error>(err) => tracing::warn!(error = %err, "add-on refusal write failed"),
    }
}

/// Makes `handle` the user's live socket if, and only if, its key is live: the key row is
/// held `FOR SHARE` while the socket is registered here and its presence written, so a
/// revocation either came first (refused with 4003, the user's current socket untouched) or
/// waits for the commit and then closes this socket. Registered here before the commit
/// publishes presence, so a call that follows the presence notification finds the socket.
/// Returns the close code and reason when the socket must not be registered.
async fn register(
    bridge: &AddonBridge,
    handle: &Handle,
) -> Result<Option<(u16, String)>, sqlx::Error> {
    let mut tx = bridge.inner.db.begin().await?;
    if !data::lock_live_key(&mut *tx, handle.key_id).await? {
        tracing::info!(connection_id = %handle.connection_id, "add-on refused: key revoked");
        return Ok(Some((
            close::KEY_REVOKED,
            "the Add-On key was revoked".to_owned(),
        )));
    }
    if let Some(closing) = handle.close.borrow().clone() {
        return Ok(Some(closing));
    }
    let replaced = {
        let mut conns = bridge.conns();
        let old = conns.insert(handle.user_id, handle.clone());
        metrics::gauge!("addon_connections")
            .set(f64::from(u32::try_from(conns.len()).unwrap_or(u32::MAX)));
        old
    };
    // A supported Add-On connecting ends the report of a refused one.
    let written = match data::upsert_presence(&mut *tx, bridge.instance_id(), handle).await {
        Ok(()) => match data::clear_refusal(&mut *tx, handle.user_id).await {
            Ok(()) => tx.commit().await,
            Err(err) => Err(err),
        },
        Err(err) => Err(err),
    };
    if let Err(err) = written {
        // Nothing was published: put the older socket back if it is still running.
        let mut conns = bridge.conns();
        if conns
            .get(&handle.user_id)
            .is_some_and(|h| h.connection_id == handle.connection_id)
        {
            match replaced {
                Some(old) if !old.tx.is_closed() => conns.insert(handle.user_id, old),
                _ => conns.remove(&handle.user_id),
            };
        }
        return Err(err);
    }
    if let Some(old) = replaced {
        old.close_with(
            close::REPLACED,
            "replaced by a newer connection of this account",
        );
    }
    Ok(None)
}

/// How the loop ended: the socket is gone, or we close it with a code.
enum Ended {
    Gone(mpsc::Receiver<Command>),
    Close(mpsc::Receiver<Command>, u16, String),
}

struct Conn {
    bridge: AddonBridge,
    handle: Handle,
    pending: HashMap<Uuid, PendingCall>,
}

impl Conn {
    async fn serve(&mut self, socket: &mut WebSocket, mut rx: mpsc::Receiver<Command>) -> Ended {
        let period = self.bridge.inner.settings.heartbeat_interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unanswered = 0u8;
        let mut close_rx = self.handle.close.subscribe();
        let mut shutdown = self.bridge.inner.shutdown.subscribe();
        loop {
            tokio::select! {
                // Checked first: a closing socket (a revoked key) sends no further call.
                biased;
                (code, reason) = closing(&mut close_rx) => {
                    return Ended::Close(rx, code, reason);
                }
                () = crate::until_true(&mut shutdown) => {
                    return Ended::Close(rx, close::GOING_AWAY, "server shutting down".to_owned());
                }
                Some(command) = rx.recv() => {
                    if !self.send_command(socket, command).await {
                        return Ended::Gone(rx);
                    }
                }
                message = socket.recv() => {
                    let Some(Ok(message)) = message else { return Ended::Gone(rx) };
                    // Any frame shows the Add-On is alive.
                    unanswered = 0;
                    match message {
                        Message::Text(text) => {
                            if let Some(reply) = self.on_text(&text)
                                && socket.send(Message::Text(reply.into())).await.is_err()
                            {
                                return Ended::Gone(rx);
                            }
                        }
                        Message::Binary(_) => {
                            let reply = protocol::error("malformed_frame", "frames are JSON text frames", None);
                            if socket.send(Message::Text(reply.into())).await.is_err() {
                                return Ended::Gone(rx);
                            }
                        }
                        Message::Ping(_) | Message::Pong(_) => {}
                        Message::Close(_) => return Ended::Gone(rx),
                    }
                }
                _ = ticker.tick() => {
                    if unanswered >= 2 {
                        tracing::info!(connection_id = %self.handle.connection_id, "add-on heartbeat lost");
                        return Ended::Close(rx, close::HEARTBEAT_TIMEOUT, "two heartbeats unanswered".to_owned());
                    }
                    unanswered += 1;
                    self.expire_pending();
                    if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return Ended::Gone(rx);
                    }
                }
            }
        }
    }

    /// Sends a call (or a helper's frame). False when the socket is gone.
    async fn send_command(&mut self, socket: &mut WebSocket, command: Command) -> bool {
        match command {
            Command::Send(frame) => socket.send(Message::Text(frame.into())).await.is_ok(),
            Command::Call(call) => {
                let now = Instant::now();
                if call.deadline <= now {
                    // Its caller has already given up; do not send it late.
                    return true;
                }
                let remaining = call.deadline - now;
                let frame = protocol::call(
                    call.id,
                    &call.tool,
                    &call.arguments,
                    remaining.as_millis(),
                    call.traceparent.as_deref(),
                );
                let id = call.id;
                self.pending.insert(id, *call);
                if socket.send(Message::Text(frame.into())).await.is_err() {
                    if let Some(call) = self.pending.remove(&id) {
                        self.respond(call.responder, Err(CallError::Disconnected));
                    }
                    return false;
                }
                true
            }
        }
    }

    /// Handles a text frame; returns a frame to send back, if any. Never fails the connection.
    fn on_text(&mut self, text: &str) -> Option<String> {
        let (frame, id) =
            match protocol::decode_frame(text, self.bridge.inner.settings.max_frame_bytes) {
                Ok(decoded) => decoded,
                Err(reply) => return Some(reply),
            };
        match frame {
            Inbound::Hello {} => Some(protocol::unexpected_hello()),
            Inbound::Ping {} => Some(protocol::pong()),
            Inbound::Pong {} => None,
            Inbound::Result {
                id: call_id,
                ok,
                content,
                error,
            } => {
                let call = self
                    .pending
                    .remove(&call_id)
                    .filter(|call| call.deadline > Instant::now());
                let Some(call) = call else {
                    tracing::warn!(%call_id, "add-on answered an unknown or expired call; dropped");
                    return Some(protocol::unknown_call(id.as_ref()));
                };
                let outcome = if ok {
                    CallOutcome::Ok(content)
                } else {
                    CallOutcome::ToolError(
                        error.unwrap_or_else(|| "the Add-On reported an error".to_owned()),
                    )
                };
                self.respond(call.responder, Ok(outcome));
                None
            }
            Inbound::Event {
                id: event_id,
                kind,
                data,
            } => self.on_event(event_id, &kind, data),
        }
    }

    fn on_event(&self, event_id: Option<String>, kind: &str, data: Value) -> Option<String> {
        let event = match protocol::decode_event(kind, data) {
            Ok(event) => event,
            Err(reply) => return Some(reply),
        };
        let db = self.bridge.inner.db.clone();
        let user_id = self.handle.user_id;
        let tx = self.handle.tx.clone();
        // Stored off the socket loop so a slow database never delays heartbeats or results.
        tokio::spawn(async move {
            let stored = match &event {
                Event::Execution(e) => data::store_execution(&db, user_id, e).await,
                Event::Snapshot(s) => data::store_snapshot(&db, user_id, s).await,
                Event::JobProgress(p) => jobs::record_progress(&db, user_id, p).await,
                Event::JobResult(r) => jobs::record_result(&db, user_id, r).await,
                Event::WebhookSignal(s) => signals::store_webhook_signal(&db, user_id, s).await,
                Event::CopierAction(a) => signals::store_copier_action(&db, user_id, a).await,
            };
            let reply = match (stored, event_id) {
                (Ok(()), Some(id)) => protocol::event_ack(&id),
                (Ok(()), None) => return,
                (Err(err), id) => {
                    tracing::warn!(error = %err, "add-on event write failed");
                    let id = id.map(Value::String);
                    protocol::error(
                        "event_not_stored",
                        "the server could not store this event; resend it",
                        id.as_ref(),
                    )
                }
            };
            let _ = tx.send(Command::Send(reply)).await;
        });
        None
    }

    fn respond(&self, responder: Responder, result: CallResult) {
        match responder {
            Responder::Local(tx) => {
                if tx.send(result).is_err() {
                    tracing::warn!("late add-on answer dropped (its caller gave up)");
                }
            }
            Responder::Remote(call_id) => self.bridge.complete_remote(call_id, result),
        }
    }

    /// Forgets calls whose deadline has passed: their callers have already been answered.
    fn expire_pending(&mut self) {
        let now = Instant::now();
        self.pending.retain(|id, call| {
            let live = call.deadline > now;
            if !live {
                tracing::info!(call_id = %id, tool = %call.tool, "add-on call expired unanswered");
            }
            live
        });
    }

    /// Unregisters the socket, fails whatever was in flight or queued, closes, clears presence.
    async fn finish(mut self, mut socket: WebSocket, ended: Ended) {
        let user_id = self.handle.user_id;
        let connection_id = self.handle.connection_id;
        {
            let mut conns = self.bridge.conns();
            if conns
                .get(&user_id)
                .is_some_and(|h| h.connection_id == connection_id)
            {
                conns.remove(&user_id);
            }
            metrics::gauge!("addon_connections")
                .set(f64::from(u32::try_from(conns.len()).unwrap_or(u32::MAX)));
        }
        let (mut rx, close) = match ended {
            Ended::Gone(rx) => (rx, None),
            Ended::Close(rx, code, reason) => (rx, Some((code, reason))),
        };
        rx.close();
        while let Ok(command) = rx.try_recv() {
            if let Command::Call(call) = command {
                self.pending.insert(call.id, *call);
            }
        }
        for (_, call) in std::mem::take(&mut self.pending) {
            self.respond(call.responder, Err(CallError::Disconnected));
        }
        if let Some((code, reason)) = close {
            close_socket(&mut socket, code, &reason).await;
        }
        drop(socket);
        clear_presence(&self.bridge, user_id, connection_id).await;
        tracing::info!(%connection_id, "add-on disconnected");
    }
}

/// Deletes a closed socket's presence, retrying while the database refuses: a row left behind
/// would show the Add-On as connected, on this replica, until it reconnected. A replica that
/// stops gives up; its presence rows are swept with its instance row.
async fn clear_presence(bridge: &AddonBridge, user_id: Uuid, connection_id: Uuid) {
    let db = &bridge.inner.db;
    let Err(error) = data::delete_presence(db, user_id, connection_id).await else {
        return;
    };
    crate::retry::after_failure(
        "add-on presence delete",
        connection_id,
        &error,
        bridge.inner.shutdown.subscribe(),
        || data::delete_presence(db, user_id, connection_id),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every socket's queue holds a block of 32 commands from the start, idle or not.
    #[test]
    fn a_queued_command_stays_small() {
        assert!(size_of::<Command>() <= 32, "{}", size_of::<Command>());
    }
}
