//! Per-message key derivation and key commitment (FORMAT.md, "Key derivation and commitment").
//!
//! ```text
//! PRK         = HKDF-Extract(salt = message_id, IKM = data key)
//! content key = HKDF-Expand(PRK, "vault-crypto/v1/content-key" || suite, 32)
//! commitment  = HKDF-Expand(PRK, "vault-crypto/v1/commitment"  || suite, 32)
//! ```
//! The content key is unique per message even when a data key is reused (the data-key cache),
//! and the commitment makes a ciphertext open under exactly one data key.
//!
//! Both are computed with HMAC-SHA256 written out over SHA-256's compression function, with
//! exactly the ten compressions HKDF needs here (two per MAC of a short message, two more for
//! each key's pads): the `hkdf` crate computes the same bytes about a third slower, through
//! its general streaming interface (PERFORMANCE.md, "Cheaper derivation"). The tests check
//! every output against the `hkdf` crate and the format's vectors.

use sha2::block_api::compress256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::data_key::DataKey;

/// Domain-separation label of the content key.
pub(crate) const CONTENT_KEY_LABEL: &[u8] = b"vault-crypto/v1/content-key";
/// Domain-separation label of the key commitment.
pub(crate) const COMMITMENT_LABEL: &[u8] = b"vault-crypto/v1/commitment";

/// Length of the message id (the HKDF salt).
pub const MESSAGE_ID_LEN: usize = 32;
/// Length of the key commitment.
pub const COMMITMENT_LEN: usize = 32;

/// The key that seals one message, and the commitment to the data key.
pub(crate) struct MessageKeys {
    pub(crate) content_key: Zeroizing<[u8; 32]>,
    pub(crate) commitment: [u8; COMMITMENT_LEN],
}

pub(crate) fn derive(
    data_key: &DataKey,
    message_id: &[u8; MESSAGE_ID_LEN],
    suite: u16,
) -> MessageKeys {
    let suite = suite.to_be_bytes();
    // One scratch block for every compression, wiped once at the end.
    let mut block = Zeroizing::new([0u8; BLOCK]);
    // HKDF-Extract: PRK = HMAC(salt, IKM).
    let salt = Hmac32::new(&mut block, |key| key.copy_from_slice(message_id));
    let prk = salt.mac(&mut block, &[data_key.expose_secret()]);
    let prk = Hmac32::new(&mut block, |key| prk.write_to(key));
    // HKDF-Expand to one block: T(1) = HMAC(PRK, info || 0x01).
    let mut content_key = Zeroizing::new([0u8; 32]);
    prk.mac(&mut block, &[CONTENT_KEY_LABEL, &suite, &[1]])
        .write_to(&mut content_key);
    let mut commitment = [0u8; COMMITMENT_LEN];
    prk.mac(&mut block, &[COMMITMENT_LABEL, &suite, &[1]])
        .write_to(&mut commitment);
    MessageKeys {
        content_key,
        commitment,
    }
}

/// Constant-time comparison of a stored and a derived commitment: the differences of the four
/// 8-byte words OR-ed together without a branch, then one constant-time test for zero (a
/// byte-wise `ct_eq` costs a `black_box` per byte, about 80 ns).
pub(crate) fn matches(stored: &[u8; COMMITMENT_LEN], derived: &[u8; COMMITMENT_LEN]) -> bool {
    let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
    let diff = stored
        .chunks_exact(8)
        .zip(derived.chunks_exact(8))
        .fold(0u64, |acc, (a, b)| acc | (word(a) ^ word(b)));
    diff.ct_eq(&0).into()
}

/// SHA-256's block.
const BLOCK: usize = 64;
/// The longest message [`Hmac32::mac`] takes: what fits one block with SHA-256's padding (the
/// `0x80` byte and the 8-byte length).
const MAX_MESSAGE: usize = BLOCK - 9;
// Every message MACed here fits one block: the data key, the PRK's output, and each label with
// the suite and HKDF's counter byte.
const _: () = assert!(CONTENT_KEY_LABEL.len() + 3 <= MAX_MESSAGE);
const _: () = assert!(COMMITMENT_LABEL.len() + 3 <= MAX_MESSAGE);

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A SHA-256 chaining value or digest, as its eight words. Wiped on drop: it may be a key's
/// pad state, a PRK or a content key.
struct State([u32; 8]);

