//! The trader's account pages — overview, AI Clients (what each authorized client did; revoke
//! one or all), Add-On keys, trade confirmations (approve or reject a held order, the policy) —
//! and the same data as JSON for the product's own front end.
//!
//! Two wire contracts, one module each: [`pages`] answers HTML (errors as the error page),
//! [`api`] answers JSON under `/v1/account/` (errors as `{error, message}`, codes in
//! [`api::ApiCode`]). This module holds what both share: the state, the routes, the CSRF token
//! and the Add-On side.
//!
//! Everything here authenticates with the browser session only: an `Authorization` header (an
//! MCP token, an Add-On key) is never accepted. Forms carry a CSRF token derived from the session
//! (HMAC of the session id's hash), so it is bound to it and needs no storage; JSON mutations
//! carry the same token in `X-CSRF-Token`. The Add-On side is reached through [`AddonAccounts`],
//! implemented by the server over the Add-On bridge.

mod activity;
pub mod api;
mod confirmations;
pub mod pages;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;
use vocabulary::{AddonState, Presence};

use crate::crypto::{b64, hmac_sha256, secure_eq};
use crate::error::Internal;
use crate::session::Session;
use crate::state::OAuthState;

pub use store::BoxFuture;

/// One Add-On key, never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddonKey {
    pub key_id: Uuid,
    /// The key's first characters, so a person can tell keys apart.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The Add-On is connected with this key right now.
    pub live: bool,
}

/// The Add-On as the account API shows it: the presence with its state in one word and in
/// the sentence the overview page shows.
#[derive(Debug, Serialize)]
pub struct AddonView<'a> {
    pub state: AddonState,
    pub status: String,
    #[serde(flatten)]
    pub presence: &'a Presence,
}

impl<'a> AddonView<'a> {
    pub fn of(presence: &'a Presence) -> Self {
        Self {
            state: presence.state(),
            status: presence.status(),
            presence,
        }
    }
}

/// What the account pages need from the Add-On side.
pub trait AddonAccounts: Send + Sync + 'static {
    /// The user's Add-On connection, as the overview shows it.
    fn presence(&self, user_id: Uuid) -> BoxFuture<'_, Presence>;
    /// The user's keys that are not revoked, newest first.
    fn list_keys(&self, user_id: Uuid) -> BoxFuture<'_, Result<Vec<AddonKey>, Internal>>;
    /// A new key: its id and the secret, shown once.
    fn create_key(&self, user_id: Uuid) -> BoxFuture<'_, Result<(Uuid, String), Internal>>;
    /// Revokes one of the user's keys; `false` when it is not theirs or already revoked.
    fn revoke_key(&self, user_id: Uuid, key_id: Uuid) -> BoxFuture<'_, Result<bool, Internal>>;
}

/// State of the account routes.
#[derive(Clone)]
pub struct AccountState {
    pub oauth: OAuthState,
    pub addon: Arc<dyn AddonAccounts>,
}

impl std::fmt::Debug for AccountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountState").finish_non_exhaustive()
    }
}

pub fn router<S>() -> Router<S>
where
    AccountState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/account", get(pages::get_account))
        .route(
            "/account/sign-in",
            get(pages::get_sign_in).post(pages::post_sign_in),
        )
        .route("/account/sign-out", post(pages::post_sign_out))
        .route("/account/ai-clients", get(pages::get_ai_clients))
        .route(
            "/account/ai-clients/revoke-all",
            get(pages::get_revoke_all_ai_clients).post(pages::post_revoke_all_ai_clients),
        )
        .route(
            "/account/ai-clients/{grant_id}/revoke",
            get(pages::get_revoke_ai_client).post(pages::post_revoke_ai_client),
        )
        .route(
            "/account/addon-keys",
            get(pages::get_addon_keys).post(pages::post_addon_key),
        )
        .route(
            "/account/addon-keys/{key_id}/revoke",
            post(pages::post_revoke_addon_key),
        )
        .route(
            "/account/confirmations",
            get(confirmations::get_confirmations),
        )
        .route(
            "/account/confirmations/{id}",
            get(confirmations::get_confirmation).post(confirmations::post_confirmation),
        )
        .route(
            "/account/confirmation-policy",
            post(confirmations::post_confirmation_policy),
        )
        .route("/v1/account", get(api::get_account))
        .route("/v1/account/ai-clients", get(api::get_ai_clients))
        .route(
            "/v1/account/ai-clients/{grant_id}",
            delete(api::delete_ai_client),
        )
        .route(
            "/v1/account/addon-keys",
            get(api::get_addon_keys).post(api::post_addon_key),
        )
        .route(
            "/v1/account/addon-keys/{key_id}",
            delete(api::delete_addon_key),
        )
        // Read and set the policy, read the rows: approving is the page's form only.
        .route(
            "/v1/account/confirmation-policy",
            get(confirmations::get_confirmation_policy_json)
                .put(confirmations::put_confirmation_policy_json),
        )
        .route(
            "/v1/account/confirmations",
            get(confirmations::get_confirmations_json),
        )
        .route(
            crate::state::paths::COPY_SCRIPT,
            get(pages::get_copy_script),
        )
}

/// The CSRF token of a session: unguessable without the server key, bound to the session.
fn csrf_token(state: &OAuthState, session: &Session) -> String {
    b64(&hmac_sha256(&state.inner.csrf_key, &session.id_hash))
}

fn csrf_ok(state: &OAuthState, session: &Session, presented: &str) -> bool {
    secure_eq(csrf_token(state, session).as_bytes(), presented.as_bytes())
}
