#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod aead;
pub mod blocking;
mod cache;
mod context;
mod data_key;
mod envelope;
mod error;
pub mod integrity;
pub mod issued;
mod park;
mod provider;
pub mod random;
mod router;
pub mod sealed_ring;
pub mod testing;
pub mod workos;

pub mod danger;
#[doc(hidden)]
pub mod fuzzing;

pub use aead::Backend;
pub use cache::{CacheLimits, CacheStats, CachingProvider};
pub use context::{
    CANONICAL_VERSION, KeyContext, MAX_CANONICAL_BYTES, MAX_JSON_BYTES, MAX_KEY_BYTES, MAX_PAIRS,
    MAX_VALUE_CHARS, RESERVED_KEYS, Reserved,
};
pub use data_key::{DATA_KEY_LEN, DataKey};
pub use envelope::stream;
pub use envelope::{
    Aad, COMMITMENT_LEN, Envelope, MAGIC, MAX_PLAINTEXT_LEN, MAX_TEXT_LEN, MAX_WRAPPED_KEYS,
    MESSAGE_ID_LEN, Opened, Rewrapped, SUITE_AES256GCM_AESKDF_SHA256_COMMIT,
    SUITE_AES256GCM_HKDF_SHA256_COMMIT, Sealed, VERSION, encode_text, open, open_any_context,
    open_in_place, rewrap, rewrap_any_context, seal, seal_in,
};
pub use error::{
    ConfigError, ContextError, EnvelopeError, Error, KeyRingError, ProviderError, ProviderErrorKind,
};
pub use provider::managed::{
    FileRingStore, ManagedKeyProvider, MemoryRingStore, RingState, RingStats, RingStore,
    VersionInfo, VersionState,
};

/// The managed key provider's seals, stored forms and limits: what a deployment that keeps its
/// ring in a database, or seals it with a KMS key, needs beyond
/// [`ManagedKeyProvider`].
pub mod managed {
    pub use crate::provider::managed::{
        DEFAULT_CHECK_INTERVAL, MAX_CHECK_INTERVAL, MAX_FILE_LEN, MAX_VERSIONS, MasterKeySeal,
        ProviderSeal, RootSeal, SCHEME, SealedRoot, StoredVersion, StoredVersionRef, copy_ring,
        shown,
    };
}

/// The attribute a [`KeyProvider`] implementation is written with (the trait's methods are
/// `async fn` behind `Box<dyn Future>`, so a provider is usable as `dyn KeyProvider`): write
/// `#[vault_crypto::async_trait]` on the `impl` block, with no dependency of your own.
pub use async_trait::async_trait;
pub use provider::{
    Attempts, FreshKey, KeyProvider, KeyRef, MAX_KEY_ID_LEN, MAX_KEY_VERSION_LEN, MAX_SCHEME_LEN,
    MAX_WRAPPED_LEN, RetryPolicy, WrappedKey,
};
pub use router::{ProviderCalls, Router, Rule, Rules};
