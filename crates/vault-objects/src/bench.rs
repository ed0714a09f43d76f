//! `vault bench`: measures, in one process and one run, the envelope beside the raw AEAD it is
//! built on, so the ratios hold on whatever machine it runs on.
//!
//! Method: every case runs in a tight loop for a fixed time; cases are interleaved over several
//! rounds (raw, envelope, raw, envelope, ...) so drift in the machine's speed hits both alike,
//! and the median round is reported.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::Serialize;
use vault_crypto::{KeyContext, ManagedKeyProvider, danger, open, random, seal};

mod stream;

pub use stream::StreamResult;

/// Value sizes measured for throughput.
pub const SIZES: [usize; 5] = [64, 1024, 16 * 1024, 64 * 1024, 1 << 20];

/// How long to run each case per round, and how many rounds.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time per case per round.
    pub per_case: Duration,
    /// Rounds; the median is reported.
    pub rounds: usize,
    /// Threads for the all-cores figures.
    pub threads: usize,
}

/// Where `vault bench` shows how far it got (a progress bar; nothing by default).
pub trait Progress: Sync {
    /// The measurement has `steps` steps.
    fn begin(&self, _steps: u64) {}
    /// What is measured now.
    fn message(&self, _what: &str) {}
    /// One step done.
    fn inc(&self) {}
    /// All done.
    fn finish(&self) {}
}

/// No progress shown.
impl Progress for () {}

/// Throughput of one size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    /// Value size in bytes.
    pub size: usize,
    /// Raw ring AES-256-GCM seal, key already expanded, GB/s.
    pub raw_seal_gbps: f64,
    /// Envelope seal through the managed provider (fresh data key, wrap, commitment), GB/s.
    pub seal_gbps: f64,
    /// `seal_gbps / raw_seal_gbps`.
    pub seal_ratio: f64,
    /// Raw ring AES-256-GCM open, GB/s.
    pub raw_open_gbps: f64,
    /// Envelope open through the managed provider (unwrap, commitment check, decrypt), GB/s.
    pub open_gbps: f64,
    /// `open_gbps / raw_open_gbps`.
    pub open_ratio: f64,
}

/// Objects per second of 1 KiB.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectRate {
    /// Threads used.
    pub threads: usize,
    /// Seals per second.
    pub seal_per_sec: f64,
    /// Opens per second.
    pub open_per_sec: f64,
}

/// The floor of a 1 KiB seal: the parts it cannot avoid, each measured alone.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// Where random bytes come from in this process (`vDSO getrandom` or `getrandom(2)`).
    pub random_source: &'static str,
    /// 44 bytes from the kernel's CSPRNG through that source, ns. A seal draws twice: the data
    /// key and its wrap's nonce, then the message id and the nonce.
    pub os_random_ns: f64,
    /// The same 44 bytes through the `getrandom(2)` system call, ns (for comparison).
    pub os_random_syscall_ns: f64,
    /// Suite 1's per-message derivation, ns: HKDF-SHA256 extract and the two expands (content
    /// key and commitment). Envelopes of suite 1 still open; seals write suite 3.
    pub hkdf_ns: f64,
    /// The per-message derivation of the suite seals write (suite 3), ns: four AES-256 blocks
    /// for the content key and one SHA-256 for the commitment. Part of `floor_ns`.
    pub derive_ns: f64,
    /// The data key's wrap: AES-256-GCM of 32 bytes under a key already expanded (the managed
    /// provider keeps its KEKs expanded), ns.
    pub key_wrap_ns: f64,
    /// AES-256-GCM key setup and seal of 1 KiB, ns.
    pub aead_1kib_ns: f64,
    /// The sum of the parts of one seal (two random draws, one of each other part), ns.
    pub floor_ns: f64,
    /// A whole 1 KiB seal through the managed provider, ns.
    pub seal_ns: f64,
    /// `floor_ns / seal_ns`: 1.0 would be nothing but the parts.
    pub ratio: f64,
}

/// Everything `vault bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Throughput by size.
    pub sizes: Vec<SizeResult>,
    /// Streaming seal of 1 GiB beside raw AES-256-GCM.
    pub stream_1gib: StreamResult,
    /// 1 KiB objects per second on one thread and on all.
    pub objects_1kib: Vec<ObjectRate>,
    /// The floor of a 1 KiB seal.
    pub floor_1kib: Floor,
    /// Parsing, validating and canonicalising a 10-pair key context, ns.
    pub context_10_pairs_ns: f64,
}

