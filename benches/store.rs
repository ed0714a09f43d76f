//! Objects through the facade on the embedded default (SQLite file with WAL and
//! `synchronous=FULL`, managed key ring): create and read of 1 KiB values, ops/s.
//!
//! `cargo bench --bench store`. Each create is a durable commit (an fsync of the WAL), so the
//! figure depends on the disk as much as on the code.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vault_crypto::KeyContext;
use vault_store::Actor;

fn objects(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vault = rt.block_on(vault::open_embedded(dir.path())).unwrap();
    let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    let actor = Actor::new("key_bench", "bench");
    let value = vec![0x42u8; 1024];
    let n = AtomicU64::new(0);

    let mut g = c.benchmark_group("objects-1KiB-sqlite");
    g.throughput(Throughput::Elements(1));
    g.bench_function("create", |b| {
        b.iter(|| {
            let name = format!("obj-{}", n.fetch_add(1, Ordering::Relaxed));
            rt.block_on(vault.create("bench", &name, &ctx, None, black_box(&value), &actor))
                .unwrap()
        })
    });
    let meta = rt
        .block_on(vault.create("bench", "read-me", &ctx, None, &value, &actor))
        .unwrap();
    g.bench_function("read", |b| {
        b.iter(|| {
            rt.block_on(vault.read("bench", black_box(&meta.id), &actor))
                .unwrap()
        })
    });
    g.bench_function("describe", |b| {
        b.iter(|| {
            rt.block_on(vault.describe("bench", black_box(&meta.id), &actor))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, objects);
criterion_main!(benches);
