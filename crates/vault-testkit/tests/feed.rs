//! The event feed suite (`vault_testkit::store::feed`) on SQLite and PostgreSQL, each check on
//! a store of its own: the retention purge and webhook leases reach across environments.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::sync::Arc;

use vault_store::{SqlStore, Store};

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open_sqlite(dir.path()).await.unwrap();
    (Arc::new(store), dir)
}

#[cfg(feature = "postgres")]
async fn postgres(label: &str) -> Option<Arc<dyn Store>> {
    match std::env::var("VAULT_TEST_POSTGRES_URL") {
        Ok(url) => {
            let url = vault_testkit::postgres::fresh_database(&url, label).await;
            Some(Arc::new(SqlStore::connect_postgres(&url).await.unwrap()))
        }
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "VAULT_TEST_POSTGRES_URL is not set: the PostgreSQL suite must run in CI"
            );
            eprintln!("SKIPPED: PostgreSQL feed suite (set VAULT_TEST_POSTGRES_URL)");
            None
        }
    }
}

macro_rules! feed {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, _dir) = super::sqlite().await;
                    vault_testkit::$check(store).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(store) = super::postgres(stringify!($check)).await {
                        vault_testkit::$check(store).await;
                    }
                }
            )*
        }
    };
}

feed!(
    events_are_listed_as_workos_pages_them,
    retention_keeps_issued_keys_counted,
    idempotent_answers_are_stored_with_their_change,
    the_webhook_outbox_holds_every_subscribed_event,
    byok_config_is_swapped_whole,
);
