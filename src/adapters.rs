//! Thin adapters that let the feature crates meet without depending on each other: the MCP
//! crate's `TokenVerifier` over the OAuth service, and its `ToolRelay` over the Add-On bridge.

use addon_bridge::{CallError, CallOutcome, CallRequest};
use mcp::auth::{BoxFuture, GrantedScope, Principal, TokenRejection, TokenVerifier};
use mcp::relay::{AddonPresence, RelayCall, RelayError, RelayOutcome, ToolRelay};
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

/// Relays Add-On tools through the Add-On bridge.
#[derive(Debug, Clone)]
pub struct AddonRelay(pub addon_bridge::AddonBridge);

impl ToolRelay for AddonRelay {
    fn presence(&self, user_id: Uuid) -> BoxFuture<'_, AddonPresence> {
        Box::pin(async move {
            let presence = self.0.presence(user_id).await;
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
            match self.0.call(request).await {
                Ok(CallOutcome::Ok(value)) => Ok(RelayOutcome::Ok(value)),
                Ok(CallOutcome::ToolError(message)) => Ok(RelayOutcome::ToolError(message)),
                Err(CallError::NotConnected) => Err(RelayError::NotConnected),
                Err(CallError::Disconnected) => Err(RelayError::Disconnected),
                Err(CallError::DeadlineExceeded) => Err(RelayError::DeadlineExceeded),
                Err(CallError::Unavailable) => Err(RelayError::Unavailable),
            }
        })
    }

    fn presence_changes(&self) -> broadcast::Receiver<Uuid> {
        self.0.presence_changes()
    }
}
