//! No secret reaches Debug or Display: not data keys, root keys, KEK-derived bytes or plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::fs;

use base64::Engine as _;
use common::{block_on, ctx};
use vault_crypto::{
    DataKey, Error, KeyProvider, KeyRingError, ManagedKeyProvider, danger, open_any_context, seal,
};

/// Every way key bytes could be printed: hex (both cases), Rust's decimal array form, base64.
fn renderings(secret: &[u8]) -> Vec<String> {
    let mut out = vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        base64::engine::general_purpose::STANDARD.encode(secret),
        format!("{secret:?}"),
    ];
    // A partial leak is still a leak: any 8-byte window in hex.
    for w in secret.windows(8) {
        out.push(hex::encode(w));
    }
    out
}

fn assert_clean(what: &str, text: &str, secrets: &[&[u8]]) {
    for secret in secrets {
        for r in renderings(secret) {
            assert!(!text.contains(&r), "{what} leaks a secret: {text}");
        }
    }
}

fn assert_clean_fmt<T: std::fmt::Debug + ?Sized>(what: &str, value: &T, secrets: &[&[u8]]) {
    assert_clean(what, &format!("{value:?}"), secrets);
    assert_clean(what, &format!("{value:#?}"), secrets);
}

#[test]
fn data_keys_are_redacted() {
    let key = DataKey::generate().unwrap();
    let bytes = *key.expose_secret();
    assert_eq!(format!("{key:?}"), "DataKey([REDACTED])");
    assert_clean_fmt("DataKey", &key, &[&bytes]);
}

#[test]
fn providers_and_opened_values_are_redacted() {
    let root = [0x5au8; 32];
    let p = danger::managed_provider_from_root_keys("root", &[(1, root)], 1).unwrap();
    let c = ctx(&[("organization_id", "org_1")]);
    let (dek, wrapped) = block_on(p.generate_data_key(&c)).unwrap();
    let dek_bytes = *dek.expose_secret();
    let plaintext = b"card 4111111111111111 cvv 123";
    let env = block_on(seal(&p, &c, plaintext, vault_crypto::Aad::NONE)).unwrap();
    let opened = block_on(open_any_context(&p, &env, vault_crypto::Aad::NONE)).unwrap();

    let secrets: [&[u8]; 3] = [&root, &dek_bytes, plaintext];
    assert_clean_fmt("ManagedKeyProvider", &p, &secrets);
    assert_clean_fmt("WrappedKey", &wrapped, &secrets);
    assert_clean_fmt("Opened", &opened, &secrets);
    assert!(!format!("{opened:?}").contains("4111111111111111"));
    let parsed = vault_crypto::Envelope::parse(&env).unwrap();
    assert_clean_fmt("Envelope", &parsed, &secrets);
}

#[test]
fn errors_carry_no_secrets() {
    let root = [0x33u8; 32];
    let p = danger::managed_provider_from_root_keys("root", &[(1, root)], 1).unwrap();
    let c = ctx(&[("organization_id", "org_1")]);
    let plaintext = b"top secret plaintext";
    let env = block_on(seal(&p, &c, plaintext, vault_crypto::Aad::new(b"aad"))).unwrap();

    let mut errors: Vec<Error> = Vec::new();
    errors
        .push(block_on(open_any_context(&p, &env, vault_crypto::Aad::new(b"wrong"))).unwrap_err());
    let mut tampered = env.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    errors.push(
        block_on(open_any_context(
            &p,
            &tampered,
            vault_crypto::Aad::new(b"aad"),
        ))
        .unwrap_err(),
    );
    errors.push(
        block_on(open_any_context(
            &p,
            &env[..20],
            vault_crypto::Aad::new(b"aad"),
        ))
        .unwrap_err(),
    );
    let other = ManagedKeyProvider::in_memory("root").unwrap();
    errors.push(
        block_on(open_any_context(
            &other,
            &env,
            vault_crypto::Aad::new(b"aad"),
        ))
        .unwrap_err(),
    );
    // A context error names the key, not the value.
    let value = "hunter2-value-that-must-not-leak";
    errors.push(
        vault_crypto::KeyContext::parse_json(format!(r#"{{"k":"{value}","k":"x"}}"#).as_bytes())
            .unwrap_err()
            .into(),
    );

    for e in &errors {
        for text in [e.to_string(), format!("{e:?}")] {
            assert_clean("error", &text, &[&root, plaintext]);
            assert!(!text.contains(value), "{text}");
        }
    }
    assert_eq!(errors[0].to_string(), "decryption failed");
    assert_eq!(errors[1].to_string(), "decryption failed");
}

#[test]
fn key_ring_file_errors_do_not_echo_key_material() {
    let dir = tempfile::tempdir().unwrap();
    ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    let path = dir.path().join("keyring-root.json");
    let text = fs::read_to_string(&path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let key_b64 = json["versions"][0]["key"].as_str().unwrap().to_owned();
    // Damage the key so it is no longer 32 bytes, keeping valid base64 around real key bytes.
    json["versions"][0]["key"] = serde_json::Value::String(format!("{key_b64}AAAA"));
    fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let e = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap_err();
    assert!(matches!(e, KeyRingError::Malformed { .. }), "{e:?}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(&key_b64), "{text}");
        assert!(!text.contains(&key_b64[..16]), "{text}");
    }
    // A type error inside the file: serde's message must not quote the value either.
    json["versions"][0]["key"] = serde_json::Value::from(12345);
    json["name"] = serde_json::Value::from(key_b64.clone());
    fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let e = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap_err();
    assert!(!e.to_string().contains(&key_b64), "{e}");
}

#[test]
fn issued_data_keys_and_sdk_blobs_are_redacted() {
    let p = ManagedKeyProvider::in_memory("root").unwrap();
    let issued = block_on(vault_crypto::issued::issue(
        &p,
        &ctx(&[("organization_id", "org_1")]),
        "env",
    ))
    .unwrap();
    let key = *issued.data_key().expose_secret();
    assert_clean_fmt("IssuedKey", &issued, &[&key]);
    let blob = vault_crypto::workos::encrypt(
        issued.data_key(),
        issued.encrypted_keys(),
        b"card 4111 1111 1111 1111",
        vault_crypto::Aad::NONE,
    )
    .unwrap();
    let bytes = vault_crypto::workos::LocalBlob::decode_text(&blob).unwrap();
    let parsed = vault_crypto::workos::LocalBlob::parse(&bytes).unwrap();
    assert_clean_fmt("LocalBlob", &parsed, &[&key, b"card 4111"]);
    let err = parsed
        .decrypt(
            &danger::data_key_from_bytes([9; 32]),
            vault_crypto::Aad::NONE,
        )
        .unwrap_err();
    assert_clean_fmt("blob Error", &err, &[&key]);
    assert_clean("blob Error Display", &err.to_string(), &[&key]);
}
