//! Where a managed ring lives: the [`RingStore`] seam, and the in-memory store.

use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;

use super::state::RingState;
use crate::error::KeyRingError;

/// Where a managed ring lives: the source of truth that every process holding the ring agrees
/// on. The [`ManagedKeyProvider`](super::ManagedKeyProvider) keeps a copy in memory and asks
/// the store, often and cheaply, whether the ring moved on.
///
/// Implementations: [`FileRingStore`](super::FileRingStore) (a file under a lock, the embedded
/// default), [`MemoryRingStore`] (tests, ephemeral rings), and a database table for deployments
/// of several processes on several machines.
///
/// # What it must do
/// - Keep the ring as one unit: [`replace`](Self::replace) is all-or-nothing and durable before
///   it returns `true`.
/// - Compare and swap on the generation: a replacement succeeds only if the stored generation
///   is still the one just below the new ring's, so two processes changing the ring at once
///   never lose a change (the loser reloads and tries again).
/// - Make [`load_if_changed`](Self::load_if_changed) cheap when nothing changed (a `stat`, a
///   one-row query): it runs a few times a second in every process that seals or opens.
#[async_trait]
pub trait RingStore: Send + Sync + fmt::Debug {
    /// The name of the ring it holds.
    fn name(&self) -> &str;

    /// Where the ring lives, for messages (a file's path, a database).
    fn location(&self) -> String {
        format!("{:?}", self.name())
    }

    /// Whether every call completes on the calling thread with no async runtime (a file, memory;
    /// not a database client). What [`KeyProvider::is_local`](crate::KeyProvider::is_local)
    /// answers for a managed provider over this store. The default is false.
    fn is_local(&self) -> bool {
        false
    }

    /// The stored ring if its generation is not `known` (always, for `None`); `None` if it is
    /// unchanged.
    ///
    /// # Errors
    /// A [`KeyRingError`] if the ring cannot be read, is malformed, or is missing.
    async fn load_if_changed(&self, known: Option<u64>) -> Result<Option<RingState>, KeyRingError>;

    /// Stores `ring` unless a ring exists already; returns the stored ring (this one, or the
    /// one another process created first).
    ///
    /// # Errors
    /// A [`KeyRingError`] if the ring cannot be read or written.
    async fn create(&self, ring: RingState) -> Result<RingState, KeyRingError>;

    /// Replaces the stored ring with `ring` only if the stored generation is
    /// `ring.generation() - 1`. Returns whether it did.
    ///
    /// # Errors
    /// A [`KeyRingError`] if the ring cannot be read or written; the stored ring is then as it
    /// was.
    async fn replace(&self, ring: &RingState) -> Result<bool, KeyRingError>;
}

/// A ring held in memory only: its keys vanish with the process. Several providers may share
/// one (as processes share a file), which is how tests check that they agree.
pub struct MemoryRingStore {
    name: String,
    ring: Mutex<Option<RingState>>,
}

impl MemoryRingStore {
    /// An empty store for the ring `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ring: Mutex::new(None),
        }
    }

    /// A store holding `ring`.
    pub(crate) fn holding(ring: RingState) -> Self {
        Self {
            name: ring.name.clone(),
            ring: Mutex::new(Some(ring)),
        }
    }
}

impl fmt::Debug for MemoryRingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRingStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl RingStore for MemoryRingStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        format!("memory:{}", self.name)
    }

    fn is_local(&self) -> bool {
        true
    }

    async fn load_if_changed(&self, known: Option<u64>) -> Result<Option<RingState>, KeyRingError> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        match &*ring {
            None => Err(KeyRingError::Missing {
                location: format!("memory:{}", self.name),
            }),
            Some(r) if Some(r.generation) == known => Ok(None),
            Some(r) => Ok(Some(r.duplicate())),
        }
    }

    async fn create(&self, ring: RingState) -> Result<RingState, KeyRingError> {
        let mut slot = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let stored = slot.get_or_insert(ring);
        Ok(stored.duplicate())
    }

    async fn replace(&self, ring: &RingState) -> Result<bool, KeyRingError> {
        let mut slot = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(r) if r.generation.checked_add(1) == Some(ring.generation) => {
                *slot = Some(ring.duplicate());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
