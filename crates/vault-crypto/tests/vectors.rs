//! Known-answer vectors (`tests/vectors/*.txt`, reproduced in `docs/FORMAT.md`), run through
//! every public entry point and every AES-GCM backend compiled in.
//!
//! The files are plain text blocks of `NAME = value` lines (hex unless the name says
//! otherwise), so other implementations can use them; `scripts/verify_vectors.py` checks them
//! against an independent implementation of FORMAT.md. To regenerate after a deliberate format
//! change (which needs a new format version): `cargo test --test vectors -- --ignored write_vectors`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use common::{block_on, write_block};
use sha2::{Digest, Sha256};
use vault_crypto::{
    Backend, DataKey, Envelope, EnvelopeError, Error, KeyContext, KeyProvider, KeyRef,
    ManagedKeyProvider, Router, WrappedKey, danger, open_any_context,
};

type Block = BTreeMap<String, String>;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn parse_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current = Block::new();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim_end();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
            continue;
        }
        let (k, v) = line
            .split_once(" = ")
            .unwrap_or_else(|| (line.trim_end_matches(" ="), ""));
        let k = k.trim_end_matches(" =").to_owned();
        assert!(
            current.insert(k.clone(), v.to_owned()).is_none(),
            "{k} twice"
        );
    }
    blocks
}

fn load(name: &str) -> Vec<Block> {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_blocks(&text)
}

fn hexv(b: &Block, k: &str) -> Vec<u8> {
    hex::decode(b.get(k).unwrap_or_else(|| panic!("missing {k}"))).unwrap()
}

fn arr<const N: usize>(b: &Block, k: &str) -> [u8; N] {
    hexv(b, k).try_into().unwrap()
}

fn provider(b: &Block, backend: Backend) -> ManagedKeyProvider {
    let mut keys = Vec::new();
    let mut v = 1;
    while let Some(hex_key) = b.get(&format!("ROOT_KEY_V{v}")) {
        keys.push((v, hex::decode(hex_key).unwrap().try_into().unwrap()));
        v += 1;
    }
    let primary = b["ROOT_PRIMARY"].parse().unwrap();
    danger::managed_provider_from_root_keys(&b["RING"], &keys, primary)
        .unwrap()
        .with_backend(backend)
}

fn dek(b: &Block) -> DataKey {
    danger::data_key_from_bytes(arr(b, "DEK"))
}

/// The positive vector files, by suite.
const POSITIVE: [(u16, &str); 2] = [
    (
        vault_crypto::SUITE_AES256GCM_HKDF_SHA256_COMMIT,
        "envelope-v1.txt",
    ),
    (
        vault_crypto::SUITE_AES256GCM_AESKDF_SHA256_COMMIT,
        "envelope-v1-suite3.txt",
    ),
];

/// A block's suite: `SUITE` if it has one (suite 1's file, older, has none).
fn suite(b: &Block) -> u16 {
    b.get("SUITE").map_or(1, |s| s.parse().unwrap())
}

#[test]
fn positive_vectors_reproduce_through_every_entry_point() {
    for (file_suite, file) in POSITIVE {
        let blocks = load(file);
        assert!(blocks.len() >= 5);
        assert!(blocks.iter().all(|b| suite(b) == file_suite), "{file}");
        positive_vectors(&blocks);
    }
}

