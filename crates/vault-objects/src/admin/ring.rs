//! `vault keys`: the managed key ring's versions, rotation, destruction, minimum version, its
//! seal and where it lives, the integrity key's protection, and rewrapping one envelope.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::OnceCell;
use vault_crypto::managed::{MasterKeySeal, RootSeal as _, SealedRoot, copy_ring};
use vault_crypto::sealed_ring::SealedRingStore;
use vault_crypto::{
    Envelope, FileRingStore, KeyRingError, ManagedKeyProvider, Sealed, VersionState,
};
use vault_store::{Actor, IntegrityStore as _, SqlStore};

use super::AdminError;
use crate::config::{Config, ManagedRing};
use crate::deployment::{Deployment, default_router, open_seal};
use crate::integrity::{self, IntegrityKey, Upgrade};
use crate::rings::Rings;
use crate::{DestroyReport, Shred, Vault};

/// The actor of ring events (`vault.kek.*`) and of rewraps (`vault.data.rewrapped`). They reach
/// every environment with data under the ring (its Events API and webhooks), so they name the
/// vault's key management, never the operator's login.
pub fn ring_actor() -> Actor {
    Actor::new("vault_keys", "vault key management")
}

/// A key version as `vault keys status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStatus {
    /// Its number.
    pub version: u32,
    /// `primary`, `active`, `disabled` or `destroyed`.
    pub state: &'static str,
    /// When it was made (seconds since the epoch).
    pub created_at: u64,
    /// Object versions in the store wrapped under it and data keys issued under it, if the
    /// store could be counted.
    pub usage: Option<(u64, u64)>,
}

/// `vault keys status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingStatus {
    /// The ring's name.
    pub name: String,
    /// Its generation (each change adds one).
    pub generation: u64,
    /// The oldest version that still decrypts.
    pub min_decryption_version: u32,
    /// Every version, oldest first.
    pub versions: Vec<VersionStatus>,
    /// Why nothing was counted, if nothing was (no store).
    pub uncounted: Option<String>,
}

/// `vault keys protect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectOutcome {
    /// Whether the store was protected before.
    pub already: bool,
    /// The integrity key's id.
    pub key_id: String,
}

/// Where `vault keys migrate-ring` moves a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingPlace {
    /// The store's database, sealed.
    Database,
    /// The key-ring file in the data directory (unsealed, mode 0600).
    File,
}

/// A ring moved by `vault keys migrate-ring`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingMove {
    /// Into the database; the file is kept aside, unused.
    IntoDatabase {
        /// The ring.
        ring: String,
        /// Its generation.
        generation: u64,
        /// The store it is in now.
        store: String,
        /// Where the old file was put.
        aside: PathBuf,
    },
    /// Into its file; the database rows are removed.
    IntoFile {
        /// The ring.
        ring: String,
        /// Its generation.
        generation: u64,
        /// The file.
        path: PathBuf,
    },
}

/// `vault keys reseal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resealed {
    /// The integrity key, if it was sealed again too (PostgreSQL): its id.
    pub integrity_key: Option<String>,
    /// The ring.
    pub ring: String,
    /// How many root keys were sealed again.
    pub root_keys: usize,
    /// The new seal, described.
    pub seal: String,
}

/// Makes a master key file at `path` (mode 0600) and answers its fingerprint, as `sealed_by`
/// names it.
///
/// # Errors
/// If the file exists or cannot be written.
pub fn init_master_key(path: &Path) -> Result<String, AdminError> {
    Ok(MasterKeySeal::create_file(path)?.describe())
}

/// The key administration of one managed ring of a deployment.
pub struct KeyAdmin<'a> {
    deployment: &'a Deployment,
    config: &'a Config,
    chosen: Result<ManagedRing, String>,
    store: OnceCell<SqlStore>,
}

impl std::fmt::Debug for KeyAdmin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAdmin")
            .field("deployment", self.deployment)
            .finish_non_exhaustive()
    }
}

