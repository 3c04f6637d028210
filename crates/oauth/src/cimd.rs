//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP
//! client-registration): a `client_id` that is an `https` URL names a JSON document, served at
//! that URL, that describes the client.
//!
//! The URL's form is checked before anything is fetched. The fetch is SSRF-safe: this module
//! resolves the name itself, refuses the request if any resolved address is private, loopback,
//! link-local, unique-local, CGNAT, multicast, unspecified, reserved or a cloud metadata address,
//! and then opens the TCP connection to a vetted address itself (TLS with the URL's host name).
//! Redirects are never followed (draft §5: "MUST NOT automatically follow HTTP redirects"), so a
//! redirect to an internal address, or anywhere else, is a refusal. Only `200` with an
//! `application/json` (or `application/*+json`) body is a document. The body is capped while it
//! streams and the whole fetch has one deadline.
//!
//! A valid document is stored as a row of `oauth_clients` (so grants, codes, tokens, AI Clients
//! and revocation work unchanged) with `metadata_expires_at` from `Cache-Control: max-age`
//! within bounds; until then authorizations use the row without fetching. Invalid documents and
//! failed fetches are never stored: the next authorization fetches again, and a stored row that
//! has expired is not used (the authorization fails) until a fetch succeeds.
//!
//! Cost bounds: fetches are limited per client address and per replica (per minute); a URL
//! whose fetch or document failed is answered from a short in-process negative cache without
//! fetching; a host keeps at most `max_unproven_clients_per_host` stored documents that never
//! completed an authorization (the oldest is replaced), so one host cannot fill `oauth_clients`
//! with distinct URLs. Fetch failures are reported to the browser as one sentence, whatever
//! happened (DNS, connection, TLS, timeout, status, type, size): distinguishing them would turn
//! the server into a port scanner. The detail goes to the log with the URL's host.
//!
//! Decisions: the token endpoint never fetches; it accepts a CIMD client whose row exists.
//! Codes and grants carry the redirect URI that was validated against the document in force when
//! the authorization was requested, and consent re-checks it against the stored document, so a
//! document that drops a redirect URI stops new authorizations with it; grants already issued
//! keep working until revoked (revocation is on the AI Clients page).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::bounded::{ExpiringCache, WindowCounter};
use crate::client_ip::bucket;
use crate::client_metadata::ClientMetadata;
use crate::crypto::sha256;
use crate::db;
use crate::error::Internal;
use crate::events::{self, Kind, Origin};
use crate::register::Source;
use crate::state::OAuthState;

/// Longest accepted document URL.
pub const MAX_URL: usize = 2000;
const MAX_CONCURRENT_FETCHES: usize = 32;
/// Slots of the per-address fetch counter and of the negative cache (fixed memory).
const TABLE_SLOTS: usize = 4096;
/// Longest refusal reason kept in the negative cache, in characters.
const MAX_REMEMBERED_REASON: usize = 400;
/// What a browser is told when a document could not be fetched, whatever the reason.
pub const NOT_FETCHED: &str = "the client metadata document could not be fetched";

/// CIMD settings. Production uses [`CimdSettings::default`].
#[derive(Debug, Clone)]
pub struct CimdSettings {
    /// TESTS ONLY: accept `http` and `https` documents on loopback addresses (127.0.0.0/8, ::1)
    /// so tests can serve them. Never set from configuration.
    pub allow_loopback: bool,
    /// TESTS ONLY: answers for these host names instead of DNS (so tests can make a name resolve
    /// to a private address). Empty in production.
    pub static_hosts: Vec<(String, Vec<IpAddr>)>,
    /// TESTS ONLY: DER certificates trusted besides the Mozilla root set. Empty in production.
    pub extra_roots: Vec<Vec<u8>>,
    /// The whole fetch: resolution, connection, TLS, response and body.
    pub fetch_timeout: Duration,
    /// Largest document body.
    pub max_document_bytes: usize,
    pub min_cache: Duration,
    pub max_cache: Duration,
    /// When the response has no usable `max-age`.
    pub default_cache: Duration,
    /// Fetches one client address (IPv4, or IPv6 /64) may cause per minute.
    pub fetches_per_address_per_minute: u32,
    /// Fetches per minute on this replica, all addresses together.
    pub fetches_per_minute: u32,
    /// How long a URL whose fetch or document failed is refused without fetching again.
    pub negative_cache: Duration,
    /// Stored documents per host that never completed an authorization; beyond it the oldest
    /// of them is replaced.
    pub max_unproven_clients_per_host: u32,
}

