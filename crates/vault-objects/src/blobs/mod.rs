//! Blobs: values of any size, sealed as streamed envelopes (suite 4) a segment at a time and
//! kept as the store's segment rows, so neither an upload nor a download holds more than a
//! batch of segments in memory, and a ranged read opens only the segments it returns (and the
//! last one, which authenticates the length). Our extension beside the WorkOS API.
//!
//! Every blob is sealed with associated data naming its environment, id and name: a head or a
//! segment moved to another blob, or a blob renamed, inside the database does not open. Its
//! head must carry the context of its row; its stored length and segment count are checked
//! against the last segment, which opens only where the sealer put it.

mod read;
mod upload;

use vault_crypto::stream::{self, StreamHead};
use vault_crypto::{Aad, KeyContext};
use vault_store::{Actor, BlobMeta, NewBlob};
use zeroize::Zeroizing;

pub use read::BlobReader;
pub use upload::BlobUpload;
use upload::Segmenter;

use crate::keys::{RewrapReport, RewrapScope};
use crate::{Vault, VaultError, validate_environment};

/// The segment size blobs are sealed with (64 KiB).
pub const BLOB_SEGMENT_SIZE: u32 = stream::DEFAULT_SEGMENT_SIZE;

/// The longest a stored segment of a blob is: a segment and its tag.
pub(crate) const SEALED_SEGMENT_LEN: u64 = BLOB_SEGMENT_SIZE as u64 + 16;

/// About how many sealed bytes an upload stores per transaction, and a download reads per
/// step (1 MiB): what either holds in memory besides one segment.
pub const BLOB_BATCH_BYTES: usize = 1 << 20;

/// Segments removed per transaction of a purge (64 MiB of storage at the blob segment size).
const PURGE_SEGMENTS: u32 = 1024;

/// How long an upload may stay uncommitted before the purge removes it (a day).
pub const ABANDONED_UPLOAD_SECS: i64 = 86_400;

/// The associated data of a blob: its environment, id and name.
fn blob_aad(environment: &str, id: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + environment.len() + id.len() + name.len());
    aad.extend_from_slice(b"vault-blob/v1\0");
    aad.extend_from_slice(environment.as_bytes());
    aad.push(0);
    aad.extend_from_slice(id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// A byte range of a blob, as an HTTP `Range: bytes=` header gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// Bytes `first..=last` (`last` past the end means to the end).
    Bounded {
        /// The first byte.
        first: u64,
        /// The last byte, included.
        last: u64,
    },
    /// From `first` to the end.
    From(u64),
    /// The last `n` bytes.
    Last(u64),
}

impl ByteRange {
    /// The half-open span `start..end` of a blob of `size` bytes this range asks for, if it
    /// asks for at least one byte there (RFC 9110, 14.1.2).
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            Self::Bounded { first, last } if first <= last && first < size => {
                Some((first, last.saturating_add(1).min(size)))
            }
            Self::From(first) if first < size => Some((first, size)),
            Self::Last(n) if n > 0 && size > 0 => Some((size.saturating_sub(n), size)),
            _ => None,
        }
    }
}
impl Vault {
    /// Begins uploading the blob `name`, sealed for `context` (chosen now, fixed for the
    /// blob). Nothing is visible until [`BlobUpload::finish`].
    ///
    /// # Errors
    /// `Store(InvalidArgument)` for a bad environment or name; `Crypto` for a reserved context
    /// or a provider failure.
    pub async fn begin_blob(
        &self,
        environment: &str,
        name: &str,
        context: &KeyContext,
        actor: &Actor,
    ) -> Result<BlobUpload, VaultError> {
        validate_environment(environment)?;
        let name = vault_store::validate_name(name)?;
        context.check_caller().map_err(vault_crypto::Error::from)?;
        let id = vault_store::new_blob_id()?;
        let sealer = stream::seal_in(
            &*self.keys,
            environment,
            context,
            Aad::new(&blob_aad(environment, &id, name)),
            BLOB_SEGMENT_SIZE,
        )
        .await?;
        let blob = NewBlob {
            id: id.clone(),
            environment: environment.to_owned(),
            name: name.to_owned(),
            context: context.clone(),
            head: sealer.head().to_vec(),
            key_id: sealer.key_ref().to_string(),
        };
        self.store.begin_blob(&blob, actor).await?;
        Ok(BlobUpload::new(
            self.clone(),
            id,
            actor.clone(),
            sealer.segments_writer(Segmenter::new(BLOB_SEGMENT_SIZE)),
        ))
    }

