//! The WorkOS SDKs' local-encryption blob (`vault.encrypt` / `vault.decrypt` in the Node, Python
//! and Kotlin SDKs), so a Rust caller can open what an SDK sealed through our server, and seal
//! what an SDK can open. Specified in `docs/FORMAT.md`, section "WorkOS SDK blob".
//!
//! ```text
//! iv [12] | tag [16] | len(encrypted_keys) as unsigned LEB128 (1 to 5 bytes, minimal)
//!         | encrypted_keys | ciphertext (as long as the plaintext, to the end)
//! ```
//! The AEAD is AES-256-GCM under the data key the server issued; the caller's associated data
//! (not stored) is its only AAD. The key context is bound only through `encrypted_keys`, which
//! the server opens. The text form is padded standard base64.

// A parser of outside bytes: no index or arithmetic that can panic or wrap.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::aead::{Backend, NONCE_LEN, TAG_LEN};
use crate::data_key::DataKey;
use crate::envelope::MAX_PLAINTEXT_LEN;
use crate::error::{EnvelopeError, Error};

/// The most bytes of `encrypted_keys` a blob may carry (ours are a few hundred bytes; an RSA-4096
/// wrap under eight keys stays far below).
pub const MAX_ENCRYPTED_KEYS_LEN: usize = 64 * 1024;
/// The longest LEB128 length prefix: five bytes hold any `u32`.
const MAX_LEB128_LEN: usize = 5;
/// The largest text form accepted, in bytes of base64.
pub const MAX_BLOB_TEXT_LEN: usize =
    (NONCE_LEN + TAG_LEN + MAX_LEB128_LEN + MAX_ENCRYPTED_KEYS_LEN + MAX_PLAINTEXT_LEN).div_ceil(3)
        * 4;

/// A parsed SDK blob. Borrows `encrypted_keys` and the ciphertext from the input.
///
/// Only the canonical encoding parses (minimal LEB128), so `LocalBlob::parse(b)?.to_bytes() == b`.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalBlob<'a> {
    iv: [u8; NONCE_LEN],
    tag: [u8; TAG_LEN],
    encrypted_keys: &'a [u8],
    ciphertext: &'a [u8],
}

impl std::fmt::Debug for LocalBlob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBlob")
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

impl<'a> LocalBlob<'a> {
    /// Parses the binary form.
    ///
    /// # Errors
    /// [`EnvelopeError`] naming the first structural problem.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        let (iv, rest) = bytes
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(EnvelopeError::Truncated)?;
        let (tag, rest) = rest
            .split_first_chunk::<TAG_LEN>()
            .ok_or(EnvelopeError::Truncated)?;
        let (len, used) = read_leb128(rest)?;
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
        let (encrypted_keys, ciphertext) = rest
            .get(used..)
            .and_then(|r| r.split_at_checked(len))
            .ok_or(EnvelopeError::Truncated)?;
        if ciphertext.len() > MAX_PLAINTEXT_LEN {
            return Err(EnvelopeError::TooLarge {
                what: "ciphertext",
                max: MAX_PLAINTEXT_LEN,
            });
        }
        Ok(Self {
            iv: *iv,
            tag: *tag,
            encrypted_keys,
            ciphertext,
        })
    }

    /// Decodes the text form (padded standard base64, as the SDKs emit it) into bytes for
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
            NONCE_LEN
                + TAG_LEN
                + leb128_len(len)
                + self.encrypted_keys.len()
                + self.ciphertext.len(),
        );
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(&self.tag);
        write_leb128(&mut out, len);
        out.extend_from_slice(self.encrypted_keys);
        out.extend_from_slice(self.ciphertext);
        out
    }

    /// Decrypts with the data key the server returned for [`encrypted_keys`](Self::encrypted_keys).
    /// `aad` must be what the encrypting side passed (empty for none).
    ///
    /// # Errors
    /// [`Error::DecryptionFailed`] for a wrong key or AAD or tampered bytes.
    pub fn decrypt(&self, data_key: &DataKey, aad: &[u8]) -> Result<Vec<u8>, Error> {
        let mut plaintext = self.ciphertext.to_vec();
        Backend::DEFAULT
            .open_in_place(
                data_key.expose_secret(),
                &self.iv,
                aad,
                &mut plaintext,
                &self.tag,
            )
            .map_err(|_| Error::DecryptionFailed)?;
        Ok(plaintext)
    }
}

