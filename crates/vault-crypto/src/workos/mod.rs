//! The WorkOS SDKs' local-encryption blob (`vault.encrypt` / `vault.decrypt`), so a Rust caller
//! can open what any SDK sealed through our server, and seal what any SDK can open. Specified
//! in `docs/FORMAT.md`, section "WorkOS SDK blobs". The SDKs write one of three layouts:
//!
//! ```text
//! IvFirst   (Node, Python, Kotlin)        iv [12] | tag [16] | LEB128(len keys) | keys | ciphertext
//! KeysFirst (Rust `workos` 3.x, Go, Swift) LEB128(len keys) | keys | nonce [12] | ciphertext | tag [16]
//! LongIv    (the Go SDK's first `pkg/vault`) iv [32] | tag [16] | LEB128(len keys) | keys | ciphertext
//! ```
//! The AEAD is AES-256-GCM under the data key the server issued (with a 32-byte nonce for
//! `LongIv`, as Go's `NewGCMWithNonceSize(32)` does); the caller's associated data (not stored)
//! is its only AAD. The key context is bound only through `keys`, which the server opens. The
//! text form is padded standard base64 in every SDK.
//!
//! [`LocalBlob::parse`] tells the layouts apart by what `keys` starts with: an issued key of
//! this vault (`VLTE`, version 1, suite 1 or 3) or of WorkOS (`WOS.EKM.v1\0`). It accepts a blob only
//! if exactly one layout puts a known prefix where that layout's keys begin, so a blob is never
//! read in a layout it was not written in: the other layouts' key offsets fall in random IV,
//! nonce or message-id bytes (or, for WorkOS's keys, in UUID text, which cannot hold either
//! prefix), where a 7-byte prefix lands by chance with odds of 2^-56, and even that case is
//! refused as ambiguous rather than guessed. Blobs whose keys are neither (another server's)
//! are read with [`LocalBlob::parse_as`] and the layout named.

// A parser of outside bytes: no index or arithmetic that can panic or wrap.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::aead::{Backend, NONCE_LEN, TAG_LEN};
use crate::data_key::DataKey;
use crate::envelope::{Aad, MAX_PLAINTEXT_LEN};
use crate::error::{EnvelopeError, Error};

/// The most bytes of `encrypted_keys` a blob may carry (ours are a few hundred bytes; an RSA-4096
/// wrap under eight keys stays far below).
pub const MAX_ENCRYPTED_KEYS_LEN: usize = 64 * 1024;
/// The longest LEB128 length prefix: five bytes hold any `u32`.
const MAX_LEB128_LEN: usize = 5;
/// The longest IV of any layout.
const LONG_IV_LEN: usize = 32;
/// The largest text form accepted, in bytes of base64.
pub const MAX_BLOB_TEXT_LEN: usize =
    (LONG_IV_LEN + TAG_LEN + MAX_LEB128_LEN + MAX_ENCRYPTED_KEYS_LEN + MAX_PLAINTEXT_LEN)
        .div_ceil(3)
        * 4;

/// What the `keys` of a blob made through this vault or through WorkOS start with: an issued
/// key envelope (magic `VLTE`, version 1, suite 1 or 3) and WorkOS's encrypted-keys format.
const KNOWN_KEYS: [&[u8]; 3] = [b"VLTE\x01\x00\x01", b"VLTE\x01\x00\x03", b"WOS.EKM.v1\0"];

/// The byte layout of an SDK blob (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// `iv[12] | tag[16] | LEB128 | keys | ciphertext`: the Node, Python and Kotlin SDKs.
    IvFirst,
    /// `LEB128 | keys | nonce[12] | ciphertext | tag[16]`: the Rust `workos` crate 3.x, the
    /// Go SDK and the Swift SDK.
    KeysFirst,
    /// `iv[32] | tag[16] | LEB128 | keys | ciphertext`: the Go SDK's first `pkg/vault`.
    LongIv,
}

impl Layout {
    /// Every layout.
    pub const ALL: [Self; 3] = [Self::IvFirst, Self::KeysFirst, Self::LongIv];

    /// The IV (nonce) length.
    pub fn iv_len(self) -> usize {
        match self {
            Self::IvFirst | Self::KeysFirst => NONCE_LEN,
            Self::LongIv => LONG_IV_LEN,
        }
    }
}

/// A parsed SDK blob. Borrows the IV, `encrypted_keys` and the ciphertext from the input.
///
/// Only the canonical encoding parses (minimal LEB128), so
/// `LocalBlob::parse_as(b, l)?.to_bytes() == b`.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalBlob<'a> {
    layout: Layout,
    iv: &'a [u8],
    tag: [u8; TAG_LEN],
    encrypted_keys: &'a [u8],
    ciphertext: &'a [u8],
}

