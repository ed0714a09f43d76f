//! Suite 4's segments (FORMAT.md, "Suite 0x0004: segments"): the STREAM construction of
//! Hoang, Reyhanitabar, Rogaway and Vizár ("Online Authenticated-Encryption and its
//! Nonce-Reuse Misuse-Resistance", CRYPTO 2015), as Tink's streaming AEAD and age use it.
//!
//! ```text
//! segment_i = AES-256-GCM(content_key, prefix [7] || be32(i) || last [1], header || aad, chunk_i)
//! ```
//!
//! Every chunk holds exactly `size` plaintext bytes but the last, which holds 1 to `size`
//! (0 only when it is the only one: the empty value). The counter puts each segment in its
//! place (no reordering, no swap between places), the flag marks the end (no truncation at a
//! boundary, no extension), and the header in every segment's associated data holds the
//! message id behind the content key (no swap between messages, whatever their keys).
//!
//! This file is the sans-I/O core: one segment sealed or opened in a caller's buffer, and the
//! layout of a payload of known length. The readers and writers of [`crate::stream`] and the
//! whole-value [`open`](crate::open) are built on it.

// Arithmetic on lengths read from outside: checked, never wrapping.
#![warn(clippy::arithmetic_side_effects)]

use zeroize::Zeroizing;

use crate::aead::{AeadKey, Backend, NONCE_LEN, TAG_LEN};
use crate::envelope::commit::MessageKeys;
use crate::error::{EnvelopeError, Error};

/// The message-unique part of every segment's nonce.
pub(crate) const NONCE_PREFIX_LEN: usize = 7;
/// The smallest segment size a header may give (bytes of plaintext).
pub const MIN_SEGMENT_SIZE: u32 = 256;
/// The largest segment size a header may give (16 MiB): what an opener holds in memory.
pub const MAX_SEGMENT_SIZE: u32 = 1 << 24;
/// The segment size written unless one is asked for (64 KiB).
pub const DEFAULT_SEGMENT_SIZE: u32 = 1 << 16;
/// The most segments one message may have: the counter is 32 bits, and a writer refuses to go
/// past its last value rather than wrap (Tink's streaming AEAD before 1.4 wrapped).
pub const MAX_SEGMENTS: u64 = 1 << 32;

/// Where the segments of a payload of known length lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    size: u64,
    count: u64,
    /// Plaintext bytes of the last segment.
    last_len: u64,
}

impl Layout {
    /// The layout of `payload_len` bytes of segments of `size` plaintext bytes, if they can be
    /// one: whole segments, the last one non-empty unless it is the only one, at most
    /// [`MAX_SEGMENTS`].
    pub(crate) fn of(size: u32, payload_len: u64) -> Result<Self, EnvelopeError> {
        let size = u64::from(size);
        let sealed = size.saturating_add(TAG_LEN as u64);
        // `sealed` is at least the tag's 16 bytes: neither divides by zero.
        let full = payload_len.checked_div(sealed).unwrap_or(0);
        let rest = payload_len.checked_rem(sealed).unwrap_or(0);
        let (count, last_len) = match rest {
            0 if full == 0 => return Err(EnvelopeError::Truncated),
            0 => (full, size),
            r if r < TAG_LEN as u64 => return Err(EnvelopeError::Truncated),
            // An empty last segment after full ones: the writer never makes one.
            r if r == TAG_LEN as u64 && full > 0 => {
                return Err(EnvelopeError::Malformed {
                    reason: "an empty segment after full ones",
                });
            }
            r => (full.saturating_add(1), r.saturating_sub(TAG_LEN as u64)),
        };
        if count > MAX_SEGMENTS {
            return Err(EnvelopeError::TooLarge {
                what: "segment count",
                max: usize::try_from(MAX_SEGMENTS).unwrap_or(usize::MAX),
            });
        }
        Ok(Self {
            size,
            count,
            last_len,
        })
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn plaintext_len(&self) -> u64 {
        // count <= 2^32 and size <= 2^24: no overflow.
        self.count
            .saturating_sub(1)
            .saturating_mul(self.size)
            .saturating_add(self.last_len)
    }

    /// Where segment `i` (< count) starts in the payload, and its sealed length.
    pub(crate) fn span(&self, i: u64) -> (u64, u64) {
        let sealed = self.size.saturating_add(TAG_LEN as u64);
        let len = if i.saturating_add(1) == self.count {
            self.last_len.saturating_add(TAG_LEN as u64)
        } else {
            sealed
        };
        (i.saturating_mul(sealed), len)
    }
}

/// One message's segment key: everything sealing or opening a segment needs.
pub(crate) struct Segments {
    key: AeadKey,
    prefix: [u8; NONCE_PREFIX_LEN],
    /// The header, then the caller's associated data.
    aad: Vec<u8>,
    size: usize,
}

impl Segments {
    pub(crate) fn new(
        backend: Backend,
        keys: &MessageKeys,
        prefix: [u8; NONCE_PREFIX_LEN],
        header: &[u8],
        aad: &[u8],
        size: u32,
    ) -> Result<Self, Error> {
        let key = backend
            .key(&keys.content_key)
            .map_err(|_| Error::EncryptionFailed)?;
        let mut joined = Vec::with_capacity(header.len().saturating_add(aad.len()));
        joined.extend_from_slice(header);
        joined.extend_from_slice(aad);
        Ok(Self {
            key,
            prefix,
            aad: joined,
            size: usize::try_from(size).unwrap_or(usize::MAX),
        })
    }

