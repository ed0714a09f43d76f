//! The envelope's suites: how one message's content key and key commitment come from its data
//! key (FORMAT.md, "Suites"). Every suite seals with AES-256-GCM and commits to the data key;
//! they differ in the derivation.
//!
//! - Suite 1 (`commit.rs`): HKDF-SHA256, an extract and two expands (ten SHA-256 compressions).
//! - Suite 3, what [`seal`](crate::seal) writes since 2026-12: the content key is AES-GCM-SIV's
//!   message-encryption key (RFC 8452, section 4) under the data key, with the first 12 bytes of
//!   the message id as its nonce: four AES-256 blocks. The commitment is one SHA-256 of a label, the
//!   data key and half the message id (one compression). The data key is uniform, so HKDF's
//!   extract step buys nothing.
//!
//! Suite 2 is never assigned: the negative vectors of version 1 use it as the example of an
//! unknown suite, and those files never change.

use aes::Aes256Enc;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::commit::{self, COMMITMENT_LEN, MESSAGE_ID_LEN, MessageKeys};
use crate::aead::NONCE_LEN;
use crate::data_key::DataKey;

/// Suite 1: AES-256-GCM with a 96-bit random nonce and 128-bit tag; content key and key
/// commitment derived with HKDF-SHA256.
pub const SUITE_AES256GCM_HKDF_SHA256_COMMIT: u16 = 0x0001;
/// Suite 3: AES-256-GCM with a 96-bit random nonce and 128-bit tag; the content key derived with
/// AES-256 as in AES-GCM-SIV (RFC 8452), the key commitment with SHA-256.
pub const SUITE_AES256GCM_AESKDF_SHA256_COMMIT: u16 = 0x0003;

/// Suite 4: suite 3's derivation (its own commitment label), the plaintext sealed in
/// AES-256-GCM segments of a size the header gives (FORMAT.md, "Suite 0x0004: segments").
pub const SUITE_AES256GCM_SEGMENTED_COMMIT: u16 = 0x0004;

/// The first of the four AES counters of suite 3's content key (2 to 5: RFC 8452's
/// message-encryption key).
pub(crate) const CONTENT_COUNTERS_3: u32 = 2;
/// The first of the four AES counters of suite 4's content key (6 to 9): the same derivation on
/// other blocks, so a data key and message id never give suites 3 and 4 one content key.
pub(crate) const CONTENT_COUNTERS_4: u32 = 6;

/// Domain-separation label of suite 3's commitment.
pub(crate) const COMMITMENT_LABEL_3: &[u8] = b"vault/3";
/// Domain-separation label of suite 4's commitment.
pub(crate) const COMMITMENT_LABEL_4: &[u8] = b"vault/4";

/// A suite this library opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Suite {
    /// [`SUITE_AES256GCM_HKDF_SHA256_COMMIT`]: opened, no longer written.
    HkdfSha256,
    /// [`SUITE_AES256GCM_AESKDF_SHA256_COMMIT`]: what every seal writes.
    AesKdfSha256,
    /// [`SUITE_AES256GCM_SEGMENTED_COMMIT`]: what every streamed seal writes.
    Segmented,
}

impl Suite {
    /// The suite new envelopes are sealed with.
    pub(crate) const SEAL: Self = Self::AesKdfSha256;

    /// The suite's id in the header.
    pub(crate) fn id(self) -> u16 {
        match self {
            Self::HkdfSha256 => SUITE_AES256GCM_HKDF_SHA256_COMMIT,
            Self::AesKdfSha256 => SUITE_AES256GCM_AESKDF_SHA256_COMMIT,
            Self::Segmented => SUITE_AES256GCM_SEGMENTED_COMMIT,
        }
    }

    /// The suite of a header's id, if this library knows it.
    pub(crate) fn from_id(id: u16) -> Option<Self> {
        match id {
            SUITE_AES256GCM_HKDF_SHA256_COMMIT => Some(Self::HkdfSha256),
            SUITE_AES256GCM_AESKDF_SHA256_COMMIT => Some(Self::AesKdfSha256),
            SUITE_AES256GCM_SEGMENTED_COMMIT => Some(Self::Segmented),
            _ => None,
        }
    }

