//! Sealing a stream: [`SealWriter`] (`std::io::Write`) and [`AsyncSealWriter`]
//! (`tokio::io::AsyncWrite`), both over one core that collects a segment's plaintext, seals it
//! in place and hands the sealed bytes out. A segment is sealed only once the next byte has
//! arrived (or the stream is finished), so the last one is always known to be last.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;
use zeroize::Zeroizing;

use super::io_error;
use crate::aead::TAG_LEN;
use crate::envelope::segment::{MAX_SEGMENTS, Segments};
use crate::error::Error;

mod batch;
mod parallel;

pub use parallel::{ReadAt, seal_threads};
mod pipelined;
#[cfg(test)]
mod threaded_tests;

/// The state shared by both writers: the segment being collected, and sealed bytes (the head
/// first) waiting to be written. Both buffers keep their full length (a segment and its tag):
/// plaintext is copied or read straight into place, and nothing is cleared or grown per segment.
pub(super) struct SealCore {
    segments: Segments,
    /// The current segment's plaintext is `seg[..filled]`; its tag goes after it.
    seg: Zeroizing<Vec<u8>>,
    filled: usize,
    /// Bytes to write out: `out[written..out_len]`.
    out: Zeroizing<Vec<u8>>,
    out_len: usize,
    written: usize,
    /// The next segment's index.
    index: u32,
    finished: bool,
    /// An error lost plaintext already taken: nothing more is taken, and the stream is never
    /// finished.
    broken: bool,
    /// Plaintext bytes taken so far.
    taken: u64,
}

impl SealCore {
    pub(super) fn new(segments: Segments, head: Vec<u8>) -> Self {
        let sealed = segments.size().saturating_add(TAG_LEN);
        let out_len = head.len();
        Self {
            seg: Zeroizing::new(vec![0; sealed]),
            filled: 0,
            segments,
            out: Zeroizing::new(head),
            out_len,
            written: 0,
            index: 0,
            finished: false,
            broken: false,
            taken: 0,
        }
    }

    /// What waits to be written.
    fn pending(&self) -> &[u8] {
        self.out.get(self.written..self.out_len).unwrap_or_default()
    }

    fn wrote(&mut self, n: usize) {
        self.written = self.written.saturating_add(n).min(self.out_len);
    }

    fn full(&self) -> bool {
        self.filled == self.segments.size()
    }

    /// Takes plaintext from `data` (at least one byte if `data` is not empty); call only with
    /// nothing pending. A full segment followed by more data is sealed first.
    fn accept(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.check_open()?;
        if data.is_empty() {
            return Ok(0);
        }
        if self.full() {
            self.seal_collected(false)?;
        }
        let room = self.segments.size().saturating_sub(self.filled);
        let n = room.min(data.len());
        let end = self.filled.saturating_add(n);
        if let (Some(to), Some(from)) = (self.seg.get_mut(self.filled..end), data.get(..n)) {
            to.copy_from_slice(from);
        }
        self.filled = end;
        self.taken = self.taken.saturating_add(n as u64);
        Ok(n)
    }

    /// Reads plaintext from `r` straight into the segment (no copy beyond the read); call only
    /// with nothing pending. 0 at the end of `r`. After a full segment, the next bytes are read
    /// into the free output buffer, and the full one is sealed as not the last only once some
    /// arrived.
    fn fill_from(&mut self, r: &mut (impl Read + ?Sized)) -> io::Result<usize> {
        self.check_open().map_err(io_error)?;
        let size = self.segments.size();
        if !self.full() {
            let n = read_retrying(r, self.seg.get_mut(self.filled..size).unwrap_or_default())?;
            self.filled = self.filled.saturating_add(n);
            self.taken = self.taken.saturating_add(n as u64);
            return Ok(n);
        }
        // The full segment would not be the last: refused before anything more is taken.
        if self.index == u32::MAX {
            return Err(io_error(self.too_large()));
        }
        let sealed = size.saturating_add(TAG_LEN);
        if self.out.len() < sealed {
            self.out.resize(sealed, 0);
        }
        let n = read_retrying(r, self.out.get_mut(..size).unwrap_or_default())?;
        if n > 0 {
            // `out` now holds the next segment's first bytes: seal the full one and trade.
            self.seal_segment(false).map_err(io_error)?;
            std::mem::swap(&mut self.seg, &mut self.out);
            self.out_len = sealed;
            self.written = 0;
            self.filled = n;
            self.taken = self.taken.saturating_add(n as u64);
        }
        Ok(n)
    }

