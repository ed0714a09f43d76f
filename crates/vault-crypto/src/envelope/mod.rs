//! Sealing and opening values in envelopes.
//!
//! [`seal`] asks a provider for a fresh data key wrapped for the context, derives a per-message
//! content key and key commitment from it, and encrypts the value with AES-256-GCM under the
//! authenticated header. [`open`] reverses it: parse, unwrap through the provider named by the
//! wrapped key, check the commitment in constant time, then decrypt.

pub(crate) mod commit;
pub(crate) mod format;
mod in_place;
mod message;
pub(crate) mod segment;
pub mod stream;
pub(crate) mod suite;
mod unwrap;
mod value;

use crate::aead::{Backend, TAG_LEN};
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::error::Error;
use crate::provider::{Attempts, KeyProvider, KeyRef, WrappedKey};
use crate::random::SealRandom;

pub(crate) use unwrap::{unwrap_committed, unwrap_committed_blocking};

pub use commit::{COMMITMENT_LEN, MESSAGE_ID_LEN};
pub use format::{
    Envelope, MAGIC, MAX_PLAINTEXT_LEN, MAX_TEXT_LEN, MAX_WRAPPED_KEYS, VERSION, encode_text,
};
pub use in_place::open_in_place;
pub(crate) use in_place::open_in_place_blocking;
pub(crate) use message::MessageRandom;
use suite::Suite;
pub use suite::{SUITE_AES256GCM_AESKDF_SHA256_COMMIT, SUITE_AES256GCM_HKDF_SHA256_COMMIT};
pub use value::{Aad, Opened, Rewrapped, Sealed};

