//! Blobs: an upload in batches made live in one transaction, ranged segment reads, replacing,
//! deleting and purging, and the heads' rewrap swaps.

use std::sync::Arc;

use vault_store::{Conflict, NewBlob, Store, StoreError, Timestamp, events};

use super::{actor, ctx, environment};

fn new_blob(env: &str, name: &str, head: &[u8]) -> NewBlob {
    NewBlob {
        id: vault_store::new_blob_id().unwrap(),
        environment: env.to_owned(),
        name: name.to_owned(),
        context: ctx("org_1"),
        head: head.to_vec(),
        key_id: "managed://root#v1".into(),
    }
}

fn segment(i: u64) -> Vec<u8> {
    format!("segment {i}").into_bytes()
}

/// Uploads `count` segments in batches of 2 and commits them as `size` bytes.
async fn upload(store: &dyn Store, blob: &NewBlob, count: u64) -> vault_store::BlobMeta {
    store.begin_blob(blob, &actor()).await.unwrap();
    let mut i = 0;
    while i < count {
        let batch: Vec<_> = (i..(i + 2).min(count)).map(segment).collect();
        let n = batch.len() as u64;
        store.put_segments(&blob.id, i, batch).await.unwrap();
        i += n;
    }
    store
        .commit_blob(&blob.id, count * 100, count, &actor())
        .await
        .unwrap()
}

