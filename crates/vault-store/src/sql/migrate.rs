//! Schema migrations, applied once each, in the migration transaction.

use super::SqlStore;
use super::db::{Backend, Tx};
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
    (
        8,
        include_str!("../../migrations/sqlite-8.sql"),
        include_str!("../../migrations/postgres-8.sql"),
    ),
    (
        9,
        include_str!("../../migrations/sqlite-9.sql"),
        include_str!("../../migrations/postgres-9.sql"),
    ),
];
/// The schema version this code writes; stored in `vault_schema`.
const SCHEMA_VERSION: i64 = 9;

impl SqlStore {
    /// Applies the migrations this database has not seen, in one write transaction.
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        self.change(migrate_in).await
    }
}

fn migrate_in(tx: &mut dyn Tx) -> Result<(), StoreError> {
    let backend = tx.backend();
    if backend == Backend::Postgres {
        // Serialise concurrent migrations from several server processes.
        tx.script("SELECT pg_advisory_xact_lock(7271632)")?;
    }
    tx.script("CREATE TABLE IF NOT EXISTS vault_schema (version BIGINT NOT NULL)")?;
    let current = tx
        .fetch("SELECT MAX(version) AS v FROM vault_schema", &[], |row| {
            row.opt_int("v")
        })?
        .flatten();
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
        tx.script(match backend {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        })?;
        tx.execute(
            "INSERT INTO vault_schema (version) VALUES ($1)",
            super::db::args![version],
        )?;
    }
    Ok(())
}
