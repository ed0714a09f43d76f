//! A root key version's secret material, and the small helpers the ring and the key code share.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::state::RootKey;
use super::{KEK_LABEL, SCHEME};
use crate::aead::KEY_LEN;
use crate::context::KeyContext;
use crate::error::{KeyRingError, ProviderError, ProviderErrorKind};

/// One root key version's secret material: the key and its HKDF-Extract state, kept so each
/// KEK costs one HKDF-Expand. Not `Clone`: rings share it through an `Arc`.
pub(super) struct Material {
    pub(super) root: RootKey,
    pub(super) kdf: Hkdf<Sha256>,
}

impl Material {
    pub(super) fn new(root: &RootKey) -> Self {
        let kdf = Hkdf::<Sha256>::new(None, root.as_ref());
        Self {
            root: Zeroizing::new(**root),
            kdf,
        }
    }

    pub(super) fn kek(&self, ctx: &KeyContext) -> Zeroizing<[u8; KEY_LEN]> {
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes never exceeds HKDF-SHA256's output limit.
        let _ = self
            .kdf
            .expand_multi_info(&[KEK_LABEL, ctx.canonical_bytes()], kek.as_mut());
        kek
    }
}

pub(super) fn provider_error(kind: ProviderErrorKind, message: &'static str) -> ProviderError {
    ProviderError::new(kind, SCHEME, message)
}

pub(super) fn ring_unavailable(e: KeyRingError) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::Unavailable,
        SCHEME,
        format!("cannot check the key ring: {e}"),
    )
}

/// `v<N>` with N from 1, without leading zeros.
pub(super) fn parse_version(s: &str) -> Option<u32> {
    let digits = s.strip_prefix('v')?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
