//! [`SealWriter::write_from_at`]: a source read at any offset, read and sealed on every core.
//!
//! Segments are independent (STREAM: each one's nonce is its index and the last flag), so a
//! source that can be read at any offset (a file, a buffer) is cut into batches that threads
//! read and seal at once, each its own, while the caller's thread writes them out in order. The
//! copy out of memory or the page cache, which a single thread cannot overlap with its own
//! AES-GCM, is spread over the cores with it.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::batch::{Batch, Shape};
use super::{SealCore, SealWriter, overread};
use crate::envelope::segment::Segments;
use crate::envelope::stream::io_error;
use crate::error::Error;

/// A source that can be read at any offset, by many threads at once: a byte slice, or a file
/// (where the platform reads at an offset without moving the cursor).
pub trait ReadAt: Sync {
    /// Reads bytes at `offset` into `buf`, returning how many; 0 only at the end.
    ///
    /// # Errors
    /// The source's.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let rest = usize::try_from(offset)
            .ok()
            .and_then(|at| self.get(at..))
            .unwrap_or_default();
        let n = buf.len().min(rest.len());
        if let (Some(to), Some(from)) = (buf.get_mut(..n), rest.get(..n)) {
            to.copy_from_slice(from);
        }
        Ok(n)
    }
}

#[cfg(unix)]
impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// Windows reads at an offset by moving the cursor there, which nothing here relies on.
#[cfg(windows)]
impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(self, buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
}

/// Fills `buf` from `offset`: the source ending first is an error (it changed while read).
fn read_exact_at(source: &(impl ReadAt + ?Sized), buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|rest| !rest.is_empty()) {
        match source.read_at(rest, offset.saturating_add(done as u64)) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the source ended before the range to seal: it changed while read",
                ));
            }
            Ok(n) if n > rest.len() => return Err(overread()),
            Ok(n) => done = done.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Threads at most: past a few, the copies are bound by memory, not by cores.
const MAX_THREADS: usize = 8;

/// The threads [`SealWriter::write_from_at`] reads and seals on: one a core, up to 8.
pub fn seal_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_THREADS)
}

/// The segments after the one being collected: `count` of them from index `first`, the
/// plaintext of the `i`th at `start + i * size`. All but the final one are sealed by the
/// threads; the final one is left in the writer.
struct Work<'a, S: ?Sized> {
    source: &'a S,
    start: u64,
    first: u32,
    count: usize,
    shape: Shape,
}

impl<S: ReadAt + ?Sized> Work<'_, S> {
    /// Batches of segments to seal: every segment but the final one.
    fn batches(&self) -> usize {
        self.count.saturating_sub(1).div_ceil(self.shape.capacity)
    }

    fn offset(&self, segment: usize) -> u64 {
        self.start
            .saturating_add((segment as u64).saturating_mul(self.shape.size as u64))
    }

    /// Reads and seals batch `b` into `batch`.
    fn seal(&self, segments: &Segments, b: usize, batch: &mut Batch) -> io::Result<()> {
        let from = b.saturating_mul(self.shape.capacity);
        let to = from
            .saturating_add(self.shape.capacity)
            .min(self.count.saturating_sub(1));
        batch.count = to.saturating_sub(from);
        batch.first = u32::try_from(from)
            .ok()
            .and_then(|from| self.first.checked_add(from))
            .ok_or_else(|| io_error(Error::EncryptionFailed))?;
        for k in 0..batch.count {
            let slot = self.shape.slot(batch, k);
            let plain = slot.get_mut(..self.shape.size).unwrap_or_default();
            read_exact_at(self.source, plain, self.offset(from.saturating_add(k)))?;
        }
        self.shape
            .seal(segments, batch, batch.count)
            .map_err(io_error)
    }
}

impl<W: Write> SealWriter<W> {
    /// Seals the bytes of `source` in `range`, read and sealed by threads on every core at once
    /// (up to 8) while this one writes the sealed segments out in order. The fastest way to seal
    /// a file or a resident buffer: the copy each byte needs is spread over the cores with
    /// AES-GCM, instead of alternating with it on one. Returns the bytes sealed; write more or
    /// call [`finish`](Self::finish) after. The final segment read stays unsealed in the writer,
    /// as with [`write_from`](Self::write_from).
    ///
    /// Memory: two batches a thread beside the writer's segment; a batch is 1 MiB of segments,
    /// or one segment where segments are larger.
    ///
    /// # Errors
    /// The source's or the inner writer's error (a source shorter than `range`, such as a file
    /// cut while read, is [`io::ErrorKind::UnexpectedEof`]), or an [`Error`] inside an
    /// `io::Error` ([`Error::PlaintextTooLarge`] past the segment counter, checked before
    /// anything is read). After an error the writer refuses everything, [`finish`](Self::finish)
    /// included: a stream missing data is never finished.
    pub fn write_from_at<S: ReadAt + ?Sized>(
        &mut self,
        source: &S,
        range: Range<u64>,
    ) -> io::Result<u64> {
        self.write_from_at_on(source, range, seal_threads())
    }

    pub(super) fn write_from_at_on<S: ReadAt + ?Sized>(
        &mut self,
        source: &S,
        range: Range<u64>,
        threads: usize,
    ) -> io::Result<u64> {
        self.drain()?;
        self.core.check_open().map_err(io_error)?;
        // Broken until it returns well: an error, or a panic unwinding through here.
        self.core.broken = true;
        let result = self.parallel(source, range, threads.max(1));
        self.core.broken = result.is_err();
        result
    }

