//! Property tests of the invariants the format promises.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::collections::BTreeMap;

use common::block_on;
use proptest::prelude::*;
use vault_crypto::{Envelope, Error, KeyContext, ManagedKeyProvider, open_any_context, seal};

/// Valid contexts: 1 to 10 pairs, keys 1..=128 bytes without control characters, values 1..=500
/// characters (any, including control characters and astral-plane ones).
fn context() -> impl Strategy<Value = KeyContext> {
    let key = "[^\\p{Cc}]{1,32}".prop_filter("at most 128 bytes", |k| k.len() <= 128);
    let value = "(?s).{1,40}";
    prop::collection::btree_map(key, value, 1..=10)
        .prop_map(|m| KeyContext::from_pairs(m).expect("generated contexts are valid"))
}

fn provider() -> ManagedKeyProvider {
    ManagedKeyProvider::in_memory("root").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn open_of_seal_is_the_identity(
        ctx in context(),
        value in prop::collection::vec(any::<u8>(), 0..2048),
        aad in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let p = provider();
        let env = block_on(seal(&p, &ctx, &value, vault_crypto::Aad::new(&aad))).unwrap();
        let opened = block_on(open_any_context(&p, &env, vault_crypto::Aad::new(&aad))).unwrap();
        prop_assert_eq!(opened.plaintext(), &value[..]);
        prop_assert_eq!(opened.context(), &ctx);
        // The text form carries the same envelope.
        let text = vault_crypto::encode_text(&env);
        prop_assert_eq!(Envelope::decode_text(&text).unwrap(), env.bytes());
    }

    #[test]
    fn canonical_bytes_do_not_depend_on_pair_order(
        pairs in prop::collection::btree_map("[a-z_]{1,12}", "[ -~]{1,12}", 1..=10),
        seed in any::<u64>(),
    ) {
        let mut shuffled: Vec<_> = pairs.clone().into_iter().collect();
        // A deterministic shuffle driven by the seed.
        let n = shuffled.len();
        for i in (1..n).rev() {
            let j = usize::try_from((seed >> (i % 64)) % (i as u64 + 1)).unwrap();
            shuffled.swap(i, j);
        }
        let a = KeyContext::from_pairs(pairs.clone()).unwrap();
        let b = KeyContext::from_pairs(shuffled.clone()).unwrap();
        prop_assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        // JSON text in the shuffled order (serde_json's own map would sort it).
        let members: Vec<String> = shuffled
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), serde_json::to_string(v).unwrap()))
            .collect();
        let json = format!("{{{}}}", members.join(","));
        prop_assert_eq!(KeyContext::parse_json(json.as_bytes()).unwrap(), a);
    }

    #[test]
    fn canonical_bytes_are_injective(a in context(), b in context()) {
        let same_pairs = a.pairs().collect::<BTreeMap<_, _>>() == b.pairs().collect::<BTreeMap<_, _>>();
        prop_assert_eq!(a.canonical_bytes() == b.canonical_bytes(), same_pairs);
        prop_assert_eq!(KeyContext::from_canonical_bytes(a.canonical_bytes()).unwrap(), a);
    }

    #[test]
    fn a_wrong_context_or_aad_fails(
        ctx in context(),
        other in context(),
        aad in prop::collection::vec(any::<u8>(), 0..32),
        other_aad in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let p = provider();
        let env = block_on(seal(&p, &ctx, b"value", vault_crypto::Aad::new(&aad))).unwrap();
        if other_aad != aad {
            prop_assert!(matches!(block_on(open_any_context(&p, &env, vault_crypto::Aad::new(&other_aad))), Err(Error::DecryptionFailed)));
        }
        if other != ctx {
            // Splice the other context into the header, keeping every length consistent.
            let parsed = Envelope::parse(&env).unwrap();
            let old = ctx.canonical_bytes();
            let start = 4 + 1 + 2 + 32 + 2;
            let mut forged = env[..start - 2].to_vec();
            forged.extend_from_slice(&u16::try_from(other.canonical_bytes().len()).unwrap().to_be_bytes());
            forged.extend_from_slice(other.canonical_bytes());
            forged.extend_from_slice(&env[start + old.len()..]);
            let forged_env = Envelope::parse(&forged).unwrap();
            prop_assert_eq!(forged_env.context(), &other);
            prop_assert_eq!(forged_env.wrapped_keys(), parsed.wrapped_keys());
            prop_assert!(matches!(block_on(open_any_context(&p, &forged, vault_crypto::Aad::new(&aad))), Err(Error::DecryptionFailed)));
        }
    }

    #[test]
    fn flipping_any_bit_is_an_error_never_a_panic_or_a_wrong_plaintext(
        ctx in context(),
        value in prop::collection::vec(any::<u8>(), 0..64),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let p = provider();
        let mut env = block_on(seal(&p, &ctx, &value, vault_crypto::Aad::NONE)).unwrap().into_bytes();
        let i = position.index(env.len());
        env[i] ^= 1 << bit;
        prop_assert!(block_on(open_any_context(&p, &env, vault_crypto::Aad::NONE)).is_err(), "flip at {} opened", i);
    }

    #[test]
    fn parse_never_panics_and_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        vault_crypto::fuzzing::envelope(&bytes);
        vault_crypto::fuzzing::context_canonical(&bytes);
        vault_crypto::fuzzing::context_json(&bytes);
    }
}

