//! Configuration: `config/default.toml` (compiled in), then an optional file, then `CROSSTRADE_*`
//! environment variables (`__` separates nested keys; `DATABASE_URL` sets `database.url`). The
//! result is one typed, validated [`Config`]; an invalid value fails start-up with the key's name
//! and where the value came from. This module is the only place that reads the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use store::secret::Secret;

/// The defaults, compiled into the binary so it runs from any directory.
pub const DEFAULTS: &str = include_str!("../config/default.toml");
/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "CROSSTRADE_";
/// The environment variable naming a configuration file (the `--config` flag wins).
pub const CONFIG_FILE_VAR: &str = "CROSSTRADE_CONFIG";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub public_url: PublicUrl,
    pub listen: SocketAddr,
    /// `None` (configured as `""`) disables the admin listener.
    #[serde(deserialize_with = "optional_address")]
    pub admin_listen: Option<SocketAddr>,
    /// Where the other replicas reach this one's admin listener; "" derives it from
    /// `admin_listen`.
    pub relay_advertise: String,
    pub data_dir: PathBuf,
    pub master_secret: Secret,
    pub trusted_proxies: Vec<Network>,
    pub allowed_origins: Vec<Origin>,
    /// Any loopback browser origin (`http://localhost:6274`, the MCP Inspector) may call the
    /// MCP endpoint. Set by `crosstrade dev` only; never read from configuration.
    #[serde(skip)]
    pub loopback_origins: bool,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub traces: TracesConfig,
    pub http: HttpConfig,
    pub lifetimes: Lifetimes,
    pub rate_limits: RateLimits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Empty means the embedded cluster in `data_dir`.
    pub url: Secret,
    pub max_connections: Positive<u32>,
    pub acquire_timeout_ms: Positive<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// OpenTelemetry traces (`[traces]`): off while `otlp_endpoint` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// `http://host:port` of an OTLP/HTTP collector; spans go to `/v1/traces`.
    pub otlp_endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub body_limit_bytes: Positive<usize>,
    pub mcp_body_limit_bytes: Positive<usize>,
    pub request_timeout_ms: Positive<u64>,
    pub header_read_timeout_ms: Positive<u64>,
    pub body_read_timeout_ms: Positive<u64>,
    pub max_connections: Positive<usize>,
    pub max_in_flight_requests: Positive<usize>,
    pub max_addon_sockets: Positive<usize>,
    pub max_addon_calls_per_account: Positive<usize>,
    pub max_streams_per_account: Positive<usize>,
    pub max_streams: Positive<usize>,
    pub shutdown_grace_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetimes {
    pub authorization_code_secs: Positive<u64>,
    pub access_token_secs: Positive<u64>,
    /// An absolute end for every refresh-token family (opt-in; none by default).
    #[serde(default)]
    pub refresh_token_secs: Option<Positive<u64>>,
    pub refresh_token_idle_secs: Positive<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    pub registrations_per_hour: Positive<u32>,
    pub sign_in_failures_per_ip: Positive<u32>,
    pub sign_in_failures_per_account: Positive<u32>,
    pub sign_in_delay_base_secs: Positive<u64>,
    /// 0: twice the CPUs.
    pub password_checks_at_once: usize,
    pub password_check_wait_ms: u64,
    pub token_requests_per_minute: Positive<u32>,
    pub token_requests_per_grant_per_minute: Positive<u32>,
}

impl HttpConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.get())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.get())
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms.get())
    }
}

impl DatabaseConfig {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms.get())
    }
}

/// An address, or `""` for none.
fn optional_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let raw = String::deserialize(deserializer)?;
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse()
        .map(Some)
        .map_err(|err| serde::de::Error::custom(format!("{raw:?} is not an address: {err}")))
}

/// A number greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positive<T>(T);

impl<T: Copy> Positive<T> {
    pub fn get(self) -> T {
        self.0
    }
}

impl<'de, T> Deserialize<'de> for Positive<T>
where
    T: Deserialize<'de> + Default + PartialOrd,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = T::deserialize(deserializer)?;
        if value > T::default() {
            Ok(Self(value))
        } else {
            Err(serde::de::Error::custom("must be greater than zero"))
        }
    }
}

/// The public base URL: `http(s)://host[:port]`, no path, query or fragment, kept without a
/// trailing slash. It is the OAuth issuer, so its spelling is fixed here once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