    /// Opens the live blob `name` for reading, whole or `range` of it (audited as a read):
    /// its head opened for the blob's own context and place, and its last segment opened,
    /// which authenticates the length the range is resolved against.
    ///
    /// # Errors
    /// `Store(NotFound)`; [`VaultError::RangeNotSatisfiable`]; `Crypto` if the key is
    /// unavailable or the head or last segment does not open; `Tampered` if the stored size
    /// and segment count disagree.
    pub async fn open_blob(
        &self,
        environment: &str,
        name: &str,
        range: Option<ByteRange>,
        actor: &Actor,
    ) -> Result<BlobReader, VaultError> {
        let stored = self.store.blob(environment, name, actor).await?;
        let meta = stored.meta;
        // Read from the store: a reserved context planted there is never opened for, and a
        // head of another segment size than the vault writes is not one of its blobs.
        if meta.context.check_caller().is_err() {
            return Err(crate::integrity::tampered(format!(
                "blob {} (table blobs): a reserved key context",
                meta.id
            )));
        }
        let head = StreamHead::parse(stored.head).map_err(vault_crypto::Error::from)?;
        if head.envelope().segment_size() != Some(BLOB_SEGMENT_SIZE) {
            return Err(crate::integrity::tampered(format!(
                "blob {} (table blobs): a head of another segment size",
                meta.id
            )));
        }
        let opener = head
            .open(
                &*self.keys,
                &meta.context,
                Aad::new(&blob_aad(&meta.environment, &meta.id, &meta.name)),
            )
            .await?
            .segments(meta.size)?;
        if opener.count() != meta.segments {
            return Err(crate::integrity::tampered(format!(
                "blob {} (table blobs): its size and segment count disagree",
                meta.id
            )));
        }
        let last_index = opener.count() - 1;
        let mut last = match self
            .store
            .segments(&meta.id, last_index, last_index + 1, SEALED_SEGMENT_LEN)
            .await?
            .pop()
        {
            Some((index, bytes)) if index == last_index => Zeroizing::new(bytes),
            _ => return Err(self.missing_segment(&meta.id, last_index).await),
        };
        opener.open(last_index, &mut last)?;
        let (start, end) = match range {
            None => (0, meta.size),
            Some(r) => r
                .resolve(meta.size)
                .ok_or(VaultError::RangeNotSatisfiable { size: meta.size })?,
        };
        Ok(BlobReader {
            vault: self.clone(),
            meta,
            opener,
            start,
            end,
            pos: start,
            last,
        })
    }

    /// Why segment `index` of blob `id` was not found: the blob was purged since it was found
    /// (replaced or deleted long enough ago), so it is gone; otherwise the row was removed by
    /// someone else, which is tampering.
    pub(crate) async fn missing_segment(&self, id: &str, index: u64) -> VaultError {
        match self.store.blob_purged(id).await {
            Ok(true) => vault_store::StoreError::NotFound.into(),
            Ok(false) => crate::integrity::tampered(format!(
                "blob {id} (table blob_segments): segment {index} is missing"
            )),
            Err(e) => e.into(),
        }
    }

