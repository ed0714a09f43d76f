//! Objects: create, read, names, versions, delete and purge, rewrap swaps, bad input, and
//! concurrent writers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vault_store::{Actor, Conflict, Cursor, ListQuery, Store, StoreError, Timestamp, events};

use super::{actor, ctx, environment, id, version};

/// Create, read by id and by name, describe: the same object and metadata each way.
pub async fn create_and_read(store: Arc<dyn Store>) {
    let env = environment("create");
    let meta = store
        .create(
            &env,
            &id(),
            "  card/4111  ",
            &ctx("org_1"),
            None,
            version(b"env-1"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    assert!(vault_store::is_object_id(&meta.id));
    assert_eq!(meta.name, "card/4111", "names are trimmed");
    assert_eq!(meta.context, ctx("org_1"));
    assert_eq!(meta.updated_by, actor());
    let by_id = store.get(&env, &meta.id, &actor()).await.unwrap();
    assert_eq!(by_id.envelope, b"env-1");
    assert_eq!(by_id.meta, meta);
    let by_name = store
        .get_by_name(&env, "card/4111", &actor())
        .await
        .unwrap();
    assert_eq!(by_name, by_id);
    assert_eq!(
        store.describe(&env, &meta.id, &actor()).await.unwrap(),
        meta
    );

    let audit = store.audit_events(&env, 10).await.unwrap();
    let names: Vec<&str> = audit.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            events::METADATA_READ,
            events::DATA_READ,
            events::DATA_READ,
            events::DATA_CREATED
        ]
    );
    assert_eq!(audit[3].object_id.as_deref(), Some(meta.id.as_str()));
    assert_eq!(
        audit[3].key_context.as_deref(),
        Some(r#"{"organization_id":"org_1"}"#)
    );
    assert_eq!(audit[3].key_id.as_deref(), Some("managed://root#v1"));
}

/// A live name is unique per environment; other environments see nothing.
pub async fn names_and_environments(store: Arc<dyn Store>) {
    let (a, b) = (environment("iso_a"), environment("iso_b"));
    let meta = store
        .create(
            &a,
            &id(),
            "n",
            &ctx("o"),
            None,
            version(b"1"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .create(
                &a,
                &id(),
                "n",
                &ctx("o"),
                None,
                version(b"2"),
                &actor(),
                None
            )
            .await,
        Err(StoreError::Conflict(Conflict::Name))
    ));
    // The same name in another environment is another object.
    store
        .create(
            &b,
            &id(),
            "n",
            &ctx("o"),
            None,
            version(b"3"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    // Another environment's id is not found, whatever the operation.
    assert_eq!(
        store.get(&b, &meta.id, &actor()).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store.describe(&b, &meta.id, &actor()).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store
            .update(&b, &meta.id, version(b"x"), None, &actor())
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store
            .delete(&b, &meta.id, None, &actor())
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store.versions(&b, &meta.id, &actor()).await.unwrap_err(),
        StoreError::NotFound
    );
    let listed = store
        .list(&b, &ListQuery::default(), &actor())
        .await
        .unwrap();
    assert_eq!(listed.data.len(), 1);
    assert_ne!(listed.data[0].id, meta.id);
    assert_eq!(
        store.get(&a, &meta.id, &actor()).await.unwrap().envelope,
        b"1"
    );
}

/// Updates add versions; `expected_version` rejects lost writes; the context never changes.
pub async fn versions_and_expected_version(store: Arc<dyn Store>) {
    let env = environment("versions");
    let v1 = store
        .create(
            &env,
            &id(),
            "obj",
            &ctx("o"),
            None,
            version(b"one"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    let v2 = store
        .update(
            &env,
            &v1.id,
            version(b"two"),
            Some(&v1.version_id),
            &Actor::new("user_2", "Two"),
        )
        .await
        .unwrap();
    assert_ne!(v2.version_id, v1.version_id);
    assert_eq!(v2.context, v1.context);
    assert_eq!(v2.updated_by.id, "user_2");
    assert!(v2.updated_at >= v1.updated_at);
    // A writer still holding v1 loses, and nothing is written.
    assert!(matches!(
        store
            .update(
                &env,
                &v1.id,
                version(b"stale"),
                Some(&v1.version_id),
                &actor()
            )
            .await,
        Err(StoreError::Conflict(Conflict::Version))
    ));
    let v3 = store
        .update(&env, &v1.id, version(b"three"), None, &actor())
        .await
        .unwrap();
    assert_eq!(
        store.get(&env, &v1.id, &actor()).await.unwrap().envelope,
        b"three"
    );

    let versions = store.versions(&env, &v1.id, &actor()).await.unwrap();
    let ids: Vec<&str> = versions.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, [&v3.version_id, &v2.version_id, &v1.version_id]);
    assert_eq!(versions.iter().filter(|v| v.current).count(), 1);
    assert!(versions[0].current);
    assert_eq!(versions[2].size, 3);
    assert_eq!(versions[1].created_by.id, "user_2");
    assert_eq!(versions[0].etag.len(), 32);
    assert_ne!(versions[0].etag, versions[1].etag);
    // Delete checks the expected version too.
    assert!(matches!(
        store
            .delete(&env, &v1.id, Some(&v2.version_id), &actor())
            .await,
        Err(StoreError::Conflict(Conflict::Version))
    ));
    store
        .delete(&env, &v1.id, Some(&v3.version_id), &actor())
        .await
        .unwrap();
}

/// Deleted objects vanish at once, free their name, and are purged with their versions.
pub async fn delete_and_purge(store: Arc<dyn Store>) {
    let env = environment("delete");
    let gone = store
        .create(
            &env,
            &id(),
            "name",
            &ctx("o"),
            None,
            version(b"a"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    store
        .update(&env, &gone.id, version(b"b"), None, &actor())
        .await
        .unwrap();
    store.delete(&env, &gone.id, None, &actor()).await.unwrap();
    assert_eq!(
        store.get(&env, &gone.id, &actor()).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store.get_by_name(&env, "name", &actor()).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store
            .delete(&env, &gone.id, None, &actor())
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    assert!(
        store
            .list(&env, &ListQuery::default(), &actor())
            .await
            .unwrap()
            .data
            .is_empty()
    );
    // The name is free again.
    let reborn = store
        .create(
            &env,
            &id(),
            "name",
            &ctx("o"),
            None,
            version(b"c"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    assert_ne!(reborn.id, gone.id);
    let second = store
        .create(
            &env,
            &id(),
            "second",
            &ctx("o"),
            None,
            version(b"d"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    store
        .delete(&env, &second.id, None, &actor())
        .await
        .unwrap();

    // Nothing deleted before the start of time; everything deleted before now, once, at most
    // `limit` at a time.
    assert_eq!(store.purge(Timestamp(0), 100, &actor()).await.unwrap(), 0);
    let first = store
        .purge(Timestamp(Timestamp::now().0 + 1), 1, &actor())
        .await
        .unwrap();
    assert_eq!(first, 1, "a batch of one");
    let purged = first
        + store
            .purge(Timestamp(Timestamp::now().0 + 1), 100, &actor())
            .await
            .unwrap();
    assert!(purged >= 2, "{purged}");
    assert_eq!(
        store
            .purge(Timestamp(Timestamp::now().0 + 1), 100, &actor())
            .await
            .unwrap(),
        0,
        "idempotent"
    );
    assert_eq!(
        store
            .get(&env, &reborn.id, &actor())
            .await
            .unwrap()
            .envelope,
        b"c"
    );
    let audit = store.audit_events(&env, 100).await.unwrap();
    assert!(audit.iter().any(|e| e.event == events::DATA_DELETED));
    // The purge is on the record: one event for each purged object, by the purging actor
    // (other tests' objects on a shared database may have been in the batches too).
    let mut purged: Vec<_> = audit
        .iter()
        .filter(|e| e.event == events::DATA_PURGED)
        .map(|e| {
            assert_eq!(e.actor.id, actor().id);
            (e.object_id.clone().unwrap(), e.object_name.clone().unwrap())
        })
        .collect();
    purged.sort();
    let mut expected = vec![
        (gone.id.clone(), "name".to_owned()),
        (second.id.clone(), "second".to_owned()),
    ];
    expected.sort();
    assert_eq!(purged, expected, "{audit:?}");
}

/// Replacing a stored envelope (a rewrap) happens only over the expected bytes, and each
/// replacement is audited with the new key reference and the object's context.
pub async fn rewraps_are_conditional_and_audited(store: Arc<dyn Store>) {
    let env = environment("rewrap");
    let meta = store
        .create(
            &env,
            &id(),
            "moved",
            &ctx("o"),
            None,
            version(b"old"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    let by = Actor::new("user_ops", "ops (vault cli)");
    let stale = store
        .replace_envelope(&meta.id, 1, b"not it", b"new", "managed://root#v2", &by)
        .await
        .unwrap();
    assert!(!stale, "a changed envelope is never overwritten");
    let replaced = store
        .replace_envelope(&meta.id, 1, b"old", b"new", "managed://root#v2", &by)
        .await
        .unwrap();
    assert!(replaced);
    assert_eq!(
        store.get(&env, &meta.id, &actor()).await.unwrap().envelope,
        b"new"
    );
    let audit = store.audit_events(&env, 100).await.unwrap();
    let rewrapped: Vec<_> = audit
        .iter()
        .filter(|e| e.event == events::DATA_REWRAPPED)
        .collect();
    assert_eq!(
        rewrapped.len(),
        1,
        "only the replacement that happened: {audit:?}"
    );
    let e = rewrapped[0];
    assert_eq!(e.object_id.as_deref(), Some(meta.id.as_str()));
    assert_eq!(e.object_name.as_deref(), Some("moved"));
    assert_eq!(e.key_id.as_deref(), Some("managed://root#v2"));
    assert_eq!(e.actor, by);
    assert_eq!(e.key_context.as_deref(), Some(ctx("o").to_json().as_str()));
}

/// Bad input: a typed error, and nothing written.
pub async fn bad_input_changes_nothing(store: Arc<dyn Store>) {
    let env = environment("bad");
    for name in ["", "   ", &"x".repeat(201), "a\u{0}b"] {
        assert!(matches!(
            store
                .create(
                    &env,
                    &id(),
                    name,
                    &ctx("o"),
                    None,
                    version(b"v"),
                    &actor(),
                    None
                )
                .await,
            Err(StoreError::InvalidArgument { field: "name", .. })
        ));
    }
    assert!(matches!(
        store
            .create(
                "bad env!",
                &id(),
                "n",
                &ctx("o"),
                None,
                version(b"v"),
                &actor(),
                None
            )
            .await,
        Err(StoreError::InvalidArgument {
            field: "environment",
            ..
        })
    ));
    for id in [
        "",
        "nope",
        "secret_zz",
        "secret_51B0AC67C2FB4247AC5ABDDD3C701BDC",
    ] {
        assert_eq!(
            store.get(&env, id, &actor()).await.unwrap_err(),
            StoreError::NotFound
        );
        assert_eq!(
            store
                .update(&env, id, version(b"v"), None, &actor())
                .await
                .unwrap_err(),
            StoreError::NotFound
        );
    }
    for limit in [0, 101] {
        let q = ListQuery {
            limit: Some(limit),
            ..ListQuery::default()
        };
        assert!(matches!(
            store.list(&env, &q, &actor()).await,
            Err(StoreError::InvalidQuery { field: "limit", .. })
        ));
    }
    assert!(Cursor::decode("not-a-cursor", "after").is_err());
    // Nothing was written, not even an audit event.
    assert!(store.audit_events(&env, 10).await.unwrap().is_empty());
    let q = ListQuery::default();
    assert!(
        store
            .list(&env, &q, &actor())
            .await
            .unwrap()
            .data
            .is_empty()
    );
}

/// 16 concurrent writers on one object, each with the version it last read: each update
/// either wins or gets `Conflict`, and every win is a version.
pub async fn concurrent_writers_never_lose_an_update(store: Arc<dyn Store>) {
    let env = environment("race");
    let meta = store
        .create(
            &env,
            &id(),
            "hot",
            &ctx("o"),
            None,
            version(b"0"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    let wins = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..16u8 {
        let (store, env, id) = (store.clone(), env.clone(), meta.id.clone());
        let (wins, conflicts) = (wins.clone(), conflicts.clone());
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for i in 0..8u8 {
                let current = store.describe(&env, &id, &actor()).await.unwrap();
                match store
                    .update(
                        &env,
                        &id,
                        version(&[w, i]),
                        Some(&current.version_id),
                        &actor(),
                    )
                    .await
                {
                    Ok(m) => {
                        wins.fetch_add(1, Ordering::Relaxed);
                        won.push(m.version_id);
                    }
                    Err(StoreError::Conflict(Conflict::Version)) => {
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("writer {w}: {e}"),
                }
            }
            won
        }));
    }
    let mut won = HashSet::new();
    for t in tasks {
        for v in t.await.unwrap() {
            assert!(won.insert(v), "a version id was handed out twice");
        }
    }
    let wins = wins.load(Ordering::Relaxed);
    assert_eq!(wins + conflicts.load(Ordering::Relaxed), 16 * 8);
    assert!(wins >= 1);
    let versions = store.versions(&env, &meta.id, &actor()).await.unwrap();
    assert_eq!(versions.len() as u64, wins + 1, "versions = successes + 1");
    // Every acknowledged win is there.
    let stored: HashSet<String> = versions.iter().map(|v| v.id.clone()).collect();
    assert!(won.iter().all(|v| stored.contains(v)));
}
