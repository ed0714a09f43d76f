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
use vault_crypto::KeyRingError;
use vault_crypto::managed::SealedRoot;
use vault_crypto::sealed_ring::{RingRows, RingSwap, SealedRing, SealedVersion, StoredRow};

use super::SqlStore;
use super::byok::is_provider_name;
use super::db::{Backend, Columns, Tx, args};
use super::session::Session;
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

/// A ring error carried through a change (which fails with a [`StoreError`]); the numbers
/// that could make one are checked before the change ([`in_range`]).
fn into_store(e: KeyRingError) -> StoreError {
    StoreError::Unavailable {
        reason: e.to_string(),
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
    fn from_row(row: &dyn Columns) -> Result<Self, KeyRingError> {
        let sealed_by = row.opt_text("sealed_by").map_err(db)?;
        let sealed_root = row.opt_blob("sealed_root").map_err(db)?;
        let int = |column: &str| row.int(column).map_err(db);
        Ok(Self {
            generation: from_i64(int("generation")?)?,
            primary: from_i64(int("primary_version")?)?,
            min_decryption_version: from_i64(int("min_decryption_version")?)?,
            mac: row.opt_blob("mac").map_err(db)?.unwrap_or_default(),
            version: SealedVersion {
                version: from_i64(int("version")?)?,
                created_at: from_i64(int("created_at")?)?,
                destroyed_at: row
                    .opt_int("destroyed_at")
                    .map_err(db)?
                    .map(from_i64)
                    .transpose()?,
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
        self.exists(
            "SELECT 1 AS one FROM key_rings WHERE name = $1",
            args![name],
        )
        .await
    }

    /// Removes the ring `name` from the database (after it was moved into a file), only if its
    /// generation is still `generation` (the one copied); returns whether it did.
    ///
    /// # Errors
    /// `Unavailable` if the database cannot be written.
    pub async fn remove_ring(&self, name: &str, generation: u64) -> Result<bool, StoreError> {
        let generation = i64::try_from(generation)
            .map_err(|_| StoreError::invalid("generation", "too large"))?;
        let name = name.to_owned();
        self.change(move |tx: &mut dyn Tx| {
            if !still_at(tx, &name, generation)? {
                return Ok(false);
            }
            tx.execute(
                "DELETE FROM key_ring_versions WHERE ring = $1",
                args![&name],
            )?;
            tx.execute("DELETE FROM key_rings WHERE name = $1", args![&name])?;
            Ok(true)
        })
        .await
    }

    /// Whether the store holds object versions, issued data keys or webhook secrets wrapped
    /// under a version of the managed ring `name`.
    ///
    /// # Errors
    /// `Unavailable` if the database cannot be read.
    pub async fn holds_data_under_ring(&self, name: &str) -> Result<bool, StoreError> {
        let (pattern, test) = ring_pattern(self.backend(), name)?;
        let sql = format!(
            "SELECT 1 AS one FROM versions WHERE key_id {test} \
             UNION ALL SELECT 1 AS one FROM audit_events WHERE event IN {ISSUED_EVENTS} \
             AND key_id {test} \
             UNION ALL SELECT 1 AS one FROM issued_key_totals WHERE key_id {test} \
             UNION ALL SELECT 1 AS one FROM webhook_endpoints WHERE secret_key_id {test} \
             UNION ALL SELECT 1 AS one FROM byok_config WHERE seal_key_id {test} LIMIT 1"
        );
        self.exists(&sql, args![&pattern]).await
    }
}

/// A pattern for the key references of ring `name` (`managed://name#…`) and the SQL test (with
/// `$1`) that matches a column against it.
///
/// # Errors
/// `InvalidArgument` for a name that is not a ring's (`[A-Za-z0-9_-]`, 1 to 64): its
/// characters would be wildcards of the pattern.
pub(super) fn ring_pattern(
    backend: Backend,
    name: &str,
) -> Result<(String, &'static str), StoreError> {
    if !is_provider_name(name) {
        return Err(StoreError::invalid(
            "ring",
            "must be [A-Za-z0-9_-], 1 to 64",
        ));
    }
    // PostgreSQL's LIKE is case-sensitive (only `_` needs escaping); SQLite's is not, so SQLite
    // uses GLOB, which is (and has no special character in such a name).
    Ok(match backend {
        Backend::Postgres => (
            format!("managed://{}#%", name.replace('_', "\\_")),
            "LIKE $1 ESCAPE '\\'",
        ),
        Backend::Sqlite => (format!("managed://{name}#*"), "GLOB $1"),
    })
}

/// Whether ring `name` is still at `generation`, locking its row in `tx` (no change can commit
/// between this check and the rest of the transaction).
fn still_at(tx: &mut dyn Tx, name: &str, generation: i64) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "UPDATE key_rings SET generation = generation WHERE name = $1 AND generation = $2",
        args![name, generation],
    )? == 1)
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

/// Every version row of ring `name` now, read in `tx`.
fn stored_rows(tx: &mut dyn Tx, name: &str) -> Result<HashMap<u32, StoredRow>, KeyRingError> {
    tx.fetch_all(
        "SELECT version, destroyed_at, sealed_by FROM key_ring_versions WHERE ring = $1",
        args![name],
        |r| {
            Ok((
                r.int("version")?,
                StoredRow {
                    live: r.opt_int("destroyed_at")?.is_none(),
                    sealed_by: r.opt_text("sealed_by")?,
                },
            ))
        },
    )
    .map_err(db)?
    .into_iter()
    .map(|(version, row)| Ok((from_i64(version)?, row)))
    .collect()
}

/// Refuses a version whose dates the database cannot hold (before it reaches a transaction).
fn in_range(v: &SealedVersion) -> Result<(), KeyRingError> {
    to_i64(v.created_at)?;
    v.destroyed_at.map(to_i64).transpose()?;
    Ok(())
}

/// Inserts one version row of ring `name` in `tx`.
fn insert_version(tx: &mut dyn Tx, name: &str, v: &SealedVersion) -> Result<(), KeyRingError> {
    let sealed = v.sealed.as_ref();
    tx.execute(
        "INSERT INTO key_ring_versions (ring, version, created_at, destroyed_at, \
         sealed_by, sealed_root) VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            name,
            i64::from(v.version),
            to_i64(v.created_at)?,
            v.destroyed_at.map(to_i64).transpose()?,
            sealed.map(|s| s.sealed_by.as_str()),
            sealed.map(|s| s.bytes.as_slice()),
        ],
    )
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
        self.store
            .row(
                "SELECT generation FROM key_rings WHERE name = $1",
                args![&self.name],
                |r| r.int("generation"),
            )
            .await
            .map_err(db)?
            .map(from_i64)
            .transpose()
    }

    async fn read(&self) -> Result<Option<SealedRing>, KeyRingError> {
        let rows = self
            .store
            .rows(
                "SELECT r.generation, r.primary_version, r.min_decryption_version, r.mac, \
                 v.version, v.created_at, v.destroyed_at, v.sealed_by, v.sealed_root \
                 FROM key_rings r JOIN key_ring_versions v ON v.ring = r.name \
                 WHERE r.name = $1 ORDER BY v.version",
                args![&self.name],
                |r| Ok(VersionRow::from_row(r)),
            )
            .await
            .map_err(db)?
            .into_iter()
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
        let name = self.name.clone();
        self.store
            .snapshot(move |tx| Ok(stored_rows(tx, &name)))
            .await
            .map_err(db)?
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
        for v in &ring.versions {
            in_range(v)?;
        }
        let generation = to_i64(ring.generation)?;
        let (name, ring) = (self.name.clone(), ring.clone());
        let inserted = self
            .store
            .change(move |tx: &mut dyn Tx| {
                // Of several processes creating at once, one inserts; the others find its ring.
                let inserted = tx.execute(
                    "INSERT INTO key_rings (name, generation, primary_version, \
                     min_decryption_version, mac) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (name) DO NOTHING",
                    args![
                        &name,
                        generation,
                        i64::from(ring.primary),
                        i64::from(ring.min_decryption_version),
                        &ring.mac,
                    ],
                )? == 1;
                if inserted {
                    for v in &ring.versions {
                        insert_version(tx, &name, v).map_err(into_store)?;
                    }
                }
                Ok(inserted)
            })
            .await
            .map_err(db)?;
        Ok(inserted)
    }

    async fn swap(
        &self,
        previous: u64,
        ring: &SealedRing,
    ) -> Result<Option<Box<dyn RingSwap>>, KeyRingError> {
        let session = self.store.session().await.map_err(db)?;
        let header = [
            to_i64(ring.generation)?,
            i64::from(ring.primary),
            i64::from(ring.min_decryption_version),
            to_i64(previous)?,
        ];
        let (name, mac) = (self.name.clone(), ring.mac.clone());
        let swapped = session
            .run(move |tx| {
                let [generation, primary, min_decryption, previous] = header;
                Ok(tx.execute(
                    "UPDATE key_rings SET generation = $2, primary_version = $3, \
                     min_decryption_version = $4, mac = $6 WHERE name = $1 AND generation = $5",
                    args![&name, generation, primary, min_decryption, previous, &mac],
                )? == 1)
            })
            .await
            .map_err(db)?;
        Ok(swapped.then(|| {
            Box::new(SqlRingSwap {
                session,
                name: self.name.clone(),
            }) as Box<dyn RingSwap>
        }))
    }

    async fn reseal(
        &self,
        generation: u64,
        resealed: &[(u32, SealedRoot)],
    ) -> Result<bool, KeyRingError> {
        let generation = to_i64(generation)?;
        let (name, resealed) = (self.name.clone(), resealed.to_vec());
        self.store
            .change(move |tx: &mut dyn Tx| {
                if !still_at(tx, &name, generation)? {
                    return Ok(false);
                }
                for (version, sealed) in &resealed {
                    tx.execute(
                        "UPDATE key_ring_versions SET sealed_by = $3, sealed_root = $4 \
                         WHERE ring = $1 AND version = $2 AND destroyed_at IS NULL",
                        args![&name, i64::from(*version), &sealed.sealed_by, &sealed.bytes],
                    )?;
                }
                Ok(true)
            })
            .await
            .map_err(db)
    }
}

