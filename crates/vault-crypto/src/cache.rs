//! The data-key cache: one provider call per many objects instead of one per object.
//!
//! [`CachingProvider`] wraps any [`KeyProvider`]. Sealing reuses the data key of a context
//! within limits on age, number of messages and bytes sealed; every envelope still gets its own
//! content key and nonce (derived from a fresh random message id), so reuse never repeats an
//! AEAD key. Opening caches unwrapped data keys by a hash of the wrapped key and the context,
//! for a bounded time. Both sides are bounded (least recently used entries go first), wipe keys
//! from memory when entries leave, and make one provider call for concurrent misses on the same
//! key (single flight).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock: the real one, or a test's paused one.
use tokio::time::Instant;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex as AsyncMutex, OnceCell};
use zeroize::Zeroizing;

use crate::context::KeyContext;
use crate::data_key::{DATA_KEY_LEN, DataKey};
use crate::error::{ProviderError, ProviderErrorKind};
use crate::provider::{Attempts, KeyProvider, KeyRef, WrappedKey};

/// When a cached data key must be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheLimits {
    /// Most cached data keys on each side (encrypt, decrypt).
    pub max_entries: usize,
    /// Longest time a data key is used or kept after the provider returned it.
    pub max_age: Duration,
    /// Most envelopes sealed with one data key (far below any AEAD limit: each envelope has its
    /// own content key; this bounds what one compromised data key exposes).
    pub max_messages: u64,
    /// Most plaintext bytes sealed with one data key.
    pub max_bytes: u64,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_entries: 1024,
            max_age: Duration::from_secs(300),
            max_messages: 100_000,
            max_bytes: 1 << 32,
        }
    }
}

impl CacheLimits {
    /// Sets the most cached keys per side.
    #[must_use]
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }

    /// Sets the longest life of a cached key.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Sets the most envelopes per data key.
    #[must_use]
    pub fn max_messages(mut self, n: u64) -> Self {
        self.max_messages = n.max(1);
        self
    }

    /// Sets the most plaintext bytes per data key.
    #[must_use]
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }
}

/// Counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Seals served with a cached data key.
    pub encrypt_hits: u64,
    /// Seals that needed a new data key.
    pub encrypt_misses: u64,
    /// Opens served with a cached data key.
    pub decrypt_hits: u64,
    /// Opens that needed an unwrap.
    pub decrypt_misses: u64,
    /// Calls made to the wrapped provider (generate, wrap, unwrap).
    pub provider_calls: u64,
}

#[derive(Default)]
struct Counters {
    encrypt_hits: AtomicU64,
    encrypt_misses: AtomicU64,
    decrypt_hits: AtomicU64,
    decrypt_misses: AtomicU64,
    provider_calls: AtomicU64,
}

/// A data key being used for sealing, with what it has sealed so far.
struct SealKey {
    key: Zeroizing<[u8; DATA_KEY_LEN]>,
    wrapped: WrappedKey,
    born: Instant,
    messages: u64,
    bytes: u64,
}

/// An unwrapped data key.
struct OpenKey {
    key: Zeroizing<[u8; DATA_KEY_LEN]>,
    born: Instant,
}

/// One cache side: slots by key, with their last use for least-recently-used eviction.
struct Slots<T> {
    map: HashMap<Box<[u8]>, (Arc<T>, u64)>,
    tick: u64,
}

impl<T> Slots<T> {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
            tick: 0,
        }
    }

    /// The slot for `key`, created with `make` if absent (evicting the least recently used
    /// slot when full).
    fn get_or_insert(&mut self, key: &[u8], max: usize, make: impl FnOnce() -> T) -> Arc<T> {
        self.tick += 1;
        let tick = self.tick;
        if let Some((slot, used)) = self.map.get_mut(key) {
            *used = tick;
            return Arc::clone(slot);
        }
        if self.map.len() >= max
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.map.remove(&oldest);
        }
        let slot = Arc::new(make());
        self.map.insert(key.into(), (Arc::clone(&slot), tick));
        slot
    }

    /// Drops the slot for `key` if it is still `slot`.
    fn remove_if(&mut self, key: &[u8], slot: &Arc<T>) {
        if self.map.get(key).is_some_and(|(s, _)| Arc::ptr_eq(s, slot)) {
            self.map.remove(key);
        }
    }
}

