//! Key providers: who holds the key-encryption keys (KEKs) that wrap data keys, and what an
//! implementor of one needs (documented on [`KeyProvider`]).

pub(crate) mod managed;
mod retry;

pub use retry::{Attempts, RetryPolicy};

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::error::{EnvelopeError, ProviderError, ProviderErrorKind};

/// The most bytes of a provider scheme (`managed`, `aws-kms`, ...).
pub const MAX_SCHEME_LEN: usize = 32;
/// The most bytes of a key id (an ARN, a resource name, a URL).
pub const MAX_KEY_ID_LEN: usize = 2048;
/// The most bytes of a key version.
pub const MAX_KEY_VERSION_LEN: usize = 128;
/// The most bytes of one wrapped data key (an RSA-4096 wrap is 512; KMS blobs are smaller).
pub const MAX_WRAPPED_LEN: usize = 4096;

/// A self-describing reference to the key that wrapped a data key:
/// `scheme://key-id#version`, for example `managed://root#v7` or `aws-kms://arn:aws:kms:…`.
///
/// Stored in every envelope, so reads find their provider without configuration and rotation,
/// rewrap and minimum versions work. It is public metadata, never secret.
///
/// Cheap to clone (shared): every sealed value carries a copy of its key's reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyRef(Arc<KeyRefParts>);

/// The text form `scheme://key-id#version` (no `#` when the version is empty) in one buffer, and
/// where its parts end: one allocation besides the `Arc` (every envelope opened parses one).
/// The text determines the parts (the scheme has no `:`, neither the key id nor the version a
/// `#`), so equality of the text is equality of the reference.
#[derive(PartialEq, Eq, Hash)]
struct KeyRefParts {
    text: String,
    scheme_end: usize,
    key_id_end: usize,
}

impl KeyRef {
    /// A key reference, validated: the scheme is 1 to 32 bytes of `[a-z0-9-]` starting with a
    /// letter; the key id is 1 to 2048 bytes and the version at most 128 bytes, neither with
    /// control characters or `#` (so the text form `scheme://key-id#version` is unambiguous).
    ///
    /// # Errors
    /// [`EnvelopeError::Malformed`] or [`EnvelopeError::TooLarge`] naming the broken rule.
    pub fn new(
        scheme: impl AsRef<str>,
        key_id: impl AsRef<str>,
        version: impl AsRef<str>,
    ) -> Result<Self, EnvelopeError> {
        let (scheme, key_id, version) = (scheme.as_ref(), key_id.as_ref(), version.as_ref());
        validate_scheme(scheme)?;
        if key_id.is_empty() {
            return Err(EnvelopeError::Malformed {
                reason: "empty key id",
            });
        }
        check_len("key id", key_id, MAX_KEY_ID_LEN)?;
        check_len("key version", version, MAX_KEY_VERSION_LEN)?;
        if key_id.chars().any(char::is_control) || version.chars().any(char::is_control) {
            return Err(EnvelopeError::Malformed {
                reason: "control character in key reference",
            });
        }
        if key_id.contains('#') || version.contains('#') {
            return Err(EnvelopeError::Malformed {
                reason: "'#' in key id or version",
            });
        }
        // Bounded above: at most 32 + 3 + 2048 + 1 + 128 bytes.
        let mut text = String::with_capacity(scheme.len() + 3 + key_id.len() + 1 + version.len());
        text.push_str(scheme);
        text.push_str("://");
        text.push_str(key_id);
        let key_id_end = text.len();
        if !version.is_empty() {
            text.push('#');
            text.push_str(version);
        }
        Ok(Self(Arc::new(KeyRefParts {
            text,
            scheme_end: scheme.len(),
            key_id_end,
        })))
    }

    /// As [`KeyRef::new`], reusing the reference this thread made last through here when it is
    /// the same one: every opened envelope names its keys, and a service's envelopes name few,
    /// so most opens find theirs without an allocation. Equal text is an equal reference.
    pub(crate) fn new_recent(
        scheme: &str,
        key_id: &str,
        version: &str,
    ) -> Result<Self, EnvelopeError> {
        thread_local! {
            static RECENT: std::cell::RefCell<Option<KeyRef>> =
                const { std::cell::RefCell::new(None) };
        }
        RECENT.with(|recent| {
            let Ok(mut recent) = recent.try_borrow_mut() else {
                return Self::new(scheme, key_id, version);
            };
            if let Some(known) = recent.as_ref()
                && known.scheme() == scheme
                && known.key_id() == key_id
                && known.version() == version
            {
                return Ok(known.clone());
            }
            let made = Self::new(scheme, key_id, version)?;
            *recent = Some(made.clone());
            Ok(made)
        })
    }

