use crate::StoreError;
use crate::sql::db::{Arg, Backend, Columns, DbError, Tx};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ToSql};

/// A transaction on a connection of this store: the writer thread's (each change in its
/// savepoint of the batch's transaction) or a reader's (read-only).
pub(in crate::sql) struct LiteTx<'c> {
    pub(super) conn: &'c Connection,
    /// The writer's: every statement must run inside the batch's transaction.
    pub(super) writer: bool,
}

impl LiteTx<'_> {
    /// Refuses to run a statement of the writer outside the batch's transaction: had SQLite
    /// rolled it back (a full disk, an I/O error), a statement would otherwise commit on its own.
    fn in_transaction(&self) -> Result<(), StoreError> {
        if self.writer && self.conn.is_autocommit() {
            Err(StoreError::Unavailable {
                reason: "the batch's transaction was rolled back".into(),
            })
        } else {
            Ok(())
        }
    }
}

impl Tx for LiteTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        self.in_transaction()?;
        execute_on(self.conn, sql, args)
    }

    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        row: &mut dyn FnMut(&dyn Columns) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.in_transaction()?;
        let mut statement = self.conn.prepare_cached(sql)?;
        bind(&mut statement, args)?;
        let mut rows = statement.raw_query();
        while let Some(r) = rows.next()? {
            if !row(r)? {
                break;
            }
        }
        Ok(())
    }

    fn script(&mut self, sql: &'static str) -> Result<(), StoreError> {
        self.in_transaction()?;
        Ok(self.conn.execute_batch(sql)?)
    }
}

fn execute_on(conn: &Connection, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
    let mut statement = conn.prepare_cached(sql).map_err(StoreError::from)?;
    bind(&mut statement, args)?;
    match statement.raw_execute() {
        Ok(changed) => Ok(changed as u64),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Err(DbError::Unique)
        }
        Err(e) => Err(DbError::Other(e.into())),
    }
}

/// Binds `$N` to `args[N - 1]`, as sqlx does: SQLite numbers parameters in order of first
/// appearance, which need not be `N`. Every argument must have its parameter and every
/// parameter its argument: SQLite gives each distinct name one index, so with as many indexes
/// as arguments, each `$N` in range, every argument is used.
fn bind(statement: &mut rusqlite::Statement<'_>, args: &[Arg<'_>]) -> Result<(), StoreError> {
    let mismatch = || StoreError::Unavailable {
        reason: "a statement's parameters and arguments do not match".into(),
    };
    if statement.parameter_count() != args.len() {
        return Err(mismatch());
    }
    for index in 1..=statement.parameter_count() {
        let n = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=args.len()).contains(n))
            .ok_or_else(mismatch)?;
        statement.raw_bind_parameter(index, args[n - 1])?;
    }
    Ok(())
}

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::Text(s) | Arg::OptText(Some(s)) => ValueRef::Text(s.as_bytes()),
            Arg::Blob(b) | Arg::OptBlob(Some(b)) => ValueRef::Blob(b),
            Arg::OptText(None) | Arg::OptBlob(None) | Arg::OptInt(None) => ValueRef::Null,
            Arg::Int(n) | Arg::OptInt(Some(n)) => {
                return Ok(ToSqlOutput::Owned(Value::Integer(n)));
            }
        }))
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(self.get(column)?)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get(column)?)
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
        Ok(self.get(column)?)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.get(column)?)
    }

    fn blob(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.get(column)?)
    }

    fn opt_blob(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(column)?)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        // The code only: SQLite's messages can quote the statement.
        let reason = match e {
            rusqlite::Error::SqliteFailure(e, _) => format!("database error {}", e.extended_code),
            _ => "database error".to_owned(),
        };
        StoreError::Unavailable { reason }
    }
}
