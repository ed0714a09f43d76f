//! The envelope byte format, version 1. Specified in `docs/FORMAT.md`, section "Envelope".
//!
//! ```text
//! authenticated header (the AEAD's associated data)
//!   magic "VLTE" | version 0x01 | suite u16 (1, 3 or 4) | message id [32]
//!   | context length u16 | canonical context | commitment [32]
//!   | nonce [12]                                      (suites 1 and 3)
//!   | segment size u32 | nonce prefix [7]            (suite 4)
//! wrapped keys (authenticated by their own wrap, bound by the commitment)
//!   count u8 | count × (scheme len u8 | scheme | key id len u16 | key id
//!                       | version len u8 | version | wrapped len u16 | wrapped)
//! payload (to the end of the input)
//!   ciphertext || tag [16]                             (suites 1 and 3)
//!   segment_0 || ... || segment_n-1, each ciphertext || tag [16]   (suite 4)
//! ```

// A parser of outside bytes: no index or arithmetic that can panic or wrap.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::aead::{NONCE_LEN, TAG_LEN};
use crate::context::{KeyContext, MAX_CANONICAL_BYTES};
use crate::envelope::commit::{COMMITMENT_LEN, MESSAGE_ID_LEN};
use crate::envelope::segment::{self, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, NONCE_PREFIX_LEN};
use crate::envelope::suite::Suite;
use crate::error::EnvelopeError;
use crate::provider::{
    KeyRef, MAX_KEY_ID_LEN, MAX_KEY_VERSION_LEN, MAX_SCHEME_LEN, MAX_WRAPPED_LEN, WrappedKey,
};

/// The first four bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"VLTE";
/// The format version this library writes and reads.
pub const VERSION: u8 = 1;
/// The most wrapped keys one envelope may carry.
pub const MAX_WRAPPED_KEYS: usize = 8;
/// The largest plaintext one envelope may hold (1 GiB; far below GCM's 2^36 - 32 bytes).
pub const MAX_PLAINTEXT_LEN: usize = 1 << 30;
/// The largest text form accepted, in bytes of base64.
pub const MAX_TEXT_LEN: usize = (MAX_ENVELOPE_LEN / 3 + 1) * 4;

pub(crate) const FIXED_HEADER_LEN: usize = 4 + 1 + 2 + MESSAGE_ID_LEN + 2;
const MAX_ENVELOPE_LEN: usize = FIXED_HEADER_LEN
    + MAX_CANONICAL_BYTES
    + COMMITMENT_LEN
    + NONCE_LEN
    + 1
    + MAX_WRAPPED_KEYS
        * (1 + MAX_SCHEME_LEN + 2 + MAX_KEY_ID_LEN + 1 + MAX_KEY_VERSION_LEN + 2 + MAX_WRAPPED_LEN)
    + MAX_PLAINTEXT_LEN
    + TAG_LEN;

/// A parsed envelope. Borrows the payload from the input.
///
/// Parsing checks the whole public structure and every limit, and accepts only the canonical
/// encoding: `Envelope::parse(b)?.to_bytes() == b` for every `b` that parses.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The authenticated header, exactly as it appeared in the input.
    header: &'a [u8],
    suite: Suite,
    message_id: [u8; MESSAGE_ID_LEN],
    context: KeyContext,
    commitment: [u8; COMMITMENT_LEN],
    framing: Framing,
    wrapped_keys: Vec<WrappedKey>,
    /// Ciphertext followed by the tag (suites 1 and 3), or the segments (suite 4); empty in a
    /// head parsed alone ([`Envelope::parse_head`]).
    payload: &'a [u8],
}

/// How the payload is sealed: the header's last fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// One AES-256-GCM message under this nonce (suites 1 and 3).
    Whole { nonce: [u8; NONCE_LEN] },
    /// Segments of `size` plaintext bytes (the last one shorter), nonces after `prefix`
    /// (suite 4).
    Segments {
        size: u32,
        prefix: [u8; NONCE_PREFIX_LEN],
    },
}

