//! Request bodies with deadlines: fixed (complete by a time) or sliding (a blob upload, as long
//! as it keeps arriving).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// A request body that was not complete by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub(crate) struct BodyTimedOut;

/// A request body with a deadline.
pub(super) struct TimedBody {
    inner: Incoming,
    timer: Pin<Box<Sleep>>,
    /// `Some(d)`: the deadline moves `d` ahead whenever [`SLIDE_AFTER`] bytes have arrived
    /// since it last moved (a body that keeps arriving at that pace is never cut, one that
    /// stalls or trickles is); `None`: it is fixed.
    sliding: Option<Duration>,
    /// Bytes arrived since the deadline last moved.
    progress: u64,
    /// A frame was handed out since the last poll: the time the reader spent on it before
    /// polling again (storing a batch) is the server's, not the client's.
    handed: bool,
}

/// How many bytes a sliding deadline needs before it moves: a blob upload must send at least
/// this much per body timeout.
pub(super) const SLIDE_AFTER: u64 = 64 * 1024;

impl TimedBody {
    /// A body that must be complete by `deadline`.
    pub(super) fn new(inner: Incoming, deadline: Instant) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            sliding: None,
            progress: 0,
            handed: false,
        }
    }

    /// A body that may take as long as it keeps arriving: [`SLIDE_AFTER`] bytes at least in
    /// every `stall` of the client's time (a blob upload, whose length is the value's).
    pub(super) fn sliding(inner: Incoming, stall: Duration) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep(stall)),
            sliding: Some(stall),
            progress: 0,
            handed: false,
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
        if let Some(stall) = self.sliding
            && std::mem::take(&mut self.handed)
            && self.progress >= SLIDE_AFTER
        {
            self.progress = 0;
            self.timer.as_mut().reset(Instant::now() + stall);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if self.sliding.is_some()
                    && let Some(Ok(f)) = &frame
                {
                    let n = f.data_ref().map_or(0, |d| d.len() as u64);
                    self.progress = self.progress.saturating_add(n);
                    self.handed = true;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
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
