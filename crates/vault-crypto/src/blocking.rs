//! Sealing and opening from code that is not async, with no runtime at all.
//!
//! Each function runs on the calling thread: straight through when the provider has its keys at
//! hand ([`KeyProvider::data_key_now`], [`KeyProvider::unwrap_owned_now`]: the managed provider
//! between two checks of its ring), otherwise by running its async counterpart to completion.
//! Only a [local](KeyProvider::is_local) provider is accepted (the managed provider over a file
//! or in memory; a cache or router over such providers): one that calls a key service needs an
//! async runtime, and is refused with [`Error::NeedsRuntime`] before anything is done.
//!
//! They block the calling thread: from async code, use the async functions instead (on a
//! runtime's thread a blocking call holds up every task scheduled there).
//!
//! ```
//! use vault_crypto::{Aad, KeyContext, ManagedKeyProvider, blocking};
//!
//! let keys = ManagedKeyProvider::in_memory("root")?;
//! let ctx = KeyContext::parse_json(br#"{"organization_id":"org_1"}"#)?;
//! let sealed = blocking::seal(&keys, &ctx, b"4111 1111 1111 1111", Aad::NONE)?;
//! let opened = blocking::open(&keys, &sealed, &ctx, Aad::NONE)?;
//! assert_eq!(opened.plaintext(), b"4111 1111 1111 1111");
//! # Ok::<(), vault_crypto::Error>(())
//! ```

use crate::context::KeyContext;
use crate::envelope::{Aad, Opened, Rewrapped, Sealed};
use crate::error::Error;
use crate::park::run;
use crate::provider::KeyProvider;
use crate::provider::managed::ManagedKeyProvider;

/// [`seal`](crate::seal), on the calling thread.
///
/// # Errors
/// [`Error::NeedsRuntime`] for a provider that is not local; otherwise as [`seal`](crate::seal).
pub fn seal(
    provider: &dyn KeyProvider,
    context: &KeyContext,
    plaintext: &[u8],
    aad: Aad<'_>,
) -> Result<Sealed, Error> {
    local(provider)?;
    if let Some(sealed) = crate::envelope::seal_now(provider, "", context, plaintext, aad) {
        return sealed;
    }
    run(crate::envelope::seal_awaited(
        provider, "", context, plaintext, aad,
    ))
}

/// [`open`](crate::open), on the calling thread: the envelope must have been sealed for
/// `expected`.
///
/// # Errors
/// [`Error::NeedsRuntime`] for a provider that is not local; otherwise as [`open`](crate::open).
pub fn open(
    provider: &dyn KeyProvider,
    envelope: &[u8],
    expected: &KeyContext,
    aad: Aad<'_>,
) -> Result<Opened, Error> {
    local(provider)?;
    crate::envelope::open_blocking(provider, envelope, expected, aad)
}

/// [`open_in_place`](crate::open_in_place) on the calling thread: the envelope's own buffer
/// becomes the plaintext's.
///
/// # Errors
/// As [`open`].
pub fn open_in_place(
    provider: &dyn KeyProvider,
    envelope: Vec<u8>,
    expected: &KeyContext,
    aad: Aad<'_>,
) -> Result<Opened, Error> {
    local(provider)?;
    crate::envelope::open_in_place_blocking(provider, envelope, expected, aad)
}

/// [`rewrap`](crate::rewrap), on the calling thread.
///
/// # Errors
/// [`Error::NeedsRuntime`] for a provider that is not local; otherwise as
/// [`rewrap`](crate::rewrap).
pub fn rewrap(
    provider: &dyn KeyProvider,
    envelope: &[u8],
    expected: &KeyContext,
) -> Result<Rewrapped, Error> {
    local(provider)?;
    run(crate::rewrap(provider, envelope, expected))
}

/// [`ManagedKeyProvider::rotate`], on the calling thread: the new primary version.
///
/// # Errors
/// [`Error::NeedsRuntime`] for a ring kept anywhere but a file or memory; otherwise as
/// [`ManagedKeyProvider::rotate`].
pub fn rotate(provider: &ManagedKeyProvider) -> Result<u32, Error> {
    local(provider)?;
    Ok(run(provider.rotate())?)
}

fn local(provider: &dyn KeyProvider) -> Result<(), Error> {
    if provider.is_local() {
        Ok(())
    } else {
        Err(Error::NeedsRuntime)
    }
}
