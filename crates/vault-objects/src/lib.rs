//! [`Vault`]: the one place where the flow of an object is assembled. Values go in and come
//! out in plaintext; in between they are sealed for the object's key context through the key
//! provider (usually a [`Router`](vault_crypto::Router)) and stored as envelopes.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::Arc;

use vault_crypto::{Envelope, KeyContext, Router};
use vault_store::{Actor, ListQuery, NewVersion, ObjectMeta, Page, Store, StoreError, VersionMeta};

/// An object's metadata and its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Object {
    /// The metadata.
    pub meta: ObjectMeta,
    /// The plaintext value.
    pub value: Vec<u8>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("meta", &self.meta)
            .field(
                "value",
                &format_args!("[REDACTED; {} bytes]", self.value.len()),
            )
            .finish()
    }
}

/// What can go wrong with an object operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The store refused or failed (not found, conflict, invalid argument, unavailable).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing or opening failed (bad context, provider failure, decryption failure).
    #[error(transparent)]
    Crypto(#[from] vault_crypto::Error),
}

impl From<vault_crypto::KeyRingError> for VaultError {
    fn from(e: vault_crypto::KeyRingError) -> Self {
        Self::Crypto(e.into())
    }
}

/// Versioned encrypted objects: the key router and a store.
#[derive(Debug, Clone)]
pub struct Vault {
    keys: Arc<Router>,
    store: Arc<dyn Store>,
}

/// What [`Vault::rewrap_matching`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Versions looked at.
    pub scanned: u64,
    /// Versions whose context matched.
    pub matched: u64,
    /// Versions whose data key was moved to the key the rules choose now.
    pub rewrapped: u64,
    /// Matching versions already under that key (done by an earlier run).
    pub already_done: u64,
    /// Versions changed by someone else meanwhile (left alone; a re-run picks them up).
    pub changed_meanwhile: u64,
}

/// The associated data every version of an object is sealed with: its environment and id. An
/// envelope copied into another object or environment inside the database will not open.
fn object_aad(environment: &str, id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(24 + environment.len() + id.len());
    aad.extend_from_slice(b"vault-object/v1\0");
    aad.extend_from_slice(environment.as_bytes());
    aad.push(0);
    aad.extend_from_slice(id.as_bytes());
    aad
}

impl Vault {
    /// A vault over `keys` and `store`.
    pub fn new(keys: Arc<Router>, store: Arc<dyn Store>) -> Self {
        Self { keys, store }
    }

    /// The key router.
    pub fn router(&self) -> &Arc<Router> {
        &self.keys
    }

    /// Moves the data keys of every stored version whose context holds all of `pairs` to the
    /// key the rules choose for it now (after a new BYOK rule, say), without touching any value
    /// ciphertext. Versions already there are skipped, so an interrupted run is resumed by
    /// running it again. `progress` is called after each batch.
    ///
    /// # Errors
    /// The first provider or storage failure; what was done before it stays done.
    pub async fn rewrap_matching(
        &self,
        pairs: &[(String, String)],
        mut progress: impl FnMut(&RewrapReport),
    ) -> Result<RewrapReport, VaultError> {
        let mut report = RewrapReport::default();
        let mut after = None;
        loop {
            let batch = self.store.scan_versions(after.clone(), 200).await?;
            let Some(last) = batch.last() else { break };
            after = Some((last.object_id.clone(), last.seq));
            for v in &batch {
                report.scanned += 1;
                if !pairs
                    .iter()
                    .all(|(k, val)| v.context.get(k) == Some(val.as_str()))
                {
                    continue;
                }
                report.matched += 1;
                let env = Envelope::parse(&v.envelope).map_err(vault_crypto::Error::from)?;
                let target = self.keys.route(&v.context);
                if env.wrapped_keys().iter().all(|k| target.owns(k.key_ref())) {
                    report.already_done += 1;
                    continue;
                }
                let moved = vault_crypto::rewrap(&*self.keys, &v.envelope).await?;
                let key_id = Envelope::parse(&moved)
                    .map_err(vault_crypto::Error::from)?
                    .wrapped_keys()
                    .first()
                    .map(|k| k.key_ref().to_string())
                    .unwrap_or_default();
                if self
                    .store
                    .replace_envelope(&v.object_id, v.seq, &v.envelope, &moved, &key_id)
                    .await?
                {
                    report.rewrapped += 1;
                } else {
                    report.changed_meanwhile += 1;
                }
            }
            progress(&report);
        }
        Ok(report)
    }