fn positive_vectors(blocks: &[Block]) {
    for b in blocks {
        let name = &b["NAME"];
        let ctx = KeyContext::parse_json(b["CONTEXT"].as_bytes()).unwrap();
        assert_eq!(
            ctx.canonical_bytes(),
            hexv(b, "CANONICAL"),
            "{name}: canonical"
        );
        assert_eq!(
            KeyContext::from_canonical_bytes(&hexv(b, "CANONICAL")).unwrap(),
            ctx
        );
        let expected = hexv(b, "ENVELOPE");
        let plaintext = hexv(b, "PLAINTEXT");
        let aad = hexv(b, "AAD");

        for &backend in Backend::ALL {
            let p = provider(b, backend);
            // Sealing with the vector's random values reproduces it byte for byte.
            let mut wrapped = vec![
                danger::managed_wrap_with_nonce(&p, &dek(b), &ctx, arr(b, "WRAP_NONCE")).unwrap(),
            ];
            assert_eq!(
                wrapped[0].bytes(),
                hexv(b, "WRAPPED"),
                "{name}/{backend:?}: wrap"
            );
            assert_eq!(wrapped[0].key_ref().to_string(), b["KEY_REF"]);
            if let Some(extra) = b.get("EXTRA_KEY_REF") {
                let r = KeyRef::parse(extra).unwrap();
                wrapped.push(WrappedKey::new(r, hexv(b, "EXTRA_WRAPPED")).unwrap());
            }
            let sealed = danger::seal_with_parameters(
                suite(b),
                backend,
                &dek(b),
                &wrapped,
                &ctx,
                &plaintext,
                vault_crypto::Aad::new(&aad),
                arr(b, "MESSAGE_ID"),
                arr(b, "NONCE"),
            )
            .unwrap();
            assert_eq!(
                hex::encode(&sealed),
                b["ENVELOPE"],
                "{name}/{backend:?}: seal"
            );

            // Opening through the provider, through a router, with the data key, and from text.
            let opened = block_on(open_any_context(
                &p,
                &expected,
                vault_crypto::Aad::new(&aad),
            ))
            .unwrap();
            assert_eq!(opened.plaintext(), plaintext, "{name}/{backend:?}: open");
            assert_eq!(opened.context(), &ctx);
            let router = Router::new(Arc::new(provider(b, backend)));
            assert_eq!(
                block_on(open_any_context(
                    &router,
                    &expected,
                    vault_crypto::Aad::new(&aad)
                ))
                .unwrap()
                .plaintext(),
                plaintext
            );
            let pt = danger::open_with_data_key(
                backend,
                &dek(b),
                &expected,
                vault_crypto::Aad::new(&aad),
            )
            .unwrap();
            assert_eq!(&pt[..], plaintext, "{name}/{backend:?}: open with data key");
            let text = vault_crypto::encode_text(&expected);
            assert_eq!(text, b["TEXT"], "{name}: text form");
            let from_text = Envelope::decode_text(&text).unwrap();
            assert_eq!(
                block_on(open_any_context(
                    &p,
                    &from_text,
                    vault_crypto::Aad::new(&aad)
                ))
                .unwrap()
                .plaintext(),
                plaintext
            );
            // The unwrap alone.
            let key = block_on(p.unwrap(&wrapped[0], &ctx)).unwrap();
            assert_eq!(key.expose_secret(), &arr::<32>(b, "DEK"));
        }

        // Parsing exposes the committed values and re-serialises exactly.
        let env = Envelope::parse(&expected).unwrap();
        assert_eq!(env.to_bytes(), expected);
        assert_eq!(env.suite(), suite(b));
        let (content_key, commitment) =
            danger::message_keys(suite(b), &dek(b), &arr(b, "MESSAGE_ID")).unwrap();
        assert_eq!(hex::encode(*content_key), b["CONTENT_KEY"], "{name}");
        assert_eq!(hex::encode(commitment), b["COMMITMENT"], "{name}");
        assert_eq!(env.message_id(), &arr::<32>(b, "MESSAGE_ID"));
        assert_eq!(env.plaintext_len(), plaintext.len());
        let commitment = hexv(b, "COMMITMENT");
        assert!(
            expected.windows(32).any(|w| w == commitment),
            "{name}: the envelope holds the commitment"
        );
        vault_crypto::fuzzing::envelope(&expected);
    }
}

