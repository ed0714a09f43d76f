//! Streamed envelopes (suite 4) through the public API: every reader and writer round-trips,
//! and every way of cutting, reordering, extending or splicing a stream is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.
#![allow(clippy::cast_possible_truncation)] // Test data: byte patterns, 64-bit lengths.

mod common;

use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use common::{block_on, ctx};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vault_crypto::stream::{self, MIN_SEGMENT_SIZE, StreamHead};
use vault_crypto::{
    Aad, Envelope, EnvelopeError, Error, KeyContext, ManagedKeyProvider, Rewrapped, open,
    open_in_place, rewrap,
};

const SIZE: usize = MIN_SEGMENT_SIZE as usize;
const SEALED: usize = SIZE + 16;

fn keys() -> ManagedKeyProvider {
    ManagedKeyProvider::in_memory("root").unwrap()
}

fn org() -> KeyContext {
    ctx(&[("organization_id", "org_1")])
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// `plaintext` sealed in segments of `SIZE`, written `chunk` bytes at a time.
fn seal(keys: &ManagedKeyProvider, plaintext: &[u8], aad: &[u8], chunk: usize) -> Vec<u8> {
    let sealer = block_on(stream::seal(keys, &org(), Aad::new(aad), MIN_SEGMENT_SIZE)).unwrap();
    let mut w = sealer.writer(Vec::new());
    for part in plaintext.chunks(chunk.max(1)) {
        w.write_all(part).unwrap();
    }
    w.finish().unwrap()
}

/// Opens `envelope` in order, reading `chunk` bytes at a time.
fn open_stream(
    keys: &ManagedKeyProvider,
    envelope: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, std::io::Error> {
    let mut input = envelope;
    let head = StreamHead::read_from(&mut input)?;
    let opener = block_on(head.open(keys, &org(), Aad::new(aad))).map_err(std::io::Error::other)?;
    let mut out = Vec::new();
    opener.reader(input).read_to_end(&mut out)?;
    Ok(out)
}

fn open_seekable(keys: &ManagedKeyProvider, envelope: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let head = StreamHead::read_from(&mut &envelope[..])?;
    let opener = block_on(head.open(keys, &org(), Aad::NONE)).map_err(std::io::Error::other)?;
    let mut out = Vec::new();
    opener
        .seekable(Cursor::new(envelope))?
        .read_to_end(&mut out)?;
    Ok(out)
}

/// Every way of reading a stream whole: in order, random access, and whole in memory.
fn every_open(keys: &ManagedKeyProvider, envelope: &[u8]) -> [Result<Vec<u8>, String>; 3] {
    [
        open_stream(keys, envelope, b"").map_err(|e| e.to_string()),
        open_seekable(keys, envelope).map_err(|e| e.to_string()),
        block_on(open(keys, envelope, &org(), Aad::NONE))
            .map(|o| o.into_plaintext())
            .map_err(|e| e.to_string()),
    ]
}

fn refused_everywhere(keys: &ManagedKeyProvider, envelope: &[u8]) -> bool {
    every_open(keys, envelope).iter().all(Result::is_err)
}

fn head_len(envelope: &[u8]) -> usize {
    StreamHead::read_from(&mut &envelope[..]).unwrap().len()
}

#[test]
fn every_length_round_trips_through_every_reader() {
    let keys = keys();
    for len in [0, 1, SIZE - 1, SIZE, SIZE + 1, 2 * SIZE, 3 * SIZE + 17] {
        for chunk in [1, 100, SIZE, 10_000] {
            let plaintext = data(len);
            let env = seal(&keys, &plaintext, b"", chunk);
            let segments = len.div_ceil(SIZE).max(1);
            assert_eq!(env.len(), head_len(&env) + len + 16 * segments, "len {len}");
            for opened in every_open(&keys, &env) {
                assert_eq!(opened.unwrap(), plaintext, "len {len} chunk {chunk}");
            }
            let in_place = block_on(open_in_place(&keys, env.clone(), &org(), Aad::NONE));
            assert_eq!(in_place.unwrap().into_plaintext(), plaintext);
            // Read straight into the segments from a reader that hands over `chunk` at a time.
            let sealer =
                block_on(stream::seal(&keys, &org(), Aad::NONE, MIN_SEGMENT_SIZE)).unwrap();
            let mut w = sealer.writer(Vec::new());
            let mut source = Trickle(&plaintext, chunk);
            assert_eq!(w.write_from(&mut source).unwrap(), len as u64);
            let env = w.finish().unwrap();
            assert_eq!(
                open_stream(&keys, &env, b"").unwrap(),
                plaintext,
                "write_from"
            );
        }
    }
}

/// A reader that hands over at most `.1` bytes per read.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn the_async_writer_and_reader_round_trip() {
    let keys = keys();
    let plaintext = data(5 * SIZE + 3);
    let env = block_on(async {
        let sealer = stream::seal(&keys, &org(), Aad::new(b"id"), MIN_SEGMENT_SIZE)
            .await
            .unwrap();
        let mut w = sealer.async_writer(Vec::new());
        for part in plaintext.chunks(333) {
            w.write_all(part).await.unwrap();
        }
        w.shutdown().await.unwrap();
        w.into_inner()
    });
    assert_eq!(open_stream(&keys, &env, b"id").unwrap(), plaintext);
    let back = block_on(async {
        let mut input = env.as_slice();
        let head = StreamHead::read_from_async(&mut input).await.unwrap();
        let opener = head.open(&keys, &org(), Aad::new(b"id")).await.unwrap();
        let mut out = Vec::new();
        opener
            .async_reader(input)
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    });
    assert_eq!(back, plaintext);
}

#[test]
fn truncation_anywhere_is_refused() {
    let keys = keys();
    let env = seal(&keys, &data(3 * SIZE + 10), b"", 4096);
    let head = head_len(&env);
    // Inside the head: a typed, structural error.
    for cut in [0, 5, head / 2, head - 1] {
        let err = StreamHead::read_from(&mut &env[..cut]).unwrap_err();
        assert!(matches!(
            stream::error_of(&err),
            Some(Error::Envelope(EnvelopeError::Truncated))
        ));
    }
    // After it: at every byte, segment boundaries included, nothing opens to the end.
    for cut in head..env.len() {
        assert!(refused_everywhere(&keys, &env[..cut]), "cut at {cut}");
    }
    for boundary in 1..=3 {
        assert!(refused_everywhere(&keys, &env[..head + boundary * SEALED]));
    }
}

#[test]
fn reordered_duplicated_or_extended_segments_are_refused() {
    let keys = keys();
    let env = seal(&keys, &data(3 * SIZE + 10), b"", 4096);
    let head = head_len(&env);
    let seg = |i: usize| env[head + i * SEALED..(head + (i + 1) * SEALED).min(env.len())].to_vec();
    let with = |order: &[usize]| {
        let mut out = env[..head].to_vec();
        for &i in order {
            out.extend(seg(i));
        }
        out
    };
    assert!(
        every_open(&keys, &with(&[0, 1, 2, 3]))
            .iter()
            .all(Result::is_ok)
    );
    assert!(refused_everywhere(&keys, &with(&[1, 0, 2, 3])), "swapped");
    assert!(refused_everywhere(&keys, &with(&[0, 2, 1, 3])), "swapped");
    assert!(
        refused_everywhere(&keys, &with(&[0, 1, 2, 2, 3])),
        "duplicated"
    );
    assert!(
        refused_everywhere(&keys, &with(&[0, 1, 2, 3, 3])),
        "last twice"
    );
    assert!(refused_everywhere(&keys, &with(&[0, 1, 3])), "one dropped");
    // Another message's segment, in its own place, from a stream of the same key.
    let other = seal(&keys, &data(3 * SIZE + 10), b"", 4096);
    let mut spliced = env.clone();
    spliced[head + SEALED..head + 2 * SEALED]
        .copy_from_slice(&other[head + SEALED..head + 2 * SEALED]);
    assert!(refused_everywhere(&keys, &spliced), "spliced");
    // Anything after the last segment, even one byte.
    for extra in [vec![0u8], seg(0), vec![0; 16]] {
        let mut longer = env.clone();
        longer.extend(extra);
        assert!(refused_everywhere(&keys, &longer), "extended");
    }
}

#[test]
fn the_context_and_associated_data_are_checked() {
    let keys = keys();
    let env = seal(&keys, &data(700), b"row-1", 100);
    let head = StreamHead::read_from(&mut &env[..]).unwrap();
    let other = ctx(&[("organization_id", "org_2")]);
    assert!(matches!(
        block_on(head.open(&keys, &other, Aad::new(b"row-1"))),
        Err(Error::ContextMismatch)
    ));
    assert!(open_stream(&keys, &env, b"row-2").is_err());
    assert_eq!(open_stream(&keys, &env, b"row-1").unwrap(), data(700));
    // A flipped byte in the header fails every segment.
    let mut flipped = env.clone();
    flipped[8] ^= 1;
    assert!(open_stream(&keys, &flipped, b"row-1").is_err());
}

#[test]
fn ranged_reads_return_exactly_the_bytes_asked_for() {
    let keys = keys();
    let plaintext = data(10 * SIZE + 77);
    let env = seal(&keys, &plaintext, b"", 4096);
    let head = StreamHead::read_from(&mut &env[..]).unwrap();
    let mut r = block_on(head.open(&keys, &org(), Aad::NONE))
        .unwrap()
        .seekable(Cursor::new(&env))
        .unwrap();
    assert_eq!(r.plaintext_len(), plaintext.len() as u64);
    for (a, b) in [
        (0, 1),
        (0, SIZE),
        (SIZE - 1, SIZE + 1),
        (700, 2600),
        (0, plaintext.len()),
        (plaintext.len() - 5, plaintext.len()),
    ] {
        r.seek(SeekFrom::Start(a as u64)).unwrap();
        let mut got = vec![0; b - a];
        r.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("[{a}, {b}): {e}"));
        assert_eq!(got, plaintext[a..b], "[{a}, {b})");
    }
    r.seek(SeekFrom::End(-3)).unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, plaintext[plaintext.len() - 3..]);

    // A tampered segment: a range over it fails, a range elsewhere still reads (and is
    // authentic: its own segments verified).
    let mut tampered = env.clone();
    let at = head.len() + 5 * SEALED + 3;
    tampered[at] ^= 0x80;
    let mut r = block_on(head.open(&keys, &org(), Aad::NONE))
        .unwrap()
        .seekable(Cursor::new(&tampered))
        .unwrap();
    let mut got = vec![0; 100];
    r.seek(SeekFrom::Start(5 * SIZE as u64 + 10)).unwrap();
    let err = r.read_exact(&mut got).unwrap_err();
    assert!(matches!(
        stream::error_of(&err),
        Some(Error::DecryptionFailed)
    ));
    r.seek(SeekFrom::Start(SIZE as u64)).unwrap();
    r.read_exact(&mut got).unwrap();
    assert_eq!(got, plaintext[SIZE..SIZE + 100]);
}

