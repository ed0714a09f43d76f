//! Blobs through the `Vault` facade on the embedded default (SQLite + managed key): values of
//! several megabytes uploaded in batches and read whole or by range, and what someone who can
//! write the database does to their rows (swaps, cuts, renames, moves) refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.
#![allow(clippy::cast_possible_truncation)] // Test data: byte patterns and 64-bit lengths of a few megabytes.

use std::sync::Arc;

use vault::objects::blobs::BLOB_SEGMENT_SIZE;
use vault::objects::{ByteRange, CryptoError};
use vault::{Vault, VaultError};
use vault_crypto::{KeyContext, ManagedKeyProvider, Router};
use vault_store::{Actor, SqlStore, Store, StoreError};

const SEG: u64 = BLOB_SEGMENT_SIZE as u64;

fn actor() -> Actor {
    Actor::new("key_test", "test")
}

fn ctx(org: &str) -> KeyContext {
    KeyContext::from_pairs([("organization_id", org)]).unwrap()
}

fn data(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 7919) as u8).collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    /// The database, as a writer of it reaches it.
    url: String,
    ring: Arc<ManagedKeyProvider>,
    vault: Vault,
}

/// A vault on SQLite, or with `postgres` on a fresh database of the test cluster (`None`:
/// skipped outside `scripts/test`).
async fn fixture_on(postgres: bool) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap());
    let (store, url) = if postgres {
        let Ok(url) = std::env::var("VAULT_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "VAULT_TEST_POSTGRES_URL is not set: the PostgreSQL blob tests must run in CI"
            );
            eprintln!("SKIPPED: PostgreSQL blob tests (run scripts/test)");
            return None;
        };
        let url = vault_testkit::postgres::fresh_database(&url, "blobs").await;
        (SqlStore::connect_postgres(&url).await.unwrap(), url)
    } else {
        let url = format!("sqlite://{}/vault.db", dir.path().display());
        (SqlStore::open_sqlite(dir.path()).await.unwrap(), url)
    };
    let store: Arc<dyn Store> = Arc::new(store);
    let vault = Vault::new(
        Arc::new(Router::new(ring.clone())),
        store,
        Arc::new(vault::objects::IntegrityKey::generate().unwrap()),
    );
    Some(Fixture {
        _dir: dir,
        url,
        ring,
        vault,
    })
}

impl Fixture {
    /// Uploads `value` as `name`, handing it over `piece` bytes at a time.
    async fn put(
        &self,
        name: &str,
        org: &str,
        value: &[u8],
        piece: usize,
    ) -> vault::objects::BlobMeta {
        let mut upload = self
            .vault
            .begin_blob("prod", name, &ctx(org), &actor())
            .await
            .unwrap();
        for part in value.chunks(piece.max(1)) {
            upload.write(part).await.unwrap();
        }
        upload.finish().await.unwrap()
    }

