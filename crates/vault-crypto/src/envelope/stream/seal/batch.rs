//! Whole segments in batches, for the writers that seal on more than one thread: each
//! segment's plaintext at a fixed stride with room for its tag after it, so a batch is sealed
//! in place and written out as one slice.

use std::io::{self, Read};

use zeroize::Zeroizing;

use super::read_retrying;
use crate::aead::TAG_LEN;
use crate::envelope::segment::Segments;
use crate::error::Error;

/// The plaintext handed between threads at a time: 16 segments at the default size, few
/// enough hand-offs to cost nothing, small enough to stay in cache between two threads.
pub(super) const BATCH_BYTES: usize = 1 << 20;

/// Whole segments laid out as they are sealed: each segment's plaintext, then room for its tag.
pub(super) struct Batch {
    pub(super) buf: Zeroizing<Vec<u8>>,
    /// The first segment's index.
    pub(super) first: u32,
    /// Segments in it; each is full except perhaps the final one, at the source's end.
    pub(super) count: usize,
    /// The final segment's plaintext length.
    pub(super) last_len: usize,
}

impl Batch {
    pub(super) fn new(capacity: usize, stride: usize) -> Self {
        Self {
            buf: Zeroizing::new(vec![0; capacity.saturating_mul(stride)]),
            first: 0,
            count: 0,
            last_len: 0,
        }
    }
}

/// A batch's geometry at the writer's segment size.
pub(super) struct Shape {
    pub(super) size: usize,
    pub(super) stride: usize,
    pub(super) capacity: usize,
}

impl Shape {
    pub(super) fn of(segments: &Segments) -> Self {
        let size = segments.size();
        Self {
            size,
            stride: size.saturating_add(TAG_LEN),
            capacity: (BATCH_BYTES / size.max(1)).max(1),
        }
    }

    pub(super) fn slot<'b>(&self, batch: &'b mut Batch, k: usize) -> &'b mut [u8] {
        let at = k.saturating_mul(self.stride);
        batch
            .buf
            .get_mut(at..at.saturating_add(self.stride))
            .unwrap_or_default()
    }

    /// Reads segments into `batch` from its `count`th on (whose first `from` bytes are there),
    /// each until full, until the batch is full or `r` ends. True at the end of `r`.
    pub(super) fn fill(
        &self,
        batch: &mut Batch,
        mut from: usize,
        r: &mut (impl Read + ?Sized),
        taken: &mut u64,
    ) -> io::Result<bool> {
        loop {
            if from == self.size {
                batch.count = batch.count.saturating_add(1);
                batch.last_len = from;
                if batch.count >= self.capacity {
                    return Ok(false);
                }
                from = 0;
            }
            let slot = self.slot(batch, batch.count);
            let n = read_retrying(r, slot.get_mut(from..self.size).unwrap_or_default())?;
            *taken = taken.saturating_add(n as u64);
            if n == 0 {
                if from > 0 {
                    batch.count = batch.count.saturating_add(1);
                    batch.last_len = from;
                }
                return Ok(true);
            }
            from = from.saturating_add(n);
        }
    }

    /// Seals the batch's first `count` segments as not the last, each tag after its segment.
    pub(super) fn seal(
        &self,
        segments: &Segments,
        batch: &mut Batch,
        count: usize,
    ) -> Result<(), Error> {
        for k in 0..count {
            let index = batch
                .first
                .checked_add(u32::try_from(k).map_err(|_| Error::EncryptionFailed)?)
                .ok_or(Error::EncryptionFailed)?;
            let slot = self.slot(batch, k);
            let (plain, tag) = slot.split_at_mut(self.size);
            tag.copy_from_slice(&segments.seal_slice(index, false, plain)?);
        }
        Ok(())
    }

    pub(super) fn sealed<'b>(&self, batch: &'b Batch, count: usize) -> &'b [u8] {
        batch
            .buf
            .get(..count.saturating_mul(self.stride))
            .unwrap_or_default()
    }
}
