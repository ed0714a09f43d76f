//! The three SDK blob layouts (`vault_crypto::workos::Layout`): vectors made by the SDKs that
//! write them (the Go SDK's first `pkg/vault`, the Rust `workos` crate 3.5) and by an
//! independent AES-GCM (Python's `cryptography`, for ours with a pinned IV) parse in the right
//! layout, decrypt, and reproduce byte for byte; a blob is never read in a layout it was not
//! written in.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use vault_crypto::workos::{self, Layout, LocalBlob};
use vault_crypto::{EnvelopeError, Error, danger};

struct Vector {
    name: String,
    layout: Layout,
    data_key: [u8; 32],
    aad: Vec<u8>,
    plaintext: String,
    encrypted_keys: Vec<u8>,
    iv: Vec<u8>,
    blob: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("vectors/workos-blob-layouts.json");
    let json: serde_json::Value = serde_json::from_str(text).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            Vector {
                name: s("name"),
                layout: match s("layout").as_str() {
                    "IvFirst" => Layout::IvFirst,
                    "KeysFirst" => Layout::KeysFirst,
                    "LongIv" => Layout::LongIv,
                    other => panic!("layout {other}"),
                },
                data_key: STANDARD
                    .decode(s("data_key_b64"))
                    .unwrap()
                    .try_into()
                    .unwrap(),
                aad: s("aad").into_bytes(),
                plaintext: s("plaintext"),
                encrypted_keys: STANDARD.decode(s("encrypted_keys_b64")).unwrap(),
                iv: hex::decode(s("iv_hex")).unwrap(),
                blob: STANDARD.decode(s("blob_b64")).unwrap(),
            }
        })
        .collect()
}

/// Whether `keys` is one this vault or WorkOS issues (what `parse` recognises).
fn known(keys: &[u8]) -> bool {
    keys.starts_with(b"VLTE\x01\x00\x01")
        || keys.starts_with(b"VLTE\x01\x00\x03")
        || keys.starts_with(b"WOS.EKM.v1\0")
}

#[test]
fn sdk_made_vectors_parse_in_their_layout_and_decrypt() {
    let all = vectors();
    assert_eq!(all.len(), 5);
    for layout in Layout::ALL {
        assert!(
            all.iter().any(|v| v.layout == layout),
            "a vector of {layout:?}"
        );
    }
    for v in &all {
        let key = danger::data_key_from_bytes(v.data_key);
        let blob = if known(&v.encrypted_keys) {
            let blob = LocalBlob::parse(&v.blob).unwrap();
            assert_eq!(blob.layout(), v.layout, "{}: told apart", v.name);
            blob
        } else {
            assert!(
                matches!(
                    LocalBlob::parse(&v.blob),
                    Err(EnvelopeError::Malformed { .. })
                ),
                "{}: unknown keys, so the layout must be named",
                v.name
            );
            LocalBlob::parse_as(&v.blob, v.layout).unwrap()
        };
        assert_eq!(blob.encrypted_keys(), v.encrypted_keys, "{}", v.name);
        assert_eq!(blob.to_bytes(), v.blob, "{}", v.name);
        assert_eq!(
            blob.decrypt(&key, vault_crypto::Aad::new(&v.aad)).unwrap(),
            v.plaintext.as_bytes(),
            "{}",
            v.name
        );
        assert!(matches!(
            blob.decrypt(&key, vault_crypto::Aad::new(b"other aad")),
            Err(Error::DecryptionFailed)
        ));
        // Made again with the vector's IV: the same bytes.
        let again = danger::workos_encrypt_with_iv(
            v.layout,
            &key,
            &v.encrypted_keys,
            v.plaintext.as_bytes(),
            vault_crypto::Aad::new(&v.aad),
            &v.iv,
        )
        .unwrap();
        assert_eq!(hex::encode(again), hex::encode(&v.blob), "{}", v.name);
    }
}

