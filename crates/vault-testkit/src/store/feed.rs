//! The event feed: the Events API's listing, retention, idempotent answers and the webhook
//! outbox. Each check takes a store of its own (the retention purge and the outbox's leases
//! reach across environments).

use std::sync::Arc;
use std::time::Duration;

use vault_store::{
    Conflict, EventQuery, Order, Remember, Store, StoreError, Timestamp, WebhookEndpoint, events,
};

use super::{actor, ctx, environment, id, version};

/// The events of `query` once all of them are listable (PostgreSQL lists an event only once
/// every transaction that could hold an earlier one has committed: seconds).
async fn settled(store: &dyn Store, env: &str, query: &EventQuery, expect: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut all = Vec::new();
        let mut q = query.clone();
        loop {
            let page = store.list_events(env, &q).await.unwrap();
            assert!(page.data.len() <= q.limit as usize);
            all.extend(page.data.iter().map(|e| e.event.clone() + " " + &e.id));
            match page.after {
                Some(after) => q.after = Some(after),
                None => break,
            }
        }
        if all.len() >= expect || std::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Events list oldest first in pages linked by `after`, filtered by type, organization and
/// time, scoped to their environment; a bad query is refused.
pub async fn events_are_listed_as_workos_pages_them(store: Arc<dyn Store>) {
    let env = environment("feed");
    let orgs = ["org_a", "org_b", "org_a", "org_a", "org_b"];
    let mut ids = Vec::new();
    for (i, org) in orgs.iter().enumerate() {
        let oid = id();
        store
            .create(
                &env,
                &oid,
                &format!("n{i}"),
                &ctx(org),
                None,
                version(b"v"),
                &actor(),
                None,
            )
            .await
            .unwrap();
        ids.push(oid);
    }
    let middle = Timestamp::now();
    store.get(&env, &ids[0], &actor()).await.unwrap();
    let created = EventQuery {
        events: vec![events::DATA_CREATED.into()],
        limit: 2,
        order: Order::Asc,
        ..EventQuery::default()
    };
    let listed = settled(&*store, &env, &created, 5).await;
    assert_eq!(listed.len(), 5, "{listed:?}");
    let mut distinct = listed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "no event twice across pages");
    // Oldest first: the audit trail's own order, newest first, reversed.
    let trail: Vec<String> = store
        .audit_events(&env, 100)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .filter(|e| e.event == events::DATA_CREATED)
        .map(|e| e.event + " " + &e.id)
        .collect();
    assert_eq!(listed, trail);
    // Newest first on request.
    let desc = settled(
        &*store,
        &env,
        &EventQuery {
            order: Order::Desc,
            ..created.clone()
        },
        5,
    )
    .await;
    assert_eq!(desc, listed.iter().rev().cloned().collect::<Vec<_>>());
    // Two types at once, one organization, a time range.
    let both = EventQuery {
        events: vec![events::DATA_CREATED.into(), events::DATA_READ.into()],
        limit: 100,
        ..created.clone()
    };
    assert_eq!(settled(&*store, &env, &both, 6).await.len(), 6);
    let org_a = EventQuery {
        organization_id: Some("org_a".into()),
        ..both.clone()
    };
    assert_eq!(
        settled(&*store, &env, &org_a, 4).await.len(),
        4,
        "3 created + 1 read"
    );
    let later = EventQuery {
        range_start: Some(middle),
        ..both.clone()
    };
    let after_middle = settled(&*store, &env, &later, 1).await;
    assert_eq!(after_middle.len(), 1, "{after_middle:?}");
    assert!(after_middle[0].starts_with(events::DATA_READ));
    let before = EventQuery {
        range_end: Some(middle),
        ..both.clone()
    };
    assert_eq!(settled(&*store, &env, &before, 5).await.len(), 5);
    // Scoped: another environment sees none, and cannot page from this one's events.
    let other = environment("feed_other");
    assert!(
        store
            .list_events(&other, &both)
            .await
            .unwrap()
            .data
            .is_empty()
    );
    let first_id = listed[0].split(' ').nth(1).unwrap().to_owned();
    let foreign = EventQuery {
        after: Some(first_id),
        ..both.clone()
    };
    assert!(matches!(
        store.list_events(&other, &foreign).await,
        Err(StoreError::InvalidQuery { field: "after", .. })
    ));
    for bad in [
        EventQuery {
            events: Vec::new(),
            ..both.clone()
        },
        EventQuery {
            limit: 0,
            ..both.clone()
        },
        EventQuery {
            limit: 101,
            ..both.clone()
        },
        EventQuery {
            after: Some("event_nope".into()),
            ..both.clone()
        },
    ] {
        assert!(matches!(
            store.list_events(&env, &bad).await,
            Err(StoreError::InvalidQuery { .. })
        ));
    }
}

