#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::Path;
use std::sync::Arc;

pub use vault_crypto as crypto;
pub use vault_objects as objects;
pub use vault_server as server;
pub use vault_store as store;

pub mod byok;
pub mod config;
pub mod deployment;

pub use deployment::{Deployment, Rings};

pub use vault_objects::{
    DESTROY_QUIET_SECS, DestroyReport, KeyUsage, Object, RewrapReport, RewrapScope, Shred, Vault,
    VaultError,
};

/// The vault of `config` in `data_dir`: the SQLite store there, unless `[store] url` names a
/// PostgreSQL database, with the providers and rules of `config` (see [`Deployment`]).
///
/// # Errors
/// If the configuration cannot work, or a provider or the database cannot be opened.
pub async fn open(data_dir: &Path, config: &config::Config) -> Result<Vault, VaultError> {
    Deployment::resolve(data_dir, None, None, None, config)
        .map_err(deployment::config_error)?
        .open(config)
        .await
}

/// The embedded default in `data_dir`: the managed key ring and the SQLite store.
///
/// # Errors
/// If the key ring or the database cannot be opened.
pub async fn open_embedded(data_dir: &Path) -> Result<Vault, VaultError> {
    open(data_dir, &config::Config::embedded()).await
}

use vault_crypto::{KeyRingError, ManagedKeyProvider, Router};

/// The data directory used when none is given: `./vault-data`.
pub const DEFAULT_DATA_DIR: &str = "vault-data";

/// The name of the managed key ring in the data directory.
pub const MANAGED_RING: &str = "root";

/// The existing managed ring `root` in `data_dir`, for operations that must not create one
/// (decrypting, rewrapping, key administration).
///
/// # Errors
/// [`KeyRingError`] if there is no ring, or it cannot be read or is malformed.
pub fn open_existing_managed(data_dir: &Path) -> Result<Arc<ManagedKeyProvider>, KeyRingError> {
    ManagedKeyProvider::open_existing(data_dir, MANAGED_RING).map(Arc::new)
}

/// A router with the managed ring as its default provider and no BYOK rules yet.
pub fn default_router(managed: Arc<ManagedKeyProvider>) -> Router {
    Router::new(managed)
}
