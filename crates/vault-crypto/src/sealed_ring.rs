//! A ring kept by a database, its root keys sealed ([`SealedRingStore`]): every key is sealed,
//! unsealed and checked here, and the database behind [`RingRows`] keeps only what it is
//! given: sealed root keys, dates, and the tag over the ring's header.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::error::KeyRingError;
use crate::integrity::{IntegrityKey, RingHeader, matches};
use crate::managed::{RootSeal, SealedRoot, StoredVersion, shown};
use crate::{RingState, RingStore};

/// One version of a ring as a database row keeps it: its dates, and its root key sealed
/// (`None` once destroyed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedVersion {
    /// The version number.
    pub version: u32,
    /// When it was made (seconds since the epoch).
    pub created_at: u64,
    /// When it was destroyed, if it was.
    pub destroyed_at: Option<u64>,
    /// Its root key, sealed; `None` once destroyed.
    pub sealed: Option<SealedRoot>,
}

/// A ring as a database keeps it: its header, every version, and the tag over the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRing {
    /// The generation (each change adds one).
    pub generation: u64,
    /// The primary version.
    pub primary: u32,
    /// The oldest version that decrypts.
    pub min_decryption_version: u32,
    /// Every version, in order.
    pub versions: Vec<SealedVersion>,
    /// The integrity tag over the header ([`IntegrityKey::ring_tag`]).
    pub mac: Vec<u8>,
}

/// What a version row holds, as a change reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// Whether it still holds a root key (not destroyed).
    pub live: bool,
    /// Which key sealed it, while it is live.
    pub sealed_by: Option<String>,
}

/// Where a sealed ring's rows are kept: a database. It persists what it is given and holds no
/// key; [`SealedRingStore`] does the rest.
///
/// # What it must do
/// - [`insert`](Self::insert) is all-or-nothing, and inserts nothing if the ring exists.
/// - [`swap`](Self::swap) changes the header only if the stored generation is the one given,
///   and holds the rows still until the [`RingSwap`] commits or is dropped (rolled back).
/// - [`reseal`](Self::reseal) replaces sealed forms only if the generation is still the one
///   given, in one transaction.
#[async_trait]
pub trait RingRows: Send + Sync + fmt::Debug {
    /// The ring's name.
    fn name(&self) -> &str;

    /// Where the ring lives, for messages.
    fn location(&self) -> String;

    /// The stored generation, or `None` if there is no ring (one small read: it runs a few
    /// times a second in every process).
    ///
    /// # Errors
    /// [`KeyRingError::Store`] if the database cannot be read.
    async fn generation(&self) -> Result<Option<u64>, KeyRingError>;

    /// The whole ring, read in one snapshot; `None` if there is none.
    ///
    /// # Errors
    /// [`KeyRingError::Store`]; [`KeyRingError::Malformed`] for values out of range.
    async fn read(&self) -> Result<Option<SealedRing>, KeyRingError>;

    /// Every version row now, by version (outside any change: a hint for what to seal first).
    ///
    /// # Errors
    /// [`KeyRingError::Store`].
    async fn stored(&self) -> Result<HashMap<u32, StoredRow>, KeyRingError>;

    /// Whether a new ring may be stored here: refused while the database holds data under this
    /// ring's key references (a ring is then only moved in, with its keys). Asked before any
    /// key is sealed for it; [`insert`](Self::insert) refuses the same.
    ///
    /// # Errors
    /// [`KeyRingError::NotMigrated`]; [`KeyRingError::Store`].
    async fn may_insert(&self) -> Result<(), KeyRingError>;

    /// Stores `ring` unless a ring exists; returns whether it did.
    ///
    /// # Errors
    /// As [`may_insert`](Self::may_insert); [`KeyRingError::Store`].
    async fn insert(&self, ring: &SealedRing) -> Result<bool, KeyRingError>;

