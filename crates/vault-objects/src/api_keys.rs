//! API keys: `sk_` and 43 random base62 characters (256 bits), shown once at creation and
//! stored only as a SHA-256 hash. A key's first 12 random characters are its public lookup
//! (and, as `key_<lookup>`, its actor id); the whole key is then checked against the stored
//! hash in constant time. Each key sees one environment.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vault_store::{Actor, ApiKeyRecord, StoreError, Timestamp, validate_environment};

use zeroize::Zeroizing;

use std::sync::Arc;

use vault_crypto::integrity::matches;
use vault_store::{Conflict, RecordChange};

use crate::integrity::{api_key_tag, checked_record, is_api_key_id, record_change, tampered};
use crate::{IntegrityKey, Store, VaultError};

/// The key prefix, as WorkOS secret keys have.
pub const PREFIX: &str = "sk_";
/// Random characters after the prefix: 43 base62 characters carry 256 bits.
pub const RANDOM_LEN: usize = 43;
/// Characters of the random part that form the public lookup id.
pub const LOOKUP_LEN: usize = 12;
/// The longest display name of a key.
pub const MAX_NAME_LEN: usize = 100;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A newly created API key: the text to hand to its user once, and its stored record.
pub struct NewApiKey {
    secret: Zeroizing<String>,
    /// What is stored.
    pub record: ApiKeyRecord,
}

impl NewApiKey {
    /// The key text (`sk_…`). Show it once; it cannot be recovered later.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// An authenticated caller: the environment it may see and the actor its changes are recorded
/// under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's environment.
    pub environment: String,
    /// `key_<lookup>` and the key's name.
    pub actor: Actor,
}

fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Random base62 characters by rejection sampling (no modulo bias).
fn random_base62(n: usize) -> Result<String, StoreError> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|_| StoreError::Unavailable {
            reason: "the operating system's random number generator failed".into(),
        })?;
        for &b in &buf {
            // 248 = 4 × 62: bytes above it would favour the first characters.
            if b < 248 && out.len() < n {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

/// The lookup part of a well-formed key, or `None` for anything else.
fn lookup_of(key: &str) -> Option<&str> {
    let random = key.strip_prefix(PREFIX)?;
    if random.len() != RANDOM_LEN || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    random.get(..LOOKUP_LEN)
}

/// The lookup part of `key` if it is shaped like one of ours (for the fuzz target).
#[doc(hidden)]
pub fn lookup(key: &str) -> Option<&str> {
    lookup_of(key)
}

/// Creates and stores an API key for `environment`.
///
/// # Errors
/// `InvalidArgument` for a bad environment or name; `Unavailable`.
pub async fn create(
    keys: &ApiKeys,
    environment: &str,
    name: &str,
) -> Result<NewApiKey, StoreError> {
    validate_environment(environment)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(StoreError::InvalidArgument {
            field: "name",
            reason: "must be 1 to 100 characters without control characters",
        });
    }
    let random = random_base62(RANDOM_LEN)?;
    let secret = Zeroizing::new(format!("{PREFIX}{random}"));
    let lookup = random[..LOOKUP_LEN].to_owned();
    let record = ApiKeyRecord {
        id: format!("key_{lookup}"),
        hash: hash(&secret),
        lookup,
        environment: environment.to_owned(),
        name: name.to_owned(),
        created_at: Timestamp::now(),
        revoked_at: None,
        mac: Vec::new(),
    };
    let record = keys.create(record).await?;
    Ok(NewApiKey { secret, record })
}

/// The principal of a bearer key, or `None` if the key is malformed, unknown, revoked, or its
/// row fails its integrity check (inserted or changed by a database writer).
///
/// # Errors
/// `Unavailable` if the store cannot be asked.
pub async fn authenticate(keys: &ApiKeys, key: &str) -> Result<Option<Caller>, StoreError> {
    let Some(lookup) = lookup_of(key) else {
        return Ok(None);
    };
    let Some(record) = keys.by_lookup(lookup).await? else {
        return Ok(None);
    };
    let matches: bool = hash(key).ct_eq(&record.hash).into();
    if !matches || record.revoked_at.is_some() {
        return Ok(None);
    }
    Ok(Some(Caller {
        environment: record.environment,
        actor: Actor::new(record.id, record.name),
    }))
}

/// The API keys of a store, every row's tag made on write and checked on read: an API key row
/// a database writer inserted or changed authenticates nothing.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    store: Arc<dyn Store>,
    key: Arc<IntegrityKey>,
    revoked: Arc<std::sync::Mutex<Revoked>>,
}

