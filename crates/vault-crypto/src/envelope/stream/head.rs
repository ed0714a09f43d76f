//! Reading a streamed envelope's head (its header and wrapped keys) from a byte stream without
//! reading past it: [`head_needs`] walks the length prefixes of what has been read so far and
//! says how many bytes must follow, so a synchronous and an asynchronous reader share one walk.
//! The head is then parsed with every check of [`Envelope::parse_head`].

// A walker over outside bytes: no index or arithmetic that can panic or wrap.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::io::{self, Read};

use tokio::io::AsyncRead;

use super::{io_error, read_exact_async};
use crate::envelope::MAX_WRAPPED_KEYS;
use crate::envelope::format::{FIXED_HEADER_LEN, MAGIC, VERSION};
use crate::envelope::segment::NONCE_PREFIX_LEN;
use crate::envelope::suite::SUITE_AES256GCM_SEGMENTED_COMMIT;
use crate::error::{EnvelopeError, Error};

/// Bytes from the commitment to the end of a streamed header: the commitment, the segment size
/// and the nonce prefix.
const HEADER_TAIL: usize = 32 + 4 + NONCE_PREFIX_LEN;

/// How many more bytes the head whose first bytes are `read` needs (`None`: `read` is a whole
/// head). Checks what it walks over (magic, version, suite, wrapped-key count) as it goes, so
/// that no stream that is not a streamed envelope is read far.
pub(crate) fn head_needs(read: &[u8]) -> Result<Option<usize>, EnvelopeError> {
    let mut walk = Walk {
        read,
        at: 0,
        short: None,
    };
    let Some(fixed) = walk.field(FIXED_HEADER_LEN) else {
        return Ok(walk.short);
    };
    let (magic, rest) = fixed.split_at_checked(4).ok_or(EnvelopeError::Truncated)?;
    if magic != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    let (version, rest) = rest.split_first().ok_or(EnvelopeError::Truncated)?;
    if *version != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(*version));
    }
    let (suite, rest) = rest
        .split_first_chunk::<2>()
        .ok_or(EnvelopeError::Truncated)?;
    if u16::from_be_bytes(*suite) != SUITE_AES256GCM_SEGMENTED_COMMIT {
        return Err(EnvelopeError::Malformed {
            reason: "not a streamed envelope (suite 4): open it whole",
        });
    }
    let (_, context_len) = rest
        .split_last_chunk::<2>()
        .ok_or(EnvelopeError::Truncated)?;
    let context_len = usize::from(u16::from_be_bytes(*context_len));
    if walk
        .field(context_len.saturating_add(HEADER_TAIL))
        .is_none()
    {
        return Ok(walk.short);
    }
    let Some(count) = walk.u8() else {
        return Ok(walk.short);
    };
    if count == 0 || usize::from(count) > MAX_WRAPPED_KEYS {
        // Parsing says which.
        return Ok(None);
    }
    for _ in 0..count {
        // scheme (u8 length), key id (u16), version (u8), wrapped (u16).
        for wide in [false, true, false, true] {
            let len = if wide {
                walk.u16()
            } else {
                walk.u8().map(usize::from)
            };
            let Some(len) = len else {
                return Ok(walk.short);
            };
            if walk.field(len).is_none() {
                return Ok(walk.short);
            }
        }
    }
    Ok(None)
}

/// A cursor that records how much is missing when a field runs past what was read.
struct Walk<'a> {
    read: &'a [u8],
    at: usize,
    short: Option<usize>,
}

impl<'a> Walk<'a> {
    fn field(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.saturating_add(len);
        match self.read.get(self.at..end) {
            Some(field) => {
                self.at = end;
                Some(field)
            }
            None => {
                self.short = Some(end.saturating_sub(self.read.len()));
                None
            }
        }
    }

    fn u8(&mut self) -> Option<u8> {
        self.field(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<usize> {
        let b = self.field(2)?;
        Some(usize::from(u16::from_be_bytes(b.try_into().ok()?)))
    }
}

/// Reads a head from `r`, exactly: the next byte `r` gives is the first segment's.
pub(crate) fn read_head<R: Read + ?Sized>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    while let Some(more) = head_needs(&head).map_err(|e| io_error(e.into()))? {
        let start = head.len();
        head.resize(start.saturating_add(more), 0);
        let into = head.get_mut(start..).unwrap_or_default();
        r.read_exact(into).map_err(truncated)?;
    }
    Ok(head)
}

/// [`read_head`] from an asynchronous reader.
pub(crate) async fn read_head_async<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    while let Some(more) = head_needs(&head).map_err(|e| io_error(e.into()))? {
        let start = head.len();
        head.resize(start.saturating_add(more), 0);
        let into = head.get_mut(start..).unwrap_or_default();
        read_exact_async(r, into).await.map_err(truncated)?;
    }
    Ok(head)
}

/// An end of input inside the head is a truncated envelope.
fn truncated(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io_error(Error::Envelope(EnvelopeError::Truncated))
    } else {
        e
    }
}
