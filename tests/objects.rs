//! The `Vault` facade and `vault kv` end to end on the embedded default (SQLite + managed key):
//! sealing through the router, binding of envelopes to their object, crash durability, exit
//! codes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use vault::{Vault, VaultError};
use vault_crypto::{Envelope, KeyContext, ManagedKeyProvider, Router};
use vault_store::{Actor, ListQuery, NewVersion, SqlStore, Store, StoreError};

fn actor() -> Actor {
    Actor::new("key_test", "test")
}

fn ctx(org: &str) -> KeyContext {
    KeyContext::from_pairs([("organization_id", org)]).unwrap()
}

async fn vault_with_byok(dir: &Path) -> (Vault, Arc<dyn Store>) {
    let managed = Arc::new(ManagedKeyProvider::open_or_create(dir, "root").unwrap());
    let byok = Arc::new(ManagedKeyProvider::in_memory("org-byok").unwrap());
    let router = Router::new(managed)
        .rule([("organization_id", "org_byok")], byok)
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir).await.unwrap());
    (
        Vault::new(Arc::new(router), store.clone(), fresh_integrity()),
        store,
    )
}

#[tokio::test]
async fn objects_are_sealed_per_context_and_keep_their_context() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, store) = vault_with_byok(dir.path()).await;
    let shared = vault
        .create("prod", "a", &ctx("org_1"), None, b"alpha", &actor())
        .await
        .unwrap();
    let byok = vault
        .create("prod", "b", &ctx("org_byok"), None, b"beta", &actor())
        .await
        .unwrap();
    assert_eq!(shared.key_id, "managed://root#v1");
    assert_eq!(byok.key_id, "managed://org-byok#v1");

    let updated = vault
        .update(
            "prod",
            &byok.id,
            b"beta 2",
            Some(&byok.version_id),
            None,
            &actor(),
        )
        .await
        .unwrap();
    assert_eq!(
        updated.context,
        ctx("org_byok"),
        "update keeps the object's context"
    );
    assert_eq!(updated.key_id, "managed://org-byok#v1");
    let read = vault.read("prod", &byok.id, &actor()).await.unwrap();
    assert_eq!(read.value, b"beta 2");
    assert_eq!(
        vault
            .read_by_name("prod", "a", &actor())
            .await
            .unwrap()
            .value,
        b"alpha"
    );
    // What the store holds is an envelope for that context, not the value.
    let stored = store.get("prod", &byok.id, &actor()).await.unwrap();
    assert_eq!(
        Envelope::parse(&stored.envelope).unwrap().context(),
        &ctx("org_byok")
    );
    assert!(!stored.envelope.windows(6).any(|w| w == b"beta 2"));
    assert_eq!(
        vault
            .versions("prod", &byok.id, &actor())
            .await
            .unwrap()
            .len(),
        2
    );
    // A stale writer loses.
    assert!(matches!(
        vault
            .update(
                "prod",
                &byok.id,
                b"lost",
                Some(&byok.version_id),
                None,
                &actor()
            )
            .await,
        Err(VaultError::Store(StoreError::Conflict { .. }))
    ));
}

/// An update that states a context is refused unless it is the object's own, and writes
/// nothing; stating the object's own context is no change and is taken.
#[tokio::test]
async fn an_update_cannot_change_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _store) = vault_with_byok(dir.path()).await;
    let meta = vault
        .create("prod", "a", &ctx("org_1"), None, b"one", &actor())
        .await
        .unwrap();
    let refused = vault
        .update(
            "prod",
            &meta.id,
            b"moved",
            None,
            Some(&ctx("org_byok")),
            &actor(),
        )
        .await;
    assert!(
        matches!(refused, Err(VaultError::ContextImmutable)),
        "{refused:?}"
    );
    assert_eq!(
        vault
            .versions("prod", &meta.id, &actor())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        vault.read("prod", &meta.id, &actor()).await.unwrap().value,
        b"one"
    );
    let same = vault
        .update(
            "prod",
            &meta.id,
            b"two",
            None,
            Some(&ctx("org_1")),
            &actor(),
        )
        .await
        .unwrap();
    assert_eq!(same.context, ctx("org_1"));
    assert_eq!(
        vault.read("prod", &meta.id, &actor()).await.unwrap().value,
        b"two"
    );
}

