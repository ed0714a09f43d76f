//! The peers, interleaved: each round times every contender at every size in turn, so drift of
//! the machine (frequency, a neighbour's load) falls on all of them alike; the table gives each
//! one's median over the rounds, in ns per operation, and our speed relative to each peer
//! (peer's time / ours: above 1 means we are faster).
//!
//! `cargo run --release --bin table -- [rounds] [ms per measurement]` (defaults: 5, 200).
//! `... --bin table -- profile (seal|open|open-owned) <size> <seconds>` only runs our side, for `perf`.
//! `... --bin table -- parts` times the parts a small seal is made of, each alone.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use vault_peers::{Asherah, Esdk, EsdkAlgorithmSuiteId, SIZES, Vault};

/// Mean ns per call of `f` over about `budget`, after a short warm-up.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..50 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// As [`time`] for a call that consumes its input: the inputs are made in batches of 64 before
/// the clock starts for each batch, so they are as warm in the cache as [`time`]'s one input.
fn time_consuming<T>(budget: Duration, make: impl Fn() -> T, mut f: impl FnMut(T)) -> f64 {
    let (mut timed, mut n) = (Duration::ZERO, 0u64);
    let mut warm = 0;
    while timed < budget {
        let batch: Vec<T> = (0..64).map(|_| make()).collect();
        let start = Instant::now();
        for x in batch {
            f(x);
        }
        // The first batch warms up, as in `time`.
        if warm < 1 {
            warm += 1;
            continue;
        }
        timed += start.elapsed();
        n += 64;
    }
    timed.as_nanos() as f64 / n as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("parts") {
        return parts();
    }
    if args.peek().map(String::as_str) == Some("profile") {
        let (op, size, secs) = (
            args.nth(1).unwrap(),
            args.next().unwrap(),
            args.next().unwrap(),
        );
        return profile(&op, size.parse().unwrap(), secs.parse().unwrap());
    }
    let rounds: usize = args.next().map_or(5, |a| a.parse().unwrap());
    let budget = Duration::from_millis(args.next().map_or(200, |a| a.parse().unwrap()));

    let vault = Vault::new();
    let asherah = Asherah::new();
    let esdk = Esdk::new();
    let esdk_seal =
        |pt: &[u8]| esdk.seal(pt, EsdkAlgorithmSuiteId::AlgAes256GcmHkdfSha512CommitKey);

    // (operation, size, contender) -> one figure per round.
    let mut figures: HashMap<(&str, usize, &str), Vec<f64>> = HashMap::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for size in SIZES {
            let pt = vec![0x42u8; size];
            let mut put = |op, who, ns| figures.entry((op, size, who)).or_default().push(ns);

            put(
                "seal",
                "vault",
                time(budget, || drop(black_box(vault.seal(black_box(&pt))))),
            );
            put(
                "seal",
                "asherah",
                time(budget, || drop(black_box(asherah.encrypt(black_box(&pt))))),
            );
            put(
                "seal",
                "asherah-json",
                time(budget, || {
                    drop(black_box(asherah.encrypt_json(black_box(&pt))))
                }),
            );

            let env = vault.seal(&pt).into_bytes();
            put(
                "open",
                "vault",
                time_consuming(
                    budget,
                    || env.clone(),
                    |e| drop(black_box(vault.open_owned(e))),
                ),
            );
            put(
                "open",
                "vault-borrowed",
                time(budget, || drop(black_box(vault.open(black_box(&env))))),
            );
            let drr = asherah.encrypt(&pt);
            put(
                "open",
                "asherah",
                time_consuming(
                    budget,
                    || drr.clone(),
                    |d| drop(black_box(asherah.decrypt(d))),
                ),
            );
            if size == 1024 {
                put(
                    "seal",
                    "aws-esdk",
                    time(budget, || drop(black_box(esdk_seal(black_box(&pt))))),
                );
                let ct = esdk_seal(&pt);
                put(
                    "open",
                    "aws-esdk",
                    time(budget, || drop(black_box(esdk.open(black_box(&ct))))),
                );
            }
        }
    }

    let mut med = |op, size, who| figures.get_mut(&(op, size, who)).map(|v| median(v));
    println!(
        "Medians of {rounds} interleaved rounds, ns per operation; ratio = peer / ours (above 1: we are faster).\n"
    );
    println!(
        "| size | vault seal | asherah encrypt (struct) | ratio | asherah + JSON | vault open (owned) | asherah decrypt | ratio | vault open (borrowed) | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for size in SIZES {
        let vs = med("seal", size, "vault").unwrap();
        let a = med("seal", size, "asherah").unwrap();
        let aj = med("seal", size, "asherah-json").unwrap();
        let vo = med("open", size, "vault").unwrap();
        let ad = med("open", size, "asherah").unwrap();
        let vb = med("open", size, "vault-borrowed").unwrap();
        println!(
            "| {size} B | {vs:.0} | {a:.0} | {:.2}× | {aj:.0} | {vo:.0} | {ad:.0} | {:.2}× | {vb:.0} | {:.2}× |",
            a / vs,
            ad / vo,
            ad / vb
        );
    }
    let (vs, vo) = (
        med("seal", 1024, "vault").unwrap(),
        // The borrowed open: ESDK's decrypt is timed with the copy of its input.
        med("open", 1024, "vault-borrowed").unwrap(),
    );
    let (es, eo) = (
        med("seal", 1024, "aws-esdk").unwrap(),
        med("open", 1024, "aws-esdk").unwrap(),
    );
    println!("\n| 1 KiB | AWS ESDK (committed, unsigned) | vault | ratio |\n|---|---|---|---|");
    println!("| seal | {es:.0} | {vs:.0} | {:.0}× |", es / vs);
    println!("| open | {eo:.0} | {vo:.0} | {:.0}× |", eo / vo);
}