    /// Parses `scheme://key-id` or `scheme://key-id#version`. The version is what follows the
    /// last `#`.
    ///
    /// # Errors
    /// As [`KeyRef::new`], or [`EnvelopeError::Malformed`] without `://`.
    pub fn parse(s: &str) -> Result<Self, EnvelopeError> {
        let (scheme, rest) = s.split_once("://").ok_or(EnvelopeError::Malformed {
            reason: "key reference without '://'",
        })?;
        let (key_id, version) = rest.rsplit_once('#').unwrap_or((rest, ""));
        Self::new(scheme, key_id, version)
    }

    /// The provider scheme, such as `managed` or `aws-kms`.
    pub fn scheme(&self) -> &str {
        self.0.text.get(..self.0.scheme_end).unwrap_or_default()
    }

    /// The key id within the provider.
    pub fn key_id(&self) -> &str {
        let start = self.0.scheme_end.saturating_add(3);
        self.0
            .text
            .get(start..self.0.key_id_end)
            .unwrap_or_default()
    }

    /// The key version, empty when the provider records it inside the wrapped bytes.
    pub fn version(&self) -> &str {
        let start = self.0.key_id_end.saturating_add(1);
        self.0.text.get(start..).unwrap_or_default()
    }
}

fn validate_scheme(scheme: &str) -> Result<(), EnvelopeError> {
    let ok = scheme.len() <= MAX_SCHEME_LEN
        && scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EnvelopeError::Malformed {
            reason: "key scheme must be 1 to 32 of [a-z0-9-], starting with a letter",
        })
    }
}

fn check_len(what: &'static str, s: &str, max: usize) -> Result<(), EnvelopeError> {
    if s.len() > max {
        Err(EnvelopeError::TooLarge { what, max })
    } else {
        Ok(())
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRef({self})")
    }
}

/// A data key encrypted under a provider's key, with the reference of that key.
///
/// The bytes are ciphertext: safe to store, useless without the provider.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WrappedKey {
    key_ref: KeyRef,
    bytes: Vec<u8>,
}

impl WrappedKey {
    /// A wrapped key. Providers build these; callers get them from providers and envelopes.
    ///
    /// # Errors
    /// [`EnvelopeError`] if `bytes` is empty or longer than [`MAX_WRAPPED_LEN`].
    pub fn new(key_ref: KeyRef, bytes: Vec<u8>) -> Result<Self, EnvelopeError> {
        if bytes.is_empty() {
            return Err(EnvelopeError::Malformed {
                reason: "empty wrapped key",
            });
        }
        if bytes.len() > MAX_WRAPPED_LEN {
            return Err(EnvelopeError::TooLarge {
                what: "wrapped key",
                max: MAX_WRAPPED_LEN,
            });
        }
        Ok(Self { key_ref, bytes })
    }

