//! The writer: one task that group-commits every change of objects (create, update, delete,
//! rewrap) and the audit events of reads on SQLite, and the writer lock every other write
//! transaction queues on.
//!
//! SQLite has one writer at a time and every commit pays an fsync (`synchronous=FULL`). So
//! instead of one transaction per request, requests hand their change to the writer task, which
//! takes every change waiting at that moment, runs each in its own savepoint of one
//! transaction (a change that fails, a version conflict or a name already taken, rolls back
//! alone and the others go on), commits once, and only then answers each request: an answered
//! change is durable, and the changes of a moment share one fsync. Each change is still its
//! own compare-and-set with its own audit event, run in arrival order, and sees the changes
//! before it in the batch.
//!
//! PostgreSQL commits each change in its own transaction on its own connection: its WAL writer
//! already flushes the commits of concurrent transactions together (`docs/PERFORMANCE.md`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt as _;
use sqlx::{AnyPool, AssertSqlSafe};

use super::{Backend, SqlStore};
use crate::ids::new_event_id;
use crate::{Actor, ObjectMeta, StoreError, Timestamp};
use vault_crypto::KeyContext;

/// The queue of the writer task. The audit events of reads (values, metadata, names, data
/// keys) are group-committed on both databases: a read is still answered only once its event is
/// on disk, but the concurrent reads of a moment share one transaction and one fsync. Changes
/// of objects join them on SQLite.
#[derive(Clone)]
pub(super) struct Writes {
    pub(super) queue: tokio::sync::mpsc::UnboundedSender<Pending>,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes").finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(super) struct AuditRecord {
    pub(super) environment: String,
    pub(super) event: String,
    pub(super) actor: Actor,
    pub(super) object: Option<(String, String)>,
    pub(super) key_id: Option<String>,
    pub(super) key_context: Option<KeyContext>,
    /// Fields of the event no other column holds, as a JSON object.
    pub(super) detail: Option<String>,
    pub(super) at: Timestamp,
}

/// The columns of one `audit_events` row, in [`AUDIT_COLUMNS`] order.
const AUDIT_COLUMNS: &str = "event_id, environment, event, actor_id, actor_name, object_id, \
     object_name, key_id, key_context, organization_id, occurred_at, detail";
const AUDIT_PARAMS: usize = 12;

impl AuditRecord {
    /// Binds the record's columns, with a fresh public event id, to `q`.
    fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>, StoreError> {
        Ok(q.bind(new_event_id(self.at)?)
            .bind(self.environment.clone())
            .bind(self.event.clone())
            .bind(self.actor.id.clone())
            .bind(self.actor.name.clone())
            .bind(self.object.as_ref().map(|o| o.0.clone()))
            .bind(self.object.as_ref().map(|o| o.1.clone()))
            .bind(self.key_id.clone())
            .bind(self.key_context.as_ref().map(KeyContext::to_json))
            .bind(
                self.key_context
                    .as_ref()
                    .and_then(|c| c.get("organization_id"))
                    .map(str::to_owned),
            )
            .bind(self.at.0)
            .bind(self.detail.clone()))
    }
}

/// A future borrowing the batch's transaction.
pub(super) type TxFuture<'t, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 't>>;

/// One change waiting for the next group commit: it runs inside the batch's transaction and
/// says whether it succeeded and how to answer its caller once the batch's fate is known.
pub(super) type Change = Box<dyn for<'t> FnOnce(&'t mut WriteTx) -> TxFuture<'t, Ran> + Send>;

/// What a change left to do after running.
pub(super) struct Ran {
    /// It succeeded: its savepoint is released (else rolled back).
    ok: bool,
    /// Answers the caller with the commit's outcome.
    answer: Answer,
}

/// What the writer task is handed.
pub(super) enum Pending {
    /// The audit event of a read, and who waits for it to be durable.
    Read(
        Box<AuditRecord>,
        tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    ),
    /// A change (SQLite only; see the module documentation).
    Change(Change),
}

