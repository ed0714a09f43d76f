//! The managed key provider: rotation, rewrap, destruction, minimum versions, persistence.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{block_on, ctx};
use vault_crypto::{
    CacheLimits, CachingProvider, Envelope, Error, KeyProvider, KeyRef, KeyRingError,
    ManagedKeyProvider, MemoryRingStore, ProviderErrorKind, Rewrapped, RingStore, Router,
    VersionState, WrappedKey, open_any_context, rewrap_any_context, seal,
};

fn org1() -> vault_crypto::KeyContext {
    ctx(&[("organization_id", "org_1")])
}

#[test]
fn key_refs_name_the_ring_and_version() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let env = block_on(seal(&p, &org1(), b"v", vault_crypto::Aad::NONE)).unwrap();
    let parsed = Envelope::parse(&env).unwrap();
    assert_eq!(
        parsed.wrapped_keys()[0].key_ref().to_string(),
        "managed://root#v1"
    );
    block_on(p.rotate()).unwrap();
    let env = block_on(seal(&p, &org1(), b"v", vault_crypto::Aad::NONE)).unwrap();
    let parsed = Envelope::parse(&env).unwrap();
    assert_eq!(
        parsed.wrapped_keys()[0].key_ref().to_string(),
        "managed://root#v2"
    );
}

#[test]
fn rotate_then_open_old_envelopes() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let old = block_on(seal(
        &p,
        &org1(),
        b"before rotation",
        vault_crypto::Aad::NONE,
    ))
    .unwrap();
    assert_eq!(block_on(p.rotate()).unwrap(), 2);
    assert_eq!(block_on(p.rotate()).unwrap(), 3);
    assert_eq!(p.primary_version(), 3);
    let opened = block_on(open_any_context(&p, &old, vault_crypto::Aad::NONE)).unwrap();
    assert_eq!(opened.plaintext(), b"before rotation");
    assert_eq!(opened.key_ref().version(), "v1");
}

#[test]
fn rewrap_moves_to_the_primary_without_touching_the_ciphertext() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let old = block_on(seal(
        &p,
        &org1(),
        b"payload",
        vault_crypto::Aad::new(b"aad"),
    ))
    .unwrap();
    assert_eq!(
        block_on(rewrap_any_context(&p, &old)).unwrap(),
        Rewrapped::AlreadyCurrent
    );
    block_on(p.rotate()).unwrap();
    let Rewrapped::Moved(new) = block_on(rewrap_any_context(&p, &old)).unwrap() else {
        panic!("v1 is no longer the primary version");
    };
    assert_eq!(new.key_ref().version(), "v2");

    let (a, b) = (
        Envelope::parse(&old).unwrap(),
        Envelope::parse(&new).unwrap(),
    );
    assert_eq!(b.wrapped_keys()[0].key_ref().version(), "v2");
    // Header (context, commitment, nonce) and payload are identical, byte for byte.
    let tail = old.len() - (a.plaintext_len() + 16);
    assert_eq!(old[tail..], new[new.len() - (b.plaintext_len() + 16)..]);
    assert_eq!(a.message_id(), b.message_id());
    assert_eq!(a.context(), b.context());

    // Once v1 is destroyed only the rewrapped envelope opens.
    block_on(p.destroy(1)).unwrap();
    assert_eq!(
        block_on(open_any_context(&p, &new, vault_crypto::Aad::new(b"aad")))
            .unwrap()
            .plaintext(),
        b"payload"
    );
    assert!(block_on(open_any_context(&p, &old, vault_crypto::Aad::new(b"aad"))).is_err());
}

