//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test.
//!
//! Each function parses untrusted bytes and, when the parse succeeds, asserts a round-trip
//! property, so a fuzzer finds wrong answers as well as panics. Not part of the stable API.

// A broken property must panic: that is how the fuzzer sees it.
#![allow(clippy::expect_used, clippy::missing_panics_doc)]

use crate::context::KeyContext;
use crate::envelope::{Envelope, encode_text};
use crate::provider::managed;

/// Key-context JSON: a context that parses re-encodes to canonical bytes that parse back to the
/// same context, and its JSON form parses to the same context.
pub fn context_json(data: &[u8]) {
    if let Ok(ctx) = KeyContext::parse_json(data) {
        let again = KeyContext::from_canonical_bytes(ctx.canonical_bytes())
            .expect("canonical bytes of a valid context must parse");
        assert_eq!(again, ctx);
        let json = ctx.to_json();
        assert_eq!(
            KeyContext::parse_json(json.as_bytes()).expect("to_json must parse"),
            ctx
        );
    }
}

/// Canonical key-context bytes: only the canonical encoding parses.
pub fn context_canonical(data: &[u8]) {
    if let Ok(ctx) = KeyContext::from_canonical_bytes(data) {
        assert_eq!(ctx.canonical_bytes(), data);
        context_json(ctx.to_json().as_bytes());
    }
}

/// Envelope bytes: an envelope that parses re-serialises to exactly the input, and opening it
/// with a data key of its own suite's derivation (every suite: key commitment, then the AEAD)
/// fails cleanly or gives a plaintext of the stated length. Parsing for an expected context
/// (how `open` parses) gives exactly what `parse` gives, whether the context is the envelope's
/// own (then shared, not decoded) or another.
pub fn envelope(data: &[u8]) {
    let parsed = Envelope::parse(data);
    let other = KeyContext::from_pairs([("organization_id", "org_1")]).expect("a valid context");
    assert_eq!(Envelope::parse_expecting(data, &other), parsed);
    if let Ok(env) = parsed {
        assert_eq!(
            Envelope::parse_expecting(data, env.context()).as_ref(),
            Ok(&env)
        );
        let key = crate::DataKey::from_unwrapped(zeroize::Zeroizing::new([7u8; 32]));
        if let Ok(pt) = crate::envelope::open_with(crate::Backend::DEFAULT, &key, &env, b"") {
            assert_eq!(pt.len(), env.plaintext_len());
        }
        assert_eq!(env.to_bytes(), data);
        let same = env
            .with_wrapped_keys(env.wrapped_keys().to_vec())
            .expect("the parsed keys are valid");
        assert_eq!(same, data);
        assert_eq!(
            KeyContext::from_canonical_bytes(env.context().canonical_bytes()).as_ref(),
            Ok(env.context())
        );
    }
}

/// Envelope text: only canonical base64 decodes, and it re-encodes to the input.
pub fn envelope_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = Envelope::decode_text(text) {
        assert_eq!(encode_text(&bytes), text);
        envelope(&bytes);
    }
}

/// The managed key-ring file: a file that parses re-encodes to a file that parses to the same
/// ring.
pub fn keyring_file(data: &[u8]) {
    if let Ok(ring) = managed::RingState::decode(data, None) {
        let encoded = ring.encode();
        let again = managed::RingState::decode(&encoded, Some(ring.name()))
            .expect("re-encoded ring must parse");
        assert_eq!(again.name(), ring.name());
        assert_eq!(again.generation(), ring.generation());
        assert_eq!(*again.encode(), *encoded);
    }
}

/// The master key file of `--seal file:…`, and sealed root keys as a database row holds them:
/// a file that parses has the one strict form and the same fingerprint when parsed again;
/// bytes that were not sealed by the key never unseal (and never panic).
pub fn master_key_file(data: &[u8]) {
    use managed::{MasterKeySeal, RootSeal, SealedRoot};
    if let Ok(seal) = MasterKeySeal::parse(data) {
        assert!(data.len() == 64 || data.len() == 65, "one line, one key");
        let again = MasterKeySeal::parse(data).expect("parsed once");
        assert_eq!(again.describe(), seal.describe());
    }
    let fixed = b"vault-master-key-v1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
    let seal = MasterKeySeal::parse(fixed).expect("a valid key");
    let sealed = SealedRoot {
        sealed_by: seal.describe(),
        bytes: data.to_vec(),
    };
    let unsealed = std::pin::pin!(seal.unseal("root", 1, &sealed))
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    assert!(
        matches!(unsealed, std::task::Poll::Ready(Err(_))),
        "bytes the key did not seal never unseal"
    );
}

/// The WorkOS SDK blob (binary), its layout told apart: a blob that parses re-serialises to
/// exactly the input, in the layout it was told to be, and reads the same in that layout when
/// named.
pub fn workos_blob(data: &[u8]) {
    if let Ok(blob) = crate::workos::LocalBlob::parse(data) {
        assert_eq!(blob.to_bytes(), data);
        let named = crate::workos::LocalBlob::parse_as(data, blob.layout()).expect("parsed once");
        assert_eq!(named, blob);
    }
}

/// The WorkOS SDK blob in each named layout: the first byte picks the layout, the rest is the
/// blob; what parses re-serialises to exactly the input.
pub fn workos_blob_layouts(data: &[u8]) {
    use crate::workos::{Layout, LocalBlob};
    let Some((&pick, blob)) = data.split_first() else {
        return;
    };
    let layout = match pick % 3 {
        0 => Layout::IvFirst,
        1 => Layout::KeysFirst,
        _ => Layout::LongIv,
    };
    if let Ok(parsed) = LocalBlob::parse_as(blob, layout) {
        assert_eq!(parsed.layout(), layout);
        assert_eq!(parsed.to_bytes(), blob);
    }
}

/// The WorkOS SDK blob text form: what base64-decodes is then held to [`workos_blob`].
pub fn workos_blob_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = crate::workos::LocalBlob::decode_text(text) {
        workos_blob(&bytes);
    }
}
