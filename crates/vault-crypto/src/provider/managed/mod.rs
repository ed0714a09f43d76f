//! The managed key provider: a ring of 256-bit root keys with numbered versions.
//!
//! For each key context, the key-encryption key (KEK) is derived from the primary root key:
//! `KEK = HKDF-Expand(HKDF-Extract(salt = "", IKM = root key), "vault-crypto/v1/managed-kek" ||
//! canonical context, 32)`. A data key is wrapped with AES-256-GCM under that KEK with the
//! canonical context as associated data, so it unwraps under the same context only. The wrapped
//! bytes are `nonce[12] || encrypted data key[32] || tag[16]`, and the key reference names the
//! version: `managed://<ring>#v<N>`. See `docs/FORMAT.md`, "Managed key provider".
//!
//! Lifecycle: [`rotate`](ManagedKeyProvider::rotate) adds a primary version (older versions still
//! unwrap); [`crate::rewrap`] moves envelopes to the primary version without re-encrypting data;
//! [`destroy`](ManagedKeyProvider::destroy) deletes a version's key material for good
//! (crypto-shredding); [`set_min_decryption_version`](ManagedKeyProvider::set_min_decryption_version)
//! refuses older versions without destroying them.
//!
//! # One ring for every process
//! The ring lives in a [`RingStore`] (a file by default, see [`FileRingStore`]); the provider's
//! copy in memory is a cache of it. Before a seal, an unwrap or an
//! [`is_current`](KeyProvider::is_current) the provider asks the store whether the ring's
//! generation moved, at most once per [check interval](ManagedKeyProvider::with_check_interval)
//! (250 ms by default; a `stat` of the file), and always before looking for a version it does
//! not know. So a rotation, a new minimum or a destruction made by any process is obeyed by every
//! other within the interval plus one check, and never later than a second. Changes are
//! compare-and-swap on the generation, so concurrent changes from several processes are all kept,
//! and a reload never replaces the ring in memory with an older one.

mod file;
mod state;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

pub use file::FileRingStore;
pub use state::{MAX_FILE_LEN, MAX_VERSIONS, RingState};
pub use store::{MemoryRingStore, RingStore};

