//! Where a deployment keeps its objects and its managed key rings.
//!
//! - **One machine** (the default): SQLite (`vault.db`) and the key-ring file
//!   (`keyring-<ring>.json`, unsealed, mode 0600) in the data directory.
//! - **Several machines**: PostgreSQL (`--database-url`, `[store] url`), and the managed ring in
//!   its tables, each root key sealed by a key kept elsewhere (`--seal`: a KMS provider of
//!   `vault.toml`, or `file:/path/master.key`). `vault serve` replicas are then stateless.
//! - In between: SQLite with a seal keeps the ring sealed in `vault.db` instead of the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::integrity::{self, IntegrityKey, KeyHome, Upgrade};
use crate::{Vault, VaultError};
use vault_crypto::managed::{MasterKeySeal, ProviderSeal, RootSeal};
use vault_crypto::{KeyRingError, ManagedKeyProvider};
use vault_store::{SqlStore, StoreError};

use crate::config::{Config, MANAGED_RING, config_error};
use crate::rings::Rings;

/// Where a deployment keeps its objects and its managed rings; see the [module docs](self).
#[derive(Clone)]
pub struct Deployment {
    data_dir: PathBuf,
    database_url: Option<String>,
    seal: Option<String>,
}

impl fmt::Debug for Deployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deployment")
            .field("store", &self.describe())
            .field("seal", &self.seal)
            .finish()
    }
}

