//! The Store conformance suite against SQLite and a real PostgreSQL server.
//!
//! PostgreSQL: `scripts/test` starts a throwaway cluster on loopback and sets
//! `VAULT_TEST_POSTGRES_URL`. Without it the PostgreSQL tests fail under CI (`CI` set) and are
//! reported as skipped otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::sync::Arc;

use vault_store::{SqlStore, Store};

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open_sqlite(dir.path()).await.unwrap();
    (Arc::new(store), dir)
}

#[cfg(feature = "postgres")]
async fn postgres() -> Option<Arc<dyn Store>> {
    match std::env::var("VAULT_TEST_POSTGRES_URL") {
        Ok(url) => Some(Arc::new(SqlStore::connect_postgres(&url).await.unwrap())),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "VAULT_TEST_POSTGRES_URL is not set: the PostgreSQL suite must run in CI"
            );
            eprintln!(
                "SKIPPED: PostgreSQL suite (set VAULT_TEST_POSTGRES_URL or run scripts/test)"
            );
            None
        }
    }
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let (store, _dir) = super::sqlite().await;
                    vault_testkit::$check(store).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    if let Some(store) = super::postgres().await {
                        vault_testkit::$check(store).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    create_and_read,
    names_and_environments,
    versions_and_expected_version,
    delete_and_purge,
    blobs_are_uploaded_in_batches_and_read_by_range,
    blobs_are_replaced_deleted_purged_and_rewrapped,
    bad_input_changes_nothing,
    concurrent_writers_never_lose_an_update,
    pagination_is_stable,
    list_filters,
    api_keys,
    key_events,
    concurrent_reads_are_each_audited,
);

/// PostgreSQL: the server cuts every connection of the store (a restart, a failover, an
/// operator's `pg_terminate_backend`). A change that meets a cut connection at its begin is
/// begun again on a new one: no change fails, and the store goes on.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_cut_by_the_server_are_replaced() {
    use sqlx::Connection as _;
    use vault_store::{Actor, NewVersion, ObjectStore as _};

    let Ok(url) = std::env::var("VAULT_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "VAULT_TEST_POSTGRES_URL is not set in CI"
        );
        return;
    };
    let url = vault_testkit::postgres::fresh_database(&url, "cut").await;
    let store = Arc::new(SqlStore::connect_postgres(&url).await.unwrap());
    let env = vault_testkit::environment("cut");
    let context = vault_crypto::KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    let create = |name: String| {
        let (store, env, context) = (store.clone(), env.clone(), context.clone());
        async move {
            let version = NewVersion {
                id: vault_store::new_version_id().unwrap(),
                at: vault_store::Timestamp::now(),
                envelope: b"env".to_vec(),
                size: 3,
                key_id: "managed://root#v1".into(),
            };
            let id = vault_store::new_object_id().unwrap();
            let actor = Actor::new("key_test", "Test key");
            store
                .create(&env, &id, &name, &context, None, version, &actor, None)
                .await
        }
    };
    // As many concurrent creates as there are threads of changes, and more, twice: after the
    // first round every thread holds a connection; after the cut, each meets a dead one.
    for round in ["before", "after"] {
        if round == "after" {
            let mut admin = sqlx::AnyConnection::connect(&url).await.unwrap();
            let cut = sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .execute(&mut admin)
            .await
            .unwrap();
            assert!(cut.rows_affected() >= 2, "the store's connections were cut");
        }
        let creates: Vec<_> = (0..40)
            .map(|i| tokio::spawn(create(format!("{round}-{i}"))))
            .collect();
        for (i, c) in creates.into_iter().enumerate() {
            let meta = c
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{round}-{i}: {e:?}"));
            assert_eq!(meta.name, format!("{round}-{i}"));
        }
    }
    let actor = Actor::new("key_test", "Test key");
    for i in 0..40 {
        store
            .get_by_name(&env, &format!("after-{i}"), &actor)
            .await
            .unwrap();
    }
    store.close().await;
}
