//! The replica's LISTEN connection. Notifications carry ids only; everything else is read from
//! the tables. `PgListener` loses what is sent while it reconnects, so after every (re)connect
//! the replica re-checks: calls routed to it, every waiter, its sockets' keys and presence.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::protocol::close;
use crate::{AddonBridge, data, keys};

const CHANNELS: [&str; 5] = [
    "addon_call",
    "addon_result",
    "addon_idem",
    "addon_presence",
    "addon_key_revoked",
];

/// Spawns the listener; the receiver fires once it first listens.
pub(crate) fn spawn(bridge: &AddonBridge) -> oneshot::Receiver<()> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let bridge = bridge.clone();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut shutdown = bridge.inner.shutdown.subscribe();
        loop {
            let outcome = listen(&bridge, &mut ready).await;
            // Presence changes may be missed from here until the next connect.
            bridge.inner.remote_presence.reset(false);
            if let Err(err) = outcome {
                tracing::warn!(error = %err, "add-on listener lost; reconnecting");
            }
            if bridge.is_shutting_down() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = crate::until_true(&mut shutdown) => return,
            }
        }
    });
    ready_rx
}

async fn listen(
    bridge: &AddonBridge,
    ready: &mut Option<oneshot::Sender<()>>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(&bridge.inner.db).await?;
    listener.listen_all(CHANNELS).await?;
    // Anything cached before this point may have missed a notification.
    bridge.inner.remote_presence.reset(true);
    tracing::info!("add-on listener connected");
    recheck(bridge).await;
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    let mut shutdown = bridge.inner.shutdown.subscribe();
    loop {
        tokio::select! {
            received = listener.try_recv() => match received? {
                Some(notification) => {
                    if let Ok(id) = Uuid::parse_str(notification.payload()) {
                        on_notification(bridge, notification.channel(), id);
                    }
                }
                // The connection dropped; what was sent meanwhile is lost.
                None => return Ok(()),
            },
            () = crate::until_true(&mut shutdown) => return Ok(()),
        }
    }
}

fn on_notification(bridge: &AddonBridge, channel: &str, id: Uuid) {
    match channel {
        "addon_call" => {
            let bridge = bridge.clone();
            tokio::spawn(async move {
                match data::claim_call(&bridge.inner.db, id, bridge.instance_id()).await {
                    Ok(Some(claimed)) => bridge.take_remote_call(claimed).await,
                    Ok(None) => {}
                    Err(err) => tracing::warn!(error = %err, "add-on call claim failed"),
                }
            });
        }
        "addon_result" | "addon_idem" => bridge.inner.waiters.wake(id),
        "addon_presence" => {
            bridge.inner.remote_presence.changed(id);
            let _ = bridge.inner.changes.send(id);
            if let Some(handle) = bridge.local(id) {
                let bridge = bridge.clone();
                tokio::spawn(async move { close_if_replaced(&bridge, &handle).await });
            }
        }
        // Every socket of the key, registered or still before its hello.
        "addon_key_revoked" => bridge.close_revoked(&[id]),
        _ => {}
    }
}

/// A newer connection of the same user elsewhere replaced this replica's socket.
async fn close_if_replaced(bridge: &AddonBridge, handle: &crate::connection::Handle) {
    match data::current_connection(&bridge.inner.db, handle.user_id).await {
        Ok(Some(current)) if current != handle.connection_id => {
            handle.close_with(
                close::REPLACED,
                "replaced by a newer connection of this account",
            );
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "add-on presence check failed"),
    }
}

/// Everything a lost notification could have left undone.
async fn recheck(bridge: &AddonBridge) {
    let db = &bridge.inner.db;
    match data::claim_unclaimed(db, bridge.instance_id()).await {
        Ok(calls) => {
            for claimed in calls {
                let bridge = bridge.clone();
                tokio::spawn(async move { bridge.take_remote_call(claimed).await });
            }
        }
        Err(err) => tracing::warn!(error = %err, "add-on call re-check failed"),
    }
    bridge.inner.waiters.wake_all();
    // Sockets in every phase, not only registered ones.
    let key_ids: Vec<Uuid> = bridge.sockets().values().map(|s| s.key_id).collect();
    if !key_ids.is_empty() {
        match keys::revoked_among(db, &key_ids).await {
            Ok(revoked) => bridge.close_revoked(&revoked),
            Err(err) => tracing::warn!(error = %err, "add-on key re-check failed"),
        }
    }
    let handles: Vec<_> = bridge.conns().values().cloned().collect();
    for handle in &handles {
        close_if_replaced(bridge, handle).await;
    }
}
