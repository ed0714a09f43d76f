//! What makes an RSA wrap authentic: the context binding inside every wrap, and the RS256
//! signature over it, verified locally with the key version's public key.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use vault_crypto::KeyContext;

use crate::BINDING_LEN;

/// The RSA public keys of key versions, by version (immutable in Key Vault, so never expired).
pub(crate) type PublicKeys = std::sync::Mutex<std::collections::HashMap<String, Arc<RsaPublicKey>>>;

/// One key version's RSA public key.
#[derive(Debug)]
pub(crate) struct RsaPublicKey {
    pub(crate) components: ring::signature::RsaPublicKeyComponents<Vec<u8>>,
}

impl RsaPublicKey {
    /// The modulus length in bytes: the length of a wrap and of a signature.
    pub(crate) fn len(&self) -> usize {
        self.components.n.len()
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.components
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                message,
                signature,
            )
            .is_ok()
    }
}

/// What the signature of an RSA wrap covers.
pub(crate) fn signed_message(binding: &[u8; BINDING_LEN], wrapped: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + BINDING_LEN + wrapped.len());
    m.extend_from_slice(b"vault-kms-azure/v2\0");
    m.extend_from_slice(binding);
    m.extend_from_slice(wrapped);
    m
}

/// `SHA-256("vault-kms-azure/v1" || 0x00 || canonical(ctx))`.
pub(crate) fn binding(ctx: &KeyContext) -> [u8; BINDING_LEN] {
    let mut h = Sha256::new();
    h.update(b"vault-kms-azure/v1\0");
    h.update(ctx.canonical_bytes());
    h.finalize().into()
}
