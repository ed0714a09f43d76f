//! The ring in memory and its lifecycle: versions and their states, freshness against the
//! [`RingStore`], and every change as a compare-and-swap on the generation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;

use super::material::{Material, ring_unavailable};
use super::state::generate_root;
use super::{MAX_CHANGE_ATTEMPTS, ManagedKeyProvider, RingState, SCHEME};
use crate::error::{KeyRingError, ProviderError};
use crate::provider::KeyRef;

pub(super) struct Version {
    pub(super) created_at: u64,
    /// `None` once destroyed.
    pub(super) material: Option<Arc<Material>>,
    pub(super) destroyed_at: Option<u64>,
    pub(super) key_ref: KeyRef,
}

/// The ring as this process uses it: a [`RingState`] with derived material. Replaced as a
/// whole on every change.
pub(super) struct Ring {
    pub(super) generation: u64,
    pub(super) primary: u32,
    pub(super) min_decryption_version: u32,
    pub(super) versions: BTreeMap<u32, Version>,
}

impl Ring {
    /// The usable form of `state`, reusing the derived material of `previous` for every root
    /// key it already had.
    pub(super) fn from_state(
        state: &RingState,
        previous: Option<&Self>,
    ) -> Result<Self, KeyRingError> {
        let mut versions = BTreeMap::new();
        for (&number, record) in &state.versions {
            let material = record.root.as_ref().map(|root| {
                previous
                    .and_then(|p| p.versions.get(&number)?.material.as_ref())
                    .filter(|m| bool::from(m.root.as_ref().ct_eq(root.as_ref())))
                    .map_or_else(|| Arc::new(Material::new(root)), Arc::clone)
            });
            let key_ref =
                KeyRef::new(SCHEME, state.name.as_str(), format!("v{number}")).map_err(|e| {
                    KeyRingError::Malformed {
                        reason: e.to_string(),
                    }
                })?;
            versions.insert(
                number,
                Version {
                    created_at: record.created_at,
                    material,
                    destroyed_at: record.destroyed_at,
                    key_ref,
                },
            );
        }
        Ok(Self {
            generation: state.generation,
            primary: state.primary,
            min_decryption_version: state.min_decryption_version,
            versions,
        })
    }

    /// Whether `next` keeps every version of this ring with the same key, or destroyed; a
    /// destroyed version stays destroyed; the primary never goes back to an older version
    /// (no change does that: only a rotation moves it, forward).
    pub(super) fn continued_by(&self, next: &RingState) -> bool {
        next.primary >= self.primary
            && self.versions.iter().all(|(number, v)| {
                let Some(r) = next.versions.get(number) else {
                    return false;
                };
                match (&v.material, &r.root) {
                    (Some(m), Some(root)) => bool::from(m.root.as_ref().ct_eq(root.as_ref())),
                    (_, None) => true,
                    (None, Some(_)) => false,
                }
            })
    }

    pub(super) fn state_of(&self, number: u32, v: &Version) -> VersionState {
        if v.material.is_none() {
            VersionState::Destroyed
        } else if number == self.primary {
            VersionState::Primary
        } else if number < self.min_decryption_version {
            VersionState::Disabled
        } else {
            VersionState::Active
        }
    }
}

/// What a version's key is good for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionState {
    /// Wraps new data keys and unwraps.
    Primary,
    /// Unwraps only.
    Active,
    /// Kept, but below the minimum decryption version: refuses to unwrap.
    Disabled,
    /// Key material deleted: everything wrapped under it is unreadable for good.
    Destroyed,
}

/// Public facts about one version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VersionInfo {
    /// The version number, from 1.
    pub version: u32,
    /// Its state.
    pub state: VersionState,
    /// The reference that data keys wrapped under it carry (`managed://root#v3`).
    pub key_ref: KeyRef,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Seconds since the Unix epoch, when the next version replaced it as the primary.
    pub superseded_at: Option<u64>,
    /// Seconds since the Unix epoch, when destroyed.
    pub destroyed_at: Option<u64>,
}

/// How often a provider looked at its store and how often it found a change, for metrics and
/// tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingStats {
    /// The generation of the ring in memory.
    pub generation: u64,
    /// Checks of the store (each a `stat` for a file, a one-row query for a database).
    pub checks: u64,
    /// Checks that found a newer ring and loaded it.
    pub reloads: u64,
}

