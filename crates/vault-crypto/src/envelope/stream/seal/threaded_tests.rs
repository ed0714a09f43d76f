//! The writers that seal on more than one thread against the one-thread path: the same key,
//! nonce prefix and head give the same bytes, byte for byte, whatever the way and the batches.
#![allow(clippy::cast_possible_truncation)] // Test data: byte patterns and small sizes.

use std::io::{self, Read, Write};

use zeroize::Zeroizing;

use super::{SealCore, SealWriter};
use crate::envelope::commit::MessageKeys;
use crate::envelope::segment::Segments;
use crate::envelope::stream::error_of;
use crate::error::Error;

/// Two writers with the same key, nonce prefix and head: their outputs must be equal byte
/// for byte whichever way they were fed.
fn writer(size: u32) -> SealWriter<Vec<u8>> {
    writer_to(size, Vec::new())
}

fn writer_to<W: Write>(size: u32, out: W) -> SealWriter<W> {
    let keys = MessageKeys {
        content_key: Zeroizing::new([7; 32]),
        commitment: [0; 32],
    };
    let segments = Segments::new(crate::Backend::DEFAULT, &keys, [3; 7], b"h", b"", size).unwrap();
    SealWriter::new(SealCore::new(segments, b"head".to_vec()), out)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Hands over at most `.1` bytes a read.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.1).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// One thread, written whole: what every other way must equal.
fn expected(size: u32, plaintext: &[u8]) -> Vec<u8> {
    let mut w = writer(size);
    w.write_all(plaintext).unwrap();
    w.finish().unwrap()
}

#[test]
fn the_same_bytes_as_one_thread_across_every_batch_boundary() {
    for len in lengths() {
        let plaintext = data(len);
        let want = expected(S as u32, &plaintext);
        for chunk in [usize::MAX, S, 1000, 3 * S + 1] {
            let mut w = writer(S as u32);
            let n = w
                .write_from_pipelined(&mut Trickle(&plaintext, chunk))
                .unwrap();
            assert_eq!(n, len as u64);
            assert_eq!(w.plaintext_len(), len as u64);
            assert_eq!(w.finish().unwrap(), want, "len {len} chunk {chunk}");
        }
        // Begun and ended through `Write`, a part in the middle from a reader: the segment
        // under way is topped up first, and the final one read stays open for more.
        for head in [0, 1, S - 1, S, S + 3] {
            let (a, rest) = plaintext.split_at(head.min(len));
            let (b, c) = rest.split_at(rest.len().saturating_sub(S / 2 + 1));
            let mut w = writer(S as u32);
            w.write_all(a).unwrap();
            assert_eq!(
                w.write_from_pipelined(&mut Trickle(b, 5000)).unwrap(),
                b.len() as u64
            );
            w.write_all(c).unwrap();
            assert_eq!(w.finish().unwrap(), want, "len {len}, {head} written first");
        }
    }
}

#[test]
fn a_segment_larger_than_a_batch_goes_one_at_a_time() {
    let size = 2 << 20;
    let plaintext = data(3 * size + 9);
    let mut w = writer(size as u32);
    w.write_from_pipelined(&mut &plaintext[..]).unwrap();
    assert_eq!(w.finish().unwrap(), expected(size as u32, &plaintext));
}

/// A reader that fails after `.1` bytes.
struct Failing<'a>(&'a [u8], usize);

impl Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.1 == 0 {
            return Err(io::Error::other("disk gone"));
        }
        let n = buf.len().min(self.1).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        self.1 -= n;
        Ok(n)
    }
}

#[test]
fn after_a_failed_read_the_stream_is_never_finished() {
    let plaintext = data(3 << 20);
    for fail_at in [0, 10, S, 1 << 20, (2 << 20) + 5] {
        let mut w = writer(S as u32);
        let err = w
            .write_from_pipelined(&mut Failing(&plaintext, fail_at))
            .unwrap_err();
        assert_eq!(err.to_string(), "disk gone");
        assert!(w.write(b"more").is_err(), "fail at {fail_at}");
        assert!(w.write_from(&mut &b"more"[..]).is_err());
        assert!(w.finish().is_err(), "fail at {fail_at}");
    }
}

