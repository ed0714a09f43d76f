//! Streamed envelopes: values of any size sealed and opened in bounded memory, and read at any
//! offset (suite 4, FORMAT.md "Suite 0x0004: segments").
//!
//! A streamed envelope is the same head as every envelope (the header with the key context
//! and the key commitment, then the wrapped data keys) followed by segments of a fixed plaintext
//! size (64 KiB unless asked otherwise), each sealed with AES-256-GCM under the message's
//! content key with its index and a last-segment flag in the nonce. Opening never releases a
//! byte whose segment did not verify in its place, and reports the end only after the last
//! segment verified as the last: truncated, reordered, extended or spliced streams are refused.
//! Rewrapping replaces only the head ([`StreamHead::rewrap`]); the segments are kept byte for
//! byte.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::{Read, Write};
//! use vault_crypto::stream::{self, StreamHead};
//! use vault_crypto::{Aad, KeyContext, ManagedKeyProvider};
//!
//! let keys = ManagedKeyProvider::in_memory("root")?;
//! let ctx = KeyContext::parse_json(br#"{"organization_id":"org_1"}"#)?;
//!
//! // Seal: a writer over any `Write`, finished explicitly.
//! let sealer = stream::seal(&keys, &ctx, Aad::NONE, stream::DEFAULT_SEGMENT_SIZE).await?;
//! let mut writer = sealer.writer(Vec::new());
//! writer.write_all(&vec![7u8; 200_000])?;
//! let envelope = writer.finish()?;
//!
//! // Open: read the head, unwrap its data key, then read the plaintext.
//! let mut input = envelope.as_slice();
//! let head = StreamHead::read_from(&mut input)?;
//! let opener = head.open(&keys, &ctx, Aad::NONE).await?;
//! let mut plaintext = Vec::new();
//! opener.reader(input).read_to_end(&mut plaintext)?;
//! assert_eq!(plaintext, vec![7u8; 200_000]);
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
//! ```

mod apart;
mod head;
mod open;
mod seal;
mod seek;
#[cfg(test)]
mod tests;

use std::io::{self, Read, Seek};

use tokio::io::{AsyncRead, AsyncWrite};

pub use apart::SegmentOpener;
pub use open::{AsyncOpenReader, OpenReader};
pub use seal::{AsyncSealWriter, ReadAt, SealWriter, seal_threads};
pub use seek::SeekableReader;

pub use super::segment::{DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, MAX_SEGMENTS, MIN_SEGMENT_SIZE};
pub use super::suite::SUITE_AES256GCM_SEGMENTED_COMMIT;

use super::commit::MessageKeys;
use super::format::{self, Envelope, Framing};
use super::message::MessageRandom;
use super::segment::{NONCE_PREFIX_LEN, Segments};
use super::suite::Suite;
use super::unwrap_committed;
use super::value::{Aad, Rewrapped};
use crate::aead::Backend;
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::error::{EnvelopeError, Error};
use crate::provider::{Attempts, KeyProvider, KeyRef, WrappedKey};

/// Begins sealing a stream for `context`: a fresh data key from `provider`, wrapped for the
/// context, and the head that carries it. Write the plaintext through
/// [`StreamSealer::writer`] or [`StreamSealer::async_writer`].
///
/// `segment_size` is the plaintext bytes per segment, from [`MIN_SEGMENT_SIZE`] to
/// [`MAX_SEGMENT_SIZE`]; [`DEFAULT_SEGMENT_SIZE`] (64 KiB) suits files and HTTP bodies alike.
/// A stream holds at most [`MAX_SEGMENTS`] segments (256 TiB at the default size).
///
/// # Errors
/// [`Error::SegmentSize`]; otherwise as [`seal`](crate::seal).
pub async fn seal(
    provider: &dyn KeyProvider,
    context: &KeyContext,
    aad: Aad<'_>,
    segment_size: u32,
) -> Result<StreamSealer, Error> {
    seal_in(provider, "", context, aad, segment_size).await
}