/// Encrypts `plaintext` as the SDKs' `vault.encrypt` does, with a fresh random IV, and returns
/// the text form. `data_key` and `encrypted_keys` are a pair from `POST /vault/v1/keys/data-key`.
///
/// # Errors
/// [`Error::Envelope`] if `encrypted_keys` is empty or too long, [`Error::PlaintextTooLarge`],
/// [`Error::Random`].
pub fn encrypt(
    data_key: &DataKey,
    encrypted_keys: &[u8],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<String, Error> {
    let mut iv = [0u8; NONCE_LEN];
    crate::rand::fill(&mut iv)?;
    Ok(STANDARD.encode(encrypt_with_iv(
        data_key,
        encrypted_keys,
        plaintext,
        aad,
        iv,
    )?))
}

/// [`encrypt`] with a caller-chosen IV, in binary form (for test vectors via
/// [`crate::danger::workos_encrypt_with_iv`]).
// Lengths checked against their limits above: the sums and the tag's slice cannot fail.
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
pub(crate) fn encrypt_with_iv(
    data_key: &DataKey,
    encrypted_keys: &[u8],
    plaintext: &[u8],
    aad: &[u8],
    iv: [u8; NONCE_LEN],
) -> Result<Vec<u8>, Error> {
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
    let len = u32::try_from(encrypted_keys.len()).map_err(|_| EnvelopeError::TooLarge {
        what: "encrypted keys",
        max: MAX_ENCRYPTED_KEYS_LEN,
    })?;
    let head = NONCE_LEN + TAG_LEN + leb128_len(len) + encrypted_keys.len();
    let mut out = Vec::with_capacity(head + plaintext.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&[0u8; TAG_LEN]);
    write_leb128(&mut out, len);
    out.extend_from_slice(encrypted_keys);
    out.extend_from_slice(plaintext);
    let tag = Backend::DEFAULT
        .seal_in_place(data_key.expose_secret(), &iv, aad, &mut out[head..])
        .map_err(|_| Error::EncryptionFailed)?;
    out[NONCE_LEN..NONCE_LEN + TAG_LEN].copy_from_slice(&tag);
    Ok(out)
}

/// Decrypts the text form with a data key: [`LocalBlob::decode_text`], [`LocalBlob::parse`] and
/// [`LocalBlob::decrypt`] in one call, for a caller that already holds the key.
///
/// # Errors
/// [`Error::Envelope`] for a malformed blob; [`Error::DecryptionFailed`].
pub fn decrypt_text(data_key: &DataKey, text: &str, aad: &[u8]) -> Result<Vec<u8>, Error> {
    let bytes = LocalBlob::decode_text(text)?;
    LocalBlob::parse(&bytes)?.decrypt(data_key, aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_matches_the_sdk_table() {
        // leb128.spec.ts in the Node SDK.
        let table: &[(u32, &[u8])] = &[
            (1, &[0x01]),
            (42, &[0x2a]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x80, 0x80, 0x01]),
            (1_000_000, &[0xc0, 0x84, 0x3d]),
            (2_097_151, &[0xff, 0xff, 0x7f]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
            (268_435_456, &[0x80, 0x80, 0x80, 0x80, 0x01]),
            (u32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for &(value, bytes) in table {
            let mut out = Vec::new();
            write_leb128(&mut out, value);
            assert_eq!(out, bytes, "encode {value}");
            assert_eq!(leb128_len(value), bytes.len());
            assert_eq!(
                read_leb128(bytes),
                Ok((value, bytes.len())),
                "decode {value}"
            );
        }
    }

    #[test]
    fn leb128_rejects_overlong_truncated_and_non_minimal() {
        assert_eq!(read_leb128(&[0x80]), Err(EnvelopeError::Truncated));
        assert_eq!(read_leb128(&[]), Err(EnvelopeError::Truncated));
        assert!(read_leb128(&[0xff, 0xff, 0xff, 0xff, 0x10]).is_err());
        assert!(read_leb128(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        assert!(read_leb128(&[0x80, 0x00]).is_err());
    }
}
