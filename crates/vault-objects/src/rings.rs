//! Where a deployment's managed key rings live: files in the data directory, or tables of the
//! store's database with each root key sealed.

use std::path::PathBuf;
use std::sync::Arc;

use vault_crypto::managed::RootSeal;
use vault_crypto::sealed_ring::SealedRingStore;
use vault_crypto::{KeyRingError, ManagedKeyProvider};
use vault_store::{SqlStore, StoreError};

use crate::integrity::IntegrityKey;

/// Where managed rings live.
#[derive(Debug, Clone)]
pub enum Rings {
    /// Files in a data directory (`keyring-<ring>.json`), unsealed: the single-machine default.
    Files {
        /// The data directory.
        dir: PathBuf,
        /// The store beside them, if any: a ring file is never created while it holds the
        /// ring (moved into the database) or data under it.
        store: Option<SqlStore>,
    },
    /// Tables of the store's database, each root key sealed.
    Database {
        /// The store whose database holds them.
        store: SqlStore,
        /// What seals their root keys.
        seal: Arc<dyn RootSeal>,
        /// The deployment's integrity key: the rings' rows carry its tags.
        integrity: Arc<IntegrityKey>,
        /// The seal's provider in the configuration, if it is one: kept out of the data
        /// router, so no API caller can reach the key that seals the ring.
        seal_provider: Option<String>,
    },
}

impl Rings {
    /// The configuration's name of the provider that seals the rings, if one does.
    pub fn seal_provider(&self) -> Option<&str> {
        match self {
            Self::Database {
                seal_provider: Some(name),
                ..
            } => Some(name),
            _ => None,
        }
    }

    /// The managed ring `ring`; with `create`, a new one if there is none (a database refuses
    /// while it holds data under a ring it does not have: see `vault keys migrate-ring`).
    ///
    /// # Errors
    /// A [`KeyRingError`] if it is missing (without `create`), cannot be read or unsealed.
    pub async fn open(&self, ring: &str, create: bool) -> Result<ManagedKeyProvider, KeyRingError> {
        match self {
            Self::Files { dir, store } => {
                if !create {
                    return ManagedKeyProvider::open_existing(dir, ring);
                }
                if let Some(store) = store
                    && !vault_crypto::FileRingStore::new(dir, ring)?.path().exists()
                {
                    let unavailable = |e: StoreError| KeyRingError::Store {
                        reason: e.to_string(),
                    };
                    if store.has_ring(ring).await.map_err(unavailable)?
                        || store
                            .holds_data_under_ring(ring)
                            .await
                            .map_err(unavailable)?
                    {
                        return Err(KeyRingError::Lost {
                            ring: ring.to_owned(),
                        });
                    }
                }
                ManagedKeyProvider::open_or_create(dir, ring)
            }
            Self::Database {
                store,
                seal,
                integrity,
                ..
            } => {
                let ring_store = SealedRingStore::new(
                    Arc::new(store.ring_rows(ring)),
                    seal.clone(),
                    integrity.clone(),
                );
                ManagedKeyProvider::open(Arc::new(ring_store), create).await
            }
        }
    }
}
