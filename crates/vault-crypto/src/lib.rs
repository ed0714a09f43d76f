//! The core of the vault: strict key contexts, data keys, a key-committing envelope format,
//! key providers and the router that implements bring-your-own-key.
//!
//! Seal a value for a key context, open it again:
//!
//! ```
//! # async fn demo() -> Result<(), vault_crypto::Error> {
//! use std::sync::Arc;
//! use vault_crypto::{KeyContext, ManagedKeyProvider, Router};
//!
//! let router = Router::new(Arc::new(ManagedKeyProvider::in_memory("root")?));
//! let ctx = KeyContext::parse_json(br#"{"organization_id":"org_1"}"#)?;
//! let envelope = vault_crypto::seal(&router, &ctx, b"4111 1111 1111 1111", b"").await?;
//! let opened = vault_crypto::open(&router, &envelope, b"").await?;
//! assert_eq!(opened.plaintext(), b"4111 1111 1111 1111");
//! assert_eq!(opened.context(), &ctx);
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # A tour
//! - [`KeyContext`]: 1 to 10 string pairs, parsed strictly and reduced to one canonical byte
//!   form that is bound into every ciphertext and every key wrap.
//! - [`DataKey`]: a fresh 256-bit key per object from the OS CSPRNG, wiped on drop, redacted in
//!   `Debug`.
//! - [`Envelope`]: the versioned binary format (`docs/FORMAT.md`) holding the context, the
//!   wrapped data keys, a key commitment and the AES-256-GCM ciphertext.
//! - [`KeyProvider`]: who holds the key-encryption keys. [`ManagedKeyProvider`] is a local ring of
//!   root keys with versions, rotation, rewrap and crypto-shredding; cloud KMS providers live in
//!   their own crates.
//! - [`Router`]: BYOK rules from context to provider, and dispatch back by key reference.
//! - [`CachingProvider`]: the data-key cache in front of a (remote) provider.
//! - [`seal`], [`open`], [`rewrap`]: what the store, the server and the CLI call.
//! - [`provider`]: what an implementor of a key provider needs (the trait, the one
//!   timeout-and-retry loop, data keys from a key service's answer).
//!
//! # What it does not do
//! No network and no database: cloud KMS providers, the object store and the HTTP server are
//! other crates. Values are sealed whole in memory (up to [`MAX_PLAINTEXT_LEN`]); there is no
//! streaming format yet.
//!
//! # Crate features
//! - `ring` (default): AES-256-GCM from ring, the fastest implementation measured here.
//! - `rustcrypto`: AES-256-GCM from RustCrypto's pure-Rust `aes-gcm`. Both produce identical
//!   bytes; with both on, ring is the default and [`Backend`] selects either.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod aead;
mod cache;
mod context;
mod data_key;
mod envelope;
mod error;
pub mod integrity;
pub mod issued;
pub mod provider;
pub mod random;
mod router;
pub mod sealed_ring;
pub mod workos;

pub mod danger;
#[doc(hidden)]
pub mod fuzzing;

pub use aead::Backend;
pub use cache::{CacheLimits, CacheStats, CachingProvider};
pub use context::{
    CANONICAL_VERSION, KeyContext, MAX_CANONICAL_BYTES, MAX_JSON_BYTES, MAX_KEY_BYTES, MAX_PAIRS,
    MAX_VALUE_CHARS, RESERVED_KEYS,
};
pub use data_key::{DATA_KEY_LEN, DataKey};
pub use envelope::{
    COMMITMENT_LEN, Envelope, MAGIC, MAX_PLAINTEXT_LEN, MAX_TEXT_LEN, MAX_WRAPPED_KEYS,
    MESSAGE_ID_LEN, Opened, Rewrapped, SUITE_AES256GCM_HKDF_SHA256_COMMIT, Sealed, VERSION,
    encode_text, open, open_for, rewrap, rewrap_for, seal, seal_in,
};
pub use error::{
    ConfigError, ContextError, EnvelopeError, Error, KeyRingError, ProviderError, ProviderErrorKind,
};
pub use provider::managed::{
    self, FileRingStore, ManagedKeyProvider, MemoryRingStore, RingState, RingStats, RingStore,
    VersionInfo, VersionState,
};
pub use provider::{
    Attempts, KeyProvider, KeyRef, MAX_KEY_ID_LEN, MAX_KEY_VERSION_LEN, MAX_SCHEME_LEN,
    MAX_WRAPPED_LEN, RetryPolicy, WrappedKey,
};
pub use router::{ProviderCalls, Router, Rule, Rules};
