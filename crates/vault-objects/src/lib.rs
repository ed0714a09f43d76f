//! [`Vault`]: the one place where the flow of an object is assembled. Values go in and come
//! out in plaintext; in between they are sealed for the object's key context through the key
//! provider (usually a [`Router`]) and stored as envelopes.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod api_keys;
pub mod bench;
pub mod blobs;
pub mod byok;
pub mod config;
mod data_keys;
pub mod deployment;
mod feed;
pub mod integrity;
pub mod jobs;
mod keys;
mod rings;
pub mod webhooks;
pub mod wire;
mod write;

use std::sync::Arc;

pub use blobs::{BlobReader, BlobUpload, ByteRange};
pub use keys::{
    DESTROY_QUIET_SECS, DestroyReport, RewrapReport, RewrapScope, Shred, byok_seal_context,
};
// What the facade's callers (the server, the CLI) name, so they need no other crate's paths.
pub use api_keys::{ApiKeys, ListedApiKey};
pub use config::MANAGED_RING;
pub use deployment::{
    DEFAULT_DATA_DIR, Deployment, default_router, open, open_embedded, open_existing_managed,
};
pub use feed::{
    MAX_RETENTION_DAYS, MAX_WEBHOOK_URL_LEN, PURGE_BATCH, WebhookSecret, check_webhook_url,
};
pub use integrity::{IntegrityKey, KeyHome, Upgrade};
pub use rings::Rings;
pub use vault_crypto::issued::IssuedKey;
pub use vault_crypto::stream;
pub use vault_crypto::{
    ContextError, Envelope, EnvelopeError, Error as CryptoError, KeyContext, KeyRingError, MAGIC,
    Opened, ProviderCalls, ProviderError, ProviderErrorKind, Router, Sealed, encode_text,
};
pub use vault_store::{
    Actor, ApiKeyRecord, AuditEvent, BlobMeta, Conflict, Cursor, Delivery, EventPage, EventQuery,
    IDEMPOTENCY_TTL_MICROS, KeyUsage, ListQuery, MAX_EVENTS_LIMIT, ObjectMeta, Order, Page,
    Remembered, StoreError, Timestamp, VersionMeta, WebhookEndpoint, WriteStats, events,
    is_event_id, validate_environment,
};
pub use write::{Idempotent, Write};

use vault_store::{NewVersion, Store};

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
    /// A key version still wraps stored data or issued data keys, and destroying it was not
    /// consented to.
    #[error("{}", key_in_use(*.version, *.stored_versions, *.issued_data_keys))]
    KeyInUse {
        /// The version.
        version: u32,
        /// Stored object versions under it.
        stored_versions: u64,
        /// Data keys issued under it through the data-key API.
        issued_data_keys: u64,
    },
    /// A row of the store fails its integrity check (added or changed by someone who can write
    /// the database, not through this deployment's keys): refused. Says which row, never a
    /// secret.
    #[error(
        "{what}: refused, as not written through this deployment's keys (docs/SECURITY.md, \"Untrusted storage\")"
    )]
    Tampered {
        /// The row or record, and its table.
        what: String,
    },
    /// The store holds data but has no integrity record, and may not be protected without the
    /// operator's word.
    #[error(
        "the store holds data but no integrity record: if this deployment was upgraded from a release before row integrity, run `vault keys protect` once (it tags every row as it is now); if it was protected before, its record (table integrity) was deleted: restore the database from a backup"
    )]
    NotProtected,
    /// `vault keys protect` found rows that carry tags: the store was protected before and its
    /// record was deleted.
    #[error(
        "rows of this store carry integrity tags, but its integrity record (table integrity) is gone: it was protected before and the record was deleted; restore the database from a backup, or take every row as it is now with `vault keys protect --force`"
    )]
    ProtectedBefore,
    /// A key version was the primary moments ago: writes sealed under it may still be landing.
    #[error(
        "key version {version} was the primary version until moments ago; writes sealed under it may still be landing: try again in {wait_secs} s"
    )]
    KeyRecentlyPrimary {
        /// The version.
        version: u32,
        /// Seconds to wait.
        wait_secs: u64,
    },
    /// An update named a key context other than the object's: a context chose the keys of
    /// every version and can never change.
    #[error(
        "the key context of an object cannot change (it chose the keys of every version): to keep the value under another context, create a new object with that context and delete this one"
    )]
    ContextImmutable,
    /// A range asked of a blob holds none of its bytes.
    #[error("the range asked for holds none of the blob's {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
}

