//! The only source of randomness: the kernel's CSPRNG.
//!
//! Every random byte of this crate (data keys, message ids, nonces, root keys) comes from the
//! kernel, never from a generator of our own, so no output can repeat across `fork` or a
//! virtual machine snapshot. Where the kernel offers it (Linux 6.11 and later), the bytes come
//! from `getrandom` in the vDSO: the kernel's own ChaCha20 generator run in this process, on a
//! state the kernel wipes in a forked child (`MAP_DROPPABLE`, wipe-on-fork) and reseeds when a
//! virtual machine is cloned, at about a quarter of a system call's cost (DESIGN.md,
//! "Randomness"). Elsewhere they come from the `getrandom(2)` system call.

use aes::Aes256Enc;
use aes::cipher::consts::U16;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use zeroize::Zeroizing;

use crate::error::Error;

/// Where random bytes come from in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// `getrandom` in the vDSO (Linux 6.11+): no system call.
    Vdso,
    /// The `getrandom(2)` system call (or the platform's equivalent).
    Syscall,
}

impl Source {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vdso => "vDSO getrandom",
            Self::Syscall => "getrandom(2)",
        }
    }
}

/// Where [`fill`] draws from in this process.
pub fn source() -> Source {
    if vdso::available() {
        Source::Vdso
    } else {
        Source::Syscall
    }
}

/// Fills `dest` from the kernel's CSPRNG.
///
/// # Errors
/// [`Error::Random`] if the kernel cannot supply random bytes.
pub fn fill(dest: &mut [u8]) -> Result<(), Error> {
    if vdso::fill(dest) {
        return Ok(());
    }
    syscall(dest)
}

/// Fills `dest` through the `getrandom(2)` system call, whatever the vDSO offers: the
/// baseline of `vault bench` and the benchmarks.
///
/// # Errors
/// [`Error::Random`] if the kernel cannot supply random bytes.
pub fn syscall(dest: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(dest).map_err(|_| Error::Random)
}

/// The length of one seal's random values, [`SealRandom::bytes`]: a data key and its wrap nonce,
/// a message id and a nonce.
pub(crate) const SEAL_RANDOM_LEN: usize = 32 + 12 + 32 + 12;

/// The random values of one seal, from one 32-byte draw of the kernel's CSPRNG expanded with
/// AES-256 in counter mode: the kernel's generator costs about 3 ns a byte here (the vDSO's
/// ChaCha20), AES about a tenth of that, so one seal's 88 bytes cost a third of drawing them
/// all. Nothing is kept between seals: each starts from a fresh kernel draw, so what fork and
/// virtual machine snapshots do to the kernel's generator (DESIGN.md, "Randomness") holds for
/// these bytes too.
pub(crate) struct SealRandom(Zeroizing<[u8; 96]>);

