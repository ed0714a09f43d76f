//! The SQL backend: one implementation over sqlx's `Any` driver, so every query is written once
//! (with `$N` parameters, which both SQLite and PostgreSQL accept) and runs on either database.
//!
//! SQLite's hot paths (the group commit of changes and reads' events, point reads) run on
//! rusqlite instead, in [`lite`]; [`db`] is what lets a change be written once for both.
//!
//! One file per concern: [`writer`] (where changes and reads' events go, and the writer lock),
//! [`migrate`] (schema versions), [`objects`] and [`list`] (the object store),
//! [`audit`] (key events and usage), [`api_keys`].

mod api_keys;
mod audit;
mod byok;
mod change;
mod copy;
mod db;
mod integrity;
mod list;
#[cfg(feature = "sqlite")]
mod lite;
mod migrate;
mod objects;
mod ring;
mod webhooks;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::StoreError;
use crate::{Actor, ObjectMeta, Timestamp, is_object_id};
pub use byok::is_provider_name;
pub use copy::CopyReport;
use db::{Arg, Columns, Decode};
pub use ring::SqlRingRows;
use vault_crypto::KeyContext;
use writer::{WriteTx, Writer, Writes};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A [`Store`](crate::Store) on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time. Writers of this process queue here, in order, instead of
    /// polling SQLite's busy handler (which sleeps up to 100 ms between tries).
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Where changes and reads' audit events go (see [`writer`]).
    writes: Writes,
    /// What the writer committed.
    stats: Arc<change::Counters>,
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
        let url = format!("sqlite://{}?mode=rwc", url_path(&path)?);
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
        let lock: Arc<tokio::sync::Mutex<()>> = Arc::default();
        let stats: Arc<change::Counters> = Arc::default();
        let lite = lite::Lite::open(&path, lock.clone(), stats.clone())?;
        let store = Self {
            pool,
            backend: Backend::Sqlite,
            writer: lock,
            writes: Writes::Lite(lite),
            stats,
        };
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
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        // One connection first, so a database that is down, missing or refusing the login is
        // reported at once and with its cause, not after the pool's acquire timeout.
        let probe =
            sqlx::AnyConnection::connect(url)
                .await
                .map_err(|e| StoreError::Unavailable {
                    reason: format!("cannot connect to PostgreSQL: {}", connect_failure(&e)),
                })?;
        probe.close().await?;
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            // A database that stopped answering fails a request within seconds (a 503 the
            // client can retry elsewhere) instead of holding it for half a minute.
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        let store = Self::with_read_event_task(pool, Backend::Postgres);
        store.migrate().await?;
        Ok(store)
    }

    /// A store over `pool` whose changes run in transactions of their own and whose reads'
    /// events are group-committed by a task (PostgreSQL).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    fn with_read_event_task(pool: AnyPool, backend: Backend) -> Self {
        let writer: Arc<tokio::sync::Mutex<()>> = Arc::default();
        let stats: Arc<change::Counters> = Arc::default();
        let (queue, pending) = tokio::sync::mpsc::unbounded_channel();
        let task = Writer {
            pool: pool.clone(),
            backend,
            lock: writer.clone(),
            stats: stats.clone(),
        };
        tokio::spawn(task.run(pending));
        Self {
            pool,
            backend,
            writer,
            writes: Writes::Task(queue),
            stats,
        }
    }

    /// A write transaction (see [`Writer::begin`]).
    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        Writer {
            pool: self.pool.clone(),
            backend: self.backend,
            lock: self.writer.clone(),
            stats: self.stats.clone(),
        }
        .begin()
        .await
    }

    /// The first row of a read by key, decoded: on SQLite on the calling task (see [`lite`]),
    /// on PostgreSQL from the pool.
    async fn fetch_row<T: Send>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Option<T>, StoreError> {
        match &self.writes {
            #[cfg(feature = "sqlite")]
            Writes::Lite(lite) => lite.fetch(sql, args, decode),
            Writes::Task(_) => db::query(sql, args)
                .fetch_optional(&self.pool)
                .await?
                .map(|row| decode(&row))
                .transpose(),
        }
    }

    /// The SQLite database file of a data directory.
    pub fn sqlite_path(data_dir: &Path) -> std::path::PathBuf {
        data_dir.join("vault.db")
    }

    /// Closes the store: on SQLite the writer thread commits what it was handed and stops;
    /// then the pool closes, waiting for connections to finish. Later calls fail.
    pub async fn close(&self) {
        #[cfg(feature = "sqlite")]
        if let Writes::Lite(lite) = &self.writes {
            lite.close().await;
        }
        self.pool.close().await;
    }
}

/// `path` as the path of a `sqlite://` URL, which sqlx percent-decodes: the URL's own
/// delimiters escaped, so sqlx opens exactly the file the writer thread opens.
#[cfg(feature = "sqlite")]
fn url_path(path: &Path) -> Result<String, StoreError> {
    let path = path.to_str().ok_or_else(|| StoreError::Unavailable {
        reason: "the data directory's path is not UTF-8".into(),
    })?;
    let mut url = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    Ok(url)
}

/// Why a connection failed, in words that never repeat the URL (it may hold a password).
#[cfg(feature = "postgres")]
fn connect_failure(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Tls(tls) => format!("TLS: {tls}"),
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::Configuration(_) => "the database URL is not valid".to_owned(),
        _ => "the database did not answer as PostgreSQL".to_owned(),
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

/// The key context of a row's `context` column.
fn stored_context(row: &dyn Columns) -> Result<KeyContext, StoreError> {
    KeyContext::from_canonical_bytes(&row.blob("context")?).map_err(|_| StoreError::Unavailable {
        reason: "a stored key context is corrupt".into(),
    })
}

fn meta_from_row(row: &dyn Columns) -> Result<ObjectMeta, StoreError> {
    let context = stored_context(row)?;
    Ok(ObjectMeta {
        id: row.text("id")?,
        environment: row.text("environment")?,
        name: row.text("name")?,
        context,
        key_id: row.text("key_id")?,
        version_id: row.text("current_version")?,
        created_at: Timestamp(row.int("created_at")?),
        updated_at: Timestamp(row.int("updated_at")?),
        updated_by: Actor {
            id: row.text("created_by_id")?,
            name: row.text("created_by_name")?,
        },
    })
}

fn check_id(id: &str) -> Result<(), StoreError> {
    // An id that cannot exist is simply not found (and never reaches SQL).
    if is_object_id(id) {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}