/// The class of an error, as the `FAILS` lines name it.
fn class(e: &Error) -> String {
    match e {
        Error::Envelope(EnvelopeError::Truncated) => "Truncated".into(),
        Error::Envelope(EnvelopeError::BadMagic) => "BadMagic".into(),
        Error::Envelope(EnvelopeError::UnsupportedVersion(_)) => "UnsupportedVersion".into(),
        Error::Envelope(EnvelopeError::UnsupportedSuite(_)) => "UnsupportedSuite".into(),
        Error::Envelope(EnvelopeError::TooLarge { .. }) => "TooLarge".into(),
        Error::Envelope(EnvelopeError::Malformed { .. }) => "Malformed".into(),
        Error::Envelope(EnvelopeError::Context(_)) => "Context".into(),
        Error::Envelope(EnvelopeError::Base64) => "Base64".into(),
        Error::NoProvider { .. } => "NoProvider".into(),
        Error::DecryptionFailed => "DecryptionFailed".into(),
        Error::Provider(p) => format!("Provider({:?})", p.kind()),
        other => format!("{other:?}"),
    }
}

fn outcome<T>(r: Result<T, Error>) -> String {
    match r {
        Ok(_) => "none".into(),
        Err(e) => class(&e),
    }
}

#[test]
fn negative_vectors_fail_as_specified_through_every_entry_point() {
    let positive = load("envelope-v1.txt");
    let base = &positive[0];
    let blocks = load("envelope-v1-negative.txt");
    assert!(blocks.len() >= 20);
    for b in &blocks {
        let name = &b["NAME"];
        let fails = &b["FAILS"];
        let aad = hexv(b, "AAD");
        if let Some(text) = b.get("TEXT") {
            let text = &text.replace("\\n", "\n");
            let r = Envelope::decode_text(text).map_err(Error::from);
            assert_eq!(outcome(r), *fails, "{name}");
            vault_crypto::fuzzing::envelope_text(text.as_bytes());
            continue;
        }
        let bytes = hexv(b, "ENVELOPE");
        let structural = !matches!(fails.as_str(), "DecryptionFailed" | "NoProvider")
            && !fails.starts_with("Provider(");
        assert_eq!(
            Envelope::parse(&bytes).is_err(),
            structural,
            "{name}: parse"
        );
        vault_crypto::fuzzing::envelope(&bytes);

        let with_key = b.get("FAILS_WITH_DATA_KEY").unwrap_or(fails);
        for &backend in Backend::ALL {
            let p = provider(base, backend);
            assert_eq!(
                outcome(block_on(open_any_context(
                    &p,
                    &bytes,
                    vault_crypto::Aad::new(&aad)
                ))),
                *fails,
                "{name}/{backend:?}: open"
            );
            let router = Router::new(Arc::new(provider(base, backend)));
            assert_eq!(
                outcome(block_on(open_any_context(
                    &router,
                    &bytes,
                    vault_crypto::Aad::new(&aad)
                ))),
                *fails,
                "{name}: router"
            );
            let r = danger::open_with_data_key(
                backend,
                &dek(base),
                &bytes,
                vault_crypto::Aad::new(&aad),
            );
            assert_eq!(
                outcome(r),
                *with_key,
                "{name}/{backend:?}: open with data key"
            );
            let text = vault_crypto::encode_text(&bytes);
            let r = match Envelope::decode_text(&text) {
                Ok(decoded) => {
                    block_on(open_any_context(&p, &decoded, vault_crypto::Aad::new(&aad)))
                        .map(|_| ())
                }
                Err(e) => Err(e.into()),
            };
            assert_eq!(outcome(r), *fails, "{name}: text form");
        }
    }
}

// ---- Generation (run once per format version, with --ignored write_vectors) ----

fn det<const N: usize>(label: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (counter, chunk) in (0u8..).zip(out.chunks_mut(32)) {
        let h = Sha256::new()
            .chain_update(label)
            .chain_update([counter])
            .finalize();
        chunk.copy_from_slice(&h[..chunk.len()]);
    }
    out
}

