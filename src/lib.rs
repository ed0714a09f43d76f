#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use vault_crypto as crypto;
pub use vault_store as store;

pub mod bench;
pub mod config;
mod facade;

pub use facade::{Object, RewrapReport, Vault, VaultError};

use vault_crypto::{KeyRingError, ManagedKeyProvider, Router};

/// The data directory used when none is given: `./vault-data`.
pub const DEFAULT_DATA_DIR: &str = "vault-data";

/// The name of the managed key ring in the data directory.
pub const MANAGED_RING: &str = "root";

/// The embedded default keys: the managed ring `root` in `data_dir`, created on first use.
///
/// # Errors
/// [`KeyRingError`] if the ring cannot be created, read or is malformed.
pub fn open_managed(data_dir: &Path) -> Result<Arc<ManagedKeyProvider>, KeyRingError> {
    ManagedKeyProvider::open_or_create(data_dir, MANAGED_RING).map(Arc::new)
}

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

/// `dir`, or the default data directory.
pub fn data_dir_or_default(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}
