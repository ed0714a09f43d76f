//! The records the store takes and returns: objects, versions, actors, API keys, audit events
//! and key usage.

use std::fmt;

use vault_crypto::KeyContext;

use crate::time::Timestamp;

/// Who made a change: an API key or a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Actor {
    /// `key_…` or `user_…`.
    pub id: String,
    /// A display name.
    pub name: String,
}

impl Actor {
    /// An actor.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
        }
    }
}

/// An API key as stored: its public parts and a hash of the whole key, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// `key_…`: the actor id its requests are recorded under.
    pub id: String,
    /// The public prefix of the key's random part, to find the record without the secret.
    pub lookup: String,
    /// SHA-256 of the whole key text.
    pub hash: Vec<u8>,
    /// The one environment it can see.
    pub environment: String,
    /// A display name (the actor name).
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// The row's integrity tag, made and checked above the store (empty: none).
    pub mac: Vec<u8>,
}

impl fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("environment", &self.environment)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// An object's metadata: everything but the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Opaque, URL-safe, unique: `secret_` and 32 hex digits.
    pub id: String,
    /// The environment (tenant) it belongs to.
    pub environment: String,
    /// Unique among the live objects of its environment.
    pub name: String,
    /// The key context, fixed at creation.
    pub context: KeyContext,
    /// The key that wraps the current version's data key.
    pub key_id: String,
    /// The current version.
    pub version_id: String,
    /// The organization its events are filed under (`GET /events?organization_id=`): the one
    /// given at creation, else its context's `organization_id`, if any.
    pub organization_id: Option<String>,
    /// When the object was created.
    pub created_at: Timestamp,
    /// When the current version was written.
    pub updated_at: Timestamp,
    /// Who wrote the current version.
    pub updated_by: Actor,
}

impl ObjectMeta {
    /// The metadata of a new object: `version` is its first, written by `actor` at
    /// `version.at`, filed under `organization_id` (else its context's). (The store creates
    /// exactly this; the facade renders a create's answer from it before the change.)
    // Each argument is one column group of the new rows, as in `Store::create`.
    #[allow(clippy::too_many_arguments)]
    pub fn created(
        environment: &str,
        id: &str,
        name: &str,
        context: &KeyContext,
        organization_id: Option<&str>,
        version: &NewVersion,
        actor: &Actor,
    ) -> Self {
        Self {
            id: id.to_owned(),
            environment: environment.to_owned(),
            name: name.to_owned(),
            context: context.clone(),
            key_id: version.key_id.clone(),
            version_id: version.id.clone(),
            organization_id: organization_id
                .or_else(|| context.get("organization_id"))
                .map(str::to_owned),
            created_at: version.at,
            updated_at: version.at,
            updated_by: actor.clone(),
        }
    }
}

/// An object's metadata and the envelope of its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The metadata.
    pub meta: ObjectMeta,
    /// The sealed value of the current version.
    pub envelope: Vec<u8>,
}

/// A version to write.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Its id (`ver_…`, [`new_version_id`](crate::new_version_id)): chosen before it is
    /// written, so an answer naming it can be made before the change.
    pub id: String,
    /// For a create, when the object is created (its answer names it, so it is chosen before
    /// the change). An update takes its time in its own transaction instead, so versions of
    /// one object commit in time order.
    pub at: Timestamp,
    /// The sealed value.
    pub envelope: Vec<u8>,
    /// The plaintext's size in bytes.
    pub size: u64,
    /// The key that wraps its data key (the first wrapped key's reference).
    pub key_id: String,
}

/// One version of an object, newest first in listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    /// The version id.
    pub id: String,
    /// When it was written.
    pub created_at: Timestamp,
    /// Who wrote it.
    pub created_by: Actor,
    /// The plaintext's size in bytes.
    pub size: u64,
    /// 32 hex digits identifying the stored bytes (a hash of the envelope, not of the value).
    pub etag: String,
    /// Whether it is the current version.
    pub current: bool,
}

/// One stored version, for maintenance scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// The object.
    pub object_id: String,
    /// Its environment.
    pub environment: String,
    /// The version's number within the object (1, 2, ...).
    pub seq: i64,
    /// The object's key context.
    pub context: KeyContext,
    /// The sealed value.
    pub envelope: Vec<u8>,
}

/// An audit event, written in the same transaction as the change it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// `event_…`: its public id.
    pub id: String,
    /// `vault.data.created`, `vault.data.read`, ...
    pub event: String,
    /// The environment.
    pub environment: String,
    /// Who did it.
    pub actor: Actor,
    /// The object, where there is one.
    pub object_id: Option<String>,
    /// Its name.
    pub object_name: Option<String>,
    /// The key, where one was used.
    pub key_id: Option<String>,
    /// The key context, where there is one (never the value).
    pub key_context: Option<String>,
    /// Fields of the event no other field holds, as a JSON object (a BYOK key's verification
    /// outcome).
    pub detail: Option<String>,
    /// When.
    pub occurred_at: Timestamp,
}

/// An event about the deployment as a whole rather than one environment's data (a customer
/// key verified): recorded once in every environment, since every environment's contexts are
/// routed by the same rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentEvent {
    /// The event's name ([`events::BYOK_VERIFIED`], [`events::BYOK_DELETED`]).
    pub event: String,
    /// Who caused it.
    pub actor: Actor,
    /// The key it is about.
    pub key_id: Option<String>,
    /// The pairs it concerns (a rule's match: its `organization_id` is the event's).
    pub key_context: Option<KeyContext>,
    /// Its own fields, as a JSON object.
    pub detail: Option<String>,
}

