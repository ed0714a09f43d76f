//! Writes: where a change of objects and the audit event of a read go, the writer lock every
//! write transaction on SQLite queues on, and the group commit of reads' events on PostgreSQL.
//!
//! A change ([`Change`]) and a read's event are answered only once durable, and the requests of
//! a moment share one commit where the database gains by it:
//!
//! - **SQLite** has one writer at a time and every commit pays an fsync (`synchronous=FULL`):
//!   changes and reads' events go to the writer thread ([`super::lite`]), which commits
//!   everything waiting in one transaction, each change in its own savepoint.
//! - **PostgreSQL** commits each change in its own transaction on its own connection: its WAL
//!   writer already flushes the commits of concurrent transactions together
//!   (`docs/PERFORMANCE.md`). The events of reads are group-committed by a task here.

use std::sync::Arc;

use sqlx::AnyPool;

use super::change::{AUDIT_COLUMNS, AUDIT_PARAMS, AuditRecord, Change, Counters, MAX_BATCH};
use super::db::{Arg, DbError, Decode, Tx, query};
use super::{Backend, SqlStore};
use crate::{Actor, ObjectMeta, StoreError, Timestamp};

/// Where writes go (see the module documentation).
#[derive(Clone)]
pub(super) enum Writes {
    /// The SQLite writer thread.
    #[cfg(feature = "sqlite")]
    Lite(super::lite::Lite),
    /// The task that group-commits reads' events (changes run in transactions of their own).
    Task(tokio::sync::mpsc::UnboundedSender<ReadEvent>),
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes").finish_non_exhaustive()
    }
}

/// The audit event of a read, and who waits for it to be durable.
pub(super) type ReadEvent = (
    AuditRecord,
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
);

/// What the flusher needs of the store: the pool, the backend and the writer lock (not the
/// queue itself, so the task ends when the last store handle is dropped).
#[derive(Debug, Clone)]
pub(super) struct Writer {
    pub(super) pool: AnyPool,
    pub(super) backend: Backend,
    pub(super) lock: Arc<tokio::sync::Mutex<()>>,
    pub(super) stats: Arc<Counters>,
}

impl Writer {
    /// A transaction that will write. On SQLite it first takes this process's writer lock,
    /// then SQLite's write lock at once (`BEGIN IMMEDIATE`), so writers queue instead of failing
    /// on a lock upgrade; other processes on the same file still queue on `busy_timeout`.
    pub(super) async fn begin(&self) -> Result<WriteTx, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let writer = self.lock.clone().lock_owned().await;
                WriteTx {
                    tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
                    _writer: Some(writer),
                }
            }
            Backend::Postgres => WriteTx {
                tx: self.pool.begin().await?,
                _writer: None,
            },
        })
    }

    /// The task that group-commits reads' events: takes whatever is waiting (at least one),
    /// writes it in one transaction, answers each read, and repeats until every store handle is
    /// gone.
    pub(super) async fn run(self, mut queue: tokio::sync::mpsc::UnboundedReceiver<ReadEvent>) {
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
            let outcome = self.commit(&records).await;
            if outcome.is_ok() {
                self.stats.committed(0, records.len());
            }
            records.clear();
            for done in waiting.drain(..) {
                let _ = done.send(outcome.clone());
            }
        }
    }

    async fn commit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        insert_records(&mut tx, records).await?;
        Ok(tx.commit().await?)
    }
}

/// Inserts the reads' events, many rows per statement.
async fn insert_records(tx: &mut WriteTx, batch: &[AuditRecord]) -> Result<(), StoreError> {
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
        // Built from constants and numbered placeholders only: no data is spliced in.
        query(&sql, &args).execute(&mut **tx).await?;
    }
    Ok(())
}

/// A write transaction, holding the writer lock on SQLite until it commits or is dropped.
pub(super) struct WriteTx {
    pub(super) tx: sqlx::Transaction<'static, sqlx::Any>,
    pub(super) _writer: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl WriteTx {
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl SqlStore {
    /// Records the audit event of a read and returns once it is durable (group-committed with
    /// the other reads of the moment).
    pub(super) async fn audit_read(
        &self,
        event: &str,
        environment: &str,
        actor: &Actor,
        meta: Option<&ObjectMeta>,
    ) -> Result<(), StoreError> {
        self.audit_read_record(AuditRecord {
            environment: environment.to_owned(),
            event: event.to_owned(),
            actor: actor.clone(),
            object: meta.map(|m| (m.id.clone(), m.name.clone())),
            key_id: meta.map(|m| m.key_id.clone()),
            key_context: meta.map(|m| m.context.clone()),
            detail: None,
            at: Timestamp::now(),
        })
        .await
    }

    pub(super) async fn audit_read_record(&self, record: AuditRecord) -> Result<(), StoreError> {
        match &self.writes {
            #[cfg(feature = "sqlite")]
            Writes::Lite(lite) => lite.read_event(record).await,
            Writes::Task(queue) => {
                let gone = || StoreError::Unavailable {
                    reason: "the audit writer stopped".into(),
                };
                let (done, wait) = tokio::sync::oneshot::channel();
                queue.send((record, done)).map_err(|_| gone())?;
                wait.await.map_err(|_| gone())?
            }
        }
    }

    /// Runs `change` in a write transaction and returns its value once the change is durable:
    /// on SQLite in the writer thread's next group commit, on PostgreSQL in a transaction of its
    /// own.
    ///
    /// # Errors
    /// The change's error (nothing of it is written), or the commit's.
    pub(super) async fn change<C: Change>(&self, change: C) -> Result<C::Output, StoreError> {
        match &self.writes {
            #[cfg(feature = "sqlite")]
            Writes::Lite(lite) => lite.change(change).await,
            Writes::Task(_) => {
                let mut tx = self.begin_write().await?;
                let value = change.run(&mut tx).await?;
                tx.commit().await?;
                self.stats.committed(1, 0);
                Ok(value)
            }
        }
    }
}

/// A PostgreSQL (or sqlx SQLite) write transaction runs a change's statements.
impl Tx for WriteTx {
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        match query(sql, args).execute(&mut **self).await {
            Ok(done) => Ok(done.rows_affected()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(DbError::Unique),
            Err(e) => Err(DbError::Other(e.into())),
        }
    }

    async fn fetch<T: Send>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Option<T>, StoreError> {
        query(sql, args)
            .fetch_optional(&mut **self)
            .await?
            .map(|row| decode(&row))
            .transpose()
    }
}
