//! Our envelope (managed provider) beside GoDaddy's Asherah (in-memory metastore, static KMS, hot
//! session) at 64 B to 64 KiB, and beside the AWS Encryption SDK for Rust (raw AES keyring) at
//! 1 KiB and 1 MiB: the same values sealed and opened in one criterion run.
//!
//! ESDK's default suite signs every message with ECDSA P-384; its fastest committing suite
//! without signatures (`AlgAes256GcmHkdfSha512CommitKey`) is the like-for-like peer of our
//! suite 1 (committed, unsigned), so both are measured.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;

use aws_esdk::client as esdk_client;
use aws_esdk::material_providers::client as mpl_client;
use aws_esdk::material_providers::types::material_providers_config::MaterialProvidersConfig;
use aws_esdk::material_providers::types::{AesWrappingAlg, EsdkAlgorithmSuiteId};
use aws_esdk::types::aws_encryption_sdk_config::AwsEncryptionSdkConfig;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vault_crypto::{KeyContext, ManagedKeyProvider, open, seal};
use vault_peers::{Asherah, SIZES, Vault};

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let esdk =
        esdk_client::Client::from_conf(AwsEncryptionSdkConfig::builder().build().unwrap()).unwrap();
    let mpl =
        mpl_client::Client::from_conf(MaterialProvidersConfig::builder().build().unwrap()).unwrap();
    let keyring = rt
        .block_on(
            mpl.create_raw_aes_keyring()
                .key_name("bench-key")
                .key_namespace("bench")
                .wrapping_key(vec![7u8; 32])
                .wrapping_alg(AesWrappingAlg::AlgAes256GcmIv12Tag16)
                .send(),
        )
        .unwrap();
    let ec = HashMap::from([
        ("organization_id".to_string(), "org_1".to_string()),
        ("user_id".to_string(), "u_9".to_string()),
    ]);
    let managed = ManagedKeyProvider::in_memory("root").unwrap();
    let ctx = KeyContext::from_pairs([("organization_id", "org_1"), ("user_id", "u_9")]).unwrap();

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
                b.iter(|| {
                    rt.block_on(
                        esdk.encrypt()
                            .plaintext(black_box(pt.clone()))
                            .keyring(keyring.clone())
                            .encryption_context(ec.clone())
                            .algorithm_suite_id(*suite)
                            .send(),
                    )
                    .unwrap()
                })
            });
        }
        g.bench_function(BenchmarkId::new("vault-envelope-managed", size), |b| {
            b.iter(|| {
                rt.block_on(seal(
                    &managed,
                    &ctx,
                    black_box(&pt),
                    vault_crypto::Aad::NONE,
                ))
                .unwrap()
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("open-{size}"));
        g.throughput(Throughput::Bytes(size as u64));
        for (name, suite) in &suites {
            let ct = rt
                .block_on(
                    esdk.encrypt()
                        .plaintext(pt.clone())
                        .keyring(keyring.clone())
                        .encryption_context(ec.clone())
                        .algorithm_suite_id(*suite)
                        .send(),
                )
                .unwrap()
                .ciphertext
                .unwrap();
            g.bench_function(BenchmarkId::new(*name, size), |b| {
                b.iter(|| {
                    rt.block_on(
                        esdk.decrypt()
                            .ciphertext(black_box(ct.clone()))
                            .keyring(keyring.clone())
                            .encryption_context(ec.clone())
                            .send(),
                    )
                    .unwrap()
                })
            });
        }
        let env = rt
            .block_on(seal(&managed, &ctx, &pt, vault_crypto::Aad::NONE))
            .unwrap();
        g.bench_function(BenchmarkId::new("vault-envelope-managed", size), |b| {
            b.iter(|| {
                rt.block_on(open(
                    &managed,
                    black_box(&env),
                    &ctx,
                    vault_crypto::Aad::NONE,
                ))
                .unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, asherah, esdk);
criterion_main!(benches);
