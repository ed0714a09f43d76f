//! Large values kept as segments (our extension beside the WorkOS API): the head of a streamed
//! envelope in one row, each sealed segment in a row of its own, so a value of any size is
//! written and read a batch of segments at a time, never whole.

use async_trait::async_trait;
use vault_crypto::KeyContext;

use crate::{Actor, StoreError, Timestamp};

/// A blob's metadata: everything but its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// Opaque, URL-safe, unique: `blob_` and 32 hex digits.
    pub id: String,
    /// The environment (tenant) it belongs to.
    pub environment: String,
    /// Unique among the live blobs of its environment.
    pub name: String,
    /// The key context its data key was wrapped for.
    pub context: KeyContext,
    /// The key that wraps its data key.
    pub key_id: String,
    /// Plaintext bytes (as stored: authenticated only when the last segment opens).
    pub size: u64,
    /// How many segments it has.
    pub segments: u64,
    /// When it was uploaded (its upload finished; while uploading, its last progress).
    pub created_at: Timestamp,
    /// Who uploaded it.
    pub created_by: Actor,
}

/// A blob about to be uploaded: its row while the segments arrive.
#[derive(Debug, Clone)]
pub struct NewBlob {
    /// From [`new_blob_id`](crate::new_blob_id).
    pub id: String,
    /// Its environment.
    pub environment: String,
    /// Its name.
    pub name: String,
    /// Its key context.
    pub context: KeyContext,
    /// The streamed envelope's head (suite 4).
    pub head: Vec<u8>,
    /// The key that wraps its data key.
    pub key_id: String,
}

/// A live blob's metadata and head.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    /// Its metadata.
    pub meta: BlobMeta,
    /// The streamed envelope's head.
    pub head: Vec<u8>,
}

/// What one step of [`BlobStore::purge_blobs`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobPurge {
    /// Blobs removed for good (their last segments gone).
    pub blobs: u64,
    /// Segments removed.
    pub segments: u64,
}

impl BlobPurge {
    /// Whether the step removed nothing (the purge is done).
    pub fn is_empty(&self) -> bool {
        self.blobs == 0 && self.segments == 0
    }
}

/// A blob's head for maintenance (rewrap), in whatever state.
#[derive(Debug, Clone)]
pub struct BlobHead {
    /// The blob id.
    pub id: String,
    /// Its environment.
    pub environment: String,
    /// Its key context.
    pub context: KeyContext,
    /// The head.
    pub head: Vec<u8>,
}

/// Storage of blobs, partitioned by environment as objects are.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Starts an upload: the blob's row, `uploading` (invisible to reads) until
    /// [`commit_blob`](Self::commit_blob).
    ///
    /// # Errors
    /// `InvalidArgument`; `Conflict` if the id exists.
    async fn begin_blob(&self, blob: &NewBlob, actor: &Actor) -> Result<(), StoreError>;

    /// Stores `segments` as segments `first`, `first + 1`, … of an upload in progress, in one
    /// transaction.
    ///
    /// # Errors
    /// `NotFound` if no upload of that id is in progress; `Conflict` if one of them is stored.
    async fn put_segments(
        &self,
        blob_id: &str,
        first: u64,
        segments: Vec<Vec<u8>>,
    ) -> Result<(), StoreError>;

    /// Makes an upload the live blob of its name, holding `size` plaintext bytes in `segments`
    /// segments (all of which must be stored), in one transaction with its
    /// `vault.blob.created` event: the blob that had the name before is deleted by it.
    ///
    /// # Errors
    /// `NotFound` if no upload of that id is in progress; `InvalidArgument` if its stored
    /// segments are not exactly `0..segments`.
    async fn commit_blob(
        &self,
        blob_id: &str,
        size: u64,
        segments: u64,
        actor: &Actor,
    ) -> Result<BlobMeta, StoreError>;

    /// Gives up an upload in progress: it is never committed, and its segments go in the
    /// purge's batches ([`purge_blobs`](Self::purge_blobs)). Nothing if there is none.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn abort_blob(&self, blob_id: &str) -> Result<(), StoreError>;

    /// The live blob with this name and its head, audited as a read (`vault.blob.read`).
    ///
    /// # Errors
    /// `NotFound`.
    async fn blob(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<StoredBlob, StoreError>;

    /// Segments `from..to` of a blob, in order, each with its index; a missing one, or one
    /// longer than `max_len` bytes (no such segment is genuine), is absent: the caller checks.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn segments(
        &self,
        blob_id: &str,
        from: u64,
        to: u64,
        max_len: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// Whether blob `blob_id` is gone or being purged (its segments may be missing for that
    /// reason alone). Not audited: a reader asks it about a blob it was reading.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn blob_purged(&self, blob_id: &str) -> Result<bool, StoreError>;

    /// The live blob with this name, its metadata only (audited as a metadata read).
    ///
    /// # Errors
    /// `NotFound`.
    async fn describe_blob(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<BlobMeta, StoreError>;

    /// Live blobs by name, after `after`, at most `limit` (1 to 100); audited as a listing.
    ///
    /// # Errors
    /// `InvalidQuery` for a limit outside 1 to 100.
    async fn list_blobs(
        &self,
        environment: &str,
        after: Option<&str>,
        limit: u32,
        actor: &Actor,
    ) -> Result<Vec<BlobMeta>, StoreError>;

    /// Deletes the live blob with this name: unavailable at once, its name free; purged later.
    ///
    /// # Errors
    /// `NotFound`.
    async fn delete_blob(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<BlobMeta, StoreError>;

    /// One step of the purge, in one transaction: blobs deleted before `deleted_before`
    /// (none with `None`) and uploads begun before `abandoned_before` and never committed are
    /// marked for purging (each deleted blob with a `vault.blob.purged` event by `actor`), then
    /// one blob marked so loses at most `segments` of its segments, and its row once none is
    /// left. With `only`, the step concerns that blob alone (marked if it qualifies, then its
    /// segments). Call
    /// it until it does nothing ([`BlobPurge::is_empty`]). Safe from several processes at once.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn purge_blobs(
        &self,
        deleted_before: Option<Timestamp>,
        abandoned_before: Timestamp,
        segments: u32,
        only: Option<&str>,
        actor: &Actor,
    ) -> Result<BlobPurge, StoreError>;

    /// A batch of blob heads in every state, by id after `after`: for rewrapping.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn scan_blob_heads(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<BlobHead>, StoreError>;

    /// Replaces a blob's head, only if it is still `expected`, recording a
    /// `vault.data.rewrapped` event for a live one. Returns whether it was replaced.
    ///
    /// # Errors
    /// `Unavailable`.
    async fn replace_blob_head(
        &self,
        blob_id: &str,
        expected: &[u8],
        new: &[u8],
        key_id: &str,
        actor: &Actor,
    ) -> Result<bool, StoreError>;
}