impl Framing {
    /// Its bytes in the header.
    #[allow(clippy::arithmetic_side_effects)] // Constants.
    pub(crate) fn len(self) -> usize {
        match self {
            Self::Whole { .. } => NONCE_LEN,
            Self::Segments { .. } => 4 + NONCE_PREFIX_LEN,
        }
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked and never panics.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(EnvelopeError::Truncated)?;
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let (head, tail) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(EnvelopeError::Truncated)?;
        self.0 = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, EnvelopeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A length-prefixed field, bounded before it is read.
    fn field(
        &mut self,
        len: usize,
        what: &'static str,
        max: usize,
    ) -> Result<&'a [u8], EnvelopeError> {
        if len > max {
            return Err(EnvelopeError::TooLarge { what, max });
        }
        self.take(len)
    }

    fn str_field(
        &mut self,
        len: usize,
        what: &'static str,
        max: usize,
    ) -> Result<&'a str, EnvelopeError> {
        std::str::from_utf8(self.field(len, what, max)?).map_err(|_| EnvelopeError::Malformed {
            reason: "key reference is not UTF-8",
        })
    }
}

impl<'a> Envelope<'a> {
    /// Parses the binary form.
    ///
    /// # Errors
    /// An [`EnvelopeError`] naming the first structural problem. No key is involved yet.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        Self::parse_inner(bytes, None)
    }

    /// As [`parse`](Self::parse), for an envelope expected to be sealed for `expected`: a header
    /// holding exactly `expected`'s canonical bytes shares `expected` instead of decoding a
    /// copy (the canonical form is unique, so the bytes are the context). Any other context is
    /// decoded and checked as `parse` does; the caller compares it.
    pub(crate) fn parse_expecting(
        bytes: &'a [u8],
        expected: &KeyContext,
    ) -> Result<Self, EnvelopeError> {
        Self::parse_inner(bytes, Some(expected))
    }

    /// Parses the head of a streamed envelope (suite 4) alone: the header and the wrapped keys,
    /// exactly, without the segments that follow them. [`crate::stream::StreamHead`] reads one
    /// from an [`std::io::Read`].
    ///
    /// # Errors
    /// As [`parse`](Self::parse); [`EnvelopeError::Malformed`] for another suite's envelope
    /// (read whole, not streamed) or bytes after the wrapped keys.
    pub fn parse_head(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        let head = Self::parse_fields(bytes, None)?;
        if !matches!(head.framing, Framing::Segments { .. }) {
            return Err(EnvelopeError::Malformed {
                reason: "not a streamed envelope (suite 4): open it whole",
            });
        }
        if !head.payload.is_empty() {
            return Err(EnvelopeError::Malformed {
                reason: "bytes after the wrapped keys of a head",
            });
        }
        Ok(head)
    }

    fn parse_inner(bytes: &'a [u8], expected: Option<&KeyContext>) -> Result<Self, EnvelopeError> {
        let env = Self::parse_fields(bytes, expected)?;
        // FORMAT.md "Payload": the rest, at least a tag; for suite 4, whole segments.
        let plaintext_len = match env.framing {
            Framing::Whole { .. } => env
                .payload
                .len()
                .checked_sub(TAG_LEN)
                .ok_or(EnvelopeError::Truncated)?,
            Framing::Segments { size, .. } => {
                let len = segment::Layout::of(size, env.payload.len() as u64)?.plaintext_len();
                usize::try_from(len).unwrap_or(usize::MAX)
            }
        };
        if plaintext_len > MAX_PLAINTEXT_LEN {
            return Err(EnvelopeError::TooLarge {
                what: "payload",
                max: MAX_PLAINTEXT_LEN,
            });
        }
        Ok(env)
    }

    /// Every field up to the payload, checked; the payload is the rest of `bytes`, unchecked.
    fn parse_fields(bytes: &'a [u8], expected: Option<&KeyContext>) -> Result<Self, EnvelopeError> {
        // FORMAT.md "Envelope": fixed header.
        let mut r = Reader(bytes);
        if r.array::<4>()? != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let suite = r.u16()?;
        let suite = Suite::from_id(suite).ok_or(EnvelopeError::UnsupportedSuite(suite))?;
        let message_id = r.array()?;
        let context_len = usize::from(r.u16()?);
        let context = r.field(context_len, "key context", MAX_CANONICAL_BYTES)?;
        let context = match expected {
            Some(expected) if expected.canonical_bytes() == context => expected.clone(),
            _ => KeyContext::from_canonical_bytes(context).map_err(EnvelopeError::Context)?,
        };
        let commitment = r.array()?;
        let framing = match suite {
            Suite::HkdfSha256 | Suite::AesKdfSha256 => Framing::Whole { nonce: r.array()? },
            Suite::Segmented => {
                let size = u32::from_be_bytes(r.array()?);
                if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size) {
                    return Err(EnvelopeError::Malformed {
                        reason: "segment size out of range",
                    });
                }
                Framing::Segments {
                    size,
                    prefix: r.array()?,
                }
            }
        };
        // The reader holds the rest of `bytes`: what it consumed is the header.
        let header = bytes
            .get(..bytes.len().saturating_sub(r.0.len()))
            .ok_or(EnvelopeError::Truncated)?;

        // FORMAT.md "Wrapped keys".
        let count = usize::from(r.u8()?);
        if count == 0 {
            return Err(EnvelopeError::Malformed {
                reason: "no wrapped keys",
            });
        }
        if count > MAX_WRAPPED_KEYS {
            return Err(EnvelopeError::TooLarge {
                what: "wrapped key count",
                max: MAX_WRAPPED_KEYS,
            });
        }
        let mut wrapped_keys = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u8()?);
            let scheme = r.str_field(len, "key scheme", MAX_SCHEME_LEN)?;
            let len = usize::from(r.u16()?);
            let key_id = r.str_field(len, "key id", MAX_KEY_ID_LEN)?;
            let len = usize::from(r.u8()?);
            let version = r.str_field(len, "key version", MAX_KEY_VERSION_LEN)?;
            let len = usize::from(r.u16()?);
            let wrapped = r.field(len, "wrapped key", MAX_WRAPPED_LEN)?;
            let key_ref = KeyRef::new_recent(scheme, key_id, version)?;
            wrapped_keys.push(WrappedKey::new(key_ref, wrapped.to_vec())?);
        }

        Ok(Self {
            header,
            suite,
            message_id,
            context,
            commitment,
            framing,
            wrapped_keys,
            payload: r.0,
        })
    }

    /// Parses the text form: canonical, padded, standard base64 of the binary form.
    ///
    /// # Errors
    /// [`EnvelopeError::Base64`] for anything but canonical base64, otherwise as [`parse`](Self::parse).
    pub fn decode_text(text: &str) -> Result<Vec<u8>, EnvelopeError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(EnvelopeError::TooLarge {
                what: "envelope text",
                max: MAX_TEXT_LEN,
            });
        }
        STANDARD.decode(text).map_err(|_| EnvelopeError::Base64)
    }

    /// The binary form, byte for byte the input it was parsed from.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.header
                .len()
                .saturating_add(wrapped_keys_len(&self.wrapped_keys))
                .saturating_add(self.payload.len()),
        );
        out.extend_from_slice(self.header);
        write_wrapped_keys(&mut out, &self.wrapped_keys);
        out.extend_from_slice(self.payload);
        out
    }

    /// The same envelope with other wrapped keys: the header and payload are unchanged, byte
    /// for byte. This is how rewrapping works without re-encrypting the data.
    ///
    /// # Errors
    /// [`EnvelopeError`] if `keys` is empty or has more than [`MAX_WRAPPED_KEYS`].
    pub fn with_wrapped_keys(&self, keys: Vec<WrappedKey>) -> Result<Vec<u8>, EnvelopeError> {
        check_wrapped_count(keys.len())?;
        let env = Self {
            wrapped_keys: keys,
            ..self.clone()
        };
        Ok(env.to_bytes())
    }

    /// The key context the value was sealed under.
    pub fn context(&self) -> &KeyContext {
        &self.context
    }

    /// The wrapped copies of the data key.
    pub fn wrapped_keys(&self) -> &[WrappedKey] {
        &self.wrapped_keys
    }

    /// The suite id in the header (1 or 3: FORMAT.md, "Suites").
    pub fn suite(&self) -> u16 {
        self.suite.id()
    }

    /// The random message id.
    pub fn message_id(&self) -> &[u8; MESSAGE_ID_LEN] {
        &self.message_id
    }

    /// The length of the plaintext inside (0 for a head parsed alone).
    pub fn plaintext_len(&self) -> usize {
        match self.framing {
            // A parsed payload holds at least the tag.
            Framing::Whole { .. } => self.payload.len().saturating_sub(TAG_LEN),
            Framing::Segments { size, .. } => segment::Layout::of(size, self.payload.len() as u64)
                .map_or(0, |l| {
                    usize::try_from(l.plaintext_len()).unwrap_or(usize::MAX)
                }),
        }
    }

    /// The plaintext bytes per segment of a streamed envelope (suite 4); `None` for one
    /// sealed whole.
    pub fn segment_size(&self) -> Option<u32> {
        match self.framing {
            Framing::Whole { .. } => None,
            Framing::Segments { size, .. } => Some(size),
        }
    }

    /// The header and wrapped keys: what a rewrap replaces. For a streamed envelope, what
    /// precedes the first segment.
    pub fn head_len(&self) -> usize {
        self.header
            .len()
            .saturating_add(wrapped_keys_len(&self.wrapped_keys))
    }

    pub(crate) fn suite_kind(&self) -> Suite {
        self.suite
    }

    pub(crate) fn header(&self) -> &'a [u8] {
        self.header
    }

    pub(crate) fn commitment(&self) -> &[u8; COMMITMENT_LEN] {
        &self.commitment
    }

    pub(crate) fn framing(&self) -> Framing {
        self.framing
    }

    pub(crate) fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