impl<'a> KeyAdmin<'a> {
    /// The managed ring of `provider` (the only managed one when `None`) in `deployment`.
    pub fn new(deployment: &'a Deployment, config: &'a Config, provider: Option<&str>) -> Self {
        Self {
            deployment,
            config,
            chosen: config.managed_ring(provider),
            store: OnceCell::new(),
        }
    }

    fn chosen(&self) -> Result<&ManagedRing, AdminError> {
        self.chosen
            .as_ref()
            .map_err(|m| AdminError::Invalid(m.clone()))
    }

    /// The store, opened once if a command needs it (the database ring lives there).
    async fn store(&self) -> Result<&SqlStore, AdminError> {
        Ok(self
            .store
            .get_or_try_init(|| async { self.deployment.store().await })
            .await?)
    }

    fn no_store(&self) -> String {
        format!("no object store at {}", self.deployment.describe())
    }

    /// The ring, which must exist: key administration never creates one.
    async fn ring(&self) -> Result<Arc<ManagedKeyProvider>, AdminError> {
        let chosen = self.chosen()?;
        let rings = if self.deployment.rings_in_database() {
            self.deployment
                .rings(self.store().await?, self.config)
                .await?
        } else {
            Rings::Files {
                dir: self.deployment.data_dir().to_owned(),
                store: None,
            }
        };
        Ok(Arc::new(
            rings
                .open(&chosen.ring, false)
                .await?
                .with_check_interval(chosen.check_interval),
        ))
    }

    /// A vault over the ring alone, for counting and destroying; `None` if there is no store
    /// (a missing store must not look like an empty one).
    async fn ring_vault(&self, ring: Arc<ManagedKeyProvider>) -> Result<Option<Vault>, AdminError> {
        if !self.deployment.has_store() {
            return Ok(None);
        }
        let store = self.store().await?;
        let key = self
            .deployment
            .integrity(store, self.config, Upgrade::Refuse)
            .await?;
        Ok(Some(Vault::new(
            Arc::new(default_router(ring)),
            Arc::new(store.clone()),
            key,
        )))
    }

    /// `vault keys rewrap` of one envelope: unwrapped, checked, and wrapped again under the key
    /// the rules choose now (the store's BYOK rules joined to the file's where there is a
    /// store, or `config_given`).
    ///
    /// # Errors
    /// If it does not open, or a provider cannot be reached.
    pub async fn rewrap_envelope(
        &self,
        envelope: &Envelope<'_>,
        config_given: bool,
    ) -> Result<Sealed, AdminError> {
        let d = self.deployment;
        let router = if (config_given || d.has_store()) && !d.rings_in_database() {
            let rings = Rings::Files {
                dir: d.data_dir().to_owned(),
                store: None,
            };
            let merged = if d.has_store() {
                d.merged(self.config, &rings, self.store().await?).await?
            } else {
                self.config.clone()
            };
            merged.router_for_store(&rings, false, None).await?
        } else if config_given || d.rings_in_database() {
            let rings = d.rings(self.store().await?, self.config).await?;
            let merged = d.merged(self.config, &rings, self.store().await?).await?;
            merged.router_for_store(&rings, false, None).await?
        } else {
            default_router(self.ring().await?)
        };
        // Always unwrapped and checked; a reserved (the vault's own) header context is refused.
        Ok(envelope.wrap_again(&router, envelope.context()).await?)
    }

    /// `vault keys status`: the ring's versions, each with what the store holds under it.
    ///
    /// # Errors
    /// If the ring or the store cannot be read.
    pub async fn status(&self) -> Result<RingStatus, AdminError> {
        let ring = self.ring().await?;
        let usage = match self.ring_vault(ring.clone()).await? {
            Some(v) => Some(v.key_usage().await?),
            None => None,
        };
        let versions = ring
            .versions()
            .into_iter()
            .map(|v| {
                let key_id = v.key_ref.to_string();
                VersionStatus {
                    version: v.version,
                    state: match v.state {
                        VersionState::Primary => "primary",
                        VersionState::Active => "active",
                        VersionState::Disabled => "disabled",
                        VersionState::Destroyed => "destroyed",
                        _ => "unknown",
                    },
                    created_at: v.created_at,
                    usage: usage.as_ref().map(|usage| {
                        usage
                            .iter()
                            .find(|u| u.key_id == key_id)
                            .map_or((0, 0), |u| (u.stored_versions, u.issued_data_keys))
                    }),
                }
            })
            .collect();
        Ok(RingStatus {
            name: ring.name().to_owned(),
            generation: ring.stats().generation,
            min_decryption_version: ring.min_decryption_version(),
            versions,
            uncounted: usage.is_none().then(|| self.no_store()),
        })
    }