    /// Seals what was collected as the last segment; call only with nothing pending.
    fn finish(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::EncryptionFailed);
        }
        if !self.finished {
            self.seal_collected(true)?;
            self.finished = true;
        }
        Ok(())
    }

    /// Refuses plaintext after the end or after an error that lost some.
    fn check_open(&self) -> Result<(), Error> {
        if self.finished || self.broken {
            return Err(Error::EncryptionFailed);
        }
        Ok(())
    }

    fn too_large(&self) -> Error {
        Self::too_large_for(self.segments.size())
    }

    fn too_large_for(segment_size: usize) -> Error {
        Error::PlaintextTooLarge {
            max: usize::try_from(MAX_SEGMENTS)
                .unwrap_or(usize::MAX)
                .saturating_mul(segment_size),
        }
    }

    /// Seals `seg[..filled]` in place and puts its tag after it.
    fn seal_segment(&mut self, last: bool) -> Result<(), Error> {
        // Not the last: more follows, so its index must leave room for one more.
        if !last && self.index == u32::MAX {
            return Err(self.too_large());
        }
        let filled = self.filled;
        let chunk = self.seg.get_mut(..filled).ok_or(Error::EncryptionFailed)?;
        let tag = self.segments.seal_slice(self.index, last, chunk)?;
        self.seg
            .get_mut(filled..filled.saturating_add(TAG_LEN))
            .ok_or(Error::EncryptionFailed)?
            .copy_from_slice(&tag);
        self.index = self.index.saturating_add(1);
        Ok(())
    }

    /// Seals the collected plaintext and queues it; the emptied output buffer collects the next
    /// segment.
    fn seal_collected(&mut self, last: bool) -> Result<(), Error> {
        self.seal_segment(last)?;
        std::mem::swap(&mut self.seg, &mut self.out);
        self.out_len = self.filled.saturating_add(TAG_LEN);
        self.written = 0;
        self.filled = 0;
        let sealed = self.segments.size().saturating_add(TAG_LEN);
        if self.seg.len() < sealed {
            // Once: the head's buffer joins the rotation.
            self.seg.resize(sealed, 0);
        }
        Ok(())
    }
}

/// `r.read`, again while interrupted. A reader claiming more than `buf` holds breaks its
/// contract: an error, never bytes taken for read (or the end taken for reached).
fn read_retrying(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(n) if n > buf.len() => return Err(overread()),
            other => return other,
        }
    }
}

/// A source that said it read more than it was given room for.
fn overread() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the source reported more bytes than it was given room for",
    )
}

/// Seals a stream into a `std::io::Write`: write the plaintext, then call
/// [`finish`](Self::finish), which seals the last segment and hands the writer back. Made by
/// [`StreamSealer::writer`](super::StreamSealer::writer).
///
/// Without `finish` the output ends before its last segment, and opening it fails: a stream cut
/// short is never taken for a whole one. Memory: one segment, whatever the length.
pub struct SealWriter<W: Write> {
    core: SealCore,
    inner: W,
}

impl<W: Write> SealWriter<W> {
    pub(super) fn new(core: SealCore, inner: W) -> Self {
        Self { core, inner }
    }