/// When the ring in memory was last compared with the store.
pub(super) struct Freshness {
    pub(super) epoch: Instant,
    pub(super) interval_ns: u64,
    /// Nanoseconds after `epoch` at which the last completed check started.
    pub(super) last_check: AtomicU64,
    /// One check or change at a time in this process; concurrent callers share its result.
    pub(super) serial: tokio::sync::Mutex<()>,
    pub(super) checks: AtomicU64,
    pub(super) reloads: AtomicU64,
    /// A stored ring this process refused (rolled back or replaced): every later check fails
    /// with it, without reading the store again, until the process restarts.
    pub(super) refused: std::sync::Mutex<Option<KeyRingError>>,
}

impl Freshness {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval_ns: duration_ns(interval),
            last_check: AtomicU64::new(0),
            serial: tokio::sync::Mutex::new(()),
            checks: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            refused: std::sync::Mutex::new(None),
        }
    }

    /// Records a refusal, returning it.
    pub(super) fn refuse(&self, e: KeyRingError) -> KeyRingError {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = copy_refusal(&e);
        e
    }

    pub(super) fn refusal(&self) -> Result<(), KeyRingError> {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.as_ref().and_then(copy_refusal).map_or(Ok(()), Err)
    }

    pub(super) fn now_ns(&self) -> u64 {
        duration_ns(self.epoch.elapsed())
    }

    pub(super) fn due(&self) -> bool {
        self.now_ns()
            .saturating_sub(self.last_check.load(Ordering::Acquire))
            >= self.interval_ns
    }

    pub(super) fn checked(&self, started: u64) {
        self.last_check.fetch_max(started, Ordering::AcqRel);
    }
}

/// A copy of a refusal error (the two variants it can be).
pub(super) fn copy_refusal(e: &KeyRingError) -> Option<KeyRingError> {
    match e {
        KeyRingError::RolledBack { held, stored } => Some(KeyRingError::RolledBack {
            held: *held,
            stored: *stored,
        }),
        KeyRingError::Replaced { location } => Some(KeyRingError::Replaced {
            location: location.clone(),
        }),
        _ => None,
    }
}