    /// The content key and commitment of the message with this message id.
    pub(crate) fn derive(
        self,
        data_key: &DataKey,
        message_id: &[u8; MESSAGE_ID_LEN],
    ) -> MessageKeys {
        match self {
            Self::HkdfSha256 => commit::derive(data_key, message_id, self.id()),
            Self::AesKdfSha256 => MessageKeys {
                content_key: content_key_3(data_key, message_id, CONTENT_COUNTERS_3),
                commitment: commitment_3(data_key, message_id, COMMITMENT_LABEL_3),
            },
            Self::Segmented => MessageKeys {
                content_key: content_key_3(data_key, message_id, CONTENT_COUNTERS_4),
                commitment: commitment_3(data_key, message_id, COMMITMENT_LABEL_4),
            },
        }
    }
}

/// Suite 3's content key: AES-GCM-SIV's message-encryption key for a 256-bit key-generating key
/// (RFC 8452, section 4): the first 8 bytes of each of `AES-256(DK, le32(i) || N)` for
/// i = 2, 3, 4, 5, where N is the first 12 bytes of the message id. Blocks 0 and 1 (GCM-SIV's
/// authentication key) are not needed. A data key reused by the cache seals each message under
/// its own content key: two messages share one only if 96 random bits repeat, and share a key
/// and a GCM nonce only if 192 do.
pub(crate) fn content_key_3(
    data_key: &DataKey,
    message_id: &[u8; MESSAGE_ID_LEN],
    first_counter: u32,
) -> Zeroizing<[u8; 32]> {
    let (nonce, _) = message_id
        .split_first_chunk::<NONCE_LEN>()
        .unwrap_or_else(|| unreachable!());
    // The key schedule is wiped on drop (`aes`'s `zeroize` feature).
    let cipher = Aes256Enc::new(data_key.expose_secret().into());
    let mut blocks = [Array::<u8, _>::default(); 4];
    for (counter, block) in (first_counter..).zip(blocks.iter_mut()) {
        let (head, tail) = block.split_at_mut(4);
        head.copy_from_slice(&counter.to_le_bytes());
        tail.copy_from_slice(nonce);
    }
    cipher.encrypt_blocks(&mut blocks);
    let mut key = Zeroizing::new([0u8; 32]);
    for (out, block) in key.chunks_exact_mut(8).zip(&blocks) {
        out.copy_from_slice(&block[..8]);
    }
    for block in &mut blocks {
        block.as_mut_slice().zeroize();
    }
    key
}

/// Suites 3 and 4's commitment: `SHA-256(label || DK || message_id[0..16])`, 55 bytes, so one
/// compression of SHA-256. Two data keys with one commitment under one message id are a
/// SHA-256 collision. The half of the message id keeps commitments per message: envelopes that
/// share a data key (the cache's, an issued key's) do not show it by equal commitments, and a
/// search for a data key matching any of many commitments gains nothing from their number.
pub(crate) fn commitment_3(
    data_key: &DataKey,
    message_id: &[u8; MESSAGE_ID_LEN],
    label: &[u8],
) -> [u8; COMMITMENT_LEN] {
    let (salt, _) = message_id
        .split_first_chunk::<COMMITMENT_SALT_LEN>()
        .unwrap_or_else(|| unreachable!());
    // The hasher's buffer holds the data key: `sha2`'s `zeroize` feature wipes it on drop.
    let mut hash = Sha256::new();
    hash.update(label);
    hash.update(data_key.expose_secret());
    hash.update(salt);
    hash.finalize().into()
}

