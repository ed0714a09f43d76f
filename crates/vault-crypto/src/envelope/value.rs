//! What the envelope functions take and give: associated data, a sealed envelope, an opened
//! value, a rewrap's outcome.

use std::fmt;

use crate::context::KeyContext;
use crate::provider::{KeyRef, WrappedKey};

/// Associated data: bytes a value is bound to but that its envelope does not store (an object's
/// id, a row's primary key, a file name). Opening must be given the same bytes, or it fails.
/// Not secret.
///
/// Its own type so that it cannot be swapped with the plaintext beside it:
/// `seal(&keys, &ctx, b"value", Aad::new(b"users/42"))`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Aad<'a>(&'a [u8]);

impl<'a> Aad<'a> {
    /// No associated data.
    pub const NONE: Aad<'static> = Aad(&[]);

    /// Associated data of `bytes`.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub const fn bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// A decrypted value and what it was sealed with.
pub struct Opened {
    pub(super) context: KeyContext,
    pub(super) key_ref: KeyRef,
    pub(super) plaintext: Vec<u8>,
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
    pub(super) fn new(bytes: Vec<u8>, wrapped: &WrappedKey) -> Self {
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

/// What [`rewrap`](crate::rewrap) did to an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrapped {
    /// Every wrapped key is what the provider would wrap with now: nothing to do.
    AlreadyCurrent,
    /// The data key, wrapped under the key the provider chooses now, in an envelope with the
    /// same header and ciphertext.
    Moved(Sealed),
}