/// A change of a ring's rows in one write transaction (rolled back if dropped).
struct SqlRingSwap {
    session: Session,
    name: String,
}

#[async_trait]
impl RingSwap for SqlRingSwap {
    async fn stored(&mut self) -> Result<HashMap<u32, StoredRow>, KeyRingError> {
        let name = self.name.clone();
        self.session
            .run(move |tx| Ok(stored_rows(tx, &name)))
            .await
            .map_err(db)?
    }

    async fn destroy(&mut self, version: u32, at: u64) -> Result<(), KeyRingError> {
        let (name, at) = (self.name.clone(), to_i64(at)?);
        self.session
            .run(move |tx| {
                tx.execute(
                    "UPDATE key_ring_versions SET destroyed_at = $3, sealed_by = NULL, \
                     sealed_root = NULL WHERE ring = $1 AND version = $2",
                    args![&name, i64::from(version), at],
                )?;
                Ok(())
            })
            .await
            .map_err(db)
    }

    async fn insert(&mut self, version: &SealedVersion) -> Result<(), KeyRingError> {
        in_range(version)?;
        let (name, version) = (self.name.clone(), version.clone());
        self.session
            .run(move |tx| insert_version(tx, &name, &version).map_err(into_store))
            .await
            .map_err(db)
    }

    async fn commit(self: Box<Self>) -> Result<(), KeyRingError> {
        self.session.commit().await.map_err(db)
    }
}