    /// The store underneath (for purging and audit queries).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    async fn seal(
        &self,
        environment: &str,
        id: &str,
        context: &KeyContext,
        value: &[u8],
    ) -> Result<NewVersion, VaultError> {
        let envelope =
            vault_crypto::seal(&*self.keys, context, value, &object_aad(environment, id)).await?;
        let key_id = Envelope::parse(&envelope)
            .map_err(vault_crypto::Error::from)?
            .wrapped_keys()
            .first()
            .map(|k| k.key_ref().to_string())
            .unwrap_or_default();
        Ok(NewVersion {
            size: value.len() as u64,
            envelope,
            key_id,
        })
    }

    async fn open_object(&self, meta: ObjectMeta, envelope: &[u8]) -> Result<Object, VaultError> {
        let opened = vault_crypto::open(
            &*self.keys,
            envelope,
            &object_aad(&meta.environment, &meta.id),
        )
        .await?;
        // The envelope's context is authenticated; it must be the object's.
        if opened.context() != &meta.context {
            return Err(vault_crypto::Error::DecryptionFailed.into());
        }
        Ok(Object {
            meta,
            value: opened.into_plaintext(),
        })
    }

    /// Creates an object. The context chooses the keys and can never change afterwards.
    ///
    /// # Errors
    /// `Store(Conflict)` if the name is taken; `Store(InvalidArgument)`; `Crypto` if the key
    /// provider fails. Nothing is stored on failure.
    pub async fn create(
        &self,
        environment: &str,
        name: &str,
        context: &KeyContext,
        value: &[u8],
        actor: &Actor,
    ) -> Result<ObjectMeta, VaultError> {
        vault_store::validate_environment(environment)?;
        vault_store::validate_name(name)?;
        let id = vault_store::new_object_id()?;
        let version = self.seal(environment, &id, context, value).await?;
        Ok(self
            .store
            .create(environment, &id, name, context, version, actor)
            .await?)
    }

    /// Reads and decrypts an object's current value.
    ///
    /// # Errors
    /// `Store(NotFound)`; `Crypto` if the key is unavailable or the envelope does not open.
    pub async fn read(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<Object, VaultError> {
        let stored = self.store.get(environment, id, actor).await?;
        self.open_object(stored.meta, &stored.envelope).await
    }

    /// Reads and decrypts the live object with this name.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub async fn read_by_name(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<Object, VaultError> {
        let stored = self.store.get_by_name(environment, name, actor).await?;
        self.open_object(stored.meta, &stored.envelope).await
    }

    /// An object's metadata, without decrypting anything.
    ///
    /// # Errors
    /// `Store(NotFound)`.
    pub async fn describe(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<ObjectMeta, VaultError> {
        Ok(self.store.describe(environment, id, actor).await?)
    }

    /// A page of object names.
    ///
    /// # Errors
    /// `Store(InvalidArgument)` for a bad limit or cursors.
    pub async fn list(
        &self,
        environment: &str,
        query: &ListQuery,
        actor: &Actor,
    ) -> Result<Page, VaultError> {
        Ok(self.store.list(environment, query, actor).await?)
    }

    /// Writes a new version under the object's own key context. With `expected_version`, only
    /// if that is still the current version.
    ///
    /// # Errors
    /// `Store(NotFound)`, `Store(Conflict)`; `Crypto` if the key provider fails.
    pub async fn update(
        &self,
        environment: &str,
        id: &str,
        value: &[u8],
        expected_version: Option<&str>,
        actor: &Actor,
    ) -> Result<ObjectMeta, VaultError> {
        // The context is immutable, so reading it outside the write is safe; the store's
        // compare-and-set protects the version.
        let context = self.store.context_of(environment, id).await?;
        let version = self.seal(environment, id, &context, value).await?;
        Ok(self
            .store
            .update(environment, id, version, expected_version, actor)
            .await?)
    }

    /// Deletes an object (unavailable at once, purged later).
    ///
    /// # Errors
    /// `Store(NotFound)`, `Store(Conflict)`.
    pub async fn delete(
        &self,
        environment: &str,
        id: &str,
        expected_version: Option<&str>,
        actor: &Actor,
    ) -> Result<ObjectMeta, VaultError> {
        Ok(self
            .store
            .delete(environment, id, expected_version, actor)
            .await?)
    }

    /// Every version of an object, newest first.
    ///
    /// # Errors
    /// `Store(NotFound)`.
    pub async fn versions(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<Vec<VersionMeta>, VaultError> {
        Ok(self.store.versions(environment, id, actor).await?)
    }
}
