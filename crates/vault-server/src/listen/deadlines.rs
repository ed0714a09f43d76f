//! Deadlines for slow and idle clients: each connection's phase (head, body, idle, writing)
//! is watched (a body that stops arriving ends with a typed error: [`super::timed_body`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::Listening;

/// What a connection is doing, as far as deadlines go.
#[derive(Debug, Clone, Copy)]
pub(super) enum Phase {
    /// Waiting for (the rest of) a request head since `since`.
    Head { since: Instant },
    /// Answered everything; quiet since `since`.
    Idle { since: Instant },
}

/// Where a plain-HTTP byte stream stands between messages, as far as this connection follows
/// it: enough to tell, when a request has been answered, whether the first bytes of the next
/// head already arrived (pipelined behind it, and waiting in hyper's buffer). Such a head gets
/// the head deadline, not the idle one.
#[derive(Debug)]
pub(crate) enum Framing {
    /// In a head: the bytes of it so far (none: between messages), and when the first came.
    Head {
        seen: Vec<u8>,
        since: Option<Instant>,
    },
    /// In a body with `left` bytes to come (`Content-Length`).
    Body { left: u64 },
    /// Not followed any more (a chunked body, TLS, a head larger than hyper takes): the idle
    /// deadline applies between requests, as without this.
    Lost,
}

/// The most bytes of a head followed (hyper refuses larger ones itself).
const MAX_FOLLOWED_HEAD: usize = 64 * 1024;

impl Framing {
    pub(crate) fn start() -> Self {
        Self::Head {
            seen: Vec::new(),
            since: None,
        }
    }

    /// Follows `bytes`, which arrived at `now`.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() {
            match self {
                Self::Lost => return,
                Self::Body { left } => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        *self = Self::start();
                    }
                }
                Self::Head { seen, since } => {
                    // An end ("\n\n" or "\n\r\n", as hyper's parser takes it) not seen
                    // before must use a new byte: it starts at most 2 bytes back.
                    let from = seen.len().saturating_sub(2);
                    since.get_or_insert(now);
                    let room = (MAX_FOLLOWED_HEAD + 1).saturating_sub(seen.len());
                    let take = bytes.len().min(room);
                    seen.extend_from_slice(&bytes[..take]);
                    let Some(end) = head_end(seen, from) else {
                        if seen.len() > MAX_FOLLOWED_HEAD {
                            *self = Self::Lost;
                        }
                        bytes = &bytes[take..];
                        continue;
                    };
                    // The bytes after the head's end go on to its body, or the next head.
                    let consumed = take - (seen.len() - end);
                    let next = match body_length(&seen[..end]) {
                        Some(0) => Self::start(),
                        Some(left) => Self::Body { left },
                        None => Self::Lost,
                    };
                    *self = next;
                    bytes = &bytes[consumed..];
                }
            }
        }
    }

    /// When the first bytes of a head not complete yet arrived, if some did.
    pub(crate) fn pending_head(&self) -> Option<Instant> {
        match self {
            Self::Head { seen, since } if !seen.is_empty() => *since,
            _ => None,
        }
    }
}

/// Where the head in `seen` ends (the index after its blank line), looking from `from`: a line
/// feed followed by another, with or without a carriage return between.
fn head_end(seen: &[u8], from: usize) -> Option<usize> {
    (from..seen.len()).find_map(|i| match seen.get(i..) {
        Some([b'\n', b'\n', ..]) => Some(i + 2),
        Some([b'\n', b'\r', b'\n', ..]) => Some(i + 3),
        _ => None,
    })
}

/// The length of the body after request head `head`: its `Content-Length`, 0 without one;
/// `None` for a chunked body (or one this does not follow).
fn body_length(head: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(head).ok()?;
    let mut length = 0;
    for line in text.split('\n').skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        }
    }
    Some(length)
}

/// Shared by a connection's I/O and its service.
#[derive(Debug)]
pub(super) struct Watch {
    /// Requests being handled.
    busy: AtomicUsize,
    phase: Mutex<Phase>,
    /// The plain-HTTP stream followed between messages (`Lost` for TLS).
    framing: Mutex<Framing>,
    /// The reader that waited without a deadline while a request was handled: woken when the
    /// connection goes quiet, so that its idle deadline is armed.
    parked: Mutex<Option<Waker>>,
}

impl Watch {
    /// A watch for a new connection; `follow`: whether its bytes are plain HTTP (not TLS), so
    /// that a head pipelined behind a request gets the head deadline.
    pub(super) fn new(follow: bool) -> Self {
        Self {
            busy: AtomicUsize::new(0),
            phase: Mutex::new(Phase::Head {
                since: Instant::now(),
            }),
            framing: Mutex::new(if follow {
                Framing::start()
            } else {
                Framing::Lost
            }),
            parked: Mutex::new(None),
        }
    }