// A gibibyte of AES-GCM: with ring's assembly (the default) a second; with the pure-Rust
// backend alone in a debug build, minutes, so it runs only where ring is compiled in.
#[cfg(feature = "ring")]
mod gibibyte {
    use super::*;

    /// A counting `Read + Seek`: what a ranged read costs in storage reads.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn a_ranged_mebibyte_from_the_middle_of_a_gibibyte_reads_under_two_mebibytes() {
        const GIB: usize = 1 << 30;
        const MIB: u64 = 1 << 20;
        let keys = keys();
        let sealer = block_on(stream::seal(
            &keys,
            &org(),
            Aad::NONE,
            stream::DEFAULT_SEGMENT_SIZE,
        ))
        .unwrap();
        let mut w = sealer.writer(Vec::with_capacity(GIB + GIB / 1024 + 4096));
        let block: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
        for _ in 0..1024 {
            w.write_all(&block).unwrap();
        }
        let env = w.finish().unwrap();
        let mut counting = Counting {
            inner: Cursor::new(&env),
            read: 0,
        };
        let head = StreamHead::read_from(&mut counting).unwrap();
        let opener = block_on(head.open(&keys, &org(), Aad::NONE)).unwrap();
        let mut r = opener.seekable(counting).unwrap();
        let start = 512 * MIB + 12_345;
        r.seek(SeekFrom::Start(start)).unwrap();
        let mut got = vec![0; MIB as usize];
        r.read_exact(&mut got).unwrap();
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, &b)| b == ((start + i as u64) % MIB % 251) as u8)
        );
        let read = r.into_inner().read;
        assert!(read <= 2 * MIB, "{read} bytes read from storage");
    }
}

