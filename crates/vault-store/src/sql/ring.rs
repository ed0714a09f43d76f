//! The managed key ring in the database ([`SqlRingStore`]): what lets several `vault serve`
//! replicas and CLI processes on several machines share one ring.
//!
//! Two tables (`migrations/*-4.sql`): `key_rings` (generation, primary, minimum decryption
//! version) and `key_ring_versions` (one row per version, its root key **sealed** by a
//! [`RootSeal`] and NULL once destroyed). A change is a compare-and-swap on the generation in
//! one transaction; a process notices another's change by reading the generation (one indexed
//! row) every check interval, and reads the versions only when it moved on.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;
use vault_crypto::KeyRingError;
use vault_crypto::integrity::{IntegrityKey, RingHeader};
use vault_crypto::managed::{RingState, RingStore, RootSeal, SealedRoot, StoredVersion};
use zeroize::Zeroizing;

use super::{Backend, SqlStore};
use crate::StoreError;

/// The events whose `key_id` names a data key handed out under a key (see `key_usage`).
pub(super) const ISSUED_EVENTS: &str = "('vault.dek.read', 'vault.dek.rekeyed')";

/// A managed ring kept in the store's database, its root keys sealed. See the module docs.
pub struct SqlRingStore {
    store: SqlStore,
    name: String,
    seal: Arc<dyn RootSeal>,
    /// The deployment's integrity key: the ring's rows carry its tag, checked on every load.
    integrity: Arc<IntegrityKey>,
    /// Whether [`create`](RingStore::create) may run while the store holds data under this
    /// ring's key references (only when a ring is being moved in, with its keys).
    moving_in: bool,
    /// Root keys this process unsealed or sealed, by version, with the sealed form they came
    /// from: a reload unseals only a version whose sealed form it has not seen (one seal call
    /// per version per process). A sealed key changed under a version is unsealed again, so a
    /// ring replaced in the database is compared by its real keys and refused.
    unsealed: Mutex<HashMap<u32, Held>>,
}

impl fmt::Debug for SqlRingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlRingStore")
            .field("name", &self.name)
            .field("seal", &self.seal)
            .finish_non_exhaustive()
    }
}

/// A root key held in memory and the sealed form it came from. Wiped on drop.
struct Held {
    sealed: SealedRoot,
    root: Zeroizing<[u8; 32]>,
}

fn db(e: impl Into<StoreError>) -> KeyRingError {
    KeyRingError::Store {
        reason: e.into().to_string(),
    }
}

fn to_i64(n: u64) -> Result<i64, KeyRingError> {
    i64::try_from(n).map_err(|_| KeyRingError::Malformed {
        reason: "a number is out of range".into(),
    })
}

fn from_i64<T: TryFrom<i64>>(n: i64) -> Result<T, KeyRingError> {
    T::try_from(n).map_err(|_| KeyRingError::Malformed {
        reason: "a stored number is out of range".into(),
    })
}

/// One row of `key_ring_versions` joined with its ring.
struct VersionRow {
    generation: u64,
    primary: u32,
    min_decryption_version: u32,
    version: u32,
    created_at: u64,
    destroyed_at: Option<u64>,
    sealed: Option<SealedRoot>,
    /// The ring's tag (its row's).
    mac: Vec<u8>,
}

impl VersionRow {
    fn from_row(row: &AnyRow) -> Result<Self, KeyRingError> {
        let destroyed_at: Option<i64> = row.try_get("destroyed_at").map_err(db)?;
        let sealed_by: Option<String> = row.try_get("sealed_by").map_err(db)?;
        let sealed_root: Option<Vec<u8>> = row.try_get("sealed_root").map_err(db)?;
        Ok(Self {
            generation: from_i64(row.try_get("generation").map_err(db)?)?,
            primary: from_i64(row.try_get("primary_version").map_err(db)?)?,
            min_decryption_version: from_i64(row.try_get("min_decryption_version").map_err(db)?)?,
            version: from_i64(row.try_get("version").map_err(db)?)?,
            created_at: from_i64(row.try_get("created_at").map_err(db)?)?,
            destroyed_at: destroyed_at.map(from_i64).transpose()?,
            sealed: match (sealed_by, sealed_root) {
                (Some(sealed_by), Some(bytes)) => Some(SealedRoot { sealed_by, bytes }),
                _ => None,
            },
            mac: row
                .try_get::<Option<Vec<u8>>, _>("mac")
                .map_err(db)?
                .unwrap_or_default(),
        })
    }
}

