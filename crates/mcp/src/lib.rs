//! MCP resource server at `/v1/api/mcp`: Streamable HTTP JSON-RPC for every published protocol
//! revision (2025-03-26, 2025-06-18, 2025-11-25 with `initialize`; 2026-07-28 stateless with
//! `server/discover` and per-request `_meta`), the tool catalog, and scope- and tier-gated
//! dispatch.
//!
//! Invariants: every request without a valid bearer token is answered 401 with the RFC 9728
//! challenge; no session id is ever issued (any replica serves any request); the Elite and
//! scope gates apply to `tools/call` only, so discovery and listing work on every tier.
//!
//! Dependencies: this crate must not depend on `oauth` or `addon-bridge` (nor on the server
//! binary). It reaches token verification only through its own [`TokenVerifier`] trait and the
//! Add-On only through its own [`ToolRelay`] trait; adapters in the binary implement both.
//! It reads accounts (the subscription tier) through the shared `store` crate, and speaks the
//! shared `vocabulary` (principal, scope, Add-On presence and call outcomes).

pub mod auth;
pub mod catalog;
mod confirm;
mod dispatch;
pub mod error;
pub mod extension;
pub mod protocol;
pub mod relay;
mod transport;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::FromRef;
use axum::routing::post;
use sqlx::PgPool;

pub use auth::{Authenticated, BoxFuture, Principal, Scope, TokenRejection, TokenVerifier};
pub use catalog::tool_table_markdown;
pub use error::{HttpCode, HttpError, HttpRejection};
pub use relay::{CallError, CallOutcome, CallRequest, NotConnectedRelay, Presence, ToolRelay};

/// The MCP endpoint's path; `{MCP_PATH}/` is served by the same handlers, never redirected
/// (CLIENTS.md row 9).
pub const MCP_PATH: &str = "/v1/api/mcp";

/// Configuration of the MCP resource server.
#[derive(Debug, Clone)]
pub struct McpSettings {
    /// The public base URL, e.g. `https://app.crosstrade.io`, no trailing slash.
    pub public_url: String,
    /// ASCII-serialized origins allowed to call the endpoint from a browser; the origin of
    /// `public_url` is always allowed.
    pub allowed_origins: Vec<String>,
    /// Also allow any loopback origin (`http://localhost:*`, `http://127.0.0.1:*`,
    /// `http://[::1]:*`): development only.
    pub allow_loopback_origins: bool,
    /// Reported in `serverInfo` and by `GetMcpCapabilities`.
    pub server_version: String,
    /// Caps on open server-to-client streams.
    pub streams: StreamLimits,
}

/// Caps on the legacy server-to-client SSE streams (GET) of this replica. A stream holds a
/// connection and a task for as long as the client keeps it open, so one account must not
/// open them without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Open streams per account; beyond it 429 `too_many_requests` with `Retry-After`.
    pub per_account: usize,
    /// Open streams in all; beyond it 503 `server_error` with `Retry-After`.
    pub per_replica: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            per_account: 8,
            per_replica: 1024,
        }
    }
}

#[derive(Debug, Default)]
struct StreamCounts {
    total: usize,
    per_account: std::collections::HashMap<uuid::Uuid, usize>,
}

/// One open stream, counted until the stream (its response body) is dropped.
pub(crate) struct StreamSlot {
    counts: Arc<Mutex<StreamCounts>>,
    user_id: uuid::Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_account.get_mut(&self.user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_account.remove(&self.user_id);
            }
        }
    }
}

/// What the MCP handlers share. Cheap to clone.
#[derive(Clone)]
pub struct McpState {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    settings: McpSettings,
    db: PgPool,
    verifier: Arc<dyn TokenVerifier>,
    relay: Arc<dyn ToolRelay>,
    /// Tiers cached per replica and dropped on change (none: read per call).
    tiers: Option<Arc<store::tiers::TierCache>>,
    /// Where every `tools/call` is recorded for the AI Clients page (none: not recorded).
    activity: Option<Arc<store::activity::Recorder>>,
    resource_metadata: Arc<str>,
    challenges: Arc<error::Challenges>,
    /// Lower-cased allowed origins, the public one included.
    origins: Vec<String>,
    /// Set when the server shuts down: open SSE streams end so connections can drain.
    closing: tokio::sync::watch::Sender<bool>,
    /// Open SSE streams, against `settings.streams`.
    streams: Arc<Mutex<StreamCounts>>,
    /// A test harness's additions (none in the binary).
    extension: Option<Arc<dyn extension::Extension>>,
    /// `tools/list` results, serialized once per variant (see `dispatch::cached_tool_list`).
    tool_lists: Arc<Mutex<std::collections::HashMap<String, axum::body::Bytes>>>,
}