    /// Begins a change: the header becomes `ring`'s (its versions are written through the
    /// swap) if the stored generation is `previous`; `None` if it is not.
    ///
    /// # Errors
    /// [`KeyRingError::Store`].
    async fn swap(
        &self,
        previous: u64,
        ring: &SealedRing,
    ) -> Result<Option<Box<dyn RingSwap>>, KeyRingError>;

    /// Replaces the sealed form of each `(version, sealed)` of a live version, if the stored
    /// generation is still `generation`; returns whether it did.
    ///
    /// # Errors
    /// [`KeyRingError::Store`].
    async fn reseal(
        &self,
        generation: u64,
        resealed: &[(u32, SealedRoot)],
    ) -> Result<bool, KeyRingError>;
}

/// A change of a ring's rows under way (see [`RingRows::swap`]): dropped without
/// [`commit`](Self::commit), nothing changes.
#[async_trait]
pub trait RingSwap: Send {
    /// Every version row as it is under the swap.
    ///
    /// # Errors
    /// [`KeyRingError::Store`].
    async fn stored(&mut self) -> Result<HashMap<u32, StoredRow>, KeyRingError>;

    /// Destroys `version`: its sealed key is removed, `at` recorded.
    ///
    /// # Errors
    /// [`KeyRingError::Store`].
    async fn destroy(&mut self, version: u32, at: u64) -> Result<(), KeyRingError>;

    /// Adds a version row.
    ///
    /// # Errors
    /// [`KeyRingError::Store`].
    async fn insert(&mut self, version: &SealedVersion) -> Result<(), KeyRingError>;

    /// Makes the change durable.
    ///
    /// # Errors
    /// [`KeyRingError::Store`]; nothing changed then.
    async fn commit(self: Box<Self>) -> Result<(), KeyRingError>;
}

/// A root key held in memory and the sealed form it came from. Wiped on drop.
struct Held {
    sealed: SealedRoot,
    root: Zeroizing<[u8; 32]>,
}

/// A managed ring kept by a database ([`RingRows`]), its root keys sealed by a [`RootSeal`]
/// and its header tagged with the deployment's [`IntegrityKey`]: a ring a database writer
/// changed is refused before any key is unsealed.
pub struct SealedRingStore {
    rows: Arc<dyn RingRows>,
    seal: Arc<dyn RootSeal>,
    integrity: Arc<IntegrityKey>,
    /// Root keys this process unsealed or sealed, by version, with the sealed form they came
    /// from: a reload unseals only a version whose sealed form it has not seen (one seal call
    /// per version per process). A sealed key changed under a version is unsealed again, so a
    /// ring replaced in the database is compared by its real keys and refused.
    held: Mutex<HashMap<u32, Held>>,
}

impl fmt::Debug for SealedRingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedRingStore")
            .field("rows", &self.rows)
            .field("seal", &self.seal)
            .finish_non_exhaustive()
    }
}

impl SealedRingStore {
    /// The ring kept by `rows`, its root keys sealed by `seal`, its header tagged with
    /// `integrity`.
    pub fn new(
        rows: Arc<dyn RingRows>,
        seal: Arc<dyn RootSeal>,
        integrity: Arc<IntegrityKey>,
    ) -> Self {
        Self {
            rows,
            seal,
            integrity,
            held: Mutex::default(),
        }
    }

    /// Seals every live root key of the ring again with `to` (one transaction, the ring
    /// unchanged otherwise); returns how many. Every process must then be restarted with the
    /// new seal: one still on the old seal cannot change the ring, and fails its next reload
    /// after any change (it cannot unseal the new rows).
    ///
    /// # Errors
    /// [`KeyRingError::Tampered`] if the ring fails its tag; [`KeyRingError::Seal`] if a key
    /// cannot be unsealed or sealed; [`KeyRingError::Busy`] if the ring changed meanwhile
    /// (nothing was changed; try again).
    pub async fn reseal(&self, to: &dyn RootSeal) -> Result<usize, KeyRingError> {
        let Some(ring) = self.rows.read().await? else {
            return Err(self.missing());
        };
        self.check(&ring)?;
        let name = self.rows.name();
        let mut resealed = Vec::new();
        for v in &ring.versions {
            // Versions sealed by `to` already (a reseal interrupted and run again) stay.
            if let Some(sealed) = v.sealed.as_ref().filter(|s| !to.owns(&s.sealed_by)) {
                let root = self.seal.unseal(name, v.version, sealed).await?;
                resealed.push((v.version, to.seal(name, v.version, &root).await?));
            }
        }
        if !self.rows.reseal(ring.generation, &resealed).await? {
            return Err(KeyRingError::Busy);
        }
        Ok(resealed.len())
    }

