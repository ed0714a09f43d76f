use super::*;
use crate::sql::db::Tx;
use crate::sql::db::args;

/// A database with one table, its writer thread, and the connection the test reads with.
fn open(lock: Arc<tokio::sync::Mutex<()>>) -> (tempfile::TempDir, Lite, Connection, Arc<Counters>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")
        .unwrap();
    let stats = Arc::<Counters>::default();
    let lite = Lite::open(&path, lock, stats.clone()).unwrap();
    (dir, lite, conn, stats)
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

    async fn run<X: Tx>(self, tx: &mut X) -> Result<i64, StoreError> {
        tx.execute("INSERT INTO t (n) VALUES ($1)", args![self.n])
            .await?;
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
    let (_dir, lite, conn, stats) = open(Arc::default());
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
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let (_dir, lite, conn, stats) = open(lock.clone());
    // While this process's writer lock is held, a change and a read's event queue up and
    // are committed together. The test database has no audit table, so the event fails,
    // and with it the batch.
    let held = lock.clone().lock_owned().await;
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
        detail: None,
        at: crate::Timestamp::now(),
    }));
    // One poll each hands the job to the writer thread.
    assert!(std::future::poll_fn(|cx| Poll::Ready(change.as_mut().poll(cx).is_pending())).await);
    assert!(std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx).is_pending())).await);
    drop(held);
    let (changed, read) = (change.await, read.await);
    let Err(StoreError::Unavailable { reason }) = changed else {
        panic!("the change was answered {changed:?}");
    };
    assert!(
        matches!(&read, Err(StoreError::Unavailable { reason: r }) if *r == reason),
        "the read was answered {read:?}, the change {reason}"
    );
    assert!(rows(&conn).is_empty(), "nothing of the batch is written");
    assert_eq!(stats.get().commits, 0);
}

#[tokio::test]
async fn sqlx_and_the_writer_thread_open_the_same_file_whatever_the_path() {
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
    // Written through sqlx, read back by the point read on rusqlite.
    store.create_api_key(&key).await.unwrap();
    let found = store.api_key_by_lookup("lookup1").await.unwrap().unwrap();
    assert_eq!((found.id, found.hash), (key.id, key.hash));
    assert!(data.join("vault.db").exists());
    store.ping().await.unwrap();
    // Closed, the writer thread is gone and the store says so.
    store.close().await;
    assert!(store.ping().await.is_err());
}

#[test]
fn dollar_parameters_bind_by_their_number_not_their_position() {
    let conn = Connection::open_in_memory().unwrap();
    let row = fetch_on(
        &conn,
        "SELECT $2 AS b, $1 AS a, $2 AS b2",
        args![1i64, "two"],
        |r| Ok((r.int("a")?, r.text("b")?, r.text("b2")?)),
    )
    .unwrap();
    assert_eq!(row, Some((1, "two".to_owned(), "two".to_owned())));
    // A parameter without an argument is an error, not a panic or a NULL.
    let missing = fetch_on(&conn, "SELECT $3 AS c", args![1i64], |r| r.int("c"));
    assert!(matches!(missing, Err(StoreError::Unavailable { .. })));
    // Nor is an argument without its parameter.
    let extra = fetch_on(&conn, "SELECT $1 AS c", args![1i64, 2i64], |r| r.int("c"));
    assert!(matches!(extra, Err(StoreError::Unavailable { .. })));
}
