//! Versioned encrypted objects: the [`Store`] trait and its SQL backend, on SQLite (the
//! embedded default: one file, WAL, `synchronous=FULL`) or PostgreSQL (feature `postgres`,
//! several server processes sharing one database).
//!
//! The store holds envelopes and metadata only: it never sees a plaintext or a key. Every
//! change and its audit event are written in one transaction; every update is a
//! compare-and-set on the current version, so concurrent writers can never both win.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod blobs;
mod error;
mod feed;
mod ids;
mod query;
mod sql;
mod time;
mod types;

use async_trait::async_trait;
use vault_crypto::KeyContext;

pub use blobs::{BlobHead, BlobMeta, BlobPurge, BlobStore, NewBlob, StoredBlob};
pub use error::{Conflict, StoreError};
pub use feed::{
    Delivery, EventPage, EventQuery, IDEMPOTENCY_TTL_MICROS, MAX_EVENTS_LIMIT, Remember,
    Remembered, WebhookEndpoint,
};
pub use ids::{
    MAX_ENVIRONMENT_LEN, MAX_NAME_CHARS, is_blob_id, is_event_id, is_object_id, is_version_id,
    new_blob_id, new_object_id, new_version_id, validate_environment, validate_name,
    validate_organization_id,
};
pub use query::{Cursor, DEFAULT_LIMIT, ListItem, ListQuery, MAX_LIMIT, Order, Page};
pub use sql::{CopyReport, SqlRingRows, SqlStore, is_provider_name};
pub use time::Timestamp;

/// Counters of a store's durable writes (see [`ObjectStore::write_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Write transactions committed by the writer (each one fsync on SQLite).
    pub commits: u64,
    /// Object changes (create, update, delete, rewrap) committed.
    pub changes: u64,
    /// Audit events of reads committed.
    pub read_events: u64,
}
pub use types::{
    Actor, ApiKeyRecord, AuditEvent, ByokConfig, DeploymentEvent, IntegrityRecord, KeyUsage,
    NewVersion, ObjectMeta, RecordChange, StoredObject, StoredVersion, VersionMeta, events,
};

mod records;
pub use records::*;

/// Everything the vault keeps: objects, the audit trail, API keys and webhook endpoints, each
/// behind its own trait so a part that needs one (authentication needs API keys) depends on
/// that alone.
pub trait Store:
    ObjectStore + BlobStore + AuditLog + ApiKeyStore + WebhookStore + ByokStore + IntegrityStore
{
}

impl<
    T: ObjectStore
        + BlobStore
        + AuditLog
        + ApiKeyStore
        + WebhookStore
        + ByokStore
        + IntegrityStore
        + ?Sized,
> Store for T
{
}

/// Storage of versioned objects, partitioned by environment (tenant). Objects of another
/// environment do not exist for a caller: every lookup is scoped and answers `NotFound`.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Whether the database answers (one trivial query): what `/readyz` asks.
    ///
    /// # Errors
    /// `Unavailable` if it does not.
    async fn ping(&self) -> Result<(), StoreError>;

    /// What this store's writer has committed since it opened: how many durable commits, and
    /// how many object changes and reads' audit events they carried (so the changes that
    /// shared one fsync can be counted). Zeroes for a store that does not count.
    fn write_stats(&self) -> WriteStats {
        WriteStats::default()
    }

    /// Creates object `id` (from [`new_object_id`]) with its first version, its events filed
    /// under `organization_id` (else its context's). The caller chooses the id so it can bind
    /// the envelope to it before storing. With `remember`, the answer is stored in the same
    /// transaction, for retries with the same idempotency key.
    ///
    /// # Errors
    /// `Conflict` if a live object of the environment has the name or the id exists, or
    /// (`Conflict::Answered`) if an answer for `remember`'s key was stored meanwhile (nothing is
    /// created then); `InvalidArgument`.
    // Each argument is one column group of the new rows; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        environment: &str,
        id: &str,
        name: &str,
        context: &KeyContext,
        organization_id: Option<&str>,
        version: NewVersion,
        actor: &Actor,
        remember: Option<&Remember>,
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

    /// Removes at most `limit` objects deleted before `deleted_before` (the longest deleted
    /// first), with all their versions, recording a `vault.data.purged` event by `actor` for
    /// each in the same transaction. Idempotent and safe to run from several processes at
    /// once. Returns how many objects were purged: fewer than `limit` when none is left.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn purge(
        &self,
        deleted_before: Timestamp,
        limit: u32,
        actor: &Actor,
    ) -> Result<u64, StoreError>;

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
    /// data-key API, with its key and context. Never the key itself. With `remember`, the
    /// answer is stored in the same transaction.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad environment; `Conflict::Answered` if an answer for
    /// `remember`'s key was stored meanwhile (the event is not recorded then); `Unavailable`.
    async fn record_key_event(
        &self,
        environment: &str,
        event: &str,
        actor: &Actor,
        key_id: &str,
        context: &KeyContext,
        remember: Option<&Remember>,
    ) -> Result<(), StoreError>;

    /// Records a managed ring event (`vault.kek.created`, `vault.kek.deleted`) for `key_id`
    /// (`managed://ring#vN`) in every environment that has stored versions, issued data keys or
    /// webhook secrets under the ring `ring`. Returns how many environments got it.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn record_ring_event(
        &self,
        event: &str,
        ring: &str,
        key_id: &str,
        actor: &Actor,
    ) -> Result<u64, StoreError>;

    /// Records `event` once in every environment whose audit trail records a value stored
    /// (created or updated) under a key context with the same `organization_id` (an object's
    /// `organization_id` label alone does not count: it routes nothing), in one transaction;
    /// nowhere if the event's context has no `organization_id`. Returns how many environments
    /// got it.
    ///
    /// # Errors
    /// `InvalidArgument` for a `detail` that is not a JSON object; `Unavailable`.
    async fn record_deployment_event(&self, event: &DeploymentEvent) -> Result<u64, StoreError>;

    /// A page of an environment's events, filtered as `query` says.
    ///
    /// # Errors
    /// `InvalidQuery` for no event name, a limit outside 1 to 100 or an unknown `after`;
    /// `Unavailable`.
    async fn list_events(
        &self,
        environment: &str,
        query: &EventQuery,
    ) -> Result<EventPage, StoreError>;

    /// Removes the events that happened before `before`, except those a webhook still has to
    /// deliver; issued data keys among them stay counted by [`key_usage`](Self::key_usage).
    /// Returns how many were removed.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn purge_events(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// The answer stored for `owner`'s idempotency key `key`, if one is younger than 24 hours.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn remembered(&self, owner: &str, key: &str) -> Result<Option<Remembered>, StoreError>;

    /// Removes the idempotent answers stored before `before`. Returns how many.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn forget_answers(&self, before: Timestamp) -> Result<u64, StoreError>;
}