/// Every single-byte change anywhere in an envelope is caught, exhaustively.
#[test]
fn every_byte_of_an_envelope_is_protected() {
    let p = provider();
    let ctx = KeyContext::from_pairs([("organization_id", "org_1"), ("user_id", "u_9")]).unwrap();
    let env = block_on(seal(
        &p,
        &ctx,
        b"attack at dawn",
        vault_crypto::Aad::new(b"aad"),
    ))
    .unwrap();
    for i in 0..env.len() {
        for delta in [0x01u8, 0x80, 0xff] {
            let mut bad = env.to_vec();
            bad[i] ^= delta;
            let result = block_on(open_any_context(&p, &bad, vault_crypto::Aad::new(b"aad")));
            assert!(result.is_err(), "byte {i} ^ {delta:#x} still opened");
        }
    }
    // And every truncation.
    for len in 0..env.len() {
        assert!(
            block_on(open_any_context(
                &p,
                &env[..len],
                vault_crypto::Aad::new(b"aad")
            ))
            .is_err(),
            "truncated to {len}"
        );
    }
    assert!(block_on(open_any_context(&p, &env, vault_crypto::Aad::new(b"aad"))).is_ok());
}

/// A ciphertext opens under exactly one data key: a second, valid wrapped key of another data
/// key added to the envelope is never used to decrypt.
#[test]
fn the_commitment_rejects_a_substituted_data_key() {
    let p = provider();
    let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    let env = block_on(seal(&p, &ctx, b"genuine", vault_crypto::Aad::NONE)).unwrap();
    let parsed = Envelope::parse(&env).unwrap();
    // An attacker who can wrap keys for this context wraps their own data key...
    let (_, attacker_wrapped) =
        block_on(vault_crypto::KeyProvider::generate_data_key(&p, &ctx)).unwrap();
    // ...and puts it first, or alone.
    for keys in [
        vec![attacker_wrapped.clone(), parsed.wrapped_keys()[0].clone()],
        vec![attacker_wrapped],
    ] {
        let forged = parsed.with_wrapped_keys(keys.clone()).unwrap();
        let result = block_on(open_any_context(&p, &forged, vault_crypto::Aad::NONE));
        if keys.len() == 2 {
            // The genuine key is still found; the substitute was not used.
            assert_eq!(result.unwrap().plaintext(), b"genuine");
        } else {
            assert!(matches!(result, Err(Error::DecryptionFailed)));
        }
    }
}