const S: usize = 4096;

/// Lengths around every segment and batch boundary, at segment size `S`.
fn lengths() -> Vec<usize> {
    let batch = super::batch::BATCH_BYTES / S;
    vec![
        0,
        1,
        S - 1,
        S,
        S + 1,
        batch * S - 1,
        batch * S,
        batch * S + 1,
        (batch + 1) * S,
        2 * batch * S,
        3 * batch * S + S + 5,
        9 * batch * S + 7,
    ]
}

#[test]
fn from_a_source_at_any_offset_the_same_bytes_as_one_thread() {
    for len in lengths() {
        let plaintext = data(len);
        let want = expected(S as u32, &plaintext);
        // The range sits inside a larger source: what is around it is never sealed.
        let mut source = vec![0xEE; 3];
        source.extend_from_slice(&plaintext);
        source.extend_from_slice(&[0xEE; 5]);
        let range = 3..3 + len as u64;
        for threads in [1, 2, 3, 5] {
            let mut w = writer(S as u32);
            assert_eq!(
                w.write_from_at_on(&source[..], range.clone(), threads)
                    .unwrap(),
                len as u64
            );
            assert_eq!(w.plaintext_len(), len as u64);
            assert_eq!(w.finish().unwrap(), want, "len {len}, {threads} threads");
        }
        // Begun through `Write`, the middle at an offset, the end through `Write` again.
        for head in [0, 1, S - 1, S, S + 3] {
            let a = head.min(len);
            let c = (len - a).min(S / 2 + 1);
            let b = len - a - c;
            let mut w = writer(S as u32);
            w.write_all(&plaintext[..a]).unwrap();
            let n = w
                .write_from_at_on(&plaintext[..], a as u64..(a + b) as u64, 2)
                .unwrap();
            assert_eq!(n, b as u64);
            w.write_all(&plaintext[a + b..]).unwrap();
            assert_eq!(w.finish().unwrap(), want, "len {len}, {head} written first");
        }
    }
}

#[test]
fn from_a_file_the_same_bytes_as_one_thread() {
    let plaintext = data(5 * (1 << 20) + 11);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&plaintext).unwrap();
    let mut w = writer(65536);
    let n = w.write_from_at(&file, 0..plaintext.len() as u64).unwrap();
    assert_eq!(n, plaintext.len() as u64);
    assert_eq!(w.finish().unwrap(), expected(65536, &plaintext));
}

#[test]
fn a_source_shorter_than_its_range_breaks_the_stream() {
    let plaintext = data(3 << 20);
    for end in [S as u64 / 2, S as u64 * 3, 1 << 21, 3 << 20] {
        let mut w = writer(S as u32);
        // The source holds less than the range names: it was cut while read.
        let err = w
            .write_from_at_on(&plaintext[..end as usize - 1], 0..end, 2)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "end {end}");
        assert!(w.write(b"more").is_err());
        assert!(w.finish().is_err(), "end {end}");
    }
}

/// Counts its reads.
struct Counting<'a>(&'a [u8], std::sync::atomic::AtomicUsize);

impl super::ReadAt for Counting<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.read_at(buf, offset)
    }
}