/// The API keys the integrity record says were revoked, as this process last read it (at most
/// [`RECORD_FRESH`] ago), together with every one it read before: a record put back to an
/// older copy revokes nothing back.
#[derive(Debug, Default)]
struct Revoked {
    ids: std::collections::HashSet<String>,
    read_at: Option<std::time::Instant>,
}

/// How long a process goes by the revocations it read: an older copy of a revoked key's row
/// put back is refused by a running process within this of the revocation.
const RECORD_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// An API key record as listed, and whether its row is authentic.
#[derive(Debug, Clone)]
pub struct ListedApiKey {
    /// The record as stored.
    pub record: ApiKeyRecord,
    /// Whether its tag holds (a row that fails authenticates nothing).
    pub authentic: bool,
}

impl ApiKeys {
    /// The API keys of `store`, under `key`.
    pub fn new(store: Arc<dyn Store>, key: Arc<IntegrityKey>) -> Self {
        Self {
            store,
            key,
            revoked: Arc::default(),
        }
    }

    /// Whether the integrity record says `id` was revoked (read again if it is older than
    /// [`RECORD_FRESH`]; a record that cannot be read or fails leaves what was read before).
    async fn recorded_revoked(&self, id: &str) -> bool {
        let stale = {
            let r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            r.read_at.is_none_or(|at| at.elapsed() >= RECORD_FRESH)
        };
        if stale {
            match checked_record(&*self.store, &self.key).await {
                Ok(record) => {
                    let mut r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                    r.ids.extend(record.revoked_api_keys);
                    r.read_at = Some(std::time::Instant::now());
                }
                Err(_) => {
                    // Logged by the check; the revocations read before stand, and the record
                    // is not read again (nor logged) before the next interval.
                    let mut r = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                    r.read_at = Some(std::time::Instant::now());
                }
            }
        }
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ids
            .contains(id)
    }

    /// Stores a new API key record, tagged.
    ///
    /// # Errors
    /// As [`vault_store::ApiKeyStore::create_api_key`].
    pub async fn create(&self, mut record: ApiKeyRecord) -> Result<ApiKeyRecord, StoreError> {
        validate_environment(&record.environment)?;
        record.mac = api_key_tag(&self.key, &record).to_vec();
        self.store.create_api_key(&record).await?;
        Ok(record)
    }

