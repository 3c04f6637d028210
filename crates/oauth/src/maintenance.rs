//! Periodic clean-up: clients that never completed an authorization within 24 hours (with
//! everything they own), expired codes, refresh tokens, consent transactions, sessions and
//! counters.

use std::time::Duration;

use store::tasks::{Shutdown, Supervisor};

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
    let removed: Vec<String> = sqlx::query_scalar(
        "DELETE FROM oauth_clients
         WHERE first_authorized_at IS NULL AND created_at < $1 - interval '24 hours'
         RETURNING client_id",
    )
    .bind(now)
    .fetch_all(db)
    .await?;
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
    sqlx::query("DELETE FROM authorization_codes WHERE expires_at < $1 - interval '1 day'")
        .bind(now)
        .execute(db)
        .await?;
    // Past their family's absolute end, refresh tokens can only be refused; a day's margin
    // keeps a late replay answered as a replay.
    sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1 - interval '1 day'")
        .bind(now)
        .execute(db)
        .await?;
    sqlx::query("DELETE FROM consent_transactions WHERE expires_at < $1")
        .bind(now)
        .execute(db)
        .await?;
    sqlx::query("DELETE FROM browser_sessions WHERE expires_at < $1")
        .bind(now)
        .execute(db)
        .await?;
    sqlx::query("DELETE FROM registration_events WHERE created_at < $1 - interval '1 hour'")
        .bind(now)
        .execute(db)
        .await?;
    sqlx::query("DELETE FROM sign_in_failures WHERE created_at < $1 - interval '1 hour'")
        .bind(now)
        .execute(db)
        .await?;
    Ok(removed.len() as u64)
}
