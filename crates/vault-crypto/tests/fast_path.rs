//! The synchronous fast path (`KeyProvider::data_key_now`, `unwrap_owned_now`): taken only when
//! the provider can answer at once, never a way around a wrapper, the router's counters or the
//! ring's freshness check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{block_on, ctx};
use vault_crypto::{
    Aad, Attempts, DataKey, Envelope, KeyContext, KeyProvider, KeyRef, ManagedKeyProvider,
    ProviderError, Router, WrappedKey, blocking, open, seal,
};

fn org1() -> KeyContext {
    ctx(&[("organization_id", "org_1")])
}

#[test]
fn the_managed_provider_answers_now_between_checks_and_defers_when_one_is_due() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    // The provider is handed its data key by the seal (a caller cannot make a `FreshKey`):
    // here, through a router that records nothing of it, by sealing.
    let sealed = blocking::seal(&p, &org1(), b"v", Aad::NONE).unwrap();
    let env = Envelope::parse(&sealed).unwrap();
    let wrapped = env.wrapped_keys()[0].clone();
    let key = block_on(p.unwrap(&wrapped, &org1())).unwrap();
    // What it answers now is what its async unwrap gives.
    let now = p
        .unwrap_owned_now(&wrapped, &org1())
        .expect("fresh ring")
        .unwrap();
    assert_eq!(now.expose_secret(), key.expose_secret());
    // Another context's unwrap fails now, as it would awaited.
    let other = ctx(&[("organization_id", "org_2")]);
    assert!(p.unwrap_owned_now(&wrapped, &other).unwrap().is_err());

    // A ring due for a check (every call, with a zero interval) is never answered now.
    let due = ManagedKeyProvider::in_memory("root")
        .unwrap()
        .with_check_interval(Duration::ZERO);
    let (_, w) = block_on(due.data_key_for_seal(&org1(), "", 1)).unwrap();
    assert!(due.unwrap_owned_now(&w, &org1()).is_none());
    // Its seals still work (awaited), and open.
    let sealed = blocking::seal(&due, &org1(), b"w", Aad::NONE).unwrap();
    assert_eq!(
        blocking::open(&due, &sealed, &org1(), Aad::NONE)
            .unwrap()
            .plaintext(),
        b"w"
    );
    // A version the ring does not hold is left to the async path (which asks the store).
    let unknown = WrappedKey::new(
        KeyRef::new("managed", "root", "v9").unwrap(),
        wrapped.bytes().to_vec(),
    )
    .unwrap();
    assert!(p.unwrap_owned_now(&unknown, &org1()).is_none());
}

/// Counts the calls that reach it. With `defer` `None` it leaves the fast path to its default
/// (never answers now); with `Some(bytes)` it answers unwraps now through `inner`, except that
/// of the wrapped key with those bytes, which it leaves to be awaited.
#[derive(Debug)]
struct Metered {
    inner: Arc<dyn KeyProvider>,
    defer: Option<Vec<u8>>,
    seals: AtomicUsize,
    unwraps: AtomicUsize,
    now: AtomicUsize,
}

impl Metered {
    fn new(inner: Arc<dyn KeyProvider>, defer: Option<Vec<u8>>) -> Self {
        Self {
            inner,
            defer,
            seals: AtomicUsize::new(0),
            unwraps: AtomicUsize::new(0),
            now: AtomicUsize::new(0),
        }
    }
}

#[vault_crypto::async_trait]
impl KeyProvider for Metered {
    fn owns(&self, key: &KeyRef) -> bool {
        self.inner.owns(key)
    }

    fn is_local(&self) -> bool {
        self.inner.is_local()
    }

    async fn data_key_for_seal(
        &self,
        ctx: &KeyContext,
        scope: &str,
        len: u64,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        self.seals.fetch_add(1, Ordering::Relaxed);
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
        self.inner.unwrap_owned(wrapped, ctx, attempts).await
    }

    fn unwrap_owned_now(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
    ) -> Option<Result<DataKey, ProviderError>> {
        let deferred = self.defer.as_deref()?;
        self.now.fetch_add(1, Ordering::Relaxed);
        if wrapped.bytes() == deferred {
            return None;
        }
        self.inner.unwrap_owned_now(wrapped, ctx)
    }
}

