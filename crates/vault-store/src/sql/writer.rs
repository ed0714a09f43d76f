//! The SQLite writer queue (one writer at a time, in order) and the group-committed audit
//! events of reads.

use std::sync::Arc;

use sqlx::{AnyPool, AssertSqlSafe};

use super::{Backend, SqlStore};
use crate::ids::new_event_id;
use crate::{Actor, ObjectMeta, StoreError, Timestamp};
use vault_crypto::KeyContext;

/// The audit events of reads (values, metadata, names, data keys) are group-committed: each
/// request hands its event to one flusher task and waits until the batch holding it is durable,
/// so a read is still answered only once its event is on disk, but the concurrent reads of a
/// moment share one transaction and one fsync instead of paying one each. Changes (create,
/// update, delete) keep writing their event in their own transaction.
#[derive(Debug, Clone)]
pub(super) struct ReadAudit {
    pub(super) queue: tokio::sync::mpsc::UnboundedSender<PendingEvent>,
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

type PendingEvent = (
    AuditRecord,
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
);

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

    /// Writes `batch` in one transaction.
    pub(super) async fn write(&self, batch: &[AuditRecord]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
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
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The flusher: takes whatever events are waiting (at least one), commits them together,
    /// answers each request, and repeats until every store handle is gone.
    pub(super) async fn flush_reads(
        self,
        mut queue: tokio::sync::mpsc::UnboundedReceiver<PendingEvent>,
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
            let result = self.write(&records).await;
            for done in waiting.drain(..) {
                let _ = done.send(result.clone());
            }
            records.clear();
        }
    }
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
        self.reads.queue.send((record, done)).map_err(|_| gone())?;
        wait.await.map_err(|_| gone())?
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
