//! Known-answer vectors of streamed envelopes (suite 4, FORMAT.md "Suite 0x0004: segments"),
//! in `tests/vectors/envelope-v1-suite4.txt`: made here from fixed inputs, opened through the
//! public stream API, and reproduced independently by `scripts/verify_vectors.py`.
//! Regenerate after a deliberate format change only:
//! `cargo test --test stream_vectors -- --ignored write_suite4_vectors`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::io::Read;
use std::path::PathBuf;

use common::{block_on, write_block};
use sha2::{Digest, Sha256};
use vault_crypto::stream::StreamHead;
use vault_crypto::{Aad, KeyContext, danger};

const FILE: &str = "envelope-v1-suite4.txt";

/// 32 bytes from a label: the vectors' "random" inputs.
fn label(s: &str) -> [u8; 32] {
    Sha256::digest(format!("vault-crypto suite 4 vector: {s}")).into()
}

struct Case {
    name: &'static str,
    context: &'static str,
    segment_size: u32,
    plaintext_len: usize,
    aad: &'static [u8],
}

const CASES: &[Case] = &[
    Case {
        name: "the empty value: one empty last segment",
        context: r#"{"organization_id":"org_1"}"#,
        segment_size: 256,
        plaintext_len: 0,
        aad: b"",
    },
    Case {
        name: "two segments, the last one short, associated data",
        context: r#"{"user_id":"u_9","organization_id":"org_1"}"#,
        segment_size: 256,
        plaintext_len: 300,
        aad: b"objects/42",
    },
    Case {
        name: "two full segments: the last one full",
        context: r#"{"organization_id":"org_1"}"#,
        segment_size: 256,
        plaintext_len: 512,
        aad: b"",
    },
    Case {
        name: "one short segment of the default size",
        context: r#"{"organization_id":"org_2"}"#,
        segment_size: 65536,
        plaintext_len: 1000,
        aad: b"",
    },
];

fn generate() -> String {
    let mut out = String::from(
        "# Envelope format v1, suite 4 (streamed), known-answer vectors (docs/FORMAT.md,\n\
         # \"Suite 0x0004: segments\"). Hex unless noted. Inputs: ROOT_KEY_V1, RING, CONTEXT (JSON\n\
         # text), DEK, WRAP_NONCE, MESSAGE_ID, NONCE_PREFIX, SEGMENT_SIZE (decimal), AAD,\n\
         # PLAINTEXT. Derived: CANONICAL, KEK, KEY_REF (text), WRAPPED, CONTENT_KEY, COMMITMENT,\n\
         # ENVELOPE. The random inputs are SHA-256 of labels; PLAINTEXT byte i is i mod 251.\n\n",
    );
    for (n, case) in CASES.iter().enumerate() {
        let root = label(&format!("{n} root"));
        let provider = danger::managed_provider_from_root_keys("root", &[(1, root)], 1).unwrap();
        let ctx = KeyContext::parse_json(case.context.as_bytes()).unwrap();
        let dek = label(&format!("{n} dek"));
        let wrap_nonce: [u8; 12] = label(&format!("{n} wrap nonce"))[..12].try_into().unwrap();
        let message_id = label(&format!("{n} message id"));
        let prefix: [u8; 7] = label(&format!("{n} nonce prefix"))[..7].try_into().unwrap();
        let plaintext: Vec<u8> = (0..case.plaintext_len)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let data_key = danger::data_key_from_bytes(dek);
        let wrapped =
            danger::managed_wrap_with_nonce(&provider, &data_key, &ctx, wrap_nonce).unwrap();
        let envelope = danger::seal_stream_with_parameters(
            &data_key,
            &wrapped,
            &ctx,
            &plaintext,
            Aad::new(case.aad),
            case.segment_size,
            message_id,
            prefix,
        )
        .unwrap();
        let (content_key, commitment) = danger::message_keys(4, &data_key, &message_id).unwrap();
        let mut kek = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(None, &root)
            .expand_multi_info(
                &[b"vault-crypto/v1/managed-kek", ctx.canonical_bytes()],
                &mut kek,
            )
            .unwrap();

        // Opened through the public API, the plaintext comes back.
        let mut input = envelope.as_slice();
        let head = StreamHead::read_from(&mut input).unwrap();
        let opener = block_on(head.open(&provider, &ctx, Aad::new(case.aad))).unwrap();
        let mut back = Vec::new();
        opener.reader(input).read_to_end(&mut back).unwrap();
        assert_eq!(back, plaintext, "{}", case.name);

        let fields = [
            ("NAME", case.name.to_string()),
            ("SUITE", "4".to_string()),
            ("RING", "root".to_string()),
            ("ROOT_KEY_V1", hex::encode(root)),
            ("ROOT_PRIMARY", "1".to_string()),
            ("CONTEXT", case.context.to_string()),
            ("CANONICAL", hex::encode(ctx.canonical_bytes())),
            ("KEK", hex::encode(kek)),
            ("DEK", hex::encode(dek)),
            ("WRAP_NONCE", hex::encode(wrap_nonce)),
            ("KEY_REF", wrapped.key_ref().to_string()),
            ("WRAPPED", hex::encode(wrapped.bytes())),
            ("MESSAGE_ID", hex::encode(message_id)),
            ("NONCE_PREFIX", hex::encode(prefix)),
            ("SEGMENT_SIZE", case.segment_size.to_string()),
            ("CONTENT_KEY", hex::encode(*content_key)),
            ("COMMITMENT", hex::encode(commitment)),
            ("AAD", hex::encode(case.aad)),
            ("PLAINTEXT", hex::encode(&plaintext)),
            ("ENVELOPE", hex::encode(&envelope)),
        ];
        write_block(&mut out, &fields);
    }
    out
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(FILE)
}

#[test]
#[ignore = "rewrites the vector file: run with --ignored only after a deliberate format change"]
fn write_suite4_vectors() {
    std::fs::write(path(), generate()).unwrap();
}

#[test]
fn the_suite4_vectors_are_what_the_library_makes_and_opens() {
    // The committed file is what the generator makes today: a format change cannot slip in.
    assert_eq!(std::fs::read_to_string(path()).unwrap(), generate());
}