/// Current means one wrapped key, the one the provider makes now: an envelope carrying extra
/// wrapped keys is rewrapped down to that one. And `wrap_again` never trusts a key reference:
/// a junk wrapped key labelled with the primary version is refused, not passed on.
#[test]
fn rewrap_keeps_one_key_and_wrap_again_checks_the_key() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let ctx = org1();
    let dek = vault_crypto::DataKey::generate().unwrap();
    let w1 = block_on(p.wrap(&dek, &ctx)).unwrap();
    let w2 = block_on(p.wrap(&dek, &ctx)).unwrap();
    let two = vault_crypto::danger::seal_with_key(
        &dek,
        &[w1.clone(), w2],
        &ctx,
        b"two",
        vault_crypto::Aad::NONE,
    )
    .unwrap();
    let Rewrapped::Moved(one) = block_on(rewrap_any_context(&p, &two)).unwrap() else {
        panic!("two wrapped keys are not current");
    };
    assert_eq!(Envelope::parse(&one).unwrap().wrapped_keys().len(), 1);
    assert_eq!(
        block_on(open_any_context(&p, &one, vault_crypto::Aad::NONE))
            .unwrap()
            .plaintext(),
        b"two"
    );

    let junk = WrappedKey::new(w1.key_ref().clone(), vec![0x42; w1.bytes().len()]).unwrap();
    let forged =
        vault_crypto::danger::seal_with_key(&dek, &[junk], &ctx, b"x", vault_crypto::Aad::NONE)
            .unwrap();
    let env = Envelope::parse(&forged).unwrap();
    // Judged by its reference alone, it is current: a stored rewrap leaves it be...
    assert_eq!(
        block_on(env.rewrap(&p, &ctx)).unwrap(),
        Rewrapped::AlreadyCurrent
    );
    // ...but handing it on after `wrap_again` means it was opened and checked.
    assert!(matches!(
        block_on(env.wrap_again(&p, &ctx)),
        Err(Error::DecryptionFailed)
    ));
}

#[test]
fn destroy_shreds_exactly_that_version() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let v1 = block_on(seal(&p, &org1(), b"one", vault_crypto::Aad::NONE)).unwrap();
    block_on(p.rotate()).unwrap();
    let v2 = block_on(seal(&p, &org1(), b"two", vault_crypto::Aad::NONE)).unwrap();
    block_on(p.rotate()).unwrap();

    assert!(matches!(
        block_on(p.destroy(3)),
        Err(KeyRingError::DestroyPrimary(3))
    ));
    assert!(matches!(
        block_on(p.destroy(9)),
        Err(KeyRingError::UnknownVersion(9))
    ));
    block_on(p.destroy(1)).unwrap();
    block_on(p.destroy(1)).unwrap(); // idempotent

    match block_on(open_any_context(&p, &v1, vault_crypto::Aad::NONE)) {
        Err(Error::Provider(e)) => assert_eq!(e.kind(), ProviderErrorKind::Disabled),
        other => panic!("destroyed version opened: {other:?}"),
    }
    assert_eq!(
        block_on(open_any_context(&p, &v2, vault_crypto::Aad::NONE))
            .unwrap()
            .plaintext(),
        b"two"
    );
    let states: Vec<_> = p.versions().iter().map(|v| v.state).collect();
    assert_eq!(
        states,
        [
            VersionState::Destroyed,
            VersionState::Active,
            VersionState::Primary
        ]
    );
}

#[test]
fn min_decryption_version_refuses_older_versions_reversibly() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let v1 = block_on(seal(&p, &org1(), b"one", vault_crypto::Aad::NONE)).unwrap();
    block_on(p.rotate()).unwrap();
    assert!(matches!(
        block_on(p.set_min_decryption_version(3)),
        Err(KeyRingError::MinAbovePrimary { min: 3, primary: 2 })
    ));
    block_on(p.set_min_decryption_version(2)).unwrap();
    match block_on(open_any_context(&p, &v1, vault_crypto::Aad::NONE)) {
        Err(Error::Provider(e)) => assert_eq!(e.kind(), ProviderErrorKind::Disabled),
        other => panic!("below-minimum version opened: {other:?}"),
    }
    assert_eq!(p.versions()[0].state, VersionState::Disabled);
    block_on(p.set_min_decryption_version(1)).unwrap();
    assert_eq!(
        block_on(open_any_context(&p, &v1, vault_crypto::Aad::NONE))
            .unwrap()
            .plaintext(),
        b"one"
    );
}

#[test]
fn unwrap_is_bound_to_the_context() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let (_, wrapped) = block_on(p.generate_data_key(&org1())).unwrap();
    let other = ctx(&[("organization_id", "org_2")]);
    let e = block_on(p.unwrap(&wrapped, &other)).unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext);
    assert!(block_on(p.unwrap(&wrapped, &org1())).is_ok());
}

