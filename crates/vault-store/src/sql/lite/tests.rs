use super::*;
use crate::sql::db::{Tx, args};
use std::pin::pin;
use std::task::Poll;

/// A database with one table, its writer thread, and the connection the test reads with.
fn open() -> (tempfile::TempDir, Lite, Connection, Arc<Counters>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")
        .unwrap();
    let stats = Arc::<Counters>::default();
    let lite = Lite::open(&path, stats.clone()).unwrap();
    (dir, lite, conn, stats)
}

impl Lite {
    async fn change<C: Change>(&self, change: C) -> Result<C::Output, StoreError> {
        self.submit(change)?
            .await
            .unwrap_or_else(|_| Err(stopped()))
    }
}

/// Inserts `n`, then fails or panics as told.
struct Insert {
    n: i64,
    then: Then,
}

#[derive(Clone, Copy, PartialEq)]
enum Then {
    Succeed,
    Fail,
    Panic,
}

impl Change for Insert {
    type Output = i64;

    fn run(self, tx: &mut dyn Tx) -> Result<i64, StoreError> {
        tx.execute("INSERT INTO t (n) VALUES ($1)", args![self.n])?;
        match self.then {
            Then::Succeed => Ok(self.n),
            Then::Fail => Err(StoreError::invalid("n", "refused after inserting")),
            Then::Panic => panic!("a change with a bug"),
        }
    }
}

fn rows(conn: &Connection) -> Vec<i64> {
    let mut st = conn.prepare("SELECT n FROM t ORDER BY n").unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_fails_or_panics_is_undone_alone() {
    let (_dir, lite, conn, stats) = open();
    let then = |n: i64| match n % 5 {
        1 => Then::Fail,
        3 => Then::Panic,
        _ => Then::Succeed,
    };
    let calls = (0..60).map(|n| {
        let lite = lite.clone();
        async move { (n, lite.change(Insert { n, then: then(n) }).await) }
    });
    let mut expected = Vec::new();
    for (n, result) in futures_util::future::join_all(calls).await {
        match then(n) {
            Then::Succeed => {
                assert_eq!(result.unwrap(), n);
                expected.push(n);
            }
            Then::Fail => assert!(matches!(result, Err(StoreError::InvalidArgument { .. }))),
            Then::Panic => assert!(matches!(result, Err(StoreError::Unavailable { .. }))),
        }
    }
    // Only the changes that succeeded are there: a failed one's insert was rolled back.
    assert_eq!(rows(&conn), expected);
    let written = stats.get();
    assert_eq!(written.changes, expected.len() as u64);
    assert!(written.commits >= 1 && written.commits <= 60);
}

#[tokio::test]
async fn a_batch_that_fails_answers_everyone_with_its_error_and_writes_nothing() {
    let (_dir, lite, conn, stats) = open();
    // While the writer thread is busy with a change that waits, a change and a read's event
    // queue up and are committed together. The test database has no audit table, so the event
    // fails, and with it the batch.
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let (started, running) = std::sync::mpsc::channel::<()>();
    let busy = lite
        .submit(move |_: &mut dyn Tx| {
            started.send(()).ok();
            wait.recv().ok();
            Ok(())
        })
        .unwrap();
    running.recv().unwrap();
    let mut change = pin!(lite.change(Insert {
        n: 7,
        then: Then::Succeed,
    }));
    let mut read = pin!(lite.read_event(AuditRecord {
        environment: "e".into(),
        event: "data.read".into(),
        actor: crate::Actor::new("a", "a"),
        object: None,
        key_id: None,
        key_context: None,
        organization: None,
        detail: None,
        at: crate::Timestamp::now(),
    }));
    // One poll each hands the job to the writer thread.
    assert!(std::future::poll_fn(|cx| Poll::Ready(change.as_mut().poll(cx).is_pending())).await);
    assert!(std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx).is_pending())).await);
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
    let (changed, read) = (change.await, read.await);
    let Err(StoreError::Unavailable { reason }) = changed else {
        panic!("the change was answered {changed:?}");
    };
    assert!(
        matches!(&read, Err(StoreError::Unavailable { reason: r }) if *r == reason),
        "the read was answered {read:?}, the change {reason}"
    );
    assert!(rows(&conn).is_empty(), "nothing of the batch is written");
    assert_eq!(stats.get().commits, 1, "only the first batch committed");
}