    /// Seals the last segment, writes everything and flushes: the envelope is complete.
    ///
    /// # Errors
    /// The inner writer's error, or an [`Error`] inside an `io::Error` (see
    /// [`error_of`](super::error_of)).
    pub fn finish(mut self) -> io::Result<W> {
        self.drain()?;
        self.core.finish().map_err(io_error)?;
        self.drain()?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// Plaintext bytes written so far.
    pub fn plaintext_len(&self) -> u64 {
        self.core.taken
    }

    /// Seals everything `r` gives until its end, reading straight into the segment being
    /// sealed: the one copy of each byte is the read itself (what `std::io::copy` into this
    /// writer would do twice). Returns the bytes read; call [`finish`](Self::finish) after.
    ///
    /// # Errors
    /// `r`'s or the inner writer's error, or an [`Error`] inside an `io::Error`.
    pub fn write_from<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            self.drain()?;
            match self.core.fill_from(r)? {
                0 => return Ok(total),
                n => total = total.saturating_add(n as u64),
            }
        }
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, to take what was written so far (whole segments, with
    /// [`segments_writer`](super::StreamSealer::segments_writer) into a buffer).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Writes what is pending, keeping count as it goes: after a failed write, what was written
    /// is not written again.
    fn drain(&mut self) -> io::Result<()> {
        loop {
            let pending = self.core.pending();
            if pending.is_empty() {
                return Ok(());
            }
            match self.inner.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.core.wrote(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.drain()?;
        self.core.accept(data).map_err(io_error)
    }

    /// Writes out the segments sealed so far. The segment being collected is sealed only when
    /// more data or [`finish`](Self::finish) comes.
    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

impl<W: Write> std::fmt::Debug for SealWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealWriter")
            .field("plaintext_len", &self.core.taken)
            .finish_non_exhaustive()
    }
}

/// Seals a stream into a `tokio::io::AsyncWrite`: write the plaintext, then
/// [`shutdown`](tokio::io::AsyncWriteExt::shutdown), which seals the last segment, writes it and
/// shuts the inner writer down. Made by
/// [`StreamSealer::async_writer`](super::StreamSealer::async_writer).
///
/// Without the shutdown the output ends before its last segment, and opening it fails.
pub struct AsyncSealWriter<W: AsyncWrite + Unpin> {
    core: SealCore,
    inner: W,
}

impl<W: AsyncWrite + Unpin> AsyncSealWriter<W> {
    pub(super) fn new(core: SealCore, inner: W) -> Self {
        Self { core, inner }
    }

    /// Plaintext bytes written so far.
    pub fn plaintext_len(&self) -> u64 {
        self.core.taken
    }

    /// The inner writer (after a shutdown, everything was written to it).
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let pending = self.core.pending();
            if pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.core.wrote(n);
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for AsyncSealWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Poll::Ready(this.core.accept(data).map_err(io_error))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if !this.core.finished {
            this.core.finish().map_err(io_error)?;
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<W: AsyncWrite + Unpin> std::fmt::Debug for AsyncSealWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSealWriter")
            .field("plaintext_len", &self.core.taken)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::commit::MessageKeys;

    fn core(size: u32) -> SealCore {
        let keys = MessageKeys {
            content_key: Zeroizing::new([7; 32]),
            commitment: [0; 32],
        };
        let segments =
            Segments::new(crate::Backend::DEFAULT, &keys, [0; 7], b"h", b"", size).unwrap();
        SealCore::new(segments, Vec::new())
    }

    /// Tink's streaming AEAD before 1.4 let its segment counter wrap; this writer stops at the
    /// counter's last value instead: segment 2^32 - 1 may only be the last.
    #[test]
    fn the_segment_counter_never_wraps() {
        let mut c = core(256);
        c.index = u32::MAX;
        assert_eq!(c.accept(&[0; 256]).unwrap(), 256);
        // One more byte would need a segment 2^32.
        assert!(matches!(
            c.accept(&[0]),
            Err(Error::PlaintextTooLarge { .. })
        ));
        // Ending there is fine: the full segment is the last.
        c.finish().unwrap();
        assert_eq!(c.pending().len(), 256 + TAG_LEN);
        // The same from a reader: the counter stops there too.
        let mut c = core(256);
        c.index = u32::MAX;
        assert_eq!(c.fill_from(&mut &[0u8; 300][..]).unwrap(), 256);
        let err = c.fill_from(&mut &[0u8; 44][..]).unwrap_err();
        assert!(matches!(
            super::super::error_of(&err),
            Some(Error::PlaintextTooLarge { .. })
        ));
    }

    #[test]
    fn nothing_is_taken_after_the_end() {
        let mut c = core(256);
        c.finish().unwrap();
        assert!(c.accept(&[1]).is_err());
    }
}
