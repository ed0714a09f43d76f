//! Sealing a stream: [`SealWriter`] (`std::io::Write`) and [`AsyncSealWriter`]
//! (`tokio::io::AsyncWrite`), both over one core that collects a segment's plaintext, seals it
//! in place and hands the sealed bytes out. A segment is sealed only once the next byte has
//! arrived (or the stream is finished), so the last one is always known to be last.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;
use zeroize::Zeroizing;

use super::io_error;
use crate::aead::TAG_LEN;
use crate::envelope::segment::{MAX_SEGMENTS, Segments};
use crate::error::Error;

/// The state shared by both writers: the plaintext being collected, and sealed bytes (the head
/// first) waiting to be written.
pub(super) struct SealCore {
    segments: Segments,
    /// The current segment's plaintext: at most `segments.size()` bytes.
    collecting: Zeroizing<Vec<u8>>,
    /// Bytes to write out, from `written` on.
    out: Zeroizing<Vec<u8>>,
    written: usize,
    /// The next segment's index.
    index: u32,
    finished: bool,
    /// Plaintext bytes taken so far.
    taken: u64,
}

impl SealCore {
    pub(super) fn new(segments: Segments, head: Vec<u8>) -> Self {
        let sealed = segments.size().saturating_add(TAG_LEN);
        let mut out = Zeroizing::new(head);
        let have = out.len();
        out.reserve(sealed.saturating_sub(have));
        Self {
            collecting: Zeroizing::new(Vec::with_capacity(sealed)),
            segments,
            out,
            written: 0,
            index: 0,
            finished: false,
            taken: 0,
        }
    }

    /// What waits to be written.
    fn pending(&self) -> &[u8] {
        self.out.get(self.written..).unwrap_or_default()
    }

    fn wrote(&mut self, n: usize) {
        self.written = self.written.saturating_add(n);
        if self.written >= self.out.len() {
            self.out.clear();
            self.written = 0;
        }
    }

    /// Takes plaintext from `data` (at least one byte if `data` is not empty); call only with
    /// nothing pending. A full segment followed by more data is sealed first.
    fn accept(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.finished {
            return Err(Error::EncryptionFailed);
        }
        if data.is_empty() {
            return Ok(0);
        }
        if self.collecting.len() == self.segments.size() {
            // Not the last segment: more follows. Its index must leave room for one more.
            if self.index == u32::MAX {
                return Err(Error::PlaintextTooLarge {
                    max: usize::try_from(MAX_SEGMENTS)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(self.segments.size()),
                });
            }
            self.seal_collected(false)?;
        }
        let room = self.segments.size().saturating_sub(self.collecting.len());
        let n = room.min(data.len());
        self.collecting
            .extend_from_slice(data.get(..n).unwrap_or_default());
        self.taken = self.taken.saturating_add(n as u64);
        Ok(n)
    }

    /// Seals what was collected as the last segment; call only with nothing pending.
    fn finish(&mut self) -> Result<(), Error> {
        if !self.finished {
            self.seal_collected(true)?;
            self.finished = true;
        }
        Ok(())
    }

    /// Seals the collected plaintext as segment `index` and queues it; the emptied output
    /// buffer collects the next segment.
    fn seal_collected(&mut self, last: bool) -> Result<(), Error> {
        self.segments.seal(self.index, last, &mut self.collecting)?;
        std::mem::swap(&mut self.collecting, &mut self.out);
        self.collecting.clear();
        self.written = 0;
        self.index = self.index.saturating_add(1);
        Ok(())
    }
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

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn drain(&mut self) -> io::Result<()> {
        let pending = self.core.pending();
        if !pending.is_empty() {
            self.inner.write_all(pending)?;
            let n = pending.len();
            self.core.wrote(n);
        }
        Ok(())
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
    }

    #[test]
    fn nothing_is_taken_after_the_end() {
        let mut c = core(256);
        c.finish().unwrap();
        assert!(c.accept(&[1]).is_err());
    }
}