    /// The key that wrapped this data key.
    pub fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    /// The wrapped bytes, as the provider produced them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("key_ref", &self.key_ref)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A holder of key-encryption keys: the managed key ring, or a customer's key in a cloud KMS.
///
/// # Who calls it
/// The envelope functions ([`seal`](crate::seal), [`open`](crate::open),
/// [`rewrap`](crate::rewrap)) and the [`Router`](crate::Router). Applications normally hand a
/// provider (usually a router) to those functions rather than calling it directly.
///
/// # What it must do
/// - Bind the key context to every wrap: use [`KeyContext::canonical_bytes`] as associated data
///   (or as the KMS encryption context), and reject an unwrap under a different context.
/// - Record in each [`KeyRef`] enough to find the same key and version again.
/// - Never put credentials, key bytes or plaintext in errors, logs or `Debug`.
///
/// # "Not mine" versus "mine, but it failed"
/// [`owns`](Self::owns) answers, without any I/O, whether a wrapped key's reference names a key
/// this provider holds. [`unwrap`](Self::unwrap) and [`unwrap_once`](Self::unwrap_once) answer
/// [`ProviderErrorKind::NotMine`] for any other key before the implementor's
/// [`unwrap_owned`](Self::unwrap_owned) is called. Every failure on a key it owns is another
/// kind: [`ProviderErrorKind::InvalidCiphertext`] when the wrapped bytes or the context
/// are not authentic, `Disabled`, `NotFound`, `AccessDenied`, `Throttled` or `Unavailable`
/// otherwise.
///
/// # Writing a provider
/// Implement [`owns`](Self::owns), [`wrap`](Self::wrap) and
/// [`unwrap_owned`](Self::unwrap_owned) (handed only wrapped keys it owns; "not mine" is
/// answered before it is called), in an `impl` block marked `#[vault_crypto::async_trait]`
/// (the crate re-exports the attribute: a plain `async fn` does not match the trait's
/// boxed futures, error E0195). Build the data key a key service returns with
/// [`DataKey::from_unwrapped`](crate::DataKey::from_unwrapped) or
/// [`DataKey::from_answer`](crate::DataKey::from_answer), and make each remote call through
/// [`RetryPolicy::call`]: one timeout per attempt, bounded jittered retries, and a single
/// attempt when the wrapped key is a caller's ([`Attempts::Once`]). Override
/// [`generate_data_key`](Self::generate_data_key) when the key service makes data keys itself
/// (one round trip instead of a local key and a wrap), and
/// [`is_current`](Self::is_current) when a key has versions of which only one wraps.
///
/// # Wrapping a provider
/// A provider in front of another (metering, logging, limiting) must forward every method the
/// wrapped one may answer differently from the defaults: [`owns`](Self::owns),
/// [`is_current`](Self::is_current) (or a rewrap after a rotation answers "already current"
/// and the data stays on the old version), [`generate_data_key`](Self::generate_data_key),
/// [`data_key_for_seal`](Self::data_key_for_seal) (or a cache behind it is bypassed),
/// [`wrap`](Self::wrap), [`unwrap_owned`](Self::unwrap_owned) with its [`Attempts`] unchanged,
/// and [`is_local`](Self::is_local). [`data_key_now`](Self::data_key_now) and
/// [`unwrap_owned_now`](Self::unwrap_owned_now) are a fast path: a wrapper that leaves them to
/// their default (`None`) stays correct and its callers await the methods above; one that
/// forwards them must do there whatever it does in their async counterparts. [`testing::check_forwarding`](crate::testing::check_forwarding)
/// checks a wrapper in one test.
///
/// # Runtime
/// The trait's futures are `Send` and run under any executor. The managed provider and the
/// cache need none of their own; providers that call a key service (the cloud KMS crates)
/// need tokio with its timer enabled, for [`RetryPolicy::call`]'s timeouts and backoff. Code
/// without a runtime uses [`blocking`](crate::blocking) with a [local](Self::is_local)
/// provider.
#[async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// Whether `key` names a key this provider holds. Must not do I/O.
    fn owns(&self, key: &KeyRef) -> bool;

    /// Whether every call completes on the calling thread with no async runtime: no network,
    /// no timer, no client that needs a reactor. The [`blocking`](crate::blocking) functions
    /// refuse a provider that is not. The default is false. The managed provider over a file
    /// or in memory is local; a cache or a router is local when what it calls is. Must not do
    /// I/O.
    fn is_local(&self) -> bool {
        false
    }

    /// Whether a data key wrapped under `key` for `ctx` is wrapped the way this provider would
    /// wrap one now, so a rewrap has nothing to do. False for a key it does not own, and for an
    /// older version of its own key (the managed ring after a rotation). The default is
    /// [`owns`](Self::owns): a provider whose key service rotates behind one key id (AWS KMS,
    /// Cloud KMS) is current for every key it owns.
    ///
    /// # Errors
    /// A [`ProviderError`] if the provider cannot tell (its key ring is unreadable).
    async fn is_current(&self, key: &KeyRef, ctx: &KeyContext) -> Result<bool, ProviderError> {
        let _ = ctx;
        Ok(self.owns(key))
    }

    /// A fresh data key for `ctx` and the same key wrapped for `ctx`, in one operation (one
    /// round trip for a KMS).
    ///
    /// # Errors
    /// A [`ProviderError`]; nothing is produced.
    async fn generate_data_key(
        &self,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        let key = DataKey::generate()
            .map_err(|_| ProviderError::new(ProviderErrorKind::Other, "local", "random"))?;
        let wrapped = self.wrap(&key, ctx).await?;
        Ok((key, wrapped))
    }

    /// A data key for sealing one message of `len` plaintext bytes for `ctx` in `scope` (an
    /// environment, or `""`): what [`seal_in`](crate::seal_in) calls. The default generates a
    /// fresh key; a caching provider ([`CachingProvider`](crate::CachingProvider)) may hand out
    /// a recent one within its limits, never one it handed out for another scope.
    ///
    /// # Errors
    /// As [`generate_data_key`](Self::generate_data_key).
    async fn data_key_for_seal(
        &self,
        ctx: &KeyContext,
        scope: &str,
        len: u64,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        let _ = (scope, len);
        self.generate_data_key(ctx).await
    }

