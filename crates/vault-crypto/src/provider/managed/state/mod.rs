//! The stored form of a ring ([`RingState`]) and its file encoding (`docs/FORMAT.md`,
//! "Key-ring file").

// A parser of outside bytes: no index or arithmetic that can panic or wrap.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::aead::KEY_LEN;
use crate::error::KeyRingError;

mod file_v1;
use file_v1::{RingFileV1, VersionFileV1};

/// The `format` field of the key-ring file.
const FILE_FORMAT: &str = "vault-keyring-v1";
/// The largest encoded ring read.
pub const MAX_FILE_LEN: usize = 4 << 20;
/// The most versions a ring may have.
pub const MAX_VERSIONS: u32 = 10_000;
/// The most bytes of a ring name.
const MAX_NAME_LEN: usize = 64;

/// One root key: 32 bytes from the OS CSPRNG, wiped on drop.
pub(crate) type RootKey = Zeroizing<[u8; KEY_LEN]>;

/// A ring as its [`RingStore`](super::RingStore) keeps it: the root key of every version that
/// is not destroyed, which version is primary, the minimum decryption version, and a
/// **generation** that grows by one with every change.
///
/// Stores treat it as a document: [`encode`](Self::encode) it, keep the bytes and the
/// generation, [`decode`](Self::decode) it back. The bytes hold root keys in plaintext; a store
/// keeps them as secret as the data they protect (mode 0600 for the file store). `Debug` shows
/// no key.
pub struct RingState {
    pub(crate) name: String,
    pub(crate) generation: u64,
    pub(crate) primary: u32,
    pub(crate) min_decryption_version: u32,
    pub(crate) versions: BTreeMap<u32, VersionRecord>,
}

/// One version of a ring as a store's row borrows it ([`RingState::stored_versions`]).
#[derive(Clone, Copy)]
pub struct StoredVersionRef<'a> {
    /// Its number, from 1.
    pub version: u32,
    /// When it was made (seconds since the epoch).
    pub created_at: u64,
    /// When its key was destroyed, if it was.
    pub destroyed_at: Option<u64>,
    /// Its root key; `None` once destroyed.
    pub root: Option<&'a [u8; KEY_LEN]>,
}

impl fmt::Debug for StoredVersionRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredVersionRef")
            .field("version", &self.version)
            .field("destroyed_at", &self.destroyed_at)
            .finish_non_exhaustive()
    }
}

/// One version of a ring read back from a store's row ([`RingState::from_stored`]).
pub struct StoredVersion {
    /// Its number, from 1.
    pub version: u32,
    /// When it was made (seconds since the epoch).
    pub created_at: u64,
    /// When its key was destroyed, if it was.
    pub destroyed_at: Option<u64>,
    /// Its root key, unsealed; `None` once destroyed. Wiped on drop.
    pub root: Option<Zeroizing<[u8; KEY_LEN]>>,
}

impl fmt::Debug for StoredVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredVersion")
            .field("version", &self.version)
            .field("destroyed_at", &self.destroyed_at)
            .finish_non_exhaustive()
    }
}

/// One version as stored.
pub(crate) struct VersionRecord {
    pub(crate) created_at: u64,
    /// `None` once destroyed.
    pub(crate) root: Option<RootKey>,
    pub(crate) destroyed_at: Option<u64>,
}

impl fmt::Debug for RingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingState")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .field("primary", &self.primary)
            .field("min_decryption_version", &self.min_decryption_version)
            .field("versions", &self.versions.len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn validate_name(name: &str) -> Result<(), KeyRingError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KeyRingError::InvalidName {
            name: name
                .chars()
                .take(MAX_NAME_LEN)
                .flat_map(char::escape_debug)
                .collect(),
        })
    }
}

pub(crate) fn generate_root() -> Result<RootKey, KeyRingError> {
    let mut root = Zeroizing::new([0u8; KEY_LEN]);
    crate::random::fill(root.as_mut()).map_err(|_| KeyRingError::Random)?;
    Ok(root)
}

impl RingState {
    /// The ring's name: the key id of its key references (`managed://<name>#v<N>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The generation: 0 for a new ring, one more after every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The primary version: the one new data keys are wrapped under.
    pub fn primary(&self) -> u32 {
        self.primary
    }

    /// The lowest version that still opens data.
    pub fn min_decryption_version(&self) -> u32 {
        self.min_decryption_version
    }

