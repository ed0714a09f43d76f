//! SQLite, entirely on rusqlite: the writer thread that commits every write of the store, the
//! read connections, and the one place each connection's settings are made ([`connect`]).
//!
//! sqlx runs each SQLite connection on a worker thread of its own and hands it every statement
//! through a channel: two context switches per statement, which at a few dozen statements per
//! group commit cost more than the statements and the fsync together (`docs/PERFORMANCE.md`).
//! Here the whole batch runs on one thread that owns its connection:
//!
//! - **The writer thread** is the only writer of this process: every change (of objects, keys,
//!   webhooks, the ring, the schema) and every audit event of a read is handed to it. It takes
//!   every job waiting (at least one), opens one transaction (`BEGIN IMMEDIATE`; another
//!   process's writer is waited for by `busy_timeout`), runs each change in its own savepoint (a
//!   change that fails, a version conflict or a name already taken, rolls back alone and the
//!   others go on) and writes each read's event, in arrival order, commits once
//!   (`synchronous=FULL`: one fsync), and only then answers each request. An answered change is
//!   durable; each is still its own compare-and-set with its own audit event, and sees the
//!   changes before it.
//! - **Reads** run on the calling task, on a connection taken from a small pool: a read in WAL
//!   mode never waits for the writer and a read by key takes microseconds, less than handing it
//!   to another thread and back.
//!
//! The changes themselves ([`Change`]) and the statements they run are the same code on both
//! engines ([`super::db`]).

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::change::{AuditRecord, Counters, MAX_BATCH, insert_audit};
use super::db::Change;
use crate::StoreError;

mod read;
mod tx;
use read::{Reader, Readers};
use tx::LiteTx;

/// The longest the writer waits for another process's write lock.
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The SQLite writer thread's queue and the read connections of one database file.
#[derive(Clone)]
pub(super) struct Lite {
    jobs: Sender<Job>,
    readers: Arc<Readers>,
    thread: Arc<Thread>,
}

/// The writer thread, as its handles see it.
struct Thread {
    /// Cleared when the thread ends, however it ends.
    running: Arc<AtomicBool>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

/// Clears `running` when the writer thread ends, by returning or by a panic.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for Lite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lite").finish_non_exhaustive()
    }
}

/// A change as the writer thread runs it.
type RunChange = Box<dyn for<'c> FnOnce(&mut LiteTx<'c>) -> Ran + Send>;

/// What the writer thread is handed.
enum Job {
    /// The audit event of a read, and who waits for it to be durable.
    Read(
        Box<AuditRecord>,
        tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    ),
    /// A change.
    Change(RunChange),
    /// The end: the thread commits what came before and stops.
    Stop,
}

/// What a change left to do after running.
struct Ran {
    /// It succeeded: its savepoint is released (else rolled back).
    ok: bool,
    /// Answers the caller with the commit's outcome.
    answer: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// What a connection is for (see [`connect`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

/// A connection to the database at `path`, with every setting this store runs with (the one
/// place they are made): a busy timeout set before anything reads the file, foreign keys on;
/// for the writer WAL journal (it stays with the file) and `synchronous=FULL` (an acknowledged
/// write survives a power cut); for a reader `query_only`.
fn connect(path: &Path, role: Role) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.set_prepared_statement_cache_capacity(64);
    match role {
        Role::Writer => {
            conn.busy_timeout(WRITER_BUSY_TIMEOUT)?;
            let journal: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !journal.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Unavailable {
                    reason: "the database cannot use a write-ahead log".into(),
                });
            }
            conn.pragma_update(None, "synchronous", "FULL")?;
        }
        Role::Reader => {
            // A reader runs on a tokio worker, so it never waits long (in WAL mode only the
            // recovery of a crashed WAL makes a reader wait at all).
            conn.busy_timeout(read::POINT_BUSY_TIMEOUT)?;
            conn.pragma_update(None, "query_only", true)?;
        }
    }
    conn.pragma_update(None, "foreign_keys", true)?;
    // The file is untrusted storage: a function with side effects in a trigger or view that a
    // database writer planted does not run.
    conn.pragma_update(None, "trusted_schema", false)?;
    Ok(conn)
}