impl State {
    /// The digest's 32 bytes (big-endian words) into `out`.
    fn write_to(&self, out: &mut [u8; 32]) {
        for (bytes, word) in out.chunks_exact_mut(4).zip(self.0) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// HMAC-SHA256 (RFC 2104) under a 32-byte key, with the key's inner and outer pads already
/// compressed: each MAC of a message of at most [`MAX_MESSAGE`] bytes is then two compressions.
/// Every function takes the caller's scratch block, so secrets pass through one buffer that the
/// caller wipes once.
struct Hmac32 {
    inner: State,
    outer: State,
}

impl Hmac32 {
    /// Keyed by the 32 bytes `write_key` puts in its argument.
    fn new(block: &mut [u8; BLOCK], write_key: impl Fn(&mut [u8; 32])) -> Self {
        let mut pad_state = |pad: u8| {
            block.fill(0);
            write_key(first_32(block));
            for b in block.iter_mut() {
                *b ^= pad;
            }
            let mut state = State(IV);
            compress256(&mut state.0, std::slice::from_ref(block));
            state
        };
        Self {
            inner: pad_state(0x36),
            outer: pad_state(0x5c),
        }
    }

    /// HMAC of the concatenation of `parts` (at most [`MAX_MESSAGE`] bytes in all).
    fn mac(&self, block: &mut [u8; BLOCK], parts: &[&[u8]]) -> State {
        let mut len = 0;
        for part in parts {
            block[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        let inner = last_block(&self.inner, block, len);
        inner.write_to(first_32(block));
        last_block(&self.outer, block, 32)
    }
}

/// The first 32 bytes of a block, where a key or a digest goes.
fn first_32(block: &mut [u8; BLOCK]) -> &mut [u8; 32] {
    let (first, _) = block
        .split_first_chunk_mut::<32>()
        .unwrap_or_else(|| unreachable!());
    first
}

/// Finishes a hash whose first block is compressed in `state` and whose message (at most
/// [`MAX_MESSAGE`] bytes) is the first `len` bytes of `block`: pads in place, compresses once.
fn last_block(state: &State, block: &mut [u8; BLOCK], len: usize) -> State {
    debug_assert!(len <= MAX_MESSAGE);
    block[len] = 0x80;
    block[len + 1..BLOCK - 8].fill(0);
    // The bit length of everything hashed: the pad block and the message.
    let bits = ((BLOCK + len) as u64) * 8;
    block[BLOCK - 8..].copy_from_slice(&bits.to_be_bytes());
    let mut next = State(state.0);
    compress256(&mut next.0, std::slice::from_ref(block));
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use hkdf::Hkdf;
    use proptest::prelude::*;
    use sha2::Sha256;

    /// The derivation of the `hkdf` crate, written as FORMAT.md states it.
    fn reference(data_key: &[u8; 32], message_id: &[u8; 32], suite: u16) -> ([u8; 32], [u8; 32]) {
        let hkdf = Hkdf::<Sha256>::new(Some(message_id), data_key);
        let suite = suite.to_be_bytes();
        let mut content_key = [0u8; 32];
        let mut commitment = [0u8; 32];
        hkdf.expand_multi_info(&[CONTENT_KEY_LABEL, &suite], &mut content_key)
            .unwrap();
        hkdf.expand_multi_info(&[COMMITMENT_LABEL, &suite], &mut commitment)
            .unwrap();
        (content_key, commitment)
    }

    fn ours(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
        let mut block = [0u8; BLOCK];
        let mut out = [0u8; 32];
        Hmac32::new(&mut block, |k| k.copy_from_slice(key))
            .mac(&mut block, parts)
            .write_to(&mut out);
        out
    }

    #[test]
    fn matches_is_equality() {
        let a: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap());
        assert!(matches(&a, &a));
        for i in 0..256 {
            let mut b = a;
            b[i / 8] ^= 1 << (i % 8);
            assert!(!matches(&a, &b), "bit {i}");
        }
    }

    proptest! {
        #[test]
        fn derive_matches_the_hkdf_crate(
            key in any::<[u8; 32]>(),
            id in any::<[u8; 32]>(),
            suite in any::<u16>(),
        ) {
            let data_key = DataKey::from_unwrapped(Zeroizing::new(key));
            let keys = derive(&data_key, &id, suite);
            let (content_key, commitment) = reference(&key, &id, suite);
            prop_assert_eq!(*keys.content_key, content_key);
            prop_assert_eq!(keys.commitment, commitment);
        }

        #[test]
        fn hmac_matches_the_hmac_crate(key in any::<[u8; 32]>(), msg in proptest::collection::vec(any::<u8>(), 0..=MAX_MESSAGE)) {
            use hmac::{Hmac, KeyInit, Mac};
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
            mac.update(&msg);
            let expected: [u8; 32] = mac.finalize().into_bytes().into();
            prop_assert_eq!(ours(&key, &[&msg]), expected);
        }
    }

    /// RFC 4231, test case 2's message under a 32-byte key, against a digest computed
    /// independently (Python's `hmac` module).
    #[test]
    fn hmac_of_a_known_answer() {
        let key: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap());
        let mac = ours(&key, &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "099805f4ac310786968565c098db515cc50862b420ae31e20238312344bed36a"
        );
    }
}