/// [`seal`] for one of several tenants sharing `provider`, as [`seal_in`](crate::seal_in).
///
/// # Errors
/// As [`seal`].
pub async fn seal_in(
    provider: &dyn KeyProvider,
    scope: &str,
    context: &KeyContext,
    aad: Aad<'_>,
    segment_size: u32,
) -> Result<StreamSealer, Error> {
    check_segment_size(segment_size)?;
    context.check_not_forged()?;
    // The length is unknown: a caching provider hands a stream a data key of its own.
    let (data_key, wrapped) = provider.data_key_for_seal(context, scope, u64::MAX).await?;
    begin(
        &data_key,
        &wrapped,
        context,
        aad,
        segment_size,
        &MessageRandom::generate()?,
    )
}

/// A streamed seal under a data key in hand: the head, and the segment key.
pub(crate) fn begin(
    data_key: &DataKey,
    wrapped: &WrappedKey,
    context: &KeyContext,
    aad: Aad<'_>,
    segment_size: u32,
    random: &MessageRandom,
) -> Result<StreamSealer, Error> {
    check_segment_size(segment_size)?;
    let (prefix, _) = random
        .nonce
        .split_first_chunk::<NONCE_PREFIX_LEN>()
        .ok_or(Error::Random)?;
    let framing = Framing::Segments {
        size: segment_size,
        prefix: *prefix,
    };
    let keys = Suite::Segmented.derive(data_key, &random.message_id);
    let wrapped = std::slice::from_ref(wrapped);
    let mut head = Vec::with_capacity(
        format::header_len(context, &framing).saturating_add(format::wrapped_keys_len(wrapped)),
    );
    format::write_header(
        &mut head,
        Suite::Segmented,
        &random.message_id,
        context,
        &keys.commitment,
        &framing,
    );
    let header_len = head.len();
    format::write_wrapped_keys(&mut head, wrapped);
    let header = head.get(..header_len).ok_or(Error::EncryptionFailed)?;
    let segments = Segments::new(
        Backend::DEFAULT,
        &keys,
        *prefix,
        header,
        aad.bytes(),
        segment_size,
    )?;
    Ok(StreamSealer {
        segments,
        head,
        key_ref: wrapped
            .first()
            .map(|w| w.key_ref().clone())
            .ok_or(Error::EncryptionFailed)?,
    })
}

fn check_segment_size(size: u32) -> Result<(), Error> {
    if (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(Error::SegmentSize {
            min: MIN_SEGMENT_SIZE,
            max: MAX_SEGMENT_SIZE,
        })
    }
}

/// A streamed seal begun by [`seal`]: its head, and the key that seals its segments.
pub struct StreamSealer {
    segments: Segments,
    head: Vec<u8>,
    key_ref: KeyRef,
}

impl StreamSealer {
    /// The head (header and wrapped key) the envelope starts with; the writers write it first.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The key that wrapped the data key.
    pub fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    /// Plaintext bytes per segment.
    pub fn segment_size(&self) -> usize {
        self.segments.size()
    }

    /// A writer that seals what is written to it into `inner`, head first.
    pub fn writer<W: io::Write>(self, inner: W) -> SealWriter<W> {
        SealWriter::new(seal::SealCore::new(self.segments, self.head), inner)
    }

    /// A writer that seals into `inner` only the segments, for a caller that stores the head
    /// apart ([`head`](Self::head), taken before).
    pub fn segments_writer<W: io::Write>(self, inner: W) -> SealWriter<W> {
        SealWriter::new(seal::SealCore::new(self.segments, Vec::new()), inner)
    }

    /// [`writer`](Self::writer) over a `tokio::io::AsyncWrite`.
    pub fn async_writer<W: AsyncWrite + Unpin>(self, inner: W) -> AsyncSealWriter<W> {
        AsyncSealWriter::new(seal::SealCore::new(self.segments, self.head), inner)
    }
}

impl std::fmt::Debug for StreamSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSealer")
            .field("key_ref", &self.key_ref)
            .field("segment_size", &self.segments.size())
            .finish_non_exhaustive()
    }
}

/// The head of a streamed envelope, read and checked (every structural rule of
/// [`Envelope::parse_head`]): what says which key opens the segments that follow it.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamHead {
    bytes: Vec<u8>,
}

impl StreamHead {
    /// A head from its exact bytes (as [`StreamSealer::head`] made them, or a store kept them).
    ///
    /// # Errors
    /// As [`Envelope::parse_head`].
    pub fn parse(bytes: Vec<u8>) -> Result<Self, EnvelopeError> {
        Envelope::parse_head(&bytes)?;
        Ok(Self { bytes })
    }