/// Seals `plaintext` under `data_key` with everything explicit. The one place an envelope is
/// built; every public sealing path ends here.
#[allow(clippy::too_many_arguments)] // Every parameter is one of the format's inputs.
pub(crate) fn seal_with(
    backend: Backend,
    suite: Suite,
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
    let keys = suite.derive(data_key, &random.message_id);

    let framing = format::Framing::Whole {
        nonce: random.nonce,
    };
    let header_len = format::header_len(context, &framing);
    let body_start = header_len + format::wrapped_keys_len(wrapped_keys);
    // The output, sized exactly (a non-empty `aad` adds one joined buffer below).
    let mut out = Vec::with_capacity(body_start + plaintext.len() + TAG_LEN);
    format::write_header(
        &mut out,
        suite,
        &random.message_id,
        context,
        &keys.commitment,
        &framing,
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
    let keys = message_keys(data_key, envelope);
    // The commitment first: a ciphertext opens under exactly one data key.
    if !commit::matches(envelope.commitment(), &keys.commitment) {
        return Err(Error::DecryptionFailed);
    }
    decrypt_payload(backend, &keys, envelope, aad)
}

/// The content key and commitment `data_key` gives for `envelope`, by the envelope's suite.
pub(crate) fn message_keys(data_key: &DataKey, envelope: &Envelope<'_>) -> commit::MessageKeys {
    envelope
        .suite_kind()
        .derive(data_key, envelope.message_id())
}

/// Decrypts the payload with message keys whose commitment has been checked.
pub(crate) fn decrypt_payload(
    backend: Backend,
    keys: &commit::MessageKeys,
    envelope: &Envelope<'_>,
    aad: &[u8],
) -> Result<Vec<u8>, Error> {
    let nonce = match envelope.framing() {
        format::Framing::Whole { nonce } => nonce,
        format::Framing::Segments { size, prefix } => {
            let segments =
                segment::Segments::new(backend, keys, prefix, envelope.header(), aad, size)?;
            return segment::open_all(&segments, envelope.payload());
        }
    };
    let (ciphertext, tag) = envelope
        .payload()
        .split_last_chunk::<TAG_LEN>()
        .ok_or(Error::DecryptionFailed)?;
    // Opened in place in the one buffer the caller gets; on failure the backend zeroes it.
    let mut plaintext = ciphertext.to_vec();
    with_aad(envelope.header(), aad, |aad| {
        backend.open_in_place(&keys.content_key, &nonce, aad, &mut plaintext, tag)
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

/// Seals `plaintext` for `context`: a fresh data key from `provider`, wrapped for the context,
/// and the value encrypted under it. `aad` is bound to the value but not stored; opening must
/// be given the same bytes.
///
/// # Errors
/// [`Error::Context`] for a context that holds a reserved key and was not built by
/// [`KeyContext::reserved`] (one decoded from an envelope's header, say); [`Error::Provider`]
/// if the provider fails; [`Error::PlaintextTooLarge`]; [`Error::Random`].
pub async fn seal(
    provider: &dyn KeyProvider,
    context: &KeyContext,
    plaintext: &[u8],
    aad: Aad<'_>,
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
    aad: Aad<'_>,
) -> Result<Sealed, Error> {
    if let Some(sealed) = seal_now(provider, scope, context, plaintext, aad) {
        return sealed;
    }
    seal_awaited(provider, scope, context, plaintext, aad).await
}

/// [`seal_in`] through the provider's async method, for when [`seal_now`] answered `None` (a
/// ring check due, a provider without a fast path).
pub(crate) async fn seal_awaited(
    provider: &dyn KeyProvider,
    scope: &str,
    context: &KeyContext,
    plaintext: &[u8],
    aad: Aad<'_>,
) -> Result<Sealed, Error> {
    context.check_not_forged()?;
    let (data_key, wrapped) = provider
        .data_key_for_seal(context, scope, plaintext.len() as u64)
        .await?;
    let random = MessageRandom::generate()?;
    seal_keyed(&data_key, &wrapped, context, plaintext, aad, &random)
}

/// [`seal_in`] on the calling thread, if the provider has a data key at hand
/// ([`KeyProvider::data_key_now`]); `None` if it must be awaited.
pub(crate) fn seal_now(
    provider: &dyn KeyProvider,
    scope: &str,
    context: &KeyContext,
    plaintext: &[u8],
    aad: Aad<'_>,
) -> Option<Result<Sealed, Error>> {
    if let Err(e) = context.check_not_forged() {
        return Some(Err(e.into()));
    }
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Some(Err(Error::PlaintextTooLarge {
            max: MAX_PLAINTEXT_LEN,
        }));
    }
    // One kernel draw for the data key, its wrap nonce, the message id and the nonce.
    let (fresh, random) = match SealRandom::draw() {
        Ok(r) => MessageRandom::with_fresh_key(&r),
        Err(e) => return Some(Err(e)),
    };
    let keyed = provider.data_key_now(context, scope, plaintext.len() as u64, fresh)?;
    Some(keyed.map_err(Error::from).and_then(|(data_key, wrapped)| {
        seal_keyed(&data_key, &wrapped, context, plaintext, aad, &random)
    }))
}

/// The seal once its data key is in hand.
fn seal_keyed(
    data_key: &DataKey,
    wrapped: &WrappedKey,
    context: &KeyContext,
    plaintext: &[u8],
    aad: Aad<'_>,
    random: &MessageRandom,
) -> Result<Sealed, Error> {
    let bytes = seal_with(
        Backend::DEFAULT,
        Suite::SEAL,
        data_key,
        std::slice::from_ref(wrapped),
        context,
        plaintext,
        aad.bytes(),
        random,
    )?;
    Ok(Sealed::new(bytes, wrapped))
}

/// Opens an envelope (binary form) that must have been sealed for `expected`, through
/// `provider` (usually a [`Router`](crate::Router)).
///
/// The context is compared before any key is asked for: an envelope sealed for another
/// context (another tenant's, one planted by whoever can write where envelopes are kept) is
/// refused with [`Error::ContextMismatch`] and costs no call to a key service. Each wrapped key
/// the provider owns is then tried in order until one unwraps to the committed data key.
///
/// # Errors
/// [`Error::Envelope`] for a malformed envelope; [`Error::ContextMismatch`]; [`Error::Context`]
/// if `expected` holds a reserved key but was read from bytes rather than built by
/// [`KeyContext::reserved`] (a row a database writer planted); [`Error::NoProvider`]
/// if the provider owns none of its wrapped keys; a retryable or policy [`Error::Provider`]
/// error (unavailable, throttled, disabled, ...) if that is what stopped every attempt;
/// otherwise [`Error::DecryptionFailed`].
pub async fn open(
    provider: &dyn KeyProvider,
    envelope: &[u8],
    expected: &KeyContext,
    aad: Aad<'_>,
) -> Result<Opened, Error> {
    parse_for(envelope, expected)?
        .open_checked(provider, aad)
        .await
}

/// [`open`] on the calling thread (for [`crate::blocking`]): without a future unless the
/// provider must wait for an unwrap.
pub(crate) fn open_blocking(
    provider: &dyn KeyProvider,
    envelope: &[u8],
    expected: &KeyContext,
    aad: Aad<'_>,
) -> Result<Opened, Error> {
    let env = parse_for(envelope, expected)?;
    let (_, keys, key_ref) = unwrap_committed_blocking(provider, &env)?;
    env.opened(&keys, key_ref, aad)
}

/// Parses an envelope that must have been sealed for `expected`, with the checks every open
/// makes before asking for a key: the context first, then that `expected` is not forged.
fn parse_for<'a>(envelope: &'a [u8], expected: &KeyContext) -> Result<Envelope<'a>, Error> {
    let env = Envelope::parse_expecting(envelope, expected)?;
    env.expect(expected)?;
    expected.check_not_forged()?;
    Ok(env)
}

/// Opens an envelope whatever context it was sealed for, and says which in
/// [`Opened::context`]: for a tool that shows what an envelope holds (`vault decrypt` of a
/// file), never for a service that knows whose value it is reading (use [`open`]). An envelope
/// whose context holds a reserved key (the vault's own) is refused.
///
/// # Errors
/// [`Error::Context`] for a reserved context; otherwise as [`open`].
pub async fn open_any_context(
    provider: &dyn KeyProvider,
    envelope: &[u8],
    aad: Aad<'_>,
) -> Result<Opened, Error> {
    Envelope::parse(envelope)?
        .open_any_context(provider, aad)
        .await
}

/// Moves an envelope sealed for `expected` to the key `provider` now chooses for that context
/// (the primary version after a rotation, or another provider after a routing change), without
/// touching the ciphertext, unless its one wrapped key already is
/// [current](KeyProvider::is_current) (judged by its key reference alone:
/// [`Envelope::wrap_again`] always unwraps). The data key is unwrapped and checked against the
/// commitment first, so a substituted wrapped key is never carried forward.
///
/// # Errors
/// [`Error::ContextMismatch`] before anything is unwrapped; [`Error::Context`] if `expected`
/// holds a reserved key and was not built by [`KeyContext::reserved`] (one read from a
/// header, say: a new wrap under it would be a forgery); otherwise as [`open`], plus provider
/// errors from [`KeyProvider::is_current`] and the new wrap.
pub async fn rewrap(
    provider: &dyn KeyProvider,
    envelope: &[u8],
    expected: &KeyContext,
) -> Result<Rewrapped, Error> {
    Envelope::parse(envelope)?.rewrap(provider, expected).await
}

/// [`rewrap`] whatever context the envelope was sealed for (a tool moving envelopes it does
/// not interpret); an envelope whose context holds a reserved key is refused.
///
/// # Errors
/// [`Error::Context`] for a reserved context; otherwise as [`rewrap`].
pub async fn rewrap_any_context(
    provider: &dyn KeyProvider,
    envelope: &[u8],
) -> Result<Rewrapped, Error> {
    Envelope::parse(envelope)?
        .rewrap_any_context(provider)
        .await
}

impl Envelope<'_> {
    /// [`open`] for an envelope already parsed.
    ///
    /// # Errors
    /// As [`open`].
    pub async fn open(
        &self,
        provider: &dyn KeyProvider,
        expected: &KeyContext,
        aad: Aad<'_>,
    ) -> Result<Opened, Error> {
        self.expect(expected)?;
        expected.check_not_forged()?;
        self.open_checked(provider, aad).await
    }

    /// [`open_any_context`] for an envelope already parsed.
    ///
    /// # Errors
    /// As [`open_any_context`].
    pub async fn open_any_context(
        &self,
        provider: &dyn KeyProvider,
        aad: Aad<'_>,
    ) -> Result<Opened, Error> {
        self.context().check_caller()?;
        self.open_checked(provider, aad).await
    }

    /// [`rewrap`] for an envelope already parsed.
    ///
    /// # Errors
    /// As [`rewrap`].
    pub async fn rewrap(
        &self,
        provider: &dyn KeyProvider,
        expected: &KeyContext,
    ) -> Result<Rewrapped, Error> {
        self.expect(expected)?;
        expected.check_not_forged()?;
        self.rewrap_checked(provider).await
    }

    /// [`rewrap_any_context`] for an envelope already parsed.
    ///
    /// # Errors
    /// As [`rewrap_any_context`].
    pub async fn rewrap_any_context(&self, provider: &dyn KeyProvider) -> Result<Rewrapped, Error> {
        self.context().check_caller()?;
        self.rewrap_checked(provider).await
    }

    /// The envelope, sealed for `expected`, with its data key unwrapped, checked against the
    /// commitment and wrapped again by the key `provider` chooses now, whether or not it
    /// already was: what a caller wants when it must hand on an envelope it has verified. The
    /// header and ciphertext are kept.
    ///
    /// # Errors
    /// As [`rewrap`].
    pub async fn wrap_again(
        &self,
        provider: &dyn KeyProvider,
        expected: &KeyContext,
    ) -> Result<Sealed, Error> {
        self.expect(expected)?;
        expected.check_not_forged()?;
        self.wrap_again_checked(provider).await
    }

    /// Refuses an envelope sealed for another context than `expected`.
    fn expect(&self, expected: &KeyContext) -> Result<(), Error> {
        if self.context() == expected {
            Ok(())
        } else {
            Err(Error::ContextMismatch)
        }
    }

    /// Opens an envelope whose context the caller accepted.
    async fn open_checked(
        &self,
        provider: &dyn KeyProvider,
        aad: Aad<'_>,
    ) -> Result<Opened, Error> {
        let (_, keys, key_ref) = unwrap_committed(provider, self, Attempts::Retry).await?;
        self.opened(&keys, key_ref, aad)
    }

    /// The plaintext under message keys whose commitment was checked.
    fn opened(
        &self,
        keys: &commit::MessageKeys,
        key_ref: KeyRef,
        aad: Aad<'_>,
    ) -> Result<Opened, Error> {
        let plaintext = decrypt_payload(Backend::DEFAULT, keys, self, aad.bytes())?;
        Ok(Opened {
            context: self.context().clone(),
            key_ref,
            plaintext,
        })
    }

    async fn rewrap_checked(&self, provider: &dyn KeyProvider) -> Result<Rewrapped, Error> {
        // Current means one wrapped key, the one the provider would make now; anything else
        // (extra wrapped keys included) is rewrapped to exactly that one.
        if let [only] = self.wrapped_keys()
            && provider.is_current(only.key_ref(), self.context()).await?
        {
            return Ok(Rewrapped::AlreadyCurrent);
        }
        self.wrap_again_checked(provider)
            .await
            .map(Rewrapped::Moved)
    }

    async fn wrap_again_checked(&self, provider: &dyn KeyProvider) -> Result<Sealed, Error> {
        let (data_key, _, _) = unwrap_committed(provider, self, Attempts::Retry).await?;
        let wrapped = provider.wrap(&data_key, self.context()).await?;
        let bytes = self.with_wrapped_keys(vec![wrapped.clone()])?;
        Ok(Sealed::new(bytes, &wrapped))
    }
}
