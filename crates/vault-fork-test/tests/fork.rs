//! A forked child must never repeat its parent's random bytes: not the raw draws, not a data
//! key, not an envelope's message id or nonce. The vDSO generator keeps its state in this
//! process's memory, which `fork` copies; the kernel must wipe it in the child, and this checks
//! that it does (and that our use of it leaves nothing behind that a child could replay).
//!
//! `fork(2)` needs `unsafe`, which the product crates forbid; this test-only crate allows it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::io::{Read, Write};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use vault_crypto::{DataKey, Envelope, KeyContext, KeyProvider, ManagedKeyProvider, seal};

/// Drives a future that never waits (the in-memory managed provider does no I/O).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the future waited"),
    }
}

/// Everything random one draw makes: 64 raw bytes, a data key, a data key and its wrap from
/// the managed provider, and a sealed envelope's message id and nonce (its header).
fn draw(provider: &ManagedKeyProvider, ctx: &KeyContext) -> Vec<[u8; 32]> {
    let mut raw = [0u8; 64];
    vault_crypto::random::fill(&mut raw).unwrap();
    let key = DataKey::generate().unwrap();
    let (managed_key, wrapped) = ready(provider.generate_data_key(ctx)).unwrap();
    let sealed = ready(seal(provider, ctx, b"value", vault_crypto::Aad::NONE)).unwrap();
    let envelope = Envelope::parse(&sealed).unwrap();
    let mut wrap_nonce = [0u8; 32];
    wrap_nonce[..12].copy_from_slice(&wrapped.bytes()[..12]);
    vec![
        raw[..32].try_into().unwrap(),
        raw[32..].try_into().unwrap(),
        *key.expose_secret(),
        *managed_key.expose_secret(),
        wrap_nonce,
        *envelope.message_id(),
    ]
}

/// Forks; the child draws and sends its values through a pipe, then exits. Returns the
/// child's draw and the parent's draw made after the fork.
fn fork_and_draw(
    provider: &ManagedKeyProvider,
    ctx: &KeyContext,
) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    // SAFETY: this test's process has no other thread holding a lock the child needs (the test
    // harness's main thread only waits for this one), and the child only draws, writes to the
    // pipe and leaves with `_exit`, never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let values = draw(provider, ctx);
        let ok = writer.write_all(&values.concat()).is_ok();
        // SAFETY: ends the child at once, without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    drop(writer);
    let parent = draw(provider, ctx);
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).unwrap();
    let mut status = 0;
    // SAFETY: waits for the child this function forked.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed: status {status}"
    );
    let child: Vec<[u8; 32]> = bytes
        .chunks_exact(32)
        .map(|c| c.try_into().unwrap())
        .collect();
    assert_eq!(child.len(), parent.len(), "the child sent a short answer");
    (child, parent)
}

#[test]
fn a_forked_child_never_repeats_the_parents_randomness() {
    // On a kernel with the vDSO generator this must test it, not the system call.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let version: (u32, u32) = (
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
        );
        if version >= (6, 11) {
            assert_eq!(
                vault_crypto::random::source(),
                vault_crypto::random::Source::Vdso
            );
        }
    }
    let provider = ManagedKeyProvider::in_memory("root").unwrap();
    let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    // The parent has drawn before it forks, so the generator's state is live in its memory.
    let mut seen = draw(&provider, &ctx);
    for _ in 0..4 {
        let (child, parent) = fork_and_draw(&provider, &ctx);
        seen.extend(child);
        seen.extend(parent);
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        seen.len(),
        "a value repeated across fork: {} of {} distinct",
        sorted.len(),
        seen.len()
    );
}
