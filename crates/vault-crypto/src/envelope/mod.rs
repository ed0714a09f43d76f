//! Sealing and opening values in envelopes.
//!
//! [`seal`] asks a provider for a fresh data key wrapped for the context, derives a per-message
//! content key and key commitment from it, and encrypts the value with AES-256-GCM under the
//! authenticated header. [`open`] reverses it: parse, unwrap through the provider named by the
//! wrapped key, check the commitment in constant time, then decrypt.

pub(crate) mod commit;
pub(crate) mod format;

use std::fmt;

use crate::aead::{Backend, NONCE_LEN, TAG_LEN};
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::error::{Error, ProviderErrorKind};
use crate::provider::{Attempts, KeyProvider, KeyRef, WrappedKey};

pub use commit::{COMMITMENT_LEN, MESSAGE_ID_LEN};
pub use format::{
    Envelope, MAGIC, MAX_PLAINTEXT_LEN, MAX_TEXT_LEN, MAX_WRAPPED_KEYS,
    SUITE_AES256GCM_HKDF_SHA256_COMMIT, VERSION, encode_text,
};

/// The random values of one seal: drawn together in one call to the OS CSPRNG.
pub(crate) struct MessageRandom {
    pub(crate) message_id: [u8; MESSAGE_ID_LEN],
    pub(crate) nonce: [u8; NONCE_LEN],
}

impl MessageRandom {
    pub(crate) fn generate() -> Result<Self, Error> {
        let mut buf = [0u8; MESSAGE_ID_LEN + NONCE_LEN];
        crate::random::fill(&mut buf)?;
        let (message_id, nonce) = buf.split_at(MESSAGE_ID_LEN);
        Ok(Self {
            message_id: message_id.try_into().map_err(|_| Error::Random)?,
            nonce: nonce.try_into().map_err(|_| Error::Random)?,
        })
    }
}

/// Seals `plaintext` under `data_key` with everything explicit. The one place an envelope is
/// built; every public sealing path ends here.
pub(crate) fn seal_with(
    backend: Backend,
    data_key: &DataKey,
    wrapped_keys: &[WrappedKey],
    context: &KeyContext,
    plaintext: &[u8],
    aad: &[u8],
    random: &MessageRandom,
) -> Result<Vec<u8>, Error> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(Error::PlaintextTooLarge {
            max: MAX_PLAINTEXT_LEN,
        });
    }
    format::check_wrapped_count(wrapped_keys.len())?;
    let keys = commit::derive(
        data_key,
        &random.message_id,
        SUITE_AES256GCM_HKDF_SHA256_COMMIT,
    );

    let header_len = format::header_len(context);
    let body_start = header_len + format::wrapped_keys_len(wrapped_keys);
    // The output, sized exactly (a non-empty `aad` adds one joined buffer below).
    let mut out = Vec::with_capacity(body_start + plaintext.len() + TAG_LEN);
    format::write_header(
        &mut out,
        &random.message_id,
        context,
        &keys.commitment,
        &random.nonce,
    );
    format::write_wrapped_keys(&mut out, wrapped_keys);
    out.extend_from_slice(plaintext);

    let (head, body) = out.split_at_mut(body_start);
    let header = &head[..header_len];
    let tag = with_aad(header, aad, |aad| {
        backend.seal_in_place(&keys.content_key, &random.nonce, aad, body)
    })
    .map_err(|_| Error::EncryptionFailed)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a parsed envelope with a data key already unwrapped.
pub(crate) fn open_with(
    backend: Backend,
    data_key: &DataKey,
    envelope: &Envelope<'_>,
    aad: &[u8],
) -> Result<Vec<u8>, Error> {
    let keys = commit::derive(
        data_key,
        envelope.message_id(),
        SUITE_AES256GCM_HKDF_SHA256_COMMIT,
    );
    // The commitment first: a ciphertext opens under exactly one data key.
    if !commit::matches(envelope.commitment(), &keys.commitment) {
        return Err(Error::DecryptionFailed);
    }
    decrypt_payload(backend, &keys, envelope, aad)
}

