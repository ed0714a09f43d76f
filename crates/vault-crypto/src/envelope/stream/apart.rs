//! Segments kept apart, one by one: the sans-I/O face of a stream for a store that keeps each
//! segment as its own record (a database row) rather than as one byte stream. The sealer side
//! needs nothing new (a [`SealWriter`](super::SealWriter) from
//! [`StreamSealer::segments_writer`](super::StreamSealer::segments_writer) writes whole
//! segments, each [`SegmentOpener::sealed_len`] long); this is the opener side.

use crate::aead::TAG_LEN;
use crate::envelope::segment::{Layout, Segments};
use crate::error::{EnvelopeError, Error};
use crate::provider::KeyRef;

/// Opens the segments of a stream of known plaintext length one at a time, in any order: for
/// ranged reads from a store that keeps segments apart. Made by
/// [`StreamOpener::segments`](super::StreamOpener::segments).
///
/// The length is taken from the caller, who may have it from untrusted storage: it is
/// authenticated only once the last segment (`count() - 1`) opened, since only a segment sealed
/// as the last opens there. Open it first, as a ranged reader must, before trusting any answer
/// about the end.
pub struct SegmentOpener {
    segments: Segments,
    layout: Layout,
    key_ref: KeyRef,
}

impl SegmentOpener {
    pub(super) fn new(
        segments: Segments,
        plaintext_len: u64,
        key_ref: KeyRef,
    ) -> Result<Self, Error> {
        let size = segments.size() as u64;
        // One segment per `size` bytes, the last one partial; the empty value is one empty one.
        let count = plaintext_len.div_ceil(size.max(1)).max(1);
        let payload = count
            .checked_mul(TAG_LEN as u64)
            .and_then(|tags| tags.checked_add(plaintext_len))
            .ok_or(EnvelopeError::TooLarge {
                what: "segment count",
                max: usize::MAX,
            })?;
        let layout = Layout::of(u32::try_from(size).unwrap_or(u32::MAX), payload)?;
        Ok(Self {
            segments,
            layout,
            key_ref,
        })
    }

    /// How many segments the stream has.
    pub fn count(&self) -> u64 {
        self.layout.count()
    }

    /// The plaintext length it was made for.
    pub fn plaintext_len(&self) -> u64 {
        self.layout.plaintext_len()
    }

    /// Plaintext bytes per segment (the last may hold fewer).
    pub fn segment_size(&self) -> u64 {
        self.segments.size() as u64
    }

    /// The segment holding plaintext byte `offset` (for `offset` < [`plaintext_len`](
    /// Self::plaintext_len)), and where that segment's plaintext starts.
    pub fn segment_of(&self, offset: u64) -> (u64, u64) {
        let size = self.segment_size().max(1);
        let index = (offset / size).min(self.count().saturating_sub(1));
        (index, index.saturating_mul(size))
    }

    /// The sealed length of segment `index`: what a stored segment must measure.
    pub fn sealed_len(&self, index: u64) -> Option<u64> {
        (index < self.count()).then(|| self.layout.span(index).1)
    }

    /// The key that unwrapped the data key.
    pub fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    /// Opens segment `index` in `buf` (its sealed bytes), leaving its plaintext there. On
    /// failure `buf` is emptied: no unauthenticated byte is released.
    ///
    /// # Errors
    /// [`Error::DecryptionFailed`] for a segment that is not this stream's segment `index`
    /// (another place, another stream, changed, cut, not [`sealed_len`](Self::sealed_len)
    /// long, or the last where it is not the last).
    pub fn open(&self, index: u64, buf: &mut Vec<u8>) -> Result<(), Error> {
        let Ok(at) = u32::try_from(index) else {
            buf.clear();
            return Err(Error::DecryptionFailed);
        };
        // A segment of another length is refused even where it would open (a last segment
        // opens at any length): the length answered must be the one authenticated.
        if self.sealed_len(index) != Some(buf.len() as u64) {
            buf.clear();
            return Err(Error::DecryptionFailed);
        }
        let last = index.saturating_add(1) == self.count();
        self.segments.open(at, last, buf)
    }
}

impl std::fmt::Debug for SegmentOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentOpener")
            .field("count", &self.count())
            .field("plaintext_len", &self.plaintext_len())
            .field("key_ref", &self.key_ref)
            .finish_non_exhaustive()
    }
}