use crate::aead::{AeadKey, Backend, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::context::KeyContext;
use crate::data_key::{DATA_KEY_LEN, DataKey};
use crate::error::{KeyRingError, ProviderError, ProviderErrorKind};
use crate::provider::{Attempts, KeyProvider, KeyRef, WrappedKey};
use state::{RootKey, generate_root, validate_name};

/// The scheme of managed key references.
pub const SCHEME: &str = "managed";
/// How often, at most, a provider in use asks its store whether the ring changed, by default.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// The longest check interval accepted: a change must be seen within a second.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_millis(900);
/// Domain-separation label of per-context KEKs.
const KEK_LABEL: &[u8] = b"vault-crypto/v1/managed-kek";
/// `nonce || encrypted data key || tag`.
const WRAPPED_LEN: usize = NONCE_LEN + DATA_KEY_LEN + TAG_LEN;
/// The most expanded KEKs kept in memory (each a few hundred bytes).
const KEK_CACHE_MAX: usize = 4096;
/// How often a change retries when other processes keep changing the ring first.
const MAX_CHANGE_ATTEMPTS: usize = 32;

/// One root key version's secret material: the key and its HKDF-Extract state, kept so each
/// KEK costs one HKDF-Expand. Not `Clone`: rings share it through an `Arc`.
struct Material {
    root: RootKey,
    kdf: Hkdf<Sha256>,
}

impl Material {
    fn new(root: &RootKey) -> Self {
        let kdf = Hkdf::<Sha256>::new(None, root.as_ref());
        Self {
            root: Zeroizing::new(**root),
            kdf,
        }
    }

    fn kek(&self, ctx: &KeyContext) -> Zeroizing<[u8; KEY_LEN]> {
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes never exceeds HKDF-SHA256's output limit.
        let _ = self
            .kdf
            .expand_multi_info(&[KEK_LABEL, ctx.canonical_bytes()], kek.as_mut());
        kek
    }
}

struct Version {
    created_at: u64,
    /// `None` once destroyed.
    material: Option<Arc<Material>>,
    destroyed_at: Option<u64>,
    key_ref: KeyRef,
}

/// The ring as this process uses it: a [`RingState`] with derived material. Replaced as a
/// whole on every change.
struct Ring {
    generation: u64,
    primary: u32,
    min_decryption_version: u32,
    versions: BTreeMap<u32, Version>,
}

impl Ring {
    /// The usable form of `state`, reusing the derived material of `previous` for every root
    /// key it already had.
    fn from_state(state: &RingState, previous: Option<&Self>) -> Result<Self, KeyRingError> {
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
    /// destroyed version stays destroyed.
    fn continued_by(&self, next: &RingState) -> bool {
        self.versions.iter().all(|(number, v)| {
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

    fn state_of(&self, number: u32, v: &Version) -> VersionState {
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

/// The managed key provider. See the [module docs](self).
pub struct ManagedKeyProvider {
    name: String,
    store: Arc<dyn RingStore>,
    ring: RwLock<Arc<Ring>>,
    backend: Backend,
    keks: KekCache,
    fresh: Freshness,
}

/// When the ring in memory was last compared with the store.
struct Freshness {
    epoch: Instant,
    interval_ns: u64,
    /// Nanoseconds after `epoch` at which the last completed check started.
    last_check: AtomicU64,
    /// One check or change at a time in this process; concurrent callers share its result.
    serial: tokio::sync::Mutex<()>,
    checks: AtomicU64,
    reloads: AtomicU64,
    /// A stored ring this process refused (rolled back or replaced): every later check fails
    /// with it, without reading the store again, until the process restarts.
    refused: std::sync::Mutex<Option<KeyRingError>>,
}

impl Freshness {
    fn new(interval: Duration) -> Self {
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
    fn refuse(&self, e: KeyRingError) -> KeyRingError {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = copy_refusal(&e);
        e
    }

    fn refusal(&self) -> Result<(), KeyRingError> {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.as_ref().and_then(copy_refusal).map_or(Ok(()), Err)
    }

    fn now_ns(&self) -> u64 {
        duration_ns(self.epoch.elapsed())
    }

    fn due(&self) -> bool {
        self.now_ns()
            .saturating_sub(self.last_check.load(Ordering::Acquire))
            >= self.interval_ns
    }

    fn checked(&self, started: u64) {
        self.last_check.fetch_max(started, Ordering::AcqRel);
    }
}

/// A copy of a refusal error (the two variants it can be).
fn copy_refusal(e: &KeyRingError) -> Option<KeyRingError> {
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

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Expanded KEKs by version and canonical context, so a context in use costs neither an
/// HKDF-Expand nor an AES key schedule per wrap or unwrap. Bounded (emptied when full) and
/// emptied on every change of the ring, so a destroyed version's keys leave memory with it.
#[derive(Default)]
struct KekCache {
    map: RwLock<HashMap<u32, KeksByContext>>,
}

/// Expanded KEKs of one version, by canonical context.
type KeksByContext = HashMap<Box<[u8]>, Arc<AeadKey>>;

impl KekCache {
    fn get(&self, version: u32, ctx: &KeyContext) -> Option<Arc<AeadKey>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(&version)?.get(ctx.canonical_bytes()).cloned()
    }

    /// Inserts unless `still_valid` says the version has gone meanwhile.
    fn insert(
        &self,
        version: u32,
        ctx: &KeyContext,
        key: Arc<AeadKey>,
        still_valid: impl FnOnce() -> bool,
    ) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if !still_valid() {
            return;
        }
        if map.values().map(HashMap::len).sum::<usize>() >= KEK_CACHE_MAX {
            map.clear();
        }
        map.entry(version)
            .or_default()
            .insert(ctx.canonical_bytes().into(), key);
    }

    fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl fmt::Debug for ManagedKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.snapshot();
        f.debug_struct("ManagedKeyProvider")
            .field("name", &self.name)
            .field("generation", &ring.generation)
            .field("primary", &ring.primary)
            .field("versions", &ring.versions.len())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl ManagedKeyProvider {
    /// A ring held only in memory, with one fresh version. For tests and ephemeral use: its
    /// keys vanish with the process.
    ///
    /// # Errors
    /// [`KeyRingError::Malformed`] for an invalid name, [`KeyRingError::Random`].
    pub fn in_memory(name: &str) -> Result<Self, KeyRingError> {
        Self::in_memory_with(RingState::first(name)?)
    }

    fn in_memory_with(state: RingState) -> Result<Self, KeyRingError> {
        let store = MemoryRingStore::holding(state.duplicate());
        Self::from_state(Arc::new(store), &state)
    }

    /// Opens the ring `name` in `dir` (file `keyring-<name>.json`), creating the directory
    /// (mode 0700) and a ring with one fresh version (mode 0600) on first use. Two processes
    /// creating it at once end up with the same ring. Temporary files left by an interrupted
    /// change of this ring are removed.
    ///
    /// # Errors
    /// [`KeyRingError`] if the file cannot be read or written, is malformed, or is readable by
    /// group or others.
    pub fn open_or_create(dir: &Path, name: &str) -> Result<Self, KeyRingError> {
        let store = FileRingStore::new(dir, name)?;
        let state = store.open_now(Some(RingState::first(name)?))?;
        Self::from_state(Arc::new(store), &state)
    }

    /// Opens the existing ring `name` in `dir`; unlike [`open_or_create`](Self::open_or_create)
    /// it never creates anything.
    ///
    /// # Errors
    /// [`KeyRingError::Missing`] if there is no ring, or as `open_or_create`.
    pub fn open_existing(dir: &Path, name: &str) -> Result<Self, KeyRingError> {
        let store = FileRingStore::new(dir, name)?;
        let state = store.open_now(None)?;
        Self::from_state(Arc::new(store), &state)
    }

    /// Opens the ring held by `store`, creating it with one fresh version if `create` and there
    /// is none.
    ///
    /// # Errors
    /// [`KeyRingError::Missing`] if there is no ring and not `create`; any error of the store.
    pub async fn open(store: Arc<dyn RingStore>, create: bool) -> Result<Self, KeyRingError> {
        let state = if create {
            store.create(RingState::first(store.name())?).await?
        } else {
            store
                .load_if_changed(None)
                .await?
                .ok_or_else(|| KeyRingError::Missing {
                    location: format!("{store:?}"),
                })?
        };
        Self::from_state(store, &state)
    }

    fn from_state(store: Arc<dyn RingStore>, state: &RingState) -> Result<Self, KeyRingError> {
        validate_name(&state.name)?;
        if state.name != store.name() {
            return Err(KeyRingError::Malformed {
                reason: "the store holds another ring".into(),
            });
        }
        Ok(Self {
            name: state.name.clone(),
            ring: RwLock::new(Arc::new(Ring::from_state(state, None)?)),
            store,
            backend: Backend::DEFAULT,
            keks: KekCache::default(),
            fresh: Freshness::new(DEFAULT_CHECK_INTERVAL),
        })
    }

    /// Use another AES-256-GCM backend for wrapping (the default is [`Backend::DEFAULT`]).
    #[must_use]
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self.keks.clear();
        self
    }

    /// How often, at most, the provider asks its store whether the ring changed while it is in
    /// use (default [`DEFAULT_CHECK_INTERVAL`], capped at [`MAX_CHECK_INTERVAL`]; zero checks
    /// before every operation). A change made elsewhere is obeyed here within this interval
    /// plus the time of one check.
    #[must_use]
    pub fn with_check_interval(mut self, interval: Duration) -> Self {
        self.fresh.interval_ns = duration_ns(interval.min(MAX_CHECK_INTERVAL));
        self
    }

    /// The check interval in use.
    pub fn check_interval(&self) -> Duration {
        Duration::from_nanos(self.fresh.interval_ns)
    }

    /// The ring's name, the key id in its key references.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the ring lives.
    pub fn store(&self) -> &Arc<dyn RingStore> {
        &self.store
    }

    /// Checks and loads counted so far.
    pub fn stats(&self) -> RingStats {
        RingStats {
            generation: self.snapshot().generation,
            checks: self.fresh.checks.load(Ordering::Relaxed),
            reloads: self.fresh.reloads.load(Ordering::Relaxed),
        }
    }

    /// The version that wraps new data keys, as of the last check.
    pub fn primary_version(&self) -> u32 {
        self.snapshot().primary
    }

    /// Versions below this one refuse to unwrap (as of the last check).
    pub fn min_decryption_version(&self) -> u32 {
        self.snapshot().min_decryption_version
    }

    /// Every version, oldest first, as of the last check ([`refresh`](Self::refresh) first for
    /// the store's view this instant).
    pub fn versions(&self) -> Vec<VersionInfo> {
        let ring = self.snapshot();
        ring.versions
            .iter()
            .map(|(&version, v)| VersionInfo {
                version,
                state: ring.state_of(version, v),
                key_ref: v.key_ref.clone(),
                created_at: v.created_at,
                superseded_at: version
                    .checked_add(1)
                    .and_then(|next| ring.versions.get(&next))
                    .map(|next| next.created_at),
                destroyed_at: v.destroyed_at,
            })
            .collect()
    }

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
    /// wrapped under older versions still unwrap.
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

    pub(crate) fn from_root_keys(
        name: &str,
        keys: Vec<(u32, RootKey)>,
        primary: u32,
    ) -> Result<Self, KeyRingError> {
        Self::in_memory_with(RingState::from_root_keys(name, keys, primary)?)
    }

    fn snapshot(&self) -> Arc<Ring> {
        Arc::clone(&self.ring.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `state` the ring in memory if it is newer. Call with `fresh.serial` held.
    ///
    /// A ring that is not a continuation of the one in memory is refused whatever its
    /// generation: one that lost a version, changed a version's key or brought a destroyed one
    /// back was replaced (recreated after the file was lost, copied from elsewhere), and using
    /// it would seal under keys that exist nowhere else or open what was shredded.
    fn publish(&self, state: &RingState) -> Result<(), KeyRingError> {
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
    async fn check(&self) -> Result<(), KeyRingError> {
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
    async fn current(&self) -> Result<Arc<Ring>, ProviderError> {
        if self.fresh.due() {
            self.check().await.map_err(ring_unavailable)?;
        }
        Ok(self.snapshot())
    }

    /// Applies `change` to the stored ring and stores the result if no other process changed
    /// it meanwhile (else reloads and tries again), then publishes it.
    async fn change<T>(
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

    /// The expanded KEK of `version` for `ctx`, from the cache or derived.
    fn kek(
        &self,
        number: u32,
        material: &Material,
        ctx: &KeyContext,
    ) -> Result<Arc<AeadKey>, ProviderError> {
        if let Some(key) = self.keks.get(number, ctx) {
            return Ok(key);
        }
        let key = self
            .backend
            .key(&material.kek(ctx))
            .map(Arc::new)
            .map_err(|_| provider_error(ProviderErrorKind::Other, "key setup failed"))?;
        self.keks.insert(number, ctx, Arc::clone(&key), || {
            self.snapshot()
                .versions
                .get(&number)
                .is_some_and(|v| v.material.is_some())
        });
        Ok(key)
    }

    /// Wraps under the primary version of the ring in memory, without asking the store (for
    /// [`crate::danger`]).
    pub(crate) fn wrap_with_nonce(
        &self,
        key: &[u8; DATA_KEY_LEN],
        ctx: &KeyContext,
        nonce: [u8; NONCE_LEN],
    ) -> Result<WrappedKey, ProviderError> {
        self.wrap_in(&self.snapshot(), key, ctx, nonce)
    }

    fn wrap_in(
        &self,
        ring: &Ring,
        key: &[u8; DATA_KEY_LEN],
        ctx: &KeyContext,
        nonce: [u8; NONCE_LEN],
    ) -> Result<WrappedKey, ProviderError> {
        let version = ring
            .versions
            .get(&ring.primary)
            .ok_or_else(|| provider_error(ProviderErrorKind::NotFound, "no primary version"))?;
        let material = version
            .material
            .as_ref()
            .ok_or_else(|| provider_error(ProviderErrorKind::Disabled, "primary destroyed"))?;
        let kek = self.kek(ring.primary, material, ctx)?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(key);
        let tag = kek
            .seal_in_place(&nonce, ctx.canonical_bytes(), &mut out[NONCE_LEN..])
            .map_err(|_| provider_error(ProviderErrorKind::Other, "wrap failed"))?;
        out.extend_from_slice(&tag);
        WrappedKey::new(version.key_ref.clone(), out)
            .map_err(|_| provider_error(ProviderErrorKind::Other, "wrap failed"))
    }

    fn unwrap_in(
        &self,
        ring: &Ring,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
    ) -> Result<DataKey, ProviderError> {
        let number = parse_version(wrapped.key_ref().version()).ok_or_else(|| {
            provider_error(
                ProviderErrorKind::InvalidCiphertext,
                "malformed key version",
            )
        })?;
        let version = ring
            .versions
            .get(&number)
            .ok_or_else(|| provider_error(ProviderErrorKind::NotFound, "no such key version"))?;
        let Some(material) = &version.material else {
            return Err(provider_error(
                ProviderErrorKind::Disabled,
                "key version destroyed",
            ));
        };
        if number < ring.min_decryption_version {
            return Err(provider_error(
                ProviderErrorKind::Disabled,
                "key version below the minimum decryption version",
            ));
        }
        let invalid = || provider_error(ProviderErrorKind::InvalidCiphertext, "");
        let bytes: &[u8; WRAPPED_LEN] = wrapped.bytes().try_into().map_err(|_| invalid())?;
        let (nonce, rest) = bytes.split_first_chunk::<NONCE_LEN>().ok_or_else(invalid)?;
        let (sealed, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or_else(invalid)?;
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        key.copy_from_slice(sealed);
        self.kek(number, material, ctx)?
            .open_in_place(nonce, ctx.canonical_bytes(), key.as_mut(), tag)
            .map_err(|_| invalid())?;
        Ok(DataKey::from_unwrapped(key))
    }
}

#[async_trait]
impl KeyProvider for ManagedKeyProvider {
    fn owns(&self, key: &KeyRef) -> bool {
        key.scheme() == SCHEME && key.key_id() == self.name
    }

    /// Only the primary version is current: rewrap moves data keys of older versions to it.
    async fn is_current(&self, key: &KeyRef, _ctx: &KeyContext) -> Result<bool, ProviderError> {
        if !self.owns(key) {
            return Ok(false);
        }
        let ring = self.current().await?;
        Ok(parse_version(key.version()) == Some(ring.primary))
    }

    async fn generate_data_key(
        &self,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        let ring = self.current().await?;
        // One call to the OS CSPRNG for the data key and the wrap's nonce.
        let mut random = Zeroizing::new([0u8; DATA_KEY_LEN + NONCE_LEN]);
        crate::rand::fill(random.as_mut())
            .map_err(|_| provider_error(ProviderErrorKind::Other, "random"))?;
        let (key, nonce) = random.split_at(DATA_KEY_LEN);
        let mut key_bytes = Zeroizing::new([0u8; DATA_KEY_LEN]);
        key_bytes.copy_from_slice(key);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| provider_error(ProviderErrorKind::Other, "random"))?;
        let wrapped = self.wrap_in(&ring, &key_bytes, ctx, nonce)?;
        Ok((DataKey::from_unwrapped(key_bytes), wrapped))
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        let ring = self.current().await?;
        let mut nonce = [0u8; NONCE_LEN];
        crate::rand::fill(&mut nonce)
            .map_err(|_| provider_error(ProviderErrorKind::Other, "random"))?;
        self.wrap_in(&ring, key.expose_secret(), ctx, nonce)
    }

    /// Local: no key service, so `attempts` changes nothing.
    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        _attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        let ring = self.current().await?;
        match self.unwrap_in(&ring, wrapped, ctx) {
            // A version this process has not seen may have been added by another one: check
            // now (a `stat` unless the ring really changed), not only when the interval is up.
            Err(e) if e.kind() == ProviderErrorKind::NotFound => {
                self.check().await.map_err(ring_unavailable)?;
                self.unwrap_in(&self.snapshot(), wrapped, ctx)
            }
            other => other,
        }
    }
}

fn provider_error(kind: ProviderErrorKind, message: &'static str) -> ProviderError {
    ProviderError::new(kind, SCHEME, message)
}

fn ring_unavailable(e: KeyRingError) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::Unavailable,
        SCHEME,
        format!("cannot check the key ring: {e}"),
    )
}

/// `v<N>` with N from 1, without leading zeros.
fn parse_version(s: &str) -> Option<u32> {
    let digits = s.strip_prefix('v')?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> KeyContext {
        KeyContext::from_pairs([("organization_id", "org_1")]).unwrap()
    }

    #[test]
    fn parse_version_is_strict() {
        assert_eq!(parse_version("v1"), Some(1));
        assert_eq!(parse_version("v10"), Some(10));
        for bad in [
            "",
            "v",
            "1",
            "v01",
            "v0x1",
            "v-1",
            "v+1",
            "V1",
            "v99999999999",
        ] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_file_form_round_trips() {
        let mut state = RingState::first("root").unwrap();
        state.rotate(generate_root().unwrap()).unwrap();
        state.destroy(1).unwrap();
        state.generation = 7;
        let bytes = state.encode();
        let back = RingState::decode(&bytes, Some("root")).unwrap();
        assert_eq!(back.name(), "root");
        assert_eq!(back.generation(), 7);
        assert!(back.same_keys(&state));
        assert_eq!(*back.encode(), *bytes);
        assert!(matches!(
            RingState::decode(&bytes, Some("other")),
            Err(KeyRingError::Malformed { .. })
        ));
    }

    #[test]
    fn a_reload_reuses_the_material_of_unchanged_versions() {
        let mut state = RingState::first("root").unwrap();
        let first = Ring::from_state(&state, None).unwrap();
        state.rotate(generate_root().unwrap()).unwrap();
        let second = Ring::from_state(&state, Some(&first)).unwrap();
        let m = |r: &Ring, v: u32| Arc::clone(r.versions[&v].material.as_ref().unwrap());
        assert!(Arc::ptr_eq(&m(&first, 1), &m(&second, 1)));
        // Another ring's version 1 (another key) is derived afresh.
        let other = Ring::from_state(&RingState::first("root").unwrap(), Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(&m(&first, 1), &m(&other, 1)));
    }

    /// A version's HKDF-Extract state is as secret as its root key. `sha2`'s `zeroize` feature
    /// (which `hmac`'s does not switch on) makes the SHA-256 states inside HKDF and HMAC wipe
    /// themselves on drop; without it this does not compile. And `Material` cannot be copied:
    /// the one `Arc` is the only place it lives.
    #[test]
    fn material_is_wiped_on_drop_and_never_cloned() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Sha256>();
        wiped_on_drop::<sha2::block_api::Sha256VarCore>();

        // Ambiguous (a compile error) if `Material: Clone`.
        trait AmbiguousIfClone<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfClone<()> for T {}
        impl<T: Clone> AmbiguousIfClone<u8> for T {}
        <Material as AmbiguousIfClone<_>>::check();
    }

    #[test]
    fn kek_depends_on_the_context() {
        let m = Material::new(&generate_root().unwrap());
        let other = KeyContext::from_pairs([("organization_id", "org_2")]).unwrap();
        assert_ne!(*m.kek(&ctx()), *m.kek(&other));
        assert_eq!(*m.kek(&ctx()), *m.kek(&ctx()));
    }
}
