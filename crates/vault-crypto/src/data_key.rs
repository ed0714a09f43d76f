//! Data keys: the per-object 256-bit keys that seal values.

use std::fmt;

use zeroize::Zeroizing;

use crate::error::Error;

/// Length of a data key in bytes.
pub const DATA_KEY_LEN: usize = 32;

/// A 256-bit data key (DEK).
///
/// Drawn from the operating system's CSPRNG, wiped from memory when dropped, never `Clone`,
/// never serialisable, and redacted in `Debug`. The bytes are reachable only through
/// [`expose_secret`](Self::expose_secret), so every use is easy to find.
pub struct DataKey(Zeroizing<[u8; DATA_KEY_LEN]>);

impl DataKey {
    /// A fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`Error::Random`] if the operating system cannot supply random bytes.
    pub fn generate() -> Result<Self, Error> {
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        crate::random::fill(key.as_mut())?;
        Ok(Self(key))
    }

    /// The key bytes. Keep the borrow short and never log or store them in the clear.
    pub fn expose_secret(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }

    /// The data key a key service unwrapped (or generated), for a
    /// [provider](crate::KeyProvider) to return. The bytes must be the key service's answer, not
    /// a value of the caller's choosing.
    pub fn from_unwrapped(bytes: Zeroizing<[u8; DATA_KEY_LEN]>) -> Self {
        Self(bytes)
    }

    /// As [`from_unwrapped`](Self::from_unwrapped), from a key service's answer as an SDK
    /// returns it: `None` unless it holds exactly [`DATA_KEY_LEN`] bytes. The answer is wiped
    /// here whatever its length, and its bytes are copied straight into the key's own wiped
    /// storage, so no other copy is left behind.
    pub fn from_answer(answer: Vec<u8>) -> Option<Self> {
        let answer = Zeroizing::new(answer);
        if answer.len() != DATA_KEY_LEN {
            return None;
        }
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        key.copy_from_slice(&answer);
        Some(Self(key))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}
