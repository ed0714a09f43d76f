//! Criterion benchmarks: the envelope beside the raw AEAD it is built on, in the same groups,
//! so each report shows the envelope's overhead directly.
//!
//! `cargo bench --bench envelope` (add `--features rustcrypto` for RustCrypto's baseline and
//! backend). Results and the commands that made them: `docs/PERFORMANCE.md`.
#![allow(clippy::unwrap_used, missing_docs)] // A benchmark: a panic is a failed run.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use vault_crypto::{
    Backend, CacheLimits, CachingProvider, KeyContext, KeyProvider, ManagedKeyProvider, Router,
    danger, open, random, seal,
};

const SIZES: [usize; 5] = [64, 1024, 16 * 1024, 64 * 1024, 1 << 20];

/// Drives a future that never waits (the managed provider does no I/O) without a runtime, so
/// no scheduler cost is measured.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked future waited"),
    }
}

fn ctx() -> KeyContext {
    KeyContext::from_pairs([("organization_id", "org_1"), ("user_id", "u_9")]).unwrap()
}

fn ring_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap())
}

/// The fastest raw AES-256-GCM here: ring, key already expanded, output in a fresh buffer (as
/// the envelope's is).
fn raw_ring_seal(key: &LessSafeKey, pt: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(pt.len() + 16);
    buf.extend_from_slice(pt);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([1; 12]),
            Aad::empty(),
            &mut buf,
        )
        .unwrap();
    buf.extend_from_slice(tag.as_ref());
    buf
}

#[cfg(feature = "rustcrypto")]
fn raw_rustcrypto_seal(key: &aes_gcm::Aes256Gcm, pt: &[u8]) -> Vec<u8> {
    use aes_gcm::AeadInOut;
    let mut buf = Vec::with_capacity(pt.len() + 16);
    buf.extend_from_slice(pt);
    let tag = key
        .encrypt_inout_detached(&[1u8; 12].into(), b"", buf.as_mut_slice().into())
        .unwrap();
    buf.extend_from_slice(&tag);
    buf
}