impl fmt::Debug for McpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpState")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl McpState {
    pub fn new(
        settings: McpSettings,
        db: PgPool,
        verifier: Arc<dyn TokenVerifier>,
        relay: Arc<dyn ToolRelay>,
    ) -> Self {
        let public_url = settings.public_url.trim_end_matches('/').to_owned();
        let resource_metadata = format!("{public_url}/.well-known/oauth-protected-resource");
        let mut origins: Vec<String> = settings
            .allowed_origins
            .iter()
            .map(|origin| origin.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        origins.push(origin_of(&public_url));
        Self {
            inner: Arc::new(Inner {
                settings,
                db,
                verifier,
                relay,
                tiers: None,
                activity: None,
                challenges: Arc::new(error::Challenges::new(&resource_metadata)),
                resource_metadata: resource_metadata.into(),
                origins,
                closing: tokio::sync::watch::channel(false).0,
                streams: Arc::default(),
                extension: None,
                tool_lists: Arc::default(),
            }),
        }
    }

    /// Ends every open server-to-client stream (clients reconnect, to another replica), so that
    /// a shutting-down server's connections can drain.
    pub fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }

    /// A serialized `tools/list` result for `key`, built by `build` the first time.
    pub(crate) fn tool_list<E>(
        &self,
        key: String,
        build: impl FnOnce() -> Result<axum::body::Bytes, E>,
    ) -> Result<axum::body::Bytes, E> {
        let cached = self
            .inner
            .tool_lists
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(cached) = cached {
            return Ok(cached);
        }
        let built = build()?;
        let mut lists = self
            .inner
            .tool_lists
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Revisions × scopes × presence × announced features: a handful; bounded all the same.
        if lists.len() >= 256 {
            lists.clear();
        }
        lists.insert(key, built.clone());
        Ok(built)
    }

    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Counts a new stream of `user_id`, or says which cap refuses it.
    pub(crate) fn stream_slot(&self, user_id: uuid::Uuid) -> Result<StreamSlot, HttpError> {
        let limits = self.inner.settings.streams;
        let mut counts = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if counts.total >= limits.per_replica {
            metrics::counter!("mcp_streams_refused_total", "reason" => "per_replica").increment(1);
            return Err(HttpError::ServerError(
                "This server holds as many streams as it can; retry shortly",
            ));
        }
        let mine = counts.per_account.entry(user_id).or_insert(0);
        if *mine >= limits.per_account {
            metrics::counter!("mcp_streams_refused_total", "reason" => "per_account").increment(1);
            return Err(HttpError::TooManyRequests(
                "This account already has as many open streams as it may; close one and retry",
            ));
        }
        *mine += 1;
        counts.total += 1;
        Ok(StreamSlot {
            counts: Arc::clone(&self.inner.streams),
            user_id,
        })
    }

    /// Serves the Elite gate's tiers from `cache` (kept current by its listener) instead of
    /// reading PostgreSQL on every `tools/call`.
    #[must_use]
    pub fn with_tier_cache(self, cache: Arc<store::tiers::TierCache>) -> Self {
        let mut inner = (*self.inner).clone();
        inner.tiers = Some(cache);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Records every `tools/call` (tool, outcome, per grant) in `recorder`, which writes them
    /// in the background.
    #[must_use]
    pub fn with_activity(self, recorder: Arc<store::activity::Recorder>) -> Self {
        let mut inner = (*self.inner).clone();
        inner.activity = Some(recorder);
        Self {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn activity(&self) -> Option<&store::activity::Recorder> {
        self.inner.activity.as_deref()
    }

    /// The caller's tier (`None`: the account no longer exists), read per call unless a tier
    /// cache is in use.
    pub(crate) async fn tier_of(
        &self,
        user_id: uuid::Uuid,
    ) -> Result<Option<store::users::Tier>, store::users::UserError> {
        match &self.inner.tiers {
            Some(cache) => cache.tier(&self.inner.db, user_id).await,
            None => Ok(store::users::find_by_id(&self.inner.db, user_id)
                .await?
                .map(|user| user.tier)),
        }
    }

    /// A state that also serves `extension`'s methods, tools and capabilities (test harnesses
    /// only: the binary never calls this).
    #[must_use]
    pub fn with_extension(self, extension: Arc<dyn extension::Extension>) -> Self {
        let mut inner = (*self.inner).clone();
        inner.extension = Some(extension);
        Self {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn extension(&self) -> Option<&dyn extension::Extension> {
        self.inner.extension.as_deref()
    }

    pub fn settings(&self) -> &McpSettings {
        &self.inner.settings
    }

    /// The protected resource: `{public_url}/v1/api/mcp`.
    pub fn resource(&self) -> String {
        format!(
            "{}{MCP_PATH}",
            self.inner.settings.public_url.trim_end_matches('/')
        )
    }

    /// The RFC 9728 metadata URL named in every challenge.
    pub fn resource_metadata_url(&self) -> &str {
        &self.inner.resource_metadata
    }

    pub(crate) fn verifier(&self) -> &dyn TokenVerifier {
        self.inner.verifier.as_ref()
    }

    pub(crate) fn db(&self) -> &PgPool {
        &self.inner.db
    }

    pub(crate) fn relay(&self) -> &dyn ToolRelay {
        self.inner.relay.as_ref()
    }

    pub(crate) fn reject(&self, error: HttpError) -> HttpRejection {
        HttpRejection {
            error,
            challenges: Arc::clone(&self.inner.challenges),
        }
    }

    /// Whether a browser `Origin` may call the endpoint (exact, case-insensitive match, or
    /// any loopback origin where development allows it).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.inner.origins.contains(&origin)
            || (self.inner.settings.allow_loopback_origins && is_loopback_origin(&origin))
    }
}

/// `http(s)://` followed by `localhost`, `127.0.0.1` or `[::1]`, with any port.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match authority.strip_prefix("[::1]") {
        Some(rest) => return rest.is_empty() || port_only(rest),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() {
                    host
                } else {
                    authority
                }
            }),
    };
    host == "localhost" || host == "127.0.0.1"
}

