//! The SQL backend: SQLite (the embedded default) entirely on rusqlite ([`lite`]), PostgreSQL
//! on sqlx ([`pg`]). Every query and every change is written once, against the seam in [`db`]
//! (statements with `$N` parameters, rows by column name, a synchronous transaction), and runs
//! on either engine; no other file names a driver.
//!
//! One file per concern: [`migrate`] (schema versions), [`objects`] and [`list`] (the object
//! store), [`audit`] (key events and usage), [`api_keys`], [`byok`], [`webhooks`],
//! [`integrity`], [`ring`] (the database ring's rows), [`copy`] (moving house).

mod api_keys;
mod audit;
mod blobs;
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
#[cfg(feature = "postgres")]
mod pg;
mod ring;
mod session;
mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::StoreError;
use crate::{Actor, ObjectMeta, Timestamp, is_object_id};
pub use byok::is_provider_name;
use change::AuditRecord;
pub use copy::CopyReport;
use db::{Arg, Backend, Change, Columns, Tx};
pub use ring::SqlRingRows;
use vault_crypto::KeyContext;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("vault-store needs the `sqlite` or the `postgres` feature");

/// A [`Store`](crate::Store) on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    engine: Engine,
    /// What the writer committed.
    stats: Arc<change::Counters>,
}

/// The database and its driver.
#[derive(Debug, Clone)]
enum Engine {
    #[cfg(feature = "sqlite")]
    Lite(lite::Lite),
    #[cfg(feature = "postgres")]
    Pg(pg::Pg),
}

/// The metadata columns, joined with the current version.
const META_COLUMNS: &str = "o.id, o.environment, o.name, o.context, o.current_version, \
     o.created_at, o.updated_at, o.organization_id, v.key_id, v.created_by_id, v.created_by_name";
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
        let stats: Arc<change::Counters> = Arc::default();
        let store = Self {
            engine: Engine::Lite(lite::Lite::open(&path, stats.clone())?),
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
        let stats: Arc<change::Counters> = Arc::default();
        let store = Self {
            engine: Engine::Pg(pg::Pg::connect(url, stats.clone()).await?),
            stats,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The SQLite database file of a data directory.
    pub fn sqlite_path(data_dir: &Path) -> PathBuf {
        data_dir.join("vault.db")
    }

    /// Closes the store: on SQLite the writer thread commits what it was handed and stops;
    /// on PostgreSQL the pool closes, waiting for connections to finish. Later calls fail.
    pub async fn close(&self) {
        match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Lite(lite) => lite.close().await,
            #[cfg(feature = "postgres")]
            Engine::Pg(pg) => pg.close().await,
        }
    }

    fn backend(&self) -> Backend {
        match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Lite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Engine::Pg(_) => Backend::Postgres,
        }
    }

    /// The first row of a read, decoded: on SQLite on the calling task (a read by key takes
    /// microseconds, see [`lite`]), on PostgreSQL from the pool.
    async fn row<T: Send>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl Fn(&dyn Columns) -> Result<T, StoreError> + Send,
    ) -> Result<Option<T>, StoreError> {
        match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Lite(lite) => lite.reader().await?.read(|tx| tx.fetch(sql, args, decode)),
            #[cfg(feature = "postgres")]
            Engine::Pg(pg) => pg.row(sql, args, decode).await,
        }
    }

    /// Every row of a read, decoded: a scan, which on SQLite may take a while, so it tells
    /// tokio it blocks (see `lite::Reader::scan`).
    async fn rows<T: Send>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl Fn(&dyn Columns) -> Result<T, StoreError> + Send,
    ) -> Result<Vec<T>, StoreError> {
        match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Lite(lite) => lite
                .reader()
                .await?
                .scan(|tx| tx.fetch_all(sql, args, decode)),
            #[cfg(feature = "postgres")]
            Engine::Pg(pg) => pg.rows(sql, args, decode).await,
        }
    }

    /// Whether a read returns a row (a scan: the tests it is asked for need not be indexed).
    async fn exists(&self, sql: &str, args: &[Arg<'_>]) -> Result<bool, StoreError> {
        match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Lite(lite) => lite.reader().await?.scan(|tx| tx.exists(sql, args)),
            #[cfg(feature = "postgres")]
            Engine::Pg(pg) => Ok(pg.row(sql, args, |_| Ok(())).await?.is_some()),
        }
    }

    /// Runs the reads of `f` in one snapshot.
    async fn snapshot<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Lite(lite) => lite.reader().await?.snapshot(f),
            #[cfg(feature = "postgres")]
            Engine::Pg(pg) => pg.snapshot(f).await,
        }
    }

    /// Starts `change` (see [`Change`]); the receiver gets its value once it is durable. Once
    /// started, a change runs to its end whether or not anyone still waits for it (on either
    /// engine): a caller that gives up does not undo it.
    async fn submit<C: Change>(
        &self,
        change: C,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<C::Output, StoreError>>, StoreError> {
        match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Lite(lite) => lite.submit(change),
            #[cfg(feature = "postgres")]
            Engine::Pg(pg) => pg.submit(change, self.stats.clone()),
        }
    }

    /// Runs `change` and returns its value once the change is durable: on SQLite in the writer
    /// thread's next group commit, on PostgreSQL in a transaction of its own.
    ///
    /// # Errors
    /// The change's error (nothing of it is written), or the commit's.
    async fn change<C: Change>(&self, change: C) -> Result<C::Output, StoreError> {
        self.submit(change)
            .await?
            .await
            .map_err(|_| StoreError::Unavailable {
                reason: "the change was not committed: its batch failed".into(),
            })?
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
        self.audit_read_record(AuditRecord::of_object(
            event,
            environment,
            actor,
            meta,
            Timestamp::now(),
        ))
        .await
    }

    async fn audit_read_record(&self, record: AuditRecord) -> Result<(), StoreError> {
        match &self.engine {
            #[cfg(feature = "sqlite")]
            Engine::Lite(lite) => lite.read_event(record).await,
            #[cfg(feature = "postgres")]
            Engine::Pg(pg) => pg.read_event(record).await,
        }
    }
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
    let organization_id = row
        .opt_text("organization_id")?
        .or_else(|| context.get("organization_id").map(str::to_owned));
    Ok(ObjectMeta {
        id: row.text("id")?,
        environment: row.text("environment")?,
        name: row.text("name")?,
        context,
        key_id: row.text("key_id")?,
        version_id: row.text("current_version")?,
        organization_id,
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