    /// `vault keys rotate`: a new primary version; through the store when there is one, so the
    /// rotation is in its audit trail (`vault.kek.created` for every environment with data
    /// under the ring).
    ///
    /// # Errors
    /// If the ring cannot be changed.
    pub async fn rotate(&self) -> Result<u32, AdminError> {
        let ring = self.ring().await?;
        Ok(match self.ring_vault(ring.clone()).await? {
            Some(vault) => vault.rotate_key(&ring, &ring_actor()).await?,
            None => ring.rotate().await?,
        })
    }

    /// `vault keys destroy`: shreds `version`, counted through the store; refused with
    /// [`Shred::Refuse`] while anything is under it or nothing can be counted.
    ///
    /// # Errors
    /// `KeyInUse` and the like from the vault; `Failed` if there is no store to count with.
    pub async fn destroy(
        &self,
        version: u32,
        shred: Shred,
    ) -> Result<(DestroyReport, bool), AdminError> {
        let ring = self.ring().await?;
        match (self.ring_vault(ring.clone()).await?, shred) {
            (Some(vault), _) => Ok((
                vault
                    .destroy_key_version(&ring, version, shred, &ring_actor())
                    .await?,
                true,
            )),
            (None, Shred::Refuse) => Err(AdminError::NoStore(format!(
                "{}: cannot count what v{version} wraps (is --data-dir right?); --yes-destroy-data destroys it uncounted",
                self.no_store()
            ))),
            (None, Shred::Consent) => {
                let before = ring.versions();
                ring.destroy(version).await?;
                Ok((
                    DestroyReport::uncounted(
                        version,
                        before
                            .iter()
                            .any(|v| v.version == version && v.state != VersionState::Destroyed),
                    ),
                    false,
                ))
            }
        }
    }

    /// `vault keys min-version`: versions below `version` no longer decrypt.
    ///
    /// # Errors
    /// If the ring refuses (a version above the primary) or cannot be changed.
    pub async fn set_min_version(&self, version: u32) -> Result<(), AdminError> {
        Ok(self
            .ring()
            .await?
            .set_min_decryption_version(version)
            .await?)
    }

    /// `vault keys protect`: tags a store from before row integrity (with `force`, one whose
    /// record is missing).
    ///
    /// # Errors
    /// As [`Deployment::integrity`].
    pub async fn protect(&self, force: bool) -> Result<ProtectOutcome, AdminError> {
        let store = self.store().await?;
        let already = store.integrity().await?.is_some();
        let upgrade = if force {
            Upgrade::Force
        } else {
            Upgrade::Protect
        };
        let key = self
            .deployment
            .integrity(store, self.config, upgrade)
            .await?;
        Ok(ProtectOutcome {
            already,
            key_id: key.id().to_owned(),
        })
    }