impl std::fmt::Debug for Envelope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("context", &self.context)
            .field("wrapped_keys", &self.wrapped_keys)
            .field("plaintext_len", &self.plaintext_len())
            .finish_non_exhaustive()
    }
}

/// Encodes the binary form as text (padded standard base64).
pub fn encode_text(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn check_wrapped_count(n: usize) -> Result<(), EnvelopeError> {
    if n == 0 {
        return Err(EnvelopeError::Malformed {
            reason: "no wrapped keys",
        });
    }
    if n > MAX_WRAPPED_KEYS {
        return Err(EnvelopeError::TooLarge {
            what: "wrapped key count",
            max: MAX_WRAPPED_KEYS,
        });
    }
    Ok(())
}

/// Writes the authenticated header. Every length was bounded when its value was validated.
pub(crate) fn write_header(
    out: &mut Vec<u8>,
    suite: Suite,
    message_id: &[u8; MESSAGE_ID_LEN],
    context: &KeyContext,
    commitment: &[u8; COMMITMENT_LEN],
    framing: &Framing,
) {
    let ctx = context.canonical_bytes();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&suite.id().to_be_bytes());
    out.extend_from_slice(message_id);
    out.extend_from_slice(&len16(ctx.len()));
    out.extend_from_slice(ctx);
    out.extend_from_slice(commitment);
    match framing {
        Framing::Whole { nonce } => out.extend_from_slice(nonce),
        Framing::Segments { size, prefix } => {
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(prefix);
        }
    }
}

