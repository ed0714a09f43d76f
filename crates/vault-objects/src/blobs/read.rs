//! A download: segments read a batch at a time, each opened in its place.

use vault_crypto::stream::SegmentOpener;
use vault_store::BlobMeta;
use zeroize::Zeroizing;

use crate::{Vault, VaultError};

use super::BLOB_BATCH_BYTES;

/// A blob's value, or a range of it, read a batch of segments at a time: made by
/// [`Vault::open_blob`], which authenticated the length (the last segment opened in its
/// place) before anything is returned.
pub struct BlobReader {
    pub(super) vault: Vault,
    pub(super) meta: BlobMeta,
    pub(super) opener: SegmentOpener,
    /// The plaintext span asked for, `start..end`.
    pub(super) start: u64,
    pub(super) end: u64,
    /// The next plaintext byte to return.
    pub(super) pos: u64,
    /// The last segment's plaintext, opened to authenticate the length.
    pub(super) last: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("meta", &self.meta)
            .field("span", &(self.start..self.end))
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl BlobReader {
    /// The blob's metadata (its size authenticated).
    pub fn meta(&self) -> &BlobMeta {
        &self.meta
    }

    /// The plaintext span returned: `start..end`.
    pub fn span(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// The next plaintext bytes of the span (up to about [`BLOB_BATCH_BYTES`]), each segment
    /// authenticated in its place before any of its bytes are returned; `None` at the end.
    ///
    /// # Errors
    /// `Crypto(DecryptionFailed)` for a segment changed, moved or replaced in the store;
    /// `Tampered` for a missing one; `Store`.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, VaultError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let size = self.opener.segment_size();
        let last_index = self.opener.count() - 1;
        let (first, _) = self.opener.segment_of(self.pos);
        let (final_needed, _) = self.opener.segment_of(self.end - 1);
        let per_batch = (BLOB_BATCH_BYTES as u64 / (size + 16)).max(1);
        let to = (first + per_batch).min(final_needed + 1);
        // The last segment was read and opened already.
        let rows = if first == last_index {
            Vec::new()
        } else {
            self.vault
                .store
                .segments(
                    &self.meta.id,
                    first,
                    to.min(last_index),
                    super::SEALED_SEGMENT_LEN,
                )
                .await?
        };
        let mut out = Vec::with_capacity(
            usize::try_from((to - first).saturating_mul(size).min(self.end - self.pos))
                .unwrap_or(0),
        );
        let mut expected = first;
        for (index, bytes) in rows {
            if index != expected {
                break;
            }
            let mut buf = Zeroizing::new(bytes);
            self.opener.open(index, &mut buf)?;
            self.take(index, &buf, &mut out);
            expected += 1;
        }
        if expected == last_index && to == last_index + 1 {
            let last = std::mem::take(&mut self.last);
            self.take(last_index, &last, &mut out);
            self.last = last;
            expected += 1;
        }
        if expected != to {
            return Err(self.vault.missing_segment(&self.meta.id, expected).await);
        }
        self.pos = to.saturating_mul(size).min(self.end);
        Ok(Some(out))
    }

    /// Appends what the span holds of segment `index`'s plaintext to `out`.
    fn take(&self, index: u64, plaintext: &[u8], out: &mut Vec<u8>) {
        let seg_start = index * self.opener.segment_size();
        let from = self.pos.max(seg_start) - seg_start;
        let to = (self.end - seg_start).min(plaintext.len() as u64);
        // Both are within one segment's plaintext (at most 16 MiB).
        let (from, to) = (
            usize::try_from(from).unwrap_or(usize::MAX),
            usize::try_from(to).unwrap_or(usize::MAX),
        );
        if let Some(bytes) = plaintext.get(from..to) {
            out.extend_from_slice(bytes);
        }
    }
}
