//! Deadlines for slow and idle clients: each connection's phase (head, body, idle, writing)
//! is watched, and a body that stops arriving ends with a typed error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
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

/// Shared by a connection's I/O and its service.
#[derive(Debug)]
pub(super) struct Watch {
    /// Requests being handled.
    busy: AtomicUsize,
    phase: Mutex<Phase>,
    /// The reader that waited without a deadline while a request was handled: woken when the
    /// connection goes quiet, so that its idle deadline is armed.
    parked: Mutex<Option<Waker>>,
}

impl Watch {
    pub(super) fn new() -> Self {
        Self {
            busy: AtomicUsize::new(0),
            phase: Mutex::new(Phase::Head {
                since: Instant::now(),
            }),
            parked: Mutex::new(None),
        }
    }

    pub(super) fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: a quiet connection is now reading a request head.
    pub(super) fn bytes_arrived(&self) {
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
            *phase = Phase::Idle {
                since: Instant::now(),
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
                if buf.filled().len() > before {
                    this.watch.bytes_arrived();
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

/// A request body that was not complete by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub(crate) struct BodyTimedOut;

/// A request body with a deadline.
pub(super) struct TimedBody {
    inner: Incoming,
    timer: Pin<Box<Sleep>>,
}

impl TimedBody {
    pub(super) fn new(inner: Incoming, deadline: Instant) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