    /// Plaintext bytes per segment.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn nonce(&self, index: u32, last: bool) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        let (prefix, rest) = nonce.split_at_mut(NONCE_PREFIX_LEN);
        prefix.copy_from_slice(&self.prefix);
        let (counter, flag) = rest.split_at_mut(4);
        counter.copy_from_slice(&index.to_be_bytes());
        flag.fill(u8::from(last));
        nonce
    }

    /// Seals the plaintext chunk in `buf` as segment `index`, appending its tag.
    #[cfg(test)]
    pub(crate) fn seal(&self, index: u32, last: bool, buf: &mut Vec<u8>) -> Result<(), Error> {
        let tag = self.seal_slice(index, last, buf)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Seals the plaintext chunk `chunk` in place as segment `index`; its tag is returned.
    pub(crate) fn seal_slice(
        &self,
        index: u32,
        last: bool,
        chunk: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error> {
        self.key
            .seal_in_place(&self.nonce(index, last), &self.aad, chunk)
            .map_err(|_| Error::EncryptionFailed)
    }

    /// Opens segment `index` in `buf` (ciphertext and tag), leaving its plaintext there. On
    /// failure `buf` is emptied (and what was decrypted zeroed): no unauthenticated byte is
    /// ever released.
    pub(crate) fn open(&self, index: u32, last: bool, buf: &mut Vec<u8>) -> Result<(), Error> {
        let result = self.open_slice(index, last, buf);
        match result {
            Ok(len) => buf.truncate(len),
            Err(_) => buf.clear(),
        }
        result.map(|_| ())
    }

    /// Opens the sealed segment `sealed` in place; its plaintext is the first returned bytes.
    pub(crate) fn open_slice(
        &self,
        index: u32,
        last: bool,
        sealed: &mut [u8],
    ) -> Result<usize, Error> {
        let len = sealed
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(Error::DecryptionFailed)?;
        if len > self.size || (len == 0 && (index != 0 || !last)) {
            return Err(Error::DecryptionFailed);
        }
        let (chunk, tag) = sealed.split_at_mut(len);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::DecryptionFailed)?;
        self.key
            .open_in_place(&self.nonce(index, last), &self.aad, chunk, tag)
            .map_err(|_| Error::DecryptionFailed)?;
        Ok(len)
    }
}

/// Opens every segment of an in-memory payload (the whole-value [`open`](crate::open) of a
/// streamed envelope): the plaintext, or [`Error::DecryptionFailed`].
pub(crate) fn open_all(segments: &Segments, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let layout = Layout::of(
        u32::try_from(segments.size()).unwrap_or(u32::MAX),
        payload.len() as u64,
    )?;
    let capacity = usize::try_from(layout.plaintext_len()).map_err(|_| Error::DecryptionFailed)?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(capacity));
    // The segment size is the header's: no more scratch than the payload needs.
    let mut scratch = Zeroizing::new(Vec::with_capacity(
        segments.size().saturating_add(TAG_LEN).min(payload.len()),
    ));
    for i in 0..layout.count() {
        let (start, len) = layout.span(i);
        let sealed = usize::try_from(start)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(s, l)| payload.get(s..s.checked_add(l)?))
            .ok_or(Error::DecryptionFailed)?;
        scratch.clear();
        scratch.extend_from_slice(sealed);
        let index = u32::try_from(i).map_err(|_| Error::DecryptionFailed)?;
        segments.open(index, i.saturating_add(1) == layout.count(), &mut scratch)?;
        plaintext.extend_from_slice(&scratch);
    }
    Ok(std::mem::take(&mut *plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_of_whole_segments_only() {
        let l = |n| Layout::of(256, n);
        assert_eq!(l(0), Err(EnvelopeError::Truncated));
        assert_eq!(l(15), Err(EnvelopeError::Truncated));
        // The empty value: one empty last segment.
        assert_eq!(l(16).map(|l| (l.count(), l.plaintext_len())), Ok((1, 0)));
        assert_eq!(l(17).map(|l| (l.count(), l.plaintext_len())), Ok((1, 1)));
        assert_eq!(l(272).map(|l| (l.count(), l.plaintext_len())), Ok((1, 256)));
        assert!(matches!(l(272 + 16), Err(EnvelopeError::Malformed { .. })));
        assert_eq!(l(272 + 8), Err(EnvelopeError::Truncated));
        assert_eq!(
            l(272 + 17).map(|l| (l.count(), l.plaintext_len())),
            Ok((2, 257))
        );
        assert_eq!(l(272 + 17).map(|l| l.span(1)), Ok((272, 17)));
        assert_eq!(l(3 * 272).map(|l| l.span(2)), Ok((544, 272)));
    }

    #[test]
    fn more_segments_than_the_counter_holds_are_refused() {
        let sealed = u64::from(MIN_SEGMENT_SIZE) + TAG_LEN as u64;
        assert!(Layout::of(MIN_SEGMENT_SIZE, MAX_SEGMENTS * sealed).is_ok());
        assert!(matches!(
            Layout::of(MIN_SEGMENT_SIZE, MAX_SEGMENTS * sealed + 17),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }
}