/// A [`KeyProvider`] that caches data keys in front of another one: it reuses a data key for
/// sealing within [`CacheLimits`], and keeps unwrapped keys for their `max_age`.
///
/// Put one cache in front of a provider, not a cache in front of a cache: the inner one would
/// see one message per outer miss, so the limits would multiply.
pub struct CachingProvider {
    inner: Arc<dyn KeyProvider>,
    limits: CacheLimits,
    /// Sealing keys by scope and canonical context. The async mutex of a slot makes concurrent
    /// seals of one context share one provider call.
    seal: Mutex<Slots<AsyncMutex<Option<SealKey>>>>,
    /// Unwrapped keys by SHA-256 of (context, key reference, wrapped bytes).
    open: Mutex<Slots<OnceCell<OpenKey>>>,
    counters: Counters,
}

impl fmt::Debug for CachingProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingProvider")
            .field("inner", &self.inner)
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl CachingProvider {
    /// Caches data keys of `inner` within `limits`.
    pub fn new(inner: Arc<dyn KeyProvider>, limits: CacheLimits) -> Self {
        Self {
            inner,
            limits,
            seal: Mutex::new(Slots::new()),
            open: Mutex::new(Slots::new()),
            counters: Counters::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            encrypt_hits: c.encrypt_hits.load(Ordering::Relaxed),
            encrypt_misses: c.encrypt_misses.load(Ordering::Relaxed),
            decrypt_hits: c.decrypt_hits.load(Ordering::Relaxed),
            decrypt_misses: c.decrypt_misses.load(Ordering::Relaxed),
            provider_calls: c.provider_calls.load(Ordering::Relaxed),
        }
    }

    /// Forgets every cached key (each is wiped as it is dropped).
    pub fn clear(&self) {
        lock(&self.seal).map.clear();
        lock(&self.open).map.clear();
    }

    fn usable(&self, k: &SealKey, len: u64) -> bool {
        k.born.elapsed() < self.limits.max_age
            && k.messages < self.limits.max_messages
            && k.bytes.saturating_add(len) <= self.limits.max_bytes
    }

    fn call(&self) {
        self.counters.provider_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Passes on the wrapped provider's answer; an answer that the key is disabled, deleted or
    /// no longer ours to use flushes every cached key at once, so a customer's revocation is
    /// obeyed by the next call that reaches the key service rather than only after `max_age`.
    fn checked<T>(&self, result: Result<T, ProviderError>) -> Result<T, ProviderError> {
        if let Err(e) = &result
            && matches!(
                e.kind(),
                ProviderErrorKind::Disabled
                    | ProviderErrorKind::AccessDenied
                    | ProviderErrorKind::NotFound
            )
        {
            self.clear();
        }
        result
    }

    async fn unwrap_cached(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        let id = open_cache_key(wrapped, ctx);
        loop {
            let slot = lock(&self.open).get_or_insert(&id, self.limits.max_entries, OnceCell::new);
            if let Some(k) = slot.get() {
                if k.born.elapsed() < self.limits.max_age {
                    self.counters.decrypt_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(copy_key(&k.key));
                }
                // Expired: drop this slot and start a new one.
                lock(&self.open).remove_if(&id, &slot);
                continue;
            }
            let mut fetched = false;
            let filled = slot
                .get_or_try_init(|| async {
                    fetched = true;
                    self.call();
                    // A caller's blob can name any version of the key (a made-up one answers
                    // NotFound): only our own data's answers may flush every tenant's keys.
                    let unwrapped = self.inner.unwrap_owned(wrapped, ctx, attempts).await;
                    let key = match attempts {
                        Attempts::Once => unwrapped?,
                        Attempts::Retry => self.checked(unwrapped)?,
                    };
                    Ok::<_, ProviderError>(OpenKey {
                        key: Zeroizing::new(*key.expose_secret()),
                        born: Instant::now(),
                    })
                })
                .await;
            let k = match filled {
                Ok(k) => k,
                Err(e) => {
                    // No empty slot is left behind to push out keys in use.
                    lock(&self.open).remove_if(&id, &slot);
                    return Err(e);
                }
            };
            let counter = if fetched {
                &self.counters.decrypt_misses
            } else {
                &self.counters.decrypt_hits
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Ok(copy_key(&k.key));
        }
    }
}

/// The seal-side slot of `ctx` in `scope`: both length-prefixed, so no two pairs share one.
fn seal_cache_key(ctx: &KeyContext, scope: &str) -> Vec<u8> {
    let ctx = ctx.canonical_bytes();
    let mut key = Vec::with_capacity(16 + scope.len() + ctx.len());
    for part in [scope.as_bytes(), ctx] {
        key.extend_from_slice(&(part.len() as u64).to_be_bytes());
        key.extend_from_slice(part);
    }
    key
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn copy_key(key: &[u8; DATA_KEY_LEN]) -> DataKey {
    DataKey::from_unwrapped(Zeroizing::new(*key))
}

fn open_cache_key(wrapped: &WrappedKey, ctx: &KeyContext) -> [u8; 32] {
    let r = wrapped.key_ref();
    let mut h = Sha256::new();
    let parts = [
        ctx.canonical_bytes(),
        r.scheme().as_bytes(),
        r.key_id().as_bytes(),
        r.version().as_bytes(),
        wrapped.bytes(),
    ];
    // Each part length-prefixed: no two different inputs hash the same sequence of bytes.
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[async_trait]
impl KeyProvider for CachingProvider {
    fn owns(&self, key: &KeyRef) -> bool {
        self.inner.owns(key)
    }

    fn is_local(&self) -> bool {
        self.inner.is_local()
    }

    async fn is_current(&self, key: &KeyRef, ctx: &KeyContext) -> Result<bool, ProviderError> {
        self.inner.is_current(key, ctx).await
    }

    /// Always a fresh key from the wrapped provider: only [`data_key_for_seal`] reuses keys.
    ///
    /// [`data_key_for_seal`]: KeyProvider::data_key_for_seal
    async fn generate_data_key(
        &self,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        self.call();
        self.checked(self.inner.generate_data_key(ctx).await)
    }

    async fn data_key_for_seal(
        &self,
        ctx: &KeyContext,
        scope: &str,
        len: u64,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        let slot = lock(&self.seal).get_or_insert(
            &seal_cache_key(ctx, scope),
            self.limits.max_entries,
            || AsyncMutex::new(None),
        );
        let mut entry = slot.lock().await;
        // A key wrapped under a version the provider has since replaced (a rotated managed
        // ring) is not reused: new data goes under the current key at once.
        let current = match entry.as_ref().filter(|k| self.usable(k, len)) {
            Some(k) => self.inner.is_current(k.wrapped.key_ref(), ctx).await?,
            None => false,
        };
        if let Some(k) = entry.as_mut().filter(|_| current) {
            k.messages += 1;
            k.bytes = k.bytes.saturating_add(len);
            self.counters.encrypt_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((copy_key(&k.key), k.wrapped.clone()));
        }
        self.counters.encrypt_misses.fetch_add(1, Ordering::Relaxed);
        // The old key (if any) is wiped now: it has reached a limit.
        *entry = None;
        self.call();
        let fresh = self.inner.data_key_for_seal(ctx, scope, len).await;
        let (key, wrapped) = self.checked(fresh)?;
        let bytes = Zeroizing::new(*key.expose_secret());
        // Reading back what was just sealed needs no unwrap either.
        let slot = lock(&self.open).get_or_insert(
            &open_cache_key(&wrapped, ctx),
            self.limits.max_entries,
            OnceCell::new,
        );
        let _ = slot.set(OpenKey {
            key: bytes.clone(),
            born: Instant::now(),
        });
        // A value too large for the byte limit gets a key of its own, not cached.
        if len <= self.limits.max_bytes {
            *entry = Some(SealKey {
                key: bytes,
                wrapped: wrapped.clone(),
                born: Instant::now(),
                messages: 1,
                bytes: len,
            });
        }
        Ok((key, wrapped))
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        self.call();
        self.checked(self.inner.wrap(key, ctx).await)
    }

    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        self.unwrap_cached(wrapped, ctx, attempts).await
    }
}
