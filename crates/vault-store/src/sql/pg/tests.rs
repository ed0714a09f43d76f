//! PostgreSQL's transactions as the threads run them, on the server `scripts/test` starts
//! (`VAULT_TEST_POSTGRES_URL`; without it these pass as skipped, except under CI).
#![allow(clippy::unwrap_used)]

use crate::sql::SqlStore;
use crate::sql::db::{DbError, Tx, args};

async fn store() -> Option<(SqlStore, String)> {
    let Ok(url) = std::env::var("VAULT_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "VAULT_TEST_POSTGRES_URL is not set: the PostgreSQL tests must run in CI"
        );
        return None;
    };
    let store = SqlStore::connect_postgres(&url).await.unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let table = format!("probe_{}_{nanos}", std::process::id());
    let create = format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY)");
    store
        .change(move |tx: &mut dyn Tx| Ok(tx.execute(&create, &[])?))
        .await
        .unwrap();
    Some((store, table))
}

async fn count(store: &SqlStore, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) AS n FROM {table}");
    store.row(&sql, &[], |r| r.int("n")).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_swallows_a_failed_statement_is_not_committed() {
    let Some((store, table)) = store().await else {
        return;
    };
    let insert = format!("INSERT INTO {table} (id) VALUES ($1)");
    let swallowed = store
        .change(move |tx: &mut dyn Tx| {
            tx.execute(&insert, args![1_i64])?;
            // The same key again: PostgreSQL refuses it and aborts the transaction. A change
            // that ignores the refusal still cannot be committed as if all went well.
            let again = tx.execute(&insert, args![1_i64]);
            assert!(matches!(again, Err(DbError::Unique)));
            Ok(())
        })
        .await;
    assert!(swallowed.is_err(), "answered as committed: {swallowed:?}");
    assert_eq!(count(&store, &table).await, 0);

    // The thread's connection is still good: the next change commits.
    let insert = format!("INSERT INTO {table} (id) VALUES ($1)");
    store
        .change(move |tx: &mut dyn Tx| Ok(tx.execute(&insert, args![2_i64])?))
        .await
        .unwrap();
    assert_eq!(count(&store, &table).await, 1);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_refused_once_closed() {
    let Some((store, table)) = store().await else {
        return;
    };
    store.close().await;
    let insert = format!("INSERT INTO {table} (id) VALUES (1)");
    let late = store
        .change(move |tx: &mut dyn Tx| Ok(tx.execute(&insert, &[])?))
        .await;
    assert!(late.is_err());
}
