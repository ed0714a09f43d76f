//! The WorkOS SDK local-encryption blob: the shared vectors (which the Node and Python SDKs
//! produce byte for byte with the IV pinned) reproduce exactly, decrypt, and reject tampering.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use vault_crypto::workos::{self, Layout, LocalBlob};
use vault_crypto::{DataKey, EnvelopeError, Error, danger};

struct Vector {
    name: String,
    data_key: [u8; 32],
    encrypted_keys: Vec<u8>,
    iv: [u8; 12],
    plaintext: String,
    aad: Vec<u8>,
    blob_b64: String,
    blob: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("vectors/workos-blob-vectors.json");
    let json: serde_json::Value = serde_json::from_str(text).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            Vector {
                name: s("name"),
                data_key: STANDARD
                    .decode(s("data_key_b64"))
                    .unwrap()
                    .try_into()
                    .unwrap(),
                encrypted_keys: STANDARD.decode(s("encrypted_keys_b64")).unwrap(),
                iv: hex::decode(s("iv_hex")).unwrap().try_into().unwrap(),
                plaintext: s("plaintext"),
                aad: v["aad"]
                    .as_str()
                    .map(|a| a.as_bytes().to_vec())
                    .unwrap_or_default(),
                blob_b64: s("blob_b64"),
                blob: hex::decode(s("blob_hex")).unwrap(),
            }
        })
        .collect()
}

fn key(v: &Vector) -> DataKey {
    danger::data_key_from_bytes(v.data_key)
}

#[test]
fn vectors_reproduce_byte_for_byte() {
    let all = vectors();
    assert_eq!(all.len(), 3);
    for v in &all {
        let blob = danger::workos_encrypt_with_iv(
            Layout::IvFirst,
            &key(v),
            &v.encrypted_keys,
            v.plaintext.as_bytes(),
            vault_crypto::Aad::new(&v.aad),
            &v.iv,
        )
        .unwrap();
        assert_eq!(hex::encode(&blob), hex::encode(&v.blob), "{}", v.name);
        assert_eq!(STANDARD.encode(&blob), v.blob_b64, "{}", v.name);
    }
}

#[test]
fn vectors_parse_and_decrypt() {
    for v in &vectors() {
        let bytes = LocalBlob::decode_text(&v.blob_b64).unwrap();
        // These vectors' keys are opaque bytes, neither ours nor WorkOS's: the layout is named.
        assert!(LocalBlob::parse(&bytes).is_err(), "{}", v.name);
        let blob = LocalBlob::parse_as(&bytes, Layout::IvFirst).unwrap();
        assert_eq!(blob.encrypted_keys(), v.encrypted_keys, "{}", v.name);
        assert_eq!(blob.to_bytes(), v.blob, "{}", v.name);
        let plain = blob
            .decrypt(&key(v), vault_crypto::Aad::new(&v.aad))
            .unwrap();
        assert_eq!(plain, v.plaintext.as_bytes(), "{}", v.name);
    }
}

#[test]
fn wrong_aad_wrong_key_or_any_flipped_bit_fails() {
    for v in &vectors() {
        let blob = LocalBlob::parse_as(&v.blob, Layout::IvFirst).unwrap();
        assert!(matches!(
            blob.decrypt(&key(v), vault_crypto::Aad::new(b"other aad")),
            Err(Error::DecryptionFailed)
        ));
        assert!(matches!(
            blob.decrypt(
                &danger::data_key_from_bytes([7; 32]),
                vault_crypto::Aad::new(&v.aad)
            ),
            Err(Error::DecryptionFailed)
        ));
        let lp = if v.encrypted_keys.len() < 128 { 1 } else { 2 };
        let keys = 28..28 + lp + v.encrypted_keys.len();
        for i in 0..v.blob.len() {
            let mut bad = v.blob.clone();
            bad[i] ^= 0x40;
            // A changed key blob is the server's to reject; every other byte is authenticated.
            if keys.contains(&i) {
                continue;
            }
            let opened = LocalBlob::parse_as(&bad, Layout::IvFirst)
                .is_ok_and(|b| b.decrypt(&key(v), vault_crypto::Aad::new(&v.aad)).is_ok());
            assert!(!opened, "{}: byte {i} changed and still opened", v.name);
        }
    }
}

#[test]
fn random_round_trip_has_a_fresh_iv() {
    let k = danger::data_key_from_bytes([1; 32]);
    let keys = b"VLTE\x01\x00\x01 an issued key";
    let a = workos::encrypt(&k, keys, b"value", vault_crypto::Aad::new(b"aad")).unwrap();
    let b = workos::encrypt(&k, keys, b"value", vault_crypto::Aad::new(b"aad")).unwrap();
    assert_ne!(a, b);
    assert_eq!(
        workos::decrypt_text(&k, &a, vault_crypto::Aad::new(b"aad")).unwrap(),
        b"value"
    );
    assert_eq!(
        workos::decrypt_text(&k, &b, vault_crypto::Aad::new(b"aad")).unwrap(),
        b"value"
    );
}

#[test]
fn structural_limits_are_typed_errors() {
    let head = [0u8; 28];
    assert_eq!(
        LocalBlob::parse_as(&head[..27], Layout::IvFirst),
        Err(EnvelopeError::Truncated)
    );
    assert_eq!(
        LocalBlob::parse_as(&head, Layout::IvFirst),
        Err(EnvelopeError::Truncated)
    );
    let mut empty_keys = head.to_vec();
    empty_keys.push(0);
    assert!(matches!(
        LocalBlob::parse_as(&empty_keys, Layout::IvFirst),
        Err(EnvelopeError::Malformed { .. })
    ));
    let mut short = head.to_vec();
    short.extend_from_slice(&[5, b'a', b'b']);
    assert_eq!(
        LocalBlob::parse_as(&short, Layout::IvFirst),
        Err(EnvelopeError::Truncated)
    );
    let mut huge = head.to_vec();
    huge.extend_from_slice(&[0x81, 0x80, 0x04]); // 65537
    huge.extend(std::iter::repeat_n(b'k', 65537));
    assert!(matches!(
        LocalBlob::parse_as(&huge, Layout::IvFirst),
        Err(EnvelopeError::TooLarge { .. })
    ));
    assert_eq!(
        LocalBlob::decode_text("not base64!"),
        Err(EnvelopeError::Base64)
    );
    let k = danger::data_key_from_bytes([1; 32]);
    assert!(workos::encrypt(&k, b"", b"v", vault_crypto::Aad::NONE).is_err());
}