    /// [`data_key_for_seal`](Self::data_key_for_seal) answered on the calling thread, when this
    /// provider can answer without waiting for anything (its keys in memory, nothing due to be
    /// checked): the seal then runs to its end without a boxed future. `None` sends the caller
    /// to `data_key_for_seal`. The default is `None`, always correct; an answer must be the one
    /// `data_key_for_seal` would give. A provider that makes its data keys locally makes this
    /// one from `fresh` (drawn with the seal's other random values) rather than drawing its own.
    fn data_key_now(
        &self,
        ctx: &KeyContext,
        scope: &str,
        len: u64,
        fresh: FreshKey,
    ) -> Option<Result<(DataKey, WrappedKey), ProviderError>> {
        let _ = (ctx, scope, len, fresh);
        None
    }

    /// Wraps an existing data key for `ctx` under this provider's current key.
    ///
    /// # Errors
    /// A [`ProviderError`].
    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError>;

    /// Unwraps a data key that this provider wrapped for `ctx`; called only with a wrapped key
    /// it [owns](Self::owns). Callers use [`unwrap`](Self::unwrap) or
    /// [`unwrap_once`](Self::unwrap_once), which check ownership (and, for a router, routing)
    /// first. With [`Attempts::Once`] the wrapped key is a caller's (an issued data key's blob),
    /// so its key reference and context are the caller's choice: make **one attempt** at each
    /// call to a key service, never retried (a caller must not be able to multiply calls to a
    /// customer's key), and no call at all that a local check can spare.
    ///
    /// # Errors
    /// [`ProviderErrorKind::InvalidCiphertext`] if the bytes or the context are not authentic;
    /// another kind if the key is unusable or the provider unreachable.
    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError>;

    /// [`unwrap_owned`](Self::unwrap_owned) with [`Attempts::Retry`], answered on the calling
    /// thread when this provider can answer without waiting for anything; `None` sends the
    /// caller to `unwrap_owned`. Called only with a wrapped key it [owns](Self::owns). The
    /// default is `None`, always correct; an answer must be the one `unwrap_owned` would give.
    fn unwrap_owned_now(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
    ) -> Option<Result<DataKey, ProviderError>> {
        let _ = (wrapped, ctx);
        None
    }

    /// Unwraps a data key that this provider wrapped for `ctx`, read from our own store or
    /// handed to the library by its user.
    ///
    /// # Errors
    /// [`ProviderErrorKind::NotMine`] if [`owns`](Self::owns) is false for it; otherwise as
    /// [`unwrap_owned`](Self::unwrap_owned).
    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
    ) -> Result<DataKey, ProviderError> {
        unwrap_checked(self, wrapped, ctx, Attempts::Retry).await
    }

    /// Unwraps a wrapped key that a caller handed in (an issued data key's blob) rather than
    /// one read from our own store: [`Attempts::Once`], and for a router only if its rules send
    /// `ctx` to the key's owner or the owner is kept for decryption.
    ///
    /// # Errors
    /// As [`unwrap`](Self::unwrap); [`ProviderErrorKind::NotMine`] from a router whose rules do
    /// not lead `ctx` to the key's owner.
    async fn unwrap_once(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
    ) -> Result<DataKey, ProviderError> {
        unwrap_checked(self, wrapped, ctx, Attempts::Once).await
    }
}

/// A fresh data key and a nonce for its wrap, handed to [`KeyProvider::data_key_now`]: drawn from
/// the operating system's CSPRNG together with the rest of one seal's random values (one kernel
/// draw per seal, `DESIGN.md`, "Randomness"), and made only by this crate, so a provider that
/// uses it cannot be handed a key of a caller's choosing. A provider that makes its data keys
/// some other way (a key service, a cache) drops it; the key is wiped on drop.
pub struct FreshKey {
    key: DataKey,
    wrap_nonce: [u8; 12],
}

impl FreshKey {
    pub(crate) fn new(key: DataKey, wrap_nonce: [u8; 12]) -> Self {
        Self { key, wrap_nonce }
    }

    /// The data key, and a nonce for wrapping it with AES-GCM.
    pub fn into_parts(self) -> (DataKey, [u8; 12]) {
        (self.key, self.wrap_nonce)
    }
}

impl fmt::Debug for FreshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FreshKey(<redacted>)")
    }
}

/// The provided unwraps: "not mine" is answered here, before the implementor is asked.
async fn unwrap_checked<P: KeyProvider + ?Sized>(
    provider: &P,
    wrapped: &WrappedKey,
    ctx: &KeyContext,
    attempts: Attempts,
) -> Result<DataKey, ProviderError> {
    if !provider.owns(wrapped.key_ref()) {
        return Err(not_mine(wrapped.key_ref()));
    }
    provider.unwrap_owned(wrapped, ctx, attempts).await
}

/// The answer to a wrapped key that a provider does not own.
fn not_mine(key: &KeyRef) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::NotMine,
        key.scheme().to_owned(),
        "not a key of this provider",
    )
}
