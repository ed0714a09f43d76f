//! 1 KiB seals through the AWS KMS provider (moto on loopback), with and without the data-key
//! cache: time per seal and provider calls per 1,000 seals.
//!
//! `scripts/with-moto cargo bench --bench aws` (without moto it does nothing).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vault_crypto::{
    CacheLimits, CachingProvider, DataKey, KeyContext, KeyProvider, KeyRef, ProviderError,
    WrappedKey, seal,
};
use vault_kms_aws::{AwsKmsProvider, RetryPolicy};

/// Counts the calls that reach KMS.
#[derive(Debug)]
struct Counted(AwsKmsProvider, AtomicU64);

#[async_trait]
impl KeyProvider for Counted {
    fn owns(&self, key: &KeyRef) -> bool {
        self.0.owns(key)
    }
    async fn generate_data_key(
        &self,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.generate_data_key(ctx).await
    }
    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.wrap(key, ctx).await
    }
    async fn unwrap_owned(
        &self,
        w: &WrappedKey,
        ctx: &KeyContext,
        attempts: vault_crypto::Attempts,
    ) -> Result<DataKey, ProviderError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.unwrap_owned(w, ctx, attempts).await
    }
}

fn aws(c: &mut Criterion) {
    let Ok(url) = std::env::var("VAULT_TEST_MOTO_URL") else {
        eprintln!("aws bench skipped: run it under scripts/with-moto");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "t", "t", None, None, "b",
        ))
        .endpoint_url(&url)
        .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
        .build();
    let client = aws_sdk_kms::Client::from_conf(config);
    let key = rt.block_on(client.create_key().send()).unwrap();
    let key = key.key_metadata().unwrap().key_id().to_owned();
    let provider = rt
        .block_on(AwsKmsProvider::from_client(
            client,
            &key,
            RetryPolicy::default(),
        ))
        .unwrap();
    let ctx = KeyContext::from_pairs([("organization_id", "org_byok")]).unwrap();
    let value = vec![0x42u8; 1024];

    let direct = Arc::new(Counted(provider.clone(), AtomicU64::new(0)));
    let counted = Arc::new(Counted(provider, AtomicU64::new(0)));
    let cached = CachingProvider::new(counted.clone(), CacheLimits::default());

    let mut g = c.benchmark_group("aws-kms-moto-seal-1KiB");
    g.throughput(Throughput::Elements(1));
    g.bench_function("no-cache", |b| {
        b.iter(|| {
            rt.block_on(seal(
                &*direct,
                &ctx,
                black_box(&value),
                vault_crypto::Aad::NONE,
            ))
            .unwrap()
        })
    });
    g.bench_function("cache", |b| {
        b.iter(|| {
            rt.block_on(seal(
                &cached,
                &ctx,
                black_box(&value),
                vault_crypto::Aad::NONE,
            ))
            .unwrap()
        })
    });
    g.finish();

    // Provider calls per 1,000 seals, each way, from a cold cache.
    cached.clear();
    for (name, provider, counter) in [
        ("no-cache", &*direct as &dyn KeyProvider, &direct.1),
        ("cache", &cached as &dyn KeyProvider, &counted.1),
    ] {
        let before = counter.load(Ordering::Relaxed);
        for _ in 0..1000 {
            rt.block_on(seal(provider, &ctx, &value, vault_crypto::Aad::NONE))
                .unwrap();
        }
        println!(
            "{name}: {} KMS calls per 1,000 seals",
            counter.load(Ordering::Relaxed) - before
        );
    }
}

criterion_group!(benches, aws);
criterion_main!(benches);
