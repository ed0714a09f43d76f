//! The managed key provider: a local ring of 256-bit root keys with numbered versions.
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
//! A file-backed ring lives in one JSON file with mode 0600, replaced atomically on every
//! change (temporary file, fsync, rename, fsync of the directory) under an exclusive lock, so a
//! crash leaves either the old or the new ring and concurrent processes never lose a version.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::aead::{AeadKey, Backend, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::context::KeyContext;
use crate::data_key::{DATA_KEY_LEN, DataKey};
use crate::error::{KeyRingError, ProviderError, ProviderErrorKind};
use crate::provider::{KeyProvider, KeyRef, WrappedKey};

/// The scheme of managed key references.
pub const SCHEME: &str = "managed";
/// Domain-separation label of per-context KEKs.
const KEK_LABEL: &[u8] = b"vault-crypto/v1/managed-kek";
/// `nonce || encrypted data key || tag`.
const WRAPPED_LEN: usize = NONCE_LEN + DATA_KEY_LEN + TAG_LEN;
/// The `format` field of the key-ring file.
const FILE_FORMAT: &str = "vault-keyring-v1";
/// The largest key-ring file read.
pub const MAX_FILE_LEN: usize = 4 << 20;
/// The most versions a ring may have.
pub const MAX_VERSIONS: u32 = 10_000;
/// The most bytes of a ring name.
const MAX_NAME_LEN: usize = 64;
/// The most expanded KEKs kept in memory (each a few hundred bytes).
const KEK_CACHE_MAX: usize = 4096;

/// One root key version's secret material: the key and its HKDF-Extract state, cached so each
/// KEK costs one HKDF-Expand.
#[derive(Clone)]
struct Material {
    root: Zeroizing<[u8; KEY_LEN]>,
    kdf: Hkdf<Sha256>,
}

impl Material {
    fn new(root: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let kdf = Hkdf::<Sha256>::new(None, root.as_ref());
        Self { root, kdf }
    }

