//! What the changes of objects and their audit need of a database, so each is written once and
//! runs on both engines: sqlx (PostgreSQL, and SQLite's less frequent transactions) and the
//! SQLite writer thread on rusqlite ([`super::lite`]).
//!
//! A statement is SQL built from constants only, with `$N` parameters (both databases accept
//! them; each engine binds `$N` to the `N`th argument), and its arguments as [`Arg`]s. A row is
//! read through [`Columns`], by column name.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::StoreError;

/// One argument of a statement. Its `Debug` shows the kind only: arguments hold envelopes,
/// key hashes and key contexts.
#[derive(Clone, Copy)]
pub(super) enum Arg<'a> {
    Text(&'a str),
    /// Text or SQL `NULL`.
    OptText(Option<&'a str>),
    Blob(&'a [u8]),
    Int(i64),
}

impl std::fmt::Debug for Arg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arg::Text(_) => "Text(..)",
            Arg::OptText(None) => "Null",
            Arg::OptText(Some(_)) => "Text(..)",
            Arg::Blob(_) => "Blob(..)",
            Arg::Int(_) => "Int(..)",
        })
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Text(s)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Arg::Text(s)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(s: Option<&'a str>) -> Self {
        Arg::OptText(s)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(b: &'a [u8]) -> Self {
        Arg::Blob(b)
    }
}

impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        Arg::Blob(b)
    }
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Arg::Int(n)
    }
}

/// The arguments of a statement, `$1` first.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$($crate::sql::db::Arg::from($arg)),*]
    };
}
pub(super) use args;

/// How a statement failed.
#[derive(Debug)]
pub(super) enum DbError {
    /// It would have broken a unique constraint (what that means is the caller's to say).
    Unique,
    Other(StoreError),
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unique => StoreError::Unavailable {
                reason: "a unique constraint was violated".into(),
            },
            DbError::Other(e) => e,
        }
    }
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        DbError::Other(e)
    }
}

/// The columns of one row, by name.
pub(super) trait Columns {
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn blob(&self, column: &str) -> Result<Vec<u8>, StoreError>;
    /// A blob that may be NULL, as empty.
    fn opt_blob(&self, column: &str) -> Result<Vec<u8>, StoreError>;
    fn int(&self, column: &str) -> Result<i64, StoreError>;
}

impl Columns for AnyRow {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn blob(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn opt_blob(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .try_get::<Option<Vec<u8>>, _>(column)?
            .unwrap_or_default())
    }

    fn int(&self, column: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(column)?)
    }
}

/// Makes a value of a row.
pub(super) type Decode<T> = fn(&dyn Columns) -> Result<T, StoreError>;

/// A write transaction of either engine.
pub(super) trait Tx: Send {
    /// Runs a statement that returns no rows; returns how many rows it changed.
    fn execute(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, DbError>> + Send;

    /// Runs a query; returns its first row, decoded, if there is one.
    fn fetch<T: Send>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> impl Future<Output = Result<Option<T>, StoreError>> + Send;
}

/// `sql` with `args` bound, for sqlx.
pub(super) fn query<'q>(
    sql: &'q str,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    // Callers build `sql` from constants and numbered placeholders only: no data is spliced in.
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for arg in args {
        q = match *arg {
            Arg::Text(s) => q.bind(s),
            Arg::OptText(s) => q.bind(s),
            Arg::Blob(b) => q.bind(b),
            Arg::Int(n) => q.bind(n),
        };
    }
    q
}
