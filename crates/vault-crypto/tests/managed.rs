//! The managed key provider: rotation, rewrap, destruction, minimum versions, persistence.
#![allow(clippy::unwrap_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::{block_on, ctx};
use vault_crypto::{
    Envelope, Error, KeyProvider, KeyRingError, ManagedKeyProvider, ProviderErrorKind,
    VersionState, open, rewrap, seal,
};

fn org1() -> vault_crypto::KeyContext {
    ctx(&[("organization_id", "org_1")])
}

#[test]
fn key_refs_name_the_ring_and_version() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let env = block_on(seal(&p, &org1(), b"v", b"")).unwrap();
    let parsed = Envelope::parse(&env).unwrap();
    assert_eq!(
        parsed.wrapped_keys()[0].key_ref().to_string(),
        "managed://root#v1"
    );
    block_on(p.rotate()).unwrap();
    let env = block_on(seal(&p, &org1(), b"v", b"")).unwrap();
    let parsed = Envelope::parse(&env).unwrap();
    assert_eq!(
        parsed.wrapped_keys()[0].key_ref().to_string(),
        "managed://root#v2"
    );
}

#[test]
fn rotate_then_open_old_envelopes() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let old = block_on(seal(&p, &org1(), b"before rotation", b"")).unwrap();
    assert_eq!(block_on(p.rotate()).unwrap(), 2);
    assert_eq!(block_on(p.rotate()).unwrap(), 3);
    assert_eq!(p.primary_version(), 3);
    let opened = block_on(open(&p, &old, b"")).unwrap();
    assert_eq!(opened.plaintext(), b"before rotation");
    assert_eq!(opened.key_ref().version(), "v1");
}

#[test]
fn rewrap_moves_to_the_primary_without_touching_the_ciphertext() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let old = block_on(seal(&p, &org1(), b"payload", b"aad")).unwrap();
    block_on(p.rotate()).unwrap();
    let new = block_on(rewrap(&p, &old)).unwrap();

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
        block_on(open(&p, &new, b"aad")).unwrap().plaintext(),
        b"payload"
    );
    assert!(block_on(open(&p, &old, b"aad")).is_err());
}

#[test]
fn destroy_shreds_exactly_that_version() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let v1 = block_on(seal(&p, &org1(), b"one", b"")).unwrap();
    block_on(p.rotate()).unwrap();
    let v2 = block_on(seal(&p, &org1(), b"two", b"")).unwrap();
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

    match block_on(open(&p, &v1, b"")) {
        Err(Error::Provider(e)) => assert_eq!(e.kind(), ProviderErrorKind::Disabled),
        other => panic!("destroyed version opened: {other:?}"),
    }
    assert_eq!(block_on(open(&p, &v2, b"")).unwrap().plaintext(), b"two");
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
    let v1 = block_on(seal(&p, &org1(), b"one", b"")).unwrap();
    block_on(p.rotate()).unwrap();
    assert!(matches!(
        block_on(p.set_min_decryption_version(3)),
        Err(KeyRingError::MinAbovePrimary { min: 3, primary: 2 })
    ));
    block_on(p.set_min_decryption_version(2)).unwrap();
    match block_on(open(&p, &v1, b"")) {
        Err(Error::Provider(e)) => assert_eq!(e.kind(), ProviderErrorKind::Disabled),
        other => panic!("below-minimum version opened: {other:?}"),
    }
    assert_eq!(p.versions()[0].state, VersionState::Disabled);
    block_on(p.set_min_decryption_version(1)).unwrap();
    assert_eq!(block_on(open(&p, &v1, b"")).unwrap().plaintext(), b"one");
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
        let tampered = vault_crypto::WrappedKey::new(wrapped.key_ref().clone(), bytes).unwrap();
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
        let env = block_on(seal(&p, &org1(), b"durable", b"")).unwrap();
        block_on(p.rotate()).unwrap();
        env
    };
    let path = dir.path().join("keyring-root.json");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let p = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    assert_eq!(p.primary_version(), 2);
    assert_eq!(
        block_on(open(&p, &env, b"")).unwrap().plaintext(),
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
    let env = block_on(seal(&c, &org1(), b"from c", b"")).unwrap();
    assert_eq!(
        block_on(open(&*b, &env, b"")).unwrap().plaintext(),
        b"from c"
    );
}

#[test]
fn rejects_invalid_ring_names() {
    for bad in ["", "a/b", "../x", "with space", &"x".repeat(65)] {
        assert!(ManagedKeyProvider::in_memory(bad).is_err(), "{bad}");
    }
}