#[test]
fn unwrap_rejects_tampered_and_foreign_wrapped_keys() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let (_, wrapped) = block_on(p.generate_data_key(&org1())).unwrap();
    for i in 0..wrapped.bytes().len() {
        let mut bytes = wrapped.bytes().to_vec();
        bytes[i] ^= 0x01;
        let tampered = WrappedKey::new(wrapped.key_ref().clone(), bytes).unwrap();
        let e = block_on(p.unwrap(&tampered, &org1())).unwrap_err();
        assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext, "byte {i}");
    }
    // Another ring with the same name holds other keys.
    let impostor = ManagedKeyProvider::in_memory("root").unwrap();
    let e = block_on(impostor.unwrap(&wrapped, &org1())).unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::InvalidCiphertext);
    // A ring with another name does not own it at all.
    let other = ManagedKeyProvider::in_memory("other").unwrap();
    assert!(!other.owns(wrapped.key_ref()));
    assert_eq!(
        block_on(other.unwrap(&wrapped, &org1()))
            .unwrap_err()
            .kind(),
        ProviderErrorKind::NotMine
    );
}

#[test]
fn the_ring_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = {
        let p = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
        let env = block_on(seal(&p, &org1(), b"durable", vault_crypto::Aad::NONE)).unwrap();
        block_on(p.rotate()).unwrap();
        env
    };
    let path = dir.path().join("keyring-root.json");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let p = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    assert_eq!(p.primary_version(), 2);
    assert_eq!(
        block_on(open_any_context(&p, &env, vault_crypto::Aad::NONE))
            .unwrap()
            .plaintext(),
        b"durable"
    );
}

#[test]
fn a_new_data_dir_is_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/vault-data");
    ManagedKeyProvider::open_or_create(&data, "root").unwrap();
    let mode = fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_ring_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    let path = dir.path().join("keyring-root.json");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        ManagedKeyProvider::open_or_create(dir.path(), "root"),
        Err(KeyRingError::Permissions { mode: 0o644, .. })
    ));
}

#[test]
fn a_corrupt_ring_file_is_an_error_not_a_new_ring() {
    let dir = tempfile::tempdir().unwrap();
    ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    let path = dir.path().join("keyring-root.json");
    let good = fs::read(&path).unwrap();
    fs::write(&path, &good[..good.len() / 2]).unwrap();
    assert!(matches!(
        ManagedKeyProvider::open_or_create(dir.path(), "root"),
        Err(KeyRingError::Malformed { .. })
    ));
    // The damaged file was left alone for the operator.
    assert_eq!(fs::read(&path).unwrap(), &good[..good.len() / 2]);
}

#[test]
fn two_handles_on_one_file_never_lose_a_version() {
    // Two processes (here two handles) rotating the same ring: every rotation is kept and the
    // other handle finds versions it did not create.
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap());
    let b = Arc::new(ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap());
    let threads: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|p| {
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| block_on(p.rotate()).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut made: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    made.sort_unstable();
    assert_eq!(made, (2..=21).collect::<Vec<_>>());

    block_on(a.refresh()).unwrap();
    assert_eq!(a.primary_version(), 21);
    // b wraps under its newest known version; a opens it even without an explicit reload.
    let c = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    block_on(c.rotate()).unwrap();
    let env = block_on(seal(&c, &org1(), b"from c", vault_crypto::Aad::NONE)).unwrap();
    assert_eq!(
        block_on(open_any_context(&*b, &env, vault_crypto::Aad::NONE))
            .unwrap()
            .plaintext(),
        b"from c"
    );
}

#[test]
fn rejects_invalid_ring_names() {
    for bad in ["", "a/b", "../x", "with space", &"x".repeat(65)] {
        assert!(ManagedKeyProvider::in_memory(bad).is_err(), "{bad}");
    }
}

