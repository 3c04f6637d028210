//! The bridge's subscription to the replica's notification hub. Notifications carry ids only;
//! everything else is read from the tables. Notifications sent while the hub reconnects are
//! lost, so after every resync the replica re-checks: calls routed to it, every waiter, its
//! sockets' keys and presence.

use store::Background;
use store::hub::{Event, Subscription};
use store::tasks::Shutdown;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::protocol::close;
use crate::{AddonBridge, data, keys};

const CHANNELS: [&str; 7] = [
    "addon_call",
    "addon_result",
    "addon_idem",
    "addon_presence",
    "addon_refused",
    "addon_key_revoked",
    "addon_job",
];

/// Starts the listener under the supervisor; the receiver fires once the first re-check after
/// a resync is done.
pub(crate) fn start(bridge: &AddonBridge, background: &Background) -> oneshot::Receiver<()> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let mut ready = Some(ready_tx);
    let (bridge, hub) = (bridge.clone(), background.hub.clone());
    background.tasks.spawn("add-on listener", move |shutdown| {
        let events = hub.subscribe(&CHANNELS);
        listen(bridge.clone(), events, ready.take(), shutdown)
    });
    ready_rx
}

/// Never waits on the database itself (re-checks and claims run in their own tasks), so it
/// keeps up with the hub and a lost connection bypasses the presence cache at once.
async fn listen(
    bridge: AddonBridge,
    mut events: Subscription,
    mut ready: Option<oneshot::Sender<()>>,
    mut shutdown: Shutdown,
) {
    let mut stopping = bridge.inner.shutdown.subscribe();
    let feeder = bridge.inner.remote_presence.feeder();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = shutdown.requested() => break,
            // The bridge ended (sockets closed, instance retired): nothing to route any more.
            () = crate::until_true(&mut stopping) => break,
        };
        match event {
            Event::Resynced => {
                // Anything cached before this point may have missed a notification.
                bridge.inner.remote_presence.reset(true);
                tracing::info!("add-on listener connected");
                let (bridge, ready) = (bridge.clone(), ready.take());
                tokio::spawn(async move {
                    recheck(&bridge).await;
                    if let Some(ready) = ready {
                        let _ = ready.send(());
                    }
                });
            }
            // Presence changes may be missed from here until the next resync.
            Event::Lost => bridge.inner.remote_presence.reset(false),
            Event::Notification(notice) => {
                if let Ok(id) = Uuid::parse_str(&notice.payload) {
                    on_notification(&bridge, &notice.channel, id);
                }
            }
        }
    }
    drop((feeder, events));
    // Stopped with the bridge: idle until the replica shuts down (an early return would be
    // restarted by the supervisor).
    shutdown.requested().await;
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
        "addon_result" | "addon_idem" | "addon_job" => bridge.inner.waiters.wake(id),
        "addon_presence" => {
            bridge.inner.remote_presence.changed(id);
            let _ = bridge.inner.changes.send(id);
            if let Some(handle) = bridge.local(id) {
                let bridge = bridge.clone();
                tokio::spawn(async move { close_if_replaced(&bridge, &handle).await });
            }
        }
        // A too-old Add-On was refused: the user's presence now says so. No tool appears or
        // disappears, so MCP streams are not told.
        "addon_refused" => bridge.inner.remote_presence.changed(id),
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
