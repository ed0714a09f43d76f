//! Opening an envelope the caller owns in its own buffer: the plaintext is decrypted into the
//! envelope's bytes and handed back in them, so a value is never copied on the way out (with
//! ring, the decryption and the move to the front of the buffer are one pass).

use super::format::Framing;
use super::{Envelope, commit, parse_for, unwrap_committed, unwrap_committed_blocking};
use crate::aead::{Backend, NONCE_LEN, TAG_LEN};
use crate::context::KeyContext;
use crate::envelope::{Aad, Opened};
use crate::error::Error;
use crate::provider::{Attempts, KeyProvider, KeyRef};

/// [`open`](crate::open) for an envelope the caller owns: decrypted in place, the buffer
/// becomes the plaintext's. The same checks, in the same order, with the same errors; what
/// a large value saves is its copy.
///
/// # Errors
/// As [`open`](crate::open).
pub async fn open_in_place(
    provider: &dyn KeyProvider,
    envelope: Vec<u8>,
    expected: &KeyContext,
    aad: Aad<'_>,
) -> Result<Opened, Error> {
    let (keys, key_ref, layout) = {
        let env = parse_for(&envelope, expected)?;
        let (_, keys, key_ref) = unwrap_committed(provider, &env, Attempts::Retry).await?;
        match Layout::of(&env, envelope.len()) {
            Some(layout) => (keys, key_ref, layout),
            None => return env.opened(&keys, key_ref, aad),
        }
    };
    layout.open(&keys, key_ref, expected, envelope, aad)
}

/// [`open_in_place`] on the calling thread (for [`crate::blocking`]).
pub(crate) fn open_in_place_blocking(
    provider: &dyn KeyProvider,
    envelope: Vec<u8>,
    expected: &KeyContext,
    aad: Aad<'_>,
) -> Result<Opened, Error> {
    let (keys, key_ref, layout) = {
        let env = parse_for(&envelope, expected)?;
        let (_, keys, key_ref) = unwrap_committed_blocking(provider, &env)?;
        match Layout::of(&env, envelope.len()) {
            Some(layout) => (keys, key_ref, layout),
            None => return env.opened(&keys, key_ref, aad),
        }
    };
    layout.open(&keys, key_ref, expected, envelope, aad)
}

/// Where a parsed envelope's parts lie in its bytes, kept once the parse's borrow ends.
struct Layout {
    header_len: usize,
    payload_start: usize,
    nonce: [u8; NONCE_LEN],
}

impl Layout {
    /// `None` for a streamed envelope: its segments are opened one by one, not in place.
    fn of(env: &Envelope<'_>, total: usize) -> Option<Self> {
        let Framing::Whole { nonce } = env.framing() else {
            return None;
        };
        Some(Self {
            header_len: env.header().len(),
            // The payload is the envelope's last field: what is left after it is its start.
            payload_start: total.saturating_sub(env.payload().len()),
            nonce,
        })
    }

    /// Decrypts the payload under keys whose commitment was checked, in `buf`'s own bytes.
    fn open(
        &self,
        keys: &commit::MessageKeys,
        key_ref: KeyRef,
        context: &KeyContext,
        mut buf: Vec<u8>,
        aad: Aad<'_>,
    ) -> Result<Opened, Error> {
        let tag_start = buf
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&t| t >= self.payload_start)
            .ok_or(Error::DecryptionFailed)?;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(buf.get(tag_start..).ok_or(Error::DecryptionFailed)?);
        buf.truncate(tag_start);
        // The associated data is the header then the caller's bytes; the header is copied out
        // first, as the plaintext overwrites it. Headers are small: on the stack when they fit.
        let (header, caller) = (buf.get(..self.header_len), aad.bytes());
        let header = header.ok_or(Error::DecryptionFailed)?;
        let mut stack = [0u8; 512];
        let mut heap = Vec::new();
        let joined_len = header.len() + caller.len();
        let joined: &mut [u8] = if joined_len <= stack.len() {
            &mut stack[..joined_len]
        } else {
            heap.resize(joined_len, 0);
            &mut heap
        };
        let (h, c) = joined.split_at_mut(header.len());
        h.copy_from_slice(header);
        c.copy_from_slice(caller);
        Backend::DEFAULT
            .open_shifted(
                &keys.content_key,
                &self.nonce,
                joined,
                &mut buf,
                self.payload_start,
                &tag,
            )
            .map_err(|_| Error::DecryptionFailed)?;
        buf.truncate(tag_start - self.payload_start);
        Ok(Opened {
            context: context.clone(),
            key_ref,
            plaintext: buf,
        })
    }
}
