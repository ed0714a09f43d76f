//! The key-lifecycle suite for [`RingStore`]s: what every process sharing a ring must see.
//! `open` makes a new handle on the same ring, as another process would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_crypto::{
    KeyContext, KeyProvider, KeyRingError, ManagedKeyProvider, ProviderErrorKind, RingStore,
};

fn ctx() -> KeyContext {
    KeyContext::from_pairs([("organization_id", "org_1")]).unwrap_or_else(|e| panic!("{e}"))
}

async fn provider(store: Arc<dyn RingStore>, create: bool) -> ManagedKeyProvider {
    ManagedKeyProvider::open(store, create)
        .await
        .unwrap_or_else(|e| panic!("open: {e}"))
}

/// Two processes: changes from either are made on top of the other's (compare-and-swap, not
/// overwrite), and a destroyed version opens nowhere, not even in a process opened afterwards.
pub async fn processes_agree(open: impl Fn() -> Arc<dyn RingStore>) {
    let a = provider(open(), true).await;
    let b = provider(open(), false)
        .await
        .with_check_interval(Duration::ZERO);
    let (_, wrapped) = a
        .generate_data_key(&ctx())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    b.unwrap(&wrapped, &ctx())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    a.rotate().await.unwrap_or_else(|e| panic!("{e}"));
    b.rotate().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.primary_version(), 3);
    a.refresh().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.primary_version(), 3);
    a.destroy(1).await.unwrap_or_else(|e| panic!("{e}"));
    let err = b.unwrap(&wrapped, &ctx()).await.map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Disabled);
    let later = provider(open(), false).await;
    assert_eq!(later.primary_version(), 3);
    assert!(
        later.unwrap(&wrapped, &ctx()).await.is_err(),
        "destroyed stays destroyed"
    );
}

/// Several processes starting at once on an empty store make exactly one ring.
pub async fn concurrent_creates_make_one_ring(open: impl Fn() -> Arc<dyn RingStore>) {
    let tasks: Vec<_> = (0..3)
        .map(|_| tokio::spawn(ManagedKeyProvider::open(open(), true)))
        .collect();
    let mut providers = Vec::new();
    for t in tasks {
        providers.push(
            t.await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let (_, wrapped) = providers[0]
        .generate_data_key(&ctx())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for p in &providers {
        assert_eq!(p.versions().len(), 1);
        p.unwrap(&wrapped, &ctx())
            .await
            .unwrap_or_else(|e| panic!("one ring, the same key everywhere: {e}"));
    }
}

/// Processes rotating at once never lose a rotation.
pub async fn concurrent_rotations_lose_none(open: impl Fn() -> Arc<dyn RingStore>) {
    let first = provider(open(), true).await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = open();
            tokio::spawn(async move {
                let p = ManagedKeyProvider::open(store, false).await?;
                for _ in 0..5 {
                    p.rotate().await?;
                }
                Ok::<_, KeyRingError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    first.refresh().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.primary_version(), 21);
    assert_eq!(first.versions().len(), 21);
}

/// A rotation made by one process is what another seals under within a second (with the
/// default check interval).
pub async fn a_rotation_is_seen_within_a_second(open: impl Fn() -> Arc<dyn RingStore>) {
    let a = provider(open(), true).await;
    let b = provider(open(), false).await;
    let v = a.rotate().await.unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    loop {
        let (_, w) = b
            .generate_data_key(&ctx())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if w.key_ref().version() == format!("v{v}") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still sealing under {} after a second",
            w.key_ref()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs every check above, each on a ring of its own from `open(name)`.
pub async fn run_all(open: impl Fn(&str) -> Arc<dyn RingStore>) {
    processes_agree(|| open("agree")).await;
    concurrent_creates_make_one_ring(|| open("creates")).await;
    concurrent_rotations_lose_none(|| open("rotations")).await;
    a_rotation_is_seen_within_a_second(|| open("seen")).await;
}
