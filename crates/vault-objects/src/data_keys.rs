//! The data-key API through the facade: data keys handed to a caller for encryption it does
//! itself (the WorkOS SDKs' `vault.encrypt`), each issue, recovery and rekey recorded in the
//! audit trail under the key that wrapped it (what `destroy_key_version` counts).

use vault_crypto::KeyContext;
use vault_crypto::issued::{self, IssuedKey};
use vault_store::{Actor, Remember, events, validate_environment};

use crate::{Vault, VaultError};

/// Makes the answer to remember for a request with an idempotency key from the data key it
/// hands out (the answer stored must not hold the key itself).
pub type RememberKey = dyn Fn(&IssuedKey) -> Remember + Send + Sync;

impl Vault {
    /// A fresh data key for `context`, bound to `environment` (never a cached key), and the
    /// `encrypted_keys` that recover it.
    ///
    /// # Errors
    /// `Store(InvalidArgument)` for a bad environment; `Crypto` if the key provider fails;
    /// `Store(Unavailable)` if the audit event cannot be written (the key is then not handed
    /// out).
    pub async fn issue_data_key(
        &self,
        environment: &str,
        context: &KeyContext,
        actor: &Actor,
    ) -> Result<IssuedKey, VaultError> {
        self.issue_data_key_with(environment, context, actor, None)
            .await
    }

    /// [`issue_data_key`](Self::issue_data_key), storing the answer `remember` makes in the
    /// transaction of its audit event.
    ///
    /// # Errors
    /// As `issue_data_key`; `Store(Conflict::Answered)` if an answer for the idempotency key
    /// was stored meanwhile (the key is then not handed out).
    pub async fn issue_data_key_with(
        &self,
        environment: &str,
        context: &KeyContext,
        actor: &Actor,
        remember: Option<&RememberKey>,
    ) -> Result<IssuedKey, VaultError> {
        validate_environment(environment)?;
        context.check_caller().map_err(vault_crypto::Error::from)?;
        let key = issued::issue(&*self.keys, context, environment).await?;
        self.record_key_event(environment, events::DEK_READ, actor, &key, remember)
            .await?;
        Ok(key)
    }

    /// The data key of `encrypted_keys` that [`issue_data_key`](Self::issue_data_key) or
    /// [`rekey_data_key`](Self::rekey_data_key) made for `environment`. The bytes are the
    /// caller's: at most one call to one key service ([`issued::recover`]).
    ///
    /// # Errors
    /// `Crypto` if the bytes are not an issued key of this environment or the key is
    /// unavailable; `Store` as for issuing.
    pub async fn recover_data_key(
        &self,
        environment: &str,
        encrypted_keys: &[u8],
        actor: &Actor,
    ) -> Result<IssuedKey, VaultError> {
        self.recover_data_key_with(environment, encrypted_keys, actor, None)
            .await
    }

    /// [`recover_data_key`](Self::recover_data_key), storing the answer `remember` makes.
    ///
    /// # Errors
    /// As `recover_data_key`; `Store(Conflict::Answered)`.
    pub async fn recover_data_key_with(
        &self,
        environment: &str,
        encrypted_keys: &[u8],
        actor: &Actor,
        remember: Option<&RememberKey>,
    ) -> Result<IssuedKey, VaultError> {
        validate_environment(environment)?;
        let key = issued::recover(&*self.keys, encrypted_keys, environment).await?;
        self.record_key_event(environment, events::DEK_DECRYPTED, actor, &key, remember)
            .await?;
        Ok(key)
    }

    /// The data key of `encrypted_keys`, re-bound to `context` (wrapped by the provider the
    /// rules choose for it); the old bytes keep working for the old context.
    ///
    /// # Errors
    /// As [`recover_data_key`](Self::recover_data_key), and provider errors from the new wrap.
    pub async fn rekey_data_key(
        &self,
        environment: &str,
        encrypted_keys: &[u8],
        context: &KeyContext,
        actor: &Actor,
    ) -> Result<IssuedKey, VaultError> {
        self.rekey_data_key_with(environment, encrypted_keys, context, actor, None)
            .await
    }

    /// [`rekey_data_key`](Self::rekey_data_key), storing the answer `remember` makes.
    ///
    /// # Errors
    /// As `rekey_data_key`; `Store(Conflict::Answered)`.
    pub async fn rekey_data_key_with(
        &self,
        environment: &str,
        encrypted_keys: &[u8],
        context: &KeyContext,
        actor: &Actor,
        remember: Option<&RememberKey>,
    ) -> Result<IssuedKey, VaultError> {
        validate_environment(environment)?;
        context.check_caller().map_err(vault_crypto::Error::from)?;
        let key = issued::rekey(&*self.keys, encrypted_keys, context, environment).await?;
        self.record_key_event(environment, events::DEK_REKEYED, actor, &key, remember)
            .await?;
        Ok(key)
    }

    async fn record_key_event(
        &self,
        environment: &str,
        event: &str,
        actor: &Actor,
        key: &IssuedKey,
        remember: Option<&RememberKey>,
    ) -> Result<(), VaultError> {
        let remember = remember.map(|make| make(key));
        Ok(self
            .store
            .record_key_event(
                environment,
                event,
                actor,
                &key.key_ref().to_string(),
                key.context(),
                remember.as_ref(),
            )
            .await?)
    }
}