impl std::fmt::Debug for LocalBlob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBlob")
            .field("layout", &self.layout)
            .field("encrypted_keys_len", &self.encrypted_keys.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// Reads an unsigned LEB128 `u32` in its minimal encoding; returns it and the bytes it took.
fn read_leb128(bytes: &[u8]) -> Result<(u32, usize), EnvelopeError> {
    // Byte i carries bits 7i to 7i+6; the fifth only the four that fit in 32 bits.
    const SHIFTS: [u32; MAX_LEB128_LEN] = [0, 7, 14, 21, 28];
    let mut value: u32 = 0;
    for ((used, &b), shift) in (1..).zip(bytes).zip(SHIFTS) {
        let payload = u32::from(b & 0x7f);
        if shift == 28 && payload > 0x0f {
            return Err(EnvelopeError::Malformed {
                reason: "LEB128 length does not fit in 32 bits",
            });
        }
        value |= payload << shift;
        if b & 0x80 == 0 {
            if b == 0 && used > 1 {
                return Err(EnvelopeError::Malformed {
                    reason: "LEB128 length is not minimally encoded",
                });
            }
            return Ok((value, used));
        }
    }
    if bytes.len() < MAX_LEB128_LEN {
        Err(EnvelopeError::Truncated)
    } else {
        Err(EnvelopeError::Malformed {
            reason: "LEB128 length longer than 5 bytes",
        })
    }
}

fn write_leb128(out: &mut Vec<u8>, mut value: u32) {
    loop {
        // Truncation is the point: the low seven bits.
        #[allow(clippy::cast_possible_truncation)]
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn leb128_len(value: u32) -> usize {
    let bits = u32::BITS.saturating_sub(value.leading_zeros());
    usize::try_from(bits.div_ceil(7).max(1)).unwrap_or(MAX_LEB128_LEN)
}

/// Reads `LEB128(len) | keys` from the front of `bytes`; returns the keys and the rest.
fn read_keys(bytes: &[u8]) -> Result<(&[u8], &[u8]), EnvelopeError> {
    let (len, used) = read_leb128(bytes)?;
    let len = usize::try_from(len).map_err(|_| EnvelopeError::TooLarge {
        what: "encrypted keys",
        max: MAX_ENCRYPTED_KEYS_LEN,
    })?;
    if len == 0 {
        return Err(EnvelopeError::Malformed {
            reason: "empty encrypted keys",
        });
    }
    if len > MAX_ENCRYPTED_KEYS_LEN {
        return Err(EnvelopeError::TooLarge {
            what: "encrypted keys",
            max: MAX_ENCRYPTED_KEYS_LEN,
        });
    }
    bytes
        .get(used..)
        .and_then(|r| r.split_at_checked(len))
        .ok_or(EnvelopeError::Truncated)
}

fn check_ciphertext(ciphertext: &[u8]) -> Result<(), EnvelopeError> {
    if ciphertext.len() > MAX_PLAINTEXT_LEN {
        return Err(EnvelopeError::TooLarge {
            what: "ciphertext",
            max: MAX_PLAINTEXT_LEN,
        });
    }
    Ok(())
}

impl<'a> LocalBlob<'a> {
    /// Parses the binary form of a blob made through this vault or through WorkOS, in whichever
    /// layout it was written (told apart by where its keys begin; see the module docs).
    ///
    /// # Errors
    /// [`EnvelopeError::Malformed`] if no layout, or more than one, reads it with known keys;
    /// otherwise the first structural problem of the blob read as the SDKs' usual layout.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        let mut found = Layout::ALL
            .into_iter()
            .filter_map(|layout| Self::parse_as(bytes, layout).ok())
            .filter(|blob| {
                KNOWN_KEYS
                    .iter()
                    .any(|k| blob.encrypted_keys.starts_with(k))
            });
        match (found.next(), found.next()) {
            (Some(blob), None) => Ok(blob),
            (Some(_), Some(_)) => Err(EnvelopeError::Malformed {
                reason: "the blob reads as more than one layout; name its layout",
            }),
            (None, _) => {
                // Well formed in some layout, but its keys are neither ours nor WorkOS's.
                if Layout::ALL
                    .into_iter()
                    .any(|layout| Self::parse_as(bytes, layout).is_ok())
                {
                    return Err(EnvelopeError::Malformed {
                        reason: "the blob's encrypted keys are neither this vault's nor WorkOS's, so its layout cannot be told; name its layout",
                    });
                }
                // Malformed in every layout: say what is wrong with it in the usual one.
                Self::parse_as(bytes, Layout::IvFirst)
            }
        }
    }

    /// Parses the binary form in `layout`.
    ///
    /// # Errors
    /// [`EnvelopeError`] naming the first structural problem.
    pub fn parse_as(bytes: &'a [u8], layout: Layout) -> Result<Self, EnvelopeError> {
        let blob = match layout {
            Layout::IvFirst | Layout::LongIv => {
                let (iv, rest) = bytes
                    .split_at_checked(layout.iv_len())
                    .ok_or(EnvelopeError::Truncated)?;
                let (tag, rest) = rest
                    .split_first_chunk::<TAG_LEN>()
                    .ok_or(EnvelopeError::Truncated)?;
                let (encrypted_keys, ciphertext) = read_keys(rest)?;
                Self {
                    layout,
                    iv,
                    tag: *tag,
                    encrypted_keys,
                    ciphertext,
                }
            }
            Layout::KeysFirst => {
                let (encrypted_keys, rest) = read_keys(bytes)?;
                let (iv, rest) = rest
                    .split_at_checked(NONCE_LEN)
                    .ok_or(EnvelopeError::Truncated)?;
                let (ciphertext, tag) = rest
                    .split_last_chunk::<TAG_LEN>()
                    .ok_or(EnvelopeError::Truncated)?;
                Self {
                    layout,
                    iv,
                    tag: *tag,
                    encrypted_keys,
                    ciphertext,
                }
            }
        };
        check_ciphertext(blob.ciphertext)?;
        Ok(blob)
    }

    /// Decodes the text form (padded standard base64, as every SDK emits it) into bytes for
    /// [`parse`](Self::parse).
    ///
    /// # Errors
    /// [`EnvelopeError::TooLarge`] or [`EnvelopeError::Base64`].
    pub fn decode_text(text: &str) -> Result<Vec<u8>, EnvelopeError> {
        if text.len() > MAX_BLOB_TEXT_LEN {
            return Err(EnvelopeError::TooLarge {
                what: "blob text",
                max: MAX_BLOB_TEXT_LEN,
            });
        }
        STANDARD.decode(text).map_err(|_| EnvelopeError::Base64)
    }

    /// The layout it was written in.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The server's `encrypted_keys`: what to send to `POST /vault/v1/keys/decrypt` (base64).
    pub fn encrypted_keys(&self) -> &'a [u8] {
        self.encrypted_keys
    }

    /// The binary form.
    // Lengths of parsed parts, each bounded by its limit: the sum cannot overflow.
    #[allow(clippy::arithmetic_side_effects)]
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = u32::try_from(self.encrypted_keys.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(
            self.iv.len()
                + TAG_LEN
                + leb128_len(len)
                + self.encrypted_keys.len()
                + self.ciphertext.len(),
        );
        match self.layout {
            Layout::IvFirst | Layout::LongIv => {
                out.extend_from_slice(self.iv);
                out.extend_from_slice(&self.tag);
                write_leb128(&mut out, len);
                out.extend_from_slice(self.encrypted_keys);
                out.extend_from_slice(self.ciphertext);
            }
            Layout::KeysFirst => {
                write_leb128(&mut out, len);
                out.extend_from_slice(self.encrypted_keys);
                out.extend_from_slice(self.iv);
                out.extend_from_slice(self.ciphertext);
                out.extend_from_slice(&self.tag);
            }
        }
        out
    }

    /// Decrypts with the data key the server returned for [`encrypted_keys`](Self::encrypted_keys).
    /// `aad` must be what the encrypting side passed (empty for none).
    ///
    /// # Errors
    /// [`Error::DecryptionFailed`] for a wrong key or AAD or tampered bytes.
    pub fn decrypt(&self, data_key: &DataKey, aad: Aad<'_>) -> Result<Vec<u8>, Error> {
        let aad = aad.bytes();
        let mut plaintext = self.ciphertext.to_vec();
        match <&[u8; NONCE_LEN]>::try_from(self.iv) {
            Ok(nonce) => Backend::DEFAULT.open_in_place(
                data_key.expose_secret(),
                nonce,
                aad,
                &mut plaintext,
                &self.tag,
            ),
            Err(_) => long_iv::open(data_key, self.iv, aad, &mut plaintext, &self.tag),
        }
        .map_err(|_| Error::DecryptionFailed)?;
        Ok(plaintext)
    }
}

/// AES-256-GCM with a 32-byte nonce (GCM hashes a nonce that is not 12 bytes into its first
/// counter block), for the Go SDK's first layout. RustCrypto's `aes-gcm`, which takes any nonce
/// size: ring and AWS-LC take 12-byte nonces only.
mod long_iv {
    use aes_gcm::aead::array::Array;
    use aes_gcm::aead::consts::U32;
    use aes_gcm::{AeadInOut, AesGcm, KeyInit, aes::Aes256};

    use super::{LONG_IV_LEN, TAG_LEN};
    use crate::aead::Unspecified;
    use crate::data_key::DataKey;

    type Aes256Gcm32 = AesGcm<Aes256, U32>;

    fn parts(key: &DataKey, iv: &[u8]) -> Result<(Aes256Gcm32, Array<u8, U32>), Unspecified> {
        let iv: [u8; LONG_IV_LEN] = iv.try_into().map_err(|_| Unspecified)?;
        Ok((
            Aes256Gcm32::new(&Array::from(*key.expose_secret())),
            Array::from(iv),
        ))
    }

    pub(super) fn open(
        key: &DataKey,
        iv: &[u8],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Unspecified> {
        let (cipher, nonce) = parts(key, iv)?;
        cipher
            .decrypt_inout_detached(&nonce, aad, in_out.into(), &Array::from(*tag))
            .map_err(|_| Unspecified)
    }

    pub(super) fn seal(
        key: &DataKey,
        iv: &[u8],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Unspecified> {
        let (cipher, nonce) = parts(key, iv)?;
        let tag = cipher
            .encrypt_inout_detached(&nonce, aad, in_out.into())
            .map_err(|_| Unspecified)?;
        Ok(tag.into())
    }
}

/// Encrypts `plaintext` as the Node, Python and Kotlin SDKs' `vault.encrypt` does
/// ([`Layout::IvFirst`]), with a fresh random IV, and returns the text form. `data_key` and
/// `encrypted_keys` are a pair from `POST /vault/v1/keys/data-key`.
///
/// # Errors
/// [`Error::Envelope`] if `encrypted_keys` is empty or too long, [`Error::PlaintextTooLarge`],
/// [`Error::Random`].
pub fn encrypt(
    data_key: &DataKey,
    encrypted_keys: &[u8],
    plaintext: &[u8],
    aad: Aad<'_>,
) -> Result<String, Error> {
    encrypt_as(Layout::IvFirst, data_key, encrypted_keys, plaintext, aad)
}

/// [`encrypt`] in `layout`, for the SDK that will open it.
///
/// # Errors
/// As [`encrypt`].
pub fn encrypt_as(
    layout: Layout,
    data_key: &DataKey,
    encrypted_keys: &[u8],
    plaintext: &[u8],
    aad: Aad<'_>,
) -> Result<String, Error> {
    let mut iv = [0u8; LONG_IV_LEN];
    let iv = iv
        .get_mut(..layout.iv_len())
        .ok_or(Error::EncryptionFailed)?;
    crate::random::fill(iv)?;
    Ok(STANDARD.encode(encrypt_with_iv(
        layout,
        data_key,
        encrypted_keys,
        plaintext,
        aad.bytes(),
        iv,
    )?))
}

/// [`encrypt_as`] with a caller-chosen IV (12 bytes, or 32 for [`Layout::LongIv`]), in binary
/// form (for test vectors via [`crate::danger::workos_encrypt_with_iv`]).
// Lengths checked against their limits above: the sums cannot overflow.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn encrypt_with_iv(
    layout: Layout,
    data_key: &DataKey,
    encrypted_keys: &[u8],
    plaintext: &[u8],
    aad: &[u8],
    iv: &[u8],
) -> Result<Vec<u8>, Error> {
    if iv.len() != layout.iv_len() {
        return Err(Error::EncryptionFailed);
    }
    if encrypted_keys.is_empty() {
        return Err(EnvelopeError::Malformed {
            reason: "empty encrypted keys",
        }
        .into());
    }
    if encrypted_keys.len() > MAX_ENCRYPTED_KEYS_LEN {
        return Err(EnvelopeError::TooLarge {
            what: "encrypted keys",
            max: MAX_ENCRYPTED_KEYS_LEN,
        }
        .into());
    }
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(Error::PlaintextTooLarge {
            max: MAX_PLAINTEXT_LEN,
        });
    }
    let mut ciphertext = plaintext.to_vec();
    let tag = match <&[u8; NONCE_LEN]>::try_from(iv) {
        Ok(nonce) => {
            Backend::DEFAULT.seal_in_place(data_key.expose_secret(), nonce, aad, &mut ciphertext)
        }
        Err(_) => long_iv::seal(data_key, iv, aad, &mut ciphertext),
    }
    .map_err(|_| Error::EncryptionFailed)?;
    Ok(LocalBlob {
        layout,
        iv,
        tag,
        encrypted_keys,
        ciphertext: &ciphertext,
    }
    .to_bytes())
}

/// Decrypts the text form with a data key: [`LocalBlob::decode_text`], [`LocalBlob::parse`] and
/// [`LocalBlob::decrypt`] in one call, for a caller that already holds the key.
///
/// # Errors
/// [`Error::Envelope`] for a malformed blob; [`Error::DecryptionFailed`].
pub fn decrypt_text(data_key: &DataKey, text: &str, aad: Aad<'_>) -> Result<Vec<u8>, Error> {
    let bytes = LocalBlob::decode_text(text)?;
    LocalBlob::parse(&bytes)?.decrypt(data_key, aad)
}

#[cfg(test)]
mod tests;