    fn framing(&self) -> std::sync::MutexGuard<'_, Framing> {
        self.framing.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `bytes` arrived: a quiet connection is now reading a request head.
    pub(super) fn bytes_arrived(&self, bytes: &[u8]) {
        self.framing().feed(bytes, Instant::now());
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase
            && self.busy.load(Ordering::Acquire) == 0
        {
            *phase = Phase::Head {
                since: Instant::now(),
            };
        }
    }

    /// When the connection must have made progress by, if it has a deadline now.
    pub(super) fn deadline(&self, head: Duration, idle: Duration) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match *self.phase() {
            Phase::Head { since } => since + head,
            Phase::Idle { since } => since + idle,
        })
    }
}

/// A request being handled; when it is answered the connection is quiet again.
pub(super) struct Busy(Arc<Watch>);

impl Busy {
    pub(super) fn start(watch: Arc<Watch>) -> Self {
        watch.busy.fetch_add(1, Ordering::AcqRel);
        Self(watch)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A head pipelined behind the request is waiting: it is read under the head
            // deadline, from when its first bytes came; else the connection is idle.
            *phase = match self.0.framing().pending_head() {
                Some(since) => Phase::Head { since },
                None => Phase::Idle {
                    since: Instant::now(),
                },
            };
            drop(phase);
            let parked = self
                .0
                .parked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(waker) = parked {
                waker.wake();
            }
        }
    }
}

/// The TCP stream with the connection's deadlines: a read that would wait past the deadline
/// fails with `TimedOut`, which closes the connection.
pub(super) struct Guarded {
    inner: TcpStream,
    watch: Arc<Watch>,
    head: Duration,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// How long a write may make no progress.
    send: Duration,
    /// Since when writes have made no progress.
    stalled: Option<Instant>,
    send_timer: Pin<Box<Sleep>>,
}

impl Guarded {
    pub(super) fn new(inner: TcpStream, watch: Arc<Watch>, listening: &Listening) -> Self {
        Self {
            inner,
            watch,
            head: listening.head_timeout,
            idle: listening.idle_timeout,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            send: listening.body_timeout,
            stalled: None,
            send_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// Passes on a write's outcome; a write pending for longer than `send` since the last
    /// progress fails with `TimedOut`.
    pub(super) fn write_outcome<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match outcome {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let deadline = *self.stalled.get_or_insert_with(Instant::now) + self.send;
                if self.send_timer.deadline() != deadline {
                    self.send_timer.as_mut().reset(deadline);
                }
                match self.send_timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client does not take its answers",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(bytes) = buf.filled().get(before..).filter(|b| !b.is_empty()) {
                    this.watch.bytes_arrived(bytes);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Parked before the check, so a request that finishes right after it still
                // wakes this reader to arm the idle deadline.
                *this.watch.parked.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(cx.waker().clone());
                let Some(deadline) = this.watch.deadline(this.head, this.idle) else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client was too slow or idle too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_outcome(cx, outcome)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.write_outcome(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_outcome(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(chunks: &[&[u8]]) -> Framing {
        let mut f = Framing::start();
        for c in chunks {
            f.feed(c, Instant::now());
        }
        f
    }

    #[test]
    fn a_head_pipelined_behind_a_request_is_seen_however_the_bytes_are_cut() {
        let stream: &[u8] =
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHo";
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert!(after(&[a, b]).pending_head().is_some(), "cut at {cut}");
        }
        // Complete messages only: nothing pending, whatever the cuts.
        let whole: &[u8] =
            b"POST /a HTTP/1.1\r\ncontent-length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n";
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            assert!(after(&[a, b]).pending_head().is_none(), "cut at {cut}");
        }
        // Heads ended by bare line feeds, as hyper takes them, end too.
        let bare: &[u8] = b"GET /b HTTP/1.1\nHost: x\n\nGET /c HTTP/1.1\r\n\n";
        for cut in 0..bare.len() {
            let (a, b) = bare.split_at(cut);
            assert!(after(&[a, b]).pending_head().is_none(), "cut at {cut}");
        }
        // A chunked body is not followed: the idle deadline applies, as before.
        let chunked = after(&[b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe"]);
        assert!(matches!(chunked, Framing::Lost));
        assert!(chunked.pending_head().is_none());
        // Nor is a head larger than hyper takes.
        let huge = vec![b'a'; MAX_FOLLOWED_HEAD + 10];
        assert!(matches!(after(&[&huge]), Framing::Lost));
    }
}
