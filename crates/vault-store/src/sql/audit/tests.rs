#![allow(clippy::unwrap_used)]
use super::*;

/// An answer dated in the future (a database writer's, or a clock gone wrong) would be
/// replayed for a day and more, and block every answer to its key meanwhile: it is neither
/// replayed nor kept.
#[tokio::test]
async fn answers_from_the_future_are_neither_replayed_nor_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open_sqlite(dir.path()).await.unwrap();
    let now = Timestamp::now().0;
    for (key, at) in [("future", now + 3_600_000_000), ("now", now)] {
        store
            .change(move |tx: &mut dyn Tx| {
                tx.execute(
                    "INSERT INTO idempotent_answers (owner, idem_key, request_hash, status, \
                     body, created_at) VALUES ('key_a', $1, $2, 201, $3, $4)",
                    args![key, &[0u8; 32][..], &b"{}"[..], at],
                )?;
                Ok(())
            })
            .await
            .unwrap();
    }
    assert!(store.remembered("key_a", "now").await.unwrap().is_some());
    assert_eq!(store.remembered("key_a", "future").await.unwrap(), None);
    let expired = Timestamp(now - IDEMPOTENCY_TTL_MICROS);
    assert_eq!(store.forget_answers(expired).await.unwrap(), 1);
    assert!(store.remembered("key_a", "now").await.unwrap().is_some());
}