/// Runs `attempt` until it returns `Some`, for at most `bound`; returns the value and when.
fn within<T>(bound: Duration, mut attempt: impl FnMut() -> Option<T>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = attempt() {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < bound, "not seen within {bound:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sealed_version(p: &ManagedKeyProvider) -> String {
    let env = block_on(seal(p, &org1(), b"v", vault_crypto::Aad::NONE)).unwrap();
    Envelope::parse(&env).unwrap().wrapped_keys()[0]
        .key_ref()
        .version()
        .to_owned()
}

#[test]
fn a_change_made_by_another_process_is_obeyed_within_a_second() {
    // Two handles on one file are two processes as far as the ring is concerned: neither
    // tells the other anything, they only share the file.
    let dir = tempfile::tempdir().unwrap();
    let admin = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    let server = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    assert_eq!(server.check_interval(), Duration::from_millis(250));
    let (_, old) = block_on(server.generate_data_key(&org1())).unwrap();
    assert_eq!(sealed_version(&server), "v1");

    assert_eq!(block_on(admin.rotate()).unwrap(), 2);
    let (_, took) = within(Duration::from_secs(1), || {
        (sealed_version(&server) == "v2").then_some(())
    });
    assert!(
        took <= Duration::from_millis(400),
        "rotation seen after {took:?}"
    );

    block_on(admin.destroy(1)).unwrap();
    let (kind, took) = within(Duration::from_secs(1), || {
        block_on(server.unwrap(&old, &org1()))
            .err()
            .map(|e| e.kind())
    });
    assert_eq!(kind, ProviderErrorKind::Disabled);
    assert!(
        took <= Duration::from_millis(400),
        "destruction seen after {took:?}"
    );
    // And it stays refused: no later check brings the key back.
    std::thread::sleep(Duration::from_millis(300));
    assert!(block_on(server.unwrap(&old, &org1())).is_err());
    assert_eq!(server.versions()[0].state, VersionState::Destroyed);
}

#[test]
fn a_minimum_version_set_elsewhere_is_obeyed_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let admin = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    let server = ManagedKeyProvider::open_or_create(dir.path(), "root")
        .unwrap()
        .with_check_interval(Duration::from_millis(20));
    let (_, old) = block_on(server.generate_data_key(&org1())).unwrap();
    block_on(admin.rotate()).unwrap();
    block_on(admin.set_min_decryption_version(2)).unwrap();
    let (kind, took) = within(Duration::from_secs(1), || {
        block_on(server.unwrap(&old, &org1()))
            .err()
            .map(|e| e.kind())
    });
    assert_eq!(kind, ProviderErrorKind::Disabled);
    assert!(took <= Duration::from_millis(200), "seen after {took:?}");
    block_on(admin.set_min_decryption_version(1)).unwrap();
    within(Duration::from_secs(1), || {
        block_on(server.unwrap(&old, &org1())).ok()
    });
}

#[test]
fn unknown_versions_cost_a_check_each_and_a_reload_only_when_the_ring_changed() {
    let dir = tempfile::tempdir().unwrap();
    let p = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    let (_, wrapped) = block_on(p.generate_data_key(&org1())).unwrap();
    let bogus: Vec<WrappedKey> = (0..8)
        .map(|i| {
            let r = KeyRef::new("managed", "root", format!("v{}", 9990 + i)).unwrap();
            WrappedKey::new(r, wrapped.bytes().to_vec()).unwrap()
        })
        .collect();
    let before = p.stats();
    // A thousand requests of eight unknown versions each, well within one check interval.
    let started = Instant::now();
    for _ in 0..1000 {
        for w in &bogus {
            let e = block_on(p.unwrap(w, &org1())).unwrap_err();
            assert_eq!(e.kind(), ProviderErrorKind::NotFound);
        }
    }
    let after = p.stats();
    assert_eq!(
        after.reloads, before.reloads,
        "nothing changed, nothing reloaded"
    );
    assert!(after.checks > before.checks);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Another process rotates: the first unknown version that is now known costs one reload.
    let other = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    block_on(other.rotate()).unwrap();
    let (_, new) = block_on(other.generate_data_key(&org1())).unwrap();
    assert_eq!(new.key_ref().version(), "v2");
    block_on(p.unwrap(&new, &org1())).unwrap();
    for _ in 0..100 {
        for w in &bogus {
            assert!(block_on(p.unwrap(w, &org1())).is_err());
        }
    }
    assert_eq!(p.stats().reloads, before.reloads + 1);
}

