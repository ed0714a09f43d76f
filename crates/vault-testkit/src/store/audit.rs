//! API keys, key events and the audit of reads.

use std::collections::HashSet;
use std::sync::Arc;

use vault_store::{Actor, ApiKeyRecord, Conflict, Store, StoreError, Timestamp, events};

use super::{actor, ctx, environment, id, version};

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
        mac: format!("tag of {id}").into_bytes(),
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

    let at = Timestamp(Timestamp::now().0 - 5);
    // The record must be the one read: a stale change is refused, and the key stays as it was.
    let mut stale = crate::store::record_change(&*store, |_| {}).await;
    stale.expected_mac = b"not the record".to_vec();
    assert_eq!(
        store
            .revoke_api_key(&a.id, at, b"revoked tag", Some(&stale))
            .await,
        Err(StoreError::Conflict(Conflict::Record))
    );
    assert_eq!(
        store.api_key_by_lookup(&a.lookup).await.unwrap().unwrap(),
        a,
        "nothing changed"
    );
    loop {
        let change = crate::store::record_change(&*store, |r| {
            r.revoked_api_keys.push(a.id.clone());
        })
        .await;
        match store
            .revoke_api_key(&a.id, at, b"revoked tag", Some(&change))
            .await
        {
            Err(StoreError::Conflict(Conflict::Record)) => continue,
            other => break other.unwrap(),
        }
    }
    let record = store.integrity().await.unwrap().unwrap();
    assert!(
        record.revoked_api_keys.contains(&a.id),
        "the record says it, in the same transaction"
    );
    let revoked = store.api_key_by_lookup(&a.lookup).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(at));
    assert_eq!(revoked.mac, b"revoked tag", "the tag of the revoked row");
    let unchanged = crate::store::record_change(&*store, |_| {}).await;
    store
        .revoke_api_key(&a.id, Timestamp::now(), b"later tag", Some(&unchanged))
        .await
        .unwrap();
    let again = store.api_key_by_lookup(&a.lookup).await.unwrap().unwrap();
    assert_eq!(
        (again.revoked_at, again.mac.as_slice()),
        (Some(at), &b"revoked tag"[..]),
        "a second revoke changes nothing"
    );
    assert_eq!(
        store
            .revoke_api_key("key_unknown", Timestamp::now(), b"x", None)
            .await,
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
            None,
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
            None,
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
        .create(
            &env,
            &id,
            "read-me",
            &ctx("org_r"),
            None,
            version(b"v"),
            &actor(),
            None,
        )
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
