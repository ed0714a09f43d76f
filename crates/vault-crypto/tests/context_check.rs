//! What the types and the checked `open` promise an embedder: an envelope opens only as the
//! context the caller expects, a caller's context can never be one of the vault's own, a
//! wrapper provider that drops a method is caught, and the managed provider works with no
//! runtime at all.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use vault_crypto::{
    Aad, Attempts, CacheLimits, CachingProvider, ContextError, DataKey, Envelope, Error,
    KeyContext, KeyProvider, KeyRef, ManagedKeyProvider, ProviderError, Reserved, Rewrapped,
    Router, WrappedKey, blocking, issued, testing,
};

fn ctx(json: &str) -> KeyContext {
    KeyContext::parse_json(json.as_bytes()).unwrap()
}

/// Forwards everything to the provider it wraps and counts the unwraps that reach it; or, for
/// `check_forwarding`'s tests, makes one of the mistakes a wrapper can make.
#[derive(Debug)]
struct Metered {
    inner: Arc<dyn KeyProvider>,
    unwraps: AtomicUsize,
    /// Forward `is_current`, or leave it to the trait's default (a mistake).
    forward_is_current: bool,
    /// Pass `Attempts::Retry` on from `unwrap_owned` whatever the caller asked (a mistake;
    /// `unwrap_once` stays right).
    retry_always: bool,
    /// Call itself local whatever it wraps (a mistake).
    claims_local: bool,
}

impl Metered {
    fn new(inner: Arc<dyn KeyProvider>) -> Self {
        Self {
            inner,
            unwraps: AtomicUsize::new(0),
            forward_is_current: true,
            retry_always: false,
            claims_local: false,
        }
    }
}

#[vault_crypto::async_trait]
impl KeyProvider for Metered {
    fn owns(&self, key: &KeyRef) -> bool {
        self.inner.owns(key)
    }

    fn is_local(&self) -> bool {
        self.claims_local || self.inner.is_local()
    }

    async fn is_current(&self, key: &KeyRef, ctx: &KeyContext) -> Result<bool, ProviderError> {
        if self.forward_is_current {
            self.inner.is_current(key, ctx).await
        } else {
            Ok(self.owns(key))
        }
    }

    async fn generate_data_key(
        &self,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        self.inner.generate_data_key(ctx).await
    }

    async fn data_key_for_seal(
        &self,
        ctx: &KeyContext,
        scope: &str,
        len: u64,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        self.inner.data_key_for_seal(ctx, scope, len).await
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        self.inner.wrap(key, ctx).await
    }

    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        let attempts = if self.retry_always {
            Attempts::Retry
        } else {
            attempts
        };
        self.inner.unwrap_owned(wrapped, ctx, attempts).await
    }

    async fn unwrap_once(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
    ) -> Result<DataKey, ProviderError> {
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        self.inner.unwrap_once(wrapped, ctx).await
    }
}

#[tokio::test]
async fn tenant_bs_envelope_does_not_open_as_tenant_a_and_no_key_is_unwrapped() {
    let keys = Metered::new(Arc::new(ManagedKeyProvider::in_memory("root").unwrap()));
    let tenant_a = ctx(r#"{"organization_id":"org_a"}"#);
    let tenant_b = ctx(r#"{"organization_id":"org_b"}"#);
    let bs = vault_crypto::seal(&keys, &tenant_b, b"b's card", Aad::NONE)
        .await
        .unwrap();

    let err = vault_crypto::open(&keys, &bs, &tenant_a, Aad::NONE)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ContextMismatch), "{err:?}");
    assert_eq!(
        keys.unwraps.load(Ordering::Relaxed),
        0,
        "no unwrap was made"
    );
    assert!(!err.to_string().contains("org_b"), "{err}");
    // The same for a rewrap and on the blocking path.
    let err = vault_crypto::rewrap(&keys, &bs, &tenant_a)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ContextMismatch), "{err:?}");
    assert_eq!(
        keys.unwraps.load(Ordering::Relaxed),
        0,
        "no unwrap was made"
    );

    // Expecting B, it opens (one unwrap).
    let opened = vault_crypto::open(&keys, &bs, &tenant_b, Aad::NONE)
        .await
        .unwrap();
    assert_eq!(opened.plaintext(), b"b's card");
    assert_eq!(keys.unwraps.load(Ordering::Relaxed), 1);
}