#[test]
fn a_check_racing_with_a_destroy_never_brings_the_version_back() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // Interval zero: every operation checks the store, so checks race with the change.
        let p = Arc::new(
            ManagedKeyProvider::open_or_create(dir.path(), "root")
                .unwrap()
                .with_check_interval(Duration::ZERO),
        );
        for round in 1..=20u32 {
            let (_, old) = p.generate_data_key(&org1()).await.unwrap();
            assert_eq!(old.key_ref().version(), format!("v{round}"));
            p.rotate().await.unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let racers: Vec<_> = (0..4)
                .map(|_| {
                    let (p, old, stop) = (p.clone(), old.clone(), stop.clone());
                    tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let _ = p.unwrap(&old, &org1()).await;
                            let _ = p.refresh().await;
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            p.destroy(round).await.unwrap();
            // From the moment destroy returns, the version is gone, whatever the racers do.
            for _ in 0..50 {
                let e = p.unwrap(&old, &org1()).await.unwrap_err();
                assert_eq!(e.kind(), ProviderErrorKind::Disabled, "round {round}");
                tokio::task::yield_now().await;
            }
            stop.store(true, Ordering::Relaxed);
            for r in racers {
                r.await.unwrap();
            }
            assert_eq!(
                p.versions()[round as usize - 1].state,
                VersionState::Destroyed
            );
        }
    });
}

#[test]
fn a_ring_restored_from_an_older_copy_is_refused_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring-root.json");
    let p = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    let old_copy = fs::read(&path).unwrap();
    block_on(p.rotate()).unwrap();
    // Restore the copy as an operator might, through a new file.
    let tmp = dir.path().join("restore");
    fs::write(&tmp, &old_copy).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(&tmp, &path).unwrap();
    assert!(matches!(
        block_on(p.refresh()),
        Err(KeyRingError::RolledBack { held: 1, stored: 0 })
    ));
    let e = block_on(p.rotate()).unwrap_err();
    assert!(matches!(e, KeyRingError::RolledBack { .. }), "{e}");
}

#[test]
fn stale_temporary_files_of_this_ring_are_removed_under_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d).unwrap();
    let ours = d.join(".keyring-root.tmp-1-00ff");
    let theirs = d.join(".keyring-root2.tmp-1-00ff");
    fs::write(&ours, b"left by a crash").unwrap();
    fs::write(&theirs, b"another ring's").unwrap();
    let p = ManagedKeyProvider::open_or_create(d, "root").unwrap();
    assert!(!ours.exists(), "removed on open");
    assert!(theirs.exists(), "another ring's files are not touched");
    fs::write(&ours, b"left by a crash").unwrap();
    block_on(p.rotate()).unwrap();
    assert!(!ours.exists(), "removed on a change");
    // A change leaves no temporary file of its own behind.
    let left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with(".keyring-root.tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn only_the_primary_version_is_current() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let (_, v1) = block_on(p.generate_data_key(&org1())).unwrap();
    assert!(block_on(p.is_current(v1.key_ref(), &org1())).unwrap());
    block_on(p.rotate()).unwrap();
    assert!(!block_on(p.is_current(v1.key_ref(), &org1())).unwrap());
    let (_, v2) = block_on(p.generate_data_key(&org1())).unwrap();
    assert!(block_on(p.is_current(v2.key_ref(), &org1())).unwrap());
    let other = ManagedKeyProvider::in_memory("other").unwrap();
    assert!(!block_on(other.is_current(v2.key_ref(), &org1())).unwrap());
}

#[test]
fn the_data_key_cache_stops_reusing_a_key_of_a_rotated_version() {
    let ring = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let cached = CachingProvider::new(ring.clone(), CacheLimits::default());
    let version = |p: &CachingProvider| {
        let env = block_on(seal(p, &org1(), b"v", vault_crypto::Aad::NONE)).unwrap();
        Envelope::parse(&env).unwrap().wrapped_keys()[0]
            .key_ref()
            .version()
            .to_owned()
    };
    assert_eq!(version(&cached), "v1");
    assert_eq!(version(&cached), "v1");
    block_on(ring.rotate()).unwrap();
    assert_eq!(version(&cached), "v2");
}

