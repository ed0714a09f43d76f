//! `open_in_place`: an envelope the caller owns, decrypted in its own buffer. It must answer
//! exactly what `open` answers (the plaintext, or the same refusal) for every envelope,
//! tampered or not, on the synchronous path and the awaited one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use common::{OtherScheme, block_on, ctx};
use proptest::prelude::*;
use vault_crypto::{
    Aad, Error, KeyContext, KeyProvider, ManagedKeyProvider, blocking, open, open_in_place, seal,
};

fn org1() -> KeyContext {
    ctx(&[("organization_id", "org_1"), ("user_id", "u_9")])
}

/// What an open answered, comparable: the plaintext, key reference and context, or the
/// refusal's text.
type Outcome = Result<(Vec<u8>, String, String), String>;

fn outcome(r: Result<vault_crypto::Opened, Error>) -> Outcome {
    r.map(|o| {
        (
            o.plaintext().to_vec(),
            o.key_ref().to_string(),
            format!("{:?}", o.context()),
        )
    })
    .map_err(|e| e.to_string())
}

/// `open` and both paths of `open_in_place` on the same bytes.
fn all_three(p: &dyn KeyProvider, bytes: &[u8], expected: &KeyContext, aad: &[u8]) -> [Outcome; 3] {
    let aad = Aad::new(aad);
    [
        outcome(block_on(open(p, bytes, expected, aad))),
        outcome(block_on(open_in_place(p, bytes.to_vec(), expected, aad))),
        outcome(if p.is_local() {
            blocking::open_in_place(p, bytes.to_vec(), expected, aad)
        } else {
            block_on(open_in_place(p, bytes.to_vec(), expected, aad))
        }),
    ]
}

#[test]
fn every_size_opens_to_its_plaintext_with_or_without_aad() {
    let managed = ManagedKeyProvider::in_memory("root").unwrap();
    let remote = OtherScheme::new("test-kms", "k");
    let providers: [&dyn KeyProvider; 2] = [&managed, &*remote];
    for p in providers {
        // Around the header's length and the 512-byte stack buffer for the associated data.
        for len in [0usize, 1, 15, 16, 17, 64, 200, 511, 512, 1024, 70_000] {
            for aad in [&b""[..], b"row-7", &[9u8; 600][..]] {
                let pt: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
                let sealed = block_on(seal(p, &org1(), &pt, Aad::new(aad))).unwrap();
                let [a, b, c] = all_three(p, sealed.bytes(), &org1(), aad);
                assert_eq!(a.as_ref().unwrap().0, pt, "open, {len} B");
                assert_eq!(a, b, "in place, awaited, {len} B");
                assert_eq!(a, c, "in place, blocking, {len} B");
            }
        }
    }
}

#[test]
fn refusals_are_opens_refusals() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let sealed = blocking::seal(&p, &org1(), b"secret", Aad::new(b"a")).unwrap();
    let other = ctx(&[("organization_id", "org_2")]);
    let cases: [(&[u8], &KeyContext, &[u8]); 4] = [
        (sealed.bytes(), &other, b"a"),
        (sealed.bytes(), &org1(), b"b"),
        (&sealed.bytes()[..sealed.bytes().len() - 1], &org1(), b"a"),
        (&sealed.bytes()[..10], &org1(), b"a"),
    ];
    for (i, (bytes, expected, aad)) in cases.into_iter().enumerate() {
        let [a, b, c] = all_three(&p, bytes, expected, aad);
        assert!(a.is_err(), "case {i} opened");
        assert_eq!(a, b, "case {i}");
        assert_eq!(a, c, "case {i}");
    }
    assert!(matches!(
        blocking::open_in_place(&p, sealed.bytes().to_vec(), &other, Aad::new(b"a")),
        Err(Error::ContextMismatch)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A byte changed anywhere (header, wrapped key, ciphertext, tag) is refused in place as
    /// `open` refuses it, and an untouched envelope opens the same.
    #[test]
    fn a_changed_byte_is_refused_alike(
        pt in proptest::collection::vec(any::<u8>(), 0..300),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let p = ManagedKeyProvider::in_memory("root").unwrap();
        let sealed = blocking::seal(&p, &org1(), &pt, Aad::NONE).unwrap();
        let mut bytes = sealed.bytes().to_vec();
        let [a, b, c] = all_three(&p, &bytes, &org1(), b"");
        prop_assert_eq!(&a.as_ref().unwrap().0, &pt);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &c);
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        let [a, b, c] = all_three(&p, &bytes, &org1(), b"");
        prop_assert!(a.is_err(), "a change at byte {} opened", i);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &c);
    }
}
