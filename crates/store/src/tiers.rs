//! A per-replica cache of subscription tiers, so the MCP endpoint's Elite gate needs no database
//! round trip per `tools/call`.
//!
//! A trigger announces every tier change and every deleted user on the `tier_changed` channel;
//! the listener drops the user's entry. While the listener is disconnected the cache is bypassed
//! (every lookup reads PostgreSQL, as without a cache); see [`NotifiedMap`].

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::Background;
use crate::hub::{Event, Subscription};
use crate::notified::NotifiedMap;
use crate::tasks::Shutdown;
use crate::users::{self, Tier, UserError};

const CHANNEL: &str = "tier_changed";

/// Tiers by user id, valid while the listener runs.
#[derive(Debug, Default)]
pub struct TierCache {
    tiers: NotifiedMap<Tier>,
}

impl TierCache {
    /// A cache kept current through the hub, its listener run by the supervisor.
    pub fn start(background: &Background) -> Arc<Self> {
        let cache = Arc::new(Self::default());
        let (listening, hub) = (Arc::clone(&cache), background.hub.clone());
        background.tasks.spawn("tier listener", move |shutdown| {
            let subscription = hub.subscribe(&[CHANNEL]);
            Arc::clone(&listening).listen(subscription, shutdown)
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

    async fn listen(self: Arc<Self>, mut events: Subscription, mut shutdown: Shutdown) {
        let _feeder = self.tiers.feeder();
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = shutdown.requested() => break,
            };
            match event {
                // Anything cached before this point may have missed a notification.
                Event::Resynced => self.tiers.reset(true),
                Event::Lost => self.tiers.reset(false),
                Event::Notification(notice) => match Uuid::parse_str(&notice.payload) {
                    Ok(user_id) => self.tiers.changed(user_id),
                    // Not ours to interpret: forget everything rather than guess.
                    Err(_) => self.tiers.reset(true),
                },
            }
        }
    }
}
