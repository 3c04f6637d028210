//! The OAuth service state shared by every handler.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use ipnet::IpNet;
use sqlx::PgPool;
use store::Background;
use store::clock::Clock;
use tokio::sync::Notify;

use crate::cimd::CimdSettings;
use crate::crypto::derive_key;
use crate::error::Internal;
use crate::keys::KeyRing;
use crate::verify::GrantCache;

/// Slots of each token-endpoint limiter (fixed memory; keys that share a slot only forget).
const LIMITER_SLOTS: usize = 65_536;

/// Paths of the endpoints, relative to the issuer.
pub mod paths {
    pub const AUTHORIZE: &str = "/v1/oauth/mcp/authorize";
    pub const SIGN_IN: &str = "/v1/oauth/mcp/sign-in";
    pub const CONSENT: &str = "/v1/oauth/mcp/consent";
    pub const TOKEN: &str = "/v1/oauth/mcp/token";
    pub const REGISTER: &str = "/v1/oauth/mcp/register";
    pub const REVOKE: &str = "/v1/oauth/mcp/revoke";
    pub const JWKS: &str = "/v1/oauth/mcp/jwks";
    pub const STYLESHEET: &str = "/v1/oauth/mcp/assets/style.css";
    pub const COPY_SCRIPT: &str = "/v1/oauth/mcp/assets/copy.js";
    pub const MCP: &str = "/v1/api/mcp";
    pub const AS_METADATA: &str = "/.well-known/oauth-authorization-server";
    pub const PRM: &str = "/.well-known/oauth-protected-resource";
}

/// Settings taken from the server's configuration.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The public base URL; the issuer string, byte for byte.
    pub issuer: String,
    pub authorization_code_lifetime: Duration,
    pub access_token_lifetime: Duration,
    /// The absolute end of a refresh-token family, from its consent; `None` (the default): only
    /// the idle timeout bounds it.
    pub refresh_token_lifetime: Option<Duration>,
    pub refresh_token_idle_lifetime: Duration,
    pub registrations_per_hour: u32,
    pub sign_in_failures_per_ip: u32,
    pub sign_in_failures_per_account: u32,
    /// First delay for an address retrying an account past its failure threshold; doubles with
    /// each further failure on the account (the rule is in the `sign_in` module).
    pub sign_in_delay_base: Duration,
    /// Argon2id verifications at once on this replica (19 MiB each).
    pub password_checks_at_once: usize,
    /// Longest wait for a free verification slot before answering 503.
    pub password_check_wait: Duration,
    /// Token endpoint requests per client IP per minute, on each replica.
    pub token_requests_per_minute: u32,
    /// Token requests per grant per minute that proved possession of its refresh token or
    /// code, on each replica.
    pub token_requests_per_grant_per_minute: u32,
    pub trusted_proxies: Vec<IpNet>,
}

impl OAuthSettings {
    /// The protected resource: the MCP endpoint (RFC 8707 audience of every access token).
    pub fn resource(&self) -> String {
        format!("{}{}", self.issuer, paths::MCP)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn secure_cookies(&self) -> bool {
        self.issuer.starts_with("https://")
    }
}

/// The OAuth service: settings, database, keys and the grant cache.
#[derive(Debug, Clone)]
pub struct OAuthState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub settings: OAuthSettings,
    pub db: PgPool,
    pub clock: Clock,
    pub keys: KeyRing,
    pub grants: GrantCache,
    /// Wakes the key refresh: a rotation was announced, or the listener resynced.
    pub keys_changed: Notify,
    pub verified: crate::verify::VerifiedTokens,
    /// Token requests by client address.
    pub token_limiter: crate::bounded::WindowCounter,
    /// Token requests that proved possession, by grant.
    pub grant_limiter: crate::bounded::WindowCounter,
    /// Argon2id verifications in progress, capped.
    pub password_slots: crate::sign_in::PasswordSlots,
    /// Client ID Metadata Document fetcher.
    pub cimd: crate::cimd::Fetcher,
    /// Key for deriving a rotated refresh token's successor from the token itself.
    pub refresh_key: [u8; 32],
    /// Key for the account pages' session-bound CSRF tokens.
    pub csrf_key: [u8; 32],
}

impl std::fmt::Debug for GrantCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantCache").finish_non_exhaustive()
    }
}

impl OAuthState {
    /// Loads (or creates) the signing keys and starts, under `background`, the revocation
    /// listener, the key refresh and the reaper; Client ID Metadata Documents with the
    /// production [`CimdSettings::default`].
    pub async fn start(
        settings: OAuthSettings,
        db: PgPool,
        master_secret: &[u8],
        clock: Clock,
        background: &Background,
    ) -> Result<Self, Internal> {
        Self::start_with_cimd(
            settings,
            CimdSettings::default(),
            db,
            master_secret,
            clock,
            background,
        )
        .await
    }

    /// [`OAuthState::start`] with other CIMD settings (tests: loopback documents, small caps).
    pub async fn start_with_cimd(
        settings: OAuthSettings,
        cimd: CimdSettings,
        db: PgPool,
        master_secret: &[u8],
        clock: Clock,
        background: &Background,
    ) -> Result<Self, Internal> {
        let cimd = crate::cimd::Fetcher::new(cimd)?;
        let keys = KeyRing::load(&db, master_secret, &clock).await?;
        let token_limiter = crate::bounded::WindowCounter::new(
            settings.token_requests_per_minute,
            TimeDelta::minutes(1),
            LIMITER_SLOTS,
        );
        let grant_limiter = crate::bounded::WindowCounter::new(
            settings.token_requests_per_grant_per_minute,
            TimeDelta::minutes(1),
            LIMITER_SLOTS,
        );
        let password_slots = crate::sign_in::PasswordSlots::new(&settings);
        let state = Self {
            inner: Arc::new(Inner {
                settings,
                db,
                clock,
                keys,
                grants: GrantCache::default(),
                keys_changed: Notify::new(),
                verified: crate::verify::VerifiedTokens::default(),
                token_limiter,
                grant_limiter,
                password_slots,
                cimd,
                refresh_key: derive_key(master_secret, "crosstrade refresh-token successor v1"),
                csrf_key: derive_key(master_secret, "crosstrade account csrf v1"),
            }),
        };
        crate::verify::start_revocation_listener(&state, background);
        crate::verify::start_key_refresh(&state, &background.tasks);
        crate::maintenance::start_reaper(&state, &background.tasks);
        Ok(state)
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.inner.settings
    }

    pub fn db(&self) -> &PgPool {
        &self.inner.db
    }

    /// The signing keys (JWKS, and signing for tools that mint tokens in-process).
    pub fn key_ring(&self) -> &KeyRing {
        &self.inner.keys
    }

    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.clock.now()
    }
}