#[test]
fn every_authenticated_byte_of_every_layout_is_checked() {
    for v in vectors() {
        let key = danger::data_key_from_bytes(v.data_key);
        for i in 0..v.blob.len() {
            let mut bad = v.blob.clone();
            bad[i] ^= 0x20;
            if let Ok(blob) = LocalBlob::parse_as(&bad, v.layout) {
                // A changed key blob is the server's to reject; all else is authenticated.
                if blob.encrypted_keys() != v.encrypted_keys {
                    continue;
                }
                assert!(
                    blob.decrypt(&key, vault_crypto::Aad::new(&v.aad)).is_err(),
                    "{}: byte {i} changed and still opened",
                    v.name
                );
            }
        }
    }
}

#[test]
fn a_blob_that_reads_as_two_layouts_is_refused_not_guessed() {
    // An IvFirst blob whose IV happens to read as `LEB128(8) | VLTE 1 1 …`: also a KeysFirst
    // blob with known keys. Random IVs do so with odds of 2^-56; when it happens, `parse`
    // refuses rather than choose.
    let key = danger::data_key_from_bytes([5; 32]);
    let keys = b"VLTE\x01\x00\x01 issued".to_vec();
    let iv = [8, b'V', b'L', b'T', b'E', 1, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd];
    let blob = danger::workos_encrypt_with_iv(
        Layout::IvFirst,
        &key,
        &keys,
        b"pt",
        vault_crypto::Aad::NONE,
        &iv,
    )
    .unwrap();
    assert!(LocalBlob::parse_as(&blob, Layout::KeysFirst).is_ok());
    assert_eq!(
        LocalBlob::parse(&blob),
        Err(EnvelopeError::Malformed {
            reason: "the blob reads as more than one layout; name its layout"
        })
    );
    let named = LocalBlob::parse_as(&blob, Layout::IvFirst).unwrap();
    assert_eq!(named.decrypt(&key, vault_crypto::Aad::NONE).unwrap(), b"pt");
}

#[test]
fn structural_limits_of_the_keys_first_layout() {
    let keys = b"VLTE\x01\x00\x01".to_vec();
    let mut blob = vec![7];
    blob.extend_from_slice(&keys);
    blob.extend_from_slice(&[0; 27]); // one byte short of nonce and tag
    assert_eq!(
        LocalBlob::parse_as(&blob, Layout::KeysFirst),
        Err(EnvelopeError::Truncated)
    );
    blob.push(0);
    assert!(
        LocalBlob::parse_as(&blob, Layout::KeysFirst).is_ok(),
        "empty plaintext"
    );
    assert!(LocalBlob::parse_as(&[0, 1, 2], Layout::KeysFirst).is_err());
    let k = danger::data_key_from_bytes([1; 32]);
    assert!(
        danger::workos_encrypt_with_iv(
            Layout::LongIv,
            &k,
            &keys,
            b"",
            vault_crypto::Aad::NONE,
            &[0; 12]
        )
        .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the layout, keys, IV, plaintext and AAD: `parse` finds the layout the blob was
    /// written in (never another), and it opens.
    #[test]
    fn parse_tells_every_layout_apart(
        layout in prop::sample::select(Layout::ALL.to_vec()),
        issuer in 0usize..3,
        tail in prop::collection::vec(any::<u8>(), 0..300),
        plaintext in prop::collection::vec(any::<u8>(), 0..200),
        aad in prop::collection::vec(any::<u8>(), 0..20),
        key in any::<[u8; 32]>(),
    ) {
        // WorkOS's keys, or an issued key of this vault in suite 1 or suite 3.
        let mut keys = [&b"WOS.EKM.v1\0"[..], b"VLTE\x01\x00\x01", b"VLTE\x01\x00\x03"][issuer].to_vec();
        keys.extend_from_slice(&tail);
        let key = danger::data_key_from_bytes(key);
        let text = workos::encrypt_as(layout, &key, &keys, &plaintext, vault_crypto::Aad::new(&aad)).unwrap();
        let bytes = LocalBlob::decode_text(&text).unwrap();
        let blob = LocalBlob::parse(&bytes).unwrap();
        prop_assert_eq!(blob.layout(), layout);
        prop_assert_eq!(blob.encrypted_keys(), &keys[..]);
        prop_assert_eq!(blob.decrypt(&key, vault_crypto::Aad::new(&aad)).unwrap(), plaintext);
        prop_assert_eq!(blob.to_bytes(), bytes);
    }
}
