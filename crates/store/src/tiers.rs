//! A per-replica cache of subscription tiers, so the MCP endpoint's Elite gate needs no database
//! round trip per `tools/call`.
//!
//! A trigger announces every tier change and every deleted user on the `tier_changed` channel;
//! the listener drops the user's entry. While the listener is disconnected the cache is bypassed
//! (every lookup reads PostgreSQL, as without a cache); see [`NotifiedMap`].

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::notified::NotifiedMap;
use crate::users::{self, Tier, UserError};

const CHANNEL: &str = "tier_changed";
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Tiers by user id, valid while the listener runs.
#[derive(Debug, Default)]
pub struct TierCache {
    tiers: NotifiedMap<Tier>,
}

impl TierCache {
    /// A cache kept current by a listener on `db`, which runs until the pool is closed.
    pub fn start(db: PgPool) -> Arc<Self> {
        let cache = Arc::new(Self::default());
        let listening = Arc::clone(&cache);
        tokio::spawn(async move {
            loop {
                let outcome = listening.listen(&db).await;
                listening.tiers.reset(false);
                if db.is_closed() {
                    return;
                }
                if let Err(err) = outcome {
                    tracing::warn!(error = %err, "tier listener lost; reconnecting");
                }
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        });
        cache
    }

    /// The user's tier (`None`: no such user), from the cache when it is live.
    pub async fn tier(&self, db: &PgPool, user_id: Uuid) -> Result<Option<Tier>, UserError> {
        if let Some(tier) = self.tiers.get(user_id) {
            return Ok(Some(tier));
        }
        let epoch = self.tiers.epoch();
        let tier = users::find_by_id(db, user_id).await?.map(|user| user.tier);
        if let Some(tier) = tier {
            self.tiers.put(epoch, user_id, tier);
        }
        Ok(tier)
    }

    /// Whether tier changes are being received (the cache is in use).
    pub fn is_listening(&self) -> bool {
        self.tiers.is_listening()
    }

    async fn listen(&self, db: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(db).await?;
        listener.listen(CHANNEL).await?;
        // Anything cached before this point may have missed a notification.
        self.tiers.reset(true);
        loop {
            match listener.try_recv().await? {
                Some(notification) => match Uuid::parse_str(notification.payload()) {
                    Ok(user_id) => self.tiers.changed(user_id),
                    // Not ours to interpret: forget everything rather than guess.
                    Err(_) => self.tiers.reset(true),
                },
                // The connection dropped; notifications sent meanwhile are lost.
                None => return Ok(()),
            }
        }
    }
}
