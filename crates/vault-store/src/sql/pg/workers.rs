//! The threads that run PostgreSQL's changes and snapshots. Each owns one connection and a
//! single-threaded tokio runtime that drives only that connection, so a synchronous [`Tx`]
//! waits on its statements by polling the connection's socket itself: a statement costs its
//! round trip and nothing more. (Waiting from a blocking thread on a connection that the
//! multi-threaded runtime drives costs two thread switches per statement: about 0.15 ms of CPU
//! per change, `docs/PERFORMANCE.md`.)
//!
//! Jobs wait in one queue per set of threads and the first free thread takes the next, so a
//! slow job holds one thread, not the others. A thread connects when it first has a job; it
//! checks a connection that sat idle before it uses it again, replaces one that is old or that
//! failed, and begins a transaction once more on a new connection if the old one was found
//! broken at the begin (nothing had run on it). Each job runs in a transaction of its own.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sqlx::{AnyConnection, Connection as _};
use tokio::runtime::Runtime;

use super::{PgTx, prepare};
use crate::StoreError;
use crate::sql::db::Tx;

/// The longest a thread waits for a new connection, a ping, a begin or a rollback.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a thread waits for a commit; then the change's outcome is unknown (the
/// connection is dropped, and the caller told so).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection idle this long is pinged before it is used again (a failover, a restart or a
/// firewall may have dropped it without a word).
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// A connection this old is replaced (so a moved database host or a new schema's statements
/// are picked up).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Work for a thread: it is handed the thread to run on.
pub(super) type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// What the threads are handed.
enum Work {
    Job(Job),
    /// The end: the thread that takes it closes its connection and stops.
    Stop,
}

/// A set of threads sharing one queue.
pub(super) struct Workers {
    jobs: Sender<Work>,
    count: usize,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable {
        reason: "the PostgreSQL connections are closed".into(),
    }
}

fn timed_out(what: &str) -> StoreError {
    StoreError::Unavailable {
        reason: format!("PostgreSQL did not answer the {what} in time"),
    }
}

impl Workers {
    /// Starts `count` threads named `name-N` for the database at `url`; they connect when first
    /// given a job, and end once [`close`](Self::close) is called or every handle is dropped.
    pub(super) fn start(url: &str, count: usize, name: &str) -> Result<Self, StoreError> {
        let url: Arc<str> = Arc::from(url);
        let (jobs, queue) = std::sync::mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        let (ready, started) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(count);
        let cannot_start = || StoreError::Unavailable {
            reason: "cannot start a PostgreSQL thread".into(),
        };
        for i in 0..count {
            let (url, queue, ready) = (url.clone(), queue.clone(), ready.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    // Made here, not by the async caller: a runtime may not be dropped in one.
                    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        let _ = ready.send(false);
                        return;
                    };
                    let _ = ready.send(true);
                    let mut worker = Worker {
                        url,
                        runtime,
                        conn: None,
                    };
                    worker.serve(&queue);
                })
                .map_err(|_| cannot_start())?;
            threads.push(thread);
        }
        let workers = Self {
            jobs,
            count,
            closed: AtomicBool::new(false),
            threads: Mutex::new(threads),
        };
        for _ in 0..count {
            if started.recv() != Ok(true) {
                return Err(cannot_start());
            }
        }
        Ok(workers)
    }

    /// Runs `f` in a transaction begun with `begin` on the first free thread; the receiver
    /// gets its value once the transaction is committed (`f` failed: rolled back). If the
    /// receiver is dropped before a thread takes the job, the job is not run.
    pub(super) fn run<T: Send + 'static>(
        &self,
        begin: &'static str,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.queue(Box::new(move |worker| {
            if !done.is_closed() {
                let _ = done.send(worker.in_transaction(begin, f));
            }
        }))?;
        Ok(wait)
    }

    /// Hands `job` to the first free thread.
    pub(super) fn queue(&self, job: Job) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(stopped());
        }
        self.jobs.send(Work::Job(job)).map_err(|_| stopped())
    }

    /// Stops the threads once they have run the jobs queued before, and waits for them (at
    /// most [`COMMIT_TIMEOUT`]). Later jobs are refused. A second call returns at once.
    pub(super) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for _ in 0..self.count {
            let _ = self.jobs.send(Work::Stop);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = tokio::time::timeout(COMMIT_TIMEOUT, joined).await;
    }
}

/// One thread's connection and the runtime that drives it.
pub(super) struct Worker {
    url: Arc<str>,
    runtime: Runtime,
    conn: Option<Conn>,
}

/// A connection, its age, and whether it is to be replaced.
struct Conn {
    conn: AnyConnection,
    made: Instant,
    used: Instant,
    /// A transaction's begin or end failed on it: its state is unknown.
    broken: bool,
}