impl FromStr for PublicUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(raw).map_err(|err| format!("not an absolute URL: {err}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err("must not carry a query, fragment or user info".into());
        }
        // The issuer, the metadata paths and the MCP resource all hang off the origin; an
        // issuer with a path would move the metadata (RFC 8414 §3.1) away from where it is served.
        if url.path() != "/" {
            return Err(
                "must be an origin such as https://app.crosstrade.io, without a path".into(),
            );
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }
}

impl<'de> Deserialize<'de> for PublicUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A browser origin, `scheme://host[:port]`, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Origin {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(raw).map_err(|err| format!("not an origin: {err}"))?;
        if url.host_str().is_none() || !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(format!("{raw:?} is not an origin (scheme://host[:port])"));
        }
        Ok(Self(url.origin().ascii_serialization()))
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An IP network: a CIDR range or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(pub IpNet);

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        raw.parse::<IpNet>()
            .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
            .map(Self)
            .map_err(|_| format!("{raw:?} is not an IP address or CIDR range"))
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Where configuration comes from: an optional file and the environment variables.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The process environment, and `file` or else the file named by `CROSSTRADE_CONFIG`.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        #[expect(
            clippy::disallowed_methods,
            reason = "the one place the environment is read"
        )]
        let env: Vec<(String, String)> = std::env::vars().collect();
        let file = file.or_else(|| {
            env.iter()
                .find(|(key, value)| key == CONFIG_FILE_VAR && !value.is_empty())
                .map(|(_, value)| PathBuf::from(value))
        });
        Self { file, env }
    }
}

impl Config {
    /// The configured master secret, or the one kept in `data_dir/master.key` (created on first
    /// use).
    pub fn load_master_secret(&self) -> anyhow::Result<Secret> {
        if !self.master_secret.is_empty() {
            return Ok(self.master_secret.clone());
        }
        let path = self.data_dir.join("master.key");
        let read = |path: &Path| -> anyhow::Result<Option<Secret>> {
            match std::fs::read_to_string(path) {
                Ok(text) if text.trim().len() >= 32 => Ok(Some(Secret::new(text.trim()))),
                Ok(_) => anyhow::bail!(
                    "{} is shorter than 32 characters; delete it or set master_secret",
                    path.display()
                ),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
            }
        };
        if let Some(secret) = read(&path)? {
            return Ok(secret);
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        let secret = store::secret::random_password(48)
            .map_err(|err| anyhow::anyhow!("generating a master secret: {err}"))?;
        let created = write_private(&path, &secret, Existing::Keep)
            .with_context(|| format!("writing {}", path.display()))?;
        if created {
            return Ok(Secret::new(secret));
        }
        // Another replica sharing this directory wrote it first; its secret is the one.
        read(&path)?.ok_or_else(|| anyhow::anyhow!("{} vanished", path.display()))
    }

    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = &sources.file {
            check_file(path)?;
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(EnvVars::from_pairs(&sources.env));
        let config = figment
            .extract::<Config>()
            .map_err(|err| ConfigError::Invalid(describe(&err)))?;
        config.validate(&figment)?;
        Ok(config)
    }

    /// Rules that span more than one value's type.
    fn validate(&self, figment: &Figment) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            let origin = figment.find_metadata(key).map_or_else(
                || "defaults".to_owned(),
                |md| md.interpolate(&Profile::Default, &key.split('.').collect::<Vec<_>>()),
            );
            ConfigError::Invalid(format!("key `{key}` (from {origin}): {message}"))
        };
        let secret = self.master_secret.expose();
        if !secret.is_empty() && secret.chars().count() < 32 {
            return Err(invalid("master_secret", "must be at least 32 characters"));
        }
        if self.lifetimes.authorization_code_secs.get() > 600 {
            return Err(invalid(
                "lifetimes.authorization_code_secs",
                "must be at most 600 (RFC 6749 §4.1.2)",
            ));
        }
        Ok(())
    }

    /// The Add-On bridge's settings; each process is its own replica.
    pub fn bridge_settings(
        &self,
        master_secret: &[u8],
        admin_addr: Option<SocketAddr>,
    ) -> addon_bridge::BridgeSettings {
        let advertise = match self.relay_advertise.trim() {
            "" => admin_addr
                .filter(|addr| !addr.ip().is_unspecified())
                .map(|addr| addr.to_string()),
            configured => Some(configured.to_owned()),
        };
        addon_bridge::BridgeSettings {
            instance_id: uuid::Uuid::new_v4(),
            max_sockets: self.http.max_addon_sockets.get(),
            max_calls_per_account: self.http.max_addon_calls_per_account.get(),
            // The links are served on the admin listener.
            peer: admin_addr
                .and(advertise)
                .map(|advertise| addon_bridge::peer::PeerSettings {
                    advertise,
                    key: oauth::crypto::derive_key(master_secret, "crosstrade replica relay v1"),
                }),
            ..addon_bridge::BridgeSettings::new()
        }
    }

    /// The MCP resource server's settings.
    pub fn mcp_settings(&self) -> mcp::McpSettings {
        mcp::McpSettings {
            public_url: self.public_url.as_str().to_owned(),
            allowed_origins: self
                .allowed_origins
                .iter()
                .map(|o| o.as_str().to_owned())
                .collect(),
            allow_loopback_origins: self.loopback_origins,
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            streams: mcp::StreamLimits {
                per_account: self.http.max_streams_per_account.get(),
                per_replica: self.http.max_streams.get(),
            },
        }
    }

    /// The OAuth service's settings.
    pub fn oauth_settings(&self) -> oauth::OAuthSettings {
        let secs = Duration::from_secs;
        oauth::OAuthSettings {
            issuer: self.public_url.as_str().to_owned(),
            authorization_code_lifetime: secs(self.lifetimes.authorization_code_secs.get()),
            access_token_lifetime: secs(self.lifetimes.access_token_secs.get()),
            refresh_token_lifetime: self.lifetimes.refresh_token_secs.map(|s| secs(s.get())),
            refresh_token_idle_lifetime: secs(self.lifetimes.refresh_token_idle_secs.get()),
            registrations_per_hour: self.rate_limits.registrations_per_hour.get(),
            sign_in_failures_per_ip: self.rate_limits.sign_in_failures_per_ip.get(),
            sign_in_failures_per_account: self.rate_limits.sign_in_failures_per_account.get(),
            sign_in_delay_base: secs(self.rate_limits.sign_in_delay_base_secs.get()),
            password_checks_at_once: match self.rate_limits.password_checks_at_once {
                0 => std::thread::available_parallelism().map_or(2, std::num::NonZero::get) * 2,
                n => n,
            },
            password_check_wait: Duration::from_millis(self.rate_limits.password_check_wait_ms),
            token_requests_per_minute: self.rate_limits.token_requests_per_minute.get(),
            token_requests_per_grant_per_minute: self
                .rate_limits
                .token_requests_per_grant_per_minute
                .get(),
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .map(|network| network.0)
                .collect(),
        }
    }

    /// Whether the database is the embedded cluster in `data_dir`.
    pub fn uses_embedded_database(&self) -> bool {
        self.database.url.is_empty()
    }
}