impl Lite {
    /// Opens the writer's connection to the database at `path` (an existing file) and starts
    /// its thread, which ends when the last handle is dropped.
    pub(super) fn open(path: &Path, stats: Arc<Counters>) -> Result<Self, StoreError> {
        let conn = connect(path, Role::Writer)?;
        let (jobs, queue) = std::sync::mpsc::channel();
        let running = Arc::new(AtomicBool::new(true));
        let flag = Running(running.clone());
        let handle = std::thread::Builder::new()
            .name("vault-sqlite-writer".into())
            .spawn(move || {
                let _running = flag;
                write_loop(conn, &queue, &stats);
            })
            .map_err(|_| StoreError::Unavailable {
                reason: "cannot start the SQLite writer thread".into(),
            })?;
        Ok(Self {
            jobs,
            readers: Arc::new(Readers::new(path)),
            thread: Arc::new(Thread {
                running,
                handle: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Whether the writer thread still runs and the file can be read (a store whose writer is
    /// gone cannot answer a change or an audited read, so it is not healthy).
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        if !self.thread.running.load(Ordering::Acquire) {
            return Err(stopped());
        }
        self.reader()
            .await?
            .read(|tx| tx.exists("SELECT 1 AS one", &[]))
            .map(drop)
    }

    /// Stops the writer thread once it has committed what was handed to it before, waits for
    /// it, and closes the read connections. Later changes and reads fail.
    pub(super) async fn close(&self) {
        self.readers.close();
        let _ = self.jobs.send(Job::Stop);
        let handle = self.thread.handle.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// A read connection (see [`Reader`]), once one of the pool's slots is free.
    pub(super) async fn reader(&self) -> Result<Reader<'_>, StoreError> {
        self.readers.reader().await
    }

    /// Writes the audit event of a read; returns once it is durable.
    pub(super) async fn read_event(&self, record: AuditRecord) -> Result<(), StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Read(Box::new(record), done))
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }

    /// Hands `change` to the writer thread for its next group commit; the receiver gets its
    /// value once that is durable.
    pub(super) fn submit<C: Change>(
        &self,
        change: C,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<C::Output, StoreError>>, StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let job = Job::Change(Box::new(move |tx: &mut LiteTx<'_>| {
            let result = change.run(tx);
            Ran {
                ok: result.is_ok(),
                answer: Box::new(move |committed| {
                    // The commit's error if the commit failed (whatever the change saw was
                    // judged against changes that are now undone), else the change's own result.
                    let _ = done.send(committed.and(result));
                }),
            }
        }));
        self.jobs.send(job).map_err(|_| stopped())?;
        Ok(wait)
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable {
        reason: "the SQLite writer stopped".into(),
    }
}

/// The writer thread: takes whatever is waiting (at least one job), commits it together,
/// answers each request, and repeats until every handle is gone.
fn write_loop(mut conn: Connection, queue: &Receiver<Job>, stats: &Counters) {
    let mut batch = Vec::new();
    let mut stop = false;
    while !stop && let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        stop = batch.iter().any(|job| matches!(job, Job::Stop));
        // A panic outside the changes (a bug) fails its batch, not the thread: the requests of
        // the batch, whose answers went with the panic, learn that nothing was committed.
        let committed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            commit(&mut conn, &mut batch, stats);
        }));
        if committed.is_err() {
            batch.clear();
            if !conn.is_autocommit() {
                let _ = run(&conn, "ROLLBACK");
            }
        }
    }
}

/// Runs the jobs of `batch` in one transaction, in order, each change in its own savepoint,
/// commits, and answers everyone. If the transaction cannot be begun, a savepoint set or
/// undone, a read's event written or the commit made, nothing of the batch is written and every
/// request in it is answered with that error.
fn commit(conn: &mut Connection, batch: &mut Vec<Job>, stats: &Counters) {
    let mut answers = Vec::new();
    let mut waiting = Vec::new();
    let (mut applied, mut reads) = (0, 0);
    let mut outcome = run(conn, "BEGIN IMMEDIATE");
    for job in batch.drain(..) {
        match job {
            Job::Read(record, done) => {
                if outcome.is_ok() {
                    outcome = insert_audit(&mut LiteTx { conn, writer: true }, &record);
                    reads += 1;
                }
                waiting.push(done);
            }
            Job::Stop => {}
            // After a failure, the changes not run are dropped: their callers learn that the
            // change was not committed.
            Job::Change(change) => {
                if outcome.is_ok() {
                    match run_in_savepoint(conn, change) {
                        Ok((ok, answer)) => {
                            applied += usize::from(ok);
                            answers.push(answer);
                        }
                        Err(e) => outcome = Err(e),
                    }
                }
            }
        }
    }
    outcome = outcome.and_then(|()| run(conn, "COMMIT"));
    match &outcome {
        Ok(()) => stats.committed(applied, reads),
        Err(_) => {
            if !conn.is_autocommit() {
                let _ = run(conn, "ROLLBACK");
            }
        }
    }
    for answer in answers {
        answer(outcome.clone());
    }
    for done in waiting {
        let _ = done.send(outcome.clone());
    }
}

/// Runs `change` in a savepoint, rolled back if the change failed. Returns whether it
/// succeeded and how to answer its caller; an error only if the savepoint itself failed.
#[allow(clippy::type_complexity)]
fn run_in_savepoint(
    conn: &mut Connection,
    change: RunChange,
) -> Result<(bool, Box<dyn FnOnce(Result<(), StoreError>) + Send>), StoreError> {
    run(conn, "SAVEPOINT change")?;
    // A change that panics (a bug) fails alone: its caller, whose answer went with the panic,
    // learns that it was not committed, and the batch goes on without it.
    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
        change(&mut LiteTx { conn, writer: true })
    }))
    .unwrap_or_else(|_| Ran {
        ok: false,
        answer: Box::new(|_| {}),
    });
    // A statement that failed may have made SQLite roll back the whole transaction itself
    // (a full disk, an I/O error): then nothing of the batch is left to commit.
    if conn.is_autocommit() {
        return Err(StoreError::Unavailable {
            reason: "the batch's transaction was rolled back".into(),
        });
    }
    if !ran.ok {
        run(conn, "ROLLBACK TO change")?;
    }
    run(conn, "RELEASE change")?;
    Ok((ran.ok, ran.answer))
}

/// Runs a statement without arguments.
fn run(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests;