#[test]
fn a_rewrap_replaces_the_head_and_keeps_every_segment() {
    let keys = keys();
    let plaintext = data(4 * SIZE + 9);
    let env = seal(&keys, &plaintext, b"", 1000);
    block_on(keys.rotate()).unwrap();
    let head = StreamHead::read_from(&mut &env[..]).unwrap();

    // The head alone, as a store that keeps it apart rewrites it.
    let Rewrapped::Moved(new_head) = block_on(head.rewrap(&keys, &org())).unwrap() else {
        panic!("a head under v1 moves after a rotation");
    };
    assert_eq!(new_head.key_ref().to_string(), "managed://root#v2");
    let new_head = StreamHead::parse(new_head.to_vec()).unwrap();
    let header_len = head.len() - 1 - 60 - 6 - "managed".len() - "root".len() - "v1".len();
    assert_eq!(
        new_head.as_bytes()[..header_len],
        head.as_bytes()[..header_len]
    );
    let mut moved = new_head.as_bytes().to_vec();
    moved.extend_from_slice(&env[head.len()..]);
    assert_eq!(open_stream(&keys, &moved, b"").unwrap(), plaintext);

    // The whole envelope through `rewrap`: the bytes after the head are unchanged.
    let Rewrapped::Moved(whole) = block_on(rewrap(&keys, &env, &org())).unwrap() else {
        panic!("moves");
    };
    let new_len = head_len(&whole);
    assert_eq!(whole[new_len..], env[head.len()..]);
    assert_eq!(open_stream(&keys, &whole, b"").unwrap(), plaintext);
    assert!(matches!(
        block_on(rewrap(&keys, &whole, &org())).unwrap(),
        Rewrapped::AlreadyCurrent
    ));
}

