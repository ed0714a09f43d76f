//! The integrity key: a deployment's MAC key over the rows of its database that decide who may
//! do what (API keys, webhook endpoints, the record of what exists). The database is untrusted
//! storage: a row that a database writer added or changed fails its tag and is refused.
//!
//! The key is 32 random bytes of its own, never a key-encryption key and never derived from
//! one, so no data-key, decrypt, rekey or object path can produce or release it. It lives where
//! the deployment's secrets live: a file beside the key ring on a single machine
//! ([`IntegrityKey::write_new_file`]), or sealed like a root key in the database
//! ([`IntegrityKey::seal`], under the binding of ring [`SEALED_AS_RING`] version 0, which no
//! ring version can have).
//!
//! A tag is HMAC-SHA256 over a labelled, length-prefixed encoding of a row's fields
//! (`docs/FORMAT.md`, "Row tags"):
//!
//! ```
//! use vault_crypto::integrity::IntegrityKey;
//!
//! let key = IntegrityKey::generate()?;
//! let tag = key.tag("api_key").text("key_1").int(42).finish();
//! assert!(key.tag("api_key").text("key_1").int(42).verify(&tag));
//! assert!(!key.tag("api_key").text("key_1").int(43).verify(&tag));
//! # Ok::<(), vault_crypto::KeyRingError>(())
//! ```

// A parser of outside bytes (the key file): no index or arithmetic that can panic.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::aead::KEY_LEN;
use crate::error::KeyRingError;
use crate::provider::managed::{RootSeal, SealedRoot, key_file};

/// The length of a tag.
pub const TAG_LEN: usize = 32;
/// The ring name the sealed integrity key is bound to, with version 0 (ring versions start at
/// 1, so no root key can be moved into its place or out of it).
pub const SEALED_AS_RING: &str = "vault-integrity";
/// The first word of an integrity key file.
const FILE_PREFIX: &str = "vault-integrity-key-v1 ";
/// Every tag's input starts with this, then the row kind and a zero byte.
const TAG_LABEL: &[u8] = b"vault-integrity/v1\0";

/// The integrity key. Wiped on drop; `Debug` shows its fingerprint only.
pub struct IntegrityKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrityKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn keyed(key: &[u8; KEY_LEN]) -> Hmac<Sha256> {
    <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

impl IntegrityKey {
    fn from_key(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let mut mac = keyed(&key);
        mac.update(b"vault-integrity/v1/id");
        let digest = mac.finalize().into_bytes();
        let id = digest
            .iter()
            .take(8)
            .fold(String::from("integrity:"), |mut s, b| {
                s.push_str(&format!("{b:02x}"));
                s
            });
        Self { key, id }
    }

    /// A new key from the OS CSPRNG.
    ///
    /// # Errors
    /// [`KeyRingError::Random`].
    pub fn generate() -> Result<Self, KeyRingError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        crate::random::fill(key.as_mut()).map_err(|_| KeyRingError::Random)?;
        Ok(Self::from_key(key))
    }

    /// A fingerprint naming the key in messages (`integrity:1a2b3c4d5e6f7a8b`); it reveals
    /// nothing about the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Writes the key to a new file at `path` (which must not exist), mode 0600, synced.
    ///
    /// # Errors
    /// [`KeyRingError::Io`] if the file exists or cannot be written.
    pub fn write_new_file(&self, path: &Path) -> Result<(), KeyRingError> {
        key_file::create(path, FILE_PREFIX, &self.key)
    }

    /// Reads a key file, refusing one that group or others can access.
    ///
    /// # Errors
    /// [`KeyRingError::Io`], [`KeyRingError::Permissions`] or [`KeyRingError::Malformed`].
    pub fn from_file(path: &Path) -> Result<Self, KeyRingError> {
        key_file::read(path, FILE_PREFIX).map(Self::from_key)
    }