impl SealRandom {
    pub(crate) fn draw() -> Result<Self, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        fill(seed.as_mut())?;
        Ok(Self::expand(&seed))
    }

    /// The expansion of `seed`: AES-256 under the seed of the 128-bit big-endian counters 0 to 5.
    fn expand(seed: &[u8; 32]) -> Self {
        // The key schedule is wiped on drop (`aes`'s `zeroize` feature). The counter blocks are
        // written, and encrypted, in place in the output.
        let cipher = Aes256Enc::new(seed.into());
        let mut out = Zeroizing::new([0u8; 96]);
        let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(out.as_mut_slice());
        for (counter, block) in (0u8..).zip(blocks.iter_mut()) {
            // A big-endian 128-bit counter: 0 to 5 fit its last byte.
            block[15] = counter;
        }
        cipher.encrypt_blocks(blocks);
        Self(out)
    }

    /// The seal's random bytes, in the order of [`SEAL_RANDOM_LEN`].
    pub(crate) fn bytes(&self) -> &[u8; SEAL_RANDOM_LEN] {
        self.0
            .first_chunk::<SEAL_RANDOM_LEN>()
            .unwrap_or_else(|| unreachable!())
    }
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod vdso {
    use std::cell::RefCell;
    use std::sync::LazyLock;

    use vdso_rng::{LocalState, Pool};

    /// The process's pool of opaque generator states (mapped with the flags the kernel asks
    /// for), or `None` when the kernel has no vDSO `getrandom`.
    static POOL: LazyLock<Option<Pool>> = LazyLock::new(|| Pool::new().ok());

    /// A thread's generator state, and a spare it keeps unused.
    ///
    /// The pool lays states out back to back at the kernel's state size (144 bytes on x86-64),
    /// not at cache-line boundaries, so two threads whose states are neighbours write the same
    /// cache line on every draw: measured here, two threads drew 20% less than twice one, and
    /// two threads sealing managed less than one. Renting the neighbour too and leaving it
    /// unused keeps each thread's state on lines of its own (with states handed out in address
    /// order, as the pool does), for 144 bytes a thread.
    struct Rented {
        state: LocalState<'static>,
        _spare: Option<LocalState<'static>>,
    }

    thread_local! {
        /// Each thread's own state, rented from the pool on first use and returned when the
        /// thread ends. `None` if the pool could not give one.
        static STATE: RefCell<Option<Rented>> = RefCell::new(POOL.as_ref().and_then(|pool| {
            let state = LocalState::new(pool).ok()?;
            Some(Rented {
                state,
                _spare: LocalState::new(pool).ok(),
            })
        }));
    }

    pub(super) fn available() -> bool {
        POOL.is_some()
    }

    /// Fills `dest` from the vDSO; `false` if it cannot (no vDSO, a thread being torn down, or
    /// an error), so the caller falls back to the system call and `dest` is overwritten whole.
    pub(super) fn fill(dest: &mut [u8]) -> bool {
        STATE
            .try_with(|state| match state.try_borrow_mut() {
                Ok(mut rented) => rented
                    .as_mut()
                    .is_some_and(|rented| rented.state.fill(dest, 0).is_ok()),
                Err(_) => false,
            })
            .unwrap_or(false)
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod vdso {
    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn fill(_dest: &mut [u8]) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expansion is AES-256-CTR from a zero counter: checked against OpenSSL's AES-256-CTR
    /// with a zero IV (Python `cryptography`), seed `00 01 .. 1f`.
    #[test]
    fn the_seal_expansion_is_aes_256_ctr() {
        let seed: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap());
        let out = SealRandom::expand(&seed);
        assert_eq!(
            hex::encode(&out.0[..]),
            "f29000b62a499fd0a9f39a6add2e7780f05d76ae4ab99fe5a6f69b3148c2363d0ebcb5deb52c83bd08a8a935182c9199d24356532881602f809eb383c5ff5d564e5fe6bc2af2b80633c371f5c1ce694ea90741e6797146a550b63f264a604ee4"
        );
    }

    #[test]
    fn seal_draws_differ() {
        let a = SealRandom::draw().unwrap();
        let b = SealRandom::draw().unwrap();
        assert_ne!(a.bytes(), b.bytes());
        // No two of the four values in one draw are equal (one is not another shifted).
        let x = a.bytes();
        assert_ne!(x[..32], x[44..76]);
    }

    #[test]
    fn draws_differ_and_fill_the_whole_buffer() {
        for len in [1, 12, 32, 44, 88, 300, 5000] {
            let mut a = vec![0u8; len];
            let mut b = vec![0u8; len];
            fill(&mut a).unwrap();
            fill(&mut b).unwrap();
            // Two honest draws of one byte are equal once in 256: only draws of 12 bytes and
            // more (a repeat once in 2^96) must differ.
            if len >= 12 {
                assert_ne!(a, b, "two draws of {len} bytes repeated");
            }
            if len >= 32 {
                // Each half non-zero: a short fill would leave a zero tail.
                assert!(a[len / 2..].iter().any(|&x| x != 0));
                assert!(a[..len / 2].iter().any(|&x| x != 0));
            }
        }
    }

    #[test]
    fn threads_draw_different_bytes() {
        let draws: Vec<[u8; 32]> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut b = [0u8; 32];
                    fill(&mut b).unwrap();
                    b
                })
            })
            .map(|t| t.join().unwrap())
            .collect();
        for (i, a) in draws.iter().enumerate() {
            for b in &draws[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    /// Linux 6.11 and later on x86-64 offers `getrandom` in the vDSO: it must be found and used.
    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn the_vdso_is_used_where_the_kernel_offers_it() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().unwrap().parse().unwrap();
        let minor: u32 = parts.next().unwrap().parse().unwrap();
        let expected = if (major, minor) >= (6, 11) {
            Source::Vdso
        } else {
            Source::Syscall
        };
        assert_eq!(source(), expected, "kernel {}", release.trim());
    }
}