    /// The API key with this lookup prefix, revoked or not, if its row is authentic. A row that
    /// fails its tag is logged and answered as no key.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn by_lookup(&self, lookup: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let Some(record) = self.store.api_key_by_lookup(lookup).await? else {
            return Ok(None);
        };
        if !matches(&api_key_tag(&self.key, &record), &record.mac) {
            let _ = tampered(format!(
                "API key {:?} (table api_keys) fails its integrity check",
                record.id
            ));
            Ok(None)
        } else if record.revoked_at.is_none() && self.recorded_revoked(&record.id).await {
            let _ = tampered(format!(
                "API key {:?} (table api_keys) was revoked and its older row is back",
                record.id
            ));
            Ok(None)
        } else {
            Ok(Some(record))
        }
    }

    /// Revokes an API key by id: it authenticates nothing from now on, and the integrity
    /// record says so (an older copy of its row put back is refused). Revoking a revoked key is
    /// a no-op for its row, and still makes sure the record lists it; so does revoking a
    /// well-formed id whose row is gone (someone deleted it: put back, it stays refused).
    ///
    /// # Errors
    /// `Store(NotFound)` for an id with no row; `Tampered` if the integrity record fails (the
    /// row is revoked all the same); `Store(Unavailable)`.
    pub async fn revoke(&self, id: &str) -> Result<(), VaultError> {
        for _ in 0..16 {
            let row = self
                .store
                .api_keys()
                .await?
                .into_iter()
                .find(|r| r.id == id);
            let record = match checked_record(&*self.store, &self.key).await {
                Ok(record) => record,
                Err(e) => {
                    // The record cannot be changed, but the key must stop working anyway.
                    if let Some(row) = row.filter(|r| r.revoked_at.is_none()) {
                        self.revoke_row(row, None).await?;
                    }
                    return Err(e);
                }
            };
            let change = (!record.revoked_api_keys.iter().any(|r| r == id)).then(|| {
                record_change(&self.key, &record, |r| {
                    r.revoked_api_keys.push(id.to_owned());
                })
            });
            let outcome = match row {
                Some(row) if row.revoked_at.is_none() => {
                    self.revoke_row(row, change.as_ref()).await
                }
                found => {
                    if found.is_none() && !is_api_key_id(id) {
                        return Err(StoreError::NotFound.into());
                    }
                    if let Some(change) = &change {
                        self.store.change_record(change).await?;
                    }
                    if found.is_none() {
                        return Err(StoreError::NotFound.into());
                    }
                    Ok(())
                }
            };
            match outcome {
                Err(StoreError::Conflict(Conflict::Record)) => {}
                other => return Ok(other?),
            }
        }
        Err(StoreError::Conflict(Conflict::Record).into())
    }

    /// Writes `row` revoked now, tagged (if it was authentic: a row that fails its tag is
    /// revoked too but not tagged, so it stays refused and listed as tampered), with `change`
    /// of the record in the same transaction.
    async fn revoke_row(
        &self,
        mut row: ApiKeyRecord,
        change: Option<&RecordChange>,
    ) -> Result<(), StoreError> {
        let authentic = matches(&api_key_tag(&self.key, &row), &row.mac);
        let at = Timestamp::now();
        row.revoked_at = Some(at);
        let mac = if authentic {
            api_key_tag(&self.key, &row).to_vec()
        } else {
            row.mac.clone()
        };
        self.store.revoke_api_key(&row.id, at, &mac, change).await
    }

    /// Whether the store holds no API key at all (revoked ones count).
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.store.api_keys().await?.is_empty())
    }

    /// Every API key record, oldest first, each with whether its row is authentic (its tag
    /// holds, and it is not an older copy of a revoked key's row).
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn list(&self) -> Result<Vec<ListedApiKey>, StoreError> {
        let mut listed = Vec::new();
        for record in self.store.api_keys().await? {
            let authentic = matches(&api_key_tag(&self.key, &record), &record.mac)
                && (record.revoked_at.is_some() || !self.recorded_revoked(&record.id).await);
            listed.push(ListedApiKey { record, authentic });
        }
        Ok(listed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_well_formed_and_lookups_strict() {
        let r = random_base62(RANDOM_LEN).unwrap();
        assert_eq!(r.len(), RANDOM_LEN);
        let key = format!("sk_{r}");
        assert_eq!(lookup_of(&key), Some(&r[..LOOKUP_LEN]));
        assert_eq!(lookup_of(&key[..key.len() - 1]), None);
        assert_eq!(lookup_of(&format!("pk_{r}")), None);
        assert_eq!(lookup_of(&format!("sk_{}-", &r[1..])), None);
        assert_eq!(lookup_of(""), None);
    }

    #[test]
    fn base62_uses_the_whole_alphabet_evenly() {
        let sample = random_base62(62 * 400).unwrap();
        let mut counts = [0u32; 62];
        for b in sample.bytes() {
            counts[BASE62.iter().position(|&c| c == b).unwrap()] += 1;
        }
        // Expected 400 each; a modulo bias would put the first 8 near 500.
        assert!(
            counts.iter().all(|&c| (300..500).contains(&c)),
            "{counts:?}"
        );
    }
}

#[cfg(test)]
mod redaction {
    #[tokio::test]
    async fn a_new_key_never_prints_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = vault_store::SqlStore::open_sqlite(dir.path())
            .await
            .unwrap();
        let store = std::sync::Arc::new(store);
        let keys = crate::ApiKeys::new(
            store.clone(),
            std::sync::Arc::new(crate::IntegrityKey::generate().unwrap()),
        );
        let key = super::create(&keys, "env", "ci").await.unwrap();
        let secret = key.expose_secret().to_owned();
        let random = &secret[3..];
        for text in [
            format!("{key:?}"),
            format!("{key:#?}"),
            format!("{:?}", key.record),
        ] {
            assert!(!text.contains(random), "{text}");
            assert!(!text.contains(&random[super::LOOKUP_LEN..]), "{text}");
        }
        let stored = vault_store::ApiKeyStore::api_key_by_lookup(&*store, &key.record.lookup)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(stored.hash, secret.as_bytes(), "only a hash is stored");
        assert_eq!(stored.hash.len(), 32);
    }
}