#[tokio::test]
async fn an_envelope_moved_to_another_object_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, store) = vault_with_byok(dir.path()).await;
    let a = vault
        .create("prod", "a", &ctx("org_1"), None, b"secret of a", &actor())
        .await
        .unwrap();
    let b = vault
        .create("prod", "b", &ctx("org_1"), None, b"secret of b", &actor())
        .await
        .unwrap();
    // Someone with write access to the database copies a's envelope into b (same context).
    let stolen = store.get("prod", &a.id, &actor()).await.unwrap().envelope;
    let version = NewVersion {
        id: vault_store::new_version_id().unwrap(),
        at: vault_store::Timestamp::now(),
        size: 11,
        key_id: a.key_id.clone(),
        envelope: stolen,
    };
    store
        .update("prod", &b.id, version, None, &actor())
        .await
        .unwrap();
    assert!(matches!(
        vault.read("prod", &b.id, &actor()).await,
        Err(VaultError::Crypto(vault_crypto::Error::DecryptionFailed))
    ));
    assert_eq!(
        vault.read("prod", &a.id, &actor()).await.unwrap().value,
        b"secret of a"
    );
}

#[tokio::test]
async fn bad_input_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, store) = vault_with_byok(dir.path()).await;
    for name in ["", " ", &"n".repeat(201)] {
        assert!(matches!(
            vault
                .create("prod", name, &ctx("o"), None, b"v", &actor())
                .await,
            Err(VaultError::Store(StoreError::InvalidArgument {
                field: "name",
                ..
            }))
        ));
    }
    assert!(
        vault
            .list("prod", &ListQuery::default(), &actor())
            .await
            .unwrap()
            .data
            .is_empty()
    );
    assert!(
        store
            .audit_events("prod", 10)
            .await
            .unwrap()
            .iter()
            .all(|e| e.event == "vault.names.listed")
    );
}

fn vault_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vault"))
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = vault_bin()
        .args(["kv", "fill", "-e", "dur", "--count", "1000000"])
        .env("VAULT_DATA_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 150 {
        acknowledged.push(lines.next().unwrap().unwrap());
    }
    child.kill().unwrap(); // SIGKILL, mid-run: no destructor, no flush, no checkpoint
    child.wait().unwrap();
    // Ids already written to the pipe before the kill were acknowledged too.
    acknowledged.extend(lines.map_while(Result::ok));

    let vault = vault::open_embedded(dir.path()).await.unwrap();
    for id in &acknowledged {
        let object = vault.read("dur", id, &actor()).await.unwrap();
        assert_eq!(object.value.len(), 1024, "{id}");
    }
    assert!(acknowledged.len() >= 150);
}