/// Decrypts the payload with message keys whose commitment has been checked.
pub(crate) fn decrypt_payload(
    backend: Backend,
    keys: &commit::MessageKeys,
    envelope: &Envelope<'_>,
    aad: &[u8],
) -> Result<Vec<u8>, Error> {
    let (ciphertext, tag) = envelope
        .payload()
        .split_last_chunk::<TAG_LEN>()
        .ok_or(Error::DecryptionFailed)?;
    // Opened in place in the one buffer the caller gets; on failure the backend zeroes it.
    let mut plaintext = ciphertext.to_vec();
    with_aad(envelope.header(), aad, |aad| {
        backend.open_in_place(
            &keys.content_key,
            envelope.nonce(),
            aad,
            &mut plaintext,
            tag,
        )
    })
    .map_err(|_| Error::DecryptionFailed)?;
    Ok(plaintext)
}

/// Runs `f` with the AEAD's associated data: the header, then the caller's own bytes. The
/// header is self-delimiting, so the concatenation is unambiguous.
fn with_aad<T>(header: &[u8], aad: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    if aad.is_empty() {
        f(header)
    } else {
        let mut joined = Vec::with_capacity(header.len() + aad.len());
        joined.extend_from_slice(header);
        joined.extend_from_slice(aad);
        f(&joined)
    }
}

/// A decrypted value and what it was sealed with.
pub struct Opened {
    context: KeyContext,
    key_ref: KeyRef,
    plaintext: Vec<u8>,
}

impl Opened {
    /// The key context the value was sealed under (authenticated).
    pub fn context(&self) -> &KeyContext {
        &self.context
    }

    /// The key that unwrapped the data key.
    pub fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    /// The plaintext.
    pub fn plaintext(&self) -> &[u8] {
        &self.plaintext
    }

    /// The plaintext. It is the caller's data: wrap it in `zeroize::Zeroizing` to wipe it on
    /// drop (which costs a pass over the memory; we do not impose it).
    pub fn into_plaintext(self) -> Vec<u8> {
        self.plaintext
    }
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("context", &self.context)
            .field("key_ref", &self.key_ref)
            .field(
                "plaintext",
                &format_args!("[REDACTED; {} bytes]", self.plaintext.len()),
            )
            .finish()
    }
}

/// A sealed envelope (binary form) and the key that wrapped its data key: what the caller
/// stores, and what it records as the key of the value, with no need to parse the bytes again.
///
/// It dereferences to the envelope's bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    bytes: Vec<u8>,
    key_ref: KeyRef,
}

impl Sealed {
    fn new(bytes: Vec<u8>, wrapped: &WrappedKey) -> Self {
        Self {
            bytes,
            key_ref: wrapped.key_ref().clone(),
        }
    }

    /// The envelope's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key that wrapped the data key (the envelope's one wrapped key).
    pub fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    /// The envelope's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl std::ops::Deref for Sealed {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for Sealed {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_ref", &self.key_ref)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// What [`rewrap`] did to an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrapped {
    /// Every wrapped key is what the provider would wrap with now: nothing to do.
    AlreadyCurrent,
    /// The data key, wrapped under the key the provider chooses now, in an envelope with the
    /// same header and ciphertext.
    Moved(Sealed),
}