    /// Reads a head from `r`, and nothing after it: `r` is left at the first segment.
    ///
    /// # Errors
    /// `r`'s error, or an `io::Error` of kind `InvalidData` carrying an [`Error::Envelope`]
    /// ([`error_of`]) for bytes that are not a streamed envelope's head.
    pub fn read_from<R: Read + ?Sized>(r: &mut R) -> io::Result<Self> {
        Self::parse(head::read_head(r)?).map_err(|e| io_error(e.into()))
    }

    /// [`read_from`](Self::read_from) an asynchronous reader.
    ///
    /// # Errors
    /// As [`read_from`](Self::read_from).
    pub async fn read_from_async<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> io::Result<Self> {
        Self::parse(head::read_head_async(r).await?).map_err(|e| io_error(e.into()))
    }

    /// The head's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its length: where the first segment starts.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never: a head has at least a header and one wrapped key.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The head parsed: its context, wrapped keys, segment size.
    pub fn envelope(&self) -> Envelope<'_> {
        // Checked when it was made; parsing again cannot fail.
        Envelope::parse_head(&self.bytes).unwrap_or_else(|_| unreachable!("a checked head"))
    }

    /// Unwraps the data key for a stream that must have been sealed for `expected`, with the
    /// checks of [`open`](crate::open): the context first, then the commitment. The segments
    /// are opened by the readers of the [`StreamOpener`].
    ///
    /// # Errors
    /// As [`open`](crate::open).
    pub async fn open(
        &self,
        provider: &dyn KeyProvider,
        expected: &KeyContext,
        aad: Aad<'_>,
    ) -> Result<StreamOpener, Error> {
        let env = Envelope::parse_head(&self.bytes)?;
        env.expect(expected)?;
        expected.check_not_forged()?;
        self.opener(provider, &env, aad).await
    }

    /// [`open`](Self::open) whatever context the stream was sealed for, as
    /// [`open_any_context`](crate::open_any_context): for a tool that shows what a file holds.
    ///
    /// # Errors
    /// As [`open_any_context`](crate::open_any_context).
    pub async fn open_any_context(
        &self,
        provider: &dyn KeyProvider,
        aad: Aad<'_>,
    ) -> Result<StreamOpener, Error> {
        let env = Envelope::parse_head(&self.bytes)?;
        env.context().check_caller()?;
        self.opener(provider, &env, aad).await
    }

    async fn opener(
        &self,
        provider: &dyn KeyProvider,
        env: &Envelope<'_>,
        aad: Aad<'_>,
    ) -> Result<StreamOpener, Error> {
        let (_, keys, key_ref) = unwrap_committed(provider, env, Attempts::Retry).await?;
        opener(env, &keys, key_ref, aad)
    }

    /// The head with its data key wrapped by the key `provider` chooses now for the context,
    /// as [`rewrap`](crate::rewrap): [`Rewrapped::Moved`] carries the new head, to put where
    /// this one was; the segments after it stay as they are, byte for byte.
    ///
    /// # Errors
    /// As [`rewrap`](crate::rewrap).
    pub async fn rewrap(
        &self,
        provider: &dyn KeyProvider,
        expected: &KeyContext,
    ) -> Result<Rewrapped, Error> {
        Envelope::parse_head(&self.bytes)?
            .rewrap(provider, expected)
            .await
    }
}

/// The opener of a head whose message keys were checked against its commitment.
pub(crate) fn opener(
    env: &Envelope<'_>,
    keys: &MessageKeys,
    key_ref: KeyRef,
    aad: Aad<'_>,
) -> Result<StreamOpener, Error> {
    let Framing::Segments { size, prefix } = env.framing() else {
        return Err(EnvelopeError::Truncated.into());
    };
    let segments = Segments::new(
        Backend::DEFAULT,
        keys,
        prefix,
        env.header(),
        aad.bytes(),
        size,
    )?;
    Ok(StreamOpener {
        segments,
        head_len: env.head_len() as u64,
        context: env.context().clone(),
        key_ref,
    })
}

