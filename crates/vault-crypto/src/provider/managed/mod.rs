//! The managed key provider (documented on [`ManagedKeyProvider`]).

mod file;
pub(crate) mod key_file;
mod keys;
mod material;
mod ring;
mod seal;
mod state;
mod store;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use file::FileRingStore;
pub use ring::{RingStats, VersionInfo, VersionState};
pub use seal::{MasterKeySeal, ProviderSeal, RootSeal, SealedRoot, copy_ring, shown};
pub use state::{MAX_FILE_LEN, MAX_VERSIONS, RingState, StoredVersion, StoredVersionRef};
pub use store::{MemoryRingStore, RingStore};

use std::sync::atomic::Ordering;

use crate::aead::{Backend, NONCE_LEN, TAG_LEN};
use crate::data_key::DATA_KEY_LEN;
use crate::error::KeyRingError;
use keys::KekCache;
use ring::{Freshness, Ring, duration_ns};
use state::{RootKey, validate_name};

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

/// The managed key provider: a ring of 256-bit root keys with numbered versions.
///
/// For each key context, the key-encryption key (KEK) is derived from the primary root key:
/// `KEK = HKDF-Expand(HKDF-Extract(salt = "", IKM = root key), "vault-crypto/v1/managed-kek" ||
/// canonical context, 32)`. A data key is wrapped with AES-256-GCM under that KEK with the
/// canonical context as associated data, so it unwraps under the same context only. The wrapped
/// bytes are `nonce[12] || encrypted data key[32] || tag[16]`, and the key reference names the
/// version: `managed://<ring>#v<N>`. See `docs/FORMAT.md`, "Managed key provider".
///
/// Lifecycle: [`rotate`](ManagedKeyProvider::rotate) adds a primary version (older versions still
/// unwrap); [`crate::rewrap`] moves envelopes to the primary version without re-encrypting data;
/// [`destroy`](ManagedKeyProvider::destroy) deletes a version's key material for good
/// (crypto-shredding); [`set_min_decryption_version`](ManagedKeyProvider::set_min_decryption_version)
/// refuses older versions without destroying them.
///
/// # One ring for every process
/// The ring lives in a [`RingStore`] (a file by default, see [`FileRingStore`]); the provider's
/// copy in memory is a cache of it. Before a seal, an unwrap or an
/// [`is_current`](crate::KeyProvider::is_current) the provider asks the store whether the ring's
/// generation moved, at most once per [check interval](ManagedKeyProvider::with_check_interval)
/// (250 ms by default; a `stat` of the file), and always before looking for a version it does
/// not know. So a rotation, a new minimum or a destruction made by any process is obeyed by every
/// other within the interval plus one check, and never later than a second. Changes are
/// compare-and-swap on the generation, so concurrent changes from several processes are all kept,
/// and a reload never replaces the ring in memory with an older one.
pub struct ManagedKeyProvider {
    name: String,
    store: Arc<dyn RingStore>,
    ring: RwLock<Arc<Ring>>,
    backend: Backend,
    keks: KekCache,
    fresh: Freshness,
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
    /// [`KeyRingError::InvalidName`], [`KeyRingError::Random`].
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
    /// Pointed at the wrong directory, it creates a new, empty ring there, and every envelope
    /// sealed under the real one then fails to open ([`Error::DecryptionFailed`], or a
    /// provider error of kind `NotFound` for a version the new ring lacks). A service whose
    /// ring must already exist opens it with [`open_existing`](Self::open_existing), which
    /// fails instead.
    ///
    /// [`Error::DecryptionFailed`]: crate::Error::DecryptionFailed
    ///
    /// # Errors
    /// [`KeyRingError`] if the file cannot be read or written, is malformed, or is readable by
    /// group or others.
    pub fn open_or_create(dir: impl AsRef<Path>, name: &str) -> Result<Self, KeyRingError> {
        let store = FileRingStore::new(dir.as_ref(), name)?;
        let state = store.open_now(Some(RingState::first(name)?))?;
        Self::from_state(Arc::new(store), &state)
    }

    /// Opens the existing ring `name` in `dir`; unlike [`open_or_create`](Self::open_or_create)
    /// it never creates anything.
    ///
    /// # Errors
    /// [`KeyRingError::Missing`] if there is no ring, or as `open_or_create`.
    pub fn open_existing(dir: impl AsRef<Path>, name: &str) -> Result<Self, KeyRingError> {
        let store = FileRingStore::new(dir.as_ref(), name)?;
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

    pub(crate) fn from_root_keys(
        name: &str,
        keys: Vec<(u32, RootKey)>,
        primary: u32,
    ) -> Result<Self, KeyRingError> {
        Self::in_memory_with(RingState::from_root_keys(name, keys, primary)?)
    }
}

#[cfg(test)]
mod tests {
    use super::material::{Material, parse_version};
    use super::state::generate_root;
    use super::*;
    use crate::context::KeyContext;
    use sha2::Sha256;

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