    /// The key sealed by `seal`, for a database row.
    ///
    /// # Errors
    /// [`KeyRingError::Seal`] if the seal key cannot be used.
    pub async fn seal(&self, seal: &dyn RootSeal) -> Result<SealedRoot, KeyRingError> {
        seal.seal(SEALED_AS_RING, 0, &self.key)
            .await
            .map_err(as_integrity)
    }

    /// The key that [`seal`](Self::seal) sealed.
    ///
    /// # Errors
    /// [`KeyRingError::Seal`] if it was sealed by another key, changed, or is a sealed root key
    /// moved into its place.
    pub async fn unseal(seal: &dyn RootSeal, sealed: &SealedRoot) -> Result<Self, KeyRingError> {
        seal.unseal(SEALED_AS_RING, 0, sealed)
            .await
            .map(Self::from_key)
            .map_err(as_integrity)
    }

    /// Starts the tag of a row of kind `kind` (`"api_key"`, `"webhook_endpoint"`, ...): add
    /// its fields in a fixed order, then [`finish`](RowTag::finish) or
    /// [`verify`](RowTag::verify).
    pub fn tag(&self, kind: &str) -> RowTag {
        let mut mac = keyed(&self.key);
        mac.update(TAG_LABEL);
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        RowTag { mac }
    }
}

/// A tag being computed over a row's fields; each field is length-prefixed, so no two
/// sequences of fields encode alike.
#[must_use = "a tag is only useful once finished or verified"]
pub struct RowTag {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for RowTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RowTag")
    }
}

impl RowTag {
    /// Adds a field of bytes.
    pub fn bytes(mut self, field: &[u8]) -> Self {
        self.mac.update(&(field.len() as u64).to_be_bytes());
        self.mac.update(field);
        self
    }

    /// Adds a text field.
    pub fn text(self, field: &str) -> Self {
        self.bytes(field.as_bytes())
    }

    /// Adds an integer field.
    pub fn int(self, field: i64) -> Self {
        self.bytes(&field.to_be_bytes())
    }

    /// Adds an optional integer field (absent and every value encode apart).
    pub fn opt_int(self, field: Option<i64>) -> Self {
        match field {
            None => self.bytes(&[]),
            Some(v) => self.int(v),
        }
    }

    /// The tag.
    pub fn finish(self) -> [u8; TAG_LEN] {
        self.mac.finalize().into_bytes().into()
    }

    /// Whether `stored` is the tag, compared in constant time.
    pub fn verify(self, stored: &[u8]) -> bool {
        matches(&self.finish(), stored)
    }
}

/// The fields of a managed ring kept in a database that its tag covers: everything but the
/// sealed keys (each of which its seal binds to the ring and version already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingHeader {
    /// The ring's name.
    pub name: String,
    /// Its generation.
    pub generation: u64,
    /// The primary version.
    pub primary: u32,
    /// The minimum decryption version.
    pub min_decryption_version: u32,
    /// Every version, in order: (version, created at, destroyed at).
    pub versions: Vec<(u32, u64, Option<u64>)>,
}

impl RingHeader {
    /// The header of `ring`.
    pub fn of(ring: &crate::RingState) -> Self {
        Self {
            name: ring.name().to_owned(),
            generation: ring.generation(),
            primary: ring.primary(),
            min_decryption_version: ring.min_decryption_version(),
            versions: ring
                .stored_versions()
                .map(|v| (v.version, v.created_at, v.destroyed_at))
                .collect(),
        }
    }
}

impl IntegrityKey {
    /// The tag of a ring's row and version rows (`docs/FORMAT.md`, "Row tags").
    pub fn ring_tag(&self, ring: &RingHeader) -> [u8; TAG_LEN] {
        let mut tag = self
            .tag("key_ring")
            .text(&ring.name)
            .bytes(&ring.generation.to_be_bytes())
            .bytes(&ring.primary.to_be_bytes())
            .bytes(&ring.min_decryption_version.to_be_bytes());
        for (version, created_at, destroyed_at) in &ring.versions {
            tag = tag
                .bytes(&version.to_be_bytes())
                .bytes(&created_at.to_be_bytes())
                .bytes(&destroyed_at.map(u64::to_be_bytes).unwrap_or_default())
                .bytes(&[u8::from(destroyed_at.is_some())]);
        }
        tag.finish()
    }
}

