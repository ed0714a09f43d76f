//! Sealed root keys. A ring kept in a database holds its root keys only **sealed**, by a key
//! that lives elsewhere: a KMS key ([`ProviderSeal`]) or a master key file ([`MasterKeySeal`]).
//! A copy of the database alone then opens nothing. Each root key is sealed bound to its ring's
//! name and version, so a sealed key moved to another row does not unseal.
//!
//! Moving a ring between stores ([`copy_ring`]) is part of the same story: the file ring of a
//! single machine moves into the database when a deployment outgrows it, and back.

// A parser of outside bytes (the master key file): no index or arithmetic that can panic.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::key_file;
use super::store::RingStore;
use crate::aead::{Backend, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::context::{KeyContext, Reserved};
use crate::data_key::DataKey;
use crate::error::KeyRingError;
use crate::provider::{KeyProvider, KeyRef, WrappedKey};

/// What seals and unseals the root keys of a ring kept in a database.
#[async_trait]
pub trait RootSeal: Send + Sync + fmt::Debug {
    /// What seals, for messages (`master-key:1a2b3c4d5e6f7a8b`, `provider "ring-seal"`).
    fn describe(&self) -> String;

    /// Whether a root key whose `sealed_by` is this was sealed by this seal's key (so this
    /// seal can unseal it, and a ring holding it may be changed by this process).
    fn owns(&self, sealed_by: &str) -> bool;

    /// Seals the root key of `ring` version `version`.
    ///
    /// # Errors
    /// [`KeyRingError::Seal`] if the seal key cannot be used.
    async fn seal(
        &self,
        ring: &str,
        version: u32,
        root: &[u8; KEY_LEN],
    ) -> Result<SealedRoot, KeyRingError>;

    /// Unseals what [`seal`](Self::seal) made for the same ring and version.
    ///
    /// # Errors
    /// [`KeyRingError::Seal`] if the seal key is not the one that sealed, cannot be used, or
    /// the sealed bytes were changed or belong to another ring or version.
    async fn unseal(
        &self,
        ring: &str,
        version: u32,
        sealed: &SealedRoot,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyRingError>;
}

/// A sealed root key as a database row keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRoot {
    /// Which key sealed it: a master key's fingerprint or a KMS key reference.
    pub sealed_by: String,
    /// The sealed bytes.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for SealedRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedRoot")
            .field("sealed_by", &self.sealed_by)
            .field("len", &self.bytes.len())
            .finish()
    }
}

fn seal_error(
    action: &'static str,
    ring: &str,
    version: u32,
    seal: String,
    reason: impl Into<String>,
) -> KeyRingError {
    KeyRingError::Seal {
        action,
        ring: ring.to_owned(),
        version,
        seal,
        reason: reason.into(),
    }
}

/// A `sealed_by` read from the database, for a message: quoted and escaped (it may hold
/// anything whoever wrote the row put there), and short.
pub fn shown(sealed_by: &str) -> String {
    let short: String = sealed_by.chars().take(100).collect();
    format!("{short:?}")
}

/// The first line of a master key file, before the key in base64.
const MASTER_KEY_PREFIX: &str = "vault-master-key-v1 ";
/// Bound into every sealed root key with the ring name and version.
const SEAL_LABEL: &[u8] = b"vault-crypto/v1/ring-seal";
/// `nonce || sealed root key || tag`.
const MASTER_SEALED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// A master key kept in a file (mode 0600, made by `vault keys init-seal`), sealing root keys
/// with AES-256-GCM. For deployments without a KMS; the file must live apart from the
/// database (another disk, a secret manager mounted at start).
pub struct MasterKeySeal {
    key: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl fmt::Debug for MasterKeySeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeySeal")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKeySeal {
    fn from_key(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        // A fingerprint that names the key without revealing anything about it.
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"vault-crypto/v1/master-key-id");
        let digest = mac.finalize().into_bytes();
        let id = digest
            .iter()
            .take(8)
            .fold(String::from("master-key:"), |mut s, b| {
                s.push_str(&format!("{b:02x}"));
                s
            });
        Self { key, id }
    }

    /// Makes a new master key file at `path` (which must not exist), mode 0600.
    ///
    /// # Errors
    /// [`KeyRingError::Io`] if the file exists or cannot be written; [`KeyRingError::Random`].
    pub fn create_file(path: &Path) -> Result<Self, KeyRingError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        crate::random::fill(key.as_mut()).map_err(|_| KeyRingError::Random)?;
        key_file::create(path, MASTER_KEY_PREFIX, &key)?;
        Ok(Self::from_key(key))
    }

    /// Reads a master key file, refusing one that group or others can access.
    ///
    /// # Errors
    /// [`KeyRingError::Io`], [`KeyRingError::Permissions`] or [`KeyRingError::Malformed`].
    pub fn from_file(path: &Path) -> Result<Self, KeyRingError> {
        key_file::read(path, MASTER_KEY_PREFIX).map(Self::from_key)
    }

    /// Parses the text of a master key file: `vault-master-key-v1 <base64 of 32 bytes>` and
    /// an optional newline.
    ///
    /// # Errors
    /// [`KeyRingError::Malformed`].
    pub fn parse(text: &[u8]) -> Result<Self, KeyRingError> {
        key_file::parse(text, MASTER_KEY_PREFIX).map(Self::from_key)
    }
}

