//! Derivation and wrapping: each version's HKDF state, the per-context KEKs and their cache,
//! and the [`KeyProvider`] implementation.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::material::{Material, parse_version, provider_error, ring_unavailable};
use super::ring::Ring;
use super::{KEK_CACHE_MAX, ManagedKeyProvider, SCHEME, WRAPPED_LEN};
use crate::aead::{AeadKey, NONCE_LEN, TAG_LEN};
use crate::context::KeyContext;
use crate::data_key::{DATA_KEY_LEN, DataKey};
use crate::error::{ProviderError, ProviderErrorKind};
use crate::provider::{Attempts, FreshKey, KeyProvider, KeyRef, WrappedKey};

/// Expanded KEKs by version and canonical context, so a context in use costs neither an
/// HKDF-Expand nor an AES key schedule per wrap or unwrap. Bounded (emptied when full) and
/// emptied on every change of the ring, so a destroyed version's keys leave memory with it.
#[derive(Default)]
pub(super) struct KekCache {
    pub(super) map: RwLock<HashMap<u32, KeksByContext>>,
}

/// Expanded KEKs of one version, by canonical context. Hashed with foldhash at a fraction of
/// SipHash's cost on every wrap. Its per-process seed comes from address-space layout and the
/// clock, not a CSPRNG, so it resists flooding less than SipHash; the cache is bounded
/// (`KEK_CACHE_MAX` entries, emptied when full), so colliding contexts cost a caller at most a
/// slower lookup among a bounded few thousand.
type KeksByContext = HashMap<Box<[u8]>, Arc<AeadKey>, foldhash::quality::RandomState>;

impl KekCache {
    pub(super) fn get(&self, version: u32, ctx: &KeyContext) -> Option<Arc<AeadKey>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(&version)?.get(ctx.canonical_bytes()).cloned()
    }

    /// Inserts unless `still_valid` says the version has gone meanwhile.
    pub(super) fn insert(
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

    pub(super) fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl ManagedKeyProvider {
    /// The expanded KEK of `version` for `ctx`, from the cache or derived.
    pub(super) fn kek(
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

    pub(super) fn wrap_in(
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

    /// A fresh data key, wrapped under `ring`'s primary version for `ctx`.
    fn generate_in(
        &self,
        ring: &Ring,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        // One call to the OS CSPRNG for the data key and the wrap's nonce.
        let mut random = Zeroizing::new([0u8; DATA_KEY_LEN + NONCE_LEN]);
        crate::random::fill(random.as_mut())
            .map_err(|_| provider_error(ProviderErrorKind::Other, "random"))?;
        let (key, nonce) = random.split_at(DATA_KEY_LEN);
        let mut key_bytes = Zeroizing::new([0u8; DATA_KEY_LEN]);
        key_bytes.copy_from_slice(key);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| provider_error(ProviderErrorKind::Other, "random"))?;
        let wrapped = self.wrap_in(ring, &key_bytes, ctx, nonce)?;
        Ok((DataKey::from_unwrapped(key_bytes), wrapped))
    }

    pub(super) fn unwrap_in(
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
        let version = ring.versions.get(&number).ok_or_else(|| {
            provider_error(
                ProviderErrorKind::NotFound,
                "the ring has no such key version (is it the ring this was sealed under?)",
            )
        })?;
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

    /// Local when its ring is in a file or in memory ([`RingStore::is_local`]).
    ///
    /// [`RingStore::is_local`]: crate::RingStore::is_local
    fn is_local(&self) -> bool {
        self.store().is_local()
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
        self.generate_in(&ring, ctx)
    }

    /// As [`generate_data_key`](Self::generate_data_key), without awaiting a second boxed
    /// future: this is every seal's path.
    async fn data_key_for_seal(
        &self,
        ctx: &KeyContext,
        _scope: &str,
        _len: u64,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        let ring = self.current().await?;
        self.generate_in(&ring, ctx)
    }

    /// Answered now unless the ring is due to be checked against its store.
    fn data_key_now(
        &self,
        ctx: &KeyContext,
        _scope: &str,
        _len: u64,
        fresh: FreshKey,
    ) -> Option<Result<(DataKey, WrappedKey), ProviderError>> {
        if self.fresh.due() {
            return None;
        }
        let (key, nonce) = fresh.into_parts();
        Some(
            self.wrap_in(&self.snapshot(), key.expose_secret(), ctx, nonce)
                .map(|wrapped| (key, wrapped)),
        )
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        let ring = self.current().await?;
        let mut nonce = [0u8; NONCE_LEN];
        crate::random::fill(&mut nonce)
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

    /// Answered now unless the ring is due to be checked, or does not have the version (which
    /// another process may have added: `unwrap_owned` checks the store).
    fn unwrap_owned_now(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
    ) -> Option<Result<DataKey, ProviderError>> {
        if self.fresh.due() {
            return None;
        }
        match self.unwrap_in(&self.snapshot(), wrapped, ctx) {
            Err(e) if e.kind() == ProviderErrorKind::NotFound => None,
            other => Some(other),
        }
    }
}
