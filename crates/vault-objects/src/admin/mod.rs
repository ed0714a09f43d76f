//! The operator's commands (`vault keys`, `vault byok`, `vault store copy`, `vault apikey`,
//! `vault keys verify`): each does its work here and answers with what happened, which the CLI
//! prints. Nothing here prints, and nothing outside reaches the store or the rings.

mod api_keys;
mod byok;
mod copy;
mod files;
mod ring;
mod verify;

pub use api_keys::ApiKeyAdmin;
pub use byok::{ByokAdmin, ListedRule, RuleRemoved, RuleSet};
pub use copy::{CopyReport, copy_store};
pub use files::FileKeys;
pub use ring::{
    KeyAdmin, ProtectOutcome, Resealed, RingMove, RingPlace, RingStatus, VersionStatus,
    init_master_key, ring_actor,
};
pub use verify::{StoreCheck, check_store, verify_providers};

use vault_store::{SqlStore, StoreError};

use crate::VaultError;
use crate::config::Config;
use crate::deployment::Deployment;
use crate::rings::Rings;

/// Why an operator's command was refused or failed. Messages name what to do; none holds a
/// secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// What was asked cannot be done as given (a bad argument, a seal missing).
    #[error("{0}")]
    Invalid(String),
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The state forbids it now (in use, changed meanwhile); nothing was changed.
    #[error("{0}")]
    Conflict(String),
    /// There is no store where the command needs one (to count what a key wraps).
    #[error("{0}")]
    NoStore(String),
    /// A key provider failed its live verification.
    #[error("{0}")]
    Unverified(String),
    /// The vault refused or failed.
    #[error(transparent)]
    Vault(Box<VaultError>),
    /// The vault refused or failed, told in the command's own words.
    #[error("{message}")]
    Failed {
        /// What the command could not do, and what to do about it.
        message: String,
        /// The vault's failure.
        cause: Box<VaultError>,
    },
    /// A file of the data directory could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl AdminError {
    /// The same failure (of the same kind), told as `message`.
    #[must_use]
    pub fn reworded(self, message: String) -> Self {
        match self {
            Self::Invalid(_) => Self::Invalid(message),
            Self::NotFound(_) => Self::NotFound(message),
            Self::Conflict(_) => Self::Conflict(message),
            Self::Unverified(_) => Self::Unverified(message),
            Self::NoStore(_) => Self::NoStore(message),
            Self::Vault(cause) | Self::Failed { cause, .. } => Self::Failed { message, cause },
            Self::Io(e) => Self::Io(std::io::Error::new(e.kind(), message)),
        }
    }
}

impl From<VaultError> for AdminError {
    fn from(e: VaultError) -> Self {
        Self::Vault(Box::new(e))
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        VaultError::from(e).into()
    }
}

impl From<vault_crypto::Error> for AdminError {
    fn from(e: vault_crypto::Error) -> Self {
        VaultError::from(e).into()
    }
}

impl From<vault_crypto::KeyRingError> for AdminError {
    fn from(e: vault_crypto::KeyRingError) -> Self {
        VaultError::from(vault_crypto::Error::from(e)).into()
    }
}

/// Where managed rings are, for connecting providers outside a vault.
async fn rings_of(
    deployment: &Deployment,
    config: &Config,
    store: Option<&SqlStore>,
) -> Result<Rings, AdminError> {
    match store {
        Some(store) if deployment.rings_in_database() => {
            Ok(deployment.rings(store, config).await?)
        }
        _ => Ok(Rings::Files {
            dir: deployment.data_dir().to_owned(),
            store: store.cloned(),
        }),
    }
}