    fn parallel<S: ReadAt + ?Sized>(
        &mut self,
        source: &S,
        range: Range<u64>,
        threads: usize,
    ) -> io::Result<u64> {
        let len = range.end.saturating_sub(range.start);
        let shape = Shape::of(&self.core.segments);
        let size = shape.size as u64;
        // Top up the segment being collected; the rest is whole segments after it.
        let room = shape.size.saturating_sub(self.core.filled);
        let top_up = usize::try_from(len).map_or(room, |len| len.min(room));
        let rest = len.saturating_sub(top_up as u64);
        let count = usize::try_from(rest.div_ceil(size))
            .map_err(|_| io_error(SealCore::too_large_for(shape.size)))?;
        // The collected segment and all but the final one are not the last: the final one's
        // index must exist, checked before anything is read.
        let first = if count == 0 {
            self.core.index
        } else {
            u32::try_from(count)
                .ok()
                .and_then(|count| self.core.index.checked_add(count))
                .ok_or_else(|| io_error(SealCore::too_large_for(shape.size)))?;
            self.core.index.saturating_add(1)
        };
        let filled = self.core.filled;
        let to = self
            .core
            .seg
            .get_mut(filled..filled.saturating_add(top_up))
            .unwrap_or_default();
        read_exact_at(source, to, range.start)?;
        self.core.filled = filled.saturating_add(top_up);
        self.core.taken = self.core.taken.saturating_add(top_up as u64);
        if count == 0 {
            return Ok(len);
        }
        // More follows the collected segment: it is not the last.
        self.core.seal_collected(false).map_err(io_error)?;
        self.drain()?;

        let work = Work {
            source,
            start: range.start.saturating_add(top_up as u64),
            first,
            count,
            shape,
        };
        let Self { core, inner } = self;
        let threads = threads.min(work.batches());
        if threads > 0 {
            seal_on(&work, &core.segments, threads, inner)?;
        }
        // The final segment: left unsealed for more writes or `finish`.
        let last = count.saturating_sub(1);
        let last_len = usize::try_from(rest.saturating_sub((last as u64).saturating_mul(size)))
            .unwrap_or(work.shape.size);
        let plain = core.seg.get_mut(..last_len).unwrap_or_default();
        read_exact_at(source, plain, work.offset(last))?;
        core.filled = last_len;
        core.index = first.saturating_add(u32::try_from(last).unwrap_or(u32::MAX));
        core.taken = core.taken.saturating_add(rest);
        Ok(len)
    }
}

/// A batch a thread is sealing. Dropped instead of forgotten, the thread is unwinding (a
/// `ReadAt` panicked): the writer is told, instead of waiting for the batch for ever while the
/// other threads wait for buffers; the scope then raises the panic.
struct Claimed<'a> {
    batch: usize,
    done: &'a mpsc::Sender<(usize, io::Result<Batch>)>,
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        let stopped = io::Error::other("a thread sealing the stream stopped");
        let _ = self.done.send((self.batch, Err(stopped)));
    }
}

/// Seals every batch of `work` on `threads` threads, writing each to `out` in order.
fn seal_on<S: ReadAt + ?Sized>(
    work: &Work<'_, S>,
    segments: &Segments,
    threads: usize,
    out: &mut impl Write,
) -> io::Result<()> {
    let batches = work.batches();
    let next = AtomicUsize::new(0);
    // Two buffers a thread; a thread takes a buffer before it claims a batch, so the batch
    // written next always has one and the writer never waits on a full pool.
    let (give, pool) = mpsc::sync_channel::<Option<Batch>>(2 * threads);
    for _ in 0..2 * threads {
        give.send(None)
            .map_err(|_| io_error(Error::EncryptionFailed))?;
    }
    let pool = std::sync::Mutex::new(pool);
    std::thread::scope(|scope| {
        // Dropped when this returns, however it returns: a thread waiting for a buffer ends.
        let give = give;
        let (done, sealed) = mpsc::channel::<(usize, io::Result<Batch>)>();
        for _ in 0..threads {
            let (pool, next, done) = (&pool, &next, done.clone());
            scope.spawn(move || {
                loop {
                    let taken = pool.lock().map(|p| p.recv());
                    let Ok(Ok(batch)) = taken else { return };
                    let mut batch =
                        batch.unwrap_or_else(|| Batch::new(work.shape.capacity, work.shape.stride));
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= batches {
                        return;
                    }
                    let claimed = Claimed {
                        batch: b,
                        done: &done,
                    };
                    let result = work.seal(segments, b, &mut batch).map(|()| batch);
                    std::mem::forget(claimed);
                    if done.send((b, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done);
        let mut waiting = BTreeMap::new();
        for b in 0..batches {
            let batch = loop {
                if let Some(batch) = waiting.remove(&b) {
                    break batch;
                }
                let (at, result) = sealed
                    .recv()
                    .map_err(|_| io_error(Error::EncryptionFailed))?;
                waiting.insert(at, result?);
            };
            out.write_all(work.shape.sealed(&batch, batch.count))?;
            // The pool has room: every buffer out of it is accounted for.
            let _ = give.send(Some(batch));
        }
        Ok(())
    })
}
