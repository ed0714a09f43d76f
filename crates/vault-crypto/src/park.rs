//! Polling a future to completion on the calling thread, for the blocking entry points
//! ([`crate::blocking`]) and the parts of a blocking open that must wait for a provider.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

/// Wakes the thread that polls.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` to completion on this thread, parked while it waits (on a lock another
/// thread holds: a local provider waits on nothing else). Unconstrained by tokio's cooperative
/// budget: called from inside a task whose budget is spent, a tokio lock would otherwise answer
/// "pending" and leave its wake-up to a scheduler that never runs again, parking this thread
/// for good.
pub(crate) fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(tokio::task::coop::unconstrained(future));
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}