/// Makes a [`Change`] of `f`, whose result reaches `done` once the batch holding it commits:
/// the commit's error if the commit failed (whatever the change saw was judged against changes
/// that are now undone), else the change's own result.
pub(super) fn change<T, F>(
    f: F,
    done: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
) -> Change
where
    T: Send + 'static,
    F: for<'t> FnOnce(&'t mut WriteTx) -> TxFuture<'t, Result<T, StoreError>> + Send + 'static,
{
    Box::new(move |tx| {
        Box::pin(async move {
            let result = f(tx).await;
            Ran {
                ok: result.is_ok(),
                answer: Box::new(move |committed| {
                    let _ = done.send(committed.and(result));
                }),
            }
        })
    })
}

/// The most events one group commit writes (and rows of one INSERT: 11 parameters each, far below
/// SQLite's and PostgreSQL's parameter limits).
pub(super) const MAX_BATCH: usize = 256;

/// What the flusher needs of the store: the pool, the backend and the writer lock (not the
/// queue itself, so the task ends when the last store handle is dropped).
#[derive(Debug, Clone)]
pub(super) struct Writer {
    pub(super) pool: AnyPool,
    pub(super) backend: Backend,
    pub(super) lock: Arc<tokio::sync::Mutex<()>>,
    pub(super) stats: Arc<Counters>,
}

/// What the writer committed (see [`crate::WriteStats`]).
#[derive(Debug, Default)]
pub(super) struct Counters {
    commits: AtomicU64,
    changes: AtomicU64,
    read_events: AtomicU64,
}

impl Counters {
    pub(super) fn committed(&self, changes: usize, read_events: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.changes.fetch_add(changes as u64, Ordering::Relaxed);
        self.read_events
            .fetch_add(read_events as u64, Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> crate::WriteStats {
        crate::WriteStats {
            commits: self.commits.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
            read_events: self.read_events.load(Ordering::Relaxed),
        }
    }
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

    /// The writer task: takes whatever is waiting (at least one), commits it together, answers
    /// each request, and repeats until every store handle is gone.
    pub(super) async fn run(self, mut queue: tokio::sync::mpsc::UnboundedReceiver<Pending>) {
        let mut batch = Vec::new();
        while let Some(first) = queue.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch).await;
        }
    }

    /// Runs the changes of `batch` in one transaction, each in its own savepoint, writes the
    /// reads' events, commits, and answers everyone. A change whose savepoint cannot even be
    /// set or undone fails the whole batch, and every request in it is answered with that
    /// error (nothing of the batch is written then).
    async fn commit(&self, batch: &mut Vec<Pending>) {
        let mut records = Vec::new();
        let mut waiting = Vec::new();
        let mut answers = Vec::new();
        let mut applied = 0;
        let mut failed = None;
        let mut tx = match self.begin().await {
            Ok(tx) => Some(tx),
            Err(e) => {
                failed = Some(e);
                None
            }
        };
        for pending in batch.drain(..) {
            match pending {
                Pending::Read(record, done) => {
                    records.push(*record);
                    waiting.push(done);
                }
                // After a failure, the changes not run are dropped: their callers learn that
                // the change was not committed.
                Pending::Change(change) => {
                    if let (Some(tx), None) = (tx.as_mut(), &failed) {
                        match run_in_savepoint(tx, change, answers.is_empty()).await {
                            Ok((ok, answer)) => {
                                applied += usize::from(ok);
                                answers.push(answer);
                            }
                            Err(e) => failed = Some(e),
                        }
                    }
                }
            }
        }
        let outcome = match (tx, failed) {
            (Some(mut tx), None) => match insert_records(&mut tx, &records).await {
                Ok(()) => tx.commit().await.map_err(StoreError::from),
                Err(e) => Err(e),
            }
            .inspect(|()| self.stats.committed(applied, records.len())),
            (_, Some(e)) => Err(e),
            (None, None) => Err(StoreError::Unavailable {
                reason: "no write transaction".into(),
            }),
        };
        for answer in answers {
            answer(outcome.clone());
        }
        for done in waiting {
            let _ = done.send(outcome.clone());
        }
    }
}