#[test]
fn providers_sharing_a_memory_store_agree_like_processes_sharing_a_file() {
    let store: Arc<dyn RingStore> = Arc::new(MemoryRingStore::new("root"));
    let a = block_on(ManagedKeyProvider::open(store.clone(), true)).unwrap();
    let b = block_on(ManagedKeyProvider::open(store.clone(), false))
        .unwrap()
        .with_check_interval(Duration::ZERO);
    let (_, w) = block_on(a.generate_data_key(&org1())).unwrap();
    block_on(b.unwrap(&w, &org1())).unwrap();
    block_on(a.rotate()).unwrap();
    block_on(b.rotate()).unwrap(); // a compare-and-swap on top of a's change, not over it
    assert_eq!(b.primary_version(), 3);
    block_on(a.refresh()).unwrap();
    assert_eq!(a.primary_version(), 3);
    block_on(a.destroy(1)).unwrap();
    assert_eq!(
        block_on(b.unwrap(&w, &org1())).unwrap_err().kind(),
        ProviderErrorKind::Disabled
    );
    assert!(matches!(
        block_on(ManagedKeyProvider::open(
            Arc::new(MemoryRingStore::new("root")),
            false
        )),
        Err(KeyRingError::Missing { .. })
    ));
}

#[test]
fn a_ring_recreated_in_place_is_refused_even_at_the_same_generation() {
    // The file is lost and `open_or_create` somewhere makes a new ring (generation 0, other
    // keys): a process holding the old ring must not carry on with keys no one else has.
    let dir = tempfile::tempdir().unwrap();
    let held = ManagedKeyProvider::open_or_create(dir.path(), "root")
        .unwrap()
        .with_check_interval(Duration::ZERO);
    let (_, wrapped) = block_on(held.generate_data_key(&org1())).unwrap();
    fs::remove_file(dir.path().join("keyring-root.json")).unwrap();
    let other = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    assert_eq!(other.stats().generation, held.stats().generation);
    assert!(matches!(
        block_on(held.refresh()),
        Err(KeyRingError::Replaced { .. })
    ));
    let e = block_on(held.generate_data_key(&org1())).unwrap_err();
    assert_eq!(e.kind(), ProviderErrorKind::Unavailable);
    assert!(block_on(held.unwrap(&wrapped, &org1())).is_err());
    // A newer generation of another ring is refused the same way.
    block_on(other.rotate()).unwrap();
    assert!(matches!(
        block_on(held.refresh()),
        Err(KeyRingError::Replaced { .. })
    ));
}

/// The small traps an embedder met: each answer now says what is wrong and where.
#[test]
fn a_bad_ring_name_and_a_damaged_ring_file_say_what_and_where() {
    let err = ManagedKeyProvider::in_memory("a/b").unwrap_err();
    assert!(matches!(err, KeyRingError::InvalidName { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("\"a/b\"") && text.contains("A-Z, a-z, 0-9, _ and -"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    let path = dir.path().join("keyring-root.json");
    let good = fs::read(&path).unwrap();
    for (damaged, what) in [
        (good[..good.len() / 2].to_vec(), "truncated"),
        (
            b"{\"format\": 1, \"name\": \"root\", \"surprise\": true}".to_vec(),
            "not a key ring file",
        ),
        (b"[ not json".to_vec(), "not JSON"),
    ] {
        fs::write(&path, &damaged).unwrap();
        let text = ManagedKeyProvider::open_existing(dir.path(), "root")
            .unwrap_err()
            .to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(what), "{text}");
    }
    // A name field that is not a ring name is not echoed (it could hold anything, a key too).
    let mut json: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let key = json["versions"][0]["key"].as_str().unwrap().to_owned();
    json["name"] = serde_json::Value::String(format!("{key}/"));
    fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let err = ManagedKeyProvider::open_existing(dir.path(), "root").unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains(&key[..16]), "{text}");
    assert!(text.contains("not a valid ring name"), "{text}");
}

/// `Router::calls` counts what the router dispatched, not what reached a key service: behind a
/// cache, a hundred seals are a hundred `seal_keys` and one call of the provider behind it.
#[test]
fn router_calls_count_seal_keys_apart_from_generated_keys() {
    let ring = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let cache = Arc::new(CachingProvider::new(ring, CacheLimits::default()));
    let router = Router::new(cache.clone());
    let c = org1();
    for _ in 0..100 {
        block_on(seal(&router, &c, b"v", vault_crypto::Aad::NONE)).unwrap();
    }
    let calls = router.calls();
    assert_eq!((calls.seal_keys, calls.generate), (100, 0));
    assert_eq!(cache.stats().provider_calls, 1);
    block_on(router.generate_data_key(&c)).unwrap();
    assert_eq!(router.calls().generate, 1);
}
