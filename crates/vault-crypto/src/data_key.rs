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
        crate::rand::fill(key.as_mut())?;
        Ok(Self(key))
    }

    /// The key bytes. Keep the borrow short and never log or store them in the clear.
    pub fn expose_secret(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }

    /// Wraps raw key bytes. Only providers that unwrap keys, and [`crate::danger`], need this.
    pub(crate) fn from_bytes(bytes: Zeroizing<[u8; DATA_KEY_LEN]>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}
