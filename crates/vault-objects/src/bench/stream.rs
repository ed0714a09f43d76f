//! `vault bench`'s streaming figure: 1 GiB sealed as a stream every way, beside raw ring.

use std::hint::black_box;
use std::time::Instant;

use ring::aead::{Aad, Nonce};
use serde::Serialize;
use vault_crypto::{KeyContext, ManagedKeyProvider, stream};

use super::{Progress, Settings, median, ready, ring_key};

/// Sealing 1 GiB as a stream (suite 4, 64 KiB segments) beside raw ring AES-256-GCM.
///
/// The baseline is raw ring sealing the resident gibibyte in place as one message: nothing
/// read, nothing copied, one thread. Beside it, ways that read the same gibibyte from one
/// `std::io::Read` source: raw ring into one 64 KiB buffer sealed in place chunk after chunk,
/// and the stream straight into its segments, on one thread
/// ([`SealWriter::write_from`](vault_crypto::stream::SealWriter::write_from)) and with the
/// sealing on a second
/// ([`SealWriter::write_from_pipelined`](vault_crypto::stream::SealWriter::write_from_pipelined)).
/// And the stream read at any offset, read and sealed on every core
/// ([`SealWriter::write_from_at`](vault_crypto::stream::SealWriter::write_from_at)), as a file
/// or a resident buffer is sealed.
#[derive(Debug, Clone, Serialize)]
pub struct StreamResult {
    /// Bytes sealed per run.
    pub bytes: usize,
    /// Raw ring sealing the resident gibibyte in place as one message, GB/s: the baseline.
    pub raw_in_place_gbps: f64,
    /// Raw ring, 64 KiB chunks read from the source and sealed in place, GB/s.
    pub raw_seal_gbps: f64,
    /// The streaming seal from the same source on one thread (data key, head, every segment to
    /// a sink), GB/s.
    pub stream_seal_gbps: f64,
    /// The streaming seal from the same source, read on one thread and sealed on another, GB/s.
    pub stream_pipelined_gbps: f64,
    /// The streaming seal of the gibibyte read at any offset, on every core, GB/s.
    pub stream_parallel_gbps: f64,
    /// The threads `stream_parallel_gbps` ran on.
    pub threads: usize,
    /// The streaming seal through `std::io::Write` (1 MiB writes, one more copy), GB/s.
    pub stream_write_gbps: f64,
    /// `stream_parallel_gbps / raw_in_place_gbps`: the fastest streaming seal against the
    /// baseline.
    pub ratio: f64,
    /// `stream_pipelined_gbps / raw_in_place_gbps`: from a reader, against the baseline.
    pub pipelined_ratio: f64,
    /// `stream_seal_gbps / raw_seal_gbps`: one thread each, the same reads.
    pub same_reads_ratio: f64,
}

/// One gibibyte sealed as a stream and by raw ring, one run of each way per round,
/// interleaved; the median round. A run is long enough (about a second) to time alone.
pub(super) fn stream_seal(
    settings: &Settings,
    bar: &dyn Progress,
    managed: &ManagedKeyProvider,
    ctx: &KeyContext,
) -> Result<StreamResult, vault_crypto::Error> {
    use std::io::{Read as _, Write as _};
    const BYTES: usize = 1 << 30;
    const SEGMENT: usize = stream::DEFAULT_SEGMENT_SIZE as usize;
    let gbps = |start: Instant| BYTES as f64 / start.elapsed().as_secs_f64() / 1e9;
    // Written to, so its pages are real before any timing.
    let mut buf = vec![0x42u8; BYTES];
    let key = ring_key();
    let sealer = || {
        ready(stream::seal(
            managed,
            ctx,
            vault_crypto::Aad::NONE,
            stream::DEFAULT_SEGMENT_SIZE,
        ))
    };
    let mut runs = [(); 6].map(|()| Vec::new());
    for _ in 0..settings.rounds {
        let start = Instant::now();
        let tag = key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([1; 12]),
            Aad::empty(),
            black_box(&mut buf),
        );
        black_box(tag.is_ok());
        runs[0].push(gbps(start));

        let start = Instant::now();
        let mut source = black_box(&buf[..]);
        let mut chunk = vec![0u8; SEGMENT + 16];
        while let Ok(n @ 1..) = source.read(&mut chunk[..SEGMENT]) {
            let tag = key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::empty(),
                &mut chunk[..n],
            );
            black_box(tag.is_ok());
        }
        runs[1].push(gbps(start));

        let start = Instant::now();
        let mut w = sealer()?.writer(std::io::sink());
        let done = w
            .write_from(&mut black_box(&buf[..]))
            .and_then(|_| w.finish());
        black_box(done.is_ok());
        runs[2].push(gbps(start));

        let start = Instant::now();
        let mut w = sealer()?.writer(std::io::sink());
        let done = w
            .write_from_pipelined(&mut black_box(&buf[..]))
            .and_then(|_| w.finish());
        black_box(done.is_ok());
        runs[3].push(gbps(start));

        let start = Instant::now();
        let mut w = sealer()?.writer(std::io::sink());
        let done = buf
            .chunks(1 << 20)
            .try_for_each(|chunk| w.write_all(black_box(chunk)))
            .and_then(|()| w.finish());
        black_box(done.is_ok());
        runs[4].push(gbps(start));

        let start = Instant::now();
        let mut w = sealer()?.writer(std::io::sink());
        let done = w
            .write_from_at(black_box(&buf[..]), 0..BYTES as u64)
            .and_then(|_| w.finish());
        black_box(done.is_ok());
        runs[5].push(gbps(start));
        bar.inc();
        bar.inc();
    }
    let [in_place, raw, streamed, pipelined, written, parallel] = runs.map(median);
    Ok(StreamResult {
        bytes: BYTES,
        raw_in_place_gbps: in_place,
        raw_seal_gbps: raw,
        stream_seal_gbps: streamed,
        stream_pipelined_gbps: pipelined,
        stream_write_gbps: written,
        stream_parallel_gbps: parallel,
        threads: stream::seal_threads(),
        ratio: parallel / in_place,
        pipelined_ratio: pipelined / in_place,
        same_reads_ratio: streamed / raw,
    })
}
