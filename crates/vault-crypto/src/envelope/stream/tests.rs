//! What only the inside can build: two streams under one data key, and segments sealed with
//! the wrong last-segment flag.
#![allow(clippy::cast_possible_truncation)] // Test data: byte patterns and small indexes.

use std::io::Read;

use zeroize::Zeroizing;

use super::*;
use crate::envelope::commit;

const SIZE: u32 = MIN_SEGMENT_SIZE;

fn context() -> KeyContext {
    KeyContext::from_pairs([("organization_id", "org_1")]).unwrap()
}

fn data_key() -> DataKey {
    DataKey::from_unwrapped(Zeroizing::new([42; 32]))
}

fn wrapped() -> WrappedKey {
    WrappedKey::new(KeyRef::new("test", "k", "v1").unwrap(), vec![1; 60]).unwrap()
}

/// A sealer under the fixed data key.
fn sealer() -> StreamSealer {
    let random = MessageRandom::generate().unwrap();
    begin(
        &data_key(),
        &wrapped(),
        &context(),
        Aad::NONE,
        SIZE,
        &random,
    )
    .unwrap()
}

fn sealed(plaintext: &[u8]) -> Vec<u8> {
    let mut w = sealer().writer(Vec::new());
    io::Write::write_all(&mut w, plaintext).unwrap();
    w.finish().unwrap()
}

/// The opener of `envelope`'s head under the fixed data key, after the commitment check.
fn opener_of(envelope: &[u8]) -> (StreamOpener, usize) {
    let mut input = envelope;
    let head = StreamHead::read_from(&mut input).unwrap();
    let env = head.envelope();
    let keys = Suite::Segmented.derive(&data_key(), env.message_id());
    assert!(commit::matches(env.commitment(), &keys.commitment));
    let key_ref = env.wrapped_keys()[0].key_ref().clone();
    (opener(&env, &keys, key_ref, Aad::NONE).unwrap(), head.len())
}

/// Every way of reading `envelope` whole: in order, by random access, and in memory.
fn read_all(envelope: &[u8]) -> Vec<Result<Vec<u8>, String>> {
    let (o, head_len) = opener_of(envelope);
    let mut plain = Vec::new();
    let in_order = o
        .reader(&envelope[head_len..])
        .read_to_end(&mut plain)
        .map(|_| plain)
        .map_err(|e| e.to_string());
    let (o, _) = opener_of(envelope);
    let seekable = o
        .seekable(io::Cursor::new(envelope))
        .and_then(|mut r| {
            let mut plain = Vec::new();
            r.read_to_end(&mut plain).map(|_| plain)
        })
        .map_err(|e| e.to_string());
    let whole = Envelope::parse(envelope)
        .map_err(|e| e.to_string())
        .and_then(|env| {
            let keys = Suite::Segmented.derive(&data_key(), env.message_id());
            super::super::decrypt_payload(Backend::DEFAULT, &keys, &env, b"")
                .map_err(|e| e.to_string())
        });
    vec![in_order, seekable, whole]
}

fn all_refused(envelope: &[u8]) -> bool {
    read_all(envelope).iter().all(Result::is_err)
}

#[test]
fn each_way_of_reading_opens_what_was_sealed() {
    let plaintext: Vec<u8> = (0..SIZE * 3 + 5).map(|i| i as u8).collect();
    for r in read_all(&sealed(&plaintext)) {
        assert_eq!(r.unwrap(), plaintext);
    }
}

#[test]
fn a_segment_from_another_message_under_the_same_data_key_is_refused() {
    let len = SIZE as usize * 3;
    let (a, b) = (sealed(&vec![1; len]), sealed(&vec![2; len]));
    let (_, head_len) = opener_of(&a);
    let seg = SIZE as usize + 16;
    for i in 0..3 {
        let at = head_len + i * seg;
        let mut spliced = a.clone();
        spliced[at..at + seg].copy_from_slice(&b[at..at + seg]);
        assert!(all_refused(&spliced), "segment {i} of another message");
    }
}

/// Builds head || segments with the flags given, under a real sealer's key.
fn with_flags(flags: &[bool]) -> Vec<u8> {
    let s = sealer();
    let mut out = s.head.clone();
    for (i, &last) in flags.iter().enumerate() {
        let mut chunk = vec![i as u8; SIZE as usize];
        s.segments.seal(i as u32, last, &mut chunk).unwrap();
        out.extend_from_slice(&chunk);
    }
    out
}

#[test]
fn a_flipped_last_segment_flag_is_refused() {
    // The same bytes with the right flags open.
    assert!(
        read_all(&with_flags(&[false, false, true]))
            .iter()
            .all(Result::is_ok)
    );
    // The last segment sealed as not last: a stream cut at a boundary looks like this.
    assert!(all_refused(&with_flags(&[false, false, false])));
    // A middle segment sealed as last: a stream extended past its end looks like this.
    assert!(all_refused(&with_flags(&[false, true, true])));
    assert!(all_refused(&with_flags(&[true, false, true])));
}
