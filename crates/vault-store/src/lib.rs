//! Versioned encrypted objects: the [`Store`] trait and its SQL backend, on SQLite (the
//! embedded default: one file, WAL, `synchronous=FULL`) or PostgreSQL (feature `postgres`,
//! several server processes sharing one database).
//!
//! The store holds envelopes and metadata only: it never sees a plaintext or a key. Every
//! change and its audit event are written in one transaction; every update is a
//! compare-and-set on the current version, so concurrent writers can never both win.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod ids;
mod query;
mod sql;
mod time;
mod types;

use async_trait::async_trait;
use vault_crypto::KeyContext;

pub use error::{Conflict, StoreError};
pub use ids::{
    MAX_ENVIRONMENT_LEN, MAX_NAME_CHARS, is_object_id, new_object_id, validate_environment,
    validate_name,
};
pub use query::{Cursor, DEFAULT_LIMIT, ListItem, ListQuery, MAX_LIMIT, Order, Page};
pub use sql::{CopyReport, SqlRingStore, SqlStore};
pub use time::Timestamp;
pub use types::{
    Actor, ApiKeyRecord, AuditEvent, KeyUsage, NewVersion, ObjectMeta, StoredObject, StoredVersion,
    VersionMeta, events,
};

/// Everything the vault keeps: objects, the audit trail and API keys, each behind its own
/// trait so a part that needs one (authentication needs API keys) depends on that alone.
pub trait Store: ObjectStore + AuditLog + ApiKeyStore {}

impl<T: ObjectStore + AuditLog + ApiKeyStore + ?Sized> Store for T {}

/// Storage of versioned objects, partitioned by environment (tenant). Objects of another
/// environment do not exist for a caller: every lookup is scoped and answers `NotFound`.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Whether the database answers (one trivial query): what `/readyz` asks.
    ///
    /// # Errors
    /// `Unavailable` if it does not.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates object `id` (from [`new_object_id`]) with its first version. The caller chooses
    /// the id so it can bind the envelope to it before storing.
    ///
    /// # Errors
    /// `Conflict` if a live object of the environment has the name or the id exists;
    /// `InvalidArgument`.
    async fn create(
        &self,
        environment: &str,
        id: &str,
        name: &str,
        context: &KeyContext,
        version: NewVersion,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError>;

    /// The object and its current envelope (audited as a read of the value).
    ///
    /// # Errors
    /// `NotFound`.
    async fn get(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<StoredObject, StoreError>;

    /// The live object with this name and its current envelope (audited as a read).
    ///
    /// # Errors
    /// `NotFound`.
    async fn get_by_name(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<StoredObject, StoreError>;

    /// The key context of a live object, for sealing its next version. Not audited: it is
    /// part of a write, which is.
    ///
    /// # Errors
    /// `NotFound`.
    async fn context_of(&self, environment: &str, id: &str) -> Result<KeyContext, StoreError>;

    /// The object's metadata, without the envelope.
    ///
    /// # Errors
    /// `NotFound`.
    async fn describe(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError>;

    /// A page of object names, newest first by default.
    ///
    /// # Errors
    /// `InvalidQuery` for a limit outside 1 to 100, both cursors at once or a long search.
    async fn list(
        &self,
        environment: &str,
        query: &ListQuery,
        actor: &Actor,
    ) -> Result<Page, StoreError>;

    /// Writes a new current version. With `expected_version`, succeeds only if that is still
    /// the current version (atomically).
    ///
    /// # Errors
    /// `NotFound`; `Conflict` on a version mismatch.
    async fn update(
        &self,
        environment: &str,
        id: &str,
        version: NewVersion,
        expected_version: Option<&str>,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError>;

    /// Every version, newest first.
    ///
    /// # Errors
    /// `NotFound`.
    async fn versions(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<Vec<VersionMeta>, StoreError>;

    /// Deletes an object: unavailable at once, its name free again; purged later.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` on a version mismatch.
    async fn delete(
        &self,
        environment: &str,
        id: &str,
        expected_version: Option<&str>,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError>;

    /// Removes objects deleted before `deleted_before`, with all their versions, recording a
    /// `vault.data.purged` event by `actor` for each in the same transaction. Idempotent and
    /// safe to run from several processes at once. Returns how many objects were purged.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn purge(&self, deleted_before: Timestamp, actor: &Actor) -> Result<u64, StoreError>;

    /// A batch of stored versions (of every environment, live objects first and deleted ones
    /// too) after `after` = (object id, version number), in that order: for maintenance such as
    /// rewrapping data keys.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn scan_versions(
        &self,
        after: Option<(String, i64)>,
        limit: u32,
    ) -> Result<Vec<StoredVersion>, StoreError>;

    /// Replaces the envelope of one version, only if it is still `expected` (so a concurrent
    /// change is never overwritten), recording a `vault.data.rewrapped` event by `actor` in the
    /// same transaction. Returns whether it was replaced.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn replace_envelope(
        &self,
        object_id: &str,
        seq: i64,
        expected: &[u8],
        new: &[u8],
        key_id: &str,
        actor: &Actor,
    ) -> Result<bool, StoreError>;
}

/// The audit trail: key events of the data-key API (reads and writes of objects record their
/// own, in their transactions), the events themselves, and what each key wraps.
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    /// How much each key reference wraps: stored versions and issued data keys, by key
    /// reference (in any order; keys that wrap nothing are absent).
    ///
    /// # Errors
    /// `Unavailable`.
    async fn key_usage(&self) -> Result<Vec<KeyUsage>, StoreError>;

    /// The newest audit events of an environment, newest first.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn audit_events(
        &self,
        environment: &str,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Records a data-key event (`vault.dek.*`): a key issued, decrypted or rekeyed through the
    /// data-key API, with its key and context. Never the key itself.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad environment; `Unavailable`.
    async fn record_key_event(
        &self,
        environment: &str,
        event: &str,
        actor: &Actor,
        key_id: &str,
        context: &KeyContext,
    ) -> Result<(), StoreError>;
}

/// API key records (hashes, never secrets).
#[async_trait]
pub trait ApiKeyStore: Send + Sync + std::fmt::Debug {
    /// Stores a new API key record (its hash only; the secret is never stored).
    ///
    /// # Errors
    /// `Conflict` if its id or lookup exists; `InvalidArgument`; `Unavailable`.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// The API key with this lookup prefix, revoked or not.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn api_key_by_lookup(&self, lookup: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Revokes an API key by id: it authenticates nothing from now on. Revoking a revoked key
    /// is a no-op.
    ///
    /// # Errors
    /// `NotFound` for an unknown id; `Unavailable`.
    async fn revoke_api_key(&self, id: &str) -> Result<(), StoreError>;

    /// Every API key record, oldest first.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
}
