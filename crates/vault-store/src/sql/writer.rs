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
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::AnyPool;

use super::db::{self, Arg, Tx, args};
use super::{Backend, SqlStore};
use crate::ids::new_event_id;
use crate::{Actor, ObjectMeta, StoreError, Timestamp};
use vault_crypto::KeyContext;

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
macro_rules! audit_columns {
    () => {
        "event_id, environment, event, actor_id, actor_name, object_id, object_name, key_id, \
         key_context, organization_id, occurred_at, detail"
    };
}
const AUDIT_COLUMNS: &str = audit_columns!();
const AUDIT_PARAMS: usize = 12;

/// What an event's row holds beyond its record: a fresh public event id and the key context
/// as JSON.
struct Derived {
    event_id: String,
    context: Option<String>,
}

impl AuditRecord {
    fn derived(&self) -> Result<Derived, StoreError> {
        Ok(Derived {
            event_id: new_event_id(self.at)?,
            context: self.key_context.as_ref().map(KeyContext::to_json),
        })
    }

    /// The row's arguments, in [`AUDIT_COLUMNS`] order.
    fn args<'a>(&'a self, derived: &'a Derived) -> [Arg<'a>; AUDIT_PARAMS] {
        let (object_id, object_name) = match &self.object {
            Some((id, name)) => (Some(id.as_str()), Some(name.as_str())),
            None => (None, None),
        };
        let organization = self
            .key_context
            .as_ref()
            .and_then(|c| c.get("organization_id"));
        *args![
            &derived.event_id,
            &self.environment,
            &self.event,
            &self.actor.id,
            &self.actor.name,
            object_id,
            object_name,
            self.key_id.as_deref(),
            derived.context.as_deref(),
            organization,
            self.at.0,
            self.detail.as_deref(),
        ]
    }
}

/// A change of objects (create, update, delete, rewrap): run in a write transaction of either
/// engine, with its own audit event, and answered once it is durable.
pub(super) trait Change: Send + 'static {
    type Output: Send + 'static;

    fn run<X: Tx>(
        self,
        tx: &mut X,
    ) -> impl Future<Output = Result<Self::Output, StoreError>> + Send;
}

/// The most events one group commit writes (and rows of one INSERT: 12 parameters each, far below
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
        db::query(&sql, &args).execute(&mut **tx).await?;
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

/// Appends an audit event inside `tx`.
pub(super) async fn audit_change<X: Tx>(
    tx: &mut X,
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

/// Writes one audit event in `tx`.
pub(super) async fn insert_audit<X: Tx>(tx: &mut X, r: &AuditRecord) -> Result<(), StoreError> {
    const SQL: &str = concat!(
        "INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    let derived = r.derived()?;
    tx.execute(SQL, &r.args(&derived)).await?;
    Ok(())
}
