//! An upload: plaintext sealed into segments, stored a batch at a time, committed at the end.

use std::io::Write as _;

use vault_crypto::stream;
use vault_store::{Actor, BlobMeta};

use crate::{Vault, VaultError};

use super::BLOB_BATCH_BYTES;

/// Cuts the sealed bytes a [`stream::SealWriter`] writes into its segments.
pub(super) struct Segmenter {
    sealed_len: usize,
    current: Vec<u8>,
    ready: Vec<Vec<u8>>,
    ready_bytes: usize,
}

impl Segmenter {
    pub(super) fn new(segment_size: u32) -> Self {
        let sealed_len = segment_size as usize + 16;
        Self {
            sealed_len,
            current: Vec::with_capacity(sealed_len),
            ready: Vec::new(),
            ready_bytes: 0,
        }
    }

    /// The segment begun last, complete: the stream ended.
    fn end(&mut self) {
        if !self.current.is_empty() {
            let last = std::mem::take(&mut self.current);
            self.ready_bytes += last.len();
            self.ready.push(last);
        }
    }
}

impl std::io::Write for Segmenter {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = self.sealed_len - self.current.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.current.extend_from_slice(now);
            data = rest;
            if self.current.len() == self.sealed_len {
                let full =
                    std::mem::replace(&mut self.current, Vec::with_capacity(self.sealed_len));
                self.ready_bytes += full.len();
                self.ready.push(full);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The crypto error a sealing writer reports, or one that says sealing failed.
fn sealing_error(e: &std::io::Error) -> VaultError {
    match stream::error_of(e) {
        Some(vault_crypto::Error::PlaintextTooLarge { max }) => {
            vault_crypto::Error::PlaintextTooLarge { max: *max }.into()
        }
        _ => vault_crypto::Error::EncryptionFailed.into(),
    }
}

/// A blob upload begun by [`Vault::begin_blob`]: give it the value with
/// [`write`](Self::write), then [`finish`](Self::finish) it. Until then nothing is visible. An
/// upload that fails, is [`abort`](Self::abort)ed or is dropped unfinished (a request cancelled)
/// is given up: never committed, and its segments removed in the purge's batches (by a task of
/// its own when dropped; at the latest by the purge a day after it began).
pub struct BlobUpload {
    vault: Vault,
    id: String,
    actor: Actor,
    /// `None` once finished or given up.
    writer: Option<stream::SealWriter<Segmenter>>,
    /// The index the next stored segment gets.
    next: u64,
    /// Whether dropping it gives it up: until its commit answered, or it was given up.
    armed: bool,
}

impl std::fmt::Debug for BlobUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobUpload")
            .field("id", &self.id)
            .field("plaintext_len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Drop for BlobUpload {
    fn drop(&mut self) {
        // Dropped before its commit answered (a request cancelled, `finish` among them): given
        // up. Harmless if it did commit meanwhile: only an upload still uploading is given up.
        if std::mem::take(&mut self.armed) {
            spawn_removal(&self.vault, &self.id, &self.actor, true);
        }
    }
}

impl BlobUpload {
    pub(super) fn new(
        vault: Vault,
        id: String,
        actor: Actor,
        writer: stream::SealWriter<Segmenter>,
    ) -> Self {
        Self {
            vault,
            id,
            actor,
            writer: Some(writer),
            next: 0,
            armed: true,
        }
    }

    /// The blob's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Plaintext bytes taken so far.
    pub fn len(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, stream::SealWriter::plaintext_len)
    }

    /// Whether nothing was taken yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seals `data` as the value's next bytes; every [`BLOB_BATCH_BYTES`] of sealed segments
    /// are stored in a transaction.
    ///
    /// # Errors
    /// `Crypto` past the most a stream holds; `Store` if a batch is not stored. The upload is
    /// not usable after an error: [`abort`](Self::abort) it.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), VaultError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or(vault_crypto::Error::EncryptionFailed)?;
        writer.write_all(data).map_err(|e| sealing_error(&e))?;
        writer.flush().map_err(|e| sealing_error(&e))?;
        if writer.get_ref().ready_bytes >= BLOB_BATCH_BYTES {
            store_ready(&self.vault, &self.id, &mut self.next, writer.get_mut()).await?;
        }
        Ok(())
    }

    /// Seals the last segment, stores what is left and makes the blob the live one of its
    /// name (the one it replaces is deleted in the same transaction, and purged later).
    ///
    /// # Errors
    /// As [`write`](Self::write); `Store` if the commit fails. Nothing is live then, and the
    /// upload is given up.
    pub async fn finish(mut self) -> Result<BlobMeta, VaultError> {
        let writer = self
            .writer
            .take()
            .ok_or(vault_crypto::Error::EncryptionFailed)?;
        let size = writer.plaintext_len();
        let done = async {
            let mut segmenter = writer.finish().map_err(|e| sealing_error(&e))?;
            segmenter.end();
            store_ready(&self.vault, &self.id, &mut self.next, &mut segmenter).await?;
            Ok(self
                .vault
                .store
                .commit_blob(&self.id, size, self.next, &self.actor)
                .await?)
        };
        let result = done.await;
        self.armed = false;
        if result.is_err() {
            spawn_removal(&self.vault, &self.id, &self.actor, true);
        }
        result
    }

    /// Gives the upload up: it never commits, and a task of its own removes what it stored
    /// (nobody waits for that).
    ///
    /// # Errors
    /// `Store(Unavailable)` (dropped, it is given up later; at the latest the purge removes it
    /// a day after its last progress).
    pub async fn abort(mut self) -> Result<(), VaultError> {
        self.armed = false;
        self.vault.store.abort_blob(&self.id).await?;
        spawn_removal(&self.vault, &self.id, &self.actor, false);
        Ok(())
    }
}

/// Removes upload `id`'s segments by a task of its own, one purge step of this process at a
/// time, giving it up first if `mark` (where there is no runtime, the purge removes it later).
fn spawn_removal(vault: &Vault, id: &str, actor: &Actor, mark: bool) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (vault, id, actor) = (vault.clone(), id.to_owned(), actor.clone());
    runtime.spawn(async move {
        let removed = async {
            if mark {
                vault.store.abort_blob(&id).await?;
            }
            // Cutoffs that take nothing new, and this upload only.
            vault
                .purge_blob_steps(None, vault_store::Timestamp(i64::MIN), Some(&id), &actor)
                .await
        };
        if let Err(e) = removed.await {
            tracing::warn!(target: "vault::blobs", blob = %id, error = %e, "an upload given up was not removed; the purge will");
        }
    });
}

/// Stores the segments `segmenter` holds ready as the next ones of upload `id`.
async fn store_ready(
    vault: &Vault,
    id: &str,
    next: &mut u64,
    segmenter: &mut Segmenter,
) -> Result<(), VaultError> {
    let batch = std::mem::take(&mut segmenter.ready);
    segmenter.ready_bytes = 0;
    if batch.is_empty() {
        return Ok(());
    }
    let n = batch.len() as u64;
    vault.store.put_segments(id, *next, batch).await?;
    *next += n;
    Ok(())
}
