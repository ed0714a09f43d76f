//! Exit codes, distinct per failure class so scripts can react, and the failure that carries
//! one with its message.

use std::io;

use vault::VaultError;
use vault::crypto::{self, Error};
use vault::store::StoreError;

/// A command line that does not parse (as clap's own usage errors).
pub(crate) const USAGE: u8 = 2;
pub(crate) const BAD_INPUT: u8 = 3;
pub(crate) const DECRYPTION_FAILED: u8 = 4;
pub(crate) const KEYS: u8 = 5;
pub(crate) const NOT_FOUND: u8 = 6;
pub(crate) const CONFLICT: u8 = 7;
pub(crate) const STORAGE: u8 = 8;
/// A key provider failed live verification (`vault keys verify`, `vault byok set`).
pub(crate) const UNVERIFIED: u8 = 9;
pub(crate) const IO: u8 = 1;

#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Context(_) | Error::Envelope(_) | Error::PlaintextTooLarge { .. } => BAD_INPUT,
            Error::DecryptionFailed | Error::ContextMismatch => DECRYPTION_FAILED,
            // The database that holds the ring is down: a storage failure, as for objects.
            Error::KeyRing(crypto::KeyRingError::Store { .. }) => STORAGE,
            _ => KEYS,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NotFound => NOT_FOUND,
            StoreError::Conflict(_) => CONFLICT,
            StoreError::InvalidArgument { .. } | StoreError::InvalidQuery { .. } => BAD_INPUT,
            _ => STORAGE,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

impl From<VaultError> for Failure {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Store(e) => e.into(),
            VaultError::Crypto(e) => e.into(),
            e @ (VaultError::KeyInUse { .. } | VaultError::KeyRecentlyPrimary { .. }) => Self {
                code: CONFLICT,
                message: e.to_string(),
            },
            // The database's content is not what this deployment wrote.
            e @ (VaultError::Tampered { .. }
            | VaultError::NotProtected
            | VaultError::ProtectedBefore) => Self {
                code: STORAGE,
                message: e.to_string(),
            },
            other => Self {
                code: IO,
                message: other.to_string(),
            },
        }
    }
}

impl From<crypto::KeyRingError> for Failure {
    fn from(e: crypto::KeyRingError) -> Self {
        Error::from(e).into()
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self {
            code: IO,
            message: e.to_string(),
        }
    }
}
