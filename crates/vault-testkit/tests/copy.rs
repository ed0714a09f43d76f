//! Moving house (`vault store copy`): every object and version copied as stored, an
//! interrupted copy resumed without duplicates, a finished or foreign target refused. From
//! SQLite into SQLite, and into a real PostgreSQL (`VAULT_TEST_POSTGRES_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use vault_crypto::KeyContext;
use vault_store::{Actor, NewVersion, ObjectStore, SqlStore, StoreError};

fn version(bytes: Vec<u8>) -> NewVersion {
    NewVersion {
        id: vault_store::new_version_id().unwrap(),
        at: vault_store::Timestamp::now(),
        size: bytes.len() as u64,
        envelope: bytes,
        key_id: "managed://root#v1".into(),
    }
}

/// Objects `from..to` in `env`, every other one updated once; returns (id, current envelope).
async fn populate(store: &SqlStore, env: &str, from: usize, to: usize) -> Vec<(String, Vec<u8>)> {
    let actor = Actor::new("key_test", "test");
    let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    let mut out = Vec::new();
    for i in from..to {
        let id = vault_store::new_object_id().unwrap();
        let first = format!("envelope-{i}").into_bytes();
        store
            .create(
                env,
                &id,
                &format!("n{i}"),
                &ctx,
                None,
                version(first.clone()),
                &actor,
                None,
            )
            .await
            .unwrap();
        let current = if i % 2 == 0 {
            let second = format!("envelope-{i}-2").into_bytes();
            store
                .update(env, &id, version(second.clone()), None, &actor)
                .await
                .unwrap();
            second
        } else {
            first
        };
        out.push((id, current));
    }
    out
}

async fn copies_resume_and_refuse(target: SqlStore, other: SqlStore) {
    let dir = tempfile::tempdir().unwrap();
    let source = SqlStore::open_sqlite(dir.path()).await.unwrap();
    let actor = Actor::new("key_test", "test");
    // More than one batch (500 rows) of objects and of versions.
    let mut objects = populate(&source, "prod", 0, 700).await;
    let first = source
        .copy_into(&target, "source-a", |_, _| {})
        .await
        .unwrap();
    assert_eq!(first.tables[0], ("objects", 700));
    assert_eq!(first.tables[1], ("versions", 1050));

    // Not finished (as if interrupted): running it again copies what is new, once.
    objects.extend(populate(&source, "prod", 700, 760).await);
    let second = source
        .copy_into(&target, "source-a", |_, _| {})
        .await
        .unwrap();
    assert_eq!(second.tables[0], ("objects", 760));
    for (id, envelope) in &objects {
        let got = target.get("prod", id, &actor).await.unwrap();
        assert_eq!(&got.envelope, envelope);
        let versions = target.versions("prod", id, &actor).await.unwrap();
        let expected = if envelope.ends_with(b"-2") { 2 } else { 1 };
        assert_eq!(versions.len(), expected);
    }

    // Another source into it, or any source once finished: refused.
    assert!(matches!(
        source.copy_into(&target, "source-b", |_, _| {}).await,
        Err(StoreError::InvalidArgument { .. })
    ));
    target.finish_copy().await.unwrap();
    assert!(matches!(
        source.copy_into(&target, "source-a", |_, _| {}).await,
        Err(StoreError::InvalidArgument { .. })
    ));
    // A target that holds data of its own: refused, untouched.
    populate(&other, "mine", 0, 1).await;
    assert!(matches!(
        source.copy_into(&other, "source-a", |_, _| {}).await,
        Err(StoreError::InvalidArgument { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_into_sqlite() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copies_resume_and_refuse(
        SqlStore::open_sqlite(a.path()).await.unwrap(),
        SqlStore::open_sqlite(b.path()).await.unwrap(),
    )
    .await;
}

/// A store on a database of its own on the test cluster.
async fn fresh_postgres(url: &str, label: &str) -> SqlStore {
    let url = vault_testkit::postgres::fresh_database(url, &format!("copy_{label}")).await;
    SqlStore::connect_postgres(&url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_into_postgres() {
    let Ok(url) = std::env::var("VAULT_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "VAULT_TEST_POSTGRES_URL is not set: the PostgreSQL copy must run in CI"
        );
        eprintln!(
            "SKIPPED: copy into PostgreSQL (set VAULT_TEST_POSTGRES_URL or run scripts/test)"
        );
        return;
    };
    copies_resume_and_refuse(
        fresh_postgres(&url, "a").await,
        fresh_postgres(&url, "b").await,
    )
    .await;
}

/// A target holding a row in any table (not only objects, keys, events or rings) is not
/// empty: a copy into it is refused and leaves it as it was.
#[tokio::test]
async fn a_target_with_a_row_in_any_table_is_refused() {
    use vault_store::{IntegrityRecord, IntegrityStore as _, WebhookEndpoint, WebhookStore as _};
    let dir = tempfile::tempdir().unwrap();
    let source = SqlStore::open_sqlite(dir.path()).await.unwrap();
    let objects = populate(&source, "prod", 0, 1).await;
    let actor = Actor::new("key_test", "test");
    let record = IntegrityRecord {
        sealed_key: None,
        byok_generation: 0,
        revoked_api_keys: Vec::new(),
        deleted_webhooks: Vec::new(),
        mac: vec![1; 32],
    };
    let endpoint = WebhookEndpoint {
        id: "we_1".into(),
        environment: "prod".into(),
        url: "https://example.invalid/hook".into(),
        events: vec!["vault.data.read".into()],
        sealed_secret: b"sealed".to_vec(),
        secret_key_id: "managed://root#v1".into(),
        created_at: vault_store::Timestamp::now(),
        pending: 0,
        dead: 0,
        last_error: None,
        mac: vec![2; 32],
    };
    for table in ["integrity", "webhook_endpoints"] {
        let d = tempfile::tempdir().unwrap();
        let target = SqlStore::open_sqlite(d.path()).await.unwrap();
        match table {
            "integrity" => assert!(target.protect(&record, &[], &[], &[]).await.unwrap()),
            _ => target.create_webhook(&endpoint).await.unwrap(),
        }
        let refused = source.copy_into(&target, "source-a", |_, _| {}).await;
        assert!(
            matches!(refused, Err(StoreError::InvalidArgument { .. })),
            "{table}: {refused:?}"
        );
        assert_eq!(
            target.get("prod", &objects[0].0, &actor).await.err(),
            Some(StoreError::NotFound),
            "{table}: nothing copied"
        );
    }
}