struct Spec {
    name: &'static str,
    context: &'static str,
    plaintext: Vec<u8>,
    aad: Vec<u8>,
    versions: u32,
    extra: bool,
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "one pair, short value",
            context: r#"{"organization_id":"org_1"}"#,
            plaintext: b"secret!".to_vec(),
            aad: vec![],
            versions: 1,
            extra: false,
        },
        Spec {
            name: "two pairs in reverse order, associated data",
            context: r#"{"user_id":"u_9","organization_id":"org_1"}"#,
            plaintext: b"4111 1111 1111 1111".to_vec(),
            aad: b"object:obj_01".to_vec(),
            versions: 1,
            extra: false,
        },
        Spec {
            name: "empty plaintext",
            context: r#"{"organization_id":"org_1"}"#,
            plaintext: vec![],
            aad: b"x".to_vec(),
            versions: 1,
            extra: false,
        },
        Spec {
            name: "non-ASCII context, 300-byte value",
            context: r#"{"région":"Île-de-France","emoji":"🔐","esc\u0061ped":"\t"}"#,
            plaintext: (0..300u16).map(|i| (i % 251) as u8).collect(),
            aad: vec![],
            versions: 1,
            extra: false,
        },
        Spec {
            name: "ten pairs",
            context: r#"{"k0":"v0","k1":"v1","k2":"v2","k3":"v3","k4":"v4","k5":"v5","k6":"v6","k7":"v7","k8":"v8","k9":"v9"}"#,
            plaintext: b"ten".to_vec(),
            aad: vec![],
            versions: 1,
            extra: false,
        },
        Spec {
            name: "after a rotation: primary version 2",
            context: r#"{"organization_id":"org_1"}"#,
            plaintext: b"rotated".to_vec(),
            aad: vec![],
            versions: 2,
            extra: false,
        },
        Spec {
            name: "two wrapped keys: managed and an escrow key of another provider",
            context: r#"{"organization_id":"org_1"}"#,
            plaintext: b"escrowed".to_vec(),
            aad: vec![],
            versions: 1,
            extra: true,
        },
    ]
}