fn kv(dir: &Path, args: &[&str]) -> std::process::Output {
    vault_bin()
        .arg("kv")
        .args(args)
        .env("VAULT_DATA_DIR", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn kv_commands_have_distinct_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let eleven: String = (0..11)
        .map(|i| format!("\"k{i}\":\"v\""))
        .collect::<Vec<_>>()
        .join(",");
    let out = kv(
        d,
        &[
            "create",
            "-e",
            "p",
            "--name",
            "n",
            "--context",
            &format!("{{{eleven}}}"),
            "--value",
            "v",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than 10 pairs"));
    assert!(!d.join("vault.db").exists(), "a bad context opens nothing");

    let out = kv(
        d,
        &[
            "create",
            "-e",
            "p",
            "--name",
            "card",
            "--context",
            r#"{"organization_id":"o"}"#,
            "--value",
            "4111",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = meta["id"].as_str().unwrap();
    let version = meta["version_id"].as_str().unwrap();

    assert_eq!(kv(d, &["get", "-e", "p", id]).stdout, b"4111");
    assert_eq!(kv(d, &["get", "-e", "p", "--name", "card"]).stdout, b"4111");
    let dup = kv(
        d,
        &[
            "create",
            "-e",
            "p",
            "--name",
            "card",
            "--context",
            r#"{"organization_id":"o"}"#,
            "--value",
            "x",
        ],
    );
    assert_eq!(dup.status.code(), Some(7), "duplicate name is a conflict");
    assert!(
        kv(
            d,
            &[
                "update",
                "-e",
                "p",
                id,
                "--value",
                "4222",
                "--expected-version",
                version
            ]
        )
        .status
        .success()
    );
    assert_eq!(
        kv(
            d,
            &[
                "update",
                "-e",
                "p",
                id,
                "--value",
                "x",
                "--expected-version",
                version
            ]
        )
        .status
        .code(),
        Some(7)
    );
    assert_eq!(
        kv(d, &["get", "-e", "other", id]).status.code(),
        Some(6),
        "other environment: not found"
    );
    assert_eq!(
        kv(d, &["list", "-e", "p", "--after", "garbage"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        kv(
            d,
            &[
                "create",
                "-e",
                "p",
                "--name",
                " ",
                "--context",
                r#"{"a":"b"}"#,
                "--value",
                "v"
            ]
        )
        .status
        .code(),
        Some(3)
    );
    let versions: serde_json::Value =
        serde_json::from_slice(&kv(d, &["versions", "-e", "p", id, "--json"]).stdout).unwrap();
    assert_eq!(versions["data"].as_array().unwrap().len(), 2);
    assert!(kv(d, &["delete", "-e", "p", id]).status.success());
    assert_eq!(kv(d, &["get", "-e", "p", id]).status.code(), Some(6));
    let list: serde_json::Value =
        serde_json::from_slice(&kv(d, &["list", "-e", "p", "--json"]).stdout).unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    assert!(list["list_metadata"].is_object());
}

/// A key provider that is down, as a customer's KMS can be.
#[derive(Debug)]
struct Down;

#[async_trait::async_trait]
impl vault_crypto::KeyProvider for Down {
    fn owns(&self, key: &vault_crypto::KeyRef) -> bool {
        key.scheme() == "down-kms"
    }

    async fn wrap(
        &self,
        _: &vault_crypto::DataKey,
        _: &KeyContext,
    ) -> Result<vault_crypto::WrappedKey, vault_crypto::ProviderError> {
        Err(vault_crypto::ProviderError::new(
            vault_crypto::ProviderErrorKind::Unavailable,
            "down-kms",
            "connection refused",
        ))
    }

    async fn unwrap_owned(
        &self,
        _: &vault_crypto::WrappedKey,
        _: &KeyContext,
        _: vault_crypto::Attempts,
    ) -> Result<vault_crypto::DataKey, vault_crypto::ProviderError> {
        Err(vault_crypto::ProviderError::new(
            vault_crypto::ProviderErrorKind::Unavailable,
            "down-kms",
            "connection refused",
        ))
    }
}

#[tokio::test]
async fn nothing_is_stored_when_the_key_provider_fails() {
    let dir = tempfile::tempdir().unwrap();
    let managed = Arc::new(ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap());
    let router = Router::new(managed)
        .rule([("organization_id", "org_byok")], Arc::new(Down))
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path()).await.unwrap());
    let vault = Vault::new(Arc::new(router), store.clone(), fresh_integrity());

    let e = vault
        .create("prod", "card", &ctx("org_byok"), None, b"4111", &actor())
        .await
        .unwrap_err();
    match e {
        VaultError::Crypto(vault_crypto::Error::Provider(p)) => assert!(p.is_retryable()),
        other => panic!("{other:?}"),
    }
    // An object of another organization still works, and updating it is unaffected.
    let ok = vault
        .create("prod", "other", &ctx("org_1"), None, b"v", &actor())
        .await
        .unwrap();
    let listed = vault
        .list("prod", &ListQuery::default(), &actor())
        .await
        .unwrap();
    assert_eq!(listed.data.len(), 1, "the failed create left nothing");
    assert_eq!(listed.data[0].id, ok.id);
    assert!(
        store
            .audit_events("prod", 50)
            .await
            .unwrap()
            .iter()
            .all(|e| e.object_name.as_deref() != Some("card"))
    );
}

/// After a rotation, `rewrap(All)` moves every stored version under an old version (and only
/// those); destroying the old version is refused while anything stored or issued is under it,
/// and while it was the primary moments ago; with consent it reports what it made unreadable.
#[tokio::test]
async fn rewrap_all_empties_an_old_version_before_it_can_be_destroyed() {
    use vault::{RewrapScope, Shred};
    use vault_crypto::VersionState;
    use vault_store::events;

    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap());
    let store: Arc<dyn Store> = Arc::new(SqlStore::open_sqlite(dir.path()).await.unwrap());
    let vault = Vault::new(
        Arc::new(Router::new(ring.clone())),
        store.clone(),
        fresh_integrity(),
    );
    let mut ids = Vec::new();
    for (i, org) in ["org_1", "org_2", "org_3"].iter().enumerate() {
        let m = vault
            .create(
                "prod",
                &format!("o{i}"),
                &ctx(org),
                None,
                org.as_bytes(),
                &actor(),
            )
            .await
            .unwrap();
        ids.push(m.id);
    }
    // A second version of one object, and a data key issued under v1.
    vault
        .update("prod", &ids[0], b"org_1 again", None, None, &actor())
        .await
        .unwrap();
    store
        .record_key_event(
            "prod",
            events::DEK_READ,
            &actor(),
            "managed://root#v1",
            &ctx("org_9"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(ring.rotate().await.unwrap(), 2);
    vault
        .create("prod", "new", &ctx("org_1"), None, b"under v2", &actor())
        .await
        .unwrap();

    match vault
        .destroy_key_version(&ring, 1, Shred::Refuse, &actor())
        .await
    {
        Err(
            e @ VaultError::KeyInUse {
                version: 1,
                stored_versions: 4,
                issued_data_keys: 1,
            },
        ) => {
            // Both ways on, each for what it can do.
            let m = e.to_string();
            assert!(
                m.contains("`vault keys rewrap --all` moves the stored ones"),
                "{m}"
            );
            assert!(m.contains("but not the issued keys"), "{m}");
            assert!(
                m.contains("`vault keys destroy 1 --yes-destroy-data`"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ring.versions()[0].state, VersionState::Active);

    let only_org_2 = vault
        .rewrap(
            &RewrapScope::Matching(vec![("organization_id".into(), "org_2".into())]),
            &actor(),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!((only_org_2.matched, only_org_2.rewrapped), (1, 1));
    let all = vault
        .rewrap(&RewrapScope::All, &actor(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (
            all.scanned,
            all.rewrapped,
            all.already_current,
            all.unreadable
        ),
        (5, 3, 2, 0)
    );
    let usage = vault.key_usage().await.unwrap();
    let v1 = usage
        .iter()
        .find(|u| u.key_id == "managed://root#v1")
        .unwrap();
    assert_eq!((v1.stored_versions, v1.issued_data_keys), (0, 1));
    let again = vault
        .rewrap(&RewrapScope::All, &actor(), |_| {})
        .await
        .unwrap();
    assert_eq!((again.rewrapped, again.already_current), (0, 5));

    // The issued data key still counts: its holder keeps the blob, and rewrap is no advice.
    match vault
        .destroy_key_version(&ring, 1, Shred::Refuse, &actor())
        .await
    {
        Err(
            e @ VaultError::KeyInUse {
                stored_versions: 0,
                issued_data_keys: 1,
                ..
            },
        ) => {
            let m = e.to_string();
            assert!(!m.contains("rewrap --all"), "{m}");
            assert!(m.contains("which rewrap cannot move"), "{m}");
            assert!(m.contains("--yes-destroy-data"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // A version that was primary a moment ago waits even when nothing is under it.
    ring.rotate().await.unwrap();
    assert!(matches!(
        vault
            .destroy_key_version(&ring, 2, Shred::Refuse, &actor())
            .await,
        Err(VaultError::KeyInUse { .. } | VaultError::KeyRecentlyPrimary { .. })
    ));
    vault
        .rewrap(&RewrapScope::All, &actor(), |_| {})
        .await
        .unwrap();
    match vault
        .destroy_key_version(&ring, 2, Shred::Refuse, &actor())
        .await
    {
        Err(VaultError::KeyRecentlyPrimary { version: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(std::time::Duration::from_secs(
        vault::DESTROY_QUIET_SECS + 1,
    ))
    .await;
    let report = vault
        .destroy_key_version(&ring, 2, Shred::Refuse, &actor())
        .await
        .unwrap();
    assert!(report.destroyed_now);
    assert_eq!(report.stored_versions, 0);

    // Every object reads back under v3, after v2 is gone.
    for (id, value) in ids.iter().zip([&b"org_1 again"[..], b"org_2", b"org_3"]) {
        assert_eq!(vault.read("prod", id, &actor()).await.unwrap().value, value);
    }

    // With consent, v1 goes although the issued key is under it; the report says so.
    let shredded = vault
        .destroy_key_version(&ring, 1, Shred::Consent, &actor())
        .await
        .unwrap();
    assert_eq!(
        (shredded.issued_data_keys, shredded.destroyed_now),
        (1, true)
    );
    let states: Vec<_> = ring.versions().iter().map(|v| v.state).collect();
    assert_eq!(
        states,
        [
            VersionState::Destroyed,
            VersionState::Destroyed,
            VersionState::Primary
        ]
    );
}

/// An integrity key of its own for a store made by the test (nothing it reads needs the
/// store's integrity record).
fn fresh_integrity() -> Arc<vault::objects::IntegrityKey> {
    Arc::new(vault::objects::IntegrityKey::generate().unwrap())
}