/// The attack the check stops: a caller of the data-key API holds a data key and its genuine
/// wrap for a context of its own, and builds an envelope with them wherever the vault expects
/// one of its own (a database writer putting it in a row).
#[tokio::test]
async fn a_forged_envelope_under_a_callers_context_is_refused_before_any_unwrap() {
    let ring = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let router = Router::new(ring.clone());
    let reserved = KeyContext::reserved(Reserved::ByokConfig).unwrap();
    let attacker = ctx(r#"{"organization_id":"org_mallory"}"#);

    let issued = issued::issue(&router, &attacker, "env").await.unwrap();
    let env = Envelope::parse(issued.encrypted_keys()).unwrap();
    let wrapped = env.wrapped_keys().to_vec();
    let aad = Aad::new(b"the vault's own associated data");
    let forged =
        vault_crypto::danger::seal_with_key(issued.data_key(), &wrapped, &attacker, b"", aad)
            .unwrap();

    // Opened for any context it is a genuine envelope, for the attacker's context.
    let opened = vault_crypto::open_any_context(&router, &forged, aad)
        .await
        .unwrap();
    assert_eq!(opened.context(), &attacker);
    // Opened as the vault's own, it is refused, and no provider is asked.
    let calls = router.calls();
    let err = vault_crypto::open(&router, &forged, &reserved, aad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ContextMismatch), "{err:?}");
    assert_eq!(router.calls(), calls, "no key was unwrapped");

    // The same wrap under a header naming the reserved context does not unwrap: the wrap is
    // bound to the context it was made for.
    let relabelled =
        vault_crypto::danger::seal_with_key(issued.data_key(), &wrapped, &reserved, b"", aad)
            .unwrap();
    let err = vault_crypto::open(&router, &relabelled, &reserved, aad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed), "{err:?}");
    // And opened for any context, a reserved header is refused outright.
    let err = vault_crypto::open_any_context(&router, &relabelled, aad)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Context(ContextError::ReservedKey { .. })),
        "{err:?}"
    );

    // What the vault sealed itself opens.
    let genuine = vault_crypto::seal(&router, &reserved, b"doc", aad)
        .await
        .unwrap();
    let opened = vault_crypto::open(&router, &genuine, &reserved, aad)
        .await
        .unwrap();
    assert_eq!(opened.plaintext(), b"doc");
}