impl Default for CimdSettings {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            static_hosts: Vec::new(),
            extra_roots: Vec::new(),
            fetch_timeout: Duration::from_secs(5),
            max_document_bytes: 16 * 1024,
            min_cache: Duration::from_secs(60),
            max_cache: Duration::from_secs(24 * 3600),
            default_cache: Duration::from_secs(3600),
            fetches_per_address_per_minute: 20,
            fetches_per_minute: 300,
            negative_cache: Duration::from_secs(60),
            max_unproven_clients_per_host: 100,
        }
    }
}

/// The HTTP(S) fetcher with its TLS configuration.
#[derive(Clone)]
pub(crate) struct Fetcher {
    settings: CimdSettings,
    tls: TlsConnector,
    /// Fetches in flight on this replica: authorization requests cannot make it open
    /// connections without bound.
    in_flight: Arc<tokio::sync::Semaphore>,
    per_address: Arc<WindowCounter>,
    global: Arc<WindowCounter>,
    /// URLs that failed recently, with the sentence they were refused with.
    failed: Arc<ExpiringCache<Arc<str>>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    pub(crate) fn new(settings: CimdSettings) -> Result<Self, Internal> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for der in &settings.extra_roots {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|err| Internal::caused("CIMD test root", err))?;
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| Internal::caused("TLS configuration", err))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let minute = TimeDelta::minutes(1);
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES)),
            per_address: Arc::new(WindowCounter::new(
                settings.fetches_per_address_per_minute,
                minute,
                TABLE_SLOTS,
            )),
            global: Arc::new(WindowCounter::new(settings.fetches_per_minute, minute, 1)),
            failed: Arc::new(ExpiringCache::new(TABLE_SLOTS)),
            settings,
        })
    }
}

/// Whether a `client_id` is meant as a document URL (and so is never looked up as registered).
pub fn is_url(client_id: &str) -> bool {
    let lower = client_id.get(..8).unwrap_or(client_id).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// Checks the form of a document URL (draft §3): `https`, a host, a path other than `/`, no
/// fragment, user information, query or dot segments, written exactly as it parses.
pub fn validate_url(raw: &str, allow_loopback: bool) -> Result<url::Url, String> {
    if raw.len() > MAX_URL {
        return Err(format!("client_id URL exceeds {MAX_URL} characters"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("client_id URL contains whitespace".into());
    }
    if raw.contains('#') {
        return Err("client_id URL must not contain a fragment".into());
    }
    if raw.contains('?') {
        return Err("client_id URL must not contain a query".into());
    }
    let url = url::Url::parse(raw).map_err(|_| "client_id is not a valid URL".to_owned())?;
    let loopback_http = allow_loopback
        && url.scheme() == "http"
        && url.host().is_some_and(|h| {
            matches!(h, url::Host::Ipv4(ip) if ip.is_loopback())
                || matches!(h, url::Host::Ipv6(ip) if ip.is_loopback())
        });
    if url.scheme() != "https" && !loopback_http {
        return Err("client_id URL must use https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("client_id URL must not contain user information".into());
    }
    match url.host() {
        None => return Err("client_id URL has no host".into()),
        // Test setting: loopback addresses (checked again after parsing, below).
        Some(url::Host::Ipv4(ip)) if allow_loopback && ip.is_loopback() => {}
        Some(url::Host::Ipv6(ip)) if allow_loopback && ip.is_loopback() => {}
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
            return Err("client_id URL must name a host, not an IP address".into());
        }
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            if !name.contains('.') || name == "localhost" || name.ends_with(".localhost") {
                return Err("client_id URL must name a public host".into());
            }
        }
    }
    let path = url.path();
    if path.is_empty() || path == "/" {
        return Err("client_id URL must have a path".into());
    }
    let lower = raw.to_ascii_lowercase();
    let dot_segment = raw.split('/').any(|s| s == "." || s == "..")
        || lower.contains("/%2e")
        || lower.contains("%2f");
    if dot_segment {
        return Err("client_id URL must not contain dot segments".into());
    }
    // Anything the parser would rewrite (case, default port, encoding) is not the same string.
    if url.as_str() != raw {
        return Err("client_id URL is not in canonical form".into());
    }
    Ok(url)
}

/// Whether an address may never be fetched from: everything that is not public unicast.
pub fn forbidden(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4, allow_loopback),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4, allow_loopback);
            }
            if v6.is_loopback() {
                return !allow_loopback;
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return forbidden_v4(embedded_v4(s[6], s[7]), false);
            }
            if s[0] == 0x2002 {
                return forbidden_v4(embedded_v4(s[1], s[2]), false);
            }
            v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, includes fd00:ec2::254
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard
                || s[0] == 0 // ::/16 other than the cases above (IPv4-compatible, reserved)
        }
    }
}