#[tokio::test]
async fn the_store_opens_its_file_whatever_the_path() {
    use crate::{ApiKeyRecord, ApiKeyStore, ObjectStore, SqlStore, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    // The delimiters of a URL, and a space, in the data directory's name.
    let data = dir.path().join("a%20b?c#d e");
    let store = SqlStore::open_sqlite(&data).await.unwrap();
    let key = ApiKeyRecord {
        id: "key_1".into(),
        lookup: "lookup1".into(),
        hash: vec![7; 32],
        environment: "e".into(),
        name: "n".into(),
        created_at: Timestamp::now(),
        revoked_at: None,
        mac: vec![9; 32],
    };
    // Written by the writer thread, read back by a read connection.
    store.create_api_key(&key).await.unwrap();
    let found = store.api_key_by_lookup("lookup1").await.unwrap().unwrap();
    assert_eq!((found.id, found.hash), (key.id, key.hash));
    assert!(data.join("vault.db").exists());
    store.ping().await.unwrap();
    // Closed, the writer thread is gone and the store says so; reads are refused too.
    store.close().await;
    assert!(store.ping().await.is_err());
    assert!(store.api_key_by_lookup("lookup1").await.is_err());
    assert!(store.api_keys().await.is_err());
}

#[test]
fn dollar_parameters_bind_by_their_number_not_their_position() {
    let conn = Connection::open_in_memory().unwrap();
    let mut reader = LiteTx {
        conn: &conn,
        writer: false,
    };
    let tx: &mut dyn Tx = &mut reader;
    let row = tx
        .fetch(
            "SELECT $2 AS b, $1 AS a, $2 AS b2",
            args![1i64, "two"],
            |r| Ok((r.int("a")?, r.text("b")?, r.text("b2")?)),
        )
        .unwrap();
    assert_eq!(row, Some((1, "two".to_owned(), "two".to_owned())));
    // A parameter without an argument is an error, not a panic or a NULL.
    let missing = tx.fetch("SELECT $3 AS c", args![1i64], |r| r.int("c"));
    assert!(matches!(missing, Err(StoreError::Unavailable { .. })));
    // Nor is an argument without its parameter.
    let extra = tx.fetch("SELECT $1 AS c", args![1i64, 2i64], |r| r.int("c"));
    assert!(matches!(extra, Err(StoreError::Unavailable { .. })));
    // Nor is an argument skipped in the middle.
    let skipped = tx.fetch("SELECT $1 AS a, $3 AS c", args![1i64, 2i64, 3i64], |r| {
        r.int("c")
    });
    assert!(matches!(skipped, Err(StoreError::Unavailable { .. })));
}

#[test]
fn a_reader_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t (n INTEGER)")
        .unwrap();
    let conn = connect(&path, Role::Reader).unwrap();
    let mut reader = LiteTx {
        conn: &conn,
        writer: false,
    };
    let tx: &mut dyn Tx = &mut reader;
    assert!(tx.execute("INSERT INTO t (n) VALUES (1)", &[]).is_err());
    assert_eq!(
        tx.fetch("SELECT COUNT(*) AS n FROM t", &[], |r| r.int("n"))
            .unwrap(),
        Some(0)
    );
}

#[tokio::test]
async fn a_ring_name_that_would_be_a_wildcard_is_refused() {
    use crate::SqlStore;
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open_sqlite(dir.path()).await.unwrap();
    for bad in ["*", "a%", "a?b", "", "a b", "[a]"] {
        assert!(
            matches!(
                store.holds_data_under_ring(bad).await,
                Err(StoreError::InvalidArgument { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(!store.holds_data_under_ring("ring_1").await.unwrap());
}
