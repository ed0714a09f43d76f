//! Our envelope (managed provider) beside the AWS Encryption SDK for Rust (raw AES keyring), the
//! same 1 KiB and 1 MiB values sealed and opened in one criterion run.
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
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vault_crypto::{KeyContext, ManagedKeyProvider, open, seal};

fn peers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let esdk =
        esdk_client::Client::from_conf(AwsEncryptionSdkConfig::builder().build().unwrap()).unwrap();
    let mpl = mpl_client::Client::from_conf(MaterialProvidersConfig::builder().build().unwrap())
        .unwrap();
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
        ("aws-esdk-default-signed", EsdkAlgorithmSuiteId::AlgAes256GcmHkdfSha512CommitKeyEcdsaP384),
        ("aws-esdk-committed-unsigned", EsdkAlgorithmSuiteId::AlgAes256GcmHkdfSha512CommitKey),
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
                            .algorithm_suite_id(suite.clone())
                            .send(),
                    )
                    .unwrap()
                })
            });
        }
        g.bench_function(BenchmarkId::new("vault-envelope-managed", size), |b| {
            b.iter(|| rt.block_on(seal(&managed, &ctx, black_box(&pt), vault_crypto::Aad::NONE)).unwrap())
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
                        .algorithm_suite_id(suite.clone())
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
        let env = rt.block_on(seal(&managed, &ctx, &pt, vault_crypto::Aad::NONE)).unwrap();
        g.bench_function(BenchmarkId::new("vault-envelope-managed", size), |b| {
            b.iter(|| rt.block_on(open(&managed, black_box(&env), &ctx, vault_crypto::Aad::NONE)).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, peers);
criterion_main!(benches);