/// The counter's last value may only be the last segment, either way, as on one thread; from a
/// source at an offset, a range that would need more is refused before anything is read.
#[test]
fn the_segment_counter_never_wraps() {
    const SMALL: usize = 256;
    for (segments, fits) in [(4, true), (5, false), (40_000, false)] {
        let plaintext = data(segments * SMALL);
        for at_offset in [false, true] {
            let mut w = writer(SMALL as u32);
            w.core.index = u32::MAX - 3;
            let source = Counting(&plaintext, 0.into());
            let got = if at_offset {
                w.write_from_at_on(&source, 0..plaintext.len() as u64, 2)
            } else {
                w.write_from_pipelined(&mut &plaintext[..])
            };
            if fits {
                assert_eq!(got.unwrap(), plaintext.len() as u64);
                let sealed = w.finish().unwrap();
                assert_eq!(sealed.len(), b"head".len() + segments * (SMALL + 16));
            } else {
                let err = got.unwrap_err();
                assert!(
                    matches!(error_of(&err), Some(Error::PlaintextTooLarge { .. })),
                    "{segments} segments: {err}"
                );
                if at_offset {
                    assert_eq!(source.1.into_inner(), 0, "nothing read");
                }
                assert!(w.finish().is_err());
            }
        }
    }
}

/// The CLI's way: a file sealed a slice at a time, each slice ending inside a segment.
#[test]
fn slices_one_after_another_the_same_bytes_as_one_thread() {
    let len = 5 * (super::batch::BATCH_BYTES) + 3 * S + 11;
    let plaintext = data(len);
    let want = expected(S as u32, &plaintext);
    for slice in [
        S / 3,
        S + 5,
        super::batch::BATCH_BYTES + 7,
        2 * super::batch::BATCH_BYTES - 1,
    ] {
        let mut w = writer(S as u32);
        let mut at = 0;
        while at < len {
            let end = len.min(at + slice);
            w.write_from_at_on(&plaintext[..], at as u64..end as u64, 2)
                .unwrap();
            at = end;
        }
        assert_eq!(w.finish().unwrap(), want, "slices of {slice}");
    }
}

/// Fails every write after `.1` bytes.
struct FullDisk(Vec<u8>, usize);

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.1.saturating_sub(self.0.len());
        if room == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = room.min(buf.len());
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_writer_breaks_the_stream_either_way() {
    let plaintext = data(4 << 20);
    for room in [2, 3 * S, 1 << 20, (2 << 20) + 9] {
        let mut w = writer_to(S as u32, FullDisk(Vec::new(), room));
        let err = w.write_from_pipelined(&mut &plaintext[..]).unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert!(w.finish().is_err(), "pipelined, room {room}");

        let mut w = writer_to(S as u32, FullDisk(Vec::new(), room));
        let err = w
            .write_from_at_on(&plaintext[..], 0..plaintext.len() as u64, 2)
            .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert!(w.finish().is_err(), "at an offset, room {room}");
    }
}

/// Panics reading its third batch.
struct Panicking<'a>(&'a [u8]);

impl super::ReadAt for Panicking<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        assert!(offset < 2 << 20, "the source broke");
        self.0.read_at(buf, offset)
    }
}

/// A thread that panics mid-batch neither hangs the others nor leaves a writer that finishes:
/// the panic reaches the caller, and the writer refuses everything after.
#[test]
fn a_panicking_source_surfaces_and_breaks_the_stream() {
    let plaintext = data(64 << 20);
    let mut w = writer(S as u32);
    let source = Panicking(&plaintext);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.write_from_at_on(&source, 0..plaintext.len() as u64, 2)
    }));
    assert!(caught.is_err(), "the panic reaches the caller");
    assert!(w.write(b"more").is_err());
    assert!(w.finish().is_err());
}

/// Claims more bytes than it was given room for.
struct Overreporting;

impl Read for Overreporting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(buf.len() + 1)
    }
}

impl super::ReadAt for Overreporting {
    fn read_at(&self, buf: &mut [u8], _: u64) -> io::Result<usize> {
        Ok(buf.len() + 1)
    }
}

#[test]
fn a_source_claiming_more_than_it_was_given_room_for_is_an_error() {
    let mut w = writer(S as u32);
    let err = w.write_from_pipelined(&mut Overreporting).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(w.finish().is_err());
    let mut w = writer(S as u32);
    let err = w
        .write_from_at_on(&Overreporting, 0..(3 << 20), 2)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(w.finish().is_err());
    let mut w = writer(S as u32);
    let err = w.write_from(&mut Overreporting).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}