/// In every suite, a data key other than the one the header commits to is refused by the
/// commitment before anything is decrypted: the envelope's payload is sealed under the second
/// key's content key, so decryption alone would accept it (checked directly), and only the
/// commitment check stands between that key and a plaintext.
#[test]
fn a_wrong_key_is_refused_before_decryption_in_every_suite() {
    use aes_gcm::aead::array::Array;
    use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
    use vault_crypto::danger;
    let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    let p = danger::managed_provider_from_root_keys("root", &[(1, [9u8; 32])], 1).unwrap();
    let (genuine, wrong) = ([3u8; 32], [4u8; 32]);
    let (message_id, nonce, aad) = ([1u8; 32], [2u8; 12], b"a");
    for suite in [
        vault_crypto::SUITE_AES256GCM_HKDF_SHA256_COMMIT,
        vault_crypto::SUITE_AES256GCM_AESKDF_SHA256_COMMIT,
    ] {
        let dek = danger::data_key_from_bytes(genuine);
        let wrapped = danger::managed_wrap_with_nonce(&p, &dek, &ctx, [5u8; 12]).unwrap();
        let env = danger::seal_with_parameters(
            suite,
            vault_crypto::Backend::DEFAULT,
            &dek,
            &[wrapped],
            &ctx,
            b"genuine",
            vault_crypto::Aad::new(aad),
            message_id,
            nonce,
        )
        .unwrap();
        // The payload again, "planted" under the wrong key's content key for this message.
        let wrong_key = danger::data_key_from_bytes(wrong);
        let (content_key, _) = danger::message_keys(suite, &wrong_key, &message_id).unwrap();
        let header_len = 4 + 1 + 2 + 32 + 2 + ctx.canonical_bytes().len() + 32 + 12;
        let payload_at = env.len() - (b"genuine".len() + 16);
        let mut joined_aad = env[..header_len].to_vec();
        joined_aad.extend_from_slice(aad);
        let gcm = Aes256Gcm::new(&Array::from(*content_key));
        let mut planted = b"planted".to_vec();
        let tag = gcm
            .encrypt_inout_detached(
                &Array::from(nonce),
                &joined_aad,
                planted.as_mut_slice().into(),
            )
            .unwrap();
        planted.extend_from_slice(&tag);
        let mut forged = env[..payload_at].to_vec();
        forged.extend_from_slice(&planted);
        // The wrong key's content key does decrypt the planted payload...
        let (ct, tag) = planted.split_at(planted.len() - 16);
        let mut check = ct.to_vec();
        gcm.decrypt_inout_detached(
            &Array::from(nonce),
            &joined_aad,
            check.as_mut_slice().into(),
            &Array::try_from(tag).unwrap(),
        )
        .unwrap();
        assert_eq!(check, b"planted");
        // ...but the envelope refuses that key, and the genuine key fails the tag.
        for key in [wrong, genuine] {
            let r = danger::open_with_data_key(
                vault_crypto::Backend::DEFAULT,
                &danger::data_key_from_bytes(key),
                &forged,
                vault_crypto::Aad::new(aad),
            );
            assert!(matches!(r, Err(Error::DecryptionFailed)), "suite {suite}");
        }
        // Unforged, the genuine key opens it: the test's envelope is well formed.
        let pt = danger::open_with_data_key(
            vault_crypto::Backend::DEFAULT,
            &dek,
            &env,
            vault_crypto::Aad::new(aad),
        )
        .unwrap();
        assert_eq!(pt, b"genuine");
    }
}

