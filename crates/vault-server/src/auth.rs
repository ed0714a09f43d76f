//! API keys: minted and checked by the application layer
//! ([`vault_objects::api_keys`]); the server reads them from `Authorization: Bearer` and
//! knows its caller as a [`Principal`].

use vault_objects::api_keys::{self, Caller};
use vault_objects::{Actor, ApiKeys, StoreError};

pub use vault_objects::api_keys::{
    LOOKUP_LEN, MAX_NAME_LEN, NewApiKey, PREFIX, RANDOM_LEN, create, lookup,
};

/// An authenticated caller: the environment it may see and the actor its changes are recorded
/// under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's environment.
    pub environment: String,
    /// `key_<lookup>` and the key's name.
    pub actor: Actor,
}

/// The principal of a bearer key, or `None` if the key is malformed, unknown, revoked, or its
/// row fails its integrity check.
///
/// # Errors
/// `Unavailable` if the store cannot be asked.
pub async fn authenticate(keys: &ApiKeys, key: &str) -> Result<Option<Principal>, StoreError> {
    Ok(api_keys::authenticate(keys, key)
        .await?
        .map(|Caller { environment, actor }| Principal { environment, actor }))
}