// Encoders of checked values: each length is bounded by its limit (`MAX_*`), far from `usize::MAX`.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn header_len(context: &KeyContext, framing: &Framing) -> usize {
    FIXED_HEADER_LEN + context.canonical_bytes().len() + COMMITMENT_LEN + framing.len()
}

#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn wrapped_keys_len(keys: &[WrappedKey]) -> usize {
    1 + keys
        .iter()
        .map(|k| {
            let r = k.key_ref();
            6 + r.scheme().len() + r.key_id().len() + r.version().len() + k.bytes().len()
        })
        .sum::<usize>()
}

pub(crate) fn write_wrapped_keys(out: &mut Vec<u8>, keys: &[WrappedKey]) {
    // Counts and lengths were validated by `check_wrapped_count`, `KeyRef::new` and
    // `WrappedKey::new`: all fit their prefixes.
    out.push(u8::try_from(keys.len()).unwrap_or(u8::MAX));
    for k in keys {
        let r = k.key_ref();
        out.push(u8::try_from(r.scheme().len()).unwrap_or(u8::MAX));
        out.extend_from_slice(r.scheme().as_bytes());
        out.extend_from_slice(&len16(r.key_id().len()));
        out.extend_from_slice(r.key_id().as_bytes());
        out.push(u8::try_from(r.version().len()).unwrap_or(u8::MAX));
        out.extend_from_slice(r.version().as_bytes());
        out.extend_from_slice(&len16(k.bytes().len()));
        out.extend_from_slice(k.bytes());
    }
}

fn len16(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes()
}