/// A seal's error about "ring vault-integrity v0", as what it is.
fn as_integrity(e: KeyRingError) -> KeyRingError {
    match e {
        KeyRingError::Seal {
            action,
            seal,
            reason,
            ..
        } => KeyRingError::IntegritySeal {
            action,
            seal,
            reason,
        },
        other => other,
    }
}

/// Whether `stored` is the tag `expected`, compared in constant time.
pub fn matches(expected: &[u8; TAG_LEN], stored: &[u8]) -> bool {
    stored.len() == TAG_LEN && bool::from(expected.ct_eq(stored))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::provider::managed::MasterKeySeal;

    #[test]
    fn fields_are_length_prefixed_and_kinds_apart() {
        let key = IntegrityKey::generate().unwrap();
        let ab_c = key.tag("k").text("ab").text("c").finish();
        assert!(!key.tag("k").text("a").text("bc").verify(&ab_c));
        assert!(!key.tag("j").text("ab").text("c").verify(&ab_c));
        assert!(!key.tag("k").text("ab").text("c").text("").verify(&ab_c));
        assert!(key.tag("k").text("ab").text("c").verify(&ab_c));
        assert!(
            !key.tag("k")
                .opt_int(None)
                .verify(&key.tag("k").int(0).finish())
        );
        assert!(!key.tag("k").text("ab").text("c").verify(&ab_c[..31]));
        let other = IntegrityKey::generate().unwrap();
        assert!(!other.tag("k").text("ab").text("c").verify(&ab_c));
        assert_ne!(key.id(), other.id());
    }

    #[test]
    fn the_tag_is_hmac_sha256_of_the_documented_encoding() {
        let key = IntegrityKey::from_key(Zeroizing::new([7u8; KEY_LEN]));
        let mut input = b"vault-integrity/v1\0api_key\0".to_vec();
        input.extend_from_slice(&2u64.to_be_bytes());
        input.extend_from_slice(b"id");
        input.extend_from_slice(&8u64.to_be_bytes());
        input.extend_from_slice(&(-1i64).to_be_bytes());
        let mut mac = keyed(&[7u8; KEY_LEN]);
        mac.update(&input);
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(key.tag("api_key").text("id").int(-1).finish(), expected);
    }

    #[test]
    fn key_files_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("integrity.key");
        let key = IntegrityKey::generate().unwrap();
        key.write_new_file(&path).unwrap();
        let read = IntegrityKey::from_file(&path).unwrap();
        assert_eq!(read.id(), key.id());
        assert!(
            IntegrityKey::generate()
                .unwrap()
                .write_new_file(&path)
                .is_err()
        );
        assert_eq!(IntegrityKey::from_file(&path).unwrap().id(), key.id());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(FILE_PREFIX), "{text}");
        assert!(!format!("{key:?}").contains(&text[FILE_PREFIX.len()..]));
    }

    #[tokio::test]
    async fn sealed_it_opens_only_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let seal = MasterKeySeal::create_file(&dir.path().join("m.key")).unwrap();
        let key = IntegrityKey::generate().unwrap();
        let sealed = key.seal(&seal).await.unwrap();
        let back = IntegrityKey::unseal(&seal, &sealed).await.unwrap();
        assert_eq!(back.id(), key.id());
        // A root key sealed for a ring version does not open as the integrity key, nor the
        // integrity key as any ring's version.
        let root = seal.seal(SEALED_AS_RING, 1, &[1u8; KEY_LEN]).await.unwrap();
        assert!(IntegrityKey::unseal(&seal, &root).await.is_err());
        assert!(seal.unseal(SEALED_AS_RING, 1, &sealed).await.is_err());
        let mut changed = sealed.clone();
        changed.bytes[20] ^= 1;
        assert!(IntegrityKey::unseal(&seal, &changed).await.is_err());
    }
}