/// An upload is invisible until committed, then read whole or by segment range; a commit
/// that is missing a segment (or a segment stored twice) is refused and changes nothing.
pub async fn blobs_are_uploaded_in_batches_and_read_by_range(store: Arc<dyn Store>) {
    let env = environment("blob");
    let blob = new_blob(&env, "backups/db.tar", b"head-1");
    store.begin_blob(&blob, &actor()).await.unwrap();
    store
        .put_segments(&blob.id, 0, vec![segment(0), segment(1)])
        .await
        .unwrap();
    assert!(matches!(
        store.blob(&env, "backups/db.tar", &actor()).await,
        Err(StoreError::NotFound)
    ));
    // Segment 2 missing: refused, still uploading.
    store
        .put_segments(&blob.id, 3, vec![segment(3)])
        .await
        .unwrap();
    assert!(matches!(
        store.commit_blob(&blob.id, 400, 4, &actor()).await,
        Err(StoreError::InvalidArgument { .. })
    ));
    assert!(matches!(
        store.put_segments(&blob.id, 1, vec![segment(1)]).await,
        Err(StoreError::Conflict(Conflict::Version))
    ));
    store
        .put_segments(&blob.id, 2, vec![segment(2)])
        .await
        .unwrap();
    let meta = store.commit_blob(&blob.id, 400, 4, &actor()).await.unwrap();
    assert_eq!((meta.size, meta.segments), (400, 4));
    assert_eq!(meta.name, "backups/db.tar");
    assert_eq!(meta.context, ctx("org_1"));
    // Committed once: a second commit or more segments find no upload.
    assert!(matches!(
        store.commit_blob(&blob.id, 400, 4, &actor()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.put_segments(&blob.id, 4, vec![segment(4)]).await,
        Err(StoreError::NotFound)
    ));

    let stored = store.blob(&env, "backups/db.tar", &actor()).await.unwrap();
    assert_eq!(stored.head, b"head-1");
    assert_eq!(stored.meta, meta);
    let all = store.segments(&blob.id, 0, 4, 1024).await.unwrap();
    assert_eq!(
        all,
        (0..4).map(|i| (i, segment(i))).collect::<Vec<_>>(),
        "in order"
    );
    assert_eq!(
        store.segments(&blob.id, 1, 3, 1024).await.unwrap(),
        vec![(1, segment(1)), (2, segment(2))]
    );
    assert!(
        store
            .segments(&blob.id, 4, 9, 1024)
            .await
            .unwrap()
            .is_empty()
    );
    // Longer than the caller says a segment can be: absent.
    assert!(store.segments(&blob.id, 0, 4, 8).await.unwrap().is_empty());
    assert_eq!(store.segments(&blob.id, 0, 4, 9).await.unwrap().len(), 4);
    // Another environment has no such blob.
    assert!(matches!(
        store
            .blob(&environment("other"), "backups/db.tar", &actor())
            .await,
        Err(StoreError::NotFound)
    ));
    let trail: Vec<String> = store
        .audit_events(&env, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(trail, [events::BLOB_READ, events::BLOB_CREATED]);

    // An aborted upload leaves nothing.
    let aborted = new_blob(&env, "aborted", b"head");
    store.begin_blob(&aborted, &actor()).await.unwrap();
    store
        .put_segments(&aborted.id, 0, vec![segment(0)])
        .await
        .unwrap();
    let other = new_blob(&env, "aborted too", b"head");
    store.begin_blob(&other, &actor()).await.unwrap();
    store
        .put_segments(&other.id, 0, vec![segment(0)])
        .await
        .unwrap();
    assert!(!store.blob_purged(&aborted.id).await.unwrap());
    store.abort_blob(&aborted.id).await.unwrap();
    store.abort_blob(&other.id).await.unwrap();
    assert!(store.blob_purged(&aborted.id).await.unwrap());
    // Marked, and removed by the purge's steps, whatever the cutoffs; `only` that one.
    let never = Timestamp(i64::MIN);
    while !store
        .purge_blobs(None, never, 1, Some(&aborted.id), &actor())
        .await
        .unwrap()
        .is_empty()
    {}
    assert_eq!(
        store.segments(&other.id, 0, 9, 1024).await.unwrap().len(),
        1
    );
    while !store
        .purge_blobs(None, never, 1, Some(&other.id), &actor())
        .await
        .unwrap()
        .is_empty()
    {}
    assert!(
        store
            .segments(&other.id, 0, 9, 1024)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .segments(&aborted.id, 0, 9, 1024)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.commit_blob(&aborted.id, 1, 1, &actor()).await,
        Err(StoreError::NotFound)
    ));
}

/// An upload of a taken name replaces the blob at its commit (the old one deleted in the same
/// transaction); list, describe and delete see live blobs only; purge removes deleted blobs
/// with their segments and keeps uploads in progress; head swaps are compare-and-set; key
/// usage counts every blob.
pub async fn blobs_are_replaced_deleted_purged_and_rewrapped(store: Arc<dyn Store>) {
    let env = environment("blob-life");
    let first = new_blob(&env, "b", b"head-first");
    let first_meta = upload(&*store, &first, 3).await;
    let second = new_blob(&env, "b", b"head-second");
    let second_meta = upload(&*store, &second, 1).await;
    let live = store.describe_blob(&env, "b", &actor()).await.unwrap();
    assert_eq!(live, second_meta);
    assert_ne!(live.id, first_meta.id);
    let other = upload(&*store, &new_blob(&env, "a", b"head-a"), 2).await;
    let listed = store.list_blobs(&env, None, 10, &actor()).await.unwrap();
    assert_eq!(
        listed.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        [other.id.as_str(), second_meta.id.as_str()]
    );
    let after = store
        .list_blobs(&env, Some("a"), 10, &actor())
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert!(matches!(
        store.list_blobs(&env, None, 0, &actor()).await,
        Err(StoreError::InvalidQuery { .. })
    ));

    // Rewrap swaps: only from the head that is there.
    assert!(
        !store
            .replace_blob_head(&second.id, b"not it", b"new", "managed://root#v2", &actor())
            .await
            .unwrap()
    );
    assert!(
        store
            .replace_blob_head(
                &second.id,
                b"head-second",
                b"head-moved",
                "managed://root#v2",
                &actor()
            )
            .await
            .unwrap()
    );
    let stored = store.blob(&env, "b", &actor()).await.unwrap();
    assert_eq!(
        (stored.head.as_slice(), stored.meta.key_id.as_str()),
        (&b"head-moved"[..], "managed://root#v2")
    );
    let heads = store.scan_blob_heads(None, 1000).await.unwrap();
    for id in [&first.id, &second.id, &other.id] {
        assert!(heads.iter().any(|h| &h.id == id), "every blob is scanned");
    }
    let usage = store.key_usage().await.unwrap();
    assert!(
        usage
            .iter()
            .any(|u| u.key_id == "managed://root#v2" && u.stored_versions >= 1)
    );

    let deleted = store.delete_blob(&env, "a", &actor()).await.unwrap();
    assert_eq!(deleted.id, other.id);
    assert!(matches!(
        store.delete_blob(&env, "a", &actor()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.blob(&env, "a", &actor()).await,
        Err(StoreError::NotFound)
    ));
    // An upload in progress here is not purged: the cutoff for abandoned uploads is in the
    // past (checks share a database, and another check's upload is in progress; abandoned
    // uploads are purged in the facade's tests, on a store of their own).
    let uploading = new_blob(&env, "uploading", b"head");
    store.begin_blob(&uploading, &actor()).await.unwrap();
    store
        .put_segments(&uploading.id, 0, vec![segment(0)])
        .await
        .unwrap();
    // Nothing is old enough yet. (Each step names its blob: checks share a database, and a
    // step without `only` may take up another check's blobs.)
    let past = Timestamp(Timestamp::now().0 - 3_600_000_000);
    for id in [&first.id, &other.id, &uploading.id] {
        assert!(
            store
                .purge_blobs(Some(past), past, 100, Some(id), &actor())
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(
        store.segments(&other.id, 0, 9, 1024).await.unwrap().len(),
        2
    );
    // Now every deleted blob is: the replaced one and the deleted one.
    let future = Timestamp(Timestamp::now().0 + 1_000_000);
    let mut purged = 0;
    for id in [&first.id, &other.id, &uploading.id, &second.id] {
        loop {
            let step = store
                .purge_blobs(Some(future), past, 1, Some(id), &actor())
                .await
                .unwrap();
            if step.is_empty() {
                break;
            }
            purged += step.blobs;
        }
    }
    assert_eq!(purged, 2, "the replaced and the deleted blob, no other");
    for id in [&first.id, &other.id] {
        assert!(store.segments(id, 0, 9, 1024).await.unwrap().is_empty());
    }
    assert_eq!(
        store
            .segments(&uploading.id, 0, 9, 1024)
            .await
            .unwrap()
            .len(),
        1
    );
    store
        .commit_blob(&uploading.id, 100, 1, &actor())
        .await
        .unwrap();
    assert_eq!(
        store.segments(&second.id, 0, 9, 1024).await.unwrap().len(),
        1
    );
    assert_eq!(
        store.blob(&env, "b", &actor()).await.unwrap().meta.id,
        second.id
    );
    let trail: Vec<String> = store
        .audit_events(&env, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    // The replaced and the deleted blob are purged with an event each.
    assert_eq!(
        trail.iter().filter(|e| *e == events::BLOB_PURGED).count(),
        2
    );
    assert_eq!(
        trail.iter().filter(|e| *e == events::BLOB_DELETED).count(),
        2,
        "replaced and deleted"
    );
    assert!(trail.iter().any(|e| e == events::DATA_REWRAPPED));

    // Uploads of one name committed at once: each commit replaces the one before it, none
    // fails, and one blob is live at the end.
    let racers: Vec<NewBlob> = (0..6).map(|_| new_blob(&env, "raced", b"head")).collect();
    for blob in &racers {
        store.begin_blob(blob, &actor()).await.unwrap();
        store
            .put_segments(&blob.id, 0, vec![segment(0)])
            .await
            .unwrap();
    }
    let commits: Vec<_> = racers
        .iter()
        .map(|blob| {
            let (store, id) = (store.clone(), blob.id.clone());
            tokio::spawn(async move { store.commit_blob(&id, 100, 1, &actor()).await })
        })
        .collect();
    for commit in commits {
        commit.await.unwrap().unwrap();
    }
    let live = store.describe_blob(&env, "raced", &actor()).await.unwrap();
    assert!(racers.iter().any(|b| b.id == live.id));
    let listed = store
        .list_blobs(&env, Some("r"), 100, &actor())
        .await
        .unwrap();
    assert_eq!(listed.iter().filter(|b| b.name == "raced").count(), 1);
}
