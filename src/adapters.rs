//! Thin adapters that let the feature crates meet without depending on each other: the MCP
//! crate's `TokenVerifier` over the OAuth service, and its `ToolRelay` over the Add-On bridge.

use mcp::auth::{BoxFuture, GrantedScope, Principal, TokenRejection, TokenVerifier};
use oauth::scope::Scope;
use oauth::{AccessError, OAuthState};

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