impl SqlStore {
    /// The managed ring `name` kept in this database, its root keys sealed by `seal`, its rows
    /// tagged with `integrity`.
    pub fn ring_store(
        &self,
        name: &str,
        seal: Arc<dyn RootSeal>,
        integrity: Arc<IntegrityKey>,
    ) -> SqlRingStore {
        SqlRingStore {
            store: self.clone(),
            name: name.to_owned(),
            seal,
            integrity,
            moving_in: false,
            unsealed: Mutex::default(),
        }
    }

    /// Whether the database holds the ring `name`.
    ///
    /// # Errors
    /// `Unavailable` if the database cannot be read.
    pub async fn has_ring(&self, name: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 AS one FROM key_rings WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Removes the ring `name` from the database (after it was moved into a file), only if its
    /// generation is still `generation` (the one copied); returns whether it did.
    ///
    /// # Errors
    /// `Unavailable` if the database cannot be written.
    pub async fn remove_ring(&self, name: &str, generation: u64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // Locks the row: no change can commit between this check and the delete.
        let unchanged = sqlx::query(
            "UPDATE key_rings SET generation = generation WHERE name = $1 AND generation = $2",
        )
        .bind(name)
        .bind(
            i64::try_from(generation)
                .map_err(|_| StoreError::invalid("generation", "too large"))?,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !unchanged {
            return Ok(false);
        }
        sqlx::query("DELETE FROM key_ring_versions WHERE ring = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM key_rings WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A pattern for the key references of ring `name` (`managed://name#…`) and the SQL test
    /// (with `$1`) that matches a column against it.
    pub(super) fn ring_pattern(&self, name: &str) -> (String, &'static str) {
        // Ring names are [A-Za-z0-9_-]. PostgreSQL's LIKE is case-sensitive (only `_` needs
        // escaping); SQLite's is not, so SQLite uses GLOB, which is (and has no special
        // character in such a name).
        match self.backend {
            Backend::Postgres => (
                format!("managed://{}#%", name.replace('_', "\\_")),
                "LIKE $1 ESCAPE '\\'",
            ),
            Backend::Sqlite => (format!("managed://{name}#*"), "GLOB $1"),
        }
    }

    /// Whether the store holds object versions, issued data keys or webhook secrets wrapped under a version of
    /// the managed ring `name`.
    ///
    /// # Errors
    /// `Unavailable` if the database cannot be read.
    pub async fn holds_data_under_ring(&self, name: &str) -> Result<bool, StoreError> {
        let (pattern, test) = self.ring_pattern(name);
        let sql = format!(
            "SELECT 1 AS one FROM versions WHERE key_id {test} \
             UNION ALL SELECT 1 AS one FROM audit_events WHERE event IN {ISSUED_EVENTS} \
             AND key_id {test} \
             UNION ALL SELECT 1 AS one FROM issued_key_totals WHERE key_id {test} \
             UNION ALL SELECT 1 AS one FROM webhook_endpoints WHERE secret_key_id {test} \
             UNION ALL SELECT 1 AS one FROM byok_config WHERE seal_key_id {test} LIMIT 1"
        );
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pattern)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }
}

impl SqlRingStore {
    /// This store, allowed to create its ring while the database holds data under it: for
    /// moving an existing ring in (`vault keys migrate-ring`), never for making a new one.
    pub fn moving_in(mut self) -> Self {
        self.moving_in = true;
        self
    }

    /// Seals every live root key of the ring again with `to` (one transaction, the ring
    /// unchanged otherwise); returns how many. Every process must then be restarted with the
    /// new seal: one still on the old seal cannot change the ring, and fails its next reload
    /// after any change (it cannot unseal the new rows).
    ///
    /// # Errors
    /// [`KeyRingError::Seal`] if a key cannot be unsealed or sealed; [`KeyRingError::Busy`] if
    /// the ring changed meanwhile (nothing was changed; try again).
    pub async fn reseal(&self, to: &dyn RootSeal) -> Result<usize, KeyRingError> {
        let rows = self.rows().await?;
        let generation = rows.first().map_or(0, |r| r.generation);
        let mut resealed = Vec::new();
        for row in &rows {
            // Rows sealed by `to` already (a reseal interrupted and run again) stay as they are.
            if let Some(sealed) = row.sealed.as_ref().filter(|s| !to.owns(&s.sealed_by)) {
                let root = self.seal.unseal(&self.name, row.version, sealed).await?;
                resealed.push((row.version, to.seal(&self.name, row.version, &root).await?));
            }
        }
        let mut tx = self.store.begin_write().await.map_err(db)?;
        let unchanged = sqlx::query(
            "UPDATE key_rings SET generation = generation WHERE name = $1 AND generation = $2",
        )
        .bind(&self.name)
        .bind(to_i64(generation)?)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        if !unchanged {
            return Err(KeyRingError::Busy);
        }
        for (version, sealed) in &resealed {
            sqlx::query(
                "UPDATE key_ring_versions SET sealed_by = $3, sealed_root = $4 \
                 WHERE ring = $1 AND version = $2 AND destroyed_at IS NULL",
            )
            .bind(&self.name)
            .bind(i64::from(*version))
            .bind(&sealed.sealed_by)
            .bind(sealed.bytes.clone())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(resealed.len())
    }

    /// Every version row of the ring, with the ring's columns, read in one statement (one
    /// snapshot). Empty if there is no ring.
    async fn rows(&self) -> Result<Vec<VersionRow>, KeyRingError> {
        sqlx::query(
            "SELECT r.generation, r.primary_version, r.min_decryption_version, r.mac, v.version, \
             v.created_at, v.destroyed_at, v.sealed_by, v.sealed_root \
             FROM key_rings r JOIN key_ring_versions v ON v.ring = r.name \
             WHERE r.name = $1 ORDER BY v.version",
        )
        .bind(&self.name)
        .fetch_all(&self.store.pool)
        .await
        .map_err(db)?
        .iter()
        .map(VersionRow::from_row)
        .collect()
    }

    /// The stored ring, its root keys unsealed (from memory when this process has them).
    async fn load(&self) -> Result<RingState, KeyRingError> {
        let rows = self.rows().await?;
        let Some(first) = rows.first() else {
            return Err(self.missing());
        };
        let (generation, primary, min) = (
            first.generation,
            first.primary,
            first.min_decryption_version,
        );
        // Checked before any key is unsealed: a ring a database writer changed is refused.
        let header = RingHeader {
            name: self.name.clone(),
            generation,
            primary,
            min_decryption_version: min,
            versions: rows
                .iter()
                .map(|r| (r.version, r.created_at, r.destroyed_at))
                .collect(),
        };
        if !vault_crypto::integrity::matches(&self.integrity.ring_tag(&header), &first.mac) {
            return Err(KeyRingError::Tampered {
                location: self.location(),
            });
        }
        let mut versions = Vec::with_capacity(rows.len());
        for row in rows {
            let root = match &row.sealed {
                None => {
                    self.held().remove(&row.version);
                    None
                }
                Some(sealed) => {
                    let held = self
                        .held()
                        .get(&row.version)
                        .filter(|h| h.sealed == *sealed)
                        .map(|h| Zeroizing::new(*h.root));
                    Some(match held {
                        Some(root) => root,
                        None => {
                            let root = self.seal.unseal(&self.name, row.version, sealed).await?;
                            self.held().insert(
                                row.version,
                                Held {
                                    sealed: sealed.clone(),
                                    root: Zeroizing::new(*root),
                                },
                            );
                            root
                        }
                    })
                }
            };
            versions.push(StoredVersion {
                version: row.version,
                created_at: row.created_at,
                destroyed_at: row.destroyed_at,
                root,
            });
        }
        RingState::from_stored(&self.name, generation, primary, min, versions)
    }

    /// The tag of `ring`'s rows.
    fn tag(&self, ring: &RingState) -> Vec<u8> {
        self.integrity.ring_tag(&RingHeader::of(ring)).to_vec()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Held>> {
        self.unsealed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn missing(&self) -> KeyRingError {
        KeyRingError::Missing {
            location: self.location(),
        }
    }

    /// Seals the live root keys of `ring` that the database does not hold yet (`known`: the
    /// versions already stored with a key), for writing.
    async fn seal_new(
        &self,
        ring: &RingState,
        known: &HashMap<u32, bool>,
    ) -> Result<Vec<(u32, SealedRoot)>, KeyRingError> {
        let mut sealed = Vec::new();
        for v in ring.stored_versions() {
            if let Some(root) = v.root
                && !known.get(&v.version).copied().unwrap_or(false)
            {
                sealed.push((
                    v.version,
                    self.seal.seal(&self.name, v.version, root).await?,
                ));
            }
        }
        Ok(sealed)
    }

    /// Which versions the database holds, and whether each still has its key.
    async fn stored_keys(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<HashMap<u32, bool>, KeyRingError> {
        sqlx::query("SELECT version, destroyed_at FROM key_ring_versions WHERE ring = $1")
            .bind(&self.name)
            .fetch_all(conn)
            .await
            .map_err(db)?
            .iter()
            .map(|row| {
                let version: i64 = row.try_get("version").map_err(db)?;
                let destroyed: Option<i64> = row.try_get("destroyed_at").map_err(db)?;
                Ok((from_i64(version)?, destroyed.is_none()))
            })
            .collect()
    }

    /// Writes the version rows of `ring` in `tx`: new versions with their sealed keys, and
    /// destroyed ones without.
    async fn write_versions(
        &self,
        tx: &mut sqlx::AnyConnection,
        ring: &RingState,
        known: &HashMap<u32, bool>,
        sealed: &[(u32, SealedRoot)],
    ) -> Result<(), KeyRingError> {
        for v in ring.stored_versions() {
            let stored_live = known.get(&v.version).copied();
            let destroyed_at = v.destroyed_at.map(to_i64).transpose()?;
            match (stored_live, destroyed_at) {
                // Stored, and as it is (versions only ever gain a destruction time).
                (Some(true), None) | (Some(false), Some(_)) => {}
                (Some(true), Some(at)) => {
                    sqlx::query(
                        "UPDATE key_ring_versions SET destroyed_at = $3, sealed_by = NULL, \
                         sealed_root = NULL WHERE ring = $1 AND version = $2",
                    )
                    .bind(&self.name)
                    .bind(i64::from(v.version))
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                (Some(false), None) => {
                    // A destroyed version with a key again: never written.
                    return Err(KeyRingError::Replaced {
                        location: self.location(),
                    });
                }
                (None, destroyed_at) => {
                    let found = sealed.iter().find(|(n, _)| *n == v.version);
                    sqlx::query(
                        "INSERT INTO key_ring_versions (ring, version, created_at, destroyed_at, \
                         sealed_by, sealed_root) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&self.name)
                    .bind(i64::from(v.version))
                    .bind(to_i64(v.created_at)?)
                    .bind(destroyed_at)
                    .bind(found.map(|(_, s)| s.sealed_by.clone()))
                    .bind(found.map(|(_, s)| s.bytes.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
            }
        }
        Ok(())
    }

    /// Remembers the root keys this process sealed and wrote, and forgets destroyed ones.
    fn hold(&self, ring: &RingState, sealed: Vec<(u32, SealedRoot)>) {
        let mut held = self.held();
        for v in ring.stored_versions() {
            if v.root.is_none() {
                held.remove(&v.version);
            }
        }
        for (version, sealed) in sealed {
            if let Some(root) = ring
                .stored_versions()
                .find(|v| v.version == version)
                .and_then(|v| v.root)
            {
                let root = Zeroizing::new(*root);
                held.insert(version, Held { sealed, root });
            }
        }
    }

    /// A live version sealed by another key than this process's seal (the ring was resealed
    /// since it started), read in `conn`.
    async fn foreign_seal(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<Option<(u32, String)>, KeyRingError> {
        let rows = sqlx::query(
            "SELECT version, sealed_by FROM key_ring_versions \
             WHERE ring = $1 AND sealed_by IS NOT NULL ORDER BY version",
        )
        .bind(&self.name)
        .fetch_all(conn)
        .await
        .map_err(db)?;
        for row in &rows {
            let by: String = row.try_get("sealed_by").map_err(db)?;
            if !self.seal.owns(&by) {
                let version: i64 = row.try_get("version").map_err(db)?;
                return Ok(Some((from_i64(version)?, by)));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl RingStore for SqlRingStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        format!("the database (ring {:?})", self.name)
    }

    async fn load_if_changed(&self, known: Option<u64>) -> Result<Option<RingState>, KeyRingError> {
        let generation: Option<i64> =
            sqlx::query_scalar("SELECT generation FROM key_rings WHERE name = $1")
                .bind(&self.name)
                .fetch_optional(&self.store.pool)
                .await
                .map_err(db)?;
        match generation {
            None => Err(self.missing()),
            Some(g) if known.is_some() && known == u64::try_from(g).ok() => Ok(None),
            Some(_) => self.load().await.map(Some),
        }
    }

    async fn create(&self, ring: RingState) -> Result<RingState, KeyRingError> {
        if self.store.has_ring(&self.name).await.map_err(db)? {
            return self.load().await;
        }
        if !self.moving_in
            && self
                .store
                .holds_data_under_ring(&self.name)
                .await
                .map_err(db)?
        {
            return Err(KeyRingError::NotMigrated {
                ring: self.name.clone(),
            });
        }
        // Sealed before the transaction: a KMS call must not hold the database's write lock.
        let none = HashMap::new();
        let sealed = self.seal_new(&ring, &none).await?;
        let mut tx = self.store.begin_write().await.map_err(db)?;
        // Of several processes creating at once, one inserts; the others find its ring.
        let inserted = sqlx::query(
            "INSERT INTO key_rings (name, generation, primary_version, min_decryption_version, \
             mac) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&self.name)
        .bind(to_i64(ring.generation())?)
        .bind(i64::from(ring.primary()))
        .bind(i64::from(ring.min_decryption_version()))
        .bind(self.tag(&ring))
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        if !inserted {
            drop(tx);
            return self.load().await;
        }
        self.write_versions(&mut tx, &ring, &none, &sealed).await?;
        tx.commit().await.map_err(db)?;
        self.hold(&ring, sealed);
        Ok(ring)
    }

    async fn replace(&self, ring: &RingState) -> Result<bool, KeyRingError> {
        let Some(previous) = ring.generation().checked_sub(1) else {
            return Ok(false);
        };
        let known = {
            let mut conn = self.store.pool.acquire().await.map_err(db)?;
            self.stored_keys(&mut conn).await?
        };
        let sealed = self.seal_new(ring, &known).await?;
        let mut tx = self.store.begin_write().await.map_err(db)?;
        let swapped = sqlx::query(
            "UPDATE key_rings SET generation = $2, primary_version = $3, \
             min_decryption_version = $4, mac = $6 WHERE name = $1 AND generation = $5",
        )
        .bind(&self.name)
        .bind(to_i64(ring.generation())?)
        .bind(i64::from(ring.primary()))
        .bind(i64::from(ring.min_decryption_version()))
        .bind(to_i64(previous)?)
        .bind(self.tag(ring))
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        if !swapped {
            return Ok(false);
        }
        // Read again under the swap: the rows cannot change now before the commit.
        let known = self.stored_keys(&mut tx).await?;
        let unsealed = |v: &vault_crypto::managed::StoredVersionRef<'_>| {
            v.root.is_some()
                && !known.get(&v.version).copied().unwrap_or(false)
                && !sealed.iter().any(|(n, _)| *n == v.version)
        };
        if ring.stored_versions().any(|v| unsealed(&v)) {
            // Cannot happen under the swap; but a version is never written without its key.
            return Ok(false);
        }
        // A process whose seal is not the ring's (resealed since it started) changes nothing:
        // a version it added would be sealed by a key the others no longer use.
        if let Some((version, by)) = self.foreign_seal(&mut tx).await? {
            return Err(KeyRingError::Seal {
                action: "change",
                ring: self.name.clone(),
                version,
                seal: self.seal.describe(),
                reason: format!(
                    "the ring was resealed with another key ({}); restart this process with that seal",
                    vault_crypto::managed::shown(&by)
                ),
            });
        }
        self.write_versions(&mut tx, ring, &known, &sealed).await?;
        tx.commit().await.map_err(db)?;
        self.hold(ring, sealed);
        Ok(true)
    }
}
