//! `vault.toml`: which key providers exist and which contexts go to which (BYOK rules).
//!
//! ```toml
//! default = "managed"            # where every context without a rule goes
//!
//! [providers.managed]
//! type = "managed"               # the key ring in the data directory
//! ring = "root"
//!
//! [providers.acme]
//! type = "aws-kms"
//! key_id = "arn:aws:kms:us-east-1:111122223333:key/…"   # an ARN, key id or alias
//! region = "us-east-1"           # optional
//! endpoint_url = "http://127.0.0.1:4566"   # optional
//! cache = { max_age_secs = 300, max_messages = 100000 }   # the default; `cache = false` turns it off
//!
//! [providers.globex]
//! type = "gcp-kms"
//! key_name = "projects/p/locations/global/keyRings/r/cryptoKeys/globex"
//!
//! [providers.initech]
//! type = "azure-kv"
//! vault_url = "https://initech.vault.azure.net/"
//! key_name = "vault-cmk"
//! key_version = "…"            # optional: wrap with this version rather than the current one
//! algorithm = "RSA-OAEP-256"     # the default; "A256KW" for a Managed HSM AES key
//! credential = "managed-identity"   # or "environment", "azure-cli"; default: environment
//!                                   # if AZURE_CLIENT_SECRET is set, else managed-identity
//!
//! [[rules]]
//! match = { organization_id = "org_acme" }
//! provider = "acme"
//! ```
//!
//! Environment overrides: `VAULT_PROVIDER_<NAME>_<FIELD>` (for example
//! `VAULT_PROVIDER_ACME_ENDPOINT_URL`) replaces a provider's string field.

use std::collections::BTreeMap;
mod disconnected;
mod parse;
mod router;
mod serving;

pub use disconnected::Disconnected;
pub use serving::{EventsConfig, ObjectsConfig};

use router::check_interval;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use vault_crypto::CacheLimits;

use crate::VaultError;

/// The name of the managed key ring in the data directory.
pub const MANAGED_RING: &str = "root";

/// A configuration mistake, as the error the rest of the API reports.
pub(crate) fn config_error(message: impl Into<std::borrow::Cow<'static, str>>) -> VaultError {
    vault_crypto::Error::from(vault_crypto::ProviderError::new(
        vault_crypto::ProviderErrorKind::Configuration,
        "config",
        message,
    ))
    .into()
}

/// The parsed configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The provider for contexts no rule matches.
    #[serde(default = "default_provider")]
    pub default: Spanned<String>,
    /// Providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, Spanned<ProviderConfig>>,
    /// BYOK rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Spanned<RuleConfig>>,
    /// `vault serve`: where to listen and the request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where objects (and, on PostgreSQL, the managed key ring) are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// How long the audit trail's events are kept.
    #[serde(default)]
    pub events: EventsConfig,
    /// How long deleted objects are kept before `vault serve` purges them.
    #[serde(default)]
    pub objects: ObjectsConfig,
    /// How `vault serve` delivers webhooks.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// What customer key providers kept in the store (`vault byok`) may be.
    #[serde(default)]
    pub byok: ByokSettings,
    /// What seals the root keys of a managed ring kept in the database: the name of an AWS,
    /// Google Cloud or Azure provider of this file, or `file:/path/master.key`.
    pub seal: Option<String>,
}

/// The `[store]` table. `--database-url` / `VAULT_DATABASE_URL` win over it.
///
/// ```toml
/// [store]
/// url = "postgres://vault@db.internal:5432/vault?sslmode=verify-full"   # default: SQLite in the data directory
/// password_file = "/run/secrets/vault-db-password"   # or VAULT_DATABASE_PASSWORD
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A `postgres://` URL.
    pub url: Option<Secret>,
    /// A file holding the database password (its first line).
    pub password_file: Option<PathBuf>,
}

/// The `[webhooks]` table.
///
/// ```toml
/// [webhooks]
/// max_attempts = 12          # failures before an event is dead (`vault webhook replay`)
/// retry_base_ms = 1000       # the first retry's delay; each retry doubles it
/// retry_cap_secs = 3600      # the longest delay between retries
/// timeout_secs = 10          # one attempt: resolve, connect, TLS, request, answer
/// allow_link_local = false   # never deliver to 169.254.0.0/16, fe80::/10, fd00:ec2::254
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Failed attempts after which an event is dead.
    pub max_attempts: Option<u32>,
    /// The first retry's delay, in milliseconds.
    pub retry_base_ms: Option<u64>,
    /// The longest delay between retries, in seconds.
    pub retry_cap_secs: Option<u64>,
    /// One attempt's deadline, in seconds.
    pub timeout_secs: Option<u64>,
    /// Deliver to link-local and metadata addresses too.
    #[serde(default)]
    pub allow_link_local: bool,
}