#[tokio::test]
async fn a_callers_context_cannot_hold_a_reserved_key_and_a_decoded_one_does_not_seal() {
    let keys = ManagedKeyProvider::in_memory("root").unwrap();
    // Parsing refuses every reserved key, whichever way the context is given.
    for key in vault_crypto::RESERVED_KEYS {
        let json = format!(r#"{{"organization_id":"org_1","{key}":"x"}}"#);
        let err = KeyContext::parse_json(json.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            ContextError::ReservedKey {
                key: key.to_string()
            }
        );
        let err = KeyContext::from_pairs([(*key, "x")]).unwrap_err();
        assert_eq!(
            err,
            ContextError::ReservedKey {
                key: key.to_string()
            }
        );
        assert!(serde_json::from_str::<KeyContext>(&json).is_err());
    }

    // A reserved context decoded from bytes (an envelope's header) compares equal to the
    // vault's own, but does not seal, issue or wrap a forged envelope.
    let own = KeyContext::reserved(Reserved::RingRoot {
        ring: "root",
        version: 1,
    })
    .unwrap();
    let decoded = KeyContext::from_canonical_bytes(own.canonical_bytes()).unwrap();
    assert_eq!(decoded, own);
    let err = vault_crypto::seal(&keys, &decoded, b"forged root", Aad::NONE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Context(ContextError::ReservedKey { .. })),
        "{err:?}"
    );
    // An issued key is handed to its caller: never under a reserved context, not even one the
    // vault built, and never re-bound to one.
    for reserved in [&decoded, &own] {
        let err = issued::issue(&keys, reserved, "env").await.unwrap_err();
        assert!(
            matches!(err, Error::Context(ContextError::ReservedKey { .. })),
            "{err:?}"
        );
    }
    let metered = Metered::new(Arc::new(ManagedKeyProvider::in_memory("root").unwrap()));
    let mine = issued::issue(&metered, &ctx(r#"{"a":"1"}"#), "env")
        .await
        .unwrap();
    let err = issued::rekey(&metered, mine.encrypted_keys(), &decoded, "env")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Context(ContextError::ReservedKey { .. })),
        "{err:?}"
    );
    assert_eq!(
        metered.unwraps.load(Ordering::Relaxed),
        0,
        "refused before the unwrap"
    );
    let data_key = DataKey::generate().unwrap();
    let (_, wrapped) = keys.generate_data_key(&ctx(r#"{"a":"1"}"#)).await.unwrap();
    let err = vault_crypto::danger::seal_with_key(&data_key, &[wrapped], &decoded, b"", Aad::NONE)
        .unwrap_err();
    assert!(
        matches!(err, Error::Context(ContextError::ReservedKey { .. })),
        "{err:?}"
    );
    // The vault's own context seals, and its envelope is rewrapped only as the vault's own:
    // a new wrap under a context read from a header would be a forgery too.
    let sealed = vault_crypto::seal(&keys, &own, b"root", Aad::NONE)
        .await
        .unwrap();
    let err = vault_crypto::rewrap(&keys, &sealed, &decoded)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Context(ContextError::ReservedKey { .. })),
        "{err:?}"
    );
    let err = Envelope::parse(&sealed)
        .unwrap()
        .wrap_again(&keys, &decoded)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Context(ContextError::ReservedKey { .. })),
        "{err:?}"
    );
    let again = vault_crypto::rewrap(&keys, &sealed, &own).await.unwrap();
    assert_eq!(again, Rewrapped::AlreadyCurrent);
    // Nor is it opened as a reserved context read from bytes (a row a database writer planted,
    // naming the context of an envelope it copied): only as the one the vault built.
    let err = vault_crypto::open(&keys, &sealed, &decoded, Aad::NONE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Context(ContextError::ReservedKey { .. })),
        "{err:?}"
    );
    let opened = vault_crypto::open(&keys, &sealed, &own, Aad::NONE)
        .await
        .unwrap();
    assert_eq!(opened.plaintext(), b"root");
}

