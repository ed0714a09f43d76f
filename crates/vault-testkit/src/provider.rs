//! The [`KeyProvider`] conformance suite: what every provider (managed, AWS KMS, ...) must do.

use async_trait::async_trait;
use vault_crypto::{
    Attempts, DataKey, Error, KeyContext, KeyProvider, KeyRef, ManagedKeyProvider, ProviderError,
    ProviderErrorKind, Rewrapped, WrappedKey, open_any_context, rewrap_any_context, seal,
};

fn ctx(org: &str) -> KeyContext {
    KeyContext::from_pairs([("organization_id", org), ("user_id", "u_9")]).unwrap()
}

/// Every check, in order.
pub async fn run_all(provider: &dyn KeyProvider) {
    round_trips(provider).await;
    wrong_context_fails(provider).await;
    tampered_wrapped_key_fails(provider).await;
    foreign_keys_are_not_mine(provider).await;
    envelopes_and_rewrap(provider).await;
}

/// generate/unwrap and wrap/unwrap return the same data key, and the provider owns its refs.
pub async fn round_trips(provider: &dyn KeyProvider) {
    let c = ctx("org_1");
    let (key, wrapped) = provider.generate_data_key(&c).await.unwrap();
    assert!(provider.owns(wrapped.key_ref()), "{:?}", wrapped.key_ref());
    let again = provider.unwrap(&wrapped, &c).await.unwrap();
    assert_eq!(again.expose_secret(), key.expose_secret());
    let rewrapped = provider.wrap(&key, &c).await.unwrap();
    assert_ne!(rewrapped.bytes(), wrapped.bytes(), "wraps are randomised");
    let again = provider.unwrap(&rewrapped, &c).await.unwrap();
    assert_eq!(again.expose_secret(), key.expose_secret());
    // Two data keys differ.
    let (other, _) = provider.generate_data_key(&c).await.unwrap();
    assert_ne!(other.expose_secret(), key.expose_secret());
}

/// A wrapped key unwraps under its own context only.
pub async fn wrong_context_fails(provider: &dyn KeyProvider) {
    let (_, wrapped) = provider.generate_data_key(&ctx("org_1")).await.unwrap();
    let e = provider.unwrap(&wrapped, &ctx("org_2")).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext, "{e}");
}

/// A tampered wrapped key is rejected as inauthentic.
pub async fn tampered_wrapped_key_fails(provider: &dyn KeyProvider) {
    let c = ctx("org_1");
    let (_, wrapped) = provider.generate_data_key(&c).await.unwrap();
    let mut bytes = wrapped.bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let tampered = WrappedKey::new(wrapped.key_ref().clone(), bytes).unwrap();
    let e = provider.unwrap(&tampered, &c).await.unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext, "{e}");
}

/// Keys of another scheme or key id are not the provider's.
pub async fn foreign_keys_are_not_mine(provider: &dyn KeyProvider) {
    let c = ctx("org_1");
    let (_, wrapped) = provider.generate_data_key(&c).await.unwrap();
    let foreign = KeyRef::new("other-kms", wrapped.key_ref().key_id(), "").unwrap();
    assert!(!provider.owns(&foreign));
    let moved = WrappedKey::new(foreign, wrapped.bytes().to_vec()).unwrap();
    assert_eq!(
        provider.unwrap(&moved, &c).await.unwrap_err().kind(),
        ProviderErrorKind::NotMine
    );
}

/// A routing change in miniature: `new` wraps, `old` is kept to unwrap what it wrapped before.
#[derive(Debug)]
struct Moving<'a> {
    new: &'a dyn KeyProvider,
    old: ManagedKeyProvider,
}

#[async_trait]
impl KeyProvider for Moving<'_> {
    fn owns(&self, key: &KeyRef) -> bool {
        self.new.owns(key) || self.old.owns(key)
    }

    async fn is_current(&self, key: &KeyRef, ctx: &KeyContext) -> Result<bool, ProviderError> {
        self.new.is_current(key, ctx).await
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        self.new.wrap(key, ctx).await
    }

    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        if self.new.owns(wrapped.key_ref()) {
            self.new.unwrap_owned(wrapped, ctx, attempts).await
        } else {
            self.old.unwrap_owned(wrapped, ctx, attempts).await
        }
    }
}

/// Envelopes seal and open through the provider; a fresh envelope needs no rewrap, and an
/// envelope moved to the provider keeps its ciphertext.
pub async fn envelopes_and_rewrap(provider: &dyn KeyProvider) {
    let c = ctx("org_1");
    let env = seal(provider, &c, b"conformance", vault_crypto::Aad::new(b"aad"))
        .await
        .unwrap();
    assert!(provider.owns(env.key_ref()));
    assert_eq!(
        open_any_context(provider, &env, vault_crypto::Aad::new(b"aad"))
            .await
            .unwrap()
            .plaintext(),
        b"conformance"
    );
    assert!(matches!(
        open_any_context(provider, &env, vault_crypto::Aad::new(b"other")).await,
        Err(Error::DecryptionFailed)
    ));
    assert_eq!(
        rewrap_any_context(provider, &env).await.unwrap(),
        Rewrapped::AlreadyCurrent
    );

    let moving = Moving {
        new: provider,
        old: ManagedKeyProvider::in_memory("conformance-old").unwrap(),
    };
    let old = seal(
        &moving.old,
        &c,
        b"conformance",
        vault_crypto::Aad::new(b"aad"),
    )
    .await
    .unwrap();
    let Rewrapped::Moved(moved) = rewrap_any_context(&moving, &old).await.unwrap() else {
        panic!("an envelope under another provider's key is not current");
    };
    assert!(provider.owns(moved.key_ref()));
    let tail = |e: &[u8]| e[e.len() - (11 + 16)..].to_vec();
    assert_eq!(
        tail(&moved),
        tail(&old),
        "rewrap leaves the ciphertext alone"
    );
    assert_eq!(
        open_any_context(provider, &moved, vault_crypto::Aad::new(b"aad"))
            .await
            .unwrap()
            .plaintext(),
        b"conformance"
    );
}
