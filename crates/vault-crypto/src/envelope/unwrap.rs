//! Finding the wrapped key that opens an envelope: each one the provider owns is unwrapped in
//! turn until one gives the data key the envelope commits to.

use super::{Envelope, commit, message_keys};
use crate::data_key::DataKey;
use crate::error::{Error, ProviderErrorKind};
use crate::provider::{Attempts, KeyProvider, KeyRef, WrappedKey};

/// Finds a wrapped key the provider owns that unwraps to the data key the envelope commits to,
/// making at most as many calls per wrapped key as `attempts` allows.
pub(crate) async fn unwrap_committed(
    provider: &dyn KeyProvider,
    env: &Envelope<'_>,
    attempts: Attempts,
) -> Result<(DataKey, commit::MessageKeys, KeyRef), Error> {
    let mut search = Search::default();
    for wrapped in env.wrapped_keys() {
        if !provider.owns(wrapped.key_ref()) {
            continue;
        }
        let now = match attempts {
            Attempts::Retry => provider.unwrap_owned_now(wrapped, env.context()),
            Attempts::Once => None,
        };
        let unwrapped = match now {
            Some(unwrapped) => unwrapped,
            None => {
                provider
                    .unwrap_owned(wrapped, env.context(), attempts)
                    .await
            }
        };
        if let Some(found) = search.consider(env, wrapped, unwrapped) {
            return Ok(found);
        }
    }
    Err(search.failure(env))
}

/// [`unwrap_committed`] for our own data ([`Attempts::Retry`]) on the calling thread: each
/// unwrap the provider answers at once is taken as it comes, and one it must wait for (a ring
/// check that is due, a version it has not loaded) is awaited right there, parked, before the
/// search goes on: no wrapped key is unwrapped twice.
pub(crate) fn unwrap_committed_blocking(
    provider: &dyn KeyProvider,
    env: &Envelope<'_>,
) -> Result<(DataKey, commit::MessageKeys, KeyRef), Error> {
    let mut search = Search::default();
    for wrapped in env.wrapped_keys() {
        if !provider.owns(wrapped.key_ref()) {
            continue;
        }
        let unwrapped = match provider.unwrap_owned_now(wrapped, env.context()) {
            Some(unwrapped) => unwrapped,
            None => {
                crate::park::run(provider.unwrap_owned(wrapped, env.context(), Attempts::Retry))
            }
        };
        if let Some(found) = search.consider(env, wrapped, unwrapped) {
            return Ok(found);
        }
    }
    Err(search.failure(env))
}

/// The wrapped keys tried so far by an unwrap: how many the provider owned, and the error that
/// says most about why none opened.
#[derive(Default)]
struct Search {
    owned: usize,
    last_error: Option<Error>,
}

impl Search {
    /// Takes one owned wrapped key's unwrap: the keys if it is the committed data key.
    fn consider(
        &mut self,
        env: &Envelope<'_>,
        wrapped: &WrappedKey,
        unwrapped: Result<DataKey, crate::error::ProviderError>,
    ) -> Option<(DataKey, commit::MessageKeys, KeyRef)> {
        self.owned += 1;
        match unwrapped {
            Ok(key) => {
                let keys = message_keys(&key, env);
                if commit::matches(env.commitment(), &keys.commitment) {
                    return Some((key, keys, wrapped.key_ref().clone()));
                }
                self.last_error.get_or_insert(Error::DecryptionFailed);
            }
            Err(e) if e.kind() == ProviderErrorKind::InvalidCiphertext => {
                self.last_error.get_or_insert(Error::DecryptionFailed);
            }
            // An outage or a policy refusal says more than "decryption failed": keep it.
            Err(e) => self.last_error = Some(Error::Provider(e)),
        }
        None
    }

    /// The error once no wrapped key opened.
    fn failure(self, env: &Envelope<'_>) -> Error {
        if self.owned == 0 {
            let key_ref = env
                .wrapped_keys()
                .first()
                .map(|k| k.key_ref().to_string())
                .unwrap_or_default();
            return Error::NoProvider { key_ref };
        }
        self.last_error.unwrap_or(Error::DecryptionFailed)
    }
}
