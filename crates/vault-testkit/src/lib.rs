//! Conformance suites, run against every backend. The [`Store`] checks (this module) run on
//! SQLite and PostgreSQL from `crates/vault-store/tests/conformance.rs`; each uses environments
//! of its own, so checks can share one database and run concurrently. The [`provider`] checks
//! run on the managed provider and on AWS KMS (moto).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // A test suite: a panic is a failure.

pub mod azure_fake;
pub mod gcp_fake;
pub mod provider;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vault_crypto::KeyContext;
use vault_store::{
    Actor, ApiKeyRecord, Conflict, Cursor, ListQuery, NewVersion, Order, Store, StoreError,
    Timestamp, events,
};

/// A fresh environment name, unique across runs and processes.
pub fn environment(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("env_{label}_{}_{nanos:x}_{n}", std::process::id())
}

fn id() -> String {
    vault_store::new_object_id().unwrap()
}

fn actor() -> Actor {
    Actor::new("key_test", "Test key")
}

fn ctx(org: &str) -> KeyContext {
    KeyContext::from_pairs([("organization_id", org)]).unwrap()
}

fn version(bytes: &[u8]) -> NewVersion {
    NewVersion {
        envelope: bytes.to_vec(),
        size: bytes.len() as u64,
        key_id: "managed://root#v1".into(),
    }
}

