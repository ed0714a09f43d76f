//! Store errors: typed, and never raw SQL text.

/// A store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such live object (or version) in this environment.
    #[error("not found")]
    NotFound,
    /// The change conflicts with the current state: a live object already has the name, or the
    /// expected version is not the current one.
    #[error("conflict: {reason}")]
    Conflict {
        /// What conflicted.
        reason: &'static str,
    },
    /// An argument is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The argument.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The database cannot be reached or failed. The details go to the logs, not here.
    #[error("storage unavailable: {reason}")]
    Unavailable {
        /// A short description without SQL or data.
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn invalid(field: &'static str, reason: &'static str) -> Self {
        Self::InvalidArgument { field, reason }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let reason = match &e {
            sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".to_owned(),
            sqlx::Error::PoolClosed => "the database pool is closed".to_owned(),
            sqlx::Error::Io(_) => "database I/O error".to_owned(),
            sqlx::Error::Database(d) => match d.code() {
                Some(code) => format!("database error {code}"),
                None => "database error".to_owned(),
            },
            _ => "database error".to_owned(),
        };
        Self::Unavailable { reason }
    }
}