#[cfg(all(feature = "ring", feature = "rustcrypto"))]
#[test]
fn the_backends_interoperate_byte_for_byte() {
    use vault_crypto::{Backend, danger};
    let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    let root = [(1u32, [9u8; 32])];
    for value in [&b""[..], b"x", &[7u8; 1000][..]] {
        for suite in [
            vault_crypto::SUITE_AES256GCM_HKDF_SHA256_COMMIT,
            vault_crypto::SUITE_AES256GCM_AESKDF_SHA256_COMMIT,
        ] {
            let mut outputs = Vec::new();
            for backend in Backend::ALL.iter().copied() {
                let p = danger::managed_provider_from_root_keys("root", &root, 1)
                    .unwrap()
                    .with_backend(backend);
                let dek = danger::data_key_from_bytes([3u8; 32]);
                let wrapped = danger::managed_wrap_with_nonce(&p, &dek, &ctx, [5u8; 12]).unwrap();
                let env = danger::seal_with_parameters(
                    suite,
                    backend,
                    &dek,
                    &[wrapped],
                    &ctx,
                    value,
                    vault_crypto::Aad::new(b"a"),
                    [1; 32],
                    [2; 12],
                )
                .unwrap();
                outputs.push(env);
            }
            assert_eq!(outputs[0], outputs[1], "ring and RustCrypto differ");
            for backend in Backend::ALL.iter().copied() {
                let dek = danger::data_key_from_bytes([3u8; 32]);
                let pt = danger::open_with_data_key(
                    backend,
                    &dek,
                    &outputs[0],
                    vault_crypto::Aad::new(b"a"),
                )
                .unwrap();
                assert_eq!(&pt[..], value);
            }
        }
    }
}

/// An envelope relabelled to the other suite is refused (its header is authenticated and its
/// keys derive differently), and a suite id that is not 1 or 3, in either byte, is unsupported.
#[test]
fn a_relabelled_suite_is_refused_and_an_unknown_one_unsupported() {
    use vault_crypto::{
        Aad, EnvelopeError, SUITE_AES256GCM_AESKDF_SHA256_COMMIT as S3,
        SUITE_AES256GCM_HKDF_SHA256_COMMIT as S1, danger,
    };
    let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    let p = provider();
    let (key, wrapped) = block_on(vault_crypto::KeyProvider::generate_data_key(&p, &ctx)).unwrap();
    // The suite is the two bytes after the magic and the version.
    let at = vault_crypto::MAGIC.len() + 1;
    for (suite, other) in [(S1, S3), (S3, S1)] {
        let env = danger::seal_with_parameters(
            suite,
            vault_crypto::Backend::DEFAULT,
            &key,
            std::slice::from_ref(&wrapped),
            &ctx,
            b"value",
            Aad::NONE,
            [5u8; 32],
            [6u8; 12],
        )
        .unwrap();
        assert_eq!(
            block_on(vault_crypto::open(&p, &env, &ctx, Aad::NONE))
                .unwrap()
                .plaintext(),
            b"value"
        );
        let mut relabelled = env.clone();
        relabelled[at..at + 2].copy_from_slice(&other.to_be_bytes());
        assert!(
            matches!(
                block_on(vault_crypto::open(&p, &relabelled, &ctx, Aad::NONE)),
                Err(Error::DecryptionFailed)
            ),
            "suite {suite} relabelled {other}"
        );
        // Relabelled as streamed (suite 4), its framing no longer parses as it was written.
        let mut streamed = env.clone();
        streamed[at..at + 2].copy_from_slice(&4u16.to_be_bytes());
        assert!(block_on(vault_crypto::open(&p, &streamed, &ctx, Aad::NONE)).is_err());
        for unknown in [0u16, 2, 5, 0x0100, 0x0300, 0x0400, 0xFFFF] {
            let mut bad = env.clone();
            bad[at..at + 2].copy_from_slice(&unknown.to_be_bytes());
            assert!(
                matches!(
                    Envelope::parse(&bad),
                    Err(EnvelopeError::UnsupportedSuite(s)) if s == unknown
                ),
                "suite {unknown:#06x}"
            );
        }
    }
}
