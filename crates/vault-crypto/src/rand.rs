//! The only source of randomness: the operating system's CSPRNG.
//!
//! Every random byte this crate uses (data keys, message ids, nonces, root keys) comes from
//! `getrandom(2)`, never from a userspace generator: no reseeding or fork-safety questions.
//! Callers draw all the random bytes of one operation in a single call, which costs the same as
//! drawing 32 (see `docs/DESIGN.md`).

use crate::error::Error;

/// Fills `dest` from the operating system's CSPRNG.
pub(crate) fn fill(dest: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(dest).map_err(|_| Error::Random)
}