/// Create, read by id and by name, describe: the same object and metadata each way.
pub async fn create_and_read(store: Arc<dyn Store>) {
    let env = environment("create");
    let meta = store
        .create(
            &env,
            &id(),
            "  card/4111  ",
            &ctx("org_1"),
            version(b"env-1"),
            &actor(),
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
        .create(&a, &id(), "n", &ctx("o"), version(b"1"), &actor())
        .await
        .unwrap();
    assert!(matches!(
        store
            .create(&a, &id(), "n", &ctx("o"), version(b"2"), &actor())
            .await,
        Err(StoreError::Conflict(Conflict::Name))
    ));
    // The same name in another environment is another object.
    store
        .create(&b, &id(), "n", &ctx("o"), version(b"3"), &actor())
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
        .create(&env, &id(), "obj", &ctx("o"), version(b"one"), &actor())
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
        .create(&env, &id(), "name", &ctx("o"), version(b"a"), &actor())
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
        .create(&env, &id(), "name", &ctx("o"), version(b"c"), &actor())
        .await
        .unwrap();
    assert_ne!(reborn.id, gone.id);

    // Nothing deleted before the start of time; everything deleted before now, once.
    assert_eq!(store.purge(Timestamp(0), &actor()).await.unwrap(), 0);
    let purged = store
        .purge(Timestamp(Timestamp::now().0 + 1), &actor())
        .await
        .unwrap();
    assert!(purged >= 1);
    assert_eq!(
        store
            .purge(Timestamp(Timestamp::now().0 + 1), &actor())
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
    // The purge is on the record: one event for the purged object, by the purging actor.
    let purged: Vec<_> = audit
        .iter()
        .filter(|e| e.event == events::DATA_PURGED)
        .collect();
    assert_eq!(purged.len(), 1, "{audit:?}");
    assert_eq!(purged[0].object_id.as_deref(), Some(gone.id.as_str()));
    assert_eq!(purged[0].object_name.as_deref(), Some("name"));
    assert_eq!(purged[0].actor.id, actor().id);
}

/// Replacing a stored envelope (a rewrap) happens only over the expected bytes, and each
/// replacement is audited with the new key reference and the object's context.
pub async fn rewraps_are_conditional_and_audited(store: Arc<dyn Store>) {
    let env = environment("rewrap");
    let meta = store
        .create(&env, &id(), "moved", &ctx("o"), version(b"old"), &actor())
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
                .create(&env, &id(), name, &ctx("o"), version(b"v"), &actor())
                .await,
            Err(StoreError::InvalidArgument { field: "name", .. })
        ));
    }
    assert!(matches!(
        store
            .create("bad env!", &id(), "n", &ctx("o"), version(b"v"), &actor())
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
        .create(&env, &id(), "hot", &ctx("o"), version(b"0"), &actor())
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

/// Walk every page forward and backward with small limits while objects are created and
/// deleted: no object that existed throughout is skipped or repeated.
pub async fn pagination_is_stable(store: Arc<dyn Store>) {
    let env = environment("pages");
    let mut stable = BTreeSet::new();
    for i in 0..240 {
        let m = store
            .create(
                &env,
                &id(),
                &format!("item-{i:03}"),
                &ctx("o"),
                version(b"v"),
                &actor(),
            )
            .await
            .unwrap();
        stable.insert(m.id);
    }
    let mut churn: Vec<String> = Vec::new();
    for order in [Order::Desc, Order::Asc] {
        // Forward.
        let mut seen = Vec::new();
        let mut after = None;
        let mut step = 0;
        loop {
            let q = ListQuery {
                limit: Some(7),
                after: after.clone(),
                order,
                ..ListQuery::default()
            };
            let page = store.list(&env, &q, &actor()).await.unwrap();
            seen.extend(page.data.iter().map(|i| i.id.clone()));
            step += 1;
            // Interleave: create one object and delete an earlier churn object each page.
            let m = store
                .create(
                    &env,
                    &id(),
                    &format!("churn-{order:?}-{step}"),
                    &ctx("o"),
                    version(b"c"),
                    &actor(),
                )
                .await
                .unwrap();
            churn.push(m.id);
            if churn.len() > 2 {
                let old = churn.remove(0);
                store.delete(&env, &old, None, &actor()).await.unwrap();
            }
            match page.after {
                Some(c) => after = Some(Cursor::decode(&c, "after").unwrap()),
                None => break,
            }
        }
        check_walk(&stable, &seen, "forward");
        let ordered: Vec<&String> = seen.iter().filter(|id| stable.contains(*id)).collect();

        // Backward: walk to the last page with `after`, then come back with `before`.
        let mut back = Vec::new();
        let q = ListQuery {
            limit: Some(5),
            order,
            ..ListQuery::default()
        };
        let mut page = store.list(&env, &q, &actor()).await.unwrap();
        while let Some(c) = page.after.clone() {
            let q = ListQuery {
                limit: Some(5),
                after: Some(Cursor::decode(&c, "after").unwrap()),
                order,
                ..ListQuery::default()
            };
            page = store.list(&env, &q, &actor()).await.unwrap();
        }
        back.extend(page.data.iter().rev().map(|i| i.id.clone()));
        while let Some(c) = page.before.clone() {
            let before = Some(Cursor::decode(&c, "before").unwrap());
            let q = ListQuery {
                limit: Some(5),
                before,
                order,
                ..ListQuery::default()
            };
            page = store.list(&env, &q, &actor()).await.unwrap();
            back.extend(page.data.iter().rev().map(|i| i.id.clone()));
            let m = store
                .create(
                    &env,
                    &id(),
                    &format!("churn-back-{order:?}-{}", back.len()),
                    &ctx("o"),
                    version(b"c"),
                    &actor(),
                )
                .await
                .unwrap();
            churn.push(m.id);
            let old = churn.remove(0);
            store.delete(&env, &old, None, &actor()).await.unwrap();
        }
        check_walk(&stable, &back, "backward");
        let mut back_ordered: Vec<&String> =
            back.iter().filter(|id| stable.contains(*id)).collect();
        back_ordered.reverse();
        assert_eq!(
            back_ordered, ordered,
            "backward walk visits the same order reversed"
        );
    }
}

fn check_walk(stable: &BTreeSet<String>, seen: &[String], what: &str) {
    let mut once = HashSet::new();
    for id in seen {
        assert!(once.insert(id), "{what}: {id} listed twice");
    }
    for id in stable {
        assert!(once.contains(id), "{what}: {id} skipped");
    }
}

/// Search and `updated_after` filter; list items carry metadata only.
pub async fn list_filters(store: Arc<dyn Store>) {
    let env = environment("filters");
    store
        .create(&env, &id(), "Alpha_One", &ctx("o"), version(b"v"), &actor())
        .await
        .unwrap();
    let cut = Timestamp::now();
    store
        .create(&env, &id(), "beta%two", &ctx("o"), version(b"v"), &actor())
        .await
        .unwrap();
    store
        .create(&env, &id(), "gamma", &ctx("o"), version(b"v"), &actor())
        .await
        .unwrap();
    let names = |q: ListQuery| {
        let store = store.clone();
        let env = env.clone();
        async move {
            let mut n: Vec<String> = store
                .list(&env, &q, &actor())
                .await
                .unwrap()
                .data
                .into_iter()
                .map(|i| i.name)
                .collect();
            n.sort();
            n
        }
    };
    let search = |text: &str| ListQuery {
        search: Some(text.into()),
        ..ListQuery::default()
    };
    // Case-insensitive; `%` and `_` are literal characters, not wildcards.
    let cases: [(&str, &[&str]); 4] = [
        ("alpha", &["Alpha_One"]),
        ("A_O", &["Alpha_One"]),
        ("%", &["beta%two"]),
        ("a_o_", &[]),
    ];
    for (text, expected) in cases {
        assert_eq!(names(search(text)).await, expected, "search {text:?}");
    }
    let recent = ListQuery {
        updated_after: Some(cut),
        ..ListQuery::default()
    };
    assert_eq!(names(recent).await, ["beta%two", "gamma"]);
}

/// API key records: stored, found by lookup, revoked (idempotently), listed; a duplicate lookup
/// is a conflict; an unknown id is not found.
pub async fn api_keys(store: Arc<dyn Store>) {
    let env = environment("keys");
    let unique = env.replace('_', "");
    let record = |id: &str, lookup: &str| ApiKeyRecord {
        id: format!("key_{id}{unique}"),
        lookup: format!("{lookup}{unique}"),
        hash: vec![0xa5; 32],
        environment: env.clone(),
        name: "CI key".into(),
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    let a = record("a", "la");
    store.create_api_key(&a).await.unwrap();
    assert_eq!(
        store.api_key_by_lookup(&a.lookup).await.unwrap().as_ref(),
        Some(&a)
    );
    assert_eq!(store.api_key_by_lookup("nope").await.unwrap(), None);
    let dup = ApiKeyRecord {
        id: format!("key_b{unique}"),
        ..a.clone()
    };
    assert!(matches!(
        store.create_api_key(&dup).await,
        Err(StoreError::Conflict(Conflict::ApiKey))
    ));
    let bad_env = ApiKeyRecord {
        environment: "no spaces".into(),
        ..record("c", "lc")
    };
    assert!(matches!(
        store.create_api_key(&bad_env).await,
        Err(StoreError::InvalidArgument { .. })
    ));

    store.revoke_api_key(&a.id).await.unwrap();
    let revoked = store.api_key_by_lookup(&a.lookup).await.unwrap().unwrap();
    let at = revoked.revoked_at.expect("revoked");
    store.revoke_api_key(&a.id).await.unwrap();
    let again = store.api_key_by_lookup(&a.lookup).await.unwrap().unwrap();
    assert_eq!(
        again.revoked_at,
        Some(at),
        "a second revoke changes nothing"
    );
    assert_eq!(
        store.revoke_api_key("key_unknown").await,
        Err(StoreError::NotFound)
    );
    let listed = store.api_keys().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|k| k.id == a.id && k.revoked_at.is_some())
    );
    assert!(!listed.iter().any(|k| k.id == dup.id));
}

/// Data-key events land in the environment's audit trail with the key and context.
pub async fn key_events(store: Arc<dyn Store>) {
    let env = environment("dek");
    store
        .record_key_event(
            &env,
            events::DEK_READ,
            &actor(),
            "managed://root#v1",
            &ctx("org_k"),
        )
        .await
        .unwrap();
    store
        .record_key_event(
            &env,
            events::DEK_DECRYPTED,
            &actor(),
            "managed://root#v1",
            &ctx("org_k"),
        )
        .await
        .unwrap();
    let got = store.audit_events(&env, 10).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].event, events::DEK_DECRYPTED);
    assert_eq!(got[1].event, events::DEK_READ);
    assert_eq!(got[0].key_id.as_deref(), Some("managed://root#v1"));
    assert_eq!(
        got[0].key_context.as_deref(),
        Some(r#"{"organization_id":"org_k"}"#)
    );
    assert_eq!(got[0].object_id, None);
    assert!(
        store
            .audit_events(&environment("other"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Reads are audited in group commits: 64 concurrent reads each leave exactly one event, and
/// each answer comes only after its event is stored.
pub async fn concurrent_reads_are_each_audited(store: Arc<dyn Store>) {
    let env = environment("reads");
    let id = id();
    store
        .create(&env, &id, "read-me", &ctx("org_r"), version(b"v"), &actor())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (store, env, id) = (store.clone(), env.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let who = Actor::new(format!("key_{i}"), "reader");
            if i % 2 == 0 {
                store.get(&env, &id, &who).await.unwrap();
            } else {
                store.describe(&env, &id, &who).await.unwrap();
            }
            // Answered: the event is already in the trail.
            let trail = store.audit_events(&env, 1000).await.unwrap();
            assert!(trail.iter().any(|e| e.actor.id == who.id), "{i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let trail = store.audit_events(&env, 1000).await.unwrap();
    let reads = trail
        .iter()
        .filter(|e| e.event == events::DATA_READ)
        .count();
    let metadata = trail
        .iter()
        .filter(|e| e.event == events::METADATA_READ)
        .count();
    assert_eq!((reads, metadata), (32, 32));
    let actors: HashSet<&str> = trail.iter().map(|e| e.actor.id.as_str()).collect();
    assert_eq!(actors.len(), 65, "64 readers and the creator");
    assert!(
        trail
            .iter()
            .filter(|e| e.event != events::DATA_CREATED)
            .all(|e| e.object_id.as_deref() == Some(id.as_str()))
    );
}

/// Every check of the suite, in order.
pub async fn run_all(store: Arc<dyn Store>) {
    create_and_read(store.clone()).await;
    names_and_environments(store.clone()).await;
    versions_and_expected_version(store.clone()).await;
    delete_and_purge(store.clone()).await;
    rewraps_are_conditional_and_audited(store.clone()).await;
    bad_input_changes_nothing(store.clone()).await;
    concurrent_writers_never_lose_an_update(store.clone()).await;
    pagination_is_stable(store.clone()).await;
    list_filters(store.clone()).await;
    api_keys(store.clone()).await;
    key_events(store.clone()).await;
    concurrent_reads_are_each_audited(store).await;
}

/// Replays the committed corpus of cargo-fuzz target `target` (`fuzz/corpus/<target>/`) through
/// `check`, the entry point the target calls, so plain `cargo test` exercises every target on
/// any toolchain. Fails on any input that panics, and on a corpus of fewer than 10 inputs.
pub fn replay_corpus(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        count += 1;
    }
    assert!(count >= 10, "{target}: only {count} corpus entries");
}
