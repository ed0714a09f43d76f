//! The only source of randomness: the kernel's CSPRNG.
//!
//! Every random byte of this crate (data keys, message ids, nonces, root keys) comes from the
//! kernel, never from a generator of our own, so no output can repeat across `fork` or a
//! virtual machine snapshot. Where the kernel offers it (Linux 6.11 and later), the bytes come
//! from `getrandom` in the vDSO: the kernel's own ChaCha20 generator run in this process, on a
//! state the kernel wipes in a forked child (`MAP_DROPPABLE`, wipe-on-fork) and reseeds when a
//! virtual machine is cloned, at about a quarter of a system call's cost (DESIGN.md,
//! "Randomness"). Elsewhere they come from the `getrandom(2)` system call.

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