impl Worker {
    /// Takes jobs until told to stop or every handle of the queue is gone.
    fn serve(&mut self, queue: &Mutex<Receiver<Work>>) {
        loop {
            let work = match queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            match work {
                Ok(Work::Job(job)) => {
                    // A job that panics (a bug) fails alone: its caller, whose answer went with
                    // the panic, learns that nothing was committed. The connection, in a state
                    // no one knows, is dropped (PostgreSQL rolls back what it held).
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(self))).is_err() {
                        self.conn = None;
                    }
                }
                Ok(Work::Stop) | Err(_) => break,
            }
        }
        if let Some(c) = self.conn.take() {
            // (The timer is made inside the runtime, which it needs.)
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(ROUND_TRIP_TIMEOUT, c.conn.close()).await });
        }
    }

    /// Runs `f` in a transaction begun with `begin` on this thread's connection, and commits
    /// it if `f` and every statement it ran succeeded, else rolls it back. A connection whose
    /// begin, commit or rollback failed is dropped: the next job makes a new one. A reused
    /// connection that fails the begin is replaced at once and the begin sent again (nothing
    /// has run on it).
    pub(super) fn in_transaction<T>(
        &mut self,
        begin: &'static str,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let reused = self.conn.is_some();
        self.connect()?;
        let mut began = self.statement(begin, ROUND_TRIP_TIMEOUT, || timed_out("begin"));
        if began.is_err() && reused {
            self.conn = None;
            self.connect()?;
            began = self.statement(begin, ROUND_TRIP_TIMEOUT, || timed_out("begin"));
        }
        let ended = began.and_then(|()| self.run_and_end(f));
        match self.conn.as_mut() {
            // The begin, the commit or the rollback failed: the connection's state is unknown.
            Some(c) if c.broken => self.conn = None,
            Some(c) => c.used = Instant::now(),
            None => {}
        }
        ended
    }

    /// Runs `f` in the transaction just begun, then commits or rolls back (see
    /// [`in_transaction`](Self::in_transaction)).
    fn run_and_end<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(c) = self.conn.as_mut() else {
            return Err(stopped());
        };
        let mut tx = PgTx {
            conn: &mut c.conn,
            runtime: &self.runtime,
            failed: false,
        };
        let value = f(&mut tx);
        // A statement that failed aborted the transaction, whatever the change made of the
        // error: PostgreSQL would answer its COMMIT with a rollback.
        let value = match value {
            Ok(_) if tx.failed => Err(StoreError::Unavailable {
                reason: "a statement of the change failed".into(),
            }),
            other => other,
        };
        match value {
            Ok(value) => self
                .statement("COMMIT", COMMIT_TIMEOUT, || StoreError::Unavailable {
                    reason: "PostgreSQL did not answer the commit in time: the change may or \
                             may not be committed"
                        .into(),
                })
                .map(|()| value),
            Err(e) => self
                .statement("ROLLBACK", ROUND_TRIP_TIMEOUT, || timed_out("rollback"))
                .and(Err(e)),
        }
    }

    /// Runs `sql` (no parameters, no rows) on the thread's connection within `limit`; `late` is
    /// the error if it takes longer. A statement that failed or was late leaves the connection
    /// marked for replacement.
    fn statement(
        &mut self,
        sql: &'static str,
        limit: Duration,
        late: impl FnOnce() -> StoreError,
    ) -> Result<(), StoreError> {
        let Some(c) = self.conn.as_mut() else {
            return Err(stopped());
        };
        let ran = self.runtime.block_on(async {
            tokio::time::timeout(limit, sqlx::raw_sql(sql).execute(&mut c.conn)).await
        });
        let result = match ran {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(late()),
        };
        c.broken = true;
        result
    }

    /// Makes sure the thread has a usable connection: a new one if it has none, if its
    /// connection is older than [`MAX_LIFETIME`], or if one idle for [`IDLE_CHECK`] does not
    /// answer a ping.
    fn connect(&mut self) -> Result<(), StoreError> {
        let runtime = &self.runtime;
        if let Some(c) = &mut self.conn {
            let young = c.made.elapsed() < MAX_LIFETIME;
            let alive = c.used.elapsed() < IDLE_CHECK
                || runtime
                    .block_on(async {
                        tokio::time::timeout(ROUND_TRIP_TIMEOUT, c.conn.ping()).await
                    })
                    .is_ok_and(|pinged| pinged.is_ok());
            if young && alive {
                return Ok(());
            }
            self.conn = None;
        }
        let conn = runtime.block_on(new_connection(&self.url))?;
        let now = Instant::now();
        self.conn = Some(Conn {
            conn,
            made: now,
            used: now,
            broken: false,
        });
        Ok(())
    }
}

/// A new connection to `url`, set up as every connection of the store is ([`prepare`]).
async fn new_connection(url: &str) -> Result<AnyConnection, StoreError> {
    let connecting = async {
        let mut conn = AnyConnection::connect(url).await?;
        prepare(&mut conn).await?;
        Ok::<_, sqlx::Error>(conn)
    };
    match tokio::time::timeout(ROUND_TRIP_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(timed_out("connection")),
    }
}
