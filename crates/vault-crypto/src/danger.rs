//! Operations that can break the guarantees of this crate if misused.
//!
//! Each function states the duty it puts on the caller. They exist for test vectors, for
//! importing keys that were generated elsewhere, and for interoperability; application code
//! should not need them. Every use should be reviewed.

use zeroize::Zeroizing;

use crate::aead::Backend;
use crate::context::KeyContext;
use crate::data_key::{DATA_KEY_LEN, DataKey};
use crate::envelope::suite::Suite;
use crate::envelope::{self, Aad, Envelope, MESSAGE_ID_LEN, MessageRandom};
use crate::error::{EnvelopeError, Error, ProviderError};
use crate::provider::WrappedKey;
use crate::provider::managed::ManagedKeyProvider;

/// A data key from raw bytes. The caller must have drawn them from a CSPRNG and must not keep
/// another copy.
pub fn data_key_from_bytes(bytes: [u8; DATA_KEY_LEN]) -> DataKey {
    DataKey::from_unwrapped(Zeroizing::new(bytes))
}

/// An in-memory managed provider with the given root keys `(version, key)`. The caller is
/// responsible for the keys' secrecy and randomness; versions must be 1, 2, ... in order.
///
/// # Errors
/// [`Error::KeyRing`] if the versions or the primary are invalid.
pub fn managed_provider_from_root_keys(
    name: &str,
    keys: &[(u32, [u8; 32])],
    primary: u32,
) -> Result<ManagedKeyProvider, Error> {
    let keys = keys.iter().map(|&(v, k)| (v, Zeroizing::new(k))).collect();
    Ok(ManagedKeyProvider::from_root_keys(name, keys, primary)?)
}

/// Wraps `key` under the managed provider's primary version with a caller-chosen nonce. The
/// caller must never use the same nonce twice under the same root key version and context.
///
/// # Errors
/// A [`ProviderError`] if the ring has no usable primary version.
pub fn managed_wrap_with_nonce(
    provider: &ManagedKeyProvider,
    key: &DataKey,
    ctx: &KeyContext,
    nonce: [u8; 12],
) -> Result<WrappedKey, ProviderError> {
    provider.wrap_with_nonce(key.expose_secret(), ctx, nonce)
}

/// Seals with every random value chosen by the caller, in the given suite (1 or 3: FORMAT.md,
/// "Suites"; suite 4 is [`seal_stream_with_parameters`]). Reusing a `(data key, message id, nonce)` for two plaintexts destroys
/// confidentiality; use only to reproduce test vectors.
///
/// # Errors
/// [`EnvelopeError::UnsupportedSuite`] for another
/// suite; otherwise as [`crate::seal`].
#[allow(clippy::too_many_arguments)] // Every parameter is one of the format's inputs.
pub fn seal_with_parameters(
    suite: u16,
    backend: Backend,
    data_key: &DataKey,
    wrapped_keys: &[WrappedKey],
    context: &KeyContext,
    plaintext: &[u8],
    aad: Aad<'_>,
    message_id: [u8; MESSAGE_ID_LEN],
    nonce: [u8; 12],
) -> Result<Vec<u8>, Error> {
    let suite = Suite::from_id(suite)
        .filter(|s| *s != Suite::Segmented)
        .ok_or(EnvelopeError::UnsupportedSuite(suite))?;
    envelope::seal_with(
        backend,
        suite,
        data_key,
        wrapped_keys,
        context,
        plaintext,
        aad.bytes(),
        &MessageRandom { message_id, nonce },
    )
}

