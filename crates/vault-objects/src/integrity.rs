//! The database is untrusted storage. The rows that decide who may do what (API keys, webhook
//! endpoints, the record of what exists) carry a tag under the deployment's integrity key
//! ([`IntegrityKey`]), made here and checked here on every read: a row that a database writer
//! added or changed fails and is refused (logged, target `vault::integrity`), and everything else
//! keeps being served. The BYOK document is an envelope under a reserved context instead, opened
//! with [`vault_crypto::open`]; the integrity record says which generation of it must exist.
//!
//! Where the key lives ([`KeyHome`]): a file beside the key ring on the embedded default, or
//! sealed like a root key in the store's integrity record. [`open`] finds it, and protects a
//! store that predates it (tags every row once) when that is safe to do without asking.

use std::path::PathBuf;
use std::sync::Arc;

use vault_crypto::managed::RootSeal;
use vault_store::{ApiKeyRecord, IntegrityRecord, RecordChange, Timestamp, WebhookEndpoint};

pub use vault_crypto::integrity::IntegrityKey;
use vault_crypto::integrity::{TAG_LEN, matches};

/// A row's tag.
type Tag = [u8; TAG_LEN];

use crate::{Store, VaultError};

/// Whether `id` is shaped like an API key's id (`key_` and its 12-character lookup).
pub(crate) fn is_api_key_id(id: &str) -> bool {
    id.strip_prefix("key_")
        .is_some_and(|l| l.len() == 12 && l.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The file name of the integrity key in a data directory.
pub const KEY_FILE: &str = "integrity.key";

/// Where a deployment keeps its integrity key.
#[derive(Debug, Clone)]
pub enum KeyHome {
    /// A file (`integrity.key` beside the key ring, mode 0600): the embedded default, where the
    /// data directory is trusted and the database in it is not.
    File(PathBuf),
    /// Sealed in the store's integrity record by a root seal (a database deployment): a KMS
    /// key or a master key kept apart from the database.
    Sealed(Arc<dyn RootSeal>),
}

/// What a store with rows but no integrity record gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// Protected now, its rows tagged as they are (`vault keys protect`), unless some row
    /// carries a tag already: then it was protected before and its record was deleted, and
    /// this is refused.
    Protect,
    /// Protected now, its rows tagged as they are, whatever they carry (`vault keys protect
    /// --force`: the operator takes the database as it is).
    Force,
    /// Refused with what to do: a database deployment cannot tell a store from before
    /// protection from one whose record a database writer deleted. (An embedded store's key
    /// file tells: it is protected at its first use by this release.)
    Refuse,
}

/// The tag of a stored idempotent answer: whose, for which key and request, and what it said.
pub(crate) fn answer_tag(
    key: &IntegrityKey,
    owner: &str,
    idempotency_key: &str,
    request_hash: &[u8],
    status: u16,
    body: &[u8],
    created_at: Timestamp,
) -> Tag {
    key.tag("idempotent_answer")
        .text(owner)
        .text(idempotency_key)
        .bytes(request_hash)
        .int(i64::from(status))
        .bytes(body)
        .int(created_at.0)
        .finish()
}

/// A row refused: logged, and the error that says which.
pub(crate) fn refused(what: impl Into<String>) -> VaultError {
    tampered(what)
}

pub(crate) fn tampered(what: impl Into<String>) -> VaultError {
    let what = what.into();
    tracing::error!(target: "vault::integrity", %what, "refused: not written through this deployment's keys");
    VaultError::Tampered { what }
}

/// The tag of an API key row: every field that decides what the key can do.
pub(crate) fn api_key_tag(key: &IntegrityKey, r: &ApiKeyRecord) -> Tag {
    key.tag("api_key")
        .text(&r.id)
        .text(&r.lookup)
        .bytes(&r.hash)
        .text(&r.environment)
        .text(&r.name)
        .int(r.created_at.0)
        .opt_int(r.revoked_at.map(|t| t.0))
        .finish()
}

/// The tag of a webhook endpoint row: where it posts, what, and with which sealed secret.
pub(crate) fn webhook_tag(key: &IntegrityKey, e: &WebhookEndpoint) -> Tag {
    key.tag("webhook_endpoint")
        .text(&e.id)
        .text(&e.environment)
        .text(&e.url)
        .text(&e.events.join(","))
        .bytes(&e.sealed_secret)
        .text(&e.secret_key_id)
        .int(e.created_at.0)
        .finish()
}

/// The tag of the integrity record: the generation of the BYOK document that must exist, the
/// API keys revoked and the webhook endpoints deleted.
pub fn record_tag(key: &IntegrityKey, r: &IntegrityRecord) -> Tag {
    key.tag("integrity_record")
        .bytes(&r.byok_generation.to_be_bytes())
        .text(&r.revoked_api_keys.join(","))
        .text(&r.deleted_webhooks.join(","))
        .finish()
}

/// `record` changed by `edit` and tagged again, as a change to write only over `record`.
pub fn record_change(
    key: &IntegrityKey,
    record: &IntegrityRecord,
    edit: impl FnOnce(&mut IntegrityRecord),
) -> RecordChange {
    let mut next = record.clone();
    edit(&mut next);
    next.revoked_api_keys.sort();
    next.revoked_api_keys.dedup();
    next.deleted_webhooks.sort();
    next.deleted_webhooks.dedup();
    next.mac = record_tag(key, &next).to_vec();
    RecordChange {
        expected_mac: record.mac.clone(),
        record: next,
    }
}

/// Whether `endpoint`'s row is as this deployment wrote it, and not one it deleted.
pub(crate) async fn check_webhook(
    store: &dyn Store,
    key: &IntegrityKey,
    e: &WebhookEndpoint,
) -> Result<(), VaultError> {
    if !matches(&webhook_tag(key, e), &e.mac) {
        return Err(tampered(format!(
            "webhook endpoint {:?} (table webhook_endpoints) fails its integrity check",
            e.id
        )));
    }
    if checked_record(store, key)
        .await?
        .deleted_webhooks
        .contains(&e.id)
    {
        Err(tampered(format!(
            "webhook endpoint {:?} (table webhook_endpoints) was deleted and is back",
            e.id
        )))
    } else {
        Ok(())
    }
}

/// The store's integrity record, its tag checked.
///
/// # Errors
/// `Tampered` if there is none or its tag fails; `Store` if the store cannot be read.
pub async fn checked_record(
    store: &dyn Store,
    key: &IntegrityKey,
) -> Result<IntegrityRecord, VaultError> {
    let record = store
        .integrity()
        .await?
        .ok_or_else(|| tampered("the integrity record (table integrity) is missing"))?;
    if !matches(&record_tag(key, &record), &record.mac) {
        return Err(tampered(
            "the integrity record (table integrity) fails its integrity check",
        ));
    }
    Ok(record)
}

/// A new record for `byok_generation`, with `sealed` (the key sealed, for a database home).
fn new_record(
    key: &IntegrityKey,
    byok_generation: u64,
    sealed: Option<(String, Vec<u8>)>,
) -> IntegrityRecord {
    let mut record = IntegrityRecord {
        sealed_key: sealed,
        byok_generation,
        revoked_api_keys: Vec::new(),
        deleted_webhooks: Vec::new(),
        mac: Vec::new(),
    };
    record.mac = record_tag(key, &record).to_vec();
    record
}

/// Protects `store` with `key`: the record and, with `take_rows` (an upgrade), a tag for every
/// API key, webhook endpoint and ring kept in the database as it is and the BYOK document's
/// generation as it is, in one transaction. A new store takes nothing: a row that appears while it is being protected is
/// nobody's and stays refused. Returns `false` if the store had a record already (nothing
/// written).
async fn protect(
    store: &dyn Store,
    key: &IntegrityKey,
    sealed: Option<(String, Vec<u8>)>,
    take_rows: bool,
) -> Result<bool, VaultError> {
    if !take_rows {
        let record = new_record(key, 0, sealed);
        return Ok(store.protect(&record, &[], &[], &[]).await?);
    }
    let generation = store.byok_generation().await?;
    let api_keys: Vec<(String, Vec<u8>)> = store
        .api_keys()
        .await?
        .iter()
        .map(|r| (r.id.clone(), api_key_tag(key, r).to_vec()))
        .collect();
    let webhooks: Vec<(String, Vec<u8>)> = store
        .webhooks(None)
        .await?
        .iter()
        .map(|e| (e.id.clone(), webhook_tag(key, e).to_vec()))
        .collect();
    let rings: Vec<(String, Vec<u8>)> = store
        .ring_headers()
        .await?
        .iter()
        .map(|h| (h.name.clone(), key.ring_tag(h).to_vec()))
        .collect();
    let record = new_record(key, generation, sealed);
    Ok(store.protect(&record, &api_keys, &webhooks, &rings).await?)
}

/// Whether any API key or webhook endpoint row carries a tag (under `key`, or under any key
/// when `key` is `None`): a store whose rows were tagged was protected before.
async fn holds_tags(store: &dyn Store, key: Option<&IntegrityKey>) -> Result<bool, VaultError> {
    if key.is_none() && store.holds_ring_or_answer_tags().await? {
        return Ok(true);
    }
    let tagged = |mac: &[u8], tag: Option<Tag>| match tag {
        Some(tag) => matches(&tag, mac),
        None => !mac.is_empty(),
    };
    for r in store.api_keys().await? {
        if tagged(&r.mac, key.map(|k| api_key_tag(k, &r))) {
            return Ok(true);
        }
    }
    for e in store.webhooks(None).await? {
        if tagged(&e.mac, key.map(|k| webhook_tag(k, &e))) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The deployment's integrity key from `home`, its record in `store` checked. A store without
/// a record is protected with a new key if it holds nothing, or if `upgrade` allows it;
/// otherwise refused with what to do.
///
/// A file home proves on its own whether the store was ever protected: the key is written to
/// `integrity.key.new` first, the store protected, and only then is the file renamed into place
/// (a crash in between is finished on the next start). So a missing record with a key file
/// present is tampering, never an upgrade.
///
/// # Errors
/// `Tampered` for a record that is missing or fails; `Crypto` if the key cannot be read,
/// written or unsealed; `Store` if the store fails; `NotProtected` if the store predates
/// protection and `upgrade` is [`Upgrade::Refuse`].
pub async fn open(
    store: &dyn Store,
    home: &KeyHome,
    upgrade: Upgrade,
) -> Result<Arc<IntegrityKey>, VaultError> {
    match home {
        KeyHome::File(path) => open_file(store, path).await,
        KeyHome::Sealed(seal) => open_sealed(store, &**seal, upgrade).await,
    }
}

async fn open_file(
    store: &dyn Store,
    path: &std::path::Path,
) -> Result<Arc<IntegrityKey>, VaultError> {
    let pending = path.with_extension("key.new");
    if path.exists() {
        let key = IntegrityKey::from_file(path).map_err(vault_crypto::Error::from)?;
        checked_record(store, &key).await?;
        return Ok(Arc::new(key));
    }
    // One process protects at a time; the others find its key when they get the lock.
    let lock_path = path.with_extension("key.lock");
    let lock = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|e| io_error(&lock_path, e))?
    };
    if path.exists() {
        drop(lock);
        return Box::pin(open_file(store, path)).await;
    }
    // A protection that stopped before its rename: finished if the record is its own.
    if pending.exists()
        && let Ok(key) = IntegrityKey::from_file(&pending)
        && let Some(record) = store.integrity().await?
        && matches(&record_tag(&key, &record), &record.mac)
    {
        rename(&pending, path)?;
        return Ok(Arc::new(key));
    }
    if store.integrity().await?.is_some() {
        return Err(tampered(format!(
            "the integrity record exists but its key file {} is missing (restore it from a backup of the data directory)",
            path.display()
        )));
    }
    // The key of a protection that committed and stopped before its rename, whose record was
    // then deleted: its tags are in the store, and nothing is taken again.
    if pending.exists()
        && let Ok(key) = IntegrityKey::from_file(&pending)
        && holds_tags(store, Some(&key)).await?
    {
        return Err(tampered(
            "the integrity record (table integrity) is missing, but rows carry tags of this data directory's key",
        ));
    }
    let key = IntegrityKey::generate().map_err(vault_crypto::Error::from)?;
    match std::fs::remove_file(&pending) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&pending, e)),
    }
    key.write_new_file(&pending)
        .map_err(vault_crypto::Error::from)?;
    if !protect(store, &key, None, true).await? {
        // A record appeared between the check and the write: not one of this directory's.
        let _ = std::fs::remove_file(&pending);
        return Err(tampered(
            "the integrity record (table integrity) was written by a process without this data directory",
        ));
    }
    rename(&pending, path)?;
    drop(lock);
    Ok(Arc::new(key))
}

