//! PostgreSQL, on sqlx: the pool that serves reads, the threads that run changes and snapshots
//! (each in a transaction of its own, on a thread that owns its connection, so a change is the
//! same synchronous code as on SQLite: [`workers`]), and the task that group-commits the audit
//! events of reads.
//!
//! PostgreSQL's WAL writer already flushes the commits of concurrent transactions together
//! (`docs/PERFORMANCE.md`), so changes are not batched here; the events of reads, one row each,
//! are.

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Executor, Row};
use tokio::runtime::Runtime;

use super::change::{AUDIT_COLUMNS, AUDIT_PARAMS, AuditRecord, Counters, MAX_BATCH};
use super::db::{Arg, Backend, Change, Columns, DbError, Tx};
use crate::StoreError;

mod workers;
use workers::Workers;

/// The pool, the threads of changes and the read-event queue of one PostgreSQL database.
#[derive(Clone)]
pub(super) struct Pg {
    pool: AnyPool,
    /// The threads of changes.
    changes: Arc<Workers>,
    /// The threads of snapshots (scans): apart, so a burst of long reads cannot hold every
    /// thread that writes.
    snapshots: Arc<Workers>,
    events: tokio::sync::mpsc::UnboundedSender<ReadEvent>,
}

/// The pool's size (reads by key, and the reads' events). With the threads' connections, a
/// process opens at most `CONNECTIONS + CHANGE_THREADS + SNAPSHOT_THREADS` (32).
const CONNECTIONS: u32 = 12;

/// The threads (and connections) of changes: as many transactions as may commit together
/// (PostgreSQL flushes concurrent commits with one WAL write; fewer threads measured slower,
/// `docs/PERFORMANCE.md`).
const CHANGE_THREADS: usize = 16;

/// The threads (and connections) of snapshots.
const SNAPSHOT_THREADS: usize = 4;

/// The longest a transaction may sit idle between its statements before PostgreSQL ends it (an
/// interactive one waits at most 10 s for its next step).
const IDLE_IN_TRANSACTION: &str = "SET idle_in_transaction_session_timeout = 60000";

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").finish_non_exhaustive()
    }
}

/// The audit event of a read, and who waits for it to be durable.
type ReadEvent = (
    AuditRecord,
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
);

impl Pg {
    /// Connects to PostgreSQL at `url` and starts the read-event task (which ends when the last
    /// handle is dropped).
    pub(super) async fn connect(url: &str, stats: Arc<Counters>) -> Result<Self, StoreError> {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        // One connection first, so a database that is down, missing or refusing the login is
        // reported at once and with its cause, not after the pool's acquire timeout.
        let probe = AnyConnection::connect(url)
            .await
            .map_err(|e| StoreError::Unavailable {
                reason: format!("cannot connect to PostgreSQL: {}", connect_failure(&e)),
            })?;
        probe.close().await?;
        let pool = AnyPoolOptions::new()
            .max_connections(CONNECTIONS)
            .after_connect(|conn, _| Box::pin(prepare(conn)))
            // A database that stopped answering fails a request within seconds (a 503 the
            // client can retry elsewhere) instead of holding it for half a minute.
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        let (events, pending) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(flush_read_events(pool.clone(), stats, pending));
        Ok(Self {
            pool,
            changes: Arc::new(Workers::start(url, CHANGE_THREADS, "vault-pg-change")?),
            snapshots: Arc::new(Workers::start(url, SNAPSHOT_THREADS, "vault-pg-read")?),
            events,
        })
    }

    pub(super) async fn close(&self) {
        self.changes.close().await;
        self.snapshots.close().await;
        self.pool.close().await;
    }

    /// Writes the audit event of a read; returns once it is durable.
    pub(super) async fn read_event(&self, record: AuditRecord) -> Result<(), StoreError> {
        let gone = || StoreError::Unavailable {
            reason: "the audit writer stopped".into(),
        };
        let (done, wait) = tokio::sync::oneshot::channel();
        self.events.send((record, done)).map_err(|_| gone())?;
        wait.await.map_err(|_| gone())?
    }

    /// Starts `change` in a transaction of its own; the receiver gets its value once committed.
    pub(super) fn submit<C: Change>(
        &self,
        change: C,
        stats: Arc<Counters>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<C::Output, StoreError>>, StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.changes.queue(Box::new(move |worker| {
            // A caller that gave up before its change started does not have it run.
            if done.is_closed() {
                return;
            }
            let result = worker.in_transaction("BEGIN", |tx| change.run(tx));
            if result.is_ok() {
                stats.committed(1, 0);
            }
            let _ = done.send(result);
        }))?;
        Ok(wait)
    }