/// Runs only our seal or open of `size` bytes for `secs` seconds (for `perf record`).
fn profile(op: &str, size: usize, secs: u64) {
    let vault = Vault::new();
    let pt = vec![0x42u8; size];
    let env = vault.seal(&pt).into_bytes();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < until {
        for _ in 0..1000 {
            match op {
                "seal" => drop(black_box(vault.seal(black_box(&pt)))),
                "open-owned" => drop(black_box(vault.open_owned(env.clone()))),
                _ => drop(black_box(vault.open(black_box(&env)))),
            }
        }
        n += 1000;
    }
    eprintln!(
        "{n} {op}s of {size} B: {:.0} ns each",
        (secs * 1_000_000_000) as f64 / n as f64
    );
}

/// The parts of a small seal, each timed alone (median of 5 runs of 200 ms), in ns.
fn parts() {
    use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
    use aes_gcm::AeadInOut;
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    use sha2::Digest;

    let budget = Duration::from_millis(200);
    let med = |f: &mut dyn FnMut()| {
        let mut v: Vec<f64> = (0..5).map(|_| time(budget, &mut *f)).collect();
        median(&mut v)
    };
    let mut rows: Vec<(String, f64)> = Vec::new();
    for len in [16usize, 32, 44, 88] {
        let mut buf = [0u8; 88];
        rows.push((
            format!("kernel random, {len} bytes (vDSO getrandom)"),
            med(&mut || {
                vault_crypto::random::fill(black_box(&mut buf[..len])).unwrap();
            }),
        ));
    }
    let key = [7u8; 32];
    for len in [64usize, 1024] {
        let pt = vec![0x42u8; len];
        rows.push((
            format!("ring AES-256-GCM, key setup + seal of {len} B"),
            med(&mut || {
                let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, black_box(&key)).unwrap());
                let mut buf = pt.clone();
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key([1; 12]),
                        Aad::from(&[0u8; 90][..]),
                        &mut buf,
                    )
                    .unwrap();
                drop(black_box((buf, tag)));
            }),
        ));
        rows.push((
            format!("RustCrypto AES-256-GCM, key setup + seal of {len} B"),
            med(&mut || {
                let k = aes_gcm::Aes256Gcm::new(&Array::from(*black_box(&key)));
                let mut buf = pt.clone();
                let tag = k
                    .encrypt_inout_detached(
                        &Array::from([1u8; 12]),
                        &[0u8; 90],
                        buf.as_mut_slice().into(),
                    )
                    .unwrap();
                drop(black_box((buf, tag)));
            }),
        ));
    }
    let cached = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
    rows.push((
        "ring AES-256-GCM, cached key, seal of 32 B (the wrap)".into(),
        med(&mut || {
            let mut buf = [3u8; 32];
            let tag = cached
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::from(&[0u8; 40][..]),
                    &mut buf,
                )
                .unwrap();
            let _ = black_box((buf, tag));
        }),
    ));
    rows.push((
        "AES-256 key schedule + 4 blocks (suite 3 content key)".into(),
        med(&mut || {
            let c = aes::Aes256Enc::new(&Array::from(*black_box(&key)));
            let mut blocks = [Array::from([5u8; 16]); 4];
            c.encrypt_blocks(&mut blocks);
            black_box(blocks);
        }),
    ));
    rows.push((
        "SHA-256 of 95 bytes (suite 3 commitment)".into(),
        med(&mut || {
            black_box(sha2::Sha256::digest(black_box(&[9u8; 95])));
        }),
    ));
    let dk = vault_crypto::danger::data_key_from_bytes(key);
    for (name, suite) in [("suite 3", 3u16), ("suite 1 (HKDF-SHA256)", 1)] {
        rows.push((
            format!("derivation, {name}"),
            med(&mut || {
                black_box(
                    vault_crypto::danger::message_keys(suite, &dk, black_box(&[1u8; 32])).unwrap(),
                );
            }),
        ));
    }
    println!("| part (alone) | ns |\n|---|---|");
    for (name, ns) in rows {
        println!("| {name} | {ns:.0} |");
    }
}
