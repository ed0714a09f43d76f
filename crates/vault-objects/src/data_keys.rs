//! The data-key API through the facade: data keys handed to a caller for encryption it does
//! itself (the WorkOS SDKs' `vault.encrypt`), each issue, recovery and rekey recorded in the
//! audit trail under the key that wrapped it (what `destroy_key_version` counts).

use vault_crypto::KeyContext;
use vault_crypto::issued::{self, IssuedKey};
use vault_store::{Timestamp, events, validate_environment};

use crate::{Vault, VaultError, Write, wire};

impl Vault {
    /// A fresh data key for `context`, bound to `environment` (never a cached key), and the
    /// `encrypted_keys` that recover it. With [`Write::remembered`], the answer
    /// ([`wire::data_key`] without the key itself) is stored in the transaction of its audit
    /// event.
    ///
    /// # Errors
    /// `Store(InvalidArgument)` for a bad environment; `Crypto` if the key provider fails;
    /// `Store(Unavailable)` if the audit event cannot be written, `Store(Conflict::Answered)`
    /// if an answer for the idempotency key was stored meanwhile (the key is then not handed
    /// out).
    pub async fn issue_data_key<'w>(
        &self,
        environment: &str,
        context: &KeyContext,
        write: impl Into<Write<'w>>,
    ) -> Result<IssuedKey, VaultError> {
        validate_environment(environment)?;
        context.check_caller().map_err(vault_crypto::Error::from)?;
        let key = issued::issue(&*self.keys, context, environment).await?;
        self.record_key_event(
            environment,
            events::DEK_READ,
            write.into(),
            &key,
            wire::data_key,
        )
        .await?;
        Ok(key)
    }

    /// The data key of `encrypted_keys` that [`issue_data_key`](Self::issue_data_key) or
    /// [`rekey_data_key`](Self::rekey_data_key) made for `environment`. The bytes are the
    /// caller's: at most one call to one key service ([`issued::recover`]). The answer kept
    /// for an idempotency key is [`wire::decrypted_key`] without the key.
    ///
    /// # Errors
    /// `Crypto` if the bytes are not an issued key of this environment or the key is
    /// unavailable; `Store` as for issuing.
    pub async fn recover_data_key<'w>(
        &self,
        environment: &str,
        encrypted_keys: &[u8],
        write: impl Into<Write<'w>>,
    ) -> Result<IssuedKey, VaultError> {
        validate_environment(environment)?;
        let key = issued::recover(&*self.keys, encrypted_keys, environment).await?;
        let write = write.into();
        self.record_key_event(
            environment,
            events::DEK_DECRYPTED,
            write,
            &key,
            wire::decrypted_key,
        )
        .await?;
        Ok(key)
    }

    /// The data key of `encrypted_keys`, re-bound to `context` (wrapped by the provider the
    /// rules choose for it); the old bytes keep working for the old context. The answer kept
    /// for an idempotency key is [`wire::data_key`] without the key.
    ///
    /// # Errors
    /// As [`recover_data_key`](Self::recover_data_key), and provider errors from the new wrap.
    pub async fn rekey_data_key<'w>(
        &self,
        environment: &str,
        encrypted_keys: &[u8],
        context: &KeyContext,
        write: impl Into<Write<'w>>,
    ) -> Result<IssuedKey, VaultError> {
        validate_environment(environment)?;
        context.check_caller().map_err(vault_crypto::Error::from)?;
        let key = issued::rekey(&*self.keys, encrypted_keys, context, environment).await?;
        self.record_key_event(
            environment,
            events::DEK_REKEYED,
            write.into(),
            &key,
            wire::data_key,
        )
        .await?;
        Ok(key)
    }

    /// Records `event` for `key`, with the answer `render` makes of it (without the key) when
    /// an idempotency key asks for one.
    async fn record_key_event(
        &self,
        environment: &str,
        event: &str,
        write: Write<'_>,
        key: &IssuedKey,
        render: fn(&IssuedKey) -> serde_json::Value,
    ) -> Result<(), VaultError> {
        let remember = write.idempotent.map(|idem| {
            idem.remember(
                &self.integrity,
                wire::without_data_key(render(key)),
                Timestamp::now(),
            )
        });
        Ok(self
            .store
            .record_key_event(
                environment,
                event,
                write.actor,
                &key.key_ref().to_string(),
                key.context(),
                remember.as_ref(),
            )
            .await?)
    }
}