    fn generate() -> Result<Self, KeyRingError> {
        let mut root = Zeroizing::new([0u8; KEY_LEN]);
        crate::rand::fill(root.as_mut()).map_err(|_| KeyRingError::Random)?;
        Ok(Self::new(root))
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

#[derive(Clone)]
struct Version {
    created_at: u64,
    /// `None` once destroyed.
    material: Option<Material>,
    destroyed_at: Option<u64>,
    key_ref: KeyRef,
}

/// The state of a ring at one moment. Replaced as a whole on every change.
#[derive(Clone)]
pub(crate) struct Ring {
    primary: u32,
    min_decryption_version: u32,
    versions: BTreeMap<u32, Version>,
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
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Seconds since the Unix epoch, when destroyed.
    pub destroyed_at: Option<u64>,
}

/// The managed key provider. See the [module docs](self).
pub struct ManagedKeyProvider {
    name: String,
    ring: RwLock<Arc<Ring>>,
    file: Option<RingFile>,
    backend: Backend,
    keks: KekCache,
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
            .field("primary", &ring.primary)
            .field("versions", &ring.versions.len())
            .field("file", &self.file.as_ref().map(|f| &f.path))
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
        validate_name(name)?;
        let ring = Ring::first(name, Material::generate()?)?;
        Ok(Self::from_ring(name, ring, None))
    }

    /// Opens the ring `name` in `dir` (file `keyring-<name>.json`), creating the directory
    /// (mode 0700) and a ring with one fresh version (mode 0600) on first use. Two processes
    /// creating it at once end up with the same ring.
    ///
    /// # Errors
    /// [`KeyRingError`] if the file cannot be read or written, is malformed, or is readable by
    /// group or others.
    pub fn open_or_create(dir: &Path, name: &str) -> Result<Self, KeyRingError> {
        validate_name(name)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        let file = RingFile::new(dir, name);
        let ring = match file.load(name)? {
            Some(ring) => ring,
            None => {
                let ring = Ring::first(name, Material::generate()?)?;
                // Create-if-absent: if another process won the race, use its ring.
                if file.create(&encode(name, &ring))? {
                    ring
                } else {
                    file.load(name)?.ok_or_else(|| KeyRingError::Malformed {
                        reason: "key ring vanished while being created".into(),
                    })?
                }
            }
        };
        Ok(Self::from_ring(name, ring, Some(file)))
    }

    /// Opens the existing ring `name` in `dir`; unlike [`open_or_create`](Self::open_or_create)
    /// it never creates anything.
    ///
    /// # Errors
    /// [`KeyRingError::Io`] (not found) if there is no ring, or as `open_or_create`.
    pub fn open_existing(dir: &Path, name: &str) -> Result<Self, KeyRingError> {
        validate_name(name)?;
        let file = RingFile::new(dir, name);
        let ring = file.load(name)?.ok_or_else(|| KeyRingError::Io {
            path: file.path.display().to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no key ring here"),
        })?;
        Ok(Self::from_ring(name, ring, Some(file)))
    }

    /// Use another AES-256-GCM backend for wrapping (the default is [`Backend::DEFAULT`]).
    #[must_use]
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self.keks.clear();
        self
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

    /// The ring's name, the key id in its key references.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version that wraps new data keys.
    pub fn primary_version(&self) -> u32 {
        self.snapshot().primary
    }

    /// Versions below this one refuse to unwrap.
    pub fn min_decryption_version(&self) -> u32 {
        self.snapshot().min_decryption_version
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> Vec<VersionInfo> {
        let ring = self.snapshot();
        ring.versions
            .iter()
            .map(|(&version, v)| VersionInfo {
                version,
                state: ring.state_of(version, v),
                created_at: v.created_at,
                destroyed_at: v.destroyed_at,
            })
            .collect()
    }

    /// Adds a fresh root key as the new primary version and returns its number. Data keys
    /// wrapped under older versions still unwrap.
    ///
    /// # Errors
    /// [`KeyRingError`] if the ring cannot be stored; the ring is then unchanged.
    pub fn rotate(&self) -> Result<u32, KeyRingError> {
        let material = Material::generate()?;
        self.mutate(|name, ring| {
            let next = ring
                .versions
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0)
                .checked_add(1)
                .filter(|&v| v <= MAX_VERSIONS)
                .ok_or(KeyRingError::TooManyVersions(MAX_VERSIONS))?;
            ring.versions
                .insert(next, Version::new(name, next, now(), Some(material), None)?);
            ring.primary = next;
            Ok(next)
        })
    }

    /// Deletes the key material of `version` for good: every data key wrapped under it becomes
    /// unreadable (crypto-shredding). The primary version cannot be destroyed; rotate first.
    /// Destroying a destroyed version does nothing.
    ///
    /// # Errors
    /// [`KeyRingError::UnknownVersion`], [`KeyRingError::DestroyPrimary`], or a storage error.
    pub fn destroy(&self, version: u32) -> Result<(), KeyRingError> {
        self.mutate(|_, ring| {
            if version == ring.primary {
                return Err(KeyRingError::DestroyPrimary(version));
            }
            let v = ring
                .versions
                .get_mut(&version)
                .ok_or(KeyRingError::UnknownVersion(version))?;
            if v.material.take().is_some() {
                v.destroyed_at = Some(now());
            }
            Ok(())
        })
    }

    /// Refuses to unwrap data keys of versions below `version` (they are kept, and can be
    /// allowed again by lowering it).
    ///
    /// # Errors
    /// [`KeyRingError::MinAbovePrimary`], [`KeyRingError::UnknownVersion`] for 0, or a storage
    /// error.
    pub fn set_min_decryption_version(&self, version: u32) -> Result<(), KeyRingError> {
        self.mutate(|_, ring| {
            if version == 0 {
                return Err(KeyRingError::UnknownVersion(0));
            }
            if version > ring.primary {
                return Err(KeyRingError::MinAbovePrimary {
                    min: version,
                    primary: ring.primary,
                });
            }
            ring.min_decryption_version = version;
            Ok(())
        })
    }

    /// Re-reads a file-backed ring, picking up changes made by other processes.
    ///
    /// # Errors
    /// [`KeyRingError`] if the file cannot be read or is malformed.
    pub fn reload(&self) -> Result<(), KeyRingError> {
        if let Some(file) = &self.file {
            let ring = file
                .load(&self.name)?
                .ok_or_else(|| KeyRingError::Malformed {
                    reason: "key ring file is missing".into(),
                })?;
            *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
            self.keks.clear(); // the ring guard is already dropped: see `kek`
        }
        Ok(())
    }

    pub(crate) fn from_root_keys(
        name: &str,
        keys: Vec<(u32, Zeroizing<[u8; KEY_LEN]>)>,
        primary: u32,
    ) -> Result<Self, KeyRingError> {
        validate_name(name)?;
        let mut versions = BTreeMap::new();
        for (version, root) in keys {
            versions.insert(
                version,
                Version::new(name, version, 0, Some(Material::new(root)), None)?,
            );
        }
        let ring = Ring {
            primary,
            min_decryption_version: 1,
            versions,
        };
        ring.validate()?;
        Ok(Self::from_ring(name, ring, None))
    }

    fn from_ring(name: &str, ring: Ring, file: Option<RingFile>) -> Self {
        Self {
            name: name.to_owned(),
            ring: RwLock::new(Arc::new(ring)),
            file,
            backend: Backend::DEFAULT,
            keks: KekCache::default(),
        }
    }

    fn snapshot(&self) -> Arc<Ring> {
        Arc::clone(&self.ring.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Applies `change` to a copy of the ring, stores it, then publishes it. A file-backed ring
    /// is re-read under an exclusive lock first, so changes by other processes are kept.
    fn mutate<T>(
        &self,
        change: impl FnOnce(&str, &mut Ring) -> Result<T, KeyRingError>,
    ) -> Result<T, KeyRingError> {
        let mut published = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let Some(file) = &self.file else {
            let mut ring = Ring::clone(&published);
            let out = change(&self.name, &mut ring)?;
            ring.validate()?;
            *published = Arc::new(ring);
            // Lock order: never hold the ring while taking the cache (see `kek`).
            drop(published);
            self.keks.clear();
            return Ok(out);
        };
        let _lock = file.lock()?;
        let mut ring = file
            .load(&self.name)?
            .ok_or_else(|| KeyRingError::Malformed {
                reason: "key ring file is missing".into(),
            })?;
        let out = change(&self.name, &mut ring)?;
        ring.validate()?;
        file.replace(&encode(&self.name, &ring))?;
        *published = Arc::new(ring);
        drop(published);
        self.keks.clear();
        Ok(out)
    }

    pub(crate) fn wrap_with_nonce(
        &self,
        key: &[u8; DATA_KEY_LEN],
        ctx: &KeyContext,
        nonce: [u8; NONCE_LEN],
    ) -> Result<WrappedKey, ProviderError> {
        let ring = self.snapshot();
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

    fn unwrap_with(
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
        Ok(DataKey::from_bytes(key))
    }
}

#[async_trait]
impl KeyProvider for ManagedKeyProvider {
    fn owns(&self, key: &KeyRef) -> bool {
        key.scheme() == SCHEME && key.key_id() == self.name
    }

    async fn generate_data_key(
        &self,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
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
        let wrapped = self.wrap_with_nonce(&key_bytes, ctx, nonce)?;
        Ok((DataKey::from_bytes(key_bytes), wrapped))
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::rand::fill(&mut nonce)
            .map_err(|_| provider_error(ProviderErrorKind::Other, "random"))?;
        self.wrap_with_nonce(key.expose_secret(), ctx, nonce)
    }

    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
    ) -> Result<DataKey, ProviderError> {
        if !self.owns(wrapped.key_ref()) {
            return Err(provider_error(ProviderErrorKind::NotMine, ""));
        }
        let ring = self.snapshot();
        match self.unwrap_with(&ring, wrapped, ctx) {
            // A version this process has not seen may have been added by another one.
            Err(e) if e.kind() == ProviderErrorKind::NotFound && self.file.is_some() => {
                self.reload().map_err(|_| {
                    provider_error(ProviderErrorKind::Unavailable, "cannot reload key ring")
                })?;
                self.unwrap_with(&self.snapshot(), wrapped, ctx)
            }
            other => other,
        }
    }
}

fn provider_error(kind: ProviderErrorKind, message: &'static str) -> ProviderError {
    ProviderError::new(kind, SCHEME, message)
}

/// `v<N>` with N from 1, without leading zeros.
fn parse_version(s: &str) -> Option<u32> {
    let digits = s.strip_prefix('v')?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn validate_name(name: &str) -> Result<(), KeyRingError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KeyRingError::Malformed {
            reason: "ring name must be 1 to 64 of [A-Za-z0-9_-]".into(),
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Version {
    fn new(
        ring: &str,
        number: u32,
        created_at: u64,
        material: Option<Material>,
        destroyed_at: Option<u64>,
    ) -> Result<Self, KeyRingError> {
        let key_ref = KeyRef::new(SCHEME, ring, format!("v{number}")).map_err(|e| {
            KeyRingError::Malformed {
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            created_at,
            material,
            destroyed_at,
            key_ref,
        })
    }
}

impl Ring {
    fn first(name: &str, material: Material) -> Result<Self, KeyRingError> {
        let mut versions = BTreeMap::new();
        versions.insert(1, Version::new(name, 1, now(), Some(material), None)?);
        Ok(Self {
            primary: 1,
            min_decryption_version: 1,
            versions,
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

    /// The invariants every stored ring satisfies.
    fn validate(&self) -> Result<(), KeyRingError> {
        let malformed = |reason: &str| KeyRingError::Malformed {
            reason: reason.into(),
        };
        if self.versions.is_empty() {
            return Err(malformed("no versions"));
        }
        if self.versions.len() > MAX_VERSIONS as usize {
            return Err(KeyRingError::TooManyVersions(MAX_VERSIONS));
        }
        let last = self.versions.last_key_value().map_or(0, |(&v, _)| v);
        if !self.versions.keys().copied().eq(1..=last) {
            return Err(malformed("versions must be numbered 1, 2, 3, ... in order"));
        }
        match self.versions.get(&self.primary) {
            Some(v) if v.material.is_some() => {}
            Some(_) => return Err(KeyRingError::Destroyed(self.primary)),
            None => return Err(KeyRingError::UnknownVersion(self.primary)),
        }
        if self.min_decryption_version == 0 || self.min_decryption_version > self.primary {
            return Err(KeyRingError::MinAbovePrimary {
                min: self.min_decryption_version,
                primary: self.primary,
            });
        }
        for v in self.versions.values() {
            if v.material.is_some() == v.destroyed_at.is_some() {
                return Err(malformed(
                    "each version has either a key or a destruction time",
                ));
            }
        }
        Ok(())
    }
}

// ---- The key-ring file (FORMAT.md, "Key-ring file") ----

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFileV1 {
    format: String,
    name: String,
    primary: u32,
    min_decryption_version: u32,
    versions: Vec<VersionFileV1>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFileV1 {
    version: u32,
    created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destroyed_at: Option<u64>,
}

impl Drop for VersionFileV1 {
    fn drop(&mut self) {
        if let Some(key) = &mut self.key {
            key.zeroize();
        }
    }
}

/// The file form of a ring. The returned buffer holds root keys and is wiped when dropped.
pub(crate) fn encode(name: &str, ring: &Ring) -> Zeroizing<Vec<u8>> {
    let file = RingFileV1 {
        format: FILE_FORMAT.into(),
        name: name.into(),
        primary: ring.primary,
        min_decryption_version: ring.min_decryption_version,
        versions: ring
            .versions
            .iter()
            .map(|(&version, v)| VersionFileV1 {
                version,
                created_at: v.created_at,
                key: v
                    .material
                    .as_ref()
                    .map(|m| STANDARD.encode(m.root.as_ref())),
                destroyed_at: v.destroyed_at,
            })
            .collect(),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(256 + 128 * file.versions.len()));
    // Serialising plain structs to a Vec cannot fail.
    let _ = serde_json::to_writer_pretty(&mut *out, &file);
    out.push(b'\n');
    out
}

/// Parses a key-ring file strictly: known fields only, each once, every invariant checked.
pub(crate) fn decode(
    bytes: &[u8],
    expected_name: Option<&str>,
) -> Result<(String, Ring), KeyRingError> {
    let malformed = |reason: String| KeyRingError::Malformed { reason };
    if bytes.len() > MAX_FILE_LEN {
        return Err(malformed(format!("larger than {MAX_FILE_LEN} bytes")));
    }
    // serde_json's messages describe positions and expected types, never the input's values.
    let file: RingFileV1 = serde_json::from_slice(bytes)
        .map_err(|e| malformed(format!("line {}, column {}", e.line(), e.column())))?;
    if file.format != FILE_FORMAT {
        return Err(malformed("unknown format".into()));
    }
    validate_name(&file.name)?;
    if expected_name.is_some_and(|n| n != file.name) {
        return Err(malformed("the file holds another ring".into()));
    }
    if file.versions.len() > MAX_VERSIONS as usize {
        return Err(KeyRingError::TooManyVersions(MAX_VERSIONS));
    }
    let mut versions = BTreeMap::new();
    for v in &file.versions {
        let material = match &v.key {
            Some(b64) => {
                let mut decoded =
                    Zeroizing::new(STANDARD.decode(b64).map_err(|_| {
                        malformed(format!("version {}: key is not base64", v.version))
                    })?);
                let root: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
                    malformed(format!("version {}: key is not 32 bytes", v.version))
                })?;
                decoded.zeroize();
                Some(Material::new(Zeroizing::new(root)))
            }
            None => None,
        };
        let version = Version::new(
            &file.name,
            v.version,
            v.created_at,
            material,
            v.destroyed_at,
        )?;
        if versions.insert(v.version, version).is_some() {
            return Err(malformed(format!("version {} appears twice", v.version)));
        }
    }
    let ring = Ring {
        primary: file.primary,
        min_decryption_version: file.min_decryption_version,
        versions,
    };
    ring.validate()?;
    Ok((file.name.clone(), ring))
}

/// Where a ring lives on disk, and how it is replaced safely.
struct RingFile {
    dir: PathBuf,
    path: PathBuf,
    lock_path: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyRingError + '_ {
    move |source| KeyRingError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl RingFile {
    fn new(dir: &Path, name: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            path: dir.join(format!("keyring-{name}.json")),
            lock_path: dir.join(format!(".keyring-{name}.lock")),
        }
    }

    /// The ring in the file, or `None` if there is no file yet.
    fn load(&self, name: &str) -> Result<Option<Ring>, KeyRingError> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&self.path)(e)),
        };
        let meta = file.metadata().map_err(io_error(&self.path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyRingError::Permissions {
                path: self.path.display().to_string(),
                mode,
            });
        }
        let mut bytes = Zeroizing::new(Vec::new());
        Read::by_ref(&mut file)
            .take(MAX_FILE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error(&self.path))?;
        decode(&bytes, Some(name)).map(|(_, ring)| Some(ring))
    }

    /// Writes `bytes` to a new temporary file beside the ring and makes it durable.
    fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf, KeyRingError> {
        let mut suffix = [0u8; 8];
        crate::rand::fill(&mut suffix).map_err(|_| KeyRingError::Random)?;
        let tmp = self.dir.join(format!(
            ".keyring.tmp-{}-{}",
            std::process::id(),
            u64::from_be_bytes(suffix)
        ));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&tmp)(e));
        }
        Ok(tmp)
    }

    fn sync_dir(&self) -> Result<(), KeyRingError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&self.dir))
    }

    /// Atomically replaces the ring file with `bytes`.
    fn replace(&self, bytes: &[u8]) -> Result<(), KeyRingError> {
        let tmp = self.write_temp(bytes)?;
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&self.path)(e));
        }
        self.sync_dir()
    }

    /// Creates the ring file with `bytes` unless it exists. Returns whether it was created.
    fn create(&self, bytes: &[u8]) -> Result<bool, KeyRingError> {
        let tmp = self.write_temp(bytes)?;
        // A hard link fails if the target exists: create-if-absent, atomically.
        let linked = fs::hard_link(&tmp, &self.path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => self.sync_dir().map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_error(&self.path)(e)),
        }
    }

    /// An exclusive lock held across read-modify-write, released on drop.
    fn lock(&self) -> Result<File, KeyRingError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(io_error(&self.lock_path))?;
        file.lock().map_err(io_error(&self.lock_path))?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> KeyContext {
        KeyContext::from_pairs([("organization_id", "org_1")]).unwrap()
    }

    #[test]
    fn a_crash_between_write_and_rename_keeps_the_old_ring() {
        let dir = tempfile::tempdir().unwrap();
        let p = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
        let before = fs::read(&p.file.as_ref().unwrap().path).unwrap();
        // The rotated ring reaches a durable temporary file, then the process "dies" before
        // the rename.
        let mut ring = Ring::clone(&p.snapshot());
        ring.versions.insert(
            2,
            Version::new("root", 2, now(), Some(Material::generate().unwrap()), None).unwrap(),
        );
        ring.primary = 2;
        let tmp = p
            .file
            .as_ref()
            .unwrap()
            .write_temp(&encode("root", &ring))
            .unwrap();
        assert!(tmp.exists());
        drop(p);

        let reopened = ManagedKeyProvider::open_or_create(dir.path(), "root").unwrap();
        assert_eq!(reopened.primary_version(), 1);
        assert_eq!(
            fs::read(&reopened.file.as_ref().unwrap().path).unwrap(),
            before
        );
        // And the ring still works and can rotate past the leftover.
        assert_eq!(reopened.rotate().unwrap(), 2);
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
    fn the_file_round_trips() {
        let p = ManagedKeyProvider::in_memory("root").unwrap();
        p.rotate().unwrap();
        p.destroy(1).unwrap();
        let bytes = encode("root", &p.snapshot());
        let (name, ring) = decode(&bytes, Some("root")).unwrap();
        assert_eq!(name, "root");
        assert_eq!(encode(&name, &ring), bytes);
        assert!(matches!(
            decode(&bytes, Some("other")),
            Err(KeyRingError::Malformed { .. })
        ));
    }

    #[test]
    fn kek_depends_on_the_context() {
        let m = Material::generate().unwrap();
        let other = KeyContext::from_pairs([("organization_id", "org_2")]).unwrap();
        assert_ne!(*m.kek(&ctx()), *m.kek(&other));
        assert_eq!(*m.kek(&ctx()), *m.kek(&ctx()));
    }
}