#[tokio::test]
async fn check_forwarding_catches_a_wrapper_that_forgets_is_current() {
    let forgetful = |inner| Metered {
        forward_is_current: false,
        ..Metered::new(inner)
    };
    let found = testing::check_forwarding(forgetful).await.unwrap_err();
    assert_eq!(found.methods(), ["is_current"]);
    assert!(found.to_string().contains("AlreadyCurrent"), "{found}");
    testing::check_forwarding(Metered::new).await.unwrap();

    // What the forgotten method costs: after a rotation, a rewrap through the wrapper says
    // there is nothing to do, and the value stays on the old version.
    let ring = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let wrapper = forgetful(ring.clone());
    let c = ctx(r#"{"organization_id":"org_1"}"#);
    let old = vault_crypto::seal(&wrapper, &c, b"v", Aad::NONE)
        .await
        .unwrap();
    ring.rotate().await.unwrap();
    let moved = vault_crypto::rewrap(&wrapper, &old, &c).await.unwrap();
    assert_eq!(
        moved,
        Rewrapped::AlreadyCurrent,
        "the bug check_forwarding reports"
    );
    let moved = vault_crypto::rewrap(&Metered::new(ring), &old, &c)
        .await
        .unwrap();
    assert!(matches!(moved, Rewrapped::Moved(_)));

    // A wrapper that keeps `unwrap_once` right but retries inside `unwrap_owned` (what the
    // envelope functions and a router call), and one that calls itself local whatever it wraps.
    let found = testing::check_forwarding(|inner| Metered {
        retry_always: true,
        claims_local: true,
        ..Metered::new(inner)
    })
    .await
    .unwrap_err();
    assert_eq!(found.methods(), ["unwrap_owned", "is_local"]);
    let found = testing::check_forwarding(|inner| Metered {
        claims_local: true,
        ..Metered::new(inner)
    })
    .await
    .unwrap_err();
    assert_eq!(found.methods(), ["is_local"]);

    // The crate's own wrappers forward everything.
    testing::check_forwarding(|inner| CachingProvider::new(inner, CacheLimits::default()))
        .await
        .unwrap();
    testing::check_forwarding(Router::new).await.unwrap();
}

#[test]
fn blocking_seal_and_open_run_with_no_runtime_at_all() {
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "no runtime here"
    );
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap());
    let cached: Arc<dyn KeyProvider> =
        Arc::new(CachingProvider::new(ring.clone(), CacheLimits::default()));
    let c = ctx(r#"{"organization_id":"org_1"}"#);
    for keys in [ring.clone() as Arc<dyn KeyProvider>, cached] {
        let sealed = blocking::seal(&*keys, &c, b"card", Aad::new(b"row 7")).unwrap();
        let opened = blocking::open(&*keys, &sealed, &c, Aad::new(b"row 7")).unwrap();
        assert_eq!(opened.plaintext(), b"card");
        let err = blocking::open(&*keys, &sealed, &c, Aad::new(b"row 8")).unwrap_err();
        assert!(matches!(err, Error::DecryptionFailed), "{err:?}");
    }

    // Rotate and rewrap, still with no runtime.
    let sealed = blocking::seal(&*ring, &c, b"card", Aad::NONE).unwrap();
    assert_eq!(blocking::rotate(&ring).unwrap(), 2);
    let Rewrapped::Moved(moved) = blocking::rewrap(&*ring, &sealed, &c).unwrap() else {
        panic!("sealed under version 1, so it moves");
    };
    assert_eq!(moved.key_ref().to_string(), "managed://root#v2");

    // A provider that calls a key service is refused before anything is done.
    #[derive(Debug)]
    struct Remote(Metered);
    #[vault_crypto::async_trait]
    impl KeyProvider for Remote {
        fn owns(&self, key: &KeyRef) -> bool {
            self.0.owns(key)
        }
        async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
            self.0.wrap(key, ctx).await
        }
        async fn unwrap_owned(
            &self,
            wrapped: &WrappedKey,
            ctx: &KeyContext,
            attempts: Attempts,
        ) -> Result<DataKey, ProviderError> {
            self.0.unwrap_owned(wrapped, ctx, attempts).await
        }
    }
    let remote = Remote(Metered::new(ring.clone()));
    assert!(matches!(
        blocking::seal(&remote, &c, b"card", Aad::NONE),
        Err(Error::NeedsRuntime)
    ));
    assert!(matches!(
        blocking::open(&remote, &sealed, &c, Aad::NONE),
        Err(Error::NeedsRuntime)
    ));
    assert_eq!(remote.0.unwraps.load(Ordering::Relaxed), 0);
    // Called from inside a runtime's task, many times in one poll (past tokio's cooperative
    // budget, after which a tokio lock defers its wake-up to the scheduler), it still finishes.
    let (done, finished) = std::sync::mpsc::channel();
    let (cached, c2) = (
        Arc::new(CachingProvider::new(ring.clone(), CacheLimits::default())),
        c.clone(),
    );
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..1000 {
                blocking::seal(&*cached, &c2, b"card", Aad::NONE).unwrap();
            }
        });
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("1,000 blocking seals inside a task finish");

    // A router is local only while everything it may call is.
    let router = Router::new(ring.clone());
    assert!(router.is_local());
    let router = router.decrypt_only(Arc::new(remote));
    assert!(!router.is_local());
}
