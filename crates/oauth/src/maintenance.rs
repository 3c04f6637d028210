//! Periodic clean-up: clients that never completed an authorization within 24 hours (with
//! everything they own), expired codes, refresh tokens, consent transactions, sessions,
//! counters, trade confirmations past their deadline or their retention, and AI client activity
//! older than the AI Clients page shows.

use std::time::Duration;

use store::tasks::{Shutdown, Supervisor};

use crate::db;
use crate::events::{self, Kind, Origin};
use crate::state::OAuthState;

const INTERVAL: Duration = Duration::from_secs(600);

pub(crate) fn start_reaper(state: &OAuthState, tasks: &Supervisor) {
    let state = state.clone();
    tasks.spawn("oauth reaper", move |shutdown| {
        reap_every_interval(state.clone(), shutdown)
    });
}

async fn reap_every_interval(state: OAuthState, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = shutdown.requested() => return,
        }
        if let Err(err) = reap(&state).await {
            tracing::warn!(error = %err, "clean-up failed; retrying later");
        }
    }
}

/// Deletes what has expired. Returns the number of unused clients removed.
pub async fn reap(state: &OAuthState) -> Result<u64, sqlx::Error> {
    let db = state.db();
    let now = state.now();
    let removed = db::clients::purge_unauthorized(db, now).await?;
    for client_id in &removed {
        events::record(
            db,
            Kind::ClientDeleted,
            Some(client_id),
            None,
            &Origin::default(),
            serde_json::json!({ "reason": "never authorized within 24 hours" }),
        )
        .await;
    }
    db::codes::purge_expired(db, now).await?;
    db::refresh_tokens::purge_expired(db, now).await?;
    db::consents::purge_expired(db, now).await?;
    db::sessions::purge_expired(db, now).await?;
    db::registrations::purge_old(db, now).await?;
    db::sign_in_failures::purge_old(db, now).await?;
    // Trade confirmations are read by the account pages; their deadlines never wait for this.
    store::confirmations::expire_and_purge(db).await?;
    store::activity::prune(db, now).await?;
    Ok(removed.len() as u64)
}
