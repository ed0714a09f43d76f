//! The SQL backend: one implementation over sqlx's `Any` driver, so every query is written once
//! (with `$N` parameters, which both SQLite and PostgreSQL accept) and runs on either database.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};
use vault_crypto::KeyContext;

use crate::types::{
    Actor, ApiKeyRecord, AuditEvent, Cursor, DEFAULT_LIMIT, KeyUsage, ListItem, ListQuery,
    MAX_LIMIT, NewVersion, ObjectMeta, Order, Page, StoredObject, StoredVersion, Timestamp,
    VersionMeta, etag, events, is_object_id, new_version_id, validate_environment, validate_name,
};
use crate::{Conflict, Store, StoreError};

/// The schema migrations, (version, SQLite, PostgreSQL), applied in order; each version that a
/// database has not seen yet runs once, in the migration transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        include_str!("../migrations/sqlite-1.sql"),
        include_str!("../migrations/postgres-1.sql"),
    ),
    (
        2,
        include_str!("../migrations/sqlite-2.sql"),
        include_str!("../migrations/postgres-2.sql"),
    ),
    (
        3,
        include_str!("../migrations/sqlite-3.sql"),
        include_str!("../migrations/postgres-3.sql"),
    ),
];
/// The schema version this code writes; stored in `vault_schema`.
const SCHEMA_VERSION: i64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A [`Store`] on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time. Writers of this process queue here, in order, instead of
    /// polling SQLite's busy handler (which sleeps up to 100 ms between tries).
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Audit events of reads, written in group commits by the flusher task (see [`ReadAudit`]).
    reads: ReadAudit,
}

/// The audit events of reads (values, metadata, names, data keys) are group-committed: each
/// request hands its event to one flusher task and waits until the batch holding it is durable,
/// so a read is still answered only once its event is on disk, but the concurrent reads of a
/// moment share one transaction and one fsync instead of paying one each. Changes (create,
/// update, delete) keep writing their event in their own transaction.
#[derive(Debug, Clone)]
struct ReadAudit {
    queue: tokio::sync::mpsc::UnboundedSender<PendingEvent>,
}

#[derive(Debug)]
struct AuditRecord {
    environment: String,
    event: String,
    actor: Actor,
    object: Option<(String, String)>,
    key_id: Option<String>,
    key_context: Option<String>,
    at: Timestamp,
}

type PendingEvent = (
    AuditRecord,
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
);

/// The most events one group commit writes (and rows of one INSERT: 9 parameters each, far below
/// SQLite's and PostgreSQL's parameter limits).
const MAX_BATCH: usize = 256;

