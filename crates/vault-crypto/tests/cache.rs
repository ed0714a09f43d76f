//! The data-key cache: provider calls saved, limits enforced, single flight, interoperability.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::ctx;
use vault_crypto::{
    Attempts, CacheLimits, CachingProvider, DataKey, Envelope, KeyContext, KeyProvider, KeyRef,
    ManagedKeyProvider, ProviderError, Router, WrappedKey, open_any_context, seal,
};

/// A real provider that counts its calls and can be slow, like a remote KMS.
#[derive(Debug)]
struct Counting {
    inner: ManagedKeyProvider,
    generates: AtomicU64,
    unwraps: AtomicU64,
    latency: Duration,
    /// A customer revoked the key: every call answers `Disabled`.
    revoked: std::sync::atomic::AtomicBool,
}

impl Counting {
    fn new(latency: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: ManagedKeyProvider::in_memory("root").unwrap(),
            generates: AtomicU64::new(0),
            unwraps: AtomicU64::new(0),
            latency,
            revoked: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn check(&self) -> Result<(), ProviderError> {
        if self.revoked.load(Ordering::SeqCst) {
            return Err(ProviderError::new(
                vault_crypto::ProviderErrorKind::Disabled,
                "test",
                "key disabled",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl KeyProvider for Counting {
    fn owns(&self, key: &KeyRef) -> bool {
        self.inner.owns(key)
    }

    async fn generate_data_key(
        &self,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        self.generates.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        self.check()?;
        self.inner.generate_data_key(ctx).await
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        self.inner.wrap(key, ctx).await
    }

    async fn unwrap_owned(
        &self,
        w: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        self.check()?;
        self.inner.unwrap_owned(w, ctx, attempts).await
    }
}

fn wrapped_of(env: &[u8]) -> WrappedKey {
    Envelope::parse(env).unwrap().wrapped_keys()[0].clone()
}

#[tokio::test]
async fn a_thousand_seals_make_one_provider_call_and_every_envelope_is_distinct() {
    let counting = Counting::new(Duration::ZERO);
    let cache = CachingProvider::new(counting.clone(), CacheLimits::default());
    let c = ctx(&[("organization_id", "org_1")]);
    let mut ids = std::collections::HashSet::new();
    let mut envelopes = Vec::new();
    for i in 0..1000u32 {
        let env = seal(&cache, &c, &i.to_be_bytes(), vault_crypto::Aad::NONE)
            .await
            .unwrap();
        assert!(ids.insert(*Envelope::parse(&env).unwrap().message_id()));
        envelopes.push(env);
    }
    assert_eq!(counting.generates.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(
        (
            stats.encrypt_hits,
            stats.encrypt_misses,
            stats.provider_calls
        ),
        (999, 1, 1)
    );
    // Every envelope opens without the cache, through the provider alone.
    for (i, env) in (0u32..).zip(&envelopes).step_by(97) {
        let opened = open_any_context(&*counting, env, vault_crypto::Aad::NONE)
            .await
            .unwrap();
        assert_eq!(opened.plaintext(), i.to_be_bytes());
    }
    // Another context gets another key.
    let other = seal(
        &cache,
        &ctx(&[("organization_id", "org_2")]),
        b"x",
        vault_crypto::Aad::NONE,
    )
    .await
    .unwrap();
    assert_ne!(wrapped_of(&other), wrapped_of(&envelopes[0]));
    assert_eq!(counting.generates.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn each_limit_forces_a_new_data_key() {
    let c = ctx(&[("organization_id", "org_1")]);
    // Messages: 3 per key.
    let counting = Counting::new(Duration::ZERO);
    let cache = CachingProvider::new(counting.clone(), CacheLimits::default().max_messages(3));
    let mut keys = Vec::new();
    for _ in 0..7 {
        keys.push(wrapped_of(
            &seal(&cache, &c, b"v", vault_crypto::Aad::NONE)
                .await
                .unwrap(),
        ));
    }
    assert_eq!(counting.generates.load(Ordering::SeqCst), 3);
    assert!(keys[0] == keys[2] && keys[2] != keys[3] && keys[3] == keys[5] && keys[5] != keys[6]);

    // Bytes: 100 per key.
    let counting = Counting::new(Duration::ZERO);
    let cache = CachingProvider::new(counting.clone(), CacheLimits::default().max_bytes(100));
    for _ in 0..4 {
        seal(&cache, &c, &[0u8; 40], vault_crypto::Aad::NONE)
            .await
            .unwrap(); // 40, 80 | 40, 80
    }
    assert_eq!(counting.generates.load(Ordering::SeqCst), 2);
    // A value over the byte limit gets a key of its own.
    seal(&cache, &c, &[0u8; 101], vault_crypto::Aad::NONE)
        .await
        .unwrap();
    assert_eq!(counting.generates.load(Ordering::SeqCst), 3);

    // Age.
    let counting = Counting::new(Duration::ZERO);
    let cache = CachingProvider::new(
        counting.clone(),
        CacheLimits::default().max_age(Duration::from_millis(50)),
    );
    seal(&cache, &c, b"v", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    seal(&cache, &c, b"v", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    assert_eq!(counting.generates.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_millis(49)).await;
    seal(&cache, &c, b"v", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    assert_eq!(counting.generates.load(Ordering::SeqCst), 1, "49 ms old");
    tokio::time::advance(Duration::from_millis(2)).await;
    seal(&cache, &c, b"v", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    assert_eq!(counting.generates.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_reads_make_one_unwrap_call() {
    let counting = Counting::new(Duration::from_millis(50));
    let env = seal(
        &*counting,
        &ctx(&[("organization_id", "org_1")]),
        b"shared",
        vault_crypto::Aad::NONE,
    )
    .await
    .unwrap();
    let cache = Arc::new(CachingProvider::new(
        counting.clone(),
        CacheLimits::default(),
    ));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (cache, env) = (cache.clone(), env.clone());
            tokio::spawn(async move {
                open_any_context(&*cache, &env, vault_crypto::Aad::NONE)
                    .await
                    .unwrap()
                    .into_plaintext()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), b"shared");
    }
    assert_eq!(counting.unwraps.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(stats.decrypt_misses, 1);
    assert_eq!(stats.decrypt_hits, 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_seals_make_one_generate_call() {
    let counting = Counting::new(Duration::from_millis(50));
    let cache = Arc::new(CachingProvider::new(
        counting.clone(),
        CacheLimits::default(),
    ));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                seal(
                    &*cache,
                    &ctx(&[("organization_id", "org_1")]),
                    b"v",
                    vault_crypto::Aad::NONE,
                )
                .await
                .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(counting.generates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_unwrap_is_not_cached_and_entries_are_bounded() {
    let counting = Counting::new(Duration::ZERO);
    let cache = CachingProvider::new(counting.clone(), CacheLimits::default().max_entries(2));
    let c = ctx(&[("organization_id", "org_1")]);
    let env = seal(&*counting, &c, b"v", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    // The wrong provider key: the unwrap fails, and fails again (nothing cached).
    let stranger = CachingProvider::new(
        Arc::new(ManagedKeyProvider::in_memory("root").unwrap()),
        CacheLimits::default(),
    );
    assert!(
        open_any_context(&stranger, &env, vault_crypto::Aad::NONE)
            .await
            .is_err()
    );
    assert!(
        open_any_context(&stranger, &env, vault_crypto::Aad::NONE)
            .await
            .is_err()
    );
    assert_eq!(stranger.stats().decrypt_hits, 0);

    // Three contexts through a two-entry cache: the oldest is evicted and needs a new key.
    for org in ["a", "b", "c", "a"] {
        seal(
            &cache,
            &ctx(&[("organization_id", org)]),
            b"v",
            vault_crypto::Aad::NONE,
        )
        .await
        .unwrap();
    }
    assert_eq!(
        counting.generates.load(Ordering::SeqCst),
        1 + 4,
        "a was evicted by c"
    );
    cache.clear();
    seal(
        &cache,
        &ctx(&[("organization_id", "c")]),
        b"v",
        vault_crypto::Aad::NONE,
    )
    .await
    .unwrap();
    assert_eq!(counting.generates.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn behind_a_router_only_the_cached_provider_is_cached() {
    let remote = Counting::new(Duration::ZERO);
    let cached: Arc<dyn KeyProvider> =
        Arc::new(CachingProvider::new(remote.clone(), CacheLimits::default()));
    let local = Arc::new(ManagedKeyProvider::in_memory("local").unwrap());
    let router = Router::new(local)
        .rule([("organization_id", "org_byok")], cached)
        .unwrap();
    let byok = ctx(&[("organization_id", "org_byok")]);
    for _ in 0..10 {
        let env = seal(&router, &byok, b"v", vault_crypto::Aad::NONE)
            .await
            .unwrap();
        assert_eq!(
            open_any_context(&router, &env, vault_crypto::Aad::NONE)
                .await
                .unwrap()
                .plaintext(),
            b"v"
        );
    }
    assert_eq!(remote.generates.load(Ordering::SeqCst), 1);
    assert_eq!(
        remote.unwraps.load(Ordering::SeqCst),
        0,
        "a key the cache generated opens without an unwrap"
    );
}

/// One data key never seals the values of two scopes (environments), though their contexts
/// are equal; within one scope it is reused as before.
#[tokio::test]
async fn scopes_never_share_a_data_key() {
    let counting = Counting::new(Duration::ZERO);
    let cache = CachingProvider::new(counting.clone(), CacheLimits::default());
    let c = ctx(&[("organization_id", "org_1")]);
    let a1 = vault_crypto::seal_in(&cache, "env_a", &c, b"1", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    let a2 = vault_crypto::seal_in(&cache, "env_a", &c, b"2", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    let b1 = vault_crypto::seal_in(&cache, "env_b", &c, b"3", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    // A scope that is a prefix of another, or the unscoped seal, is another scope too.
    let u1 = seal(&cache, &c, b"4", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    let e1 = vault_crypto::seal_in(&cache, "env_", &c, b"5", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    assert_eq!(wrapped_of(&a1).bytes(), wrapped_of(&a2).bytes());
    for other in [&b1, &u1, &e1] {
        assert_ne!(wrapped_of(&a1).bytes(), wrapped_of(other).bytes());
    }
    assert_eq!(counting.generates.load(Ordering::SeqCst), 4);
}

/// A revoked key (Disabled) flushes the cache at the first call that reaches the key
/// service: the cached data keys stop working at once, not after `max_age`.
#[tokio::test]
async fn a_disabled_answer_flushes_every_cached_key() {
    let counting = Counting::new(Duration::ZERO);
    let cache = CachingProvider::new(counting.clone(), CacheLimits::default());
    let c1 = ctx(&[("organization_id", "org_1")]);
    let c2 = ctx(&[("organization_id", "org_2")]);
    let sealed = seal(&cache, &c1, b"kept", vault_crypto::Aad::NONE)
        .await
        .unwrap();
    assert_eq!(
        open_any_context(&cache, &sealed, vault_crypto::Aad::NONE)
            .await
            .unwrap()
            .plaintext(),
        b"kept"
    );
    assert_eq!(
        counting.unwraps.load(Ordering::SeqCst),
        0,
        "served from cache"
    );

    counting.revoked.store(true, Ordering::SeqCst);
    // Still cached: nothing has asked the key service yet.
    assert!(
        open_any_context(&cache, &sealed, vault_crypto::Aad::NONE)
            .await
            .is_ok()
    );
    // A seal of another context asks it and hears Disabled...
    let err = seal(&cache, &c2, b"new", vault_crypto::Aad::NONE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, vault_crypto::Error::Provider(p) if p.kind() == vault_crypto::ProviderErrorKind::Disabled),
        "{err:?}"
    );
    // ...and from then on neither the cached seal key nor the cached open key is used.
    assert!(
        open_any_context(&cache, &sealed, vault_crypto::Aad::NONE)
            .await
            .is_err()
    );
    assert!(
        seal(&cache, &c1, b"more", vault_crypto::Aad::NONE)
            .await
            .is_err()
    );
    assert_eq!(counting.unwraps.load(Ordering::SeqCst), 1);

    // A caller's blob answered Disabled flushes nothing: callers choose what they send.
    counting.revoked.store(false, Ordering::SeqCst);
    assert!(
        open_any_context(&cache, &sealed, vault_crypto::Aad::NONE)
            .await
            .is_ok()
    );
    let unwraps = counting.unwraps.load(Ordering::SeqCst);
    counting.revoked.store(true, Ordering::SeqCst);
    let other = seal(
        &Counting::new(Duration::ZERO).inner,
        &c2,
        b"x",
        vault_crypto::Aad::NONE,
    )
    .await
    .unwrap();
    assert!(cache.unwrap_once(&wrapped_of(&other), &c2).await.is_err());
    counting.revoked.store(false, Ordering::SeqCst);
    assert!(
        open_any_context(&cache, &sealed, vault_crypto::Aad::NONE)
            .await
            .is_ok()
    );
    assert_eq!(
        counting.unwraps.load(Ordering::SeqCst),
        unwraps + 1,
        "the cached key survived (only the caller's unwrap reached the provider)"
    );

    // Re-enabled: working again, through the provider.
    counting.revoked.store(false, Ordering::SeqCst);
    assert_eq!(
        open_any_context(&cache, &sealed, vault_crypto::Aad::NONE)
            .await
            .unwrap()
            .plaintext(),
        b"kept"
    );
}