fn io_error(path: &std::path::Path, source: std::io::Error) -> VaultError {
    vault_crypto::Error::from(vault_crypto::KeyRingError::Io {
        path: path.display().to_string(),
        source,
    })
    .into()
}

fn rename(from: &std::path::Path, to: &std::path::Path) -> Result<(), VaultError> {
    std::fs::rename(from, to).map_err(|e| io_error(to, e))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, e))?;
    }
    Ok(())
}

async fn open_sealed(
    store: &dyn Store,
    seal: &dyn RootSeal,
    upgrade: Upgrade,
) -> Result<Arc<IntegrityKey>, VaultError> {
    for _ in 0..2 {
        if let Some(record) = store.integrity().await? {
            let Some((sealed_by, bytes)) = record.sealed_key.clone() else {
                return Err(tampered(
                    "the integrity record (table integrity) holds no sealed key (a store copied from an embedded one? `vault store copy` seals it)",
                ));
            };
            let sealed = vault_crypto::managed::SealedRoot { sealed_by, bytes };
            let key = IntegrityKey::unseal(seal, &sealed)
                .await
                .map_err(vault_crypto::Error::from)?;
            if !matches(&record_tag(&key, &record), &record.mac) {
                return Err(tampered(
                    "the integrity record (table integrity) fails its integrity check",
                ));
            }
            return Ok(Arc::new(key));
        }
        let take_rows = match upgrade {
            Upgrade::Refuse if store.holds_anything().await? => {
                return Err(VaultError::NotProtected);
            }
            // A new store: nothing of it is taken.
            Upgrade::Refuse => false,
            Upgrade::Protect if holds_tags(store, None).await? => {
                return Err(VaultError::ProtectedBefore);
            }
            Upgrade::Protect | Upgrade::Force => true,
        };
        let key = IntegrityKey::generate().map_err(vault_crypto::Error::from)?;
        let sealed = key.seal(seal).await.map_err(vault_crypto::Error::from)?;
        if protect(
            store,
            &key,
            Some((sealed.sealed_by, sealed.bytes)),
            take_rows,
        )
        .await?
        {
            return Ok(Arc::new(key));
        }
        // Another process protected it meanwhile: read its record.
    }
    Err(tampered(
        "the integrity record (table integrity) keeps changing",
    ))
}
