//! The [`Store`] conformance suite: what every backend (SQLite, PostgreSQL) must do. Each check
//! uses environments of its own, so checks can share one database and run concurrently.

mod audit;
mod blobs;
mod feed;
mod listing;
mod objects;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vault_crypto::KeyContext;
use vault_store::{Actor, NewVersion, Store};

pub use audit::{api_keys, concurrent_reads_are_each_audited, key_events};
pub use blobs::{
    blobs_are_replaced_deleted_purged_and_rewrapped,
    blobs_are_uploaded_in_batches_and_read_by_range,
};
pub use feed::{
    byok_config_is_swapped_whole, events_are_listed_as_workos_pages_them,
    idempotent_answers_are_stored_with_their_change, retention_keeps_issued_keys_counted,
    the_webhook_outbox_holds_every_subscribed_event,
};
pub use listing::{list_filters, pagination_is_stable};
pub use objects::{
    bad_input_changes_nothing, concurrent_writers_never_lose_an_update, create_and_read,
    delete_and_purge, names_and_environments, rewraps_are_conditional_and_audited,
    versions_and_expected_version,
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

/// A change of the store's integrity record made from the record as it is now (created if the
/// store has none; checks sharing a database share it), to a record with a tag of its own:
/// `edit` says what changes. The store keeps tags as bytes, so any bytes do here.
pub(crate) async fn record_change(
    store: &dyn Store,
    edit: impl FnOnce(&mut vault_store::IntegrityRecord),
) -> vault_store::RecordChange {
    let record = loop {
        if let Some(r) = store.integrity().await.unwrap() {
            break r;
        }
        let first = vault_store::IntegrityRecord {
            sealed_key: None,
            byok_generation: 0,
            revoked_api_keys: Vec::new(),
            deleted_webhooks: Vec::new(),
            mac: b"first record".to_vec(),
        };
        store.protect(&first, &[], &[], &[]).await.unwrap();
    };
    let mut next = record.clone();
    edit(&mut next);
    next.mac = id().into_bytes();
    vault_store::RecordChange {
        expected_mac: record.mac,
        record: next,
    }
}

pub(crate) fn id() -> String {
    vault_store::new_object_id().unwrap()
}

pub(crate) fn actor() -> Actor {
    Actor::new("key_test", "Test key")
}

pub(crate) fn ctx(org: &str) -> KeyContext {
    KeyContext::from_pairs([("organization_id", org)]).unwrap()
}

pub(crate) fn version(bytes: &[u8]) -> NewVersion {
    NewVersion {
        id: vault_store::new_version_id().unwrap(),
        at: vault_store::Timestamp::now(),
        envelope: bytes.to_vec(),
        size: bytes.len() as u64,
        key_id: "managed://root#v1".into(),
    }
}

/// Every check of the suite, in order.
pub async fn run_all(store: Arc<dyn Store>) {
    create_and_read(store.clone()).await;
    names_and_environments(store.clone()).await;
    versions_and_expected_version(store.clone()).await;
    delete_and_purge(store.clone()).await;
    blobs_are_uploaded_in_batches_and_read_by_range(store.clone()).await;
    blobs_are_replaced_deleted_purged_and_rewrapped(store.clone()).await;
    rewraps_are_conditional_and_audited(store.clone()).await;
    bad_input_changes_nothing(store.clone()).await;
    concurrent_writers_never_lose_an_update(store.clone()).await;
    pagination_is_stable(store.clone()).await;
    list_filters(store.clone()).await;
    api_keys(store.clone()).await;
    key_events(store.clone()).await;
    concurrent_reads_are_each_audited(store).await;
}