    /// The live blob `name`'s metadata, without decrypting anything.
    ///
    /// # Errors
    /// `Store(NotFound)`.
    pub async fn describe_blob(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<BlobMeta, VaultError> {
        Ok(self.store.describe_blob(environment, name, actor).await?)
    }

    /// Live blobs by name after `after`, at most `limit` (1 to 100).
    ///
    /// # Errors
    /// `Store(InvalidQuery)` for a bad limit.
    pub async fn list_blobs(
        &self,
        environment: &str,
        after: Option<&str>,
        limit: u32,
        actor: &Actor,
    ) -> Result<Vec<BlobMeta>, VaultError> {
        Ok(self
            .store
            .list_blobs(environment, after, limit, actor)
            .await?)
    }

    /// Deletes the live blob `name` (unavailable at once, purged later).
    ///
    /// # Errors
    /// `Store(NotFound)`.
    pub async fn delete_blob(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<BlobMeta, VaultError> {
        Ok(self.store.delete_blob(environment, name, actor).await?)
    }

    /// Removes for good the blobs deleted more than `days` days ago (each audited as
    /// `vault.blob.purged`; none with `None`), uploads never finished that began more than
    /// [`ABANDONED_UPLOAD_SECS`] ago, and uploads given up, with their segments, a batch of
    /// segments per transaction (so a large blob never holds the store's writer long); how
    /// many blobs.
    ///
    /// # Errors
    /// `Store(InvalidArgument)` for more than [`MAX_RETENTION_DAYS`](crate::MAX_RETENTION_DAYS)
    /// days; `Store(Unavailable)` (what was purged before it stays purged).
    pub async fn purge_blobs(&self, days: Option<u32>, actor: &Actor) -> Result<u64, VaultError> {
        let now = vault_store::Timestamp::now();
        let deleted_before = days
            .map(|days| crate::feed::retention_cutoff(now, days))
            .transpose()?;
        let abandoned = vault_store::Timestamp(now.0 - ABANDONED_UPLOAD_SECS * 1_000_000);
        self.purge_blob_steps(deleted_before, abandoned, None, actor)
            .await
    }

    /// Runs the store's purge steps (only blob `only`'s, if given) until one does nothing, one
    /// step of this process at a time; how many blobs went.
    pub(crate) async fn purge_blob_steps(
        &self,
        deleted_before: Option<vault_store::Timestamp>,
        abandoned_before: vault_store::Timestamp,
        only: Option<&str>,
        actor: &Actor,
    ) -> Result<u64, VaultError> {
        let mut purged = 0;
        loop {
            let step = {
                let _turn = self.purge_gate.acquire().await.map_err(|_| {
                    vault_store::StoreError::Unavailable {
                        reason: "the purge gate is closed".into(),
                    }
                })?;
                self.store
                    .purge_blobs(
                        deleted_before,
                        abandoned_before,
                        PURGE_SEGMENTS,
                        only,
                        actor,
                    )
                    .await?
            };
            if step.is_empty() {
                return Ok(purged);
            }
            purged += step.blobs;
            // Let the writes waiting behind this step go first.
            tokio::task::yield_now().await;
        }
    }

    /// Moves the data key of every blob in `scope` to the key the rules choose now, replacing
    /// only its head (compare-and-set), for [`Vault::rewrap`].
    pub(crate) async fn rewrap_blobs(
        &self,
        scope: &RewrapScope,
        actor: &Actor,
        report: &mut RewrapReport,
    ) -> Result<(), VaultError> {
        let mut after = None;
        loop {
            let batch = self.store.scan_blob_heads(after.clone(), 200).await?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = Some(last.id.clone());
            for blob in &batch {
                report.scanned += 1;
                if !scope.includes(&blob.context) {
                    continue;
                }
                report.matched += 1;
                // A stored head naming a reserved context is left alone, never laundered.
                let head = match StreamHead::parse(blob.head.clone()) {
                    Ok(head) if blob.context.check_caller().is_ok() => head,
                    _ => {
                        report.unreadable += 1;
                        continue;
                    }
                };
                let rewrapped = head.rewrap(&*self.keys, &blob.context).await;
                let Some(moved) = report.count(rewrapped)? else {
                    continue;
                };
                let key_id = moved.key_ref().to_string();
                if self
                    .store
                    .replace_blob_head(&blob.id, &blob.head, moved.bytes(), &key_id, actor)
                    .await?
                {
                    report.rewrapped += 1;
                } else {
                    report.changed_meanwhile += 1;
                }
            }
        }
    }
}