/// Seals `plaintext` for `context`: a fresh data key from `provider`, wrapped for the context,
/// and the value encrypted under it. `aad` is extra associated data that is authenticated but
/// not stored; [`open`] must be given the same bytes.
///
/// # Errors
/// [`Error::Provider`] if the provider fails, [`Error::PlaintextTooLarge`], [`Error::Random`].
pub async fn seal(
    provider: &dyn KeyProvider,
    context: &KeyContext,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Sealed, Error> {
    seal_in(provider, "", context, plaintext, aad).await
}

/// As [`seal`], for one of several tenants sharing `provider` (an environment): a caching
/// provider reuses a data key only within one scope, so no data key ever seals the values of
/// two scopes.
///
/// # Errors
/// As [`seal`].
pub async fn seal_in(
    provider: &dyn KeyProvider,
    scope: &str,
    context: &KeyContext,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Sealed, Error> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(Error::PlaintextTooLarge {
            max: MAX_PLAINTEXT_LEN,
        });
    }
    let (data_key, wrapped) = provider
        .data_key_for_seal(context, scope, plaintext.len() as u64)
        .await?;
    let random = MessageRandom::generate()?;
    let bytes = seal_with(
        Backend::DEFAULT,
        &data_key,
        std::slice::from_ref(&wrapped),
        context,
        plaintext,
        aad,
        &random,
    )?;
    Ok(Sealed::new(bytes, &wrapped))
}

/// Opens an envelope (binary form) through `provider`, usually a [`Router`](crate::Router).
///
/// Each wrapped key the provider owns is tried in order until one unwraps to the committed data
/// key.
///
/// # Errors
/// [`Error::Envelope`] for a malformed envelope; [`Error::NoProvider`] if the provider owns none
/// of its wrapped keys; a retryable or policy [`Error::Provider`] error (unavailable, throttled,
/// disabled, ...) if that is what stopped every attempt; otherwise [`Error::DecryptionFailed`].
pub async fn open(
    provider: &dyn KeyProvider,
    envelope: &[u8],
    aad: &[u8],
) -> Result<Opened, Error> {
    Envelope::parse(envelope)?.open(provider, aad).await
}

/// Opens an envelope that must have been sealed for `expected`: [`open`] with the check every
/// caller who knows the context needs, made before any key is asked for. Whoever can store an
/// envelope where one is expected (a database writer, a tenant) can build one for a context of
/// their own with a data key of their own (one the data-key API issued them, say): it opens,
/// under its own context. Use this wherever the context is known, above all for the vault's
/// reserved contexts.
///
/// # Errors
/// [`Error::ContextMismatch`] if the envelope carries another context; otherwise as [`open`].
pub async fn open_for(
    provider: &dyn KeyProvider,
    envelope: &[u8],
    expected: &KeyContext,
    aad: &[u8],
) -> Result<Opened, Error> {
    Envelope::parse(envelope)?
        .open_for(provider, expected, aad)
        .await
}

/// Moves an envelope's data key to the key `provider` now chooses for its context (the primary
/// version after a rotation, or another provider after a routing change), without touching the
/// ciphertext, unless its one wrapped key already is [current](KeyProvider::is_current) (judged
/// by its key reference alone: [`Envelope::wrap_again`] always unwraps). The data key is
/// unwrapped and checked against the commitment first, so a substituted wrapped key is never
/// carried forward.
///
/// # Errors
/// As [`open`], plus provider errors from [`KeyProvider::is_current`] and the new wrap.
pub async fn rewrap(provider: &dyn KeyProvider, envelope: &[u8]) -> Result<Rewrapped, Error> {
    Envelope::parse(envelope)?.rewrap(provider).await
}

/// [`rewrap`] for an envelope that must have been sealed for `expected`, checked first as
/// [`open_for`] does: a stored envelope whose header names another context (a reserved one, say,
/// planted by whoever can write the store) is never unwrapped and wrapped again under it.
///
/// # Errors
/// [`Error::ContextMismatch`]; otherwise as [`rewrap`].
pub async fn rewrap_for(
    provider: &dyn KeyProvider,
    envelope: &[u8],
    expected: &KeyContext,
) -> Result<Rewrapped, Error> {
    let env = Envelope::parse(envelope)?;
    if env.context() != expected {
        return Err(Error::ContextMismatch);
    }
    env.rewrap(provider).await
}

