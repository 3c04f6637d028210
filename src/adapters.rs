//! Thin adapters that let the feature crates meet without depending on each other: the MCP
//! crate's `TokenVerifier` over the OAuth service, its `ToolRelay` over the Add-On bridge, and
//! the account pages' `AddonAccounts` over the bridge too. The crates speak the shared
//! `vocabulary` (principal, scope, presence, call outcomes), so these pass values through; the
//! only translations left are between genuinely different views (token errors, history queries).

use mcp::auth::{BoxFuture, TokenRejection, TokenVerifier};
use mcp::relay::{HistoryRequest, ToolRelay};
use oauth::account::{AddonAccounts, AddonKey};
use oauth::error::Internal;
use oauth::{AccessError, OAuthState};
use tokio::sync::broadcast;
use uuid::Uuid;
use vocabulary::{
    CallError, CallOutcome, CallRequest, Job, JobError, JobFilter, JobStart, Presence, Principal,
};

/// Verifies MCP bearer tokens with the OAuth service.
#[derive(Debug, Clone)]
pub struct OAuthTokenVerifier(pub OAuthState);

impl TokenVerifier for OAuthTokenVerifier {
    fn verify<'a>(
        &'a self,
        bearer_token: &'a str,
    ) -> BoxFuture<'a, Result<Principal, TokenRejection>> {
        Box::pin(async move {
            self.0
                .verify_access_token(bearer_token)
                .await
                .map_err(rejection)
        })
    }

    fn step_up_requested<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, ()> {
        Box::pin(self.0.request_step_up(principal.grant_id))
    }
}

fn rejection(error: AccessError) -> TokenRejection {
    match error {
        AccessError::Malformed => TokenRejection::Malformed,
        AccessError::Expired | AccessError::NotYetValid => TokenRejection::Expired,
        AccessError::WrongAudience => TokenRejection::WrongAudience,
        AccessError::Revoked => TokenRejection::Revoked,
        AccessError::BadSignature | AccessError::UnknownKey | AccessError::WrongIssuer => {
            TokenRejection::Unknown
        }
        AccessError::Unavailable => TokenRejection::Unavailable,
    }
}

/// Relays Add-On tools through the Add-On bridge, and serves stored Add-On history.
#[derive(Debug, Clone)]
pub struct AddonRelay {
    pub bridge: addon_bridge::AddonBridge,
    pub db: sqlx::PgPool,
}

impl ToolRelay for AddonRelay {
    fn presence(&self, user_id: Uuid) -> BoxFuture<'_, Presence> {
        Box::pin(self.bridge.presence(user_id))
    }

    fn call(&self, call: CallRequest) -> BoxFuture<'_, Result<CallOutcome, CallError>> {
        Box::pin(self.bridge.call(call))
    }

    fn presence_changes(&self) -> broadcast::Receiver<Uuid> {
        self.bridge.presence_changes()
    }

    fn history(
        &self,
        user_id: Uuid,
        request: HistoryRequest,
    ) -> BoxFuture<'_, Result<CallOutcome, CallError>> {
        Box::pin(async move {
            addon_bridge::data::history(&self.db, user_id, &request)
                .await
                .map_err(|err| {
                    tracing::warn!(error = %err, "reading Add-On history failed");
                    CallError::Unavailable
                })
        })
    }

    fn start_job(&self, start: JobStart) -> BoxFuture<'_, Result<Job, JobError>> {
        Box::pin(self.bridge.start_job(start))
    }

    fn job(&self, user_id: Uuid, job_id: Uuid) -> BoxFuture<'_, Result<Option<Job>, CallError>> {
        Box::pin(self.bridge.job(user_id, job_id))
    }

    fn jobs(&self, user_id: Uuid, filter: JobFilter) -> BoxFuture<'_, Result<Vec<Job>, CallError>> {
        Box::pin(async move { self.bridge.jobs(user_id, &filter).await })
    }

    fn cancel_job(&self, user_id: Uuid, job_id: Uuid) -> BoxFuture<'_, Result<Job, JobError>> {
        Box::pin(self.bridge.cancel_job(user_id, job_id))
    }

    fn wait_job(
        &self,
        user_id: Uuid,
        job_id: Uuid,
        after_version: i64,
        until: std::time::Instant,
    ) -> BoxFuture<'_, Result<Option<Job>, CallError>> {
        Box::pin(self.bridge.wait_job(user_id, job_id, after_version, until))
    }
}

/// The account pages' view of Add-On keys and presence, over the bridge.
#[derive(Debug, Clone)]
pub struct AddonAccountsAdapter {
    pub bridge: addon_bridge::AddonBridge,
    pub db: sqlx::PgPool,
}

impl AddonAccounts for AddonAccountsAdapter {
    fn presence(&self, user_id: Uuid) -> BoxFuture<'_, Presence> {
        Box::pin(self.bridge.presence(user_id))
    }

    fn list_keys(&self, user_id: Uuid) -> BoxFuture<'_, Result<Vec<AddonKey>, Internal>> {
        Box::pin(async move {
            let keys = addon_bridge::keys::list(&self.db, user_id)
                .await
                .map_err(|err| Internal::caused("Add-On keys", err))?;
            let live = addon_bridge::data::live_key(&self.db, user_id).await?;
            Ok(keys
                .into_iter()
                .filter(|key| key.revoked_at.is_none())
                .map(|key| AddonKey {
                    live: live == Some(key.key_id),
                    key_id: key.key_id,
                    hint: key.hint,
                    created_at: key.created_at,
                    last_used_at: key.last_used_at,
                })
                .collect())
        })
    }

    fn create_key(&self, user_id: Uuid) -> BoxFuture<'_, Result<(Uuid, String), Internal>> {
        Box::pin(async move {
            addon_bridge::keys::create(&self.db, user_id)
                .await
                .map_err(|err| Internal::caused("Add-On keys", err))
        })
    }

    fn revoke_key(&self, user_id: Uuid, key_id: Uuid) -> BoxFuture<'_, Result<bool, Internal>> {
        Box::pin(async move {
            addon_bridge::keys::revoke(&self.db, user_id, key_id)
                .await
                .map_err(|err| Internal::caused("Add-On keys", err))
        })
    }
}