impl Deployment {
    /// The embedded default in `data_dir`: SQLite and the key-ring file.
    pub fn embedded(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            database_url: None,
            seal: None,
        }
    }

    /// The deployment that `database_url` and `seal` (flags or the environment) and then
    /// `config` (`[store]`, `seal`) describe. `password`: the database password from the
    /// environment, which wins over `[store] password_file`.
    ///
    /// # Errors
    /// What is wrong, in words: an unusable URL or seal, an unreadable password file, or a
    /// database ring without a seal.
    pub fn resolve(
        data_dir: &Path,
        database_url: Option<String>,
        seal: Option<String>,
        password: Option<String>,
        config: &Config,
    ) -> Result<Self, String> {
        let url = database_url.or_else(|| config.store.url.as_ref().map(|u| u.0.clone()));
        let seal = seal.or_else(|| config.seal.clone());
        if let Some(seal) = &seal {
            config.check_seal(seal)?;
        }
        let url = match url {
            None => None,
            Some(url) => {
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                    return Err("the database URL must be postgres://… (SQLite is the default, in the data directory)".into());
                }
                let password = match (password, &config.store.password_file) {
                    (Some(p), _) => Some(p),
                    (None, Some(file)) => Some(read_password(file)?),
                    (None, None) => None,
                };
                Some(match password {
                    Some(p) => with_password(&url, &p)?,
                    None => url,
                })
            }
        };
        let has_managed = config.has_managed_provider();
        if url.is_some() && seal.is_none() && has_managed {
            return Err("the managed key ring in PostgreSQL is kept sealed: give --seal (VAULT_SEAL, or `seal` in vault.toml): file:/path/master.key (made by `vault keys init-seal`) or a KMS provider of vault.toml".into());
        }
        Ok(Self {
            data_dir: data_dir.to_owned(),
            database_url: url,
            seal,
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether objects live in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.database_url.is_some()
    }

    /// Whether managed rings live in the database (PostgreSQL, or any store with a seal).
    pub fn rings_in_database(&self) -> bool {
        self.database_url.is_some() || self.seal.is_some()
    }

    /// The seal's name as configured.
    pub fn seal_name(&self) -> Option<&str> {
        self.seal.as_deref()
    }

    /// The store, for messages, without its password.
    pub fn describe(&self) -> String {
        match &self.database_url {
            // Host, port and database only: the user information and the query (which may
            // carry a password) are never shown, nor any part of a URL that does not parse.
            Some(url) => match url::Url::parse(url) {
                Ok(u) => format!(
                    "PostgreSQL {}{}{}",
                    u.host_str().unwrap_or_default(),
                    u.port().map(|p| format!(":{p}")).unwrap_or_default(),
                    u.path()
                ),
                Err(_) => "PostgreSQL (a URL that does not parse)".to_owned(),
            },
            None => format!("SQLite {}", SqlStore::sqlite_path(&self.data_dir).display()),
        }
    }

    /// Whether there is a store to read (a SQLite file that exists; PostgreSQL always).
    pub fn has_store(&self) -> bool {
        self.database_url.is_some() || SqlStore::sqlite_path(&self.data_dir).exists()
    }

    /// Opens the store (creating the SQLite file, or the schema, if needed).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database cannot be reached or migrated.
    pub async fn store(&self) -> Result<SqlStore, StoreError> {
        match &self.database_url {
            Some(url) => SqlStore::connect_postgres(url).await,
            None => SqlStore::open_sqlite(&self.data_dir).await,
        }
    }

    /// The seal, read or connected: a master key file, or a KMS provider of `config`.
    ///
    /// # Errors
    /// If the master key file cannot be read, or the provider cannot be connected.
    pub async fn root_seal(
        &self,
        config: &Config,
    ) -> Result<Option<Arc<dyn RootSeal>>, VaultError> {
        open_seal(self.seal.as_deref(), config).await
    }

    /// Where the managed rings are, given the opened `store`.
    ///
    /// # Errors
    /// As [`root_seal`](Self::root_seal).
    pub async fn rings(&self, store: &SqlStore, config: &Config) -> Result<Rings, VaultError> {
        if !self.rings_in_database() {
            return Ok(Rings::Files {
                dir: self.data_dir.clone(),
                store: Some(store.clone()),
            });
        }
        match self.root_seal(config).await? {
            Some(seal) => Ok(Rings::Database {
                store: store.clone(),
                integrity: Box::pin(self.integrity(store, config, Upgrade::Refuse)).await?,
                seal,
                seal_provider: self.seal.clone().filter(|s| !s.starts_with("file:")),
            }),
            // No seal and no managed ring: nothing to seal; a ring asked for is refused.
            None if !config.has_managed_provider() => Ok(Rings::Files {
                dir: self.data_dir.clone(),
                store: Some(store.clone()),
            }),
            None => Err(config_error(
                "the managed key ring in the database is kept sealed: give --seal",
            )),
        }
    }

    /// Where the integrity key is kept: `integrity.key` in the data directory beside a SQLite
    /// store (whatever seals its ring), else sealed in PostgreSQL's integrity record by the
    /// ring's seal, or, with no seal (customer keys only), by the default provider.
    ///
    /// # Errors
    /// If the seal or the default provider cannot be opened.
    pub async fn integrity_home(
        &self,
        store: &SqlStore,
        config: &Config,
    ) -> Result<KeyHome, VaultError> {
        if !self.is_postgres() {
            return Ok(KeyHome::File(self.data_dir.join(integrity::KEY_FILE)));
        }
        if let Some(seal) = self.root_seal(config).await? {
            return Ok(KeyHome::Sealed(seal));
        }
        let rings = self.rings(store, config).await?;
        let default = config.default_provider(&rings, false).await?;
        Ok(KeyHome::Sealed(Arc::new(ProviderSeal::new(
            config.default.get_ref().clone(),
            default,
        ))))
    }

    /// The integrity key of the deployment, its record in `store` checked (see
    /// [`crate::integrity::open`]). A store from before row integrity is protected now
    /// on the embedded default, and with `upgrade` ([`Upgrade::Protect`], `vault keys protect`)
    /// in a database; a new store always is.
    ///
    /// # Errors
    /// `Tampered` if the record is missing or fails, `NotProtected` for a database store from
    /// before row integrity; or the key cannot be read or unsealed.
    pub async fn integrity(
        &self,
        store: &SqlStore,
        config: &Config,
        upgrade: Upgrade,
    ) -> Result<Arc<IntegrityKey>, VaultError> {
        let home = self.integrity_home(store, config).await?;
        integrity::open(store, &home, upgrade).await
    }

    /// `config` with the BYOK providers and rules of `store` (see
    /// [`merged_for`](crate::byok::merged_for)), checked with this deployment's integrity key.
    ///
    /// # Errors
    /// As [`integrity`](Self::integrity) and [`merged_for`](crate::byok::merged_for).
    pub async fn merged(
        &self,
        config: &Config,
        rings: &Rings,
        store: &SqlStore,
    ) -> Result<Config, VaultError> {
        let key = self.integrity(store, config, Upgrade::Refuse).await?;
        crate::byok::merged_for(config, rings, store, &key).await
    }

    /// The vault: the store, and a router with the providers and rules of `config`, every
    /// managed ring opened (created if the store is new) and unsealed.
    ///
    /// # Errors
    /// If the store, a ring or a provider cannot be opened.
    ///
    /// The router follows the BYOK rules and providers kept in the store (`vault byok`) for as
    /// long as the vault is in use: a change made by any process routes here within a second
    /// (see [`ByokWatch`](crate::byok::ByokWatch)).
    pub async fn open(&self, config: &Config) -> Result<Vault, VaultError> {
        let store = self.store().await?;
        let key = self.integrity(&store, config, Upgrade::Refuse).await?;
        let rings = self.rings(&store, config).await?;
        let shared: Arc<dyn vault_store::Store> = Arc::new(store);
        let watch = Arc::new(crate::byok::ByokWatch::new(
            config.clone(),
            rings.clone(),
            shared.clone(),
            key.clone(),
        ));
        let router = Arc::new(watch.router(true).await?);
        watch.spawn(Arc::downgrade(&router));
        let vault = Vault::new(router, shared, key);
        // An Azure RSA default may accept unsigned wraps for values; the rules' seal is moved
        // only by a strict instance of it (`Config::default_provider`).
        Ok(match config.providers.get(config.default.get_ref()) {
            Some(p) if matches!(p.get_ref(), crate::config::ProviderConfig::AzureKv { .. }) => {
                vault.with_seal_opener(config.default_provider(&rings, false).await?)
            }
            _ => vault,
        })
    }
}