impl std::fmt::Debug for StreamHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env = self.envelope();
        f.debug_struct("StreamHead")
            .field("context", env.context())
            .field("wrapped_keys", &env.wrapped_keys())
            .field("segment_size", &env.segment_size())
            .finish()
    }
}

/// A stream's segment key, unwrapped and checked against the commitment: makes the readers.
pub struct StreamOpener {
    segments: Segments,
    head_len: u64,
    context: KeyContext,
    key_ref: KeyRef,
}

impl StreamOpener {
    /// The key context in the head. It is authenticated by each segment's tag (the header is
    /// every segment's associated data), not before: with a wrap that binds no context (Azure
    /// Key Vault RSA-OAEP), a changed context is refused only once the first segment is read.
    pub fn context(&self) -> &KeyContext {
        &self.context
    }

    /// The key that unwrapped the data key.
    pub fn key_ref(&self) -> &KeyRef {
        &self.key_ref
    }

    /// A reader of the plaintext from `segments`, a reader positioned just after the head (as
    /// [`StreamHead::read_from`] leaves it).
    pub fn reader<R: Read>(self, segments: R) -> OpenReader<R> {
        OpenReader::new(open::OpenCore::new(self.segments), segments)
    }

    /// [`reader`](Self::reader) over a `tokio::io::AsyncRead`.
    pub fn async_reader<R: AsyncRead + Unpin>(self, segments: R) -> AsyncOpenReader<R> {
        AsyncOpenReader::new(open::OpenCore::new(self.segments), segments)
    }

    /// Random access: the plaintext of `envelope` (the whole envelope, head included, at
    /// offset 0) as `Read + Seek`. Opens the last segment first, which authenticates the length.
    ///
    /// # Errors
    /// `envelope`'s error, or an `io::Error` carrying [`Error::DecryptionFailed`] or an
    /// [`Error::Envelope`] ([`error_of`]).
    pub fn seekable<R: Read + Seek>(self, envelope: R) -> io::Result<SeekableReader<R>> {
        SeekableReader::new(self.segments, envelope, self.head_len)
    }

    /// [`seekable`](Self::seekable) over the segments alone, stored apart from the head
    /// (offset 0 is the first segment's first byte).
    ///
    /// # Errors
    /// As [`seekable`](Self::seekable).
    pub fn seekable_segments<R: Read + Seek>(self, segments: R) -> io::Result<SeekableReader<R>> {
        SeekableReader::new(self.segments, segments, 0)
    }

    /// The segments of a stream of `plaintext_len` bytes, opened one at a time in any order:
    /// for a store that keeps each segment apart (see [`SegmentOpener`], and open its last
    /// segment first: that authenticates the length).
    ///
    /// # Errors
    /// [`Error::Envelope`] for a length no stream of this segment size can have.
    pub fn segments(self, plaintext_len: u64) -> Result<SegmentOpener, Error> {
        SegmentOpener::new(self.segments, plaintext_len, self.key_ref)
    }
}

impl std::fmt::Debug for StreamOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOpener")
            .field("context", &self.context)
            .field("key_ref", &self.key_ref)
            .finish_non_exhaustive()
    }
}

/// The [`Error`] inside an `io::Error` from this module's readers and writers, if it carries
/// one (rather than the inner reader's or writer's own failure).
pub fn error_of(e: &io::Error) -> Option<&Error> {
    e.get_ref()?.downcast_ref::<Error>()
}

/// An [`Error`] as an `io::Error` of kind `InvalidData` (or `Other` for a seal's failure).
pub(crate) fn io_error(e: Error) -> io::Error {
    let kind = match e {
        Error::Envelope(_) | Error::DecryptionFailed => io::ErrorKind::InvalidData,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// `read_exact` on a `tokio::io::AsyncRead`, without tokio's `io-util`.
pub(crate) async fn read_exact_async<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    mut into: &mut [u8],
) -> io::Result<()> {
    while !into.is_empty() {
        let n = std::future::poll_fn(|cx| {
            let mut buf = tokio::io::ReadBuf::new(into);
            std::task::ready!(std::pin::Pin::new(&mut *r).poll_read(cx, &mut buf))?;
            std::task::Poll::Ready(Ok::<_, io::Error>(buf.filled().len()))
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        into = std::mem::take(&mut into).get_mut(n..).unwrap_or_default();
    }
    Ok(())
}
