//! The read connections: a small pool of `query_only` connections, at most [`MAX_READERS`] in
//! use at once, each read on the calling thread ([`Reader`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::tx::LiteTx;
use super::{Role, connect};
use crate::StoreError;
use crate::sql::db::Tx;

/// The longest a read by key waits for a lock before the request fails: it holds a tokio
/// worker meanwhile.
pub(super) const POINT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest a scan waits for a lock (it runs off the worker's other tasks, see
/// [`Reader::scan`]).
const SCAN_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The most idle read connections kept (a read on a busier moment opens one and closes it after).
const IDLE_READERS: usize = 8;

/// The most read connections open at once (each holds file descriptors: a burst of scans waits
/// for a slot instead of opening one each).
const MAX_READERS: usize = 16;

/// The read connections of one database file.
pub(super) struct Readers {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
    slots: Semaphore,
    closed: AtomicBool,
}

impl Readers {
    pub(super) fn new(path: &std::path::Path) -> Self {
        Self {
            path: path.to_owned(),
            idle: Mutex::default(),
            slots: Semaphore::new(MAX_READERS),
            closed: AtomicBool::new(false),
        }
    }

    /// A read connection, once a slot is free.
    ///
    /// # Errors
    /// `Unavailable` once the store is closed, or if the file cannot be opened.
    pub(super) async fn reader(&self) -> Result<Reader<'_>, StoreError> {
        let slot = self.slots.acquire().await.map_err(|_| closed())?;
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => connect(&self.path, Role::Reader)?,
        };
        Ok(Reader {
            conn: Some(conn),
            readers: self,
            _slot: slot,
        })
    }

    /// Refuses every later read and closes the idle connections.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.slots.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn put(&self, conn: Connection) {
        // A connection left inside a transaction (a read that panicked) is not kept.
        if !conn.is_autocommit() || self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_READERS
        {
            idle.push(conn);
        }
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable {
        reason: "the store is closed".into(),
    }
}

/// A read connection in use; back to the pool when dropped.
pub(in crate::sql) struct Reader<'r> {
    conn: Option<Connection>,
    readers: &'r Readers,
    _slot: SemaphorePermit<'r>,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers.put(conn);
        }
    }
}

impl Reader<'_> {
    fn tx(&self) -> Result<LiteTx<'_>, StoreError> {
        let conn = self.conn.as_ref().ok_or_else(closed)?;
        Ok(LiteTx {
            conn,
            writer: false,
        })
    }

    /// Runs a read by key on the calling thread: it takes microseconds, less than handing it
    /// to another thread and back.
    pub(in crate::sql) fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&mut self.tx()?)
    }

    /// Runs a read that may take a while (a scan) on the calling thread, telling a
    /// multi-threaded tokio runtime first, so the worker's other tasks move to another thread
    /// instead of waiting (on a single-threaded runtime there is nowhere to move them: it simply
    /// runs). It waits longer for a lock than a read by key.
    pub(in crate::sql) fn scan<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let run = || {
            let mut tx = self.tx()?;
            tx.conn.busy_timeout(SCAN_BUSY_TIMEOUT)?;
            let value = f(&mut tx);
            tx.conn.busy_timeout(POINT_BUSY_TIMEOUT)?;
            value
        };
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    }

    /// A scan ([`scan`](Self::scan)) whose statements see one snapshot (one read transaction).
    pub(in crate::sql) fn snapshot<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.scan(|tx| {
            tx.script("BEGIN")?;
            let value = f(tx);
            let ended = tx.script(if value.is_ok() { "COMMIT" } else { "ROLLBACK" });
            let value = value?;
            ended.map(|()| value)
        })
    }
}