#[test]
fn a_wrapper_that_leaves_the_fast_path_alone_still_sees_every_call() {
    let metered = Metered::new(
        Arc::new(ManagedKeyProvider::in_memory("root").unwrap()),
        None,
    );
    // Behind a router too: the router forwards the fast path to a provider that has none.
    let metered = Arc::new(metered);
    let router = Router::new(metered.clone());
    for provider in [&*metered as &dyn KeyProvider, &router] {
        let sealed = blocking::seal(provider, &org1(), b"v", Aad::NONE).unwrap();
        let opened = blocking::open(provider, &sealed, &org1(), Aad::NONE).unwrap();
        assert_eq!(opened.plaintext(), b"v");
        let sealed = block_on(seal(provider, &org1(), b"w", Aad::NONE)).unwrap();
        block_on(open(provider, &sealed, &org1(), Aad::NONE)).unwrap();
    }
    assert_eq!(metered.seals.load(Ordering::Relaxed), 4);
    assert_eq!(metered.unwraps.load(Ordering::Relaxed), 4);
}

#[test]
fn the_router_counts_what_it_answers_now() {
    let router = Router::new(Arc::new(ManagedKeyProvider::in_memory("root").unwrap()));
    let sealed = blocking::seal(&router, &org1(), b"v", Aad::NONE).unwrap();
    blocking::open(&router, &sealed, &org1(), Aad::NONE).unwrap();
    let sealed = block_on(seal(&router, &org1(), b"v", Aad::NONE)).unwrap();
    block_on(open(&router, &sealed, &org1(), Aad::NONE)).unwrap();
    let calls = router.calls();
    assert_eq!((calls.seal_keys, calls.unwrap), (2, 2));
    // A key no provider owns is "no provider" on the fast path as on the async one.
    let foreign = WrappedKey::new(KeyRef::new("other", "k", "v1").unwrap(), vec![1; 60]).unwrap();
    let r = router.unwrap_owned_now(&foreign, &org1()).unwrap();
    assert_eq!(
        r.unwrap_err().kind(),
        vault_crypto::ProviderErrorKind::NotMine
    );
}

#[test]
fn a_rotation_by_another_process_reaches_blocking_seals_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(50);
    let ours = ManagedKeyProvider::open_or_create(dir.path(), "root")
        .unwrap()
        .with_check_interval(interval);
    let theirs = ManagedKeyProvider::open_existing(dir.path(), "root").unwrap();
    let version = |sealed: &[u8]| {
        Envelope::parse(sealed).unwrap().wrapped_keys()[0]
            .key_ref()
            .version()
            .to_string()
    };
    let before = blocking::seal(&ours, &org1(), b"v", Aad::NONE).unwrap();
    assert_eq!(version(&before), "v1");
    blocking::rotate(&theirs).unwrap();
    std::thread::sleep(interval + Duration::from_millis(20));
    let after = blocking::seal(&ours, &org1(), b"v", Aad::NONE).unwrap();
    assert_eq!(version(&after), "v2");
    // And the new version opens on the fast path of a third process that never checked.
    let third = ManagedKeyProvider::open_existing(dir.path(), "root").unwrap();
    assert_eq!(
        blocking::open(&third, &after, &org1(), Aad::NONE)
            .unwrap()
            .plaintext(),
        b"v"
    );
}

/// A blocking open whose search meets a wrapped key the provider must wait for goes on from
/// there: the keys tried before it are not unwrapped again (once each, on whichever path).
#[test]
fn a_blocking_open_that_must_wait_unwraps_each_key_once() {
    let inner = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let (_, wrong) = block_on(inner.data_key_for_seal(&org1(), "", 1)).unwrap();
    let (key, right) = block_on(inner.data_key_for_seal(&org1(), "", 1)).unwrap();
    let envelope = vault_crypto::danger::seal_with_key(
        &key,
        &[wrong, right.clone()],
        &org1(),
        b"value",
        Aad::NONE,
    )
    .unwrap();
    for in_place in [false, true] {
        let p = Metered::new(inner.clone(), Some(right.bytes().to_vec()));
        let opened = if in_place {
            blocking::open_in_place(&p, envelope.clone(), &org1(), Aad::NONE)
        } else {
            blocking::open(&p, &envelope, &org1(), Aad::NONE)
        }
        .unwrap();
        assert_eq!(opened.plaintext(), b"value");
        // The wrong key answered now, the right one was asked now, deferred, and awaited once.
        assert_eq!(p.now.load(Ordering::Relaxed), 2, "in place: {in_place}");
        assert_eq!(p.unwraps.load(Ordering::Relaxed), 1, "in place: {in_place}");
    }
}
