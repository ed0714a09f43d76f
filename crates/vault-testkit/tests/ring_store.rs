//! The key-lifecycle suite on every ring store: in memory, in SQLite and in a real PostgreSQL
//! (`VAULT_TEST_POSTGRES_URL`, set by `scripts/test`), the database rings sealed by a master
//! key; and what only a database ring must show: root keys at rest only sealed, a wrong seal
//! refused, a file ring moved in with its keys.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::Row;
use vault_crypto::managed::{MasterKeySeal, RootSeal, copy_ring};
use vault_crypto::sealed_ring::SealedRingStore;
use vault_crypto::{
    KeyContext, KeyProvider, KeyRingError, ManagedKeyProvider, MemoryRingStore, RingStore,
};
use vault_store::SqlStore;

/// Ring names unique to this run, so runs on one database never meet.
/// The ring `name` in `store`'s database, sealed by `seal`.
fn db_ring(
    store: &SqlStore,
    name: &str,
    seal: Arc<dyn RootSeal>,
    integrity: Arc<vault_crypto::integrity::IntegrityKey>,
) -> SealedRingStore {
    SealedRingStore::new(Arc::new(store.ring_rows(name)), seal, integrity)
}

/// The same, for moving a ring in.
fn moving_in(store: &SqlStore, name: &str, seal: Arc<dyn RootSeal>) -> SealedRingStore {
    SealedRingStore::new(
        Arc::new(store.ring_rows(name).moving_in()),
        seal,
        integrity(),
    )
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn master(dir: &std::path::Path, file: &str) -> Arc<dyn RootSeal> {
    Arc::new(MasterKeySeal::create_file(&dir.join(file)).unwrap())
}

async fn sqlite(dir: &std::path::Path) -> (SqlStore, String) {
    let store = SqlStore::open_sqlite(dir).await.unwrap();
    (
        store,
        format!("sqlite://{}", SqlStore::sqlite_path(dir).display()),
    )
}

async fn postgres() -> Option<(SqlStore, String)> {
    match std::env::var("VAULT_TEST_POSTGRES_URL") {
        Ok(url) => Some((SqlStore::connect_postgres(&url).await.unwrap(), url)),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "VAULT_TEST_POSTGRES_URL is not set: the PostgreSQL suite must run in CI"
            );
            eprintln!(
                "SKIPPED: PostgreSQL ring suite (set VAULT_TEST_POSTGRES_URL or run scripts/test)"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lifecycle_suite_on_memory_rings() {
    let rings: Mutex<HashMap<String, Arc<MemoryRingStore>>> = Mutex::default();
    vault_testkit::ring::run_all(|name| {
        rings
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(MemoryRingStore::new(name)))
            .clone()
    })
    .await;
}

/// The integrity key every ring of these tests is tagged with (one per process, as one per
/// deployment).
fn integrity() -> Arc<vault_crypto::integrity::IntegrityKey> {
    static KEY: std::sync::OnceLock<Arc<vault_crypto::integrity::IntegrityKey>> =
        std::sync::OnceLock::new();
    KEY.get_or_init(|| Arc::new(vault_crypto::integrity::IntegrityKey::generate().unwrap()))
        .clone()
}

async fn lifecycle_on(store: SqlStore, seal: Arc<dyn RootSeal>) {
    let prefix = unique("suite");
    vault_testkit::ring::run_all(|name| {
        Arc::new(db_ring(
            &store,
            &format!("{prefix}-{name}"),
            seal.clone(),
            integrity(),
        ))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lifecycle_suite_on_sqlite_rings() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(dir.path()).await;
    lifecycle_on(store, master(dir.path(), "master.key")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lifecycle_suite_on_postgres_rings() {
    let dir = tempfile::tempdir().unwrap();
    if let Some((store, _)) = postgres().await {
        lifecycle_on(store, master(dir.path(), "master.key")).await;
    }
}

/// Every root key is in the table only sealed; a wrong seal is refused with a clear message;
/// a destroyed version's sealed key is gone from the row.
async fn sealed_at_rest(store: SqlStore, url: &str, dir: &std::path::Path) {
    let name = unique("at-rest");
    let seal = master(dir, "a.key");
    let ring = db_ring(&store, &name, seal.clone(), integrity());
    let p = ManagedKeyProvider::open(Arc::new(ring), true)
        .await
        .unwrap();
    p.rotate().await.unwrap();
    p.rotate().await.unwrap();
    let state = db_ring(&store, &name, seal.clone(), integrity())
        .load_if_changed(None)
        .await
        .unwrap()
        .unwrap();
    let roots: Vec<[u8; 32]> = state
        .stored_versions()
        .filter_map(|v| v.root.copied())
        .collect();
    assert_eq!(roots.len(), 3);

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT version, sealed_by, sealed_root FROM key_ring_versions WHERE ring = $1",
    )
    .bind(&name)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let sealed: Vec<u8> = row.try_get("sealed_root").unwrap();
        let by: String = row.try_get("sealed_by").unwrap();
        assert_eq!(by, seal.describe());
        for root in &roots {
            assert!(
                !sealed.windows(32).any(|w| w == root),
                "a root key in clear"
            );
        }
    }
    if url.starts_with("sqlite:") {
        // Nowhere in the file, nor its write-ahead log.
        for file in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            for root in &roots {
                assert!(
                    !bytes.windows(32).any(|w| w == root),
                    "a root key in clear on disk"
                );
            }
        }
    }

    // Another master key: refused at open, naming the seal, never a key.
    let wrong = db_ring(&store, &name, master(dir, "b.key"), integrity());
    let err = ManagedKeyProvider::open(Arc::new(wrong), false)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyRingError::Seal { .. }), "{err:?}");
    assert!(err.to_string().contains("not by this master key"), "{err}");

    // Destroyed: the row keeps no sealed key.
    p.destroy(1).await.unwrap();
    let left: Option<Vec<u8>> =
        sqlx::query("SELECT sealed_root FROM key_ring_versions WHERE ring = $1 AND version = 1")
            .bind(&name)
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get("sealed_root")
            .unwrap();
    assert_eq!(left, None);

    // Resealed with another key: the ring opens with it, and no longer with the old one.
    let other = master(dir, "c.key");
    let n = db_ring(&store, &name, seal.clone(), integrity())
        .reseal(&*other)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let reopened =
        ManagedKeyProvider::open(Arc::new(db_ring(&store, &name, other, integrity())), false)
            .await
            .unwrap();
    assert_eq!(reopened.primary_version(), 3);
    assert!(
        ManagedKeyProvider::open(Arc::new(db_ring(&store, &name, seal, integrity())), false)
            .await
            .is_err()
    );
    // The process still on the old seal cannot add a version sealed by a key the others no
    // longer use.
    // (It fails to unseal the resealed keys, or, holding them, is refused the change.)
    let err = p.rotate().await.unwrap_err();
    assert!(matches!(err, KeyRingError::Seal { .. }), "{err}");
    assert_eq!(reopened.versions().len(), 3);
    pool.close().await;
}

/// Someone who can write the database but has not the seal key: sealed keys swapped between
/// versions, the primary moved back, a destroyed version given its key back. Running processes
/// refuse each; nothing is sealed under a key the writer chose.
async fn tampering_is_refused(store: SqlStore, url: &str, dir: &std::path::Path) {
    let seal = master(dir, "t.key");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    let exec = |sql: &'static str, name: String| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql).bind(name).execute(&pool).await.unwrap();
        }
    };
    let ring = |name: String| {
        let store = store.clone();
        let seal = seal.clone();
        async move {
            let p =
                ManagedKeyProvider::open(Arc::new(db_ring(&store, &name, seal, integrity())), true)
                    .await
                    .unwrap()
                    .with_check_interval(std::time::Duration::ZERO);
            p.rotate().await.unwrap();
            p.rotate().await.unwrap();
            p
        }
    };
    let bump = "UPDATE key_rings SET generation = generation + 1 WHERE name = $1";

    // v2's and v3's sealed keys swapped: neither unseals in the other's place.
    let name = unique("swap");
    let p = ring(name.clone()).await;
    let sealed = |v: i64| {
        let pool = pool.clone();
        let name = name.clone();
        async move {
            sqlx::query(
                "SELECT sealed_root FROM key_ring_versions WHERE ring = $1 AND version = $2",
            )
            .bind(name)
            .bind(v)
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get::<Vec<u8>, _>("sealed_root")
            .unwrap()
        }
    };
    let (two, three) = (sealed(2).await, sealed(3).await);
    for (v, bytes) in [(2i64, three), (3, two)] {
        sqlx::query(
            "UPDATE key_ring_versions SET sealed_root = $3 WHERE ring = $1 AND version = $2",
        )
        .bind(&name)
        .bind(v)
        .bind(bytes)
        .execute(&pool)
        .await
        .unwrap();
    }
    exec(bump, name.clone()).await;
    assert!(
        p.generate_data_key(&ctx).await.is_err(),
        "a swapped key is refused"
    );
    assert!(
        ManagedKeyProvider::open(
            Arc::new(db_ring(&store, &name, seal.clone(), integrity())),
            false
        )
        .await
        .is_err()
    );

    // The primary moved back to v1 (say it leaked and was rotated out).
    let name = unique("back");
    let p = ring(name.clone()).await;
    exec(
        "UPDATE key_rings SET primary_version = 1, generation = generation + 1 WHERE name = $1",
        name.clone(),
    )
    .await;
    assert!(
        p.generate_data_key(&ctx).await.is_err(),
        "the primary never goes back"
    );
    // Nor does a process started afterwards take it: the ring's rows fail their tag.
    let fresh = |name: String| {
        let store = store.clone();
        let seal = seal.clone();
        async move {
            ManagedKeyProvider::open(Arc::new(db_ring(&store, &name, seal, integrity())), false)
                .await
        }
    };
    assert!(
        matches!(
            fresh(name.clone()).await,
            Err(KeyRingError::Tampered { .. })
        ),
        "a fresh process refuses it too"
    );

    // The minimum decryption version lowered again, behind the ring's back.
    let name = unique("min");
    let p = ring(name.clone()).await;
    p.set_min_decryption_version(2).await.unwrap();
    exec(
        "UPDATE key_rings SET min_decryption_version = 1 WHERE name = $1",
        name.clone(),
    )
    .await;
    assert!(matches!(
        fresh(name.clone()).await,
        Err(KeyRingError::Tampered { .. })
    ));
    // As the ring itself wrote it, it opens.
    exec(
        "UPDATE key_rings SET min_decryption_version = 2 WHERE name = $1",
        name.clone(),
    )
    .await;
    assert!(fresh(name.clone()).await.is_ok());

    // A destroyed version given its sealed key back (from a backup of the row).
    let name = unique("undestroy");
    let p = ring(name.clone()).await;
    let kept: Vec<u8> =
        sqlx::query("SELECT sealed_root FROM key_ring_versions WHERE ring = $1 AND version = 1")
            .bind(&name)
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get("sealed_root")
            .unwrap();
    p.destroy(1).await.unwrap();
    sqlx::query(
        "UPDATE key_ring_versions SET destroyed_at = NULL, sealed_by = $2, sealed_root = $3 \
         WHERE ring = $1 AND version = 1",
    )
    .bind(&name)
    .bind(seal.describe())
    .bind(kept)
    .execute(&pool)
    .await
    .unwrap();
    exec(bump, name.clone()).await;
    assert!(
        p.generate_data_key(&ctx).await.is_err(),
        "a destroyed version stays destroyed"
    );
    assert!(matches!(
        fresh(name.clone()).await,
        Err(KeyRingError::Tampered { .. })
    ));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_tampering_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = sqlite(dir.path()).await;
    tampering_is_refused(store, &url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_tampering_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    if let Some((store, url)) = postgres().await {
        tampering_is_refused(store, &url, dir.path()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_rings_are_sealed_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = sqlite(dir.path()).await;
    sealed_at_rest(store, &url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_rings_are_sealed_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    if let Some((store, url)) = postgres().await {
        sealed_at_rest(store, &url, dir.path()).await;
    }
}

/// A file ring moved into the database opens what it sealed, with the same versions; moving
/// it in again is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_ring_moves_into_the_database_with_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(dir.path()).await;
    let name = unique("moved");
    let file_ring = ManagedKeyProvider::open_or_create(dir.path(), &name).unwrap();
    file_ring.rotate().await.unwrap();
    let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    let (_, wrapped) = file_ring.generate_data_key(&ctx).await.unwrap();
    let file = vault_crypto::FileRingStore::new(dir.path(), &name).unwrap();
    let seal = master(dir.path(), "m.key");
    let into = moving_in(&store, &name, seal.clone());
    copy_ring(&file, &into).await.unwrap();
    let moved = ManagedKeyProvider::open(
        Arc::new(db_ring(&store, &name, seal.clone(), integrity())),
        false,
    )
    .await
    .unwrap();
    assert_eq!(moved.primary_version(), 2);
    moved.unwrap(&wrapped, &ctx).await.unwrap();
    assert!(matches!(
        copy_ring(&file, &moving_in(&store, &name, seal)).await,
        Err(KeyRingError::Exists { .. })
    ));
}