/// How much of the message id suite 3's commitment hashes: what fits one SHA-256 block beside
/// the label and the data key (55 bytes before the padding).
const COMMITMENT_SALT_LEN: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(bytes: [u8; 32]) -> DataKey {
        DataKey::from_unwrapped(Zeroizing::new(bytes))
    }

    /// The first 8 bytes of `AES-256(k, le32(i) || id[..12])`, one block at a time.
    fn half_block(k: [u8; 32], i: u32, id: &[u8; 32]) -> Vec<u8> {
        let mut block = Array::from([0u8; 16]);
        block[..4].copy_from_slice(&i.to_le_bytes());
        block[4..].copy_from_slice(&id[..12]);
        Aes256Enc::new(&Array::from(k)).encrypt_block(&mut block);
        block[..8].to_vec()
    }

    /// RFC 8452, appendix C.2 (AEAD_AES_256_GCM_SIV), its first derivation: key-generating key
    /// `01 00..00`, nonce `03 00..00` (here the message id's first 12 bytes; the rest must not
    /// matter). The RFC's record authentication key (blocks 0 and 1 of the same layout) pins the
    /// layout; the content key (blocks 2 to 5) was computed independently with OpenSSL's AES-ECB
    /// (Python `cryptography`).
    #[test]
    fn the_content_key_is_rfc_8452s_message_encryption_key() {
        let mut k = [0u8; 32];
        k[0] = 1;
        let mut id = [0xffu8; 32];
        id[..12].fill(0);
        id[0] = 3;
        let auth = [half_block(k, 0, &id), half_block(k, 1, &id)].concat();
        assert_eq!(hex::encode(auth), "b5d3c529dfafac43136d2d11be284d7f");
        assert_eq!(
            hex::encode(*content_key_3(&key(k), &id, CONTENT_COUNTERS_3)),
            "b914f4742be9e1d7a2f84addbf96dec3456e3c6c05ecc157cdbf0700fedad222"
        );
    }

    #[test]
    fn ids_round_trip_and_two_is_unknown() {
        for suite in [Suite::HkdfSha256, Suite::AesKdfSha256, Suite::Segmented] {
            assert_eq!(Suite::from_id(suite.id()), Some(suite));
        }
        assert_eq!(Suite::from_id(2), None);
        assert_eq!(Suite::from_id(0), None);
        assert_eq!(Suite::SEAL.id(), 3);
    }

    proptest! {
        #[test]
        fn the_commitment_is_sha256_of_label_key_and_half_the_id(
            k in any::<[u8; 32]>(),
            id in any::<[u8; 32]>(),
        ) {
            let mut input = COMMITMENT_LABEL_3.to_vec();
            input.extend_from_slice(&k);
            input.extend_from_slice(&id[..16]);
            // One SHA-256 block: at most 55 bytes before the padding.
            prop_assert_eq!(input.len(), 55);
            let expected: [u8; 32] = Sha256::digest(&input).into();
            prop_assert_eq!(commitment_3(&key(k), &id, COMMITMENT_LABEL_3), expected);
            // The other half of the id is not in it; a change in the first half is.
            let mut other = id;
            other[31] ^= 1;
            prop_assert_eq!(commitment_3(&key(k), &other, COMMITMENT_LABEL_3), expected);
            other[0] ^= 1;
            prop_assert_ne!(commitment_3(&key(k), &other, COMMITMENT_LABEL_3), expected);
        }

        /// Each half-block is AES-256 of its own counter: checked against RustCrypto's AES one
        /// block at a time.
        #[test]
        fn the_content_key_is_four_half_blocks(k in any::<[u8; 32]>(), id in any::<[u8; 32]>()) {
            let expected: Vec<u8> = (2..6).flat_map(|i| half_block(k, i, &id)).collect();
            prop_assert_eq!(content_key_3(&key(k), &id, CONTENT_COUNTERS_3).to_vec(), expected);
        }

        /// Another data key gives another commitment and another content key.
        #[test]
        fn another_key_derives_other_values(k in any::<[u8; 32]>(), flip in 0usize..256, id in any::<[u8; 32]>()) {
            let mut other = k;
            other[flip / 8] ^= 1 << (flip % 8);
            let (a, b) = (key(k), key(other));
            let (x, y) = (Suite::SEAL.derive(&a, &id), Suite::SEAL.derive(&b, &id));
            prop_assert_ne!(x.commitment, y.commitment);
            prop_assert_ne!(*x.content_key, *y.content_key);
            // The streamed suite's keys are its own, from the same data key and message id.
            let z = Suite::Segmented.derive(&a, &id);
            prop_assert_ne!(x.commitment, z.commitment);
            prop_assert_ne!(*x.content_key, *z.content_key);
            let expected: Vec<u8> = (6..10).flat_map(|i| half_block(k, i, &id)).collect();
            prop_assert_eq!(z.content_key.to_vec(), expected);
        }
    }
}