fn generate_positive(suite: u16) -> String {
    let mut out = String::from(if suite == 1 {
        "# Envelope format v1 known-answer vectors (docs/FORMAT.md, \"Test vectors\").\n"
    } else {
        "# Envelope format v1, suite 3, known-answer vectors (docs/FORMAT.md, \"Test vectors\").\n\
         # The same inputs as envelope-v1.txt; SUITE is the header's suite id (decimal).\n"
    });
    out.push_str(
        "# Hex unless noted. Inputs: ROOT_KEY_V*, ROOT_PRIMARY, RING, CONTEXT (JSON text), DEK, WRAP_NONCE,\n\
         # MESSAGE_ID, NONCE, AAD, PLAINTEXT. Derived: CANONICAL, KEK, KEY_REF (text), WRAPPED,\n\
         # CONTENT_KEY, COMMITMENT, ENVELOPE, TEXT (base64). The random inputs are SHA-256 of labels.\n\n",
    );
    for (i, s) in specs().iter().enumerate() {
        let n = i + 1;
        let ctx = KeyContext::parse_json(s.context.as_bytes()).unwrap();
        let roots: Vec<(u32, [u8; 32])> = (1..=s.versions)
            .map(|v| (v, det(&format!("vector {n} root v{v}"))))
            .collect();
        let p = danger::managed_provider_from_root_keys("root", &roots, s.versions).unwrap();
        let dek_bytes: [u8; 32] = det(&format!("vector {n} dek"));
        let data_key = danger::data_key_from_bytes(dek_bytes);
        let wrap_nonce: [u8; 12] = det(&format!("vector {n} wrap nonce"));
        let message_id: [u8; 32] = det(&format!("vector {n} message id"));
        let nonce: [u8; 12] = det(&format!("vector {n} nonce"));
        let mut wrapped =
            vec![danger::managed_wrap_with_nonce(&p, &data_key, &ctx, wrap_nonce).unwrap()];
        let mut extra_fields = Vec::new();
        if s.extra {
            let escrow = danger::managed_provider_from_root_keys(
                "escrow",
                &[(1, det("vector escrow root"))],
                1,
            )
            .unwrap();
            let w = danger::managed_wrap_with_nonce(
                &escrow,
                &data_key,
                &ctx,
                det("vector escrow nonce"),
            )
            .unwrap();
            let r = KeyRef::new("escrow-kms", "escrow", "v1").unwrap();
            extra_fields.push(("EXTRA_KEY_REF", r.to_string()));
            extra_fields.push(("EXTRA_WRAPPED", hex::encode(w.bytes())));
            wrapped.push(WrappedKey::new(r, w.bytes().to_vec()).unwrap());
        }
        let env = danger::seal_with_parameters(
            suite,
            Backend::DEFAULT,
            &data_key,
            &wrapped,
            &ctx,
            &s.plaintext,
            vault_crypto::Aad::new(&s.aad),
            message_id,
            nonce,
        )
        .unwrap();
        let parsed = Envelope::parse(&env).unwrap();
        // KEK and content key are derived here from FORMAT.md's definitions, independently of
        // the library's internals, for implementers in other languages.
        let kek = {
            let hk = hkdf::Hkdf::<Sha256>::new(None, &roots[roots.len() - 1].1);
            let mut k = [0u8; 32];
            hk.expand_multi_info(
                &[b"vault-crypto/v1/managed-kek", ctx.canonical_bytes()],
                &mut k,
            )
            .unwrap();
            k
        };
        let (content_key, commitment) = if suite == 1 {
            let hk = hkdf::Hkdf::<Sha256>::new(Some(&message_id), &dek_bytes);
            let mut ck = [0u8; 32];
            let mut cm = [0u8; 32];
            hk.expand_multi_info(&[b"vault-crypto/v1/content-key", &[0, 1]], &mut ck)
                .unwrap();
            hk.expand_multi_info(&[b"vault-crypto/v1/commitment", &[0, 1]], &mut cm)
                .unwrap();
            (ck, cm)
        } else {
            suite3_keys(&dek_bytes, &message_id)
        };
        assert!(env.windows(32).any(|w| w == commitment));
        let mut fields = vec![("NAME", s.name.to_string())];
        if suite != 1 {
            fields.push(("SUITE", suite.to_string()));
        }
        fields.push(("RING", "root".to_string()));
        for (v, k) in &roots {
            const NAMES: [&str; 3] = ["ROOT_KEY_V1", "ROOT_KEY_V2", "ROOT_KEY_V3"];
            fields.push((NAMES[*v as usize - 1], hex::encode(k)));
        }
        fields.extend([
            ("ROOT_PRIMARY", s.versions.to_string()),
            ("CONTEXT", s.context.to_string()),
            ("CANONICAL", hex::encode(ctx.canonical_bytes())),
            ("KEK", hex::encode(kek)),
            ("DEK", hex::encode(dek_bytes)),
            ("WRAP_NONCE", hex::encode(wrap_nonce)),
            ("KEY_REF", wrapped[0].key_ref().to_string()),
            ("WRAPPED", hex::encode(wrapped[0].bytes())),
        ]);
        fields.extend(extra_fields);
        fields.extend([
            ("MESSAGE_ID", hex::encode(message_id)),
            ("NONCE", hex::encode(nonce)),
            ("CONTENT_KEY", hex::encode(content_key)),
            ("COMMITMENT", hex::encode(commitment)),
            ("AAD", hex::encode(&s.aad)),
            ("PLAINTEXT", hex::encode(&s.plaintext)),
            ("ENVELOPE", hex::encode(&env)),
            ("TEXT", vault_crypto::encode_text(&env)),
        ]);
        assert_eq!(parsed.to_bytes(), env);
        write_block(&mut out, &fields);
    }
    out
}