impl Envelope<'_> {
    /// [`open`] for an envelope already parsed (a caller that checked the input first).
    ///
    /// # Errors
    /// As [`open`].
    pub async fn open(&self, provider: &dyn KeyProvider, aad: &[u8]) -> Result<Opened, Error> {
        let (_, keys, key_ref) = unwrap_committed(provider, self, Attempts::Retry).await?;
        let plaintext = decrypt_payload(Backend::DEFAULT, &keys, self, aad)?;
        Ok(Opened {
            context: self.context().clone(),
            key_ref,
            plaintext,
        })
    }

    /// [`open_for`] for an envelope already parsed.
    ///
    /// # Errors
    /// As [`open_for`].
    pub async fn open_for(
        &self,
        provider: &dyn KeyProvider,
        expected: &KeyContext,
        aad: &[u8],
    ) -> Result<Opened, Error> {
        if self.context() != expected {
            return Err(Error::ContextMismatch);
        }
        self.open(provider, aad).await
    }

    /// [`rewrap`] for an envelope already parsed.
    ///
    /// # Errors
    /// As [`rewrap`].
    pub async fn rewrap(&self, provider: &dyn KeyProvider) -> Result<Rewrapped, Error> {
        // Current means one wrapped key, the one the provider would make now; anything else
        // (extra wrapped keys included) is rewrapped to exactly that one.
        if let [only] = self.wrapped_keys()
            && provider.is_current(only.key_ref(), self.context()).await?
        {
            return Ok(Rewrapped::AlreadyCurrent);
        }
        self.wrap_again(provider).await.map(Rewrapped::Moved)
    }

    /// The envelope with its data key unwrapped, checked against the commitment and wrapped
    /// again by the key `provider` chooses now, whether or not it already was: what a caller
    /// wants when it must hand on an envelope it has verified (the CLI's `vault keys rewrap`
    /// on one envelope). The header and ciphertext are kept.
    ///
    /// # Errors
    /// As [`rewrap`].
    pub async fn wrap_again(&self, provider: &dyn KeyProvider) -> Result<Sealed, Error> {
        let (data_key, _, _) = unwrap_committed(provider, self, Attempts::Retry).await?;
        let wrapped = provider.wrap(&data_key, self.context()).await?;
        let bytes = self.with_wrapped_keys(vec![wrapped.clone()])?;
        Ok(Sealed::new(bytes, &wrapped))
    }
}

/// Finds a wrapped key the provider owns that unwraps to the data key the envelope commits to,
/// making at most as many calls per wrapped key as `attempts` allows.
pub(crate) async fn unwrap_committed(
    provider: &dyn KeyProvider,
    env: &Envelope<'_>,
    attempts: Attempts,
) -> Result<(DataKey, commit::MessageKeys, KeyRef), Error> {
    let mut last_error = None;
    let mut owned = 0usize;
    for wrapped in env.wrapped_keys() {
        if !provider.owns(wrapped.key_ref()) {
            continue;
        }
        owned += 1;
        let unwrapped = provider
            .unwrap_owned(wrapped, env.context(), attempts)
            .await;
        match unwrapped {
            Ok(key) => {
                let keys =
                    commit::derive(&key, env.message_id(), SUITE_AES256GCM_HKDF_SHA256_COMMIT);
                if commit::matches(env.commitment(), &keys.commitment) {
                    return Ok((key, keys, wrapped.key_ref().clone()));
                }
                last_error.get_or_insert(Error::DecryptionFailed);
            }
            Err(e) if e.kind() == ProviderErrorKind::InvalidCiphertext => {
                last_error.get_or_insert(Error::DecryptionFailed);
            }
            // An outage or a policy refusal says more than "decryption failed": keep it.
            Err(e) => last_error = Some(Error::Provider(e)),
        }
    }
    if owned == 0 {
        let key_ref = env
            .wrapped_keys()
            .first()
            .map(|k| k.key_ref().to_string())
            .unwrap_or_default();
        return Err(Error::NoProvider { key_ref });
    }
    Err(last_error.unwrap_or(Error::DecryptionFailed))
}
