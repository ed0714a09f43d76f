//! The managed key ring in the database ([`SqlRingRows`]): what lets several `vault serve`
//! replicas and CLI processes on several machines share one ring.
//!
//! Two tables (`migrations/*-4.sql`): `key_rings` (generation, primary, minimum decryption
//! version, the header's tag) and `key_ring_versions` (one row per version, its root key
//! **sealed**, NULL once destroyed). A change is a compare-and-swap on the generation in one
//! transaction; a process notices another's change by reading the generation (one indexed row)
//! every check interval, and reads the versions only when it moved on.
//!
//! The rows hold no key this crate can use: sealing, unsealing and the tag are
//! [`SealedRingStore`](vault_crypto::sealed_ring::SealedRingStore)'s, on the other side of the
//! [`RingRows`] seam.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;
use vault_crypto::KeyRingError;
use vault_crypto::managed::SealedRoot;
use vault_crypto::sealed_ring::{RingRows, RingSwap, SealedRing, SealedVersion, StoredRow};

use super::writer::WriteTx;
use super::{Backend, SqlStore};
use crate::StoreError;

/// The events whose `key_id` names a data key handed out under a key (see `key_usage`).
pub(super) const ISSUED_EVENTS: &str = "('vault.dek.read', 'vault.dek.rekeyed')";

/// The rows of a managed ring in the store's database. See the module docs.
#[derive(Debug, Clone)]
pub struct SqlRingRows {
    store: SqlStore,
    name: String,
    /// Whether [`insert`](RingRows::insert) may run while the store holds data under this
    /// ring's key references (only when a ring is being moved in, with its keys).
    moving_in: bool,
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
    mac: Vec<u8>,
    version: SealedVersion,
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
            mac: row
                .try_get::<Option<Vec<u8>>, _>("mac")
                .map_err(db)?
                .unwrap_or_default(),
            version: SealedVersion {
                version: from_i64(row.try_get("version").map_err(db)?)?,
                created_at: from_i64(row.try_get("created_at").map_err(db)?)?,
                destroyed_at: destroyed_at.map(from_i64).transpose()?,
                sealed: match (sealed_by, sealed_root) {
                    (Some(sealed_by), Some(bytes)) => Some(SealedRoot { sealed_by, bytes }),
                    _ => None,
                },
            },
        })
    }
}

