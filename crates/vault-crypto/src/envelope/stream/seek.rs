//! Random access to a streamed envelope's plaintext: [`SeekableReader`] (`Read + Seek` over a
//! `Read + Seek` envelope) opens only the segments a read touches.

use std::io::{self, Read, Seek, SeekFrom};

use zeroize::Zeroizing;

use super::io_error;
use crate::aead::TAG_LEN;
use crate::envelope::segment::{Layout, Segments};
use crate::error::Error;

/// The plaintext of a streamed envelope as a `Read + Seek`: a read opens the segments under it
/// (one is kept), so reading bytes `[a, b)` reads from storage the head, the last segment
/// (once, when made) and the segments holding `[a, b)`. Made by
/// [`StreamOpener::seekable`](super::StreamOpener::seekable).
///
/// Its length is authenticated when it is made: the input's length gives the segment count,
/// and the last segment must open as the last. So a stream cut at any boundary, or extended,
/// is refused before a byte is read, and every byte a read returns comes from a segment whose
/// tag verified in its place.
pub struct SeekableReader<R: Read + Seek> {
    segments: Segments,
    inner: R,
    /// Where the first segment starts in `inner`.
    body_start: u64,
    layout: Layout,
    /// The plaintext position.
    pos: u64,
    /// The opened segment (`cached`'s index) and its plaintext.
    cached: Option<u64>,
    plain: Zeroizing<Vec<u8>>,
    /// Bytes read from `inner` since it was made.
    read_from_storage: u64,
}

impl<R: Read + Seek> SeekableReader<R> {
    pub(super) fn new(segments: Segments, mut inner: R, body_start: u64) -> io::Result<Self> {
        let end = inner.seek(SeekFrom::End(0))?;
        let payload = end
            .checked_sub(body_start)
            .ok_or_else(|| io_error(crate::EnvelopeError::Truncated.into()))?;
        let size = u32::try_from(segments.size()).map_err(|_| io_error(Error::DecryptionFailed))?;
        let layout = Layout::of(size, payload).map_err(|e| io_error(e.into()))?;
        let mut reader = Self {
            // The header's segment size, but no more than the payload holds.
            plain: Zeroizing::new(Vec::with_capacity(
                segments
                    .size()
                    .saturating_add(TAG_LEN)
                    .min(usize::try_from(payload).unwrap_or(usize::MAX)),
            )),
            segments,
            inner,
            body_start,
            layout,
            pos: 0,
            cached: None,
            read_from_storage: 0,
        };
        // The last segment authenticates the length.
        reader.load(layout.count().saturating_sub(1))?;
        Ok(reader)
    }

    /// The plaintext's length (authenticated).
    pub fn plaintext_len(&self) -> u64 {
        self.layout.plaintext_len()
    }

    /// Bytes read from the inner reader so far (the head, read before, not counted).
    pub fn bytes_read_from_storage(&self) -> u64 {
        self.read_from_storage
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Opens segment `i` into `plain`, unless it is there already.
    fn load(&mut self, i: u64) -> io::Result<()> {
        if self.cached == Some(i) {
            return Ok(());
        }
        self.cached = None;
        let (start, len) = self.layout.span(i);
        let len = usize::try_from(len).map_err(|_| io_error(Error::DecryptionFailed))?;
        self.inner
            .seek(SeekFrom::Start(self.body_start.saturating_add(start)))?;
        self.plain.clear();
        self.plain.resize(len, 0);
        self.inner.read_exact(&mut self.plain).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                // The input shrank under the reader.
                io_error(Error::DecryptionFailed)
            } else {
                e
            }
        })?;
        self.read_from_storage = self.read_from_storage.saturating_add(len as u64);
        let index = u32::try_from(i).map_err(|_| io_error(Error::DecryptionFailed))?;
        let last = i.saturating_add(1) == self.layout.count();
        self.segments
            .open(index, last, &mut self.plain)
            .map_err(io_error)?;
        self.cached = Some(i);
        Ok(())
    }
}

impl<R: Read + Seek> Read for SeekableReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.pos >= self.plaintext_len() {
            return Ok(0);
        }
        let size = self.segments.size() as u64;
        let (i, offset) = (self.pos / size, self.pos % size);
        self.load(i)?;
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let ready = self.plain.get(offset..).unwrap_or_default();
        let n = ready.len().min(out.len());
        if let (Some(to), Some(from)) = (out.get_mut(..n), ready.get(..n)) {
            to.copy_from_slice(from);
        }
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for SeekableReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.plaintext_len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        self.pos = target;
        Ok(target)
    }
}

impl<R: Read + Seek> std::fmt::Debug for SeekableReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeekableReader")
            .field("plaintext_len", &self.plaintext_len())
            .field("position", &self.pos)
            .finish_non_exhaustive()
    }
}
