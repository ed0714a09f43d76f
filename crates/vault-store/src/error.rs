//! Store errors: typed, and never raw SQL text.

/// A store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such live object (or version) in this environment.
    #[error("not found")]
    NotFound,
    /// The change conflicts with the current state.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// An argument is invalid: a field of an object or of an API key.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The argument.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A listing parameter is invalid (a limit, a cursor, an order, a search, a time).
    #[error("invalid {field}: {reason}")]
    InvalidQuery {
        /// The parameter.
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

/// What a change conflicted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// A live object already has the name (or, by a one in 2^128 chance, the new id exists).
    #[error("an object with this name exists")]
    Name,
    /// The expected version is not the current version.
    #[error("the expected version is not the current version")]
    Version,
    /// An API key with this id exists.
    #[error("an API key with this id exists")]
    ApiKey,
    /// An answer for this idempotency key was stored meanwhile (by a concurrent duplicate).
    #[error("a request with this idempotency key was answered meanwhile")]
    Answered,
    /// The BYOK document changed since it was read (another change landed first).
    #[error("the BYOK rules changed meanwhile")]
    ByokChanged,
    /// The integrity record changed since it was read (another change landed first).
    #[error("the integrity record changed meanwhile")]
    Record,
}

impl StoreError {
    pub(crate) fn invalid(field: &'static str, reason: &'static str) -> Self {
        Self::InvalidArgument { field, reason }
    }

    pub(crate) fn invalid_query(field: &'static str, reason: &'static str) -> Self {
        Self::InvalidQuery { field, reason }
    }
}