impl SqlStore {
    /// The rows of the managed ring `name` in this database: sealed root keys, dates and the
    /// header's tag, persisted as given (see [`SealedRingStore`](vault_crypto::sealed_ring::SealedRingStore),
    /// which seals, unseals and checks them).
    pub fn ring_rows(&self, name: &str) -> SqlRingRows {
        SqlRingRows {
            store: self.clone(),
            name: name.to_owned(),
            moving_in: false,
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

impl SqlRingRows {
    /// These rows, allowed to be inserted while the database holds data under the ring: for
    /// moving an existing ring in (`vault keys migrate-ring`), never for making a new one.
    #[must_use]
    pub fn moving_in(mut self) -> Self {
        self.moving_in = true;
        self
    }
}

/// Every version row of ring `name` now, read in `conn`.
async fn stored_rows(
    conn: &mut sqlx::AnyConnection,
    name: &str,
) -> Result<HashMap<u32, StoredRow>, KeyRingError> {
    sqlx::query("SELECT version, destroyed_at, sealed_by FROM key_ring_versions WHERE ring = $1")
        .bind(name)
        .fetch_all(conn)
        .await
        .map_err(db)?
        .iter()
        .map(|row| {
            let version: i64 = row.try_get("version").map_err(db)?;
            let destroyed: Option<i64> = row.try_get("destroyed_at").map_err(db)?;
            let sealed_by: Option<String> = row.try_get("sealed_by").map_err(db)?;
            Ok((
                from_i64(version)?,
                StoredRow {
                    live: destroyed.is_none(),
                    sealed_by,
                },
            ))
        })
        .collect()
}

/// Inserts one version row of ring `name` in `conn`.
async fn insert_version(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    v: &SealedVersion,
) -> Result<(), KeyRingError> {
    sqlx::query(
        "INSERT INTO key_ring_versions (ring, version, created_at, destroyed_at, \
         sealed_by, sealed_root) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(name)
    .bind(i64::from(v.version))
    .bind(to_i64(v.created_at)?)
    .bind(v.destroyed_at.map(to_i64).transpose()?)
    .bind(v.sealed.as_ref().map(|s| s.sealed_by.clone()))
    .bind(v.sealed.as_ref().map(|s| s.bytes.clone()))
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

#[async_trait]
impl RingRows for SqlRingRows {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        format!("the database (ring {:?})", self.name)
    }

    async fn generation(&self) -> Result<Option<u64>, KeyRingError> {
        let generation: Option<i64> =
            sqlx::query_scalar("SELECT generation FROM key_rings WHERE name = $1")
                .bind(&self.name)
                .fetch_optional(&self.store.pool)
                .await
                .map_err(db)?;
        generation.map(from_i64).transpose()
    }

    async fn read(&self) -> Result<Option<SealedRing>, KeyRingError> {
        let rows = sqlx::query(
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
        .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(SealedRing {
            generation: first.generation,
            primary: first.primary,
            min_decryption_version: first.min_decryption_version,
            mac: first.mac.clone(),
            versions: rows.into_iter().map(|r| r.version).collect(),
        }))
    }

    async fn stored(&self) -> Result<HashMap<u32, StoredRow>, KeyRingError> {
        let mut conn = self.store.pool.acquire().await.map_err(db)?;
        stored_rows(&mut conn, &self.name).await
    }

    async fn may_insert(&self) -> Result<(), KeyRingError> {
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
        Ok(())
    }

    async fn insert(&self, ring: &SealedRing) -> Result<bool, KeyRingError> {
        self.may_insert().await?;
        let mut tx = self.store.begin_write().await.map_err(db)?;
        // Of several processes creating at once, one inserts; the others find its ring.
        let inserted = sqlx::query(
            "INSERT INTO key_rings (name, generation, primary_version, min_decryption_version, \
             mac) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&self.name)
        .bind(to_i64(ring.generation)?)
        .bind(i64::from(ring.primary))
        .bind(i64::from(ring.min_decryption_version))
        .bind(ring.mac.clone())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(false);
        }
        for v in &ring.versions {
            insert_version(&mut tx, &self.name, v).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn swap(
        &self,
        previous: u64,
        ring: &SealedRing,
    ) -> Result<Option<Box<dyn RingSwap>>, KeyRingError> {
        let mut tx = self.store.begin_write().await.map_err(db)?;
        let swapped = sqlx::query(
            "UPDATE key_rings SET generation = $2, primary_version = $3, \
             min_decryption_version = $4, mac = $6 WHERE name = $1 AND generation = $5",
        )
        .bind(&self.name)
        .bind(to_i64(ring.generation)?)
        .bind(i64::from(ring.primary))
        .bind(i64::from(ring.min_decryption_version))
        .bind(to_i64(previous)?)
        .bind(ring.mac.clone())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
            == 1;
        Ok(swapped.then(|| {
            Box::new(SqlRingSwap {
                tx,
                name: self.name.clone(),
            }) as Box<dyn RingSwap>
        }))
    }

    async fn reseal(
        &self,
        generation: u64,
        resealed: &[(u32, SealedRoot)],
    ) -> Result<bool, KeyRingError> {
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
            return Ok(false);
        }
        for (version, sealed) in resealed {
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
        Ok(true)
    }
}

/// A change of a ring's rows in one write transaction (rolled back if dropped).
struct SqlRingSwap {
    tx: WriteTx,
    name: String,
}

#[async_trait]
impl RingSwap for SqlRingSwap {
    async fn stored(&mut self) -> Result<HashMap<u32, StoredRow>, KeyRingError> {
        stored_rows(&mut self.tx, &self.name).await
    }

    async fn destroy(&mut self, version: u32, at: u64) -> Result<(), KeyRingError> {
        sqlx::query(
            "UPDATE key_ring_versions SET destroyed_at = $3, sealed_by = NULL, \
             sealed_root = NULL WHERE ring = $1 AND version = $2",
        )
        .bind(&self.name)
        .bind(i64::from(version))
        .bind(to_i64(at)?)
        .execute(&mut *self.tx)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn insert(&mut self, version: &SealedVersion) -> Result<(), KeyRingError> {
        insert_version(&mut self.tx, &self.name, version).await
    }

    async fn commit(self: Box<Self>) -> Result<(), KeyRingError> {
        self.tx.commit().await.map_err(db)
    }
}
