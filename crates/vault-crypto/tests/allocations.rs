//! Memory: sealing allocates one output buffer of envelope size (plus a few small ones), and
//! opening one plaintext buffer; the value is never copied twice. Counted exactly with dhat.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test, helpers included.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use vault_crypto::{KeyContext, ManagedKeyProvider, open_any_context, seal};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Polls a future that never waits, without a runtime (whose allocations would be counted).
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f)
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("waited"),
    }
}

/// Small allocations allowed besides the one big buffer: the wrapped key, its key reference,
/// and the boxed future of a ring freshness check when one falls due mid-call (a slow debug
/// build on a busy machine takes longer than the check interval to seal 1 MiB). Far below one
/// copy of the value.
const SMALL: usize = 4 * 1024;

#[test]
fn a_1_mib_value_is_copied_once_when_sealing_and_once_when_opening() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let provider = ManagedKeyProvider::in_memory("root").unwrap();
    let ctx = KeyContext::from_pairs([("organization_id", "org_1")]).unwrap();
    let value = vec![0x5au8; 1 << 20];
    // Warm up: the first use derives and caches the context's key; measure the steady state.
    ready(seal(&provider, &ctx, b"warm", vault_crypto::Aad::NONE)).unwrap();

    let before = dhat::HeapStats::get();
    let envelope = ready(seal(&provider, &ctx, &value, vault_crypto::Aad::NONE)).unwrap();
    let after = dhat::HeapStats::get();
    let allocated = usize::try_from(after.total_bytes - before.total_bytes).unwrap();
    assert!(envelope.len() > value.len());
    assert!(
        allocated <= envelope.len() + SMALL,
        "sealing 1 MiB allocated {allocated} bytes for a {} byte envelope",
        envelope.len()
    );
    // Exactly one allocation is envelope-sized: the output (no growth, no second copy).
    let envelope = envelope.into_bytes();
    assert_eq!(envelope.capacity(), envelope.len());
    let peak_growth = after.max_bytes.saturating_sub(before.curr_bytes);
    assert!(
        peak_growth <= envelope.len() + SMALL,
        "peak grew by {peak_growth}"
    );

    let before = dhat::HeapStats::get();
    let opened = ready(open_any_context(
        &provider,
        &envelope,
        vault_crypto::Aad::NONE,
    ))
    .unwrap();
    let after = dhat::HeapStats::get();
    let allocated = usize::try_from(after.total_bytes - before.total_bytes).unwrap();
    assert_eq!(opened.plaintext(), &value[..]);
    assert!(
        allocated <= value.len() + SMALL,
        "opening 1 MiB allocated {allocated} bytes"
    );
}