fn port_only(rest: &str) -> bool {
    rest.strip_prefix(':')
        .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// `scheme://host[:port]` of a URL, lower-cased.
fn origin_of(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    match lower.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            format!("{scheme}://{authority}")
        }
        None => lower,
    }
}

/// The MCP endpoint: POST (JSON-RPC), GET (legacy SSE stream), DELETE (405), OPTIONS
/// (CORS preflight, no auth), at `/v1/api/mcp` and `/v1/api/mcp/`.
pub fn router<S>() -> Router<S>
where
    McpState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    let endpoint = || {
        post(transport::post_mcp)
            .get(transport::get_mcp)
            .delete(transport::delete_mcp)
            .options(transport::options_mcp)
    };
    Router::new()
        .route(MCP_PATH, endpoint())
        .route(&format!("{MCP_PATH}/"), endpoint())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://App.CrossTrade.io"),
            "https://app.crosstrade.io"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/x"),
            "http://127.0.0.1:8080"
        );
    }
}

#[cfg(test)]
mod origin_tests {
    use super::is_loopback_origin;

    #[test]
    fn loopback_origins() {
        for origin in [
            "http://localhost:6274",
            "http://localhost",
            "http://127.0.0.1:3000",
            "https://localhost:8443",
            "http://[::1]:6274",
        ] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "http://localhost.evil.example",
            "http://evil.example:localhost",
            "http://127.0.0.1.evil.example",
            "http://localhost:",
            "http://[::1]x",
            "ftp://localhost",
            "null",
            "http://10.0.0.1:6274",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }
}