/// How to answer a change's caller once the batch's commit is known.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Runs `change` in a savepoint of `tx` (the batch's `first` change opens it; each later one
/// releases the one before and opens its own, in one round trip; the commit releases the last),
/// rolled back if the change failed. Returns whether it succeeded and how to answer its caller;
/// an error only if the savepoint itself failed.
async fn run_in_savepoint(
    tx: &mut WriteTx,
    change: Change,
    first: bool,
) -> Result<(bool, Answer), StoreError> {
    let open = if first {
        "SAVEPOINT change"
    } else {
        "RELEASE change; SAVEPOINT change"
    };
    sqlx::raw_sql(open).execute(&mut **tx).await?;
    // A change that panics (a bug) fails alone: its caller, whose answer went with the panic,
    // learns that it was not committed, and the batch goes on without it.
    let ran = match AssertUnwindSafe(change(tx)).catch_unwind().await {
        Ok(ran) => ran,
        Err(_) => Ran {
            ok: false,
            answer: Box::new(|_| {}),
        },
    };
    if !ran.ok {
        sqlx::query("ROLLBACK TO change").execute(&mut **tx).await?;
    }
    Ok((ran.ok, ran.answer))
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
        // Built from constants and numbered placeholders only: no data is spliced in.
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for r in chunk {
            q = r.bind(q)?;
        }
        q.execute(&mut **tx).await?;
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
        let gone = || StoreError::Unavailable {
            reason: "the audit writer stopped".into(),
        };
        let (done, wait) = tokio::sync::oneshot::channel();
        self.writes
            .queue
            .send(Pending::Read(Box::new(record), done))
            .map_err(|_| gone())?;
        wait.await.map_err(|_| gone())?
    }

    /// Runs `f` in a write transaction and returns its value once the change is durable: on
    /// SQLite in the next group commit (see the module documentation), on PostgreSQL in a
    /// transaction of its own.
    ///
    /// # Errors
    /// `f`'s error (nothing of the change is written), or the commit's.
    pub(super) async fn change<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut WriteTx) -> TxFuture<'t, Result<T, StoreError>> + Send + 'static,
    {
        if self.backend == Backend::Postgres {
            let mut tx = self.begin_write().await?;
            let value = f(&mut tx).await?;
            tx.commit().await?;
            self.stats.committed(1, 0);
            return Ok(value);
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        self.writes
            .queue
            .send(Pending::Change(change(f, done)))
            .map_err(|_| StoreError::Unavailable {
                reason: "the writer stopped".into(),
            })?;
        wait.await.map_err(|_| StoreError::Unavailable {
            reason: "the change was not committed: its batch failed".into(),
        })?
    }
}

/// Appends an audit event inside `tx`.
pub(super) async fn audit_change(
    tx: &mut WriteTx,
    event: &str,
    environment: &str,
    actor: &Actor,
    meta: Option<&ObjectMeta>,
    at: Timestamp,
) -> Result<(), StoreError> {
    let record = AuditRecord {
        environment: environment.to_owned(),
        event: event.to_owned(),
        actor: actor.clone(),
        object: meta.map(|m| (m.id.clone(), m.name.clone())),
        key_id: meta.map(|m| m.key_id.clone()),
        key_context: meta.map(|m| m.context.clone()),
        detail: None,
        at,
    };
    insert_audit(tx, &record).await
}

/// Writes one audit event in the change's own transaction.
pub(super) async fn insert_audit(tx: &mut WriteTx, r: &AuditRecord) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO audit_events ({AUDIT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    // Built from constants and numbered placeholders only: no data is spliced in.
    r.bind(sqlx::query(AssertSqlSafe(sql)))?
        .execute(&mut **tx)
        .await?;
    Ok(())
}
