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

/// Streamed envelopes (suite 4). The input is read two ways:
///
/// - as a stream: a head that reads is exactly the input's first bytes and parses alone; the
///   segments after it, opened under a fixed data key, give the same answer (the same plaintext,
///   or a refusal) through the in-order reader, the seekable reader and the whole open;
/// - as a recipe: its first byte picks mutations (truncation, reordering, duplication,
///   extension, a flipped bit) applied to the segments of a valid stream of the rest; whatever
///   changes the segments is refused by every reader, and the unchanged stream opens.
pub fn stream(data: &[u8]) {
    use crate::envelope::stream::StreamHead;
    let mut input = data;
    if let Ok(head) = StreamHead::read_from(&mut input) {
        assert_eq!(Some(head.as_bytes()), data.get(..head.len()));
        assert!(Envelope::parse_head(head.as_bytes()).is_ok());
        let answers = stream_fixture::every_open(data);
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "the readers disagree"
        );
    }
    let Some((&recipe, plaintext)) = data.split_first() else {
        return;
    };
    let plaintext = plaintext
        .get(..plaintext.len().min(4096))
        .unwrap_or_default();
    let sealed = stream_fixture::sealed(plaintext);
    let mutated = stream_fixture::mutate(&sealed, recipe, plaintext);
    let answers = stream_fixture::every_open(&mutated);
    if mutated == sealed {
        assert!(answers.iter().all(|a| a.as_deref() == Some(plaintext)));
    } else {
        assert!(
            answers.iter().all(Option::is_none),
            "a changed stream opened"
        );
    }
}

/// A stream under a fixed data key, and what opens it, for [`stream`].
mod stream_fixture {
    use std::io::{Cursor, Read as _, Write as _};

    use crate::envelope::commit;
    use crate::envelope::stream::{self, StreamHead};
    use crate::envelope::suite::Suite;
    use crate::envelope::{Aad, Envelope, MessageRandom};
    use crate::provider::{KeyRef, WrappedKey};
    use crate::{DataKey, KeyContext};

    const SIZE: u32 = stream::MIN_SEGMENT_SIZE;
    const SEALED: usize = SIZE as usize + 16;

    fn data_key() -> DataKey {
        DataKey::from_unwrapped(zeroize::Zeroizing::new([9; 32]))
    }

    pub(super) fn sealed(plaintext: &[u8]) -> Vec<u8> {
        let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).expect("valid");
        let wrapped = WrappedKey::new(KeyRef::new("fuzz", "k", "").expect("valid"), vec![1; 8])
            .expect("valid");
        let random = MessageRandom {
            message_id: [3; 32],
            nonce: [4; 12],
        };
        let sealer = stream::begin(&data_key(), &wrapped, &ctx, Aad::NONE, SIZE, &random)
            .expect("a valid size");
        let mut w = sealer.writer(Vec::new());
        w.write_all(plaintext).expect("a Vec takes it");
        w.finish().expect("a Vec takes it")
    }

    /// The segments of `sealed` changed as `recipe` says: two bits pick the change, the rest
    /// where.
    pub(super) fn mutate(sealed: &[u8], recipe: u8, noise: &[u8]) -> Vec<u8> {
        let head = StreamHead::read_from(&mut &sealed[..])
            .expect("sealed here")
            .len();
        let (head_bytes, body) = sealed.split_at(head);
        let mut segments: Vec<Vec<u8>> = body.chunks(SEALED).map(<[u8]>::to_vec).collect();
        let n = segments.len();
        let at = usize::from(recipe >> 3);
        match recipe & 7 {
            0 => {
                let keep = body.len().saturating_sub(1 + at * 7 % body.len().max(1));
                segments = body[..keep].chunks(SEALED).map(<[u8]>::to_vec).collect();
            }
            1 if n > 1 => segments.swap(at % n, (at / n + 1 + at % n) % n),
            2 => {
                let copy = segments[at % n].clone();
                segments.insert((at / 2) % (n + 1), copy);
            }
            3 => segments.push(noise.get(..at % 40).unwrap_or_default().to_vec()),
            4 => {
                let seg = &mut segments[at % n];
                let i = at * 31 % seg.len();
                seg[i] ^= 1 << (at % 8);
            }
            5 if n > 1 => {
                segments.remove(at % n);
            }
            _ => {}
        }
        let mut out = head_bytes.to_vec();
        out.extend(segments.concat());
        out
    }

    /// The plaintext through the in-order reader, the seekable reader and the whole open, each
    /// `None` if refused.
    pub(super) fn every_open(envelope: &[u8]) -> [Option<Vec<u8>>; 3] {
        let opener = || {
            let head = StreamHead::read_from(&mut &envelope[..]).ok()?;
            let env = head.envelope();
            let keys = Suite::Segmented.derive(&data_key(), env.message_id());
            if !commit::matches(env.commitment(), &keys.commitment) {
                return None;
            }
            let key_ref = env.wrapped_keys().first()?.key_ref().clone();
            Some((
                stream::opener(&env, &keys, key_ref, Aad::NONE).ok()?,
                head.len(),
            ))
        };
        let in_order = opener().and_then(|(o, len)| {
            let mut out = Vec::new();
            o.reader(envelope.get(len..)?).read_to_end(&mut out).ok()?;
            Some(out)
        });
        let seekable = opener().and_then(|(o, _)| {
            let mut out = Vec::new();
            o.seekable(Cursor::new(envelope))
                .ok()?
                .read_to_end(&mut out)
                .ok()?;
            Some(out)
        });
        let whole = Envelope::parse(envelope).ok().and_then(|env| {
            let keys = Suite::Segmented.derive(&data_key(), env.message_id());
            crate::envelope::open_with(crate::Backend::DEFAULT, &data_key(), &env, b"")
                .ok()
                .filter(|_| commit::matches(env.commitment(), &keys.commitment))
        });
        [in_order, seekable, whole]
    }
}
