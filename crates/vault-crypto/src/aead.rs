//! AES-256-GCM behind one small interface, with two interchangeable implementations.
//!
//! `ring` (default) is the fastest AES-256-GCM on the machines we measured; RustCrypto's
//! `aes-gcm` (feature `rustcrypto`) is pure Rust. Both produce identical bytes; the test vectors
//! run through each. With both features on, ring is the default and both are available.

#[cfg(not(any(feature = "ring", feature = "rustcrypto")))]
compile_error!("vault-crypto needs an AES-256-GCM backend: enable feature `ring` or `rustcrypto`");

/// AES-256 key length.
pub(crate) const KEY_LEN: usize = 32;
/// GCM nonce length (96 bits, NIST SP 800-38D §8.2).
pub(crate) const NONCE_LEN: usize = 12;
/// GCM tag length (128 bits; shorter tags are never used).
pub(crate) const TAG_LEN: usize = 16;

/// Authentication failed. Carries no detail on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unspecified;

/// An AES-256-GCM implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// `ring`'s AES-256-GCM (assembly, with run-time CPU feature detection).
    #[cfg(feature = "ring")]
    Ring,
    /// RustCrypto's `aes-gcm` (pure Rust; key schedules zeroized on drop).
    #[cfg(feature = "rustcrypto")]
    RustCrypto,
}

impl Default for Backend {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Backend {
    /// The backend used unless one is asked for: ring when compiled in.
    #[cfg(feature = "ring")]
    pub const DEFAULT: Self = Self::Ring;
    /// The backend used unless one is asked for: ring when compiled in.
    #[cfg(not(feature = "ring"))]
    pub const DEFAULT: Self = Self::RustCrypto;

