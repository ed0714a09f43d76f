//! Opening a stream in order: [`OpenReader`] (`std::io::Read`) and [`AsyncOpenReader`]
//! (`tokio::io::AsyncRead`), over one core. A segment is known to be the last when the input
//! ends right after it, so the core reads one byte past each segment before opening it: a
//! stream cut at a segment boundary fails (its new last segment was sealed as not last), and so
//! does one with anything after its last segment.

use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};
use zeroize::Zeroizing;

use super::io_error;
use crate::aead::TAG_LEN;
use crate::envelope::segment::Segments;
use crate::error::{EnvelopeError, Error};

/// The window a reader starts with: a default segment and its tag, and one byte more.
const INITIAL_WINDOW: usize = (64 << 10) + TAG_LEN + 1;

/// The state shared by both readers.
pub(super) struct OpenCore {
    segments: Segments,
    /// Sealed bytes read: up to one segment and one byte more (`window`). It grows as bytes
    /// arrive: the segment size is the header's, checked by nothing before the first tag.
    buf: Zeroizing<Vec<u8>>,
    window: usize,
    filled: usize,
    eof: bool,
    /// The opened segment's plaintext is `buf[served..plain_end]`.
    served: usize,
    plain_end: usize,
    /// A byte read past the segment being served, to move to the front once it is served.
    carry: bool,
    /// The next segment's index.
    index: u64,
    /// The last segment was opened.
    done: bool,
    /// A segment failed to open: every later read fails too.
    failed: bool,
}

impl OpenCore {
    pub(super) fn new(segments: Segments) -> Self {
        let window = segments.size().saturating_add(TAG_LEN + 1);
        Self {
            buf: Zeroizing::new(vec![0; window.min(INITIAL_WINDOW)]),
            window,
            segments,
            filled: 0,
            eof: false,
            served: 0,
            plain_end: 0,
            carry: false,
            index: 0,
            done: false,
            failed: false,
        }
    }

    /// Copies opened plaintext into `out`; `None` once the served segment is used up.
    fn serve(&mut self, out: &mut [u8]) -> Option<usize> {
        let ready = self.buf.get(self.served..self.plain_end)?;
        if ready.is_empty() {
            return None;
        }
        let n = ready.len().min(out.len());
        out.get_mut(..n)?.copy_from_slice(ready.get(..n)?);
        self.served = self.served.saturating_add(n);
        Some(n)
    }

    /// Where the next bytes read go, if the window is not full and the input not ended.
    fn space(&mut self) -> Option<&mut [u8]> {
        if self.eof || self.done || self.failed || self.filled >= self.window {
            return None;
        }
        if self.filled == self.buf.len() {
            let grown = self.buf.len().saturating_mul(2).min(self.window);
            self.buf.resize(grown, 0);
        }
        self.buf.get_mut(self.filled..).filter(|s| !s.is_empty())
    }

    fn filled(&mut self, n: usize) {
        if n == 0 {
            self.eof = true;
        }
        self.filled = self.filled.saturating_add(n);
    }

    /// Starts the next segment once the current one is served: moves the byte read past it to
    /// the front. Then reports whether the window must be filled before [`open_next`] can run.
    fn needs_input(&mut self) -> bool {
        if self.carry {
            let past = self
                .buf
                .get(self.plain_end.saturating_add(TAG_LEN))
                .copied();
            if let (Some(first), Some(past)) = (self.buf.first_mut(), past) {
                *first = past;
            }
            self.filled = 1;
            self.carry = false;
            self.served = 0;
            self.plain_end = 0;
        }
        !self.eof && self.filled < self.window
    }

    /// Where the loop of a read stands once the served segment is used up: `Some` to return.
    fn finished(&self) -> Option<Result<(), Error>> {
        if self.failed {
            Some(Err(Error::DecryptionFailed))
        } else if self.done {
            Some(Ok(()))
        } else {
            None
        }
    }

    /// Opens the segment in the window: the last if the input ended inside the window, not the
    /// last if the window is full (one byte follows it).
    fn open_next(&mut self) -> Result<(), Error> {
        let last = self.filled < self.window;
        let sealed_len = if last {
            self.filled
        } else {
            self.filled.saturating_sub(1)
        };
        if sealed_len == 0 {
            // Nothing where a first segment belongs (a carried byte always starts later ones).
            self.failed = true;
            return Err(EnvelopeError::Truncated.into());
        }
        let index = u32::try_from(self.index).map_err(|_| Error::DecryptionFailed)?;
        let sealed = self
            .buf
            .get_mut(..sealed_len)
            .ok_or(Error::DecryptionFailed)?;
        let result = self.segments.open_slice(index, last, sealed);
        let len = match result {
            Ok(len) => len,
            Err(e) => {
                self.buf.fill(0);
                self.failed = true;
                return Err(e);
            }
        };
        self.served = 0;
        self.plain_end = len;
        self.carry = !last;
        self.done = last;
        self.index = self.index.saturating_add(1);
        Ok(())
    }
}

/// Opens a streamed envelope's segments from a `std::io::Read` positioned just after its head,
/// in order, and reads as its plaintext. Made by
/// [`StreamOpener::reader`](super::StreamOpener::reader).
///
/// Each read returns only plaintext of segments whose tags verified; the end of the plaintext
/// (a read of 0) comes only after the last segment verified as last. A failure is an
/// `io::Error` of kind `InvalidData` carrying [`Error::DecryptionFailed`]
/// ([`error_of`](super::error_of)); after one, every read fails. Memory: one segment.
pub struct OpenReader<R: Read> {
    core: OpenCore,
    inner: R,
}

impl<R: Read> OpenReader<R> {
    pub(super) fn new(core: OpenCore, inner: R) -> Self {
        Self { core, inner }
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(n) = self.core.serve(out) {
                return Ok(n);
            }
            if let Some(end) = self.core.finished() {
                return end.map(|()| 0).map_err(io_error);
            }
            if self.core.needs_input() {
                while let Some(space) = self.core.space() {
                    let n = match self.inner.read(space) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    self.core.filled(n);
                }
            }
            self.core.open_next().map_err(io_error)?;
        }
    }
}

impl<R: Read> std::fmt::Debug for OpenReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenReader")
            .field("segments_opened", &self.core.index)
            .finish_non_exhaustive()
    }
}

/// [`OpenReader`] over a `tokio::io::AsyncRead`. Made by
/// [`StreamOpener::async_reader`](super::StreamOpener::async_reader).
pub struct AsyncOpenReader<R: AsyncRead + Unpin> {
    core: OpenCore,
    inner: R,
}

impl<R: AsyncRead + Unpin> AsyncOpenReader<R> {
    pub(super) fn new(core: OpenCore, inner: R) -> Self {
        Self { core, inner }
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncOpenReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(n) = this.core.serve(out.initialize_unfilled()) {
                out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(end) = this.core.finished() {
                return Poll::Ready(end.map_err(io_error));
            }
            if this.core.needs_input() {
                while let Some(space) = this.core.space() {
                    let mut read = ReadBuf::new(space);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                    let n = read.filled().len();
                    this.core.filled(n);
                }
            }
            this.core.open_next().map_err(io_error)?;
        }
    }
}

impl<R: AsyncRead + Unpin> std::fmt::Debug for AsyncOpenReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncOpenReader")
            .field("segments_opened", &self.core.index)
            .finish_non_exhaustive()
    }
}
