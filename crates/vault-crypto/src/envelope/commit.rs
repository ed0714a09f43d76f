//! Per-message key derivation and key commitment (FORMAT.md, "Key derivation and commitment").
//!
//! ```text
//! PRK         = HKDF-Extract(salt = message_id, IKM = data key)
//! content key = HKDF-Expand(PRK, "vault-crypto/v1/content-key" || suite, 32)
//! commitment  = HKDF-Expand(PRK, "vault-crypto/v1/commitment"  || suite, 32)
//! ```
//! The content key is unique per message even when a data key is reused (the data-key cache),
//! and the commitment makes a ciphertext open under exactly one data key.

use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

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
    let hkdf = Hkdf::<Sha256>::new(Some(message_id), data_key.expose_secret());
    let suite = suite.to_be_bytes();
    let mut content_key = Zeroizing::new([0u8; 32]);
    let mut commitment = [0u8; COMMITMENT_LEN];
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: expansion cannot fail.
    let _ = hkdf.expand_multi_info(&[CONTENT_KEY_LABEL, &suite], content_key.as_mut());
    let _ = hkdf.expand_multi_info(&[COMMITMENT_LABEL, &suite], &mut commitment);
    MessageKeys {
        content_key,
        commitment,
    }
}

/// Constant-time comparison of a stored and a derived commitment.
pub(crate) fn matches(stored: &[u8; COMMITMENT_LEN], derived: &[u8; COMMITMENT_LEN]) -> bool {
    stored.ct_eq(derived).into()
}