impl From<KeyRingError> for VaultError {
    fn from(e: KeyRingError) -> Self {
        Self::Crypto(e.into())
    }
}

/// Why `vault keys destroy` refuses, and the ways on: rewrap moves stored values, never the data
/// keys handed out (their holders keep the wrapped keys), so those leave only consent.
fn key_in_use(version: u32, stored: u64, issued: u64) -> String {
    let consent = format!(
        "`vault keys destroy {version} --yes-destroy-data` destroys it anyway, making what it wraps unreadable for good"
    );
    match (stored, issued) {
        (0, issued) => format!(
            "key version {version} still wraps {issued} issued data key(s), which rewrap cannot move (their holders keep them wrapped under v{version}; each is re-wrapped only when its holder asks for a rekey); {consent}"
        ),
        (stored, 0) => format!(
            "key version {version} still wraps {stored} stored object version(s): `vault keys rewrap --all` moves them to the primary version, after which it can be destroyed; or {consent}"
        ),
        (stored, issued) => format!(
            "key version {version} still wraps {stored} stored object version(s) and {issued} issued data key(s): `vault keys rewrap --all` moves the stored ones to the primary version, but not the issued keys (their holders keep them wrapped under v{version}); {consent}"
        ),
    }
}

/// Versioned encrypted objects: the key router and a store.
#[derive(Debug, Clone)]
pub struct Vault {
    keys: Arc<Router>,
    store: Arc<dyn Store>,
    integrity: Arc<IntegrityKey>,
    /// What opens and moves the vault's own envelope of the BYOK rules, where the router's
    /// default would accept a wrap anyone could forge (an Azure RSA key accepting unsigned
    /// wraps); `None`: the router.
    seal_opener: Option<Arc<dyn vault_crypto::KeyProvider>>,
    /// One blob purge step at a time in this process, whoever asks (the scheduled purge, every
    /// upload given up), so SQLite's group commit never joins many of them in one transaction.
    purge_gate: Arc<tokio::sync::Semaphore>,
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
    /// A vault over `keys` and `store`, whose rows are tagged with `integrity` (see
    /// [`integrity::open`] for a deployment's key).
    pub fn new(keys: Arc<Router>, store: Arc<dyn Store>, integrity: Arc<IntegrityKey>) -> Self {
        Self {
            keys,
            store,
            integrity,
            seal_opener: None,
            purge_gate: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// This vault, moving the BYOK rules' seal with `opener` (the default provider, strict)
    /// rather than the router.
    #[must_use]
    pub fn with_seal_opener(mut self, opener: Arc<dyn vault_crypto::KeyProvider>) -> Self {
        self.seal_opener = Some(opener);
        self
    }

    /// The integrity key the store's rows are tagged with.
    pub fn integrity_key(&self) -> &Arc<IntegrityKey> {
        &self.integrity
    }

    /// The key router.
    pub fn router(&self) -> &Arc<Router> {
        &self.keys
    }

    /// Whether the vault can serve: the store answers, and the default key provider seals
    /// and opens a probe (for a managed ring: its store reachable and its keys unsealed; for
    /// a KMS key: reachable, or its data key cached).
    ///
    /// # Errors
    /// What is not usable.
    pub async fn ready(&self) -> Result<(), VaultError> {
        self.store.ping().await?;
        let probe = KeyContext::from_pairs([("vault_probe", "ready")])
            .map_err(vault_crypto::Error::from)?;
        let sealed =
            vault_crypto::seal(&*self.keys, &probe, b"", vault_crypto::Aad::new(b"ready")).await?;
        vault_crypto::open(
            &*self.keys,
            &sealed,
            &probe,
            vault_crypto::Aad::new(b"ready"),
        )
        .await?;
        Ok(())
    }

    /// The store's write counters (commits and changes), for the metrics.
    pub fn write_stats(&self) -> WriteStats {
        self.store.write_stats()
    }

    /// The API keys of the store underneath, their rows checked: all that authentication
    /// needs.
    pub fn api_keys(&self) -> ApiKeys {
        ApiKeys::new(self.store.clone(), self.integrity.clone())
    }

    async fn seal(
        &self,
        environment: &str,
        id: &str,
        context: &KeyContext,
        value: &[u8],
    ) -> Result<NewVersion, VaultError> {
        let sealed = vault_crypto::seal_in(
            &*self.keys,
            environment,
            context,
            value,
            vault_crypto::Aad::new(&object_aad(environment, id)),
        )
        .await?;
        Ok(NewVersion {
            id: vault_store::new_version_id()?,
            at: Timestamp::now(),
            size: value.len() as u64,
            key_id: sealed.key_ref().to_string(),
            envelope: sealed.into_bytes(),
        })
    }

    async fn open_object(&self, meta: ObjectMeta, envelope: &[u8]) -> Result<Object, VaultError> {
        // The envelope's context is authenticated; it must be the object's.
        let opened = vault_crypto::open(
            &*self.keys,
            envelope,
            &meta.context,
            vault_crypto::Aad::new(&object_aad(&meta.environment, &meta.id)),
        )
        .await?;
        Ok(Object {
            meta,
            value: opened.into_plaintext(),
        })
    }

    /// Creates an object. The context chooses the keys and can never change afterwards. Its
    /// events are filed under `organization_id` (WorkOS's create takes one beside the
    /// context), else under its context's; when both are given they must agree. With
    /// [`Write::remembered`], the answer (the object's [`wire::object_metadata`]) is stored in
    /// the same transaction for retries with the same idempotency key.
    ///
    /// # Errors
    /// `Store(Conflict)` if the name is taken; `Store(Conflict::Answered)` if an answer for the
    /// idempotency key was stored meanwhile; `Store(InvalidArgument)` (an organization other
    /// than the context's among them); `Crypto` if the key provider fails. Nothing is stored
    /// on failure.
    pub async fn create<'w>(
        &self,
        environment: &str,
        name: &str,
        context: &KeyContext,
        organization_id: Option<&str>,
        value: &[u8],
        write: impl Into<Write<'w>>,
    ) -> Result<ObjectMeta, VaultError> {
        let write = write.into();
        validate_environment(environment)?;
        let name = vault_store::validate_name(name)?;
        context.check_caller().map_err(vault_crypto::Error::from)?;
        if let Some(org) = organization_id {
            vault_store::validate_organization_id(org)?;
            if context.get("organization_id").is_some_and(|own| own != org) {
                return Err(StoreError::InvalidArgument {
                    field: "organization_id",
                    reason: "differs from the key context's organization_id",
                }
                .into());
            }
        }
        let id = vault_store::new_object_id()?;
        let version = self.seal(environment, &id, context, value).await?;
        // The answer names the version and its time: both are chosen here, before the change.
        let remember = write.idempotent.map(|idem| {
            let meta = ObjectMeta::created(
                environment,
                &id,
                name,
                context,
                organization_id,
                &version,
                write.actor,
            );
            idem.remember(
                &self.integrity,
                wire::to_bytes(&wire::object_metadata(&meta)),
                version.at,
            )
        });
        Ok(self
            .store
            .create(
                environment,
                &id,
                name,
                context,
                organization_id,
                version,
                write.actor,
                remember.as_ref(),
            )
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
    /// if that is still the current version. A caller that states the context (`stated`) is
    /// refused unless it is the object's: a context never changes.
    ///
    /// # Errors
    /// `Store(NotFound)`, `Store(Conflict)`; [`VaultError::ContextImmutable`]; `Crypto` if the
    /// key provider fails. Nothing is written on failure.
    pub async fn update(
        &self,
        environment: &str,
        id: &str,
        value: &[u8],
        expected_version: Option<&str>,
        stated: Option<&KeyContext>,
        actor: &Actor,
    ) -> Result<ObjectMeta, VaultError> {
        // The context is immutable, so reading it outside the write is safe; the store's
        // compare-and-set protects the version.
        let context = self.store.context_of(environment, id).await?;
        if stated.is_some_and(|s| *s != context) {
            return Err(VaultError::ContextImmutable);
        }
        // Read from the store: a reserved context planted there is never sealed under.
        context.check_caller().map_err(vault_crypto::Error::from)?;
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