pub(super) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl ManagedKeyProvider {
    /// Asks the store now whether the ring changed, and loads it if it did. Returns whether it
    /// changed.
    ///
    /// # Errors
    /// [`KeyRingError`] if the store cannot be read, or holds an older ring than this process
    /// ([`KeyRingError::RolledBack`]).
    pub async fn refresh(&self) -> Result<bool, KeyRingError> {
        let before = self.snapshot().generation;
        self.check().await?;
        Ok(self.snapshot().generation != before)
    }

    /// Adds a fresh root key as the new primary version and returns its number. Data keys
    /// wrapped under older versions still unwrap; [`rewrap`](crate::rewrap) moves each
    /// envelope's data key to the new version without touching its ciphertext.
    ///
    /// ```
    /// # async fn demo() -> Result<(), vault_crypto::Error> {
    /// use vault_crypto::{Aad, KeyContext, ManagedKeyProvider, Rewrapped};
    ///
    /// let keys = ManagedKeyProvider::in_memory("root")?;
    /// let ctx = KeyContext::parse_json(br#"{"organization_id":"org_1"}"#)?;
    /// let old = vault_crypto::seal(&keys, &ctx, b"value", Aad::NONE).await?;
    ///
    /// assert_eq!(keys.rotate().await?, 2);
    /// let Rewrapped::Moved(new) = vault_crypto::rewrap(&keys, &old, &ctx).await? else {
    ///     unreachable!("sealed under version 1, so it moves");
    /// };
    /// assert_eq!(new.key_ref().to_string(), "managed://root#v2");
    /// assert_eq!(vault_crypto::open(&keys, &new, &ctx, Aad::NONE).await?.plaintext(), b"value");
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`KeyRingError`] if the ring cannot be stored; the ring is then unchanged.
    pub async fn rotate(&self) -> Result<u32, KeyRingError> {
        self.change(|ring| ring.rotate(generate_root()?)).await
    }

    /// Deletes the key material of `version` for good: every data key wrapped under it becomes
    /// unreadable (crypto-shredding), in every process using the ring within a second. The
    /// primary version cannot be destroyed; rotate first. Destroying a destroyed version does
    /// nothing. This counts nothing: `Vault::destroy_key_version` refuses while stored data is
    /// still under the version.
    ///
    /// # Errors
    /// [`KeyRingError::UnknownVersion`], [`KeyRingError::DestroyPrimary`], or a storage error.
    pub async fn destroy(&self, version: u32) -> Result<(), KeyRingError> {
        self.change(|ring| ring.destroy(version).map(drop)).await
    }

    /// Refuses to unwrap data keys of versions below `version` (they are kept, and can be
    /// allowed again by lowering it).
    ///
    /// # Errors
    /// [`KeyRingError::MinAbovePrimary`], [`KeyRingError::UnknownVersion`] for 0, or a storage
    /// error.
    pub async fn set_min_decryption_version(&self, version: u32) -> Result<(), KeyRingError> {
        self.change(|ring| ring.set_min_decryption_version(version))
            .await
    }

    pub(super) fn snapshot(&self) -> Arc<Ring> {
        Arc::clone(&self.ring.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `state` the ring in memory if it is newer. Call with `fresh.serial` held.
    ///
    /// A ring that is not a continuation of the one in memory is refused whatever its
    /// generation: one that lost a version, changed a version's key or brought a destroyed one
    /// back was replaced (recreated after the file was lost, copied from elsewhere), and using
    /// it would seal under keys that exist nowhere else or open what was shredded.
    pub(super) fn publish(&self, state: &RingState) -> Result<(), KeyRingError> {
        let held = self.snapshot();
        if state.generation < held.generation {
            return Err(self.fresh.refuse(KeyRingError::RolledBack {
                held: held.generation,
                stored: state.generation,
            }));
        }
        if !held.continued_by(state) {
            return Err(self.fresh.refuse(KeyRingError::Replaced {
                location: format!("{:?}", self.store),
            }));
        }
        if state.generation == held.generation {
            return Ok(());
        }
        let ring = Arc::new(Ring::from_state(state, Some(&held))?);
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
        // Lock order: never hold the ring while taking the cache (see `kek`).
        self.keks.clear();
        self.fresh.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Compares the ring with the store, loading it if it moved on. Callers that arrive while
    /// a check runs wait for it and share its result.
    pub(super) async fn check(&self) -> Result<(), KeyRingError> {
        let asked = self.fresh.now_ns();
        let _serial = self.fresh.serial.lock().await;
        if self.fresh.last_check.load(Ordering::Acquire) > asked {
            return Ok(()); // a check that started after this caller asked has finished
        }
        self.fresh.refusal()?;
        let started = self.fresh.now_ns();
        self.fresh.checks.fetch_add(1, Ordering::Relaxed);
        let known = self.snapshot().generation;
        if let Some(state) = self.store.load_if_changed(Some(known)).await? {
            self.publish(&state)?;
        }
        self.fresh.checked(started);
        Ok(())
    }

    /// The ring to use now: checked against the store if the last check is older than the
    /// interval.
    pub(super) async fn current(&self) -> Result<Arc<Ring>, ProviderError> {
        if self.fresh.due() {
            self.check().await.map_err(ring_unavailable)?;
        }
        Ok(self.snapshot())
    }

    /// Applies `change` to the stored ring and stores the result if no other process changed
    /// it meanwhile (else reloads and tries again), then publishes it.
    pub(super) async fn change<T>(
        &self,
        mut change: impl FnMut(&mut RingState) -> Result<T, KeyRingError> + Send,
    ) -> Result<T, KeyRingError> {
        let _serial = self.fresh.serial.lock().await;
        self.fresh.refusal()?;
        for _ in 0..MAX_CHANGE_ATTEMPTS {
            let started = self.fresh.now_ns();
            let stored =
                self.store
                    .load_if_changed(None)
                    .await?
                    .ok_or_else(|| KeyRingError::Missing {
                        location: format!("{:?}", self.store),
                    })?;
            let held = self.snapshot();
            if stored.generation < held.generation {
                return Err(self.fresh.refuse(KeyRingError::RolledBack {
                    held: held.generation,
                    stored: stored.generation,
                }));
            }
            if !held.continued_by(&stored) {
                return Err(self.fresh.refuse(KeyRingError::Replaced {
                    location: format!("{:?}", self.store),
                }));
            }
            let mut next = stored.duplicate();
            let out = change(&mut next)?;
            next.generation = stored.generation.checked_add(1).ok_or(KeyRingError::Busy)?;
            next.validate()?;
            if self.store.replace(&next).await? {
                self.publish(&next)?;
                self.fresh.checked(started);
                return Ok(out);
            }
        }
        Err(KeyRingError::Busy)
    }
}