/// Suite 3's content key and commitment as FORMAT.md states them, from the `aes` and `sha2`
/// crates directly: the first 8 bytes of AES-256(DK, le32(i) || message id[..12]) for i = 2..=5,
/// and SHA-256(label || DK || message id).
fn suite3_keys(dek: &[u8; 32], message_id: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
    let cipher = aes::Aes256::new(&Array::from(*dek));
    let mut content_key = [0u8; 32];
    for (i, out) in (2u32..).zip(content_key.chunks_mut(8)) {
        let mut block = Array::from([0u8; 16]);
        block[..4].copy_from_slice(&i.to_le_bytes());
        block[4..].copy_from_slice(&message_id[..12]);
        cipher.encrypt_block(&mut block);
        out.copy_from_slice(&block[..8]);
    }
    let commitment = Sha256::new()
        .chain_update(b"vault/3")
        .chain_update(dek)
        .chain_update(&message_id[..16])
        .finalize()
        .into();
    (content_key, commitment)
}

fn generate_negative(base: &Block) -> String {
    let env = hexv(base, "ENVELOPE");
    let ctx_len = hexv(base, "CANONICAL").len();
    // Offsets in the first positive vector (FORMAT.md "Envelope").
    let ctx_at = 4 + 1 + 2 + 32 + 2;
    let commit_at = ctx_at + ctx_len;
    let nonce_at = commit_at + 32;
    let keys_at = nonce_at + 12;
    let scheme_at = keys_at + 2;
    let wrapped_len_at = keys_at + 1 + 1 + 7 + 2 + 4 + 1 + 2;
    let payload_at = wrapped_len_at + 2 + 60;
    assert_eq!(&env[scheme_at..scheme_at + 7], b"managed");
    assert_eq!(env.len() - payload_at, hexv(base, "PLAINTEXT").len() + 16);

    let flip = |at: usize| {
        let mut e = env.clone();
        e[at] ^= 0x01;
        e
    };
    let splice = |at: usize, remove: usize, insert: &[u8]| {
        let mut e = env[..at].to_vec();
        e.extend_from_slice(insert);
        e.extend_from_slice(&env[at + remove..]);
        e
    };
    let ctx = KeyContext::parse_json(base["CONTEXT"].as_bytes()).unwrap();
    let other_ctx = KeyContext::from_pairs([("organization_id", "org_2")]).unwrap();
    assert_eq!(other_ctx.canonical_bytes().len(), ctx_len);
    let unsorted = [1u8, 2, 0, 1, b'b', 0, 1, b'2', 0, 1, b'a', 0, 1, b'1'];
    let mut unsorted_ctx = env[..ctx_at - 2].to_vec();
    unsorted_ctx.extend_from_slice(&u16::try_from(unsorted.len()).unwrap().to_be_bytes());
    unsorted_ctx.extend_from_slice(&unsorted);
    unsorted_ctx.extend_from_slice(&env[commit_at..]);

    // A valid wrap of another data key under the same ring and context.
    let p = provider(base, Backend::DEFAULT);
    let attacker = danger::data_key_from_bytes(det("attacker dek"));
    let substitute =
        danger::managed_wrap_with_nonce(&p, &attacker, &ctx, det("attacker nonce")).unwrap();
    let parsed = Envelope::parse(&env).unwrap();
    let substituted = parsed.with_wrapped_keys(vec![substitute]).unwrap();
    let rekey = |r: &str| {
        parsed
            .with_wrapped_keys(vec![
                WrappedKey::new(
                    KeyRef::parse(r).unwrap(),
                    parsed.wrapped_keys()[0].bytes().to_vec(),
                )
                .unwrap(),
            ])
            .unwrap()
    };
    let nine = parsed
        .with_wrapped_keys(vec![parsed.wrapped_keys()[0].clone(); 8])
        .unwrap();
    let mut nine_raw = nine.clone();
    nine_raw[keys_at] = 9;

    let mut trailing = env.clone();
    trailing.push(0);
    let text = vault_crypto::encode_text(&env);

    let aad = String::new();
    let cases: Vec<(&str, Vec<u8>, &str, Option<&str>)> = vec![
        ("empty input", vec![], "Truncated", None),
        ("three bytes", env[..3].to_vec(), "Truncated", None),
        (
            "header cut inside the message id",
            env[..20].to_vec(),
            "Truncated",
            None,
        ),
        (
            "cut inside the wrapped key",
            env[..wrapped_len_at + 10].to_vec(),
            "Truncated",
            None,
        ),
        (
            "payload shorter than a tag",
            env[..payload_at + 15].to_vec(),
            "Truncated",
            None,
        ),
        ("bad magic", splice(0, 4, b"VLTX"), "BadMagic", None),
        ("version 2", splice(4, 1, &[2]), "UnsupportedVersion", None),
        ("version 0", splice(4, 1, &[0]), "UnsupportedVersion", None),
        ("suite 2", splice(5, 2, &[0, 2]), "UnsupportedSuite", None),
        (
            "context length over the maximum",
            splice(ctx_at - 2, 2, &[0xff, 0xff]),
            "TooLarge",
            None,
        ),
        (
            "context length zero",
            splice(ctx_at - 2, 2, &[0, 0]),
            "Context",
            None,
        ),
        ("context keys not sorted", unsorted_ctx, "Context", None),
        (
            "context version 2",
            splice(ctx_at, 1, &[2]),
            "Context",
            None,
        ),
        (
            "no wrapped keys",
            splice(keys_at, 1, &[0]),
            "Malformed",
            None,
        ),
        ("nine wrapped keys", nine_raw, "TooLarge", None),
        (
            "scheme in upper case",
            splice(scheme_at, 7, b"MANAGED"),
            "Malformed",
            None,
        ),
        (
            "scheme length over the maximum",
            splice(keys_at + 1, 1, &[33]),
            "TooLarge",
            None,
        ),
        (
            "empty wrapped key",
            splice(wrapped_len_at, 62, &[0, 0]),
            "Malformed",
            None,
        ),
        (
            "wrapped key length over the maximum",
            splice(wrapped_len_at, 2, &[0x10, 0x01]),
            "TooLarge",
            None,
        ),
        ("tag flipped", flip(env.len() - 1), "DecryptionFailed", None),
        (
            "ciphertext flipped",
            flip(payload_at),
            "DecryptionFailed",
            None,
        ),
        (
            "commitment flipped",
            flip(commit_at),
            "DecryptionFailed",
            None,
        ),
        ("nonce flipped", flip(nonce_at), "DecryptionFailed", None),
        ("message id flipped", flip(10), "DecryptionFailed", None),
        (
            "context swapped for another valid one",
            splice(ctx_at, ctx_len, other_ctx.canonical_bytes()),
            "DecryptionFailed",
            None,
        ),
        ("trailing byte", trailing, "DecryptionFailed", None),
        (
            "wrapped key flipped",
            flip(payload_at - 1),
            "DecryptionFailed",
            Some("none"),
        ),
        (
            "wrapped key of another data key",
            substituted,
            "DecryptionFailed",
            Some("none"),
        ),
        (
            "unknown provider scheme",
            rekey("aws-kms://arn:aws:kms:us-east-1:111122223333:key/1234abcd"),
            "NoProvider",
            Some("none"),
        ),
        (
            "key version that does not exist",
            rekey("managed://root#v7"),
            "Provider(NotFound)",
            Some("none"),
        ),
        (
            "malformed managed key version",
            rekey("managed://root#7"),
            "DecryptionFailed",
            Some("none"),
        ),
    ];
    let mut out = String::from(
        "# Envelope format v1 negative vectors (docs/FORMAT.md, \"Test vectors\").\n\
         # Each is derived from the first vector of envelope-v1.txt, opened with its ROOT_KEY_V1 and DEK.\n\
         # FAILS is the error through a provider; FAILS_WITH_DATA_KEY, when present, the result of\n\
         # opening with the data key directly (none = opens). TEXT vectors test the base64 form.\n\n",
    );
    for (name, bytes, fails, with_key) in cases {
        let mut fields = vec![
            ("NAME", name.to_string()),
            ("ENVELOPE", hex::encode(&bytes)),
            ("AAD", aad.clone()),
            ("FAILS", fails.to_string()),
        ];
        if let Some(w) = with_key {
            fields.push(("FAILS_WITH_DATA_KEY", w.to_string()));
        }
        write_block(&mut out, &fields);
    }
    write_block(
        &mut out,
        &[
            ("NAME", "wrong associated data".into()),
            ("ENVELOPE", hex::encode(&env)),
            ("AAD", "00".into()),
            ("FAILS", "DecryptionFailed".into()),
        ],
    );
    let texts = [
        (
            "text without padding",
            text.trim_end_matches('=').to_string(),
        ),
        (
            "text with a line break",
            format!("{}\n{}", &text[..40], &text[40..]),
        ),
        ("text with a trailing newline", format!("{text}\n")),
        (
            "text in the URL-safe alphabet",
            text.replace('+', "-").replace('/', "_") + "-_",
        ),
        (
            "text with non-canonical trailing bits",
            set_low_bit_of_last_char(&text),
        ),
    ];
    for (name, t) in texts {
        write_block(
            &mut out,
            &[
                ("NAME", name.into()),
                ("TEXT", t.replace('\n', "\\n")),
                ("AAD", String::new()),
                ("FAILS", "Base64".into()),
            ],
        );
    }
    out
}