    /// Every backend compiled into this build.
    pub const ALL: &'static [Self] = &[
        #[cfg(feature = "ring")]
        Self::Ring,
        #[cfg(feature = "rustcrypto")]
        Self::RustCrypto,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "ring")]
            Self::Ring => "ring",
            #[cfg(feature = "rustcrypto")]
            Self::RustCrypto => "rustcrypto",
        }
    }

    /// Expands `key` for this backend, for repeated use.
    pub(crate) fn key(self, key: &[u8; KEY_LEN]) -> Result<AeadKey, Unspecified> {
        Ok(match self {
            #[cfg(feature = "ring")]
            Self::Ring => AeadKey::Ring(ring_backend::key(key)?),
            #[cfg(feature = "rustcrypto")]
            Self::RustCrypto => AeadKey::RustCrypto(rustcrypto_backend::key(key)),
        })
    }

    /// Encrypts `in_out` in place under a one-off key and returns the tag.
    pub(crate) fn seal_in_place(
        self,
        key: &[u8; KEY_LEN],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Unspecified> {
        // The expanded key (about a kilobyte with ring's GHASH tables) is built and used in
        // place, not moved through an `AeadKey`: each move is a copy on the per-message path.
        match self {
            #[cfg(feature = "ring")]
            Self::Ring => ring_backend::seal(&ring_backend::key(key)?, nonce, aad, in_out),
            #[cfg(feature = "rustcrypto")]
            Self::RustCrypto => {
                rustcrypto_backend::seal(&rustcrypto_backend::key(key), nonce, aad, in_out)
            }
        }
    }

    /// Checks the tag and decrypts `in_out` in place under a one-off key. On failure `in_out`
    /// is zeroed, so no unauthenticated plaintext can escape.
    pub(crate) fn open_in_place(
        self,
        key: &[u8; KEY_LEN],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Unspecified> {
        let result = match self {
            #[cfg(feature = "ring")]
            Self::Ring => {
                ring_backend::key(key).and_then(|k| ring_backend::open(&k, nonce, aad, in_out, tag))
            }
            #[cfg(feature = "rustcrypto")]
            Self::RustCrypto => {
                rustcrypto_backend::open(&rustcrypto_backend::key(key), nonce, aad, in_out, tag)
            }
        };
        if result.is_err() {
            in_out.fill(0);
        }
        result
    }
}

impl Backend {
    /// Checks the tag and decrypts `in_out[src..]`, leaving the plaintext at the start of
    /// `in_out` (its first `in_out.len() - src` bytes) and no plaintext after it: the
    /// decryption and the move to the front are one pass with ring. Zeroes `in_out` on
    /// failure.
    pub(crate) fn open_shifted(
        self,
        key: &[u8; KEY_LEN],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        src: usize,
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Unspecified> {
        let result = match self {
            #[cfg(feature = "ring")]
            Self::Ring => ring_backend::key(key)
                .and_then(|k| ring_backend::open_shifted(&k, nonce, aad, in_out, src, tag)),
            #[cfg(feature = "rustcrypto")]
            Self::RustCrypto => in_out
                .get_mut(src..)
                .ok_or(Unspecified)
                .and_then(|ciphertext| {
                    rustcrypto_backend::open(
                        &rustcrypto_backend::key(key),
                        nonce,
                        aad,
                        ciphertext,
                        tag,
                    )
                })
                .map(|()| {
                    // Moved to the front; what is left past it is the tail of the plaintext's
                    // first copy: wiped, so no plaintext outlives the caller's truncation.
                    in_out.copy_within(src.., 0);
                    let len = in_out.len() - src;
                    in_out[len..].fill(0);
                }),
        };
        if result.is_err() {
            in_out.fill(0);
        }
        result
    }
}

/// An expanded AES-256-GCM key (key schedule and GHASH tables), reusable across messages.
pub(crate) enum AeadKey {
    #[cfg(feature = "ring")]
    Ring(ring::aead::LessSafeKey),
    #[cfg(feature = "rustcrypto")]
    RustCrypto(aes_gcm::Aes256Gcm),
}

impl AeadKey {
    /// Encrypts `in_out` in place and returns the tag.
    pub(crate) fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Unspecified> {
        match self {
            #[cfg(feature = "ring")]
            Self::Ring(k) => ring_backend::seal(k, nonce, aad, in_out),
            #[cfg(feature = "rustcrypto")]
            Self::RustCrypto(k) => rustcrypto_backend::seal(k, nonce, aad, in_out),
        }
    }

    /// Checks the tag and decrypts `in_out` in place; zeroes it on failure.
    pub(crate) fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Unspecified> {
        let result = match self {
            #[cfg(feature = "ring")]
            Self::Ring(k) => ring_backend::open(k, nonce, aad, in_out, tag),
            #[cfg(feature = "rustcrypto")]
            Self::RustCrypto(k) => rustcrypto_backend::open(k, nonce, aad, in_out, tag),
        };
        if result.is_err() {
            in_out.fill(0);
        }
        result
    }
}

#[cfg(feature = "ring")]
mod ring_backend {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

    use super::{KEY_LEN, NONCE_LEN, TAG_LEN, Unspecified};

    pub(super) fn key(key: &[u8; KEY_LEN]) -> Result<LessSafeKey, Unspecified> {
        UnboundKey::new(&AES_256_GCM, key)
            .map(LessSafeKey::new)
            .map_err(|_| Unspecified)
    }

    pub(super) fn seal(
        key: &LessSafeKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Unspecified> {
        // Callers draw nonces from the OS CSPRNG under keys derived per message or per
        // context (FORMAT.md).
        let nonce = Nonce::assume_unique_for_key(*nonce);
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), in_out)
            .map_err(|_| Unspecified)?;
        tag.as_ref().try_into().map_err(|_| Unspecified)
    }

    pub(super) fn open(
        key: &LessSafeKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Unspecified> {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        key.open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(*tag), in_out, 0..)
            .map(|_| ())
            .map_err(|_| Unspecified)
    }

    pub(super) fn open_shifted(
        key: &LessSafeKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        src: usize,
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Unspecified> {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        key.open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(*tag), in_out, src..)
            .map(|_| ())
            .map_err(|_| Unspecified)
    }
}

#[cfg(feature = "rustcrypto")]
mod rustcrypto_backend {
    use aes_gcm::aead::array::Array;
    use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};

    use super::{KEY_LEN, NONCE_LEN, TAG_LEN, Unspecified};

    pub(super) fn key(key: &[u8; KEY_LEN]) -> Aes256Gcm {
        Aes256Gcm::new(&Array::from(*key))
    }

    pub(super) fn seal(
        key: &Aes256Gcm,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Unspecified> {
        let tag = key
            .encrypt_inout_detached(&Array::from(*nonce), aad, in_out.into())
            .map_err(|_| Unspecified)?;
        Ok(tag.into())
    }

    pub(super) fn open(
        key: &Aes256Gcm,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Unspecified> {
        key.decrypt_inout_detached(&Array::from(*nonce), aad, in_out.into(), &Array::from(*tag))
            .map_err(|_| Unspecified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// AES-256 cases 13-16 of McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)",
    /// revised 2005, Appendix B (the test vectors NIST's GCM validation builds on).
    const GCM_SPEC_CASES: &[(&str, &str, &str, &str, &str, &str)] = &[
        // key, iv, plaintext, aad, ciphertext, tag
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "",
            "",
            "530f8afbc74536b9a963b4f1c4cb738b",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "00000000000000000000000000000000",
            "",
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919",
        ),
        (
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
            "",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
            "b094dac5d93471bdec1a502270e3cc6c",
        ),
        (
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];

    #[test]
    fn every_backend_reproduces_the_gcm_spec_vectors() {
        for backend in Backend::ALL {
            for (key, iv, pt, aad, ct, tag) in GCM_SPEC_CASES {
                let key: [u8; 32] = unhex(key).try_into().unwrap();
                let iv: [u8; 12] = unhex(iv).try_into().unwrap();
                let mut buf = unhex(pt);
                let got = backend
                    .seal_in_place(&key, &iv, &unhex(aad), &mut buf)
                    .unwrap();
                assert_eq!(hex::encode(&buf), *ct, "{backend:?}");
                assert_eq!(hex::encode(got), *tag, "{backend:?}");
                backend
                    .open_in_place(&key, &iv, &unhex(aad), &mut buf, &got)
                    .unwrap();
                assert_eq!(hex::encode(&buf), *pt, "{backend:?}");
            }
        }
    }

    #[test]
    fn a_wrong_tag_zeroes_the_buffer() {
        for backend in Backend::ALL {
            let key = [7u8; 32];
            let nonce = [1u8; 12];
            let mut buf = b"attack at dawn".to_vec();
            let mut tag = backend.seal_in_place(&key, &nonce, b"", &mut buf).unwrap();
            tag[0] ^= 1;
            assert_eq!(
                backend.open_in_place(&key, &nonce, b"", &mut buf, &tag),
                Err(Unspecified)
            );
            assert!(buf.iter().all(|&b| b == 0), "{backend:?}");
        }
    }

    /// A shifted open leaves the plaintext at the front and none of it past the front: every
    /// byte after it is the buffer's own (header, ciphertext) or zero. A wrong tag zeroes all.
    #[test]
    fn a_shifted_open_leaves_no_plaintext_behind() {
        for backend in Backend::ALL {
            let (key, nonce, aad) = ([7u8; 32], [1u8; 12], b"header");
            for (src, len) in [(0usize, 50usize), (10, 50), (40, 50), (80, 50), (50, 0)] {
                let plaintext = vec![0xAAu8; len];
                let mut ciphertext = plaintext.clone();
                let tag = backend
                    .seal_in_place(&key, &nonce, aad, &mut ciphertext)
                    .unwrap();
                let mut buf: Vec<u8> = (0..src).map(|i| u8::try_from(i % 7).unwrap()).collect();
                buf.extend_from_slice(&ciphertext);
                let before = buf.clone();
                backend
                    .open_shifted(&key, &nonce, aad, &mut buf, src, &tag)
                    .unwrap();
                assert_eq!(&buf[..len], &plaintext[..], "{backend:?} {src}");
                for (i, &b) in buf.iter().enumerate().skip(len) {
                    assert!(b == before[i] || b == 0, "{backend:?} {src}: byte {i}");
                    assert!(
                        b != 0xAA || before[i] == 0xAA,
                        "{backend:?} {src}: plaintext at {i}"
                    );
                }
                let mut bad = before.clone();
                let mut wrong = tag;
                wrong[0] ^= 1;
                assert_eq!(
                    backend.open_shifted(&key, &nonce, aad, &mut bad, src, &wrong),
                    Err(Unspecified)
                );
                assert!(bad.iter().all(|&b| b == 0), "{backend:?} {src}");
            }
        }
    }
}