    async fn get(&self, name: &str, range: Option<ByteRange>) -> Result<Vec<u8>, VaultError> {
        let mut reader = self.vault.open_blob("prod", name, range, &actor()).await?;
        let mut out = Vec::new();
        while let Some(chunk) = reader.next_chunk().await? {
            assert!(chunk.len() <= 1 << 20, "a chunk is at most a batch");
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Runs one statement as a database writer would.
    async fn sql(&self, statement: &str) {
        let pool = self.pool().await;
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.url).await.unwrap()
    }
}

fn refused(r: Result<Vec<u8>, VaultError>) -> bool {
    matches!(
        r,
        Err(VaultError::Crypto(
            CryptoError::DecryptionFailed | CryptoError::ContextMismatch | CryptoError::Envelope(_)
        ) | VaultError::Tampered { .. })
    )
}

async fn blobs_round_trip_whole_and_by_range(f: Fixture) {
    for (i, len) in [0, 1, SEG - 1, SEG, SEG + 1, 3 * (1 << 20) + 5]
        .into_iter()
        .enumerate()
    {
        let value = data(len);
        let name = format!("b{i}");
        let meta = f.put(&name, "org_1", &value, 10_007).await;
        assert_eq!(meta.size, len);
        assert_eq!(meta.segments, len.div_ceil(SEG).max(1));
        assert_eq!(f.get(&name, None).await.unwrap(), value, "{len}");
        if len == 0 {
            assert!(matches!(
                f.get(&name, Some(ByteRange::From(0))).await,
                Err(VaultError::RangeNotSatisfiable { size: 0 })
            ));
            continue;
        }
        // Exact at segment boundaries and at the ends.
        let mut ranges = vec![(0, 0), (len - 1, len - 1), (0, len - 1)];
        for b in [SEG - 1, SEG, SEG + 1, 2 * SEG, 17 * SEG + 3] {
            if b < len {
                ranges.push((b, (b + 2 * SEG).min(len - 1)));
                ranges.push((b.saturating_sub(5), b));
            }
        }
        for (first, last) in ranges {
            let got = f
                .get(&name, Some(ByteRange::Bounded { first, last }))
                .await
                .unwrap();
            assert_eq!(
                got,
                value[first as usize..=last as usize],
                "{len}: {first}-{last}"
            );
        }
        let tail = f.get(&name, Some(ByteRange::Last(3))).await.unwrap();
        assert_eq!(tail, value[len.saturating_sub(3) as usize..]);
        let from = f.get(&name, Some(ByteRange::From(len / 2))).await.unwrap();
        assert_eq!(from, value[(len / 2) as usize..]);
        let past = f
            .get(
                &name,
                Some(ByteRange::Bounded {
                    first: len - 1,
                    last: len + 100,
                }),
            )
            .await
            .unwrap();
        assert_eq!(past, value[len as usize - 1..]);
        assert!(matches!(
            f.get(&name, Some(ByteRange::From(len))).await,
            Err(VaultError::RangeNotSatisfiable { size }) if size == len
        ));
    }
    // An upload of a taken name replaces the blob only when finished.
    let mut upload = f
        .vault
        .begin_blob("prod", "b1", &ctx("org_1"), &actor())
        .await
        .unwrap();
    upload.write(b"replacement").await.unwrap();
    assert_eq!(f.get("b1", None).await.unwrap(), data(1));
    upload.finish().await.unwrap();
    assert_eq!(f.get("b1", None).await.unwrap(), b"replacement");
    // Another environment sees none of them.
    assert!(matches!(
        f.vault.open_blob("test", "b1", None, &actor()).await,
        Err(VaultError::Store(StoreError::NotFound))
    ));
}

async fn a_database_writer_cannot_move_cut_rename_or_swap_blobs(f: Fixture) {
    let big = data(5 * SEG + 9);
    let a = f.put("a", "org_1", &big, 65_536).await;
    let b = f.put("b", "org_1", &data(5 * SEG + 9), 4096).await;
    let c = f.put("c", "org_2", b"another tenant's", 100).await;
    let whole = |name: &'static str| f.get(name, None);
    assert_eq!(whole("a").await.unwrap(), big);

    // A segment of another blob of the same context, in the same place: refused.
    f.sql(&format!(
        "UPDATE blob_segments SET bytes = (SELECT bytes FROM blob_segments WHERE blob_id = '{}' AND idx = 2) \
         WHERE blob_id = '{}' AND idx = 2",
        b.id, a.id
    ))
    .await;
    assert!(refused(whole("a").await));
    // Ranges elsewhere still read (only the segments they touch are opened, and the last).
    let first = f
        .get(
            "a",
            Some(ByteRange::Bounded {
                first: 0,
                last: SEG - 1,
            }),
        )
        .await
        .unwrap();
    assert_eq!(first, big[..SEG as usize]);
    assert!(refused(
        f.get(
            "a",
            Some(ByteRange::Bounded {
                first: 2 * SEG,
                last: 2 * SEG
            })
        )
        .await
    ));

    // Two segments of one blob swapped: refused.
    let swap = async || {
        for (from, to) in [(0, -1), (1, 0), (-1, 1)] {
            f.sql(&format!(
                "UPDATE blob_segments SET idx = {to} WHERE blob_id = '{}' AND idx = {from}",
                b.id
            ))
            .await;
        }
    };
    swap().await;
    assert!(refused(f.get("b", Some(ByteRange::From(0))).await));
    swap().await;
    assert_eq!(whole("b").await.unwrap(), data(5 * SEG + 9));

    // Cut at a segment boundary, its size and count made to agree: the new last segment was
    // not sealed as the last.
    f.sql(&format!(
        "DELETE FROM blob_segments WHERE blob_id = '{}' AND idx = 5",
        b.id
    ))
    .await;
    f.sql(&format!(
        "UPDATE blobs SET size = {}, segments = 5 WHERE id = '{}'",
        5 * SEG,
        b.id
    ))
    .await;
    assert!(refused(whole("b").await));
    assert!(refused(f.get("b", Some(ByteRange::Last(1))).await));
    // A size inside the last segment: refused too.
    let d = f.put("d", "org_1", &data(2 * SEG + 50), 9000).await;
    f.sql(&format!(
        "UPDATE blobs SET size = {} WHERE id = '{}'",
        2 * SEG + 10,
        d.id
    ))
    .await;
    assert!(refused(whole("d").await));
    // A middle segment deleted: refused when reached, never skipped.
    let e = f.put("e", "org_1", &data(3 * SEG), 9000).await;
    f.sql(&format!(
        "DELETE FROM blob_segments WHERE blob_id = '{}' AND idx = 1",
        e.id
    ))
    .await;
    assert!(refused(whole("e").await));

    // Renamed in the database: its segments are bound to its name.
    f.sql(&format!(
        "UPDATE blobs SET name = 'renamed' WHERE id = '{}'",
        c.id
    ))
    .await;
    assert!(refused(whole("renamed").await));
    f.sql(&format!(
        "UPDATE blobs SET name = 'c' WHERE id = '{}'",
        c.id
    ))
    .await;
    assert_eq!(whole("c").await.unwrap(), b"another tenant's");
    // Its head given to another blob, or its context changed: refused.
    f.sql(&format!(
        "UPDATE blobs SET head = (SELECT head FROM blobs WHERE id = '{}') WHERE id = '{}'",
        c.id, a.id
    ))
    .await;
    assert!(refused(f.get("a", Some(ByteRange::From(0))).await));
    f.sql(&format!(
        "UPDATE blobs SET context = (SELECT context FROM blobs WHERE id = '{}') WHERE id = '{}'",
        a.id, c.id
    ))
    .await;
    assert!(refused(whole("c").await));
    // Moved to another environment: bound to its environment.
    let g = f.put("g", "org_1", b"stays in prod", 5).await;
    f.sql(&format!(
        "UPDATE blobs SET environment = 'test' WHERE id = '{}'",
        g.id
    ))
    .await;
    let mut moved = f.vault.open_blob("test", "g", None, &actor()).await;
    assert!(matches!(
        moved.as_mut().map(|_| ()),
        Err(VaultError::Crypto(CryptoError::DecryptionFailed))
    ));
}

async fn rewrap_moves_blob_heads_so_an_old_key_can_be_destroyed(f: Fixture) {
    use vault::{RewrapScope, Shred};

    let value = data(4 * SEG + 1);
    let meta = f.put("big", "org_1", &value, 50_000).await;
    assert_eq!(meta.key_id, "managed://root#v1");
    // An upload in progress under v1 counts too.
    let mut pending = f
        .vault
        .begin_blob("prod", "pending", &ctx("org_1"), &actor())
        .await
        .unwrap();
    pending.write(&data(SEG + 3)).await.unwrap();
    assert_eq!(f.ring.rotate().await.unwrap(), 2);
    tokio::time::sleep(std::time::Duration::from_secs(
        vault::DESTROY_QUIET_SECS + 1,
    ))
    .await;
    assert!(matches!(
        f.vault
            .destroy_key_version(&f.ring, 1, Shred::Refuse, &actor())
            .await,
        Err(VaultError::KeyInUse {
            version: 1,
            stored_versions: 2,
            ..
        })
    ));
    let segments_before = segment_bytes(&f, &meta.id).await;
    let report = f
        .vault
        .rewrap(&RewrapScope::All, &actor(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.rewrapped, 2);
    assert_eq!(
        segment_bytes(&f, &meta.id).await,
        segments_before,
        "segments untouched"
    );
    f.vault
        .destroy_key_version(&f.ring, 1, Shred::Refuse, &actor())
        .await
        .unwrap();
    assert_eq!(f.get("big", None).await.unwrap(), value);
    pending.write(b"more").await.unwrap();
    pending.finish().await.unwrap();
    let mut expected = data(SEG + 3);
    expected.extend_from_slice(b"more");
    assert_eq!(f.get("pending", None).await.unwrap(), expected);
    let described = f
        .vault
        .describe_blob("prod", "big", &actor())
        .await
        .unwrap();
    assert_eq!(described.key_id, "managed://root#v2");
}

/// Every segment row of a blob, in order, as a database reader sees them.
async fn segment_bytes(f: &Fixture, id: &str) -> Vec<Vec<u8>> {
    use sqlx::Row as _;
    let pool = f.pool().await;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT bytes FROM blob_segments WHERE blob_id = '{id}' ORDER BY idx"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.iter().map(|r| r.get::<Vec<u8>, _>("bytes")).collect()
}

async fn deleted_blobs_and_abandoned_uploads_are_purged(f: Fixture) {
    let kept = f.put("kept", "org_1", b"kept", 2).await;
    let gone = f.put("gone", "org_1", &data(2 * SEG), 9000).await;
    f.vault.delete_blob("prod", "gone", &actor()).await.unwrap();
    assert!(matches!(
        f.vault.open_blob("prod", "gone", None, &actor()).await,
        Err(VaultError::Store(StoreError::NotFound))
    ));
    let mut abandoned = f
        .vault
        .begin_blob("prod", "abandoned", &ctx("org_1"), &actor())
        .await
        .unwrap();
    abandoned.write(&data(3 << 20)).await.unwrap();
    let abandoned_id = abandoned.id().to_owned();
    // As a process that died mid-upload leaves it: nothing gave it up.
    std::mem::forget(abandoned);
    let fresh = f
        .vault
        .begin_blob("prod", "fresh", &ctx("org_1"), &actor())
        .await
        .unwrap();
    // Deleted and begun two days ago, as far as the rows say.
    let two_days = 2 * 86_400 * 1_000_000_i64;
    f.sql(&format!(
        "UPDATE blobs SET deleted_at = deleted_at - {two_days} WHERE id = '{}'",
        gone.id
    ))
    .await;
    f.sql(&format!(
        "UPDATE blobs SET created_at = created_at - {two_days} WHERE id = '{abandoned_id}'"
    ))
    .await;
    // Without a retention (deleted ones kept for ever), abandoned uploads go all the same.
    assert_eq!(f.vault.purge_blobs(None, &actor()).await.unwrap(), 1);
    assert!(segment_bytes(&f, &abandoned_id).await.is_empty());
    assert_eq!(segment_bytes(&f, &gone.id).await.len(), 2);
    assert_eq!(f.vault.purge_blobs(Some(1), &actor()).await.unwrap(), 1);
    assert!(segment_bytes(&f, &gone.id).await.is_empty());
    assert_eq!(segment_bytes(&f, &kept.id).await.len(), 1);
    // The upload begun now is kept, and can still finish.
    fresh.finish().await.unwrap();
    assert_eq!(f.get("fresh", None).await.unwrap(), b"");

    // An upload aborted, or dropped unfinished (a request cancelled), is given up at once
    // (the dropped one by a task of its own): its segments go, and it never commits.
    let mut aborted = f
        .vault
        .begin_blob("prod", "aborted", &ctx("org_1"), &actor())
        .await
        .unwrap();
    aborted.write(&data(2 << 20)).await.unwrap();
    let aborted_id = aborted.id().to_owned();
    assert!(!segment_bytes(&f, &aborted_id).await.is_empty());
    aborted.abort().await.unwrap();
    let since = std::time::Instant::now();
    while !segment_bytes(&f, &aborted_id).await.is_empty() {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(20),
            "not removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut dropped = f
        .vault
        .begin_blob("prod", "dropped", &ctx("org_1"), &actor())
        .await
        .unwrap();
    dropped.write(&data(2 << 20)).await.unwrap();
    let dropped_id = dropped.id().to_owned();
    drop(dropped);
    let since = std::time::Instant::now();
    while !segment_bytes(&f, &dropped_id).await.is_empty() {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(20),
            "not given up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A download under way when its blob is deleted and purged ends as not found, not as
    // tampering.
    f.put("read-while-purged", "org_1", &data(40 * SEG), 1 << 20)
        .await;
    let mut reader = f
        .vault
        .open_blob("prod", "read-while-purged", None, &actor())
        .await
        .unwrap();
    assert!(reader.next_chunk().await.unwrap().is_some());
    f.vault
        .delete_blob("prod", "read-while-purged", &actor())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(f.vault.purge_blobs(Some(0), &actor()).await.unwrap(), 1);
    assert!(matches!(
        reader.next_chunk().await,
        Err(VaultError::Store(StoreError::NotFound))
    ));
    for name in ["aborted", "dropped"] {
        assert!(matches!(
            f.vault.open_blob("prod", name, None, &actor()).await,
            Err(VaultError::Store(StoreError::NotFound))
        ));
    }
}

/// Each check on SQLite and, from `scripts/test`, on PostgreSQL.
macro_rules! on_both_engines {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::fixture_on(false).await.unwrap()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(f) = super::fixture_on(true).await {
                        super::$check(f).await;
                    }
                }
            )*
        }
    };
}

on_both_engines!(
    blobs_round_trip_whole_and_by_range,
    a_database_writer_cannot_move_cut_rename_or_swap_blobs,
    rewrap_moves_blob_heads_so_an_old_key_can_be_destroyed,
    deleted_blobs_and_abandoned_uploads_are_purged
);