/// A streamed envelope (suite 4) of `plaintext` with every random value chosen by the caller:
/// the message id and the 7-byte nonce prefix. Reusing them under one data key destroys
/// confidentiality; use only to reproduce test vectors.
///
/// # Errors
/// [`Error::SegmentSize`]; [`Error::EncryptionFailed`].
#[allow(clippy::too_many_arguments)] // Every parameter is one of the format's inputs.
pub fn seal_stream_with_parameters(
    data_key: &DataKey,
    wrapped_key: &WrappedKey,
    context: &KeyContext,
    plaintext: &[u8],
    aad: Aad<'_>,
    segment_size: u32,
    message_id: [u8; MESSAGE_ID_LEN],
    nonce_prefix: [u8; 7],
) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; 12];
    nonce[..7].copy_from_slice(&nonce_prefix);
    let random = MessageRandom { message_id, nonce };
    let sealer =
        envelope::stream::begin(data_key, wrapped_key, context, aad, segment_size, &random)?;
    let mut writer = sealer.writer(Vec::with_capacity(plaintext.len() + 256));
    std::io::Write::write_all(&mut writer, plaintext).map_err(|_| Error::EncryptionFailed)?;
    writer.finish().map_err(|_| Error::EncryptionFailed)
}

/// Seals `plaintext` with a data key the caller already holds, together with wrapped keys the
/// caller vouches for: nothing checks that they wrap this data key (an envelope whose wrapped
/// keys are another key's opens for nobody), so use the data key and wrapped key(s) one
/// provider returned together. The message id and nonce are still drawn fresh, so reusing a
/// data key for several envelopes is safe (each gets its own content key).
///
/// # Errors
/// [`Error::Context`] for a reserved context the vault did not build, [`Error::Envelope`] for
/// zero or more than [`crate::MAX_WRAPPED_KEYS`] wrapped keys, [`Error::PlaintextTooLarge`],
/// [`Error::Random`].
pub fn seal_with_key(
    data_key: &DataKey,
    wrapped_keys: &[WrappedKey],
    context: &KeyContext,
    plaintext: &[u8],
    aad: Aad<'_>,
) -> Result<Vec<u8>, Error> {
    context.check_not_forged()?;
    let random = MessageRandom::generate()?;
    envelope::seal_with(
        Backend::DEFAULT,
        Suite::SEAL,
        data_key,
        wrapped_keys,
        context,
        plaintext,
        aad.bytes(),
        &random,
    )
}

/// Opens an envelope with a data key the caller already holds, bypassing every provider and
/// its policy (destroyed or disabled versions included).
///
/// # Errors
/// [`Error::Envelope`] or [`Error::DecryptionFailed`].
pub fn open_with_data_key(
    backend: Backend,
    data_key: &DataKey,
    envelope_bytes: &[u8],
    aad: Aad<'_>,
) -> Result<Vec<u8>, Error> {
    let env = Envelope::parse(envelope_bytes)?;
    envelope::open_with(backend, data_key, &env, aad.bytes())
}

/// The WorkOS SDK blob ([`crate::workos`]) with a caller-chosen IV, in binary form. Reusing an
/// IV under one data key destroys confidentiality; use only to reproduce test vectors.
///
/// # Errors
/// As [`crate::workos::encrypt`].
pub fn workos_encrypt_with_iv(
    layout: crate::workos::Layout,
    data_key: &DataKey,
    encrypted_keys: &[u8],
    plaintext: &[u8],
    aad: Aad<'_>,
    iv: &[u8],
) -> Result<Vec<u8>, Error> {
    crate::workos::encrypt_with_iv(layout, data_key, encrypted_keys, plaintext, aad.bytes(), iv)
}

/// The content key and key commitment of one message in `suite` (FORMAT.md, "Suites"),
/// exactly as a seal derives them: for benchmarks that measure the derivation alone, and for
/// checking other implementations. The content key is a secret.
///
/// # Errors
/// [`EnvelopeError::UnsupportedSuite`] for a suite
/// other than 1, 3 and 4.
pub fn message_keys(
    suite: u16,
    data_key: &DataKey,
    message_id: &[u8; MESSAGE_ID_LEN],
) -> Result<(Zeroizing<[u8; 32]>, [u8; crate::COMMITMENT_LEN]), EnvelopeError> {
    let suite = Suite::from_id(suite).ok_or(EnvelopeError::UnsupportedSuite(suite))?;
    let keys = suite.derive(data_key, message_id);
    Ok((keys.content_key, keys.commitment))
}