/// The IPv4 address in two IPv6 segments.
fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

fn forbidden_v4(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        return !allow_loopback;
    }
    a == 0
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224 // multicast, reserved, broadcast
}

/// A client described by a document, as stored.
#[derive(Debug, Clone)]
pub(crate) struct CimdClient {
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
}

/// Why a document URL cannot be used now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A sentence for the error page.
    Invalid(String),
    /// Too many fetches from this address or on this replica; seconds to wait.
    Throttled(u64),
}

/// The client for a document URL: the stored row while it is fresh, else a new fetch on behalf
/// of the browser at `ip`.
pub(crate) async fn resolve(
    state: &OAuthState,
    client_id: &str,
    ip: IpAddr,
) -> Result<Result<CimdClient, Refusal>, Internal> {
    let fetcher = &state.inner.cimd;
    let url = match validate_url(client_id, fetcher.settings.allow_loopback) {
        Ok(url) => url,
        Err(reason) => return Ok(Err(Refusal::Invalid(reason))),
    };
    let now = state.now();
    let stored = db::clients::stored_document(state.db(), client_id, now).await?;
    let proven = stored.as_ref().is_some_and(|stored| stored.proven);
    if let Some(stored) = stored
        && stored.fresh
    {
        return Ok(Ok(CimdClient {
            client_name: stored.client_name,
            redirect_uris: stored.redirect_uris,
        }));
    }
    if let Some(reason) = fetcher.failed.get(client_id, now) {
        return Ok(Err(Refusal::Invalid(reason.to_string())));
    }
    // The address first, so one address at its limit does not use up the replica's budget.
    if let Err(seconds) = fetcher.per_address.check(&bucket(ip), now) {
        return Ok(Err(Refusal::Throttled(seconds)));
    }
    // A client that has completed an authorization here (so is not an attacker's throwaway URL)
    // is refreshed even when others have used up the replica's budget.
    if !proven && let Err(seconds) = fetcher.global.check("all", now) {
        tracing::warn!("client metadata document fetches at the replica's limit");
        return Ok(Err(Refusal::Throttled(seconds)));
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    let remember = |reason: String| {
        // Reasons can quote the document's redirect URIs: cut, so the cache's memory is bounded.
        let reason: String = reason.chars().take(MAX_REMEMBERED_REASON).collect();
        let until = now + TimeDelta::from_std(fetcher.settings.negative_cache).unwrap_or_default();
        fetcher
            .failed
            .insert(client_id, Arc::from(reason.as_str()), until);
        Ok(Err(Refusal::Invalid(reason)))
    };
    let fetched = tokio::time::timeout(fetcher.settings.fetch_timeout, fetcher.fetch(url)).await;
    let (body, max_age) = match fetched {
        Ok(Ok(fetched)) => fetched,
        Ok(Err(reason)) => {
            tracing::warn!(
                host,
                client_id,
                reason,
                "client metadata document not fetched"
            );
            return remember(NOT_FETCHED.to_owned());
        }
        Err(_) => {
            tracing::warn!(host, client_id, "client metadata document fetch timed out");
            return remember(NOT_FETCHED.to_owned());
        }
    };
    let metadata = match validate_document(client_id, &body) {
        Ok(metadata) => metadata,
        Err(reason) => {
            tracing::info!(host, client_id, reason, "client metadata document invalid");
            return remember(reason);
        }
    };
    let settings = &fetcher.settings;
    let lifetime = max_age
        .unwrap_or(settings.default_cache)
        .clamp(settings.min_cache, settings.max_cache);
    let expires_at: DateTime<Utc> =
        now + TimeDelta::from_std(lifetime).unwrap_or(TimeDelta::hours(1));
    let client = CimdClient {
        client_name: metadata.client_name.clone(),
        redirect_uris: metadata.redirect_uris.clone(),
    };
    let mut dedup = b"cimd\n".to_vec();
    dedup.extend_from_slice(client_id.as_bytes());
    let mut tx = state.db().begin().await?;
    // One host's documents are counted and replaced one request at a time.
    store::lock::advisory_xact(&mut *tx, &format!("cimd host {host}")).await?;
    let cap = i64::from(fetcher.settings.max_unproven_clients_per_host.max(1));
    let replaced =
        db::clients::evict_unproven_documents(&mut *tx, &host, client_id, cap - 1).await?;
    let stored = db::clients::upsert_document(
        &mut *tx,
        db::clients::FetchedDocument {
            client_id,
            metadata: &metadata.to_json(),
            dedup_key: &sha256(&dedup),
            client_name: client.client_name.as_deref(),
            redirect_uris: &client.redirect_uris,
            host: &host,
            now,
            expires_at,
        },
    )
    .await?;
    tx.commit().await?;
    for old in &replaced {
        events::record(
            state.db(),
            Kind::ClientDeleted,
            Some(old),
            None,
            &Origin::default(),
            json!({ "reason": "replaced: too many unused documents from its host" }),
        )
        .await;
    }
    let Some(inserted) = stored else {
        return Ok(Err(Refusal::Invalid(
            "this client_id is already used by another client".into(),
        )));
    };
    if inserted {
        events::record(
            state.db(),
            Kind::ClientRegistered,
            Some(client_id),
            None,
            &Origin::default(),
            json!({
                "source": "client_id_metadata_document",
                "client_name": client.client_name,
                "redirect_uris": client.redirect_uris,
            }),
        )
        .await;
    }
    Ok(Ok(client))
}

/// The document's rules: `client_id` equal to the URL, `client_name` and `redirect_uris`
/// required, public client only, and everything registration checks (redirect URIs, https
/// `logo_uri`/`client_uri`, sizes). Returns the metadata to store.
fn validate_document(client_id: &str, body: &[u8]) -> Result<ClientMetadata, String> {
    let document: Value = serde_json::from_slice(body)
        .map_err(|_| "the client metadata document is not valid JSON".to_owned())?;
    let Value::Object(fields) = &document else {
        return Err("the client metadata document is not a JSON object".into());
    };
    if fields.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err("the client metadata document's client_id is not its URL".into());
    }
    // Shared-secret methods cannot appear in a document (CIMD draft §4.1). An asymmetric one
    // (ChatGPT's documents declare private_key_jwt) is accepted: this server advertises only
    // "none", so such clients authenticate with PKCE alone, like every other client here.
    match fields.get("token_endpoint_auth_method") {
        None => {}
        Some(Value::String(method)) if method == "none" || method == "private_key_jwt" => {}
        Some(_) => {
            return Err(
                "the client metadata document must use token_endpoint_auth_method \"none\" \
                 (or private_key_jwt, served as a public client)"
                    .into(),
            );
        }
    }
    let named = fields
        .get("client_name")
        .and_then(Value::as_str)
        .is_some_and(|name| !name.trim().is_empty());
    if !named {
        return Err("the client metadata document has no client_name".into());
    }
    if fields.contains_key("client_secret") || fields.contains_key("client_secret_expires_at") {
        return Err("the client metadata document must not contain a client secret".into());
    }
    let mut without_id = fields.clone();
    without_id.remove("client_id");
    // Checked above; stored as "none" like every client of this server.
    without_id.remove("token_endpoint_auth_method");
    let mut metadata = crate::register::normalise(&Value::Object(without_id), Source::Document)
        .map_err(|err| {
            format!(
                "the client metadata document is invalid: {}",
                err.description()
            )
        })?;
    metadata.client_id = Some(client_id.to_owned());
    Ok(metadata)
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` count as zero (the minimum).
fn max_age(value: &str) -> Option<Duration> {
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            age = seconds
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Fetcher {
    /// Fetches the document: body and `max-age`. Errors are sentences for the error page.
    async fn fetch(&self, url: url::Url) -> Result<(Vec<u8>, Option<Duration>), String> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| "client metadata documents cannot be fetched now")?;
        let response = self.get(&url).await?;
        let status = response.status();
        if status.is_redirection() {
            return Err(format!(
                "the client metadata document URL redirects (HTTP {}); redirects are not followed",
                status.as_u16()
            ));
        }
        if status != hyper::StatusCode::OK {
            return Err(format!(
                "the client metadata document URL answered HTTP {}",
                status.as_u16()
            ));
        }
        let headers = response.headers();
        let is_json = headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| {
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !is_json {
            return Err("the client metadata document is not served as application/json".into());
        }
        let max_age = headers
            .get(hyper::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let cap = self.settings.max_document_bytes;
        let too_large = || format!("the client metadata document exceeds {cap} bytes");
        let declared = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap as u64) {
            return Err(too_large());
        }
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| "reading the client metadata document failed")?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > cap {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok((bytes, max_age))
    }

    /// One GET to a vetted address.
    async fn get(&self, url: &url::Url) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let allow_loopback = self.settings.allow_loopback;
        let host = url.host().ok_or("the URL has no host")?;
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let addresses: Vec<SocketAddr> = match &host {
            url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(*ip), port)],
            url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(*ip), port)],
            url::Host::Domain(name) => match self
                .settings
                .static_hosts
                .iter()
                .find(|(host, _)| host == name)
            {
                Some((_, ips)) => ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
                None => tokio::net::lookup_host((*name, port))
                    .await
                    .map_err(|_| {
                        format!("the host {name} of the client metadata document does not resolve")
                    })?
                    .collect(),
            },
        };
        if addresses.is_empty() {
            return Err("the client metadata document host has no address".into());
        }
        // One forbidden address refuses the name: a resolver answer mixing public and private
        // addresses is a rebinding attempt.
        if addresses.iter().any(|a| forbidden(a.ip(), allow_loopback)) {
            return Err(
                "the client metadata document is on a private, loopback, link-local or reserved address"
                    .into(),
            );
        }
        let mut stream = None;
        for address in &addresses {
            if let Ok(tcp) = TcpStream::connect(address).await {
                stream = Some(tcp);
                break;
            }
        }
        let tcp = stream.ok_or("connecting to the client metadata document host failed")?;
        let io: Box<dyn Io> = if url.scheme() == "https" {
            let name = match &host {
                url::Host::Ipv4(ip) => ServerName::IpAddress(IpAddr::V4(*ip).into()),
                url::Host::Ipv6(ip) => ServerName::IpAddress(IpAddr::V6(*ip).into()),
                url::Host::Domain(name) => ServerName::try_from((*name).to_owned())
                    .map_err(|_| "the client metadata document host is not a valid name")?,
            };
            let tls = self.tls.connect(name, tcp).await.map_err(|err| {
                format!("TLS with the client metadata document host failed: {err}")
            })?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(64 * 1024)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|_| "HTTP with the client metadata document host failed")?;
        // The connection never outlives the fetch's deadline, whatever the peer does.
        let deadline = self.settings.fetch_timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(deadline, connection).await;
        });
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let target = url.path().to_owned();
        let request = hyper::Request::get(target)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                "CrossTrade-OAuth/1 (client metadata)",
            )
            .body(Empty::<Bytes>::new())
            .map_err(|_| "the client metadata document URL is not a valid request")?;
        sender
            .send_request(request)
            .await
            .map_err(|_| "the client metadata document host did not answer".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn url_forms() {
        assert!(validate_url("https://app.example/oauth/client.json", false).is_ok());
        assert!(validate_url("https://app.example:8443/c", false).is_ok());
        for bad in [
            "http://app.example/c",
            "https://app.example",
            "https://app.example/",
            "https://app.example/c#x",
            "https://app.example/c?x=1",
            "https://user@app.example/c",
            "https://user:pw@app.example/c",
            "https://app.example/a/../c",
            "https://app.example/a/./c",
            "https://app.example/a/%2e%2e/c",
            "https://APP.example/c",
            "https://app.example:443/c",
            "https://app.example/c d",
            "http://127.0.0.1:8080/c",
            "https://127.0.0.1/c",
            "https://2130706433/c",
            "https://0x7f.0.0.1/c",
            "https://[::1]/c",
            "https://localhost/c",
            "https://a.localhost/c",
            "https://intranet/c",
            "HTTPS://app.example/c",
        ] {
            assert!(validate_url(bad, false).is_err(), "{bad} accepted");
        }
        assert!(validate_url("http://127.0.0.1:8080/c", true).is_ok());
        assert!(validate_url("https://10.0.0.1/c", true).is_err());
        assert!(validate_url("http://app.example/c", true).is_err());
        assert!(
            validate_url(&format!("https://a.example/{}", "x".repeat(MAX_URL)), false).is_err()
        );
    }

    #[test]
    fn addresses() {
        for bad in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:0a00:0001::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
            assert!(forbidden(ip, false), "{bad} allowed");
        }
        for good in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            let ip: IpAddr = good.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            assert!(!forbidden(ip, false), "{good} refused");
        }
        assert!(!forbidden(IpAddr::V4(Ipv4Addr::LOCALHOST), true));
        assert!(!forbidden(IpAddr::V6(Ipv6Addr::LOCALHOST), true));
        assert!(forbidden(
            "169.254.169.254"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            true
        ));
    }

    #[test]
    fn cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }
}