/// The retention purge removes old events but no issued data key is forgotten by
/// `key_usage`, and events still to be delivered by a webhook stay.
pub async fn retention_keeps_issued_keys_counted(store: Arc<dyn Store>) {
    let env = environment("retention");
    for _ in 0..3 {
        store
            .record_key_event(
                &env,
                events::DEK_READ,
                &actor(),
                "managed://keep#v1",
                &ctx("o"),
                None,
            )
            .await
            .unwrap();
    }
    store
        .create(
            &env,
            &id(),
            "kept",
            &ctx("o"),
            None,
            version(b"v"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    let issued = |usage: Vec<vault_store::KeyUsage>| {
        usage
            .into_iter()
            .find(|u| u.key_id == "managed://keep#v1")
            .map_or(0, |u| u.issued_data_keys)
    };
    assert_eq!(issued(store.key_usage().await.unwrap()), 3);
    // An endpoint subscribed to reads: a read after it is created waits in its outbox.
    let endpoint = endpoint(&env, &[events::DATA_READ]);
    store.create_webhook(&endpoint).await.unwrap();
    let oid = id();
    store
        .create(
            &env,
            &oid,
            "read-me",
            &ctx("o"),
            None,
            version(b"v"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    store.get(&env, &oid, &actor()).await.unwrap();
    let future = Timestamp(Timestamp::now().0 + 1_000_000);
    let removed = store.purge_events(future).await.unwrap();
    assert!(removed >= 5, "{removed}");
    let left = store.audit_events(&env, 100).await.unwrap();
    assert_eq!(left.len(), 1, "only the undelivered read stays: {left:?}");
    assert_eq!(left[0].event, events::DATA_READ);
    assert_eq!(issued(store.key_usage().await.unwrap()), 3, "still counted");
    // A second purge adds nothing twice.
    store.purge_events(future).await.unwrap();
    assert_eq!(issued(store.key_usage().await.unwrap()), 3);
}

fn endpoint(env: &str, names: &[&str]) -> WebhookEndpoint {
    WebhookEndpoint {
        id: format!("we_{}", &id()["secret_".len()..]),
        environment: env.to_owned(),
        url: "http://127.0.0.1:9/hook".into(),
        events: names.iter().map(|&n| n.to_owned()).collect(),
        sealed_secret: b"sealed".to_vec(),
        secret_key_id: "managed://root#v1".into(),
        created_at: Timestamp::now(),
        pending: 0,
        dead: 0,
        last_error: None,
        mac: b"endpoint tag".to_vec(),
    }
}

/// An answer is stored once per (owner, key): a second store of it fails as `Answered` and
/// rolls its change back; it is read back as stored.
pub async fn idempotent_answers_are_stored_with_their_change(store: Arc<dyn Store>) {
    let env = environment("idem");
    let remember = |key: &str| Remember {
        owner: "key_a".into(),
        key: key.into(),
        request_hash: [7; 32],
        status: 201,
        // Rendered and tagged above the store; the store keeps the bytes as given.
        body: format!("answer {key}").into_bytes(),
        mac: format!("tag {key}").into_bytes(),
        at: Timestamp::now(),
    };
    let first = id();
    let meta = store
        .create(
            &env,
            &first,
            "one",
            &ctx("o"),
            None,
            version(b"v"),
            &actor(),
            Some(&remember("k1")),
        )
        .await
        .unwrap();
    let stored = store.remembered("key_a", "k1").await.unwrap().unwrap();
    assert_eq!(stored.status, 201);
    assert_eq!(stored.body, b"answer k1");
    assert_eq!(stored.request_hash, vec![7; 32]);
    assert_eq!(stored.mac, b"tag k1", "the tag kept as given");
    assert!(store.describe(&env, &meta.id, &actor()).await.is_ok());
    assert_eq!(
        store.remembered("key_b", "k1").await.unwrap(),
        None,
        "per owner"
    );
    // The same key again: refused, and the object is not created.
    let second = id();
    assert_eq!(
        store
            .create(
                &env,
                &second,
                "two",
                &ctx("o"),
                None,
                version(b"v"),
                &actor(),
                Some(&remember("k1"))
            )
            .await,
        Err(StoreError::Conflict(Conflict::Answered))
    );
    assert_eq!(
        store.describe(&env, &second, &actor()).await,
        Err(StoreError::NotFound)
    );
    // A data-key event with an answer: both or neither.
    let fixed = Remember {
        body: b"{}".to_vec(),
        ..remember("k2")
    };
    store
        .record_key_event(
            &env,
            events::DEK_READ,
            &actor(),
            "managed://root#v1",
            &ctx("o"),
            Some(&fixed),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .record_key_event(
                &env,
                events::DEK_READ,
                &actor(),
                "managed://root#v1",
                &ctx("o"),
                Some(&fixed)
            )
            .await,
        Err(StoreError::Conflict(Conflict::Answered))
    );
    let deks = store
        .audit_events(&env, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == events::DEK_READ)
        .count();
    assert_eq!(deks, 1, "the refused event is not recorded");
    // Answers older than 24 hours are forgotten.
    let later = Timestamp(Timestamp::now().0 + 1_000_000);
    assert!(store.forget_answers(later).await.unwrap() >= 2);
    assert_eq!(store.remembered("key_a", "k1").await.unwrap(), None);
}

/// Every event an endpoint subscribed to enters its outbox in the event's transaction, in
/// order; deliveries are leased to one owner at a time, removed when delivered, dead after
/// giving up, revived by a replay, and gone with their endpoint.
pub async fn the_webhook_outbox_holds_every_subscribed_event(store: Arc<dyn Store>) {
    let env = environment("hooks");
    let ep = endpoint(&env, &[events::DATA_CREATED, events::DATA_DELETED]);
    store.create_webhook(&ep).await.unwrap();
    let other_env = endpoint(&environment("hooks_other"), &[events::DATA_CREATED]);
    store.create_webhook(&other_env).await.unwrap();
    let oid = id();
    store
        .create(
            &env,
            &oid,
            "a",
            &ctx("o"),
            None,
            version(b"v"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    store.get(&env, &oid, &actor()).await.unwrap(); // not subscribed
    store.delete(&env, &oid, None, &actor()).await.unwrap();
    let listed = store.webhooks(Some(&env)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].pending, listed[0].dead), (2, 0));
    assert_eq!(store.webhooks(None).await.unwrap().len(), 2);
    let now = Timestamp::now();
    let until = Timestamp(now.0 + 30_000_000);
    let leased = store
        .lease_webhook("owner_1", now, until)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        leased.id, ep.id,
        "only endpoints with deliveries due are leased"
    );
    assert_eq!(
        store.lease_webhook("owner_2", now, until).await.unwrap(),
        None
    );
    let first = store.next_delivery(&ep.id).await.unwrap().unwrap();
    assert_eq!(first.event.event, events::DATA_CREATED);
    assert_eq!(first.event.object_id.as_deref(), Some(oid.as_str()));
    assert!(
        !store
            .delivered(&ep.id, first.seq, "owner_2", until)
            .await
            .unwrap(),
        "only the lease's owner settles a delivery"
    );
    assert!(
        store
            .delivered(&ep.id, first.seq, "owner_1", until)
            .await
            .unwrap()
    );
    let second = store.next_delivery(&ep.id).await.unwrap().unwrap();
    assert_eq!(second.event.event, events::DATA_DELETED);
    assert!(second.seq > first.seq);
    assert!(
        store
            .delivery_failed(
                &ep.id,
                second.seq,
                "owner_1",
                Timestamp(now.0 + 60_000_000),
                true,
                "answered 500",
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.next_delivery(&ep.id).await.unwrap(),
        None,
        "dead is skipped"
    );
    assert!(
        store
            .renew_webhook_lease(&ep.id, "owner_1", until)
            .await
            .unwrap()
    );
    assert!(
        !store
            .renew_webhook_lease(&ep.id, "owner_2", until)
            .await
            .unwrap()
    );
    store.release_webhook(&ep.id, "owner_1").await.unwrap();
    let listed = store.webhooks(Some(&env)).await.unwrap();
    assert_eq!((listed[0].pending, listed[0].dead), (0, 1));
    assert_eq!(listed[0].last_error.as_deref(), Some("answered 500"));
    assert_eq!(store.replay_webhook(&ep.id).await.unwrap(), 1);
    let revived = store.next_delivery(&ep.id).await.unwrap().unwrap();
    assert_eq!((revived.seq, revived.attempts), (second.seq, 0));
    // An endpoint whose oldest delivery waits for a retry is not leased, even with newer
    // events due behind it (they wait: in order).
    let now = Timestamp::now();
    let leased = store
        .lease_webhook("owner_3", now, until)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.id, ep.id);
    assert!(
        store
            .delivery_failed(
                &ep.id,
                second.seq,
                "owner_3",
                Timestamp(now.0 + 60_000_000),
                false,
                "timed out"
            )
            .await
            .unwrap()
    );
    store.release_webhook(&ep.id, "owner_3").await.unwrap();
    store
        .create(
            &env,
            &id(),
            "b",
            &ctx("o"),
            None,
            version(b"v"),
            &actor(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.webhooks(Some(&env)).await.unwrap()[0].pending, 2);
    assert_eq!(
        store
            .lease_webhook("owner_4", Timestamp::now(), until)
            .await
            .unwrap(),
        None
    );
    // The secret is replaced only if unchanged.
    assert_eq!(
        store
            .replace_webhook_secret(&ep.id, b"not it", b"new", "managed://root#v2", b"t2")
            .await,
        Err(StoreError::Conflict(Conflict::Version))
    );
    store
        .replace_webhook_secret(&ep.id, b"sealed", b"new", "managed://root#v2", b"t2")
        .await
        .unwrap();
    let replaced = store.webhooks(Some(&env)).await.unwrap();
    let replaced = replaced.iter().find(|e| e.id == ep.id).unwrap();
    assert_eq!(
        (replaced.sealed_secret.as_slice(), replaced.mac.as_slice()),
        (&b"new"[..], &b"t2"[..]),
        "the secret and its row's tag are replaced together"
    );
    let change = crate::store::record_change(&*store, |r| {
        r.deleted_webhooks.push(ep.id.clone());
    })
    .await;
    store.delete_webhook(&ep.id, &change).await.unwrap();
    assert!(
        store
            .integrity()
            .await
            .unwrap()
            .unwrap()
            .deleted_webhooks
            .contains(&ep.id)
    );
    assert_eq!(store.next_delivery(&ep.id).await.unwrap(), None);
    assert_eq!(
        store
            .delete_webhook(&ep.id, &crate::store::record_change(&*store, |_| {}).await)
            .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store.replay_webhook(&ep.id).await,
        Err(StoreError::NotFound)
    );
    // Unknown event names are refused.
    let mut bad = endpoint(&env, &["vault.nope"]);
    assert!(store.create_webhook(&bad).await.is_err());
    bad.events.clear();
    assert!(store.create_webhook(&bad).await.is_err());
}

/// The BYOK document: absent at generation 0; replaced whole by compare-and-swap (a stale
/// writer gets a conflict and changes nothing); resealed without a new generation; its seal's
/// key counted as a stored value. A deployment event reaches exactly the environments that
/// used its organization, with its detail, and only a JSON object is accepted as detail.
pub async fn byok_config_is_swapped_whole(store: Arc<dyn Store>) {
    use vault_store::{ByokConfig, DeploymentEvent, IntegrityRecord, RecordChange};
    assert_eq!(store.byok_generation().await.unwrap(), 0);
    assert_eq!(store.byok_config().await.unwrap(), None);
    let doc = |generation: u64, text: &str| ByokConfig {
        generation,
        document: text.into(),
        seal: format!("seal {generation}").into_bytes(),
        seal_key_id: "managed://byok-test#v1".into(),
    };
    let change = |generation: u64, expected: &[u8], mac: &[u8]| RecordChange {
        expected_mac: expected.to_vec(),
        record: IntegrityRecord {
            sealed_key: None,
            byok_generation: generation,
            revoked_api_keys: Vec::new(),
            deleted_webhooks: Vec::new(),
            mac: mac.to_vec(),
        },
    };
    // Without an integrity record there is nowhere to record what exists: refused.
    let err = store
        .replace_byok_config(0, &doc(1, "unrecorded"), &change(1, b"tag 0", b"tag 1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::ByokChanged)),
        "{err:?}"
    );
    assert_eq!(store.byok_config().await.unwrap(), None, "nothing written");
    assert!(
        store
            .protect(&change(0, b"", b"tag 0").record, &[], &[], &[])
            .await
            .unwrap()
    );
    assert!(
        !store
            .protect(&change(0, b"", b"another").record, &[], &[], &[])
            .await
            .unwrap(),
        "protected once"
    );
    let recorded = || async { store.integrity().await.unwrap().unwrap() };
    let err = store
        .replace_byok_config(0, &doc(2, "skips one"), &change(2, b"tag 0", b"tag 2"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidArgument {
                field: "generation",
                ..
            }
        ),
        "{err:?}"
    );
    store
        .replace_byok_config(0, &doc(1, "first"), &change(1, b"tag 0", b"tag 1"))
        .await
        .unwrap();
    // The record follows the document, in its transaction.
    let r = recorded().await;
    assert_eq!((r.byok_generation, r.mac.as_slice()), (1, &b"tag 1"[..]));
    // A second writer that read generation 0 too: refused, nothing changes.
    let err = store
        .replace_byok_config(0, &doc(1, "lost"), &change(1, b"tag 0", b"lost tag"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::ByokChanged)),
        "{err:?}"
    );
    assert_eq!(store.byok_config().await.unwrap(), Some(doc(1, "first")));
    store
        .replace_byok_config(1, &doc(2, "second"), &change(2, b"tag 1", b"tag 2"))
        .await
        .unwrap();
    let err = store
        .replace_byok_config(1, &doc(2, "stale"), &change(2, b"tag 1", b"stale tag"))
        .await
        .unwrap_err();
    let r = recorded().await;
    assert_eq!(
        (r.byok_generation, r.mac.as_slice()),
        (2, &b"tag 2"[..]),
        "a refused change records nothing"
    );
    assert!(
        matches!(err, StoreError::Conflict(Conflict::ByokChanged)),
        "{err:?}"
    );
    assert_eq!(store.byok_generation().await.unwrap(), 2);
    let usage = store.key_usage().await.unwrap();
    let sealed = usage
        .iter()
        .find(|u| u.key_id == "managed://byok-test#v1")
        .unwrap();
    assert_eq!(sealed.stored_versions, 1);

    // A rewrap replaces the seal only, and only the one it read.
    let err = store
        .reseal_byok_config(b"not it", b"new", "managed://byok-test#v2")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::ByokChanged)),
        "{err:?}"
    );
    store
        .reseal_byok_config(b"seal 2", b"resealed", "managed://byok-test#v2")
        .await
        .unwrap();
    let now = store.byok_config().await.unwrap().unwrap();
    assert_eq!(
        (now.generation, now.document.as_str(), now.seal.as_slice()),
        (2, "second", &b"resealed"[..])
    );
    assert_eq!(now.seal_key_id, "managed://byok-test#v2");
    let usage = store.key_usage().await.unwrap();
    assert!(
        usage.iter().all(|u| u.key_id != "managed://byok-test#v1"),
        "{usage:?}"
    );

    // A deployment event: one copy per environment that stored a value for the organization,
    // none elsewhere (one that only asked for a data key naming it gets none).
    let org = format!("org_{}", environment("o").replace('_', ""));
    let (e1, e2, other, asked) = (
        environment("byok1"),
        environment("byok2"),
        environment("byok3"),
        environment("byok4"),
    );
    store
        .record_key_event(
            &asked,
            events::DEK_READ,
            &actor(),
            "aws-kms://k",
            &ctx(&org),
            None,
        )
        .await
        .unwrap();
    for (e, o) in [
        (&e1, org.as_str()),
        (&e2, org.as_str()),
        (&other, "org_unrelated"),
    ] {
        store
            .create(e, &id(), "n", &ctx(o), None, version(b"v"), &actor(), None)
            .await
            .unwrap();
    }
    let event = DeploymentEvent {
        event: events::BYOK_VERIFIED.into(),
        actor: actor(),
        key_id: Some("aws-kms://".into()),
        key_context: Some(ctx(&org)),
        detail: Some(r#"{"verified":true}"#.into()),
    };
    assert_eq!(store.record_deployment_event(&event).await.unwrap(), 2);
    let no_org = DeploymentEvent {
        key_context: None,
        ..event.clone()
    };
    assert_eq!(store.record_deployment_event(&no_org).await.unwrap(), 0);
    let bad = DeploymentEvent {
        detail: Some("[1]".into()),
        ..event.clone()
    };
    assert!(matches!(
        store.record_deployment_event(&bad).await,
        Err(StoreError::InvalidArgument {
            field: "detail",
            ..
        })
    ));
    let q = EventQuery {
        events: vec![events::BYOK_VERIFIED.into()],
        limit: 10,
        ..EventQuery::default()
    };
    for e in [&e1, &e2] {
        let listed = settled(&*store, e, &q, 1).await;
        assert_eq!(listed.len(), 1, "{e}: {listed:?}");
        let all = store.audit_events(e, 10).await.unwrap();
        let byok = all
            .iter()
            .find(|x| x.event == events::BYOK_VERIFIED)
            .unwrap();
        assert_eq!(byok.detail.as_deref(), Some(r#"{"verified":true}"#));
    }
    let all = store.audit_events(&other, 10).await.unwrap();
    assert!(
        all.iter().all(|x| x.event != events::BYOK_VERIFIED),
        "{all:?}"
    );
}
