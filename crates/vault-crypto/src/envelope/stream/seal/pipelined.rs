//! [`SealWriter::write_from_pipelined`]: reading and sealing overlapped on two threads.
//!
//! Sealing from a reader one segment at a time alternates two costs: the read (a copy, bound by
//! memory or the kernel) and AES-GCM on the segment now in cache, which on this kind of machine
//! runs at twice the copy's speed. Here the caller's thread reads batches of whole segments and
//! writes sealed ones, while one other thread seals the batch before. One sealing thread keeps
//! up with any reader, and the reader and writer never leave the caller's thread (neither needs
//! to be `Send`).
//!
//! The rule of the one-thread path holds: a segment is sealed as not the last only once a byte
//! after it has arrived. The final segment read is left in the writer unsealed, exactly as
//! [`SealWriter::write_from`] leaves it, for more writes or [`SealWriter::finish`].

use std::io::{self, Read, Write};
use std::sync::mpsc;

use super::batch::{Batch, Shape};
use super::{SealCore, SealWriter, read_retrying};
use crate::envelope::segment::Segments;
use crate::envelope::stream::io_error;
use crate::error::Error;

/// Batches at most: one being read, one being sealed, one being written.
const BATCHES: usize = 3;

impl<W: Write> SealWriter<W> {
    /// Seals everything `r` gives until its end, as [`write_from`](Self::write_from) does, with
    /// the sealing on a second thread: this thread reads and writes while the other seals the
    /// batch before (1 MiB at a time). Where the read is a copy out of memory or the page cache,
    /// as in a file encrypted on a machine with two cores or more, the two overlap, and the
    /// seal runs at the speed of the copy alone. Returns the bytes read; call
    /// [`finish`](Self::finish) after.
    ///
    /// Memory: three batches beside the writer's segment; a batch is 1 MiB of segments, or one
    /// segment where segments are larger.
    ///
    /// # Errors
    /// `r`'s or the inner writer's error, or an [`Error`] inside an `io::Error`. After an error
    /// the segments read but not written are lost, so the writer refuses everything after it,
    /// [`finish`](Self::finish) included: a stream missing data is never finished.
    pub fn write_from_pipelined<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<u64> {
        self.drain()?;
        self.core.check_open().map_err(io_error)?;
        // Broken until it returns well: an error, or a panic unwinding through here.
        self.core.broken = true;
        let result = self.pipeline(r);
        self.core.broken = result.is_err();
        result
    }

    fn pipeline<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<u64> {
        let before = self.core.taken;
        let Self { core, inner } = self;
        let SealCore {
            segments,
            seg,
            filled,
            index,
            taken,
            ..
        } = core;
        let shape = Shape::of(segments);

        // Top up the segment being collected (earlier writes may have begun it).
        while *filled < shape.size {
            let n = read_retrying(r, seg.get_mut(*filled..shape.size).unwrap_or_default())?;
            if n == 0 {
                return Ok(taken.saturating_sub(before));
            }
            *filled = filled.saturating_add(n);
            *taken = taken.saturating_add(n as u64);
        }
        // It is full: the first of the first batch.
        let mut held = Batch::new(shape.capacity, shape.stride);
        held.first = *index;
        shape
            .slot(&mut held, 0)
            .get_mut(..shape.size)
            .unwrap_or_default()
            .copy_from_slice(seg.get(..shape.size).unwrap_or_default());
        held.count = 1;
        held.last_len = shape.size;
        *filled = 0;
        let mut ended = shape.capacity > 1 && shape.fill(&mut held, 0, r, taken)?;

        let segments: &Segments = segments;
        let shape = &shape;
        std::thread::scope(|scope| -> io::Result<()> {
            let (to_seal, sealing) = mpsc::sync_channel::<Batch>(1);
            let (to_write, sealed) = mpsc::sync_channel::<Result<Batch, Error>>(1);
            scope.spawn(move || {
                for mut batch in sealing {
                    let count = batch.count;
                    let done = shape.seal(segments, &mut batch, count).map(|()| batch);
                    if to_write.send(done).is_err() {
                        return;
                    }
                }
            });
            let mut spare: Vec<Batch> = Vec::with_capacity(BATCHES);
            let mut in_flight = 0usize;
            let mut write_one = |spare: &mut Vec<Batch>| -> io::Result<()> {
                let batch = sealed
                    .recv()
                    .map_err(|_| io_error(Error::EncryptionFailed))?
                    .map_err(io_error)?;
                inner.write_all(shape.sealed(&batch, batch.count))?;
                spare.push(batch);
                Ok(())
            };
            while !ended {
                // Is there a byte after `held`? Read the next batch's first bytes to know.
                let mut next = spare
                    .pop()
                    .unwrap_or_else(|| Batch::new(shape.capacity, shape.stride));
                next.count = 0;
                let n = read_retrying(
                    r,
                    shape
                        .slot(&mut next, 0)
                        .get_mut(..shape.size)
                        .unwrap_or_default(),
                )?;
                *taken = taken.saturating_add(n as u64);
                if n == 0 {
                    spare.push(next);
                    break;
                }
                // There is: every segment of `held` is not the last, and its indices say so.
                next.first = u32::try_from(held.count)
                    .ok()
                    .and_then(|c| held.first.checked_add(c))
                    .ok_or_else(|| io_error(SealCore::too_large_for(shape.size)))?;
                to_seal
                    .send(std::mem::replace(&mut held, next))
                    .map_err(|_| io_error(Error::EncryptionFailed))?;
                in_flight += 1;
                if in_flight > 1 {
                    write_one(&mut spare)?;
                    in_flight -= 1;
                }
                ended = shape.fill(&mut held, n, r, taken)?;
            }
            while in_flight > 0 {
                write_one(&mut spare)?;
                in_flight -= 1;
            }
            Ok(())
        })?;

        // `held` ends what `r` gave. Its final segment stays unsealed in the writer: whether it is
        // the last is known only at the next write or `finish`.
        let before_final = held.count.saturating_sub(1);
        let final_index = u32::try_from(before_final)
            .ok()
            .and_then(|c| held.first.checked_add(c))
            .ok_or_else(|| io_error(SealCore::too_large_for(shape.size)))?;
        shape
            .seal(segments, &mut held, before_final)
            .map_err(io_error)?;
        inner.write_all(shape.sealed(&held, before_final))?;
        let last_len = held.last_len;
        let final_plain = shape.slot(&mut held, before_final);
        seg.get_mut(..last_len)
            .unwrap_or_default()
            .copy_from_slice(final_plain.get(..last_len).unwrap_or_default());
        *filled = last_len;
        *index = final_index;
        Ok(taken.saturating_sub(before))
    }
}