/// Sets the lowest bit of the last base64 character before the padding: those bits are zero in
/// canonical base64, so the result decodes only for lenient decoders.
fn set_low_bit_of_last_char(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert!(
        text.ends_with('='),
        "the first vector's text must be padded"
    );
    let i = text.trim_end_matches('=').len() - 1;
    let value = ALPHABET
        .iter()
        .position(|&c| c == text.as_bytes()[i])
        .unwrap();
    assert_eq!(value & 1, 0, "canonical base64 has zero trailing bits");
    let mut out = text.to_owned();
    out.replace_range(i..=i, &char::from(ALPHABET[value | 1]).to_string());
    out
}

#[test]
#[ignore = "rewrites the vector files: run with --ignored only after a deliberate format change"]
fn write_vectors() {
    std::fs::create_dir_all(vectors_dir()).unwrap();
    for (suite, file) in POSITIVE {
        std::fs::write(vectors_dir().join(file), generate_positive(suite)).unwrap();
    }
    let positive = generate_positive(1);
    let base = &parse_blocks(&positive)[0];
    std::fs::write(
        vectors_dir().join("envelope-v1-negative.txt"),
        generate_negative(base),
    )
    .unwrap();
}

#[test]
fn generation_is_deterministic_and_matches_the_files() {
    // The committed files are what the generator makes today: a format change cannot slip in.
    for (suite, file) in POSITIVE {
        let on_disk = std::fs::read_to_string(vectors_dir().join(file)).unwrap();
        assert_eq!(generate_positive(suite), on_disk, "{file}");
    }
    let positive = generate_positive(1);
    let base = &parse_blocks(&positive)[0];
    let negative = std::fs::read_to_string(vectors_dir().join("envelope-v1-negative.txt")).unwrap();
    assert_eq!(generate_negative(base), negative);
}