    /// Every version as a database row keeps it, in order. The root keys are borrowed: a
    /// store seals them (see [`RootSeal`](super::RootSeal)) and never keeps them in clear.
    pub fn stored_versions(&self) -> impl Iterator<Item = StoredVersionRef<'_>> {
        self.versions.iter().map(|(&version, v)| StoredVersionRef {
            version,
            created_at: v.created_at,
            destroyed_at: v.destroyed_at,
            root: v.root.as_deref(),
        })
    }

    /// A ring put back together from a store's rows, every invariant checked (numbered
    /// versions, a live primary, each version with either a key or a destruction time).
    ///
    /// # Errors
    /// [`KeyRingError::Malformed`] or another [`KeyRingError`] for a broken invariant.
    pub fn from_stored(
        name: &str,
        generation: u64,
        primary: u32,
        min_decryption_version: u32,
        versions: Vec<StoredVersion>,
    ) -> Result<Self, KeyRingError> {
        validate_name(name)?;
        let mut map = BTreeMap::new();
        for v in versions {
            let record = VersionRecord {
                created_at: v.created_at,
                root: v.root,
                destroyed_at: v.destroyed_at,
            };
            if map.insert(v.version, record).is_some() {
                return Err(KeyRingError::Malformed {
                    reason: format!("version {} appears twice", v.version),
                });
            }
        }
        let ring = Self {
            name: name.to_owned(),
            generation,
            primary,
            min_decryption_version,
            versions: map,
        };
        ring.validate()?;
        Ok(ring)
    }

    /// A new ring with one fresh version.
    pub(crate) fn first(name: &str) -> Result<Self, KeyRingError> {
        validate_name(name)?;
        let mut versions = BTreeMap::new();
        versions.insert(
            1,
            VersionRecord {
                created_at: now(),
                root: Some(generate_root()?),
                destroyed_at: None,
            },
        );
        Ok(Self {
            name: name.to_owned(),
            generation: 0,
            primary: 1,
            min_decryption_version: 1,
            versions,
        })
    }

    /// A ring of the given root keys, primary `primary` (for imported keys and vectors).
    pub(crate) fn from_root_keys(
        name: &str,
        keys: Vec<(u32, RootKey)>,
        primary: u32,
    ) -> Result<Self, KeyRingError> {
        validate_name(name)?;
        let versions = keys
            .into_iter()
            .map(|(v, root)| {
                let record = VersionRecord {
                    created_at: 0,
                    root: Some(root),
                    destroyed_at: None,
                };
                (v, record)
            })
            .collect();
        let ring = Self {
            name: name.to_owned(),
            generation: 0,
            primary,
            min_decryption_version: 1,
            versions,
        };
        ring.validate()?;
        Ok(ring)
    }

    /// A copy to change (root keys included, each copy wiped on drop). Deliberately not
    /// `Clone`: copies of root keys are made only where a change needs one.
    pub(crate) fn duplicate(&self) -> Self {
        let versions = self
            .versions
            .iter()
            .map(|(&v, r)| {
                let record = VersionRecord {
                    created_at: r.created_at,
                    root: r.root.as_ref().map(|k| Zeroizing::new(**k)),
                    destroyed_at: r.destroyed_at,
                };
                (v, record)
            })
            .collect();
        Self {
            name: self.name.clone(),
            generation: self.generation,
            primary: self.primary,
            min_decryption_version: self.min_decryption_version,
            versions,
        }
    }

    /// Whether both hold the same versions with the same keys and states (the generation aside).
    pub(crate) fn same_keys(&self, other: &Self) -> bool {
        self.name == other.name
            && self.primary == other.primary
            && self.min_decryption_version == other.min_decryption_version
            && self.versions.len() == other.versions.len()
            && self.versions.iter().zip(&other.versions).all(|(a, b)| {
                a.0 == b.0
                    && match (&a.1.root, &b.1.root) {
                        (Some(x), Some(y)) => {
                            bool::from(subtle::ConstantTimeEq::ct_eq(x.as_ref(), y.as_ref()))
                        }
                        (None, None) => true,
                        _ => false,
                    }
            })
    }

    /// Adds a fresh version as the primary; returns its number.
    pub(crate) fn rotate(&mut self, root: RootKey) -> Result<u32, KeyRingError> {
        let next = self
            .versions
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .filter(|&v| v <= MAX_VERSIONS)
            .ok_or(KeyRingError::TooManyVersions(MAX_VERSIONS))?;
        self.versions.insert(
            next,
            VersionRecord {
                created_at: now(),
                root: Some(root),
                destroyed_at: None,
            },
        );
        self.primary = next;
        Ok(next)
    }

    /// Deletes a version's root key. Returns whether it still had one.
    pub(crate) fn destroy(&mut self, version: u32) -> Result<bool, KeyRingError> {
        if version == self.primary {
            return Err(KeyRingError::DestroyPrimary(version));
        }
        let v = self
            .versions
            .get_mut(&version)
            .ok_or(KeyRingError::UnknownVersion(version))?;
        // Dropping the key wipes it.
        let had = v.root.take().is_some();
        if had {
            v.destroyed_at = Some(now());
        }
        Ok(had)
    }

    pub(crate) fn set_min_decryption_version(&mut self, version: u32) -> Result<(), KeyRingError> {
        if version == 0 {
            return Err(KeyRingError::UnknownVersion(0));
        }
        if version > self.primary {
            return Err(KeyRingError::MinAbovePrimary {
                min: version,
                primary: self.primary,
            });
        }
        self.min_decryption_version = version;
        Ok(())
    }

    /// The invariants every stored ring satisfies.
    pub(crate) fn validate(&self) -> Result<(), KeyRingError> {
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
            Some(v) if v.root.is_some() => {}
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
            if v.root.is_some() == v.destroyed_at.is_some() {
                return Err(malformed(
                    "each version has either a key or a destruction time",
                ));
            }
        }
        Ok(())
    }

    /// The file form (FORMAT.md, "Key-ring file"). The buffer holds root keys and is wiped
    /// when dropped.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let file = RingFileV1 {
            format: FILE_FORMAT.into(),
            name: self.name.clone(),
            generation: self.generation,
            primary: self.primary,
            min_decryption_version: self.min_decryption_version,
            versions: self
                .versions
                .iter()
                .map(|(&version, v)| VersionFileV1 {
                    version,
                    created_at: v.created_at,
                    key: v.root.as_ref().map(|k| STANDARD.encode(k.as_ref())),
                    destroyed_at: v.destroyed_at,
                })
                .collect(),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(
            128usize
                .saturating_mul(file.versions.len())
                .saturating_add(256),
        ));
        // Serialising plain structs to a Vec cannot fail.
        let _ = serde_json::to_writer_pretty(&mut *out, &file);
        out.push(b'\n');
        out
    }

    /// Parses the file form strictly: known fields only, each once, every invariant checked;
    /// with `expected_name`, the ring must be that one.
    ///
    /// # Errors
    /// [`KeyRingError::Malformed`] (naming a position or a rule, never a key), or another
    /// [`KeyRingError`] for a broken invariant.
    pub fn decode(bytes: &[u8], expected_name: Option<&str>) -> Result<Self, KeyRingError> {
        let malformed = |reason: String| KeyRingError::Malformed { reason };
        if bytes.len() > MAX_FILE_LEN {
            return Err(malformed(format!("larger than {MAX_FILE_LEN} bytes")));
        }
        // What went wrong and where; never serde_json's message, which can quote the input.
        let file: RingFileV1 = serde_json::from_slice(bytes).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Eof => "truncated",
                serde_json::error::Category::Syntax => "not JSON",
                serde_json::error::Category::Data => {
                    "not a key ring file (a field missing, unknown, repeated or of the wrong type)"
                }
                serde_json::error::Category::Io => "unreadable",
            };
            malformed(format!(
                "{what} at line {}, column {}",
                e.line(),
                e.column()
            ))
        })?;
        if file.format != FILE_FORMAT {
            return Err(malformed("unknown format".into()));
        }
        validate_name(&file.name).map_err(|_| malformed("not a valid ring name".into()))?;
        if expected_name.is_some_and(|n| n != file.name) {
            return Err(malformed("the file holds another ring".into()));
        }
        if file.versions.len() > MAX_VERSIONS as usize {
            return Err(KeyRingError::TooManyVersions(MAX_VERSIONS));
        }
        let mut versions = BTreeMap::new();
        for v in &file.versions {
            let root = match &v.key {
                Some(b64) => {
                    let decoded = Zeroizing::new(STANDARD.decode(b64).map_err(|_| {
                        malformed(format!("version {}: key is not base64", v.version))
                    })?);
                    let mut root = Zeroizing::new([0u8; KEY_LEN]);
                    if decoded.len() != KEY_LEN {
                        return Err(malformed(format!(
                            "version {}: key is not 32 bytes",
                            v.version
                        )));
                    }
                    root.copy_from_slice(&decoded);
                    Some(root)
                }
                None => None,
            };
            let record = VersionRecord {
                created_at: v.created_at,
                root,
                destroyed_at: v.destroyed_at,
            };
            if versions.insert(v.version, record).is_some() {
                return Err(malformed(format!("version {} appears twice", v.version)));
            }
        }
        let ring = Self {
            name: file.name.clone(),
            generation: file.generation,
            primary: file.primary,
            min_decryption_version: file.min_decryption_version,
            versions,
        };
        ring.validate()?;
        Ok(ring)
    }
}
