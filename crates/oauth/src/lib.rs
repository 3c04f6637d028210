//! OAuth 2.1 authorization server for MCP clients: RFC 8414 and RFC 9728 discovery, RFC 7591
//! registration and Client ID Metadata Documents, sign-in and consent, the token endpoint, RFC 7009 revocation, and access-token
//! verification. Depends on `store` and `vocabulary` only; never on `mcp` or `addon-bridge`.
//!
//! Invariants: secrets (session ids, codes, refresh tokens) are stored only as SHA-256; signing
//! keys only encrypted; codes are single-use by one atomic statement; a grant's end is visible
//! to every replica through LISTEN/NOTIFY.

pub mod account;
mod authorize;
mod bounded;
mod cimd;
mod client_ip;
pub mod client_metadata;
pub mod crypto;
mod db;
pub mod error;
mod events;
pub mod grants;
pub mod keys;
pub mod maintenance;
mod metadata;
mod pages;
pub mod params;
pub mod redirect_uri;
pub mod register;
mod revoke;
mod session;
mod sign_in;
mod state;
pub mod token;
mod verify;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{Method, header};
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};

pub use cimd::CimdSettings;
pub use state::{OAuthSettings, OAuthState, paths};
pub use verify::AccessError;
pub use vocabulary::Principal;
/// The MCP scopes live with the shared vocabulary; the OAuth server parses and grants them.
pub use vocabulary::scope;

/// The OAuth routes. Discovery, registration, token and revocation allow any origin without
/// credentials (browser-based MCP clients call them); the authorization pages have no CORS.
pub fn router<S>() -> Router<S>
where
    OAuthState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("mcp-protocol-version"),
        ])
        .max_age(std::time::Duration::from_secs(3600));
    let open = Router::new()
        .route(
            paths::AS_METADATA,
            get(metadata::get_authorization_server_metadata),
        )
        .route(
            "/.well-known/oauth-authorization-server/v1/api/mcp",
            get(metadata::get_authorization_server_metadata),
        )
        .route(paths::PRM, get(metadata::get_protected_resource_metadata))
        .route(
            "/.well-known/oauth-protected-resource/v1/api/mcp",
            get(metadata::get_protected_resource_metadata),
        )
        .route(paths::JWKS, get(metadata::get_jwks))
        .route(paths::REGISTER, post(register::post_register))
        .route(paths::TOKEN, post(token::post_token))
        .route(paths::REVOKE, post(revoke::post_revoke))
        .layer(cors);
    let pages = Router::new()
        .route(paths::AUTHORIZE, get(authorize::get_authorize))
        .route(paths::SIGN_IN, post(authorize::post_sign_in))
        .route(paths::CONSENT, post(authorize::post_consent))
        .route(paths::STYLESHEET, get(pages::get_stylesheet))
        .route("/favicon.ico", get(pages::get_favicon));
    open.merge(pages)
}