/// A seal by its configured name (see [`Deployment::root_seal`]).
///
/// # Errors
/// As [`Deployment::root_seal`].
pub async fn open_seal(
    seal: Option<&str>,
    config: &Config,
) -> Result<Option<Arc<dyn RootSeal>>, VaultError> {
    let Some(seal) = seal else { return Ok(None) };
    if let Some(path) = seal.strip_prefix("file:") {
        let key = MasterKeySeal::from_file(Path::new(path)).map_err(vault_crypto::Error::from)?;
        return Ok(Some(Arc::new(key)));
    }
    let provider = config.seal_provider(seal).await?;
    Ok(Some(Arc::new(ProviderSeal::new(seal, provider))))
}

/// The first line of a password file.
fn read_password(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("store.password_file {}: {e}", file.display()))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(format!(
            "store.password_file {}: the first line is empty",
            file.display()
        ));
    }
    Ok(line.to_owned())
}

/// `url` with `password` set for its user (percent-encoded).
fn with_password(url: &str, password: &str) -> Result<String, String> {
    let no_user = || "a database password needs a user in the URL (postgres://USER@host/db)";
    let (scheme, rest) = url.split_once("://").ok_or_else(no_user)?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (user, host) = authority.rsplit_once('@').ok_or_else(no_user)?;
    if user.contains(':') {
        return Err("the database URL has a password already; give it one way only".into());
    }
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Ok(format!("{scheme}://{user}:{encoded}@{host}{tail}"))
}

/// The vault of `config` in `data_dir`: the SQLite store there, unless `[store] url` names a
/// PostgreSQL database, with the providers and rules of `config` (see [`Deployment`]).
///
/// # Errors
/// If the configuration cannot work, or a provider or the database cannot be opened.
pub async fn open(data_dir: &Path, config: &Config) -> Result<Vault, VaultError> {
    Deployment::resolve(data_dir, None, None, None, config)
        .map_err(config_error)?
        .open(config)
        .await
}

/// The embedded default in `data_dir`: the managed key ring and the SQLite store.
///
/// # Errors
/// If the key ring or the database cannot be opened.
pub async fn open_embedded(data_dir: &Path) -> Result<Vault, VaultError> {
    open(data_dir, &Config::embedded()).await
}

/// The data directory used when none is given: `./vault-data`.
pub const DEFAULT_DATA_DIR: &str = "vault-data";

/// The existing managed ring `root` in `data_dir`, for operations that must not create one
/// (decrypting, rewrapping, key administration).
///
/// # Errors
/// [`KeyRingError`] if there is no ring, or it cannot be read or is malformed.
pub fn open_existing_managed(data_dir: &Path) -> Result<Arc<ManagedKeyProvider>, KeyRingError> {
    ManagedKeyProvider::open_existing(data_dir, MANAGED_RING).map(Arc::new)
}

/// A router with the managed ring as its default provider and no BYOK rules yet.
pub fn default_router(managed: Arc<ManagedKeyProvider>) -> vault_crypto::Router {
    vault_crypto::Router::new(managed)
}

#[cfg(test)]
mod tests;
