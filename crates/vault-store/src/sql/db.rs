//! The seam between the two engines: what a statement, a row and a transaction are, so every
//! query and every change is written once and runs on SQLite (rusqlite, [`super::lite`]) and on
//! PostgreSQL (sqlx, [`super::pg`]). Nothing else in the store names either driver.
//!
//! A statement is SQL built from constants only, with `$N` parameters (both databases accept
//! them; each engine binds `$N` to the `N`th argument), and its arguments as [`Arg`]s. A row is
//! read through [`Columns`], by column name. A transaction is a [`Tx`]: synchronous, so a
//! [`Change`] cannot wait on anything but its own statements, on either engine.

use crate::StoreError;

/// The database engine, for the few statements whose SQL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Sqlite,
    Postgres,
}

/// One argument of a statement. Its `Debug` shows the kind only: arguments hold envelopes,
/// key hashes and key contexts. An optional value is SQL `NULL` when absent, typed (PostgreSQL
/// checks a parameter's type against its column).
#[derive(Clone, Copy)]
pub(super) enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Blob(&'a [u8]),
    OptBlob(Option<&'a [u8]>),
    Int(i64),
    OptInt(Option<i64>),
}

impl std::fmt::Debug for Arg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arg::OptText(None) | Arg::OptBlob(None) | Arg::OptInt(None) => "Null",
            Arg::Text(_) | Arg::OptText(Some(_)) => "Text(..)",
            Arg::Blob(_) | Arg::OptBlob(Some(_)) => "Blob(..)",
            Arg::Int(_) | Arg::OptInt(Some(_)) => "Int(..)",
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

impl<'a> From<Option<&'a [u8]>> for Arg<'a> {
    fn from(b: Option<&'a [u8]>) -> Self {
        Arg::OptBlob(b)
    }
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Arg::Int(n)
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(n: Option<i64>) -> Self {
        Arg::OptInt(n)
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
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn blob(&self, column: &str) -> Result<Vec<u8>, StoreError>;
    fn opt_blob(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// A column that is absent from the row (or NULL) as `None`.
    fn maybe_int(&self, column: &str) -> Option<i64> {
        self.opt_int(column).ok().flatten()
    }

    /// A count (`COUNT(*)`) column.
    fn count(&self, column: &str) -> Result<u64, StoreError> {
        u64::try_from(self.int(column)?).map_err(|_| StoreError::Unavailable {
            reason: "a negative count".into(),
        })
    }
}

/// A transaction of either engine (or, for reads, a connection): each statement runs when
/// called. Object-safe, so a change is a plain closure over `&mut dyn Tx`.
pub(super) trait Tx {
    /// Which engine runs it.
    fn backend(&self) -> Backend;

    /// Runs a statement that returns no rows; returns how many rows it changed.
    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError>;

    /// Runs a query, handing `row` each row in order until it returns `false`.
    fn query(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        row: &mut dyn FnMut(&dyn Columns) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;

    /// Runs a script of statements without parameters (a schema migration).
    fn script(&mut self, sql: &'static str) -> Result<(), StoreError>;
}

impl dyn Tx + '_ {
    /// The first row of a query, decoded, if there is one.
    pub(super) fn fetch<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl Fn(&dyn Columns) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut first = None;
        self.query(sql, args, &mut |row| {
            first = Some(decode(row)?);
            Ok(false)
        })?;
        Ok(first)
    }

    /// Every row of a query, decoded.
    pub(super) fn fetch_all<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl Fn(&dyn Columns) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut all = Vec::new();
        self.query(sql, args, &mut |row| {
            all.push(decode(row)?);
            Ok(true)
        })?;
        Ok(all)
    }

    /// Whether a query returns a row.
    pub(super) fn exists(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<bool, StoreError> {
        Ok(self.fetch(sql, args, |_| Ok(()))?.is_some())
    }
}

/// A write: statements run in one transaction of either engine, answered once durable. On
/// SQLite it runs on the writer thread, in the next group commit, in a savepoint of its own; on
/// PostgreSQL in a transaction of its own. It is synchronous by type: it can wait on nothing
/// but its own statements.
pub(super) trait Change: Send + 'static {
    type Output: Send + 'static;

    fn run(self, tx: &mut dyn Tx) -> Result<Self::Output, StoreError>;
}

/// A closure over the transaction is a change.
impl<T, F> Change for F
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
{
    type Output = T;

    fn run(self, tx: &mut dyn Tx) -> Result<T, StoreError> {
        self(tx)
    }
}

/// How long an interactive transaction ([`super::Session`]) may wait for its next step before
/// it is abandoned (rolled back), so a holder that stalls cannot hold every writer for long.
pub(super) const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest an interactive transaction may stay open, whatever it does.
pub(super) const SESSION_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
