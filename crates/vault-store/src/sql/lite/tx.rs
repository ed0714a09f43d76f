use crate::StoreError;
use crate::sql::db::{Arg, Columns, DbError, Decode, Tx};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ToSql};

/// The writer thread's transaction: each statement runs when its future is made.
pub(in crate::sql) struct LiteTx<'c>(pub(super) &'c mut Connection);

impl LiteTx<'_> {
    /// Refuses to run a statement outside the batch's transaction: had SQLite rolled it back
    /// (a full disk, an I/O error), a statement would otherwise commit on its own.
    fn in_transaction(&self) -> Result<(), StoreError> {
        if self.0.is_autocommit() {
            Err(StoreError::Unavailable {
                reason: "the batch's transaction was rolled back".into(),
            })
        } else {
            Ok(())
        }
    }
}

impl Tx for LiteTx<'_> {
    fn execute(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, DbError>> + Send {
        let done = match self.in_transaction() {
            Ok(()) => execute_on(self.0, sql, args),
            Err(e) => Err(DbError::Other(e)),
        };
        std::future::ready(done)
    }

    fn fetch<T: Send>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> impl Future<Output = Result<Option<T>, StoreError>> + Send {
        let row = self
            .in_transaction()
            .and_then(|()| fetch_on(self.0, sql, args, decode));
        std::future::ready(row)
    }
}

pub(super) fn execute_on(conn: &Connection, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
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

pub(super) fn fetch_on<T>(
    conn: &Connection,
    sql: &str,
    args: &[Arg<'_>],
    decode: Decode<T>,
) -> Result<Option<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    bind(&mut statement, args)?;
    let mut rows = statement.raw_query();
    match rows.next()? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// Binds `$N` to `args[N - 1]`, as sqlx does: SQLite numbers parameters in order of first
/// appearance, which need not be `N`. Every argument must have its parameter and every
/// parameter its argument.
fn bind(statement: &mut rusqlite::Statement<'_>, args: &[Arg<'_>]) -> Result<(), StoreError> {
    let mismatch = || StoreError::Unavailable {
        reason: "a statement's parameters and arguments do not match".into(),
    };
    let mut highest = 0;
    for index in 1..=statement.parameter_count() {
        let n = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=args.len()).contains(n))
            .ok_or_else(mismatch)?;
        highest = highest.max(n);
        statement.raw_bind_parameter(index, args[n - 1])?;
    }
    if highest == args.len() {
        Ok(())
    } else {
        Err(mismatch())
    }
}

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::Text(s) | Arg::OptText(Some(s)) => ValueRef::Text(s.as_bytes()),
            Arg::OptText(None) => ValueRef::Null,
            Arg::Blob(b) => ValueRef::Blob(b),
            Arg::Int(n) => return Ok(ToSqlOutput::Owned(Value::Integer(n))),
        }))
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(self.get(column)?)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.get(column)?)
    }

    fn blob(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.get(column)?)
    }

    fn opt_blob(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.get::<_, Option<Vec<u8>>>(column)?.unwrap_or_default())
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
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