fn seal_group(c: &mut Criterion) {
    let managed = ManagedKeyProvider::in_memory("root").unwrap();
    let ctx = ctx();
    let (dek, wrapped) = ready(managed.generate_data_key(&ctx)).unwrap();
    let key = ring_key();
    let mut g = c.benchmark_group("seal");
    for size in SIZES {
        let pt = vec![0x42u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(
            BenchmarkId::new("raw-ring-aes256gcm", size),
            &pt,
            |b, pt| b.iter(|| raw_ring_seal(&key, black_box(pt))),
        );
        #[cfg(feature = "rustcrypto")]
        {
            use aes_gcm::KeyInit;
            let rc = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
            g.bench_with_input(
                BenchmarkId::new("raw-rustcrypto-aes256gcm", size),
                &pt,
                |b, pt| b.iter(|| raw_rustcrypto_seal(&rc, black_box(pt))),
            );
        }
        g.bench_with_input(
            BenchmarkId::new("envelope-data-key-in-hand", size),
            &pt,
            |b, pt| {
                b.iter(|| {
                    danger::seal_with_key(
                        &dek,
                        std::slice::from_ref(&wrapped),
                        &ctx,
                        black_box(pt),
                        vault_crypto::Aad::NONE,
                    )
                    .unwrap()
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("envelope-managed-provider", size),
            &pt,
            |b, pt| {
                b.iter(|| {
                    ready(seal(&managed, &ctx, black_box(pt), vault_crypto::Aad::NONE)).unwrap()
                })
            },
        );
    }
    g.finish();
}

fn open_group(c: &mut Criterion) {
    let managed = ManagedKeyProvider::in_memory("root").unwrap();
    let ctx = ctx();
    let dek_bytes = [9u8; 32];
    let dek = danger::data_key_from_bytes(dek_bytes);
    let wrapped = ready(managed.wrap(&dek, &ctx)).unwrap();
    let key = ring_key();
    let mut g = c.benchmark_group("open");
    for size in SIZES {
        let pt = vec![0x42u8; size];
        let raw = raw_ring_seal(&key, &pt);
        let env = danger::seal_with_key(
            &dek,
            std::slice::from_ref(&wrapped),
            &ctx,
            &pt,
            vault_crypto::Aad::NONE,
        )
        .unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(
            BenchmarkId::new("raw-ring-aes256gcm", size),
            &raw,
            |b, raw| {
                b.iter(|| {
                    let mut buf = black_box(raw).clone();
                    let n = key
                        .open_in_place(
                            Nonce::assume_unique_for_key([1; 12]),
                            Aad::empty(),
                            &mut buf,
                        )
                        .unwrap()
                        .len();
                    buf.truncate(n);
                    buf
                })
            },
        );
        for &backend in Backend::ALL {
            g.bench_with_input(
                BenchmarkId::new(
                    format!("envelope-data-key-in-hand-{}", backend.name()),
                    size,
                ),
                &env,
                |b, env| {
                    let dek = danger::data_key_from_bytes(dek_bytes);
                    b.iter(|| {
                        danger::open_with_data_key(
                            backend,
                            &dek,
                            black_box(env),
                            vault_crypto::Aad::NONE,
                        )
                        .unwrap()
                    })
                },
            );
        }
        g.bench_with_input(
            BenchmarkId::new("envelope-managed-provider", size),
            &env,
            |b, env| {
                b.iter(|| {
                    ready(open(
                        &managed,
                        black_box(env),
                        &ctx,
                        vault_crypto::Aad::NONE,
                    ))
                    .unwrap()
                })
            },
        );
    }
    g.finish();
}

fn context_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("context");
    for n in [1usize, 5, 10] {
        let json = serde_json_object(n);
        g.bench_with_input(
            BenchmarkId::new("parse-validate-canonicalise", n),
            &json,
            |b, json| b.iter(|| KeyContext::parse_json(black_box(json.as_bytes())).unwrap()),
        );
    }
    g.finish();
}

/// `{"organization_id_0":"org_value_0", ...}` with realistic key and value lengths.
fn serde_json_object(n: usize) -> String {
    let pairs: Vec<String> = (0..n)
        .rev()
        .map(|i| format!(r#""organization_id_{i}":"org_01HXYZABCDEF{i:04}""#))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// The managed provider's operations, and a whole 1 KiB seal beside the floor of its parts.
fn managed_group(c: &mut Criterion) {
    let managed = ManagedKeyProvider::in_memory("root").unwrap();
    let ctx = ctx();
    let (dek, wrapped) = ready(managed.generate_data_key(&ctx)).unwrap();
    let pt = vec![0x42u8; 1024];
    let mut g = c.benchmark_group("managed");
    g.throughput(Throughput::Elements(1));
    g.bench_function("generate-data-key", |b| {
        b.iter(|| ready(managed.generate_data_key(black_box(&ctx))).unwrap())
    });
    g.bench_function("wrap", |b| {
        b.iter(|| ready(managed.wrap(&dek, black_box(&ctx))).unwrap())
    });
    g.bench_function("unwrap", |b| {
        b.iter(|| ready(managed.unwrap(black_box(&wrapped), &ctx)).unwrap())
    });
    g.bench_function("seal-1KiB-object", |b| {
        b.iter(|| {
            ready(seal(
                &managed,
                &ctx,
                black_box(&pt),
                vault_crypto::Aad::NONE,
            ))
            .unwrap()
        })
    });
    let env = ready(seal(&managed, &ctx, &pt, vault_crypto::Aad::NONE)).unwrap();
    g.bench_function("open-1KiB-object", |b| {
        b.iter(|| {
            ready(open(
                &managed,
                black_box(&env),
                &ctx,
                vault_crypto::Aad::NONE,
            ))
            .unwrap()
        })
    });
    // A ring kept in a file, as `vault serve` and the CLI use it: the seal path also checks
    // whether another process changed the ring.
    let dir = tempfile::tempdir().unwrap();
    let on_file = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
    g.bench_function("seal-1KiB-object-file", |b| {
        b.iter(|| {
            ready(seal(
                &on_file,
                &ctx,
                black_box(&pt),
                vault_crypto::Aad::NONE,
            ))
            .unwrap()
        })
    });
    g.finish();

    // The same through the data-key cache (default limits): hits after the first call.
    let cached = CachingProvider::new(
        Arc::new(ManagedKeyProvider::in_memory("root").unwrap()),
        CacheLimits::default(),
    );
    let mut g = c.benchmark_group("cached");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal-1KiB-object", |b| {
        b.iter(|| ready(seal(&cached, &ctx, black_box(&pt), vault_crypto::Aad::NONE)).unwrap())
    });
    let env = ready(seal(&cached, &ctx, &pt, vault_crypto::Aad::NONE)).unwrap();
    g.bench_function("open-1KiB-object", |b| {
        b.iter(|| {
            ready(open(
                &cached,
                black_box(&env),
                &ctx,
                vault_crypto::Aad::NONE,
            ))
            .unwrap()
        })
    });
    g.finish();

    // The parts a 1 KiB seal cannot avoid, each measured alone: random bytes, HKDF, a key wrap,
    // the AEAD. Their sum is the floor the whole seal is compared with.
    let mut g = c.benchmark_group("floor-parts-1KiB");
    g.throughput(Throughput::Elements(1));
    // Random bytes: the kernel's CSPRNG through the vDSO (what the crate uses where the
    // kernel offers it) and through the getrandom(2) system call, for the sizes a seal draws
    // (44: a data key and its wrap's nonce, or a message id and nonce; 88: both at once).
    for len in [32usize, 44, 88] {
        g.bench_function(
            format!("random-{len}-bytes/{}", random::source().name()),
            |b| {
                b.iter(|| {
                    let mut buf = [0u8; 88];
                    random::fill(&mut buf[..len]).unwrap();
                    buf
                })
            },
        );
        g.bench_function(format!("random-{len}-bytes/getrandom(2)"), |b| {
            b.iter(|| {
                let mut buf = [0u8; 88];
                random::syscall(&mut buf[..len]).unwrap();
                buf
            })
        });
    }
    // The per-message derivation: suite 3's (what seals write: four AES blocks and one
    // SHA-256), suite 1's (extract, then the content key and the commitment), and suite 1's
    // bytes through the `hkdf` crate.
    let data_key = danger::data_key_from_bytes([2u8; 32]);
    for (name, suite) in [
        (
            "derive-message-keys/suite-3",
            vault_crypto::SUITE_AES256GCM_AESKDF_SHA256_COMMIT,
        ),
        (
            "derive-message-keys",
            vault_crypto::SUITE_AES256GCM_HKDF_SHA256_COMMIT,
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| danger::message_keys(suite, &data_key, black_box(&[1u8; 32])))
        });
    }
    g.bench_function("derive-message-keys/hkdf-crate", |b| {
        b.iter(|| {
            let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(black_box(&[1u8; 32])), &[2u8; 32]);
            let mut content_key = [0u8; 32];
            let mut commitment = [0u8; 32];
            hk.expand_multi_info(&[b"vault-crypto/v1/content-key", &[0, 1]], &mut content_key)
                .unwrap();
            hk.expand_multi_info(&[b"vault-crypto/v1/commitment", &[0, 1]], &mut commitment)
                .unwrap();
            (content_key, commitment)
        })
    });
    // The data key's wrap under a KEK already expanded (the managed provider caches it).
    let kek = ring_key();
    g.bench_function("aes256gcm-wrap-32-bytes", |b| {
        b.iter(|| raw_ring_seal(&kek, black_box(&[3u8; 32])))
    });
    g.bench_function("aes256gcm-key-wrap-32-bytes", |b| {
        b.iter(|| {
            let k = ring_key();
            raw_ring_seal(&k, black_box(&[3u8; 32]))
        })
    });
    g.bench_function("aes256gcm-seal-1KiB-with-key-setup", |b| {
        b.iter(|| {
            let k = ring_key();
            raw_ring_seal(&k, black_box(&pt))
        })
    });
    g.finish();
}

fn router_group(c: &mut Criterion) {
    let default: Arc<dyn KeyProvider> = Arc::new(ManagedKeyProvider::in_memory("root").unwrap());
    let mut router = Router::new(default);
    for i in 0..100 {
        let p: Arc<dyn KeyProvider> =
            Arc::new(ManagedKeyProvider::in_memory(&format!("byok-{i}")).unwrap());
        router = router
            .rule([("organization_id", format!("org_byok_{i}"))], p)
            .unwrap();
    }
    let miss = ctx();
    let last =
        KeyContext::from_pairs([("organization_id", "org_byok_99"), ("user_id", "u")]).unwrap();
    let mut g = c.benchmark_group("router-100-rules");
    g.throughput(Throughput::Elements(1));
    g.bench_function("route-no-match", |b| {
        b.iter(|| router.route(black_box(&miss)).clone())
    });
    g.bench_function("route-last-rule", |b| {
        b.iter(|| router.route(black_box(&last)).clone())
    });
    g.finish();
}

/// What row integrity adds to a request: checking an API key row's tag (the fields an API key
/// row has, as `vault_objects::integrity` tags them).
fn integrity_group(c: &mut Criterion) {
    let key = vault_crypto::integrity::IntegrityKey::generate().unwrap();
    let hash = [7u8; 32];
    let tag = |k: &vault_crypto::integrity::IntegrityKey| {
        k.tag("api_key")
            .text("key_Ab3dEf6hIj9k")
            .text("Ab3dEf6hIj9k")
            .bytes(&hash)
            .text("production")
            .text("billing service")
            .int(1_796_588_752_349_491)
            .opt_int(None)
    };
    let stored = tag(&key).finish();
    let mut g = c.benchmark_group("integrity");
    g.throughput(Throughput::Elements(1));
    g.bench_function("api-key-row-tag-check", |b| {
        b.iter(|| tag(black_box(&key)).verify(black_box(&stored)))
    });
    g.finish();
}

/// Streams (suite 4, 64 KiB segments) of 64 MiB beside raw ring doing the same reads: each reads
/// the value from one `std::io::Read` source into a 64 KiB buffer it seals in place (raw ring),
/// or straight into its segments (`write_from`, and `write_from_pipelined` with the sealing on a
/// second thread), and writes to a sink; `write_from_at` reads the value at any offset on every
/// core. Raw ring sealing the value in place as one message,
/// nothing read, is the baseline beside them.
fn stream_group(c: &mut Criterion) {
    use std::io::{Read as _, Write as _};
    use vault_crypto::stream;
    const LEN: usize = 64 << 20;
    const SEGMENT: usize = stream::DEFAULT_SEGMENT_SIZE as usize;
    let managed = ManagedKeyProvider::in_memory("bench").unwrap();
    let ctx = ctx();
    let key = ring_key();
    let mut value = vec![0x42u8; LEN];
    let sealer = || {
        ready(stream::seal(
            &managed,
            &ctx,
            vault_crypto::Aad::NONE,
            stream::DEFAULT_SEGMENT_SIZE,
        ))
        .unwrap()
    };
    let mut g = c.benchmark_group("stream 64 MiB");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);
    g.bench_function("raw ring, 64 KiB reads sealed in place", |b| {
        let mut chunk = vec![0u8; SEGMENT];
        b.iter(|| {
            let mut source = black_box(&value[..]);
            while let Ok(n @ 1..) = source.read(&mut chunk) {
                let tag = key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::empty(),
                    &mut chunk[..n],
                );
                let _ = black_box(tag.unwrap());
            }
        });
    });
    g.bench_function("stream seal, write_from the same reads", |b| {
        b.iter(|| {
            let mut w = sealer().writer(std::io::sink());
            w.write_from(&mut black_box(&value[..])).unwrap();
            w.finish().unwrap();
        });
    });
    g.bench_function("stream seal, write_from_pipelined the same reads", |b| {
        b.iter(|| {
            let mut w = sealer().writer(std::io::sink());
            w.write_from_pipelined(&mut black_box(&value[..])).unwrap();
            w.finish().unwrap();
        });
    });
    g.bench_function("stream seal, write_from_at on every core", |b| {
        b.iter(|| {
            let mut w = sealer().writer(std::io::sink());
            w.write_from_at(black_box(&value[..]), 0..LEN as u64)
                .unwrap();
            w.finish().unwrap();
        });
    });
    g.bench_function("stream seal, Write of 1 MiB", |b| {
        b.iter(|| {
            let mut w = sealer().writer(std::io::sink());
            for part in black_box(&value).chunks(1 << 20) {
                w.write_all(part).unwrap();
            }
            w.finish().unwrap();
        });
    });
    let mut w = sealer().writer(Vec::with_capacity(LEN + LEN / 1024 + 4096));
    w.write_all(&value).unwrap();
    let sealed = w.finish().unwrap();
    g.bench_function("stream open, in order", |b| {
        let head = stream::StreamHead::read_from(&mut &sealed[..]).unwrap();
        b.iter(|| {
            let opener = ready(head.open(&managed, &ctx, vault_crypto::Aad::NONE)).unwrap();
            let mut r = opener.reader(black_box(&sealed[head.len()..]));
            std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        });
    });
    g.bench_function("raw ring in place, one message, nothing read", |b| {
        b.iter(|| {
            let tag = key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::empty(),
                black_box(&mut value),
            );
            let _ = black_box(tag.unwrap());
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    stream_group,
    seal_group,
    open_group,
    context_group,
    managed_group,
    router_group,
    integrity_group
);
criterion_main!(benches);