fn check_file(path: &Path) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map(drop)
        .map_err(|err| ConfigError::File {
            path: path.to_path_buf(),
            message: err.to_string(),
        })
}

/// One line per error, each naming the key and where its value came from.
fn describe(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|err| {
            let key = if err.path.is_empty() {
                "(top level)".to_owned()
            } else {
                err.path.join(".")
            };
            let origin = err.metadata.as_ref().map_or_else(
                || "defaults".to_owned(),
                |md| match &md.source {
                    Some(source) => format!("{} {source}", md.name),
                    None => md.interpolate(&err.profile.clone().unwrap_or_default(), &err.path),
                },
            );
            format!("key `{key}` (from {origin}): {}", err.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `CROSSTRADE_*` variables (and `DATABASE_URL`) as a figment provider. Values are read like
/// figment's own environment provider reads them (`20` is a number, `[...]` an array).
struct EnvVars {
    values: Dict,
}

impl EnvVars {
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut values = Dict::new();
        let mut database_url = None;
        for (name, raw) in pairs {
            if name == "DATABASE_URL" {
                database_url = Some(raw.clone());
                continue;
            }
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == CONFIG_FILE_VAR || rest.is_empty() {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let value = if key == "database.url" || key == "master_secret" {
                Value::from(raw.clone())
            } else {
                raw.parse::<Value>().unwrap_or_else(|never| match never {})
            };
            values = merge(values, &key, value);
        }
        // An explicit CROSSTRADE_DATABASE__URL wins over DATABASE_URL.
        let has_crosstrade_url = pairs
            .iter()
            .any(|(name, _)| name == "CROSSTRADE_DATABASE__URL");
        if let (Some(url), false) = (database_url, has_crosstrade_url) {
            values = merge(values, "database.url", Value::from(url));
        }
        Self { values }
    }
}

fn merge(into: Dict, key: &str, value: Value) -> Dict {
    let nested = figment::util::nest(key, value)
        .into_dict()
        .unwrap_or_default();
    let mut merged = into;
    for (k, v) in nested {
        let combined = match (merged.remove(&k), v) {
            (Some(Value::Dict(_, old)), Value::Dict(tag, new)) => {
                let mut dict = old;
                dict.extend(new);
                Value::Dict(tag, dict)
            }
            (_, v) => v,
        };
        merged.insert(k, combined);
    }
    merged
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_: &Profile, keys: &[&str]| {
            if keys == ["database", "url"] {
                return "DATABASE_URL or CROSSTRADE_DATABASE__URL".to_owned();
            }
            format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// What [`write_private`] does when the file is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    Replace,
    /// The file already there wins; nothing is written.
    Keep,
}

/// Puts a file only its owner can read (secrets kept in `data_dir`) whole or not at all: written
/// beside it under a temporary name, synced, then moved into place. A crash or a concurrent
/// reader never sees it half-written. Returns whether `contents` were placed.
pub(crate) fn write_private(
    path: &Path,
    contents: &str,
    existing: Existing,
) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut temporary_name = path.file_name().unwrap_or_default().to_os_string();
    temporary_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let temporary = dir.join(temporary_name);
    let placed = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        match existing {
            Existing::Replace => std::fs::rename(&temporary, path).map(|()| true),
            // A hard link never replaces its target: of two writers exactly one places its file.
            Existing::Keep => match std::fs::hard_link(&temporary, path) {
                Ok(()) => Ok(true),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(err) => Err(err),
            },
        }
    })();
    // Gone already after a rename; after a link or a failure it is this writer's own copy.
    let _already_gone = std::fs::remove_file(&temporary);
    let placed = placed?;
    if placed {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            file: None,
            env: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn defaults_load() {
        let config = Config::load(&Sources::default()).unwrap();
        assert_eq!(config.public_url.as_str(), "http://127.0.0.1:8080");
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert!(config.uses_embedded_database());
        assert_eq!(config.lifetimes.authorization_code_secs.get(), 60);
        assert_eq!(config.log.format, LogFormat::Human);
        let bridge = config.bridge_settings(b"0123456789abcdef0123456789abcdef", None);
        assert!(bridge.peer.is_none());
        let admin = Some("127.0.0.1:9090".parse().unwrap());
        let bridge = config.bridge_settings(b"0123456789abcdef0123456789abcdef", admin);
        assert_eq!(bridge.peer.unwrap().advertise, "127.0.0.1:9090");
        let unspecified = Some("0.0.0.0:9090".parse().unwrap());
        let bridge = config.bridge_settings(b"0123456789abcdef0123456789abcdef", unspecified);
        assert!(bridge.peer.is_none());
        assert_eq!(
            (bridge.max_sockets, bridge.max_calls_per_account),
            (4096, 16)
        );
        assert_eq!(
            config.mcp_settings().streams,
            mcp::StreamLimits {
                per_account: 8,
                per_replica: 1024
            }
        );
    }

    #[test]
    fn env_overrides_nested_keys() {
        let config = Config::load(&env(&[
            ("CROSSTRADE_DATABASE__MAX_CONNECTIONS", "7"),
            ("CROSSTRADE_LOG__FORMAT", "json"),
            (
                "CROSSTRADE_TRUSTED_PROXIES",
                "[\"10.0.0.0/8\", \"192.0.2.1\"]",
            ),
            ("CROSSTRADE_PUBLIC_URL", "https://app.crosstrade.io/"),
        ]))
        .unwrap();
        assert_eq!(config.database.max_connections.get(), 7);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.public_url.as_str(), "https://app.crosstrade.io");
        assert!(config.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
        assert!(config.trusted_proxies[1].contains("192.0.2.1".parse().unwrap()));
        assert!(!config.trusted_proxies[1].contains("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn an_empty_admin_listen_disables_it() {
        let config = Config::load(&env(&[("CROSSTRADE_ADMIN_LISTEN", "")])).unwrap();
        assert_eq!(config.admin_listen, None);
        let config = Config::load(&env(&[("CROSSTRADE_ADMIN_LISTEN", "0.0.0.0:9100")])).unwrap();
        assert_eq!(config.admin_listen, Some("0.0.0.0:9100".parse().unwrap()));
        let err = Config::load(&env(&[("CROSSTRADE_ADMIN_LISTEN", "9100")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`admin_listen`"), "{err}");
    }

    #[test]
    fn database_url_sources() {
        let config = Config::load(&env(&[("DATABASE_URL", "postgres://u:pw@db/x")])).unwrap();
        assert_eq!(config.database.url.expose(), "postgres://u:pw@db/x");
        let config = Config::load(&env(&[
            ("DATABASE_URL", "postgres://a/a"),
            ("CROSSTRADE_DATABASE__URL", "postgres://b/b"),
        ]))
        .unwrap();
        assert_eq!(config.database.url.expose(), "postgres://b/b");
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("postgres://b/b") && printed.contains("[redacted]"),
            "{printed}"
        );
    }

    #[test]
    fn invalid_values_name_the_key_and_source() {
        let err = Config::load(&env(&[("CROSSTRADE_DATABASE__MAX_CONNECTIONS", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `database.max_connections`"), "{err}");
        assert!(
            err.contains("CROSSTRADE_DATABASE__MAX_CONNECTIONS"),
            "{err}"
        );

        let err = Config::load(&env(&[("CROSSTRADE_LIFETIMES__ACCESS_TOKEN_SECS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lifetimes.access_token_secs") && err.contains("greater than zero"),
            "{err}"
        );

        let err = Config::load(&env(&[("CROSSTRADE_PUBLIC_URL", "https://x.example/app")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("public_url") && err.contains("without a path"),
            "{err}"
        );

        let err = Config::load(&env(&[("CROSSTRADE_PUBLIC_URL", "ftp://x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("public_url") && err.contains("http or https"),
            "{err}"
        );

        let err = Config::load(&env(&[("CROSSTRADE_MASTER_SECRET", "short")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`master_secret`") && err.contains("CROSSTRADE_MASTER_SECRET"),
            "{err}"
        );
        assert!(
            !err.contains("short"),
            "the secret itself is never printed: {err}"
        );

        let err = Config::load(&env(&[("CROSSTRADE_LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`listen`"), "{err}");

        let err = Config::load(&env(&[("CROSSTRADE_DATABSE__URL", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("databse"), "{err}");
    }

    #[test]
    fn file_then_env() {
        let dir = std::env::temp_dir().join(format!("crosstrade-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\n[log]\nlevel = \"debug\"\nformat = \"json\"\n",
        )
        .unwrap();
        let sources = Sources {
            file: Some(path.clone()),
            env: vec![("CROSSTRADE_LISTEN".into(), "127.0.0.1:9001".into())],
        };
        let config = Config::load(&sources).unwrap();
        assert_eq!(
            config.listen,
            "127.0.0.1:9001".parse().unwrap(),
            "env wins over the file"
        );
        assert_eq!(config.log.level, "debug", "the file wins over the defaults");

        std::fs::write(&path, "[log]\nformat = \"xml\"\n").unwrap();
        let err = Config::load(&Sources {
            file: Some(path.clone()),
            env: vec![],
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("log.format") && err.contains("config.toml"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let err = Config::load(&Sources {
            file: Some(dir.join("missing.toml")),
            env: vec![],
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing.toml"), "{err}");
    }

    /// Replicas sharing a data directory start together; each must come up with the one
    /// secret that ends up on disk, never a half-written file.
    #[test]
    fn replicas_starting_together_share_one_whole_master_key() {
        use std::os::unix::fs::PermissionsExt;
        let root =
            std::env::temp_dir().join(format!("crosstrade-master-key-{}", std::process::id()));
        for round in 0..25 {
            let dir = root.join(round.to_string());
            let config =
                Config::load(&env(&[("CROSSTRADE_DATA_DIR", dir.to_str().unwrap())])).unwrap();
            let start = std::sync::Barrier::new(8);
            let secrets: Vec<String> = std::thread::scope(|scope| {
                let started: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            config.load_master_secret().map(|s| s.expose().to_owned())
                        })
                    })
                    .collect();
                started
                    .into_iter()
                    .map(|thread| thread.join().unwrap().unwrap())
                    .collect()
            });
            let on_disk = std::fs::read_to_string(dir.join("master.key")).unwrap();
            assert!(on_disk.len() >= 32, "{on_disk:?}");
            assert!(
                secrets.iter().all(|secret| *secret == on_disk),
                "round {round}: every starter uses the secret on disk"
            );
            let mode = std::fs::metadata(dir.join("master.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let left: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            assert_eq!(left, ["master.key"], "no temporary file is left behind");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