#[test]
fn whole_envelopes_are_not_streams_and_keep_opening() {
    let keys = keys();
    let sealed = block_on(vault_crypto::seal(&keys, &org(), b"old", Aad::NONE)).unwrap();
    let err = StreamHead::read_from(&mut &sealed[..]).unwrap_err();
    assert!(matches!(
        stream::error_of(&err),
        Some(Error::Envelope(EnvelopeError::Malformed { .. }))
    ));
    assert_eq!(Envelope::parse(&sealed).unwrap().segment_size(), None);
    let opened = block_on(open(&keys, &sealed, &org(), Aad::NONE)).unwrap();
    assert_eq!(opened.plaintext(), b"old");
}

#[test]
fn segment_sizes_out_of_range_are_refused() {
    let keys = keys();
    for size in [0, MIN_SEGMENT_SIZE - 1, stream::MAX_SEGMENT_SIZE + 1] {
        assert!(matches!(
            block_on(stream::seal(&keys, &org(), Aad::NONE, size)),
            Err(Error::SegmentSize { .. })
        ));
    }
}

/// A stream sealed into separate segments (as a store keeps them): each `sealed_len` long.
fn sealed_apart(keys: &ManagedKeyProvider, plaintext: &[u8]) -> (StreamHead, Vec<Vec<u8>>) {
    let sealer = block_on(stream::seal(
        keys,
        &org(),
        Aad::new(b"row"),
        MIN_SEGMENT_SIZE,
    ))
    .unwrap();
    let head = StreamHead::parse(sealer.head().to_vec()).unwrap();
    let mut w = sealer.segments_writer(Vec::new());
    w.write_all(plaintext).unwrap();
    let payload = w.finish().unwrap();
    (head, payload.chunks(SEALED).map(<[u8]>::to_vec).collect())
}

