//! Data keys handed to a caller (the data-key API: `POST /vault/v1/keys/data-key`, `decrypt`,
//! `rekey`), for encryption the caller does itself, as the WorkOS SDKs' `vault.encrypt` does.
//!
//! The caller gets the plaintext data key and `encrypted_keys`, which it stores beside its
//! ciphertext and hands back later to recover the key. `encrypted_keys` is an ordinary envelope
//! (`docs/FORMAT.md`, "Issued data keys") with an empty payload: its header carries the key
//! context and the message id (the data key's id), its wrapped keys the data key, its key
//! commitment ties them to that one data key, and the GCM tag over the header, under associated
//! data naming the issuing scope (the environment), authenticates the context. So `recover`
//! needs nothing but the bytes, a changed context or a blob from another scope does not open,
//! and no object envelope can be passed off as one (their associated data differ).

use std::fmt;

use crate::aead::{Backend, TAG_LEN};
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::envelope::suite::Suite;
use crate::envelope::{self, Envelope, MessageRandom};
use crate::error::{EnvelopeError, Error};
use crate::provider::{Attempts, KeyProvider, KeyRef};

/// A data key and the bytes that recover it.
pub struct IssuedKey {
    id: String,
    data_key: DataKey,
    context: KeyContext,
    key_ref: KeyRef,
    encrypted_keys: Vec<u8>,
}

impl IssuedKey {
    /// The data key's id: its message id as a UUID-shaped string, the same across a rekey.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The plaintext data key. Hand it to the caller and drop it.
    pub fn data_key(&self) -> &DataKey {
        &self.data_key
    }

    /// The key context it is bound to.
    pub fn context(&self) -> &KeyContext {
        &self.context
    }

    /// The key that wrapped (or unwrapped) it.
    pub fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    /// The bytes that recover the data key through [`recover`].
    pub fn encrypted_keys(&self) -> &[u8] {
        &self.encrypted_keys
    }
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("id", &self.id)
            .field("data_key", &self.data_key)
            .field("context", &self.context)
            .field("key_ref", &self.key_ref)
            .field("encrypted_keys_len", &self.encrypted_keys.len())
            .finish()
    }
}

/// The associated data of an issued key's envelope: a domain label and the scope.
fn issued_aad(scope: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(20 + scope.len());
    aad.extend_from_slice(b"vault-data-key/v1\0");
    aad.extend_from_slice(scope.as_bytes());
    aad
}

