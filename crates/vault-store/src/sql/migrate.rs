//! Schema migrations, applied once each, in the migration transaction.

use sqlx::{Executor, Row};

use super::{Backend, SqlStore};
use crate::StoreError;

/// The schema migrations, (version, SQLite, PostgreSQL), applied in order; each version that a
/// database has not seen yet runs once, in the migration transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        include_str!("../../migrations/sqlite-1.sql"),
        include_str!("../../migrations/postgres-1.sql"),
    ),
    (
        2,
        include_str!("../../migrations/sqlite-2.sql"),
        include_str!("../../migrations/postgres-2.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite-3.sql"),
        include_str!("../../migrations/postgres-3.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite-4.sql"),
        include_str!("../../migrations/postgres-4.sql"),
    ),
    (
        5,
        include_str!("../../migrations/sqlite-5.sql"),
        include_str!("../../migrations/postgres-5.sql"),
    ),
    (
        6,
        include_str!("../../migrations/sqlite-6.sql"),
        include_str!("../../migrations/postgres-6.sql"),
    ),
    (
        7,
        include_str!("../../migrations/sqlite-7.sql"),
        include_str!("../../migrations/postgres-7.sql"),
    ),
];
/// The schema version this code writes; stored in `vault_schema`.
const SCHEMA_VERSION: i64 = 7;

impl SqlStore {
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
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
}