    /// `vault keys reseal --to`: every root key of the ring in the database (and the
    /// integrity key of a PostgreSQL store, first) sealed again with `to`.
    ///
    /// # Errors
    /// `Invalid` for a ring in a file, a seal not given or not usable.
    pub async fn reseal(&self, to: &str) -> Result<Resealed, AdminError> {
        let chosen = self.chosen()?;
        if !self.deployment.rings_in_database() {
            return Err(AdminError::Invalid(
                "the ring is a file (unsealed); reseal moves a ring in the database to another seal".into(),
            ));
        }
        self.config.check_seal(to).map_err(AdminError::Invalid)?;
        let Some(from) = self.deployment.root_seal(self.config).await? else {
            return Err(AdminError::Invalid(
                "give the current seal with --seal".into(),
            ));
        };
        let Some(new) = open_seal(Some(to), self.config).await? else {
            return Err(AdminError::Invalid("no seal given".into()));
        };
        let store = self.store().await?;
        // The integrity key of a PostgreSQL store is sealed the same way: it moves first, and
        // a re-run finds it moved.
        let mut integrity_key = None;
        if self.deployment.is_postgres()
            && let Some(record) = store.integrity().await?
            && let Some((sealed_by, bytes)) = record.sealed_key
            && !new.owns(&sealed_by)
        {
            let key = IntegrityKey::unseal(&*from, &SealedRoot { sealed_by, bytes }).await?;
            integrity::checked_record(store, &key).await?;
            let sealed = key.seal(&*new).await?;
            store
                .keep_sealed_key(&sealed.sealed_by, &sealed.bytes)
                .await?;
            integrity_key = Some(key.id().to_owned());
        }
        let key = self
            .deployment
            .integrity(store, self.config, Upgrade::Refuse)
            .await?;
        let ring = SealedRingStore::new(Arc::new(store.ring_rows(&chosen.ring)), from, key);
        let root_keys = ring.reseal(&*new).await?;
        Ok(Resealed {
            integrity_key,
            ring: chosen.ring.clone(),
            root_keys,
            seal: new.describe(),
        })
    }

    /// `vault keys migrate-ring --to`: copies the ring, then retires the source (the file is
    /// renamed aside; the database rows are removed), so only one copy stays in use.
    ///
    /// # Errors
    /// `Invalid` without a seal; `Conflict` if the ring changed during the move (nothing is
    /// lost: both copies are kept, or the move is undone).
    pub async fn migrate_ring(&self, to: RingPlace) -> Result<RingMove, AdminError> {
        let chosen = self.chosen()?;
        let Some(seal) = self.deployment.root_seal(self.config).await? else {
            return Err(AdminError::Invalid(
                "the ring in the database is kept sealed: give --seal".into(),
            ));
        };
        let store = self.store().await?;
        let key = self
            .deployment
            .integrity(store, self.config, Upgrade::Refuse)
            .await?;
        let file = FileRingStore::new(self.deployment.data_dir(), &chosen.ring)?;
        let database = SealedRingStore::new(
            Arc::new(store.ring_rows(&chosen.ring).moving_in()),
            seal,
            key,
        );
        match to {
            RingPlace::Database => {
                let generation = copy_ring(&file, &database).await?;
                let aside = file.path().with_extension(format!(
                    "json.migrated-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                if let Err(e) = file.retire(&aside, generation) {
                    // Changed meanwhile (a rotation by a process on the file): the copy is stale.
                    if !store.remove_ring(&chosen.ring, generation).await? {
                        return Err(AdminError::Conflict(format!(
                            "the ring changed during the move both in its file and in the database ({e}); both are kept: stop every process using the ring, then compare `vault keys status` with and without --seal before going on"
                        )));
                    }
                    return Err(moved_meanwhile(&e));
                }
                Ok(RingMove::IntoDatabase {
                    ring: chosen.ring.clone(),
                    generation,
                    store: self.deployment.describe(),
                    aside,
                })
            }
            RingPlace::File => {
                let generation = copy_ring(&database, &file).await?;
                if !store.remove_ring(&chosen.ring, generation).await? {
                    // Changed meanwhile (a rotation by a replica): the file is stale. Set aside
                    // under its lock, and only if no process on the file changed it meanwhile.
                    let stale = file.path().with_extension("json.stale");
                    if let Err(e) = file.retire(&stale, generation) {
                        return Err(AdminError::Conflict(format!(
                            "the ring changed during the move both in the database and in its new file ({e}); both are kept: stop every process using the ring before going on"
                        )));
                    }
                    std::fs::remove_file(&stale)?;
                    return Err(moved_meanwhile(&KeyRingError::Busy));
                }
                Ok(RingMove::IntoFile {
                    ring: chosen.ring.clone(),
                    generation,
                    path: file.path().to_owned(),
                })
            }
        }
    }
}

fn moved_meanwhile(e: &KeyRingError) -> AdminError {
    AdminError::Conflict(format!(
        "the ring changed while it was moved ({e}); nothing was moved: stop the processes using it and run it again"
    ))
}