fn id_of(message_id: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut h = String::with_capacity(32);
    for b in &message_id[..16] {
        let _ = write!(h, "{b:02x}");
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Issues a fresh data key for `ctx` (never a cached one: each call is a new key), wrapped by
/// the provider `provider` chooses, bound to `scope`.
///
/// # Errors
/// [`Error::Context`] for a context holding a reserved key (an issued key is handed to a
/// caller, so it is never one of the vault's own); [`Error::Provider`] if the provider fails;
/// [`Error::Random`].
pub async fn issue(
    provider: &dyn KeyProvider,
    ctx: &KeyContext,
    scope: &str,
) -> Result<IssuedKey, Error> {
    ctx.check_caller()?;
    let (data_key, wrapped) = provider.generate_data_key(ctx).await?;
    let random = MessageRandom::generate()?;
    let encrypted_keys = envelope::seal_with(
        Backend::DEFAULT,
        Suite::SEAL,
        &data_key,
        std::slice::from_ref(&wrapped),
        ctx,
        b"",
        &issued_aad(scope),
        &random,
    )?;
    Ok(IssuedKey {
        id: id_of(&random.message_id),
        data_key,
        context: ctx.clone(),
        key_ref: wrapped.key_ref().clone(),
        encrypted_keys,
    })
}

/// Recovers the data key from `encrypted_keys` that [`issue`] or [`rekey`] produced for `scope`.
///
/// The bytes are the caller's: a blob holding anything but exactly one wrapped key is refused
/// before any provider is asked, and the one wrapped key is unwrapped with
/// [`KeyProvider::unwrap_once`] (one call at most, only by the provider the rules choose for
/// its context or one kept for decryption).
///
/// # Errors
/// [`Error::Envelope`] if the bytes are not an issued key; [`Error::DecryptionFailed`] if they
/// were changed or belong to another scope; provider errors as [`crate::open`].
pub async fn recover(
    provider: &dyn KeyProvider,
    encrypted_keys: &[u8],
    scope: &str,
) -> Result<IssuedKey, Error> {
    let env = Envelope::parse(encrypted_keys)?;
    let (data_key, key_ref) = recover_parsed(provider, &env, scope).await?;
    Ok(IssuedKey {
        id: id_of(env.message_id()),
        data_key,
        context: env.context().clone(),
        key_ref,
        encrypted_keys: encrypted_keys.to_vec(),
    })
}

/// The data key of a parsed issued-key envelope, and the key that unwrapped it.
async fn recover_parsed(
    provider: &dyn KeyProvider,
    env: &Envelope<'_>,
    scope: &str,
) -> Result<(DataKey, KeyRef), Error> {
    if env.payload().len() != TAG_LEN {
        return Err(EnvelopeError::Malformed {
            reason: "not an issued data key (it holds a value)",
        }
        .into());
    }
    // Issued keys are always sealed whole (suite 3 or 1): a streamed head is not one.
    if env.segment_size().is_some() {
        return Err(EnvelopeError::Malformed {
            reason: "not an issued data key (a streamed envelope)",
        }
        .into());
    }
    // Checked before any provider is asked: the blob is the caller's, and each wrapped key
    // would be a call to someone's key service. Nothing the vault sealed for itself (a reserved
    // context) is unwrapped for a caller.
    env.context().check_caller()?;
    if env.wrapped_keys().len() != 1 {
        return Err(EnvelopeError::Malformed {
            reason: "an issued data key holds exactly one wrapped key",
        }
        .into());
    }
    let (data_key, keys, key_ref) =
        envelope::unwrap_committed(provider, env, Attempts::Once).await?;
    // The tag over the header: the context and the scope are authentic.
    let plaintext = envelope::decrypt_payload(Backend::DEFAULT, &keys, env, &issued_aad(scope))?;
    debug_assert!(plaintext.is_empty());
    Ok((data_key, key_ref))
}

/// Re-binds an issued data key to `new_ctx`: recovered from `encrypted_keys`, wrapped by the
/// provider `provider` chooses for `new_ctx`, with a new header. The data key and its id stay;
/// the old `encrypted_keys` keeps working for the old context.
///
/// # Errors
/// [`Error::Context`] for a `new_ctx` holding a reserved key, before anything is unwrapped; as
/// [`recover`], and provider errors from the new wrap.
pub async fn rekey(
    provider: &dyn KeyProvider,
    encrypted_keys: &[u8],
    new_ctx: &KeyContext,
    scope: &str,
) -> Result<IssuedKey, Error> {
    new_ctx.check_caller()?;
    let env = Envelope::parse(encrypted_keys)?;
    let (data_key, _) = recover_parsed(provider, &env, scope).await?;
    let wrapped = provider.wrap(&data_key, new_ctx).await?;
    let mut random = MessageRandom::generate()?;
    random.message_id = *env.message_id();
    let encrypted_keys = envelope::seal_with(
        Backend::DEFAULT,
        Suite::SEAL,
        &data_key,
        std::slice::from_ref(&wrapped),
        new_ctx,
        b"",
        &issued_aad(scope),
        &random,
    )?;
    Ok(IssuedKey {
        id: id_of(env.message_id()),
        data_key,
        context: new_ctx.clone(),
        key_ref: wrapped.key_ref().clone(),
        encrypted_keys,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::error::{ProviderError, ProviderErrorKind};
    use crate::provider::WrappedKey;
    use crate::{ManagedKeyProvider, Router};

    /// A customer's key service: a real ring that counts every call made to it.
    #[derive(Debug)]
    struct Metered {
        inner: ManagedKeyProvider,
        calls: AtomicU64,
    }

    impl Metered {
        fn new(ring: &str) -> Arc<Self> {
            Arc::new(Self {
                inner: ManagedKeyProvider::in_memory(ring).unwrap(),
                calls: AtomicU64::new(0),
            })
        }

        fn calls(&self) -> u64 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl KeyProvider for Metered {
        fn owns(&self, key: &KeyRef) -> bool {
            self.inner.owns(key)
        }

        async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.wrap(key, ctx).await
        }

        async fn unwrap_owned(
            &self,
            wrapped: &WrappedKey,
            ctx: &KeyContext,
            attempts: Attempts,
        ) -> Result<DataKey, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.unwrap_owned(wrapped, ctx, attempts).await
        }
    }

    /// An issued-key blob as an attacker can build one: any data key, any wrapped keys (taken
    /// from elsewhere), any context. Only the provider calls it causes matter here.
    fn forged(wrapped: &[WrappedKey], ctx: &KeyContext, scope: &str) -> Vec<u8> {
        envelope::seal_with(
            Backend::DEFAULT,
            Suite::SEAL,
            &DataKey::generate().unwrap(),
            wrapped,
            ctx,
            b"",
            &issued_aad(scope),
            &MessageRandom::generate().unwrap(),
        )
        .unwrap()
    }

    fn wrapped_of(encrypted_keys: &[u8]) -> WrappedKey {
        Envelope::parse(encrypted_keys).unwrap().wrapped_keys()[0].clone()
    }

    /// Issued keys hold exactly one wrapped key: a blob with two is refused before any
    /// provider is asked (each would be a call to somebody's key service).
    #[tokio::test]
    async fn a_blob_with_two_wrapped_keys_is_refused_without_a_provider_call() {
        let customer = Metered::new("customer");
        let router = Router::new(customer.clone());
        let issued = issue(&router, &ctx("org_1"), "env").await.unwrap();
        let before = customer.calls();
        let one = wrapped_of(issued.encrypted_keys());
        let blob = forged(&[one.clone(), one], &ctx("org_1"), "env");
        for result in [
            recover(&router, &blob, "env").await.map(|_| ()),
            rekey(&router, &blob, &ctx("org_2"), "env")
                .await
                .map(|_| ()),
        ] {
            assert!(
                matches!(
                    result,
                    Err(Error::Envelope(EnvelopeError::Malformed { .. }))
                ),
                "{result:?}"
            );
        }
        assert_eq!(customer.calls(), before, "no provider call");
    }

    /// A caller cannot point a blob at another customer's key: the context it names must be
    /// routed to that key's provider (or the provider kept for decryption).
    #[tokio::test]
    async fn a_blob_is_only_unwrapped_by_the_provider_its_context_is_routed_to() {
        let shared = Metered::new("root");
        let byok = Metered::new("org-b");
        let retired = Metered::new("retired");
        let router = Router::new(shared.clone())
            .rule([("organization_id", "org_b")], byok.clone())
            .unwrap()
            .decrypt_only(retired.clone());
        // Environment A knows customer B's wrapped key (it is in any blob B's users hold).
        let b_blob = issue(&router, &ctx("org_b"), "env_b").await.unwrap();
        let b_wrapped = wrapped_of(b_blob.encrypted_keys());
        let before = byok.calls();
        for attacker_ctx in [ctx("org_a"), ctx("org_other")] {
            let blob = forged(std::slice::from_ref(&b_wrapped), &attacker_ctx, "env_a");
            let err = recover(&router, &blob, "env_a").await.unwrap_err();
            assert!(
                matches!(&err, Error::Provider(p) if p.kind() == ProviderErrorKind::NotMine),
                "{err:?}"
            );
        }
        assert_eq!(byok.calls(), before, "customer B's key was never called");

        // Legitimate blobs still open: routed by rule, by default, and kept for decryption.
        assert!(
            recover(&router, b_blob.encrypted_keys(), "env_b")
                .await
                .is_ok()
        );
        let a = issue(&router, &ctx("org_a"), "env_a").await.unwrap();
        assert!(recover(&router, a.encrypted_keys(), "env_a").await.is_ok());
        let old = issue(&*retired, &ctx("org_a"), "env_a").await.unwrap();
        assert!(
            recover(&router, old.encrypted_keys(), "env_a")
                .await
                .is_ok()
        );
        assert_eq!(retired.calls(), 2, "one wrap, one unwrap");
    }

    fn ctx(org: &str) -> KeyContext {
        KeyContext::from_pairs([("organization_id", org)]).unwrap()
    }

    #[tokio::test]
    async fn issue_recover_rekey() {
        let p = ManagedKeyProvider::in_memory("root").unwrap();
        let a = issue(&p, &ctx("org_1"), "env").await.unwrap();
        let b = issue(&p, &ctx("org_1"), "env").await.unwrap();
        assert_ne!(a.data_key.expose_secret(), b.data_key.expose_secret());
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 36);

        let r = recover(&p, a.encrypted_keys(), "env").await.unwrap();
        assert_eq!(r.data_key.expose_secret(), a.data_key.expose_secret());
        assert_eq!(r.context, ctx("org_1"));
        assert_eq!(r.id, a.id);

        let moved = rekey(&p, a.encrypted_keys(), &ctx("org_2"), "env")
            .await
            .unwrap();
        assert_eq!(moved.id, a.id);
        assert_eq!(moved.context, ctx("org_2"));
        let r2 = recover(&p, moved.encrypted_keys(), "env").await.unwrap();
        assert_eq!(r2.data_key.expose_secret(), a.data_key.expose_secret());
        assert_eq!(r2.context, ctx("org_2"));
    }

    #[tokio::test]
    async fn another_scope_a_changed_context_or_an_object_envelope_do_not_open() {
        let p = ManagedKeyProvider::in_memory("root").unwrap();
        let a = issue(&p, &ctx("org_1"), "env_a").await.unwrap();
        assert!(matches!(
            recover(&p, a.encrypted_keys(), "env_b").await,
            Err(Error::DecryptionFailed)
        ));

        // Every single-byte change fails closed (structure, key, context or tag).
        for i in 0..a.encrypted_keys().len() {
            let mut bad = a.encrypted_keys().to_vec();
            bad[i] ^= 0x01;
            assert!(recover(&p, &bad, "env_a").await.is_err(), "byte {i}");
        }

        let sealed = crate::seal(&p, &ctx("org_1"), b"a value", crate::Aad::NONE)
            .await
            .unwrap();
        assert!(matches!(
            recover(&p, &sealed, "env_a").await,
            Err(Error::Envelope(EnvelopeError::Malformed { .. }))
        ));
        let empty = crate::seal(&p, &ctx("org_1"), b"", crate::Aad::NONE)
            .await
            .unwrap();
        assert!(matches!(
            recover(&p, &empty, "env_a").await,
            Err(Error::DecryptionFailed)
        ));
    }
}
