//! An interactive write transaction ([`Session`]): a change whose statements arrive one step at a
//! time from async code, for the one caller whose decisions sit between its statements (the
//! ring's compare-and-swap, [`super::ring`]). It is an ordinary [`Change`], so on SQLite it runs
//! on the writer thread like every write.

use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use super::SqlStore;
use super::db::{SESSION_IDLE, SESSION_LIMIT, Tx};
use crate::StoreError;

/// A step of a session: runs on the transaction, returns whether it succeeded.
type RunStep = Box<dyn FnOnce(&mut dyn Tx) -> bool + Send>;

/// One step of a session, run on its transaction.
enum Step {
    Run(RunStep),
    Commit,
}

/// A write transaction under way. Dropped without [`commit`](Self::commit), left idle for
/// [`SESSION_IDLE`] or open for [`SESSION_LIMIT`], it is rolled back. On SQLite it holds the
/// writer thread, so its holder must not wait on the store (a change, an audited read) between
/// its steps: that would wait for itself until the idle limit ends the session.
pub(super) struct Session {
    steps: Sender<Step>,
    done: tokio::sync::oneshot::Receiver<Result<(), StoreError>>,
}

fn ended() -> StoreError {
    StoreError::Unavailable {
        reason: "the transaction ended before it was committed".into(),
    }
}

/// Runs the steps that arrive on `steps` until the commit. The session is dropped, idle too
/// long, older than [`SESSION_LIMIT`], or one of its steps failed: an error, so the transaction
/// is rolled back.
fn run_steps(steps: &Receiver<Step>, tx: &mut dyn Tx) -> Result<(), StoreError> {
    let deadline = Instant::now() + SESSION_LIMIT;
    let mut failed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match steps.recv_timeout(left.min(SESSION_IDLE)) {
            Ok(Step::Run(step)) => failed |= !step(tx),
            Ok(Step::Commit) if !failed => return Ok(()),
            Ok(Step::Commit) | Err(_) => return Err(ended()),
        }
    }
}

impl SqlStore {
    /// Begins an interactive write transaction (see [`Session`]).
    pub(super) async fn session(&self) -> Result<Session, StoreError> {
        let (steps, arriving) = std::sync::mpsc::channel();
        let done = self
            .submit(move |tx: &mut dyn Tx| run_steps(&arriving, tx))
            .await?;
        Ok(Session { steps, done })
    }
}

impl Session {
    /// Runs `f` in the transaction; returns its value.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, wait) = tokio::sync::oneshot::channel();
        let step = Step::Run(Box::new(move |tx| {
            let value = f(tx);
            let ok = value.is_ok();
            let _ = reply.send(value);
            ok
        }));
        self.steps.send(step).map_err(|_| ended())?;
        wait.await.map_err(|_| ended())?
    }

    /// Commits the transaction; returns once it is durable.
    pub(super) async fn commit(self) -> Result<(), StoreError> {
        self.steps.send(Step::Commit).map_err(|_| ended())?;
        self.done.await.map_err(|_| ended())?
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sql::db::args;

    async fn count(store: &SqlStore) -> i64 {
        store
            .row("SELECT COUNT(*) AS n FROM vault_copy", &[], |r| r.int("n"))
            .await
            .unwrap()
            .unwrap()
    }

    async fn store() -> (tempfile::TempDir, SqlStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open_sqlite(dir.path()).await.unwrap();
        store
            .change(|tx: &mut dyn Tx| tx.script("CREATE TABLE vault_copy (source TEXT)"))
            .await
            .unwrap();
        (dir, store)
    }

    async fn insert(session: &Session) -> Result<u64, StoreError> {
        session
            .run(|tx| Ok(tx.execute("INSERT INTO vault_copy (source) VALUES ($1)", args!["s"])?))
            .await
    }

    #[tokio::test]
    async fn a_session_commits_only_when_told_and_rolls_back_when_dropped() {
        let (_dir, store) = store().await;
        let session = store.session().await.unwrap();
        assert_eq!(insert(&session).await.unwrap(), 1);
        // Its own statements see its rows; nothing is committed yet.
        let seen = session
            .run(|tx| tx.fetch("SELECT COUNT(*) AS n FROM vault_copy", &[], |r| r.int("n")))
            .await
            .unwrap();
        assert_eq!(seen, Some(1));
        session.commit().await.unwrap();
        assert_eq!(count(&store).await, 1);

        let dropped = store.session().await.unwrap();
        insert(&dropped).await.unwrap();
        drop(dropped);
        // A later change runs after the dropped session ended: the writer is free again.
        store
            .change(|tx: &mut dyn Tx| {
                tx.execute("INSERT INTO vault_copy (source) VALUES ('t')", &[])?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(count(&store).await, 2, "the dropped session's row is gone");
    }

    #[tokio::test]
    async fn a_session_whose_step_failed_cannot_commit() {
        let (_dir, store) = store().await;
        let session = store.session().await.unwrap();
        insert(&session).await.unwrap();
        let failed = session
            .run(|tx| Ok(tx.execute("INSERT INTO no_such_table (x) VALUES (1)", &[])?))
            .await;
        assert!(failed.is_err());
        assert!(session.commit().await.is_err());
        assert_eq!(count(&store).await, 0);
    }
}