/// Drives a future of the managed provider, which does no I/O, without a runtime. It can still
/// wait a moment: threads sharing one provider queue on its ring's freshness check (every
/// 250 ms), so a pending future is polled again until it is ready.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            return out;
        }
        std::hint::spin_loop();
    }
}

/// Runs `op` for `time` and returns operations per second.
fn rate(time: Duration, mut op: impl FnMut()) -> f64 {
    // Warm up briefly, then count whole batches until the time is up.
    for _ in 0..3 {
        op();
    }
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut batch: u64 = 1;
    loop {
        for _ in 0..batch {
            op();
        }
        n += batch;
        let elapsed = start.elapsed();
        if elapsed >= time {
            return n as f64 / elapsed.as_secs_f64();
        }
        batch = (batch * 2).min(1 << 16);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Several rounds of every case in `cases`, interleaved; the median rate of each.
fn interleaved(
    settings: &Settings,
    bar: &dyn Progress,
    cases: &mut [&mut dyn FnMut()],
) -> Vec<f64> {
    let mut rates = vec![Vec::new(); cases.len()];
    for _ in 0..settings.rounds {
        for (i, case) in cases.iter_mut().enumerate() {
            rates[i].push(rate(settings.per_case, &mut **case));
            bar.inc();
        }
    }
    rates.into_iter().map(median).collect()
}

fn ring_key() -> LessSafeKey {
    // A fixed key and nonce are fine here: the output is discarded.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap_or_else(|_| unreachable!()))
}

fn raw_seal(key: &LessSafeKey, pt: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(pt.len() + 16);
    buf.extend_from_slice(pt);
    if let Ok(tag) = key.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key([1; 12]),
        Aad::empty(),
        &mut buf,
    ) {
        buf.extend_from_slice(tag.as_ref());
    }
    buf
}

fn raw_open(key: &LessSafeKey, ct: &[u8]) -> Vec<u8> {
    let mut buf = ct.to_vec();
    let n = key
        .open_in_place(
            Nonce::assume_unique_for_key([1; 12]),
            Aad::empty(),
            &mut buf,
        )
        .map_or(0, |pt| pt.len());
    buf.truncate(n);
    buf
}

/// Runs every measurement.
///
/// # Errors
/// A [`vault_crypto::Error`](crate::CryptoError) if the in-memory provider cannot be set up.
pub fn run(settings: &Settings, bar: &dyn Progress) -> Result<Report, vault_crypto::Error> {
    let managed = ManagedKeyProvider::in_memory("bench")?;
    let ctx = KeyContext::from_pairs([("organization_id", "org_1"), ("user_id", "u_9")])?;
    let key = ring_key();

    let steps = settings.rounds * (SIZES.len() * 4 + 5 + 1 + 2) + 4;
    bar.begin(steps as u64);

    let mut sizes = Vec::new();
    for size in SIZES {
        bar.message(&format!("{size} B"));
        let pt = vec![0x42u8; size];
        let raw_ct = raw_seal(&key, &pt);
        let env = ready(seal(&managed, &ctx, &pt, vault_crypto::Aad::NONE))?;
        let mut raw_s = || drop(black_box(raw_seal(&key, black_box(&pt))));
        let mut env_s = || {
            drop(black_box(ready(seal(
                &managed,
                &ctx,
                black_box(&pt),
                vault_crypto::Aad::NONE,
            ))))
        };
        let mut raw_o = || drop(black_box(raw_open(&key, black_box(&raw_ct))));
        let mut env_o = || {
            drop(black_box(ready(open(
                &managed,
                black_box(&env),
                &ctx,
                vault_crypto::Aad::NONE,
            ))))
        };
        let r = interleaved(
            settings,
            bar,
            &mut [&mut raw_s, &mut env_s, &mut raw_o, &mut env_o],
        );
        let gbps = |per_sec: f64| per_sec * size as f64 / 1e9;
        sizes.push(SizeResult {
            size,
            raw_seal_gbps: gbps(r[0]),
            seal_gbps: gbps(r[1]),
            seal_ratio: r[1] / r[0],
            raw_open_gbps: gbps(r[2]),
            open_gbps: gbps(r[3]),
            open_ratio: r[3] / r[2],
        });
    }

    bar.message("streaming seal of 1 GiB");
    let stream_1gib = stream::stream_seal(settings, bar, &managed, &ctx)?;

    bar.message("floor of a 1 KiB seal");
    let pt = vec![0x42u8; 1024];
    let mut random = || {
        let mut buf = [0u8; 44];
        let _ = random::fill(&mut buf);
        black_box(buf);
    };
    let mut syscall = || {
        let mut buf = [0u8; 44];
        let _ = random::syscall(&mut buf);
        black_box(buf);
    };
    let data_key = danger::data_key_from_bytes([2u8; 32]);
    let derivation = |suite: u16| {
        let data_key = &data_key;
        move || {
            drop(black_box(danger::message_keys(
                suite,
                data_key,
                black_box(&[1u8; 32]),
            )))
        }
    };
    let mut hkdf = derivation(vault_crypto::SUITE_AES256GCM_HKDF_SHA256_COMMIT);
    let mut derive = derivation(vault_crypto::SUITE_AES256GCM_AESKDF_SHA256_COMMIT);
    let kek = ring_key();
    let mut wrap = || drop(black_box(raw_seal(&kek, black_box(&[3u8; 32]))));
    let mut aead = || drop(black_box(raw_seal(&ring_key(), black_box(&pt))));
    let mut whole = || {
        drop(black_box(ready(seal(
            &managed,
            &ctx,
            black_box(&pt),
            vault_crypto::Aad::NONE,
        ))))
    };
    let r = interleaved(
        settings,
        bar,
        &mut [
            &mut random,
            &mut syscall,
            &mut hkdf,
            &mut wrap,
            &mut aead,
            &mut whole,
            &mut derive,
        ],
    );
    let ns = |per_sec: f64| 1e9 / per_sec;
    let floor_ns = 2.0 * ns(r[0]) + ns(r[6]) + ns(r[3]) + ns(r[4]);
    let floor_1kib = Floor {
        random_source: random::source().name(),
        os_random_ns: ns(r[0]),
        os_random_syscall_ns: ns(r[1]),
        hkdf_ns: ns(r[2]),
        derive_ns: ns(r[6]),
        key_wrap_ns: ns(r[3]),
        aead_1kib_ns: ns(r[4]),
        floor_ns,
        seal_ns: ns(r[5]),
        ratio: floor_ns / ns(r[5]),
    };

    bar.message("key context");
    let json = (0..10)
        .map(|i| format!(r#""organization_id_{i}":"org_01HXYZABCDEF{i:04}""#))
        .collect::<Vec<_>>()
        .join(",");
    let json = format!("{{{json}}}");
    let mut parse = || {
        drop(black_box(KeyContext::parse_json(black_box(
            json.as_bytes(),
        ))))
    };
    let r = interleaved(settings, bar, &mut [&mut parse]);
    let context_10_pairs_ns = ns(r[0]);

    bar.message("1 KiB objects/s, one thread and all");
    let env = ready(seal(&managed, &ctx, &pt, vault_crypto::Aad::NONE))?;
    let mut objects_1kib = Vec::new();
    for threads in [1, settings.threads.max(1)] {
        let seal_rate = parallel_rate(threads, settings.per_case * 2, || {
            drop(black_box(ready(seal(
                &managed,
                &ctx,
                black_box(&pt),
                vault_crypto::Aad::NONE,
            ))));
        });
        bar.inc();
        let open_rate = parallel_rate(threads, settings.per_case * 2, || {
            drop(black_box(ready(open(
                &managed,
                black_box(&env),
                &ctx,
                vault_crypto::Aad::NONE,
            ))));
        });
        bar.inc();
        objects_1kib.push(ObjectRate {
            threads,
            seal_per_sec: seal_rate,
            open_per_sec: open_rate,
        });
    }
    bar.finish();
    Ok(Report {
        sizes,
        stream_1gib,
        objects_1kib,
        floor_1kib,
        context_10_pairs_ns,
    })
}

/// Total operations per second of `op` run on `threads` threads at once.
fn parallel_rate(threads: usize, time: Duration, op: impl Fn() + Sync) -> f64 {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| rate(time, &op))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    })
}