    /// The rows of a read, decoded.
    pub(super) async fn rows<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl Fn(&dyn Columns) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        query(sql, args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| decode(row))
            .collect()
    }

    /// The first row of a read, decoded.
    pub(super) async fn row<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl Fn(&dyn Columns) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        query(sql, args)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| decode(&row))
            .transpose()
    }

    /// Runs `f` in one read-only transaction that sees one snapshot.
    pub(super) async fn snapshot<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.snapshots
            .run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", f)?
            .await
            .map_err(|_| StoreError::Unavailable {
                reason: "a read failed".into(),
            })?
    }
}

/// Sets up a new connection as every connection of the store is.
async fn prepare(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute(IDLE_IN_TRANSACTION).await?;
    Ok(())
}

/// A PostgreSQL transaction, run statement by statement by the thread that owns its
/// connection (see [`workers`]). It remembers whether a statement failed: PostgreSQL then
/// refuses every later statement and turns the commit into a rollback.
struct PgTx<'c> {
    conn: &'c mut AnyConnection,
    runtime: &'c Runtime,
    failed: bool,
}

impl PgTx<'_> {
    /// `result`, noting a failure.
    fn noted<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.failed |= result.is_err();
        result
    }
}

impl Tx for PgTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        let done = self
            .runtime
            .block_on(query(sql, args).execute(&mut *self.conn));
        match self.noted(done) {
            Ok(done) => Ok(done.rows_affected()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(DbError::Unique),
            Err(e) => Err(DbError::Other(e.into())),
        }
    }

    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        row: &mut dyn FnMut(&dyn Columns) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let rows = self
            .runtime
            .block_on(query(sql, args).fetch_all(&mut *self.conn));
        for r in &self.noted(rows)? {
            if !row(r)? {
                break;
            }
        }
        Ok(())
    }

    fn script(&mut self, sql: &'static str) -> Result<(), StoreError> {
        let done = self
            .runtime
            .block_on(sqlx::raw_sql(sql).execute(&mut *self.conn));
        self.noted(done)?;
        Ok(())
    }
}

/// `sql` with `args` bound.
fn query<'q>(
    sql: &'q str,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    // Callers build `sql` from constants and numbered placeholders only: no data is spliced in.
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for arg in args {
        q = match *arg {
            Arg::Text(s) => q.bind(s),
            Arg::OptText(s) => q.bind(s),
            Arg::Blob(b) => q.bind(b),
            Arg::OptBlob(b) => q.bind(b),
            Arg::Int(n) => q.bind(n),
            Arg::OptInt(n) => q.bind(n),
        };
    }
    q
}

impl Columns for AnyRow {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn blob(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_blob(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.try_get(column)?)
    }
}

/// The task that group-commits reads' events: takes whatever is waiting (at least one),
/// writes it in one transaction, answers each read, and repeats until every handle is gone.
async fn flush_read_events(
    pool: AnyPool,
    stats: Arc<Counters>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<ReadEvent>,
) {
    let mut records = Vec::new();
    let mut waiting = Vec::new();
    while let Some((record, done)) = queue.recv().await {
        records.push(record);
        waiting.push(done);
        while records.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok((record, done)) => {
                    records.push(record);
                    waiting.push(done);
                }
                Err(_) => break,
            }
        }
        let outcome = insert_records(&pool, &records).await;
        if outcome.is_ok() {
            stats.committed(0, records.len());
        }
        records.clear();
        for done in waiting.drain(..) {
            let _ = done.send(outcome.clone());
        }
    }
}

/// Inserts the reads' events in one transaction, many rows per statement.
async fn insert_records(pool: &AnyPool, batch: &[AuditRecord]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for chunk in batch.chunks(MAX_BATCH) {
        let mut sql = format!("INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES ");
        for i in 0..chunk.len() {
            let b = i * AUDIT_PARAMS;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for j in 1..=AUDIT_PARAMS {
                if j > 1 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", b + j));
            }
            sql.push(')');
        }
        let derived = chunk
            .iter()
            .map(AuditRecord::derived)
            .collect::<Result<Vec<_>, _>>()?;
        let args: Vec<Arg<'_>> = chunk
            .iter()
            .zip(&derived)
            .flat_map(|(r, d)| r.args(d))
            .collect();
        query(&sql, &args).execute(&mut *tx).await?;
    }
    Ok(tx.commit().await?)
}

/// Why a connection failed, in words that never repeat the URL (it may hold a password).
fn connect_failure(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Tls(tls) => format!("TLS: {tls}"),
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::Configuration(_) => "the database URL is not valid".to_owned(),
        _ => "the database did not answer as PostgreSQL".to_owned(),
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let reason = match &e {
            sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".to_owned(),
            sqlx::Error::PoolClosed => "the database pool is closed".to_owned(),
            sqlx::Error::Io(_) => "database I/O error".to_owned(),
            sqlx::Error::Database(d) => match d.code() {
                Some(code) => format!("database error {code}"),
                None => "database error".to_owned(),
            },
            _ => "database error".to_owned(),
        };
        Self::Unavailable { reason }
    }
}

#[cfg(test)]
mod tests;
