//! Exit codes, distinct per failure class so scripts can react, and the failure that carries
//! one with its message.

use std::io;

use vault::VaultError;
use vault::objects::admin::AdminError;
use vault::objects::{CryptoError as Error, KeyRingError, StoreError};

/// (2 is a command line that does not parse: clap's own usage errors.)
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

fn crypto_code(e: &Error) -> u8 {
    match e {
        Error::Context(_) | Error::Envelope(_) | Error::PlaintextTooLarge { .. } => BAD_INPUT,
        Error::DecryptionFailed | Error::ContextMismatch => DECRYPTION_FAILED,
        // The database that holds the ring is down: a storage failure, as for objects.
        Error::KeyRing(KeyRingError::Store { .. }) => STORAGE,
        _ => KEYS,
    }
}

fn store_code(e: &StoreError) -> u8 {
    match e {
        StoreError::NotFound => NOT_FOUND,
        StoreError::Conflict(_) => CONFLICT,
        StoreError::InvalidArgument { .. } | StoreError::InvalidQuery { .. } => BAD_INPUT,
        _ => STORAGE,
    }
}

fn vault_code(e: &VaultError) -> u8 {
    match e {
        VaultError::Store(e) => store_code(e),
        VaultError::Crypto(e) => crypto_code(e),
        VaultError::KeyInUse { .. } | VaultError::KeyRecentlyPrimary { .. } => CONFLICT,
        // The database's content is not what this deployment wrote.
        VaultError::Tampered { .. } | VaultError::NotProtected | VaultError::ProtectedBefore => {
            STORAGE
        }
        _ => IO,
    }
}

fn admin_code(e: &AdminError) -> u8 {
    match e {
        AdminError::Invalid(_) => BAD_INPUT,
        AdminError::NotFound(_) => NOT_FOUND,
        AdminError::Conflict(_) => CONFLICT,
        AdminError::NoStore(_) => STORAGE,
        AdminError::Unverified(_) => UNVERIFIED,
        AdminError::Vault(cause) | AdminError::Failed { cause, .. } => vault_code(cause),
        _ => IO,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self {
            code: crypto_code(&e),
            message: e.to_string(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self {
            code: store_code(&e),
            message: e.to_string(),
        }
    }
}

impl From<VaultError> for Failure {
    fn from(e: VaultError) -> Self {
        Self {
            code: vault_code(&e),
            message: e.to_string(),
        }
    }
}

impl From<AdminError> for Failure {
    fn from(e: AdminError) -> Self {
        Self {
            code: admin_code(&e),
            message: e.to_string(),
        }
    }
}

impl From<KeyRingError> for Failure {
    fn from(e: KeyRingError) -> Self {
        Error::from(e).into()
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        // A stream's reader or writer carries the envelope's own failure inside.
        if let Some(inner) = vault::objects::stream::error_of(&e) {
            return Self {
                code: crypto_code(inner),
                message: inner.to_string(),
            };
        }
        Self {
            code: IO,
            message: e.to_string(),
        }
    }
}