/// The `[byok]` table.
///
/// ```toml
/// [byok]
/// allow_http_endpoints = false   # a store provider's endpoint_url must be https
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByokSettings {
    /// Let providers kept in the store (`vault byok provider add`) name a plain `http://`
    /// `endpoint_url`: for key service emulators on loopback, never for a real key service
    /// (data keys would cross the network in clear). A decision for this file alone: the
    /// store cannot make it.
    #[serde(default)]
    pub allow_http_endpoints: bool,
}

/// The `[server]` table. Flags and environment variables win over it.
///
/// ```toml
/// [server]
/// listen = "127.0.0.1:8080"
/// max_body_bytes = 2097152
/// max_value_bytes = 1048576
/// max_blob_bytes = 68719476736  # a blob (PUT /vault/v1/blobs/…): 64 GiB
/// requests_per_second = 500     # per API key; unset for no limit
/// tls_cert = "/etc/vault/cert.pem"   # PEM chain; with tls_key, the server speaks HTTPS
/// tls_key = "/etc/vault/key.pem"     # reloaded with the certificate on SIGHUP
/// head_timeout_secs = 10        # request head (TLS handshake included)
/// body_timeout_secs = 30        # request body, after its head
/// idle_timeout_secs = 60        # a kept-alive connection waiting for its next request
/// max_connections = 10000       # beyond, new connections are closed at once
/// metrics_token = "…"           # /metrics for non-loopback peers presenting it as a bearer
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The socket address to listen on.
    pub listen: Option<String>,
    /// The largest request body.
    pub max_body_bytes: Option<usize>,
    /// The largest object value.
    pub max_value_bytes: Option<usize>,
    /// The largest blob.
    pub max_blob_bytes: Option<u64>,
    /// Requests per second per API key.
    pub requests_per_second: Option<u32>,
    /// The certificate chain (PEM) for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Seconds for a request head to arrive.
    pub head_timeout_secs: Option<u64>,
    /// Seconds for a request body to arrive.
    pub body_timeout_secs: Option<u64>,
    /// Seconds an idle kept-alive connection stays open.
    pub idle_timeout_secs: Option<u64>,
    /// The most connections open at once.
    pub max_connections: Option<usize>,
    /// The bearer token that opens `/metrics` to non-loopback peers.
    pub metrics_token: Option<Secret>,
}

/// A secret setting: never shown by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn default_provider() -> Spanned<String> {
    Spanned::new(0..0, "managed".to_owned())
}

/// One provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// A managed key ring in the data directory.
    Managed {
        /// The ring's name (file `keyring-<ring>.json`).
        #[serde(default = "default_ring")]
        ring: String,
        /// How often, at most, a process using the ring checks whether another process changed
        /// it (milliseconds, 0 to 900; default 250).
        check_interval_ms: Option<u64>,
    },
    /// A customer's key in AWS KMS.
    AwsKms {
        /// ARN, key id or alias.
        key_id: String,
        /// The region (else from the AWS configuration chain).
        region: Option<String>,
        /// Another endpoint (an emulator, a VPC endpoint).
        endpoint_url: Option<String>,
        /// The data-key cache: on with default limits unless set.
        #[serde(default)]
        cache: CacheConfig,
    },
    /// A customer's key in Google Cloud KMS.
    GcpKms {
        /// `projects/…/locations/…/keyRings/…/cryptoKeys/…`.
        key_name: String,
        /// Another endpoint (else the public one, with Application Default Credentials).
        endpoint_url: Option<String>,
        /// The data-key cache: on with default limits unless set.
        #[serde(default)]
        cache: CacheConfig,
    },
    /// A customer's key in Azure Key Vault or Managed HSM.
    AzureKv {
        /// `https://<vault>.vault.azure.net/` (or a Managed HSM URL).
        vault_url: String,
        /// The key's name.
        key_name: String,
        /// Wrap with this version (else the current one).
        key_version: Option<String>,
        /// `RSA-OAEP-256` (default) or `A256KW`.
        algorithm: Option<String>,
        /// `environment`, `managed-identity` or `azure-cli`.
        credential: Option<String>,
        /// Whether RSA wraps made before wraps were signed still open. Unset: only while the
        /// store holds some (stored, or issued to data-key API callers), so a new deployment
        /// never accepts one; `true` or `false` decide explicitly.
        accept_unsigned_wraps: Option<bool>,
        /// The data-key cache: on with default limits unless set.
        #[serde(default)]
        cache: CacheConfig,
    },
}

fn default_ring() -> String {
    MANAGED_RING.to_owned()
}