/// The runtime BYOK providers and rules (`vault byok`): one document, sealed by the vault's own
/// key so that writing the database is not enough to change where values are wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByokConfig {
    /// Counts changes: 1 for the first document.
    pub generation: u64,
    /// The providers and rules (JSON; the vault crate defines its shape).
    pub document: String,
    /// An envelope sealed by the vault's default key whose associated data binds the document
    /// and the generation.
    pub seal: Vec<u8>,
    /// The key reference of the seal's wrapped key (`vault keys status`, destroy, rewrap).
    pub seal_key_id: String,
}

/// The store's integrity record (one row): the integrity key, sealed, where the database keeps
/// it, and the record of what exists, with its tag. The store never sees the key or checks a
/// tag; both are made and checked above it.
#[derive(Clone, PartialEq, Eq)]
pub struct IntegrityRecord {
    /// The integrity key sealed like a root key, and what sealed it; `None` where it is kept
    /// in a file.
    pub sealed_key: Option<(String, Vec<u8>)>,
    /// The BYOK document's generation (0: none was ever written).
    pub byok_generation: u64,
    /// The ids of the API keys revoked, sorted: an older copy of such a key's row (from before
    /// its revocation) is refused.
    pub revoked_api_keys: Vec<String>,
    /// The ids of the webhook endpoints deleted, sorted: such a row put back is refused.
    pub deleted_webhooks: Vec<String>,
    /// The record's tag.
    pub mac: Vec<u8>,
}

/// A change of the integrity record, made in the transaction of the change it records: written
/// only if the record is still the one read (its tag is `expected_mac`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordChange {
    /// The tag of the record the change was made from.
    pub expected_mac: Vec<u8>,
    /// The record after the change, with its tag.
    pub record: IntegrityRecord,
}

impl fmt::Debug for IntegrityRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrityRecord")
            .field("sealed_by", &self.sealed_key.as_ref().map(|(by, _)| by))
            .field("byok_generation", &self.byok_generation)
            .field("revoked_api_keys", &self.revoked_api_keys.len())
            .field("deleted_webhooks", &self.deleted_webhooks.len())
            .finish_non_exhaustive()
    }
}

/// How much is wrapped under one key reference (`managed://root#v1`, `aws-kms://…`): what
/// destroying that key would make unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyUsage {
    /// The key reference.
    pub key_id: String,
    /// Stored object versions (of live and deleted, not yet purged, objects) whose data key it
    /// wraps.
    pub stored_versions: u64,
    /// Data keys issued under it through the data-key API (`vault.dek.read` and
    /// `vault.dek.rekeyed` events): their holders keep the blobs, so none is known to be gone.
    pub issued_data_keys: u64,
}

impl KeyUsage {
    /// No use of `key_id`.
    pub fn new(key_id: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            stored_versions: 0,
            issued_data_keys: 0,
        }
    }
}

/// Audit event names.
pub mod events {
    /// An object was created.
    pub const DATA_CREATED: &str = "vault.data.created";
    /// An object got a new version.
    pub const DATA_UPDATED: &str = "vault.data.updated";
    /// An object's value was read.
    pub const DATA_READ: &str = "vault.data.read";
    /// An object was deleted.
    pub const DATA_DELETED: &str = "vault.data.deleted";
    /// An object's metadata (or versions) was read.
    pub const METADATA_READ: &str = "vault.metadata.read";
    /// Object names were listed.
    pub const NAMES_LISTED: &str = "vault.names.listed";
    /// A data key issued by the data-key API.
    pub const DEK_READ: &str = "vault.dek.read";
    /// An issued data key recovered.
    pub const DEK_DECRYPTED: &str = "vault.dek.decrypted";
    /// An issued data key bound to a new context.
    pub const DEK_REKEYED: &str = "vault.dek.rekeyed";
    /// A stored version's data key was wrapped again (a key rotation's rewrap). Ours: WorkOS
    /// has no such event.
    pub const DATA_REWRAPPED: &str = "vault.data.rewrapped";
    /// A deleted object was removed for good with its versions. Ours: WorkOS has no such event.
    pub const DATA_PURGED: &str = "vault.data.purged";
    /// A managed key ring version was created (a rotation).
    pub const KEK_CREATED: &str = "vault.kek.created";
    /// A managed key ring version was destroyed.
    pub const KEK_DELETED: &str = "vault.kek.deleted";
    /// A customer's key was verified live (or failed to be), as WorkOS names it.
    pub const BYOK_VERIFIED: &str = "vault.byok_key.verification_completed";
    /// A customer key provider was removed (`vault byok provider remove`), told to its
    /// organizations.
    pub const BYOK_DELETED: &str = "vault.byok_key.deleted";
    /// A blob was uploaded (ours: WorkOS has no blobs).
    pub const BLOB_CREATED: &str = "vault.blob.created";
    /// A blob's value was read, whole or a range of it.
    pub const BLOB_READ: &str = "vault.blob.read";
    /// A blob was deleted (or replaced by an upload of its name).
    pub const BLOB_DELETED: &str = "vault.blob.deleted";
    /// A deleted blob was removed for good with its segments.
    pub const BLOB_PURGED: &str = "vault.blob.purged";

    /// Every event name the vault records.
    pub const ALL: &[&str] = &[
        DATA_CREATED,
        DATA_UPDATED,
        DATA_READ,
        DATA_DELETED,
        METADATA_READ,
        NAMES_LISTED,
        DEK_READ,
        DEK_DECRYPTED,
        DEK_REKEYED,
        DATA_REWRAPPED,
        DATA_PURGED,
        KEK_CREATED,
        KEK_DELETED,
        BYOK_VERIFIED,
        BYOK_DELETED,
        BLOB_CREATED,
        BLOB_READ,
        BLOB_DELETED,
        BLOB_PURGED,
    ];
}