fn seal_aad(ring: &str, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(
        SEAL_LABEL
            .len()
            .saturating_add(ring.len())
            .saturating_add(6),
    );
    aad.extend_from_slice(SEAL_LABEL);
    aad.push(0);
    aad.extend_from_slice(ring.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

#[async_trait]
impl RootSeal for MasterKeySeal {
    fn describe(&self) -> String {
        self.id.clone()
    }

    fn owns(&self, sealed_by: &str) -> bool {
        sealed_by == self.id
    }

    async fn seal(
        &self,
        ring: &str,
        version: u32,
        root: &[u8; KEY_LEN],
    ) -> Result<SealedRoot, KeyRingError> {
        let fail = || seal_error("seal", ring, version, self.id.clone(), "AES-GCM failed");
        let mut nonce = [0u8; NONCE_LEN];
        crate::random::fill(&mut nonce).map_err(|_| KeyRingError::Random)?;
        let mut sealed = Zeroizing::new(*root);
        let tag = Backend::DEFAULT
            .seal_in_place(&self.key, &nonce, &seal_aad(ring, version), sealed.as_mut())
            .map_err(|_| fail())?;
        let mut bytes = Vec::with_capacity(MASTER_SEALED_LEN);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(sealed.as_ref());
        bytes.extend_from_slice(&tag);
        Ok(SealedRoot {
            sealed_by: self.id.clone(),
            bytes,
        })
    }

    async fn unseal(
        &self,
        ring: &str,
        version: u32,
        sealed: &SealedRoot,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyRingError> {
        let fail = |reason: &str| seal_error("unseal", ring, version, self.id.clone(), reason);
        if !self.owns(&sealed.sealed_by) {
            return Err(fail(&format!(
                "it was sealed by {}, not by this master key",
                shown(&sealed.sealed_by)
            )));
        }
        let (nonce, rest) = sealed
            .bytes
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(|| fail("the sealed key is truncated"))?;
        let (body, tag) = rest
            .split_last_chunk::<TAG_LEN>()
            .ok_or_else(|| fail("the sealed key is truncated"))?;
        let mut root = Zeroizing::new([0u8; KEY_LEN]);
        if body.len() != KEY_LEN {
            return Err(fail("the sealed key has the wrong length"));
        }
        root.copy_from_slice(body);
        Backend::DEFAULT
            .open_in_place(
                &self.key,
                nonce,
                &seal_aad(ring, version),
                root.as_mut(),
                tag,
            )
            .map_err(|_| {
                fail("the sealed key does not open: changed, or moved from another ring or version")
            })?;
        Ok(root)
    }
}

/// A key provider's key (AWS KMS, Google Cloud KMS, Azure Key Vault) sealing root keys: each
/// is wrapped as a data key would be, for the context
/// `{"vault_ring": <ring>, "vault_ring_version": <version>}`, so the KMS binds it to its
/// place and its audit log names the ring.
pub struct ProviderSeal {
    name: String,
    provider: Arc<dyn KeyProvider>,
}

impl fmt::Debug for ProviderSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSeal")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ProviderSeal {
    /// Seals with `provider`, called `name` in messages (its name in the configuration).
    pub fn new(name: impl Into<String>, provider: Arc<dyn KeyProvider>) -> Self {
        Self {
            name: name.into(),
            provider,
        }
    }

    fn context(&self, ring: &str, version: u32) -> Result<KeyContext, KeyRingError> {
        KeyContext::reserved(Reserved::RingRoot { ring, version }).map_err(|_| {
            KeyRingError::Malformed {
                reason: "ring name".into(),
            }
        })
    }
}

#[async_trait]
impl RootSeal for ProviderSeal {
    fn describe(&self) -> String {
        format!("provider {:?}", self.name)
    }

    fn owns(&self, sealed_by: &str) -> bool {
        KeyRef::parse(sealed_by).is_ok_and(|k| self.provider.owns(&k))
    }

    async fn seal(
        &self,
        ring: &str,
        version: u32,
        root: &[u8; KEY_LEN],
    ) -> Result<SealedRoot, KeyRingError> {
        let ctx = self.context(ring, version)?;
        let key = DataKey::from_unwrapped(Zeroizing::new(*root));
        let wrapped = self
            .provider
            .wrap(&key, &ctx)
            .await
            .map_err(|e| seal_error("seal", ring, version, self.describe(), e.to_string()))?;
        Ok(SealedRoot {
            sealed_by: wrapped.key_ref().to_string(),
            bytes: wrapped.bytes().to_vec(),
        })
    }

    async fn unseal(
        &self,
        ring: &str,
        version: u32,
        sealed: &SealedRoot,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyRingError> {
        let fail = |reason: String| seal_error("unseal", ring, version, self.describe(), reason);
        let key_ref = KeyRef::parse(&sealed.sealed_by)
            .map_err(|_| fail("its sealed_by is not a key reference".into()))?;
        if !self.provider.owns(&key_ref) {
            return Err(fail(format!(
                "it was sealed by {key_ref}, which is not this provider's key"
            )));
        }
        let wrapped = WrappedKey::new(key_ref, sealed.bytes.clone())
            .map_err(|_| fail("the sealed key is empty".into()))?;
        let ctx = self.context(ring, version)?;
        let key = self
            .provider
            .unwrap(&wrapped, &ctx)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Zeroizing::new(*key.expose_secret()))
    }
}

/// Copies the ring of `from` into `to`, which must hold none: versions, states, keys and
/// generation as they are. Used to move the file ring of one machine into a database (and
/// back); the caller retires the source afterwards so only one copy stays in use.
///
/// # Errors
/// [`KeyRingError::Exists`] if `to` holds a ring (or another process created one meanwhile);
/// the errors of either store.
pub async fn copy_ring(from: &dyn RingStore, to: &dyn RingStore) -> Result<u64, KeyRingError> {
    let ring = from
        .load_if_changed(None)
        .await?
        .ok_or_else(|| KeyRingError::Missing {
            location: from.location(),
        })?;
    match to.load_if_changed(None).await {
        Ok(_) => {
            return Err(KeyRingError::Exists {
                location: to.location(),
            });
        }
        Err(KeyRingError::Missing { .. }) => {}
        Err(e) => return Err(e),
    }
    let expected = ring.duplicate();
    let stored = to.create(ring).await?;
    if stored.generation != expected.generation || !stored.same_keys(&expected) {
        return Err(KeyRingError::Exists {
            location: to.location(),
        });
    }
    Ok(stored.generation)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn master_key_files_are_made_private_and_parsed_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let made = MasterKeySeal::create_file(&path).unwrap();
        let read = MasterKeySeal::from_file(&path).unwrap();
        assert_eq!(made.describe(), read.describe());
        assert!(
            MasterKeySeal::create_file(&path).is_err(),
            "never overwritten"
        );
        let text = std::fs::read(&path).unwrap();
        for bad in [
            &text[..text.len() - 2],
            &text[1..],
            b"vault-master-key-v1 \n".as_slice(),
            b"".as_slice(),
        ] {
            assert!(matches!(
                MasterKeySeal::parse(bad),
                Err(KeyRingError::Malformed { .. })
            ));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            MasterKeySeal::from_file(&path),
            Err(KeyRingError::Permissions { .. })
        ));
    }

    #[test]
    fn a_sealed_root_opens_only_with_its_key_ring_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let seal = MasterKeySeal::create_file(&dir.path().join("a")).unwrap();
        let other = MasterKeySeal::create_file(&dir.path().join("b")).unwrap();
        let root = [7u8; KEY_LEN];
        let rt = runtime();
        let sealed = rt.block_on(seal.seal("root", 3, &root)).unwrap();
        assert!(!sealed.bytes.windows(KEY_LEN).any(|w| w == root));
        assert_eq!(*rt.block_on(seal.unseal("root", 3, &sealed)).unwrap(), root);
        assert!(rt.block_on(seal.unseal("root", 2, &sealed)).is_err());
        assert!(rt.block_on(seal.unseal("other", 3, &sealed)).is_err());
        let err = rt.block_on(other.unseal("root", 3, &sealed)).unwrap_err();
        assert!(err.to_string().contains("not by this master key"), "{err}");
        let mut forged = sealed.clone();
        forged.sealed_by = other.describe();
        assert!(rt.block_on(other.unseal("root", 3, &forged)).is_err());
        for i in 0..sealed.bytes.len() {
            let mut flipped = sealed.clone();
            flipped.bytes[i] ^= 1;
            assert!(rt.block_on(seal.unseal("root", 3, &flipped)).is_err());
        }
    }

    #[test]
    fn a_provider_seals_under_a_context_naming_the_ring_and_version() {
        let rt = runtime();
        let kms: Arc<dyn KeyProvider> =
            Arc::new(super::super::ManagedKeyProvider::in_memory("kms").unwrap());
        let seal = ProviderSeal::new("kms", kms);
        let root = [9u8; KEY_LEN];
        let sealed = rt.block_on(seal.seal("root", 1, &root)).unwrap();
        assert!(sealed.sealed_by.starts_with("managed://kms#"));
        assert_eq!(*rt.block_on(seal.unseal("root", 1, &sealed)).unwrap(), root);
        assert!(rt.block_on(seal.unseal("root", 2, &sealed)).is_err());
        let stranger = ProviderSeal::new(
            "other",
            Arc::new(super::super::ManagedKeyProvider::in_memory("other").unwrap()),
        );
        let err = rt
            .block_on(stranger.unseal("root", 1, &sealed))
            .unwrap_err();
        assert!(err.to_string().contains("not this provider's key"), "{err}");
    }
}
