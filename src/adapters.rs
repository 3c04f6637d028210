//! Thin adapters that let the feature crates meet without depending on each other: the MCP
//! crate's `TokenVerifier` over the OAuth service, and its `ToolRelay` over the Add-On bridge.

use addon_bridge::data::{HistoryFilter, HistoryQuery};
use addon_bridge::{CallError, CallOutcome, CallRequest};
use mcp::auth::{BoxFuture, GrantedScope, Principal, TokenRejection, TokenVerifier};
use mcp::relay::{AddonPresence, HistoryRequest, RelayCall, RelayError, RelayOutcome, ToolRelay};
use oauth::account::{AddonAccounts, AddonKey, AddonStatus};
use oauth::error::Internal;
use oauth::scope::Scope;
use oauth::{AccessError, OAuthState};
use tokio::sync::broadcast;
use uuid::Uuid;

/// Verifies MCP bearer tokens with the OAuth service.
#[derive(Debug, Clone)]
pub struct OAuthTokenVerifier(pub OAuthState);

impl TokenVerifier for OAuthTokenVerifier {
    fn verify<'a>(
        &'a self,
        bearer_token: &'a str,
    ) -> BoxFuture<'a, Result<Principal, TokenRejection>> {
        Box::pin(async move {
            let access = self
                .0
                .verify_access_token(bearer_token)
                .await
                .map_err(rejection)?;
            Ok(Principal {
                user_id: access.user_id,
                client_id: access.client_id,
                grant_id: access.grant_id,
                scope: match access.scope {
                    Scope::Read => GrantedScope::Read,
                    Scope::Trade => GrantedScope::Trade,
                },
            })
        })
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
    fn presence(&self, user_id: Uuid) -> BoxFuture<'_, AddonPresence> {
        Box::pin(async move {
            let presence = self.bridge.presence(user_id).await;
            AddonPresence {
                connected: presence.connected,
                addon_version: presence.addon_version,
                nt8_version: presence.nt8_version,
                features: presence.features,
            }
        })
    }

    fn call(&self, call: RelayCall) -> BoxFuture<'_, Result<RelayOutcome, RelayError>> {
        Box::pin(async move {
            let request = CallRequest {
                user_id: call.user_id,
                tool: call.tool,
                arguments: call.arguments,
                deadline: call.deadline,
                idempotency_key: call.idempotency_key,
            };
            match self.bridge.call(request).await {
                Ok(CallOutcome::Ok(value)) => Ok(RelayOutcome::Ok(value)),
                Ok(CallOutcome::ToolError(message)) => Ok(RelayOutcome::ToolError(message)),
                Err(CallError::NotConnected) => Err(RelayError::NotConnected),
                Err(CallError::Disconnected) => Err(RelayError::Disconnected),
                Err(CallError::DeadlineExceeded) => Err(RelayError::DeadlineExceeded),
                Err(CallError::Unavailable) => Err(RelayError::Unavailable),
                Err(CallError::TooManyCalls) => Err(RelayError::TooManyCalls),
            }
        })
    }

    fn presence_changes(&self) -> broadcast::Receiver<Uuid> {
        self.bridge.presence_changes()
    }

    fn history(
        &self,
        user_id: Uuid,
        request: HistoryRequest,
    ) -> BoxFuture<'_, Result<serde_json::Value, RelayError>> {
        Box::pin(async move {
            let query = match request {
                HistoryRequest::Journal(filter) => HistoryQuery::Journal(HistoryFilter {
                    account: filter.account,
                    instrument: filter.instrument,
                    since: filter.since,
                    until: filter.until,
                    limit: Some(filter.limit),
                }),
                HistoryRequest::Activity { limit } => HistoryQuery::Activity { limit },
                HistoryRequest::Watermarks { account } => HistoryQuery::Watermarks { account },
            };
            addon_bridge::data::history(&self.db, user_id, &query)
                .await
                .map_err(|err| {
                    tracing::warn!(error = %err, "reading Add-On history failed");
                    RelayError::Unavailable
                })
        })
    }
}

/// The account pages' view of Add-On keys and presence, over the bridge.
#[derive(Debug, Clone)]
pub struct AddonAccountsAdapter {
    pub bridge: addon_bridge::AddonBridge,
    pub db: sqlx::PgPool,
}

impl AddonAccounts for AddonAccountsAdapter {
    fn status(&self, user_id: Uuid) -> BoxFuture<'_, AddonStatus> {
        Box::pin(async move {
            let presence = self.bridge.presence(user_id).await;
            AddonStatus {
                connected: presence.connected,
                addon_version: presence.addon_version,
                nt8_version: presence.nt8_version,
            }
        })
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