/// What the flusher needs of the store: the pool, the backend and the writer lock (not the
/// queue itself, so the task ends when the last store handle is dropped).
#[derive(Debug, Clone)]
struct Writer {
    pool: AnyPool,
    backend: Backend,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Writer {
    /// A transaction that will write. On SQLite it first takes this process's writer lock,
    /// then SQLite's write lock at once (`BEGIN IMMEDIATE`), so writers queue instead of failing
    /// on a lock upgrade; other processes on the same file still queue on `busy_timeout`.
    async fn begin(&self) -> Result<WriteTx, StoreError> {
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
    async fn write(&self, batch: &[AuditRecord]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for chunk in batch.chunks(MAX_BATCH) {
            let mut sql = String::from(
                "INSERT INTO audit_events (environment, event, actor_id, actor_name, object_id, \
                 object_name, key_id, key_context, occurred_at) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 9;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for j in 1..=9 {
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
                q = q
                    .bind(r.environment.clone())
                    .bind(r.event.clone())
                    .bind(r.actor.id.clone())
                    .bind(r.actor.name.clone())
                    .bind(r.object.as_ref().map(|o| o.0.clone()))
                    .bind(r.object.as_ref().map(|o| o.1.clone()))
                    .bind(r.key_id.clone())
                    .bind(r.key_context.clone())
                    .bind(r.at.0);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The flusher: takes whatever events are waiting (at least one), commits them together,
    /// answers each request, and repeats until every store handle is gone.
    async fn flush_reads(self, mut queue: tokio::sync::mpsc::UnboundedReceiver<PendingEvent>) {
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
struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _writer: Option<tokio::sync::OwnedMutexGuard<()>>,
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
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

/// The metadata columns, joined with the current version.
const META_COLUMNS: &str = "o.id, o.environment, o.name, o.context, o.current_version, \
     o.created_at, o.updated_at, v.key_id, v.created_by_id, v.created_by_name";
const META_FROM: &str =
    "objects o JOIN versions v ON v.object_id = o.id AND v.id = o.current_version";

impl SqlStore {
    /// Opens (creating if needed) the SQLite store `vault.db` in `data_dir`: WAL journal,
    /// `synchronous=FULL` (an acknowledged write survives a power cut), schema applied. A new
    /// directory is made 0700 and a new `vault.db` 0600 (SQLite gives its `-wal` and `-shm`
    /// files the database's mode), whatever the umask.
    ///
    /// # Errors
    /// `Unavailable` if the file cannot be opened or migrated.
    #[cfg(feature = "sqlite")]
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|_| StoreError::Unavailable {
                reason: "cannot create the data directory".into(),
            })?;
        let path = Self::sqlite_path(data_dir);
        // Created here, empty, with its mode, so SQLite never creates it with the umask's.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(_) => {
                return Err(StoreError::Unavailable {
                    reason: "cannot create vault.db in the data directory".into(),
                });
            }
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let store = Self::new(pool, Backend::Sqlite);
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to PostgreSQL at `url` and applies the schema (safely from several processes
    /// at once).
    ///
    /// # Errors
    /// `Unavailable` if the server cannot be reached or migrated.
    #[cfg(feature = "postgres")]
    pub async fn connect_postgres(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        let store = Self::new(pool, Backend::Postgres);
        store.migrate().await?;
        Ok(store)
    }

    /// A store over `pool`, with its read-audit flusher running.
    fn new(pool: AnyPool, backend: Backend) -> Self {
        let writer: Arc<tokio::sync::Mutex<()>> = Arc::default();
        let (queue, pending) = tokio::sync::mpsc::unbounded_channel();
        let flusher = Writer {
            pool: pool.clone(),
            backend,
            lock: writer.clone(),
        };
        tokio::spawn(flusher.flush_reads(pending));
        Self {
            pool,
            backend,
            writer,
            reads: ReadAudit { queue },
        }
    }

    /// Records the audit event of a read and returns once it is durable (group-committed with
    /// the other reads of the moment).
    async fn audit_read(
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
            key_context: meta.map(|m| m.context.to_json()),
            at: Timestamp::now(),
        })
        .await
    }

    async fn audit_read_record(&self, record: AuditRecord) -> Result<(), StoreError> {
        let gone = || StoreError::Unavailable {
            reason: "the audit writer stopped".into(),
        };
        let (done, wait) = tokio::sync::oneshot::channel();
        self.reads.queue.send((record, done)).map_err(|_| gone())?;
        wait.await.map_err(|_| gone())?
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // Serialise concurrent migrations from several server processes.
            tx.execute("SELECT pg_advisory_xact_lock(7271632)").await?;
        }
        tx.execute("CREATE TABLE IF NOT EXISTS vault_schema (version BIGINT NOT NULL)")
            .await?;
        let current: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM vault_schema")
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
        if let Some(v) = current
            && v > SCHEMA_VERSION
        {
            return Err(StoreError::Unavailable {
                reason: format!("the database schema (v{v}) is newer than this program"),
            });
        }
        for &(version, sqlite, postgres) in MIGRATIONS {
            if current.is_some_and(|v| v >= version) {
                continue;
            }
            let schema = match self.backend {
                Backend::Sqlite => sqlite,
                Backend::Postgres => postgres,
            };
            tx.execute(schema).await?;
            sqlx::query("INSERT INTO vault_schema (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A write transaction (see [`Writer::begin`]).
    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        Writer {
            pool: self.pool.clone(),
            backend: self.backend,
            lock: self.writer.clone(),
        }
        .begin()
        .await
    }

    /// The SQLite database file of a data directory.
    pub fn sqlite_path(data_dir: &Path) -> std::path::PathBuf {
        data_dir.join("vault.db")
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The `n` column of a `COUNT(*)`.
fn count(row: &AnyRow) -> Result<u64, StoreError> {
    let n: i64 = row.try_get("n")?;
    u64::try_from(n).map_err(|_| StoreError::Unavailable {
        reason: "a negative count".into(),
    })
}

fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::invalid("size", "too large"))
}

fn meta_from_row(row: &AnyRow) -> Result<ObjectMeta, StoreError> {
    let context: Vec<u8> = row.try_get("context")?;
    let context =
        KeyContext::from_canonical_bytes(&context).map_err(|_| StoreError::Unavailable {
            reason: "a stored key context is corrupt".into(),
        })?;
    Ok(ObjectMeta {
        id: row.try_get("id")?,
        environment: row.try_get("environment")?,
        name: row.try_get("name")?,
        context,
        key_id: row.try_get("key_id")?,
        version_id: row.try_get("current_version")?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        updated_by: Actor {
            id: row.try_get("created_by_id")?,
            name: row.try_get("created_by_name")?,
        },
    })
}

/// Appends an audit event inside `tx`.
async fn audit(
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
        key_context: meta.map(|m| m.context.to_json()),
        at,
    };
    insert_audit(tx, &record).await
}

/// Writes one audit event in the change's own transaction.
async fn insert_audit(tx: &mut WriteTx, r: &AuditRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (environment, event, actor_id, actor_name, object_id, \
         object_name, key_id, key_context, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&r.environment)
    .bind(&r.event)
    .bind(&r.actor.id)
    .bind(&r.actor.name)
    .bind(r.object.as_ref().map(|o| o.0.clone()))
    .bind(r.object.as_ref().map(|o| o.1.clone()))
    .bind(r.key_id.clone())
    .bind(r.key_context.clone())
    .bind(r.at.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn check_id(id: &str) -> Result<(), StoreError> {
    // An id that cannot exist is simply not found (and never reaches SQL).
    if is_object_id(id) {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

impl SqlStore {
    /// Reads metadata (and optionally the envelope) of a live object, then records `event`.
    async fn read(
        &self,
        environment: &str,
        by: (&str, &str),
        with_envelope: bool,
        event: &str,
        actor: &Actor,
    ) -> Result<(ObjectMeta, Option<Vec<u8>>), StoreError> {
        validate_environment(environment)?;
        let (column, value) = by;
        let envelope_col = if with_envelope { ", v.envelope" } else { "" };
        let sql = format!(
            "SELECT {META_COLUMNS}{envelope_col} FROM {META_FROM} \
             WHERE o.environment = $1 AND o.{column} = $2 AND o.deleted_at IS NULL"
        );
        // Built from constants and numbered placeholders only: no data is spliced in.
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(environment)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        let meta = meta_from_row(&row)?;
        let envelope = if with_envelope {
            Some(row.try_get::<Vec<u8>, _>("envelope")?)
        } else {
            None
        };
        self.audit_read(event, environment, actor, Some(&meta))
            .await?;
        Ok((meta, envelope))
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn create(
        &self,
        environment: &str,
        id: &str,
        name: &str,
        context: &KeyContext,
        version: NewVersion,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError> {
        validate_environment(environment)?;
        let name = validate_name(name)?;
        if !is_object_id(id) {
            return Err(StoreError::invalid("id", "not an object id"));
        }
        let now = Timestamp::now();
        let meta = ObjectMeta {
            id: id.to_owned(),
            environment: environment.to_owned(),
            name: name.to_owned(),
            context: context.clone(),
            key_id: version.key_id.clone(),
            version_id: new_version_id()?,
            created_at: now,
            updated_at: now,
            updated_by: actor.clone(),
        };
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query(
            "SELECT 1 AS x FROM objects WHERE environment = $1 AND name = $2 AND deleted_at IS NULL",
        )
        .bind(environment)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(Conflict::Name));
        }
        let inserted = sqlx::query(
            "INSERT INTO objects (id, environment, name, context, current_version, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&meta.id)
        .bind(environment)
        .bind(name)
        .bind(context.canonical_bytes().to_vec())
        .bind(&meta.version_id)
        .bind(now.0)
        .bind(now.0)
        .execute(&mut *tx)
        .await;
        if let Err(sqlx::Error::Database(e)) = &inserted
            && e.is_unique_violation()
        {
            // Another writer took the name between the check and the insert (PostgreSQL), or
            // the id is taken.
            return Err(StoreError::Conflict(Conflict::Name));
        }
        inserted?;
        insert_version(&mut tx, &meta.id, 1, &meta.version_id, &version, actor, now).await?;
        audit(
            &mut tx,
            events::DATA_CREATED,
            environment,
            actor,
            Some(&meta),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(meta)
    }

    async fn get(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<StoredObject, StoreError> {
        check_id(id)?;
        let (meta, envelope) = self
            .read(environment, ("id", id), true, events::DATA_READ, actor)
            .await?;
        Ok(StoredObject {
            meta,
            envelope: envelope.unwrap_or_default(),
        })
    }

    async fn get_by_name(
        &self,
        environment: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<StoredObject, StoreError> {
        let name = validate_name(name).map_err(|_| StoreError::NotFound)?;
        let (meta, envelope) = self
            .read(environment, ("name", name), true, events::DATA_READ, actor)
            .await?;
        Ok(StoredObject {
            meta,
            envelope: envelope.unwrap_or_default(),
        })
    }

    async fn context_of(&self, environment: &str, id: &str) -> Result<KeyContext, StoreError> {
        validate_environment(environment)?;
        check_id(id)?;
        let row = sqlx::query(
            "SELECT context FROM objects WHERE environment = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(environment)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let bytes: Vec<u8> = row.try_get("context")?;
        KeyContext::from_canonical_bytes(&bytes).map_err(|_| StoreError::Unavailable {
            reason: "a stored key context is corrupt".into(),
        })
    }

    async fn describe(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError> {
        check_id(id)?;
        let (meta, _) = self
            .read(environment, ("id", id), false, events::METADATA_READ, actor)
            .await?;
        Ok(meta)
    }

    async fn list(
        &self,
        environment: &str,
        query: &ListQuery,
        actor: &Actor,
    ) -> Result<Page, StoreError> {
        validate_environment(environment)?;
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(StoreError::invalid_query(
                "limit",
                "must be between 1 and 100",
            ));
        }
        if query.before.is_some() && query.after.is_some() {
            return Err(StoreError::invalid_query(
                "before",
                "give before or after, not both",
            ));
        }
        let search = match &query.search {
            Some(s) if s.chars().count() > 200 => {
                return Err(StoreError::invalid_query(
                    "search",
                    "longer than 200 characters",
                ));
            }
            Some(s) if !s.is_empty() => Some(format!("%{}%", escape_like(&s.to_lowercase()))),
            _ => None,
        };
        // Walking backwards (`before`) reads in the opposite order, then flips the page.
        let backwards = query.before.is_some();
        let ascending = (query.order == Order::Asc) != backwards;
        let (cmp, dir) = if ascending {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        let cursor = query.before.as_ref().or(query.after.as_ref());

        let mut sql = String::from(
            "SELECT id, name, updated_at FROM objects WHERE environment = $1 AND deleted_at IS NULL",
        );
        let mut n = 1;
        if cursor.is_some() {
            sql.push_str(&format!(
                " AND (updated_at {cmp} ${} OR (updated_at = ${} AND id {cmp} ${}))",
                n + 1,
                n + 1,
                n + 2
            ));
            n += 2;
        }
        if search.is_some() {
            n += 1;
            sql.push_str(&format!(" AND LOWER(name) LIKE ${n} ESCAPE '\\'"));
        }
        if query.updated_after.is_some() {
            n += 1;
            sql.push_str(&format!(" AND updated_at > ${n}"));
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY updated_at {dir}, id {dir} LIMIT ${n}"));

        // Built from constants and numbered placeholders only: no data is spliced in.
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(environment);
        if let Some(c) = cursor {
            q = q.bind(c.updated_at.0).bind(c.id.clone());
        }
        if let Some(s) = &search {
            q = q.bind(s.clone());
        }
        if let Some(t) = query.updated_after {
            q = q.bind(t.0);
        }
        q = q.bind(i64::from(limit) + 1);

        let rows = q.fetch_all(&self.pool).await?;
        self.audit_read(events::NAMES_LISTED, environment, actor, None)
            .await?;

        let more = rows.len() > limit as usize;
        let mut data = rows
            .iter()
            .take(limit as usize)
            .map(|r| {
                Ok(ListItem {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    updated_at: Timestamp(r.try_get("updated_at")?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if backwards {
            data.reverse();
        }
        let cursor_of = |item: &ListItem| {
            Cursor {
                updated_at: item.updated_at,
                id: item.id.clone(),
            }
            .encode()
        };
        // Moving forward: more rows means a next page; coming from a cursor means a previous
        // one. Moving backward: the other way round.
        let (has_before, has_after) = if backwards {
            (more, true)
        } else {
            (query.after.is_some(), more)
        };
        Ok(Page {
            before: has_before.then(|| data.first().map(cursor_of)).flatten(),
            after: has_after.then(|| data.last().map(cursor_of)).flatten(),
            data,
        })
    }

    async fn update(
        &self,
        environment: &str,
        id: &str,
        version: NewVersion,
        expected_version: Option<&str>,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError> {
        validate_environment(environment)?;
        check_id(id)?;
        let now = Timestamp::now();
        let version_id = new_version_id()?;
        let mut tx = self.begin_write().await?;
        // The compare-and-set: one statement, so no other writer can slip in between.
        let changed = sqlx::query(
            "UPDATE objects SET current_version = $1, updated_at = $2 \
             WHERE environment = $3 AND id = $4 AND deleted_at IS NULL \
             AND ($5 IS NULL OR current_version = $5)",
        )
        .bind(&version_id)
        .bind(now.0)
        .bind(environment)
        .bind(id)
        .bind(expected_version.map(str::to_owned))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            let exists = sqlx::query(
                "SELECT 1 AS x FROM objects WHERE environment = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(environment)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            return Err(if exists.is_some() {
                StoreError::Conflict(Conflict::Version)
            } else {
                StoreError::NotFound
            });
        }
        let seq: i64 = sqlx::query("SELECT MAX(seq) AS s FROM versions WHERE object_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get::<Option<i64>, _>("s")?
            .unwrap_or(0)
            + 1;
        insert_version(&mut tx, id, seq, &version_id, &version, actor, now).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {META_COLUMNS} FROM {META_FROM} WHERE o.id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let meta = meta_from_row(&row)?;
        audit(
            &mut tx,
            events::DATA_UPDATED,
            environment,
            actor,
            Some(&meta),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(meta)
    }

    async fn versions(
        &self,
        environment: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<Vec<VersionMeta>, StoreError> {
        validate_environment(environment)?;
        check_id(id)?;
        // One snapshot for the three reads (a read transaction takes no write lock).
        let mut tx = self.pool.begin().await?;
        let current: String = sqlx::query(
            "SELECT current_version FROM objects \
             WHERE environment = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(environment)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?
        .try_get("current_version")?;
        let rows = sqlx::query(
            "SELECT id, created_at, created_by_id, created_by_name, size, etag FROM versions \
             WHERE object_id = $1 ORDER BY seq DESC",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {META_COLUMNS} FROM {META_FROM} WHERE o.id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let meta = meta_from_row(&row)?;
        tx.commit().await?;
        self.audit_read(events::METADATA_READ, environment, actor, Some(&meta))
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                Ok(VersionMeta {
                    current: id == current,
                    id,
                    created_at: Timestamp(r.try_get("created_at")?),
                    created_by: Actor::new(
                        r.try_get::<String, _>("created_by_id")?,
                        r.try_get::<String, _>("created_by_name")?,
                    ),
                    size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
                    etag: r.try_get("etag")?,
                })
            })
            .collect()
    }

    async fn delete(
        &self,
        environment: &str,
        id: &str,
        expected_version: Option<&str>,
        actor: &Actor,
    ) -> Result<ObjectMeta, StoreError> {
        validate_environment(environment)?;
        check_id(id)?;
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {META_COLUMNS} FROM {META_FROM} \
             WHERE o.environment = $1 AND o.id = $2 AND o.deleted_at IS NULL"
        )))
        .bind(environment)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let meta = meta_from_row(&row)?;
        let changed = sqlx::query(
            "UPDATE objects SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL \
             AND ($3 IS NULL OR current_version = $3)",
        )
        .bind(now.0)
        .bind(id)
        .bind(expected_version.map(str::to_owned))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::Conflict(Conflict::Version));
        }
        audit(
            &mut tx,
            events::DATA_DELETED,
            environment,
            actor,
            Some(&meta),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(meta)
    }

    async fn purge(&self, deleted_before: Timestamp, actor: &Actor) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM versions WHERE object_id IN \
             (SELECT id FROM objects WHERE deleted_at IS NOT NULL AND deleted_at < $1)",
        )
        .bind(deleted_before.0)
        .execute(&mut *tx)
        .await?;
        // What this transaction removed, and only that (a concurrent purge that got there first
        // removed, and recorded, the rest): one event each, in the same transaction.
        let gone = sqlx::query(
            "DELETE FROM objects WHERE deleted_at IS NOT NULL AND deleted_at < $1 \
             RETURNING id, environment, name",
        )
        .bind(deleted_before.0)
        .fetch_all(&mut *tx)
        .await?;
        let now = Timestamp::now();
        for row in &gone {
            let record = AuditRecord {
                environment: row.try_get("environment")?,
                event: events::DATA_PURGED.to_owned(),
                actor: actor.clone(),
                object: Some((row.try_get("id")?, row.try_get("name")?)),
                key_id: None,
                key_context: None,
                at: now,
            };
            insert_audit(&mut tx, &record).await?;
        }
        tx.commit().await?;
        Ok(gone.len() as u64)
    }

    async fn scan_versions(
        &self,
        after: Option<(String, i64)>,
        limit: u32,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let (after_id, after_seq) = after.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT v.object_id, o.environment, v.seq, o.context, v.envelope \
             FROM versions v JOIN objects o ON o.id = v.object_id \
             WHERE v.object_id > $1 OR (v.object_id = $1 AND v.seq > $2) \
             ORDER BY v.object_id, v.seq LIMIT $3",
        )
        .bind(after_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let context: Vec<u8> = r.try_get("context")?;
                Ok(StoredVersion {
                    object_id: r.try_get("object_id")?,
                    environment: r.try_get("environment")?,
                    seq: r.try_get("seq")?,
                    context: KeyContext::from_canonical_bytes(&context).map_err(|_| {
                        StoreError::Unavailable {
                            reason: "a stored key context is corrupt".into(),
                        }
                    })?,
                    envelope: r.try_get("envelope")?,
                })
            })
            .collect()
    }

    async fn replace_envelope(
        &self,
        object_id: &str,
        seq: i64,
        expected: &[u8],
        new: &[u8],
        key_id: &str,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE versions SET envelope = $1, key_id = $2, etag = $3 \
             WHERE object_id = $4 AND seq = $5 AND envelope = $6",
        )
        .bind(new.to_vec())
        .bind(key_id)
        .bind(etag(new))
        .bind(object_id)
        .bind(seq)
        .bind(expected.to_vec())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            // The object's context goes into the event as JSON, as for every other change.
            let row = sqlx::query("SELECT environment, name, context FROM objects WHERE id = $1")
                .bind(object_id)
                .fetch_one(&mut *tx)
                .await?;
            let context: Vec<u8> = row.try_get("context")?;
            let context = KeyContext::from_canonical_bytes(&context).map_err(|_| {
                StoreError::Unavailable {
                    reason: "a stored key context is corrupt".into(),
                }
            })?;
            let record = AuditRecord {
                environment: row.try_get("environment")?,
                event: events::DATA_REWRAPPED.to_owned(),
                actor: actor.clone(),
                object: Some((object_id.to_owned(), row.try_get("name")?)),
                key_id: Some(key_id.to_owned()),
                key_context: Some(context.to_json()),
                at: Timestamp::now(),
            };
            insert_audit(&mut tx, &record).await?;
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn key_usage(&self) -> Result<Vec<KeyUsage>, StoreError> {
        let mut usage = std::collections::BTreeMap::<String, KeyUsage>::new();
        let stored = sqlx::query("SELECT key_id, COUNT(*) AS n FROM versions GROUP BY key_id")
            .fetch_all(&self.pool)
            .await?;
        for r in &stored {
            let key_id: String = r.try_get("key_id")?;
            usage
                .entry(key_id.clone())
                .or_insert_with(|| KeyUsage::new(key_id))
                .stored_versions = count(r)?;
        }
        // Issued data keys: a key handed out (`vault.dek.read`) or bound to a new context
        // (`vault.dek.rekeyed`); the caller keeps each blob, so each is counted.
        let issued = sqlx::query(
            "SELECT key_id, COUNT(*) AS n FROM audit_events \
             WHERE event IN ('vault.dek.read', 'vault.dek.rekeyed') AND key_id IS NOT NULL \
             GROUP BY key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in &issued {
            let key_id: String = r.try_get("key_id")?;
            usage
                .entry(key_id.clone())
                .or_insert_with(|| KeyUsage::new(key_id))
                .issued_data_keys = count(r)?;
        }
        Ok(usage.into_values().collect())
    }

    async fn audit_events(
        &self,
        environment: &str,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT environment, event, actor_id, actor_name, object_id, object_name, key_id, \
             key_context, occurred_at FROM audit_events WHERE environment = $1 \
             ORDER BY seq DESC LIMIT $2",
        )
        .bind(environment)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    event: r.try_get("event")?,
                    environment: r.try_get("environment")?,
                    actor: Actor::new(
                        r.try_get::<String, _>("actor_id")?,
                        r.try_get::<String, _>("actor_name")?,
                    ),
                    object_id: r.try_get("object_id")?,
                    object_name: r.try_get("object_name")?,
                    key_id: r.try_get("key_id")?,
                    key_context: r.try_get("key_context")?,
                    occurred_at: Timestamp(r.try_get("occurred_at")?),
                })
            })
            .collect()
    }

    async fn record_key_event(
        &self,
        environment: &str,
        event: &str,
        actor: &Actor,
        key_id: &str,
        context: &KeyContext,
    ) -> Result<(), StoreError> {
        validate_environment(environment)?;
        self.audit_read_record(AuditRecord {
            environment: environment.to_owned(),
            event: event.to_owned(),
            actor: actor.clone(),
            object: None,
            key_id: Some(key_id.to_owned()),
            key_context: Some(context.to_json()),
            at: Timestamp::now(),
        })
        .await
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        validate_environment(&key.environment)?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, lookup, hash, environment, name, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.lookup)
        .bind(key.hash.clone())
        .bind(&key.environment)
        .bind(&key.name)
        .bind(key.created_at.0)
        .bind(key.revoked_at.map(|t| t.0))
        .execute(&self.pool)
        .await;
        if let Err(sqlx::Error::Database(e)) = &inserted
            && e.is_unique_violation()
        {
            return Err(StoreError::Conflict(Conflict::ApiKey));
        }
        inserted?;
        Ok(())
    }

    async fn api_key_by_lookup(&self, lookup: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, lookup, hash, environment, name, created_at, revoked_at FROM api_keys \
             WHERE lookup = $1",
        )
        .bind(lookup)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn revoke_api_key(&self, id: &str) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(Timestamp::now().0)
                .bind(id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let exists = sqlx::query("SELECT 1 AS x FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        // Revoking twice is harmless; an unknown id is not.
        if exists.is_some() {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, lookup, hash, environment, name, created_at, revoked_at FROM api_keys \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key_from_row).collect()
    }
}

fn api_key_from_row(r: &AnyRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        lookup: r.try_get("lookup")?,
        hash: r.try_get("hash")?,
        environment: r.try_get("environment")?,
        name: r.try_get("name")?,
        created_at: Timestamp(r.try_get("created_at")?),
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
    })
}

async fn insert_version(
    tx: &mut WriteTx,
    object_id: &str,
    seq: i64,
    version_id: &str,
    version: &NewVersion,
    actor: &Actor,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO versions (object_id, seq, id, envelope, size, etag, key_id, created_at, \
         created_by_id, created_by_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(object_id)
    .bind(seq)
    .bind(version_id)
    .bind(version.envelope.clone())
    .bind(to_i64(version.size)?)
    .bind(etag(&version.envelope))
    .bind(&version.key_id)
    .bind(at.0)
    .bind(&actor.id)
    .bind(&actor.name)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
