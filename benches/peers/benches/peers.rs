//! Our envelope (managed provider) beside GoDaddy's Asherah (in-memory metastore, static KMS, hot
//! session) at 64 B to 64 KiB, and beside the AWS Encryption SDK for Rust (raw AES keyring) at
//! 1 KiB and 1 MiB: the same values sealed and opened in one criterion run.
//!
//! ESDK's default suite signs every message with ECDSA P-384; its fastest committing suite
//! without signatures (`AlgAes256GcmHkdfSha512CommitKey`) is the like-for-like peer of our
//! suite 1 (committed, unsigned), so both are measured.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vault_crypto::{Aad, open, seal};
use vault_peers::{Asherah, Esdk, EsdkAlgorithmSuiteId, SIZES, Vault};

fn asherah(c: &mut Criterion) {
    let vault = Vault::new();
    let asherah = Asherah::new();
    for size in SIZES {
        let pt = vec![0x42u8; size];
        let mut g = c.benchmark_group(format!("seal-{size}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("asherah-struct", size), |b| {
            b.iter(|| asherah.encrypt(black_box(&pt)))
        });
        g.bench_function(BenchmarkId::new("asherah-json", size), |b| {
            b.iter(|| asherah.encrypt_json(black_box(&pt)))
        });
        g.bench_function(BenchmarkId::new("vault-blocking", size), |b| {
            b.iter(|| vault.seal(black_box(&pt)))
        });
        g.finish();

        let mut g = c.benchmark_group(format!("open-{size}"));
        g.throughput(Throughput::Bytes(size as u64));
        let drr = asherah.encrypt(&pt);
        g.bench_function(BenchmarkId::new("asherah-struct", size), |b| {
            b.iter_batched(
                || drr.clone(),
                |d| asherah.decrypt(d),
                BatchSize::SmallInput,
            )
        });
        let env = vault.seal(&pt).into_bytes();
        g.bench_function(BenchmarkId::new("vault-blocking-owned", size), |b| {
            b.iter_batched(
                || env.clone(),
                |e| vault.open_owned(e),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(BenchmarkId::new("vault-blocking", size), |b| {
            b.iter(|| vault.open(black_box(&env)))
        });
        g.finish();
    }
}

fn esdk(c: &mut Criterion) {
    let esdk = Esdk::new();
    let vault = Vault::new();
    let suites = [
        (
            "aws-esdk-default-signed",
            EsdkAlgorithmSuiteId::AlgAes256GcmHkdfSha512CommitKeyEcdsaP384,
        ),
        (
            "aws-esdk-committed-unsigned",
            EsdkAlgorithmSuiteId::AlgAes256GcmHkdfSha512CommitKey,
        ),
    ];
    for size in [1024usize, 1 << 20] {
        let pt = vec![0x42u8; size];
        let mut g = c.benchmark_group(format!("seal-{size}"));
        g.throughput(Throughput::Bytes(size as u64));
        for (name, suite) in &suites {
            g.bench_function(BenchmarkId::new(*name, size), |b| {
                b.iter(|| esdk.seal(black_box(&pt), *suite))
            });
        }
        g.bench_function(BenchmarkId::new("vault-envelope-managed", size), |b| {
            b.iter(|| {
                esdk.rt
                    .block_on(seal(&vault.keys, &vault.ctx, black_box(&pt), Aad::NONE))
                    .unwrap()
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("open-{size}"));
        g.throughput(Throughput::Bytes(size as u64));
        for (name, suite) in &suites {
            let ct = esdk.seal(&pt, *suite);
            g.bench_function(BenchmarkId::new(*name, size), |b| {
                b.iter(|| esdk.open(black_box(&ct)))
            });
        }
        let env = vault.seal(&pt);
        g.bench_function(BenchmarkId::new("vault-envelope-managed", size), |b| {
            b.iter(|| {
                esdk.rt
                    .block_on(open(&vault.keys, black_box(env.bytes()), &vault.ctx, Aad::NONE))
                    .unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, asherah, esdk);
criterion_main!(benches);