/// `cache = false`, or limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CacheConfig {
    /// `true` (defaults) or `false` (off).
    Enabled(bool),
    /// Limits; unset ones take their defaults.
    Limits {
        /// Most cached keys per side.
        max_entries: Option<usize>,
        /// Seconds a data key is used or kept.
        max_age_secs: Option<u64>,
        /// Envelopes per data key.
        max_messages: Option<u64>,
        /// Plaintext bytes per data key.
        max_bytes: Option<u64>,
    },
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self::Enabled(true)
    }
}

impl CacheConfig {
    /// The limits, or `None` when the cache is off.
    pub fn limits(&self) -> Option<CacheLimits> {
        match self {
            Self::Enabled(false) => None,
            Self::Enabled(true) => Some(CacheLimits::default()),
            Self::Limits {
                max_entries,
                max_age_secs,
                max_messages,
                max_bytes,
            } => {
                let d = CacheLimits::default();
                Some(
                    d.max_entries(max_entries.unwrap_or(d.max_entries))
                        .max_age(max_age_secs.map_or(d.max_age, Duration::from_secs))
                        .max_messages(max_messages.unwrap_or(d.max_messages))
                        .max_bytes(max_bytes.unwrap_or(d.max_bytes)),
                )
            }
        }
    }
}

/// One BYOK rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Pairs that must all be present and equal.
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, String>,
    /// The provider they go to.
    pub provider: Spanned<String>,
}

/// A problem in the configuration, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, 0 when it is about the file as a whole.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl Config {
    /// The configuration when there is no file: the managed ring only.
    pub fn embedded() -> Self {
        let mut providers = BTreeMap::new();
        providers.insert(
            "managed".to_owned(),
            Spanned::new(
                0..0,
                ProviderConfig::Managed {
                    ring: default_ring(),
                    check_interval_ms: None,
                },
            ),
        );
        Self {
            default: default_provider(),
            providers,
            rules: Vec::new(),
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            events: EventsConfig::default(),
            objects: ObjectsConfig::default(),
            webhooks: WebhooksConfig::default(),
            byok: ByokSettings::default(),
            seal: None,
        }
    }

    /// Reads and checks a file (with the process environment as overrides).
    ///
    /// # Errors
    /// The problems, or one problem if the file cannot be read.
    pub fn load(path: &Path) -> Result<Self, Vec<Problem>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Problem {
                line: 0,
                message: format!("{}: {e}", path.display()),
            }]
        })?;
        Self::parse(&text, |k| std::env::var(k).ok())
    }

    /// Whether any provider is a managed ring.
    pub fn has_managed_provider(&self) -> bool {
        self.providers
            .values()
            .any(|p| matches!(p.get_ref(), ProviderConfig::Managed { .. }))
    }

    /// Whether a provider's settings leave `accept_unsigned_wraps` to the store's contents.
    pub fn needs_key_usage(&self) -> bool {
        self.providers.values().any(|p| {
            matches!(
                p.get_ref(),
                ProviderConfig::AzureKv {
                    accept_unsigned_wraps: None,
                    algorithm,
                    ..
                } if algorithm.as_deref().is_none_or(|a| a == "RSA-OAEP-256")
            )
        })
    }
}

/// The managed ring the `vault keys` commands act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedRing {
    /// The provider's name in the configuration.
    pub provider: String,
    /// The ring's name.
    pub ring: String,
    /// Its check interval.
    pub check_interval: Duration,
}

impl Config {
    /// The managed ring of provider `name`; without a name, the default provider's if it is
    /// managed, else the only managed provider.
    ///
    /// # Errors
    /// A message naming the managed providers when there is no such ring or the choice is
    /// ambiguous.
    pub fn managed_ring(&self, name: Option<&str>) -> Result<ManagedRing, String> {
        let managed: Vec<ManagedRing> = self
            .providers
            .iter()
            .filter_map(|(provider, p)| match p.get_ref() {
                ProviderConfig::Managed {
                    ring,
                    check_interval_ms,
                } => Some(ManagedRing {
                    provider: provider.clone(),
                    ring: ring.clone(),
                    check_interval: check_interval(*check_interval_ms),
                }),
                _ => None,
            })
            .collect();
        let names = || {
            managed
                .iter()
                .map(|m| m.provider.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let wanted = name.unwrap_or(self.default.get_ref());
        if let Some(m) = managed.iter().find(|m| m.provider == wanted) {
            return Ok(m.clone());
        }
        match (name, managed.as_slice()) {
            (None, [only]) => Ok(only.clone()),
            (Some(n), _) => Err(format!(
                "no managed provider {n:?} in the configuration (managed providers: {})",
                names()
            )),
            (None, []) => Err("the configuration has no managed provider".into()),
            (None, _) => Err(format!(
                "the default provider is not managed; choose a ring with --provider ({})",
                names()
            )),
        }
    }
}

#[cfg(test)]
mod tests;