    fn missing(&self) -> KeyRingError {
        KeyRingError::Missing {
            location: self.rows.location(),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<u32, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses a ring whose header fails its tag: a ring a database writer changed.
    fn check(&self, ring: &SealedRing) -> Result<(), KeyRingError> {
        let header = RingHeader {
            name: self.rows.name().to_owned(),
            generation: ring.generation,
            primary: ring.primary,
            min_decryption_version: ring.min_decryption_version,
            versions: ring
                .versions
                .iter()
                .map(|v| (v.version, v.created_at, v.destroyed_at))
                .collect(),
        };
        if matches(&self.integrity.ring_tag(&header), &ring.mac) {
            Ok(())
        } else {
            Err(KeyRingError::Tampered {
                location: self.rows.location(),
            })
        }
    }

    /// The stored ring, checked, its root keys unsealed (from memory when this process has
    /// them).
    async fn load(&self) -> Result<RingState, KeyRingError> {
        let Some(ring) = self.rows.read().await? else {
            return Err(self.missing());
        };
        // Checked before any key is unsealed.
        self.check(&ring)?;
        let name = self.rows.name();
        let mut versions = Vec::with_capacity(ring.versions.len());
        for v in ring.versions {
            let root = match &v.sealed {
                None => {
                    self.held().remove(&v.version);
                    None
                }
                Some(sealed) => {
                    let held = self
                        .held()
                        .get(&v.version)
                        .filter(|h| h.sealed == *sealed)
                        .map(|h| Zeroizing::new(*h.root));
                    Some(match held {
                        Some(root) => root,
                        None => {
                            let root = self.seal.unseal(name, v.version, sealed).await?;
                            self.held().insert(
                                v.version,
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
                version: v.version,
                created_at: v.created_at,
                destroyed_at: v.destroyed_at,
                root,
            });
        }
        RingState::from_stored(
            name,
            ring.generation,
            ring.primary,
            ring.min_decryption_version,
            versions,
        )
    }

    /// `ring` as rows: its header and tag, and each version with the sealed form in `sealed`
    /// (versions the database holds already carry none: only new ones are written).
    fn rows_of(&self, ring: &RingState, sealed: &[(u32, SealedRoot)]) -> SealedRing {
        SealedRing {
            generation: ring.generation(),
            primary: ring.primary(),
            min_decryption_version: ring.min_decryption_version(),
            versions: ring
                .stored_versions()
                .map(|v| SealedVersion {
                    version: v.version,
                    created_at: v.created_at,
                    destroyed_at: v.destroyed_at,
                    sealed: sealed
                        .iter()
                        .find(|(n, _)| *n == v.version)
                        .map(|(_, s)| s.clone()),
                })
                .collect(),
            mac: self.integrity.ring_tag(&RingHeader::of(ring)).to_vec(),
        }
    }

    /// Seals the live root keys of `ring` that the database does not hold yet (`stored`: its
    /// rows), before any transaction: a KMS call must not hold the database's write lock.
    async fn seal_new(
        &self,
        ring: &RingState,
        stored: &HashMap<u32, StoredRow>,
    ) -> Result<Vec<(u32, SealedRoot)>, KeyRingError> {
        let mut sealed = Vec::new();
        for v in ring.stored_versions() {
            if let Some(root) = v.root
                && !stored.get(&v.version).is_some_and(|r| r.live)
            {
                sealed.push((
                    v.version,
                    self.seal.seal(self.rows.name(), v.version, root).await?,
                ));
            }
        }
        Ok(sealed)
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

    /// Writes `ring`'s versions through `swap`: new versions with their sealed keys, destroyed
    /// ones without. A version is never written without its key, and a destroyed one never
    /// gets one back.
    async fn write_versions(
        &self,
        swap: &mut dyn RingSwap,
        ring: &SealedRing,
        stored: &HashMap<u32, StoredRow>,
    ) -> Result<(), KeyRingError> {
        for v in &ring.versions {
            match (stored.get(&v.version).map(|r| r.live), v.destroyed_at) {
                // Stored, and as it is (versions only ever gain a destruction time).
                (Some(true), None) | (Some(false), Some(_)) => {}
                (Some(true), Some(at)) => swap.destroy(v.version, at).await?,
                (Some(false), None) => {
                    return Err(KeyRingError::Replaced {
                        location: self.rows.location(),
                    });
                }
                (None, _) => swap.insert(v).await?,
            }
        }
        Ok(())
    }
}

#[async_trait]
impl RingStore for SealedRingStore {
    fn name(&self) -> &str {
        self.rows.name()
    }

    fn location(&self) -> String {
        self.rows.location()
    }

    async fn load_if_changed(&self, known: Option<u64>) -> Result<Option<RingState>, KeyRingError> {
        match self.rows.generation().await? {
            None => Err(self.missing()),
            Some(g) if known == Some(g) => Ok(None),
            Some(_) => self.load().await.map(Some),
        }
    }

    async fn create(&self, ring: RingState) -> Result<RingState, KeyRingError> {
        if self.rows.generation().await?.is_some() {
            return self.load().await;
        }
        // Refused before a key is sealed (a KMS call) for a ring that cannot be stored.
        self.rows.may_insert().await?;
        let sealed = self.seal_new(&ring, &HashMap::new()).await?;
        // Of several processes creating at once, one inserts; the others find its ring.
        if !self.rows.insert(&self.rows_of(&ring, &sealed)).await? {
            return self.load().await;
        }
        self.hold(&ring, sealed);
        Ok(ring)
    }

    async fn replace(&self, ring: &RingState) -> Result<bool, KeyRingError> {
        let Some(previous) = ring.generation().checked_sub(1) else {
            return Ok(false);
        };
        let sealed = self.seal_new(ring, &self.rows.stored().await?).await?;
        let rows = self.rows_of(ring, &sealed);
        let Some(mut swap) = self.rows.swap(previous, &rows).await? else {
            return Ok(false);
        };
        // Read again under the swap: the rows cannot change now before the commit.
        let stored = swap.stored().await?;
        let unsealed = rows.versions.iter().any(|v| {
            v.destroyed_at.is_none()
                && v.sealed.is_none()
                && !stored.get(&v.version).is_some_and(|r| r.live)
        });
        if unsealed {
            // Cannot happen under the swap; but a version is never written without its key.
            return Ok(false);
        }
        // A process whose seal is not the ring's (resealed since it started) changes nothing:
        // a version it added would be sealed by a key the others no longer use.
        let mut foreign: Vec<(u32, &String)> = stored
            .iter()
            .filter_map(|(v, r)| r.sealed_by.as_ref().map(|by| (*v, by)))
            .filter(|(_, by)| !self.seal.owns(by))
            .collect();
        foreign.sort();
        if let Some((version, by)) = foreign.first() {
            return Err(KeyRingError::Seal {
                action: "change",
                ring: self.rows.name().to_owned(),
                version: *version,
                seal: self.seal.describe(),
                reason: format!(
                    "the ring was resealed with another key ({}); restart this process with that seal",
                    shown(by)
                ),
            });
        }
        self.write_versions(&mut *swap, &rows, &stored).await?;
        swap.commit().await?;
        self.hold(ring, sealed);
        Ok(true)
    }
}
