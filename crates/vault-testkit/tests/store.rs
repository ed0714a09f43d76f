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
    bad_input_changes_nothing,
    concurrent_writers_never_lose_an_update,
    pagination_is_stable,
    list_filters,
    api_keys,
    key_events,
    concurrent_reads_are_each_audited,
);