#[test]
fn segments_kept_apart_open_one_by_one_in_any_order() {
    let keys = keys();
    for len in [0, 1, SIZE - 1, SIZE, SIZE + 1, 3 * SIZE, 3 * SIZE + 5] {
        let plaintext = data(len);
        let (head, segments) = sealed_apart(&keys, &plaintext);
        let opener = block_on(head.open(&keys, &org(), Aad::new(b"row")))
            .unwrap()
            .segments(len as u64)
            .unwrap();
        assert_eq!(opener.count(), segments.len() as u64, "{len}");
        assert_eq!(opener.plaintext_len(), len as u64);
        // The last first, then the rest backwards: each opens in its own place.
        let mut out = vec![Vec::new(); segments.len()];
        for i in (0..segments.len()).rev() {
            assert_eq!(opener.sealed_len(i as u64), Some(segments[i].len() as u64));
            let mut buf = segments[i].clone();
            opener.open(i as u64, &mut buf).unwrap();
            out[i] = buf;
        }
        assert_eq!(out.concat(), plaintext, "{len}");
        let (i, start) = opener.segment_of(len.saturating_sub(1) as u64);
        assert_eq!(
            (i, start),
            (
                (segments.len() - 1) as u64,
                (segments.len() - 1) as u64 * SIZE as u64
            )
        );
        assert_eq!(opener.sealed_len(segments.len() as u64), None);
    }
}

#[test]
fn segments_kept_apart_refuse_another_place_length_or_stream() {
    let keys = keys();
    let plaintext = data(3 * SIZE + 5);
    let (head, segments) = sealed_apart(&keys, &plaintext);
    let (_, other) = sealed_apart(&keys, &plaintext);
    let opener = |len: u64| {
        block_on(head.open(&keys, &org(), Aad::new(b"row")))
            .unwrap()
            .segments(len)
            .unwrap()
    };
    let right = opener(plaintext.len() as u64);
    // Another place, another stream: refused, and nothing released.
    let mut buf = segments[1].clone();
    assert!(matches!(
        right.open(2, &mut buf),
        Err(Error::DecryptionFailed)
    ));
    assert!(buf.is_empty());
    let mut buf = other[1].clone();
    assert!(matches!(
        right.open(1, &mut buf),
        Err(Error::DecryptionFailed)
    ));
    let mut buf = segments[0].clone();
    assert!(matches!(
        right.open(9, &mut buf),
        Err(Error::DecryptionFailed)
    ));
    // A length cut at a segment boundary (the stored length lied): the new "last" segment was
    // not sealed as the last.
    let cut = opener(3 * SIZE as u64);
    let mut buf = segments[2].clone();
    assert!(matches!(
        cut.open(2, &mut buf),
        Err(Error::DecryptionFailed)
    ));
    // A length inside the last segment: it measures otherwise and does not open.
    let short = opener(3 * SIZE as u64 + 4);
    let mut buf = segments[3].clone();
    assert!(matches!(
        short.open(3, &mut buf),
        Err(Error::DecryptionFailed)
    ));
    // Another associated data: nothing opens.
    let moved = block_on(head.open(&keys, &org(), Aad::new(b"elsewhere")))
        .unwrap()
        .segments(plaintext.len() as u64)
        .unwrap();
    let mut buf = segments[0].clone();
    assert!(matches!(
        moved.open(0, &mut buf),
        Err(Error::DecryptionFailed)
    ));
}
