//! Checks for a key provider of your own.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::error::ProviderError;
use crate::provider::managed::ManagedKeyProvider;
use crate::provider::{Attempts, KeyProvider, KeyRef, WrappedKey};

/// The methods a wrapper must forward, and what forgetting each one does. The trait's default
/// for each is right for a provider of its own, and silently wrong in front of another.
const MUST_FORWARD: &[(&str, &str)] = &[
    (
        "owns",
        "opening finds no provider for the wrapped provider's keys",
    ),
    (
        "is_current",
        "rewrap answers AlreadyCurrent after a rotation and data stays on the old version",
    ),
    (
        "generate_data_key",
        "a data key is generated locally and wrapped, not made by the key service",
    ),
    (
        "data_key_for_seal",
        "the wrapped provider's cache is bypassed, or the scope or length is lost",
    ),
    ("wrap", "data keys are not wrapped by the wrapped provider"),
    (
        "unwrap_owned",
        "unwraps fail, or a caller's blob (Attempts::Once) is retried against a customer's key",
    ),
    (
        "is_local",
        "the blocking functions refuse a provider that would need no runtime",
    ),
];

/// The scope and length the probe expects a seal to arrive with.
const PROBE_SCOPE: &str = "probe-scope";
const PROBE_LEN: u64 = 4242;

/// What [`check_forwarding`] found: the methods a wrapper does not pass on to the provider it
/// wraps, and what that breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unforwarded {
    methods: Vec<&'static str>,
}

impl Unforwarded {
    /// The methods not forwarded, in the trait's order.
    pub fn methods(&self) -> &[&'static str] {
        &self.methods
    }
}

impl fmt::Display for Unforwarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the wrapper does not forward:")?;
        for method in &self.methods {
            let harm = MUST_FORWARD
                .iter()
                .find(|(m, _)| m == method)
                .map_or("", |(_, harm)| harm);
            write!(f, "\n- {method}: {harm}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Unforwarded {}

/// Checks that a provider built around another (one that meters, logs, caches or limits
/// calls) forwards every method whose default would otherwise answer for the wrapped provider:
/// [`owns`](KeyProvider::owns), [`is_current`](KeyProvider::is_current),
/// [`generate_data_key`](KeyProvider::generate_data_key),
/// [`data_key_for_seal`](KeyProvider::data_key_for_seal), [`wrap`](KeyProvider::wrap),
/// [`unwrap_owned`](KeyProvider::unwrap_owned) (with its [`Attempts`]) and
/// [`is_local`](KeyProvider::is_local).
///
/// `build` is given a probe provider to wrap (and called a second time with a probe that is not
/// [local](KeyProvider::is_local)); each method of the wrapper is called and the probe tells
/// whether the call reached it with the caller's arguments and its answer came back. Meant for
/// a test:
///
/// ```
/// use std::sync::Arc;
/// use vault_crypto::{Attempts, DataKey, KeyContext, KeyProvider, KeyRef, ProviderError, WrappedKey};
///
/// /// Counts unwraps, and forgets to forward `is_current`.
/// #[derive(Debug)]
/// struct Metered(Arc<dyn KeyProvider>);
///
/// #[vault_crypto::async_trait]
/// impl KeyProvider for Metered {
///     fn owns(&self, key: &KeyRef) -> bool { self.0.owns(key) }
///     fn is_local(&self) -> bool { self.0.is_local() }
///     async fn generate_data_key(&self, ctx: &KeyContext) -> Result<(DataKey, WrappedKey), ProviderError> {
///         self.0.generate_data_key(ctx).await
///     }
///     async fn data_key_for_seal(&self, ctx: &KeyContext, scope: &str, len: u64)
///         -> Result<(DataKey, WrappedKey), ProviderError> {
///         self.0.data_key_for_seal(ctx, scope, len).await
///     }
///     async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
///         self.0.wrap(key, ctx).await
///     }
///     async fn unwrap_owned(&self, wrapped: &WrappedKey, ctx: &KeyContext, attempts: Attempts)
///         -> Result<DataKey, ProviderError> {
///         self.0.unwrap_owned(wrapped, ctx, attempts).await
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let found = vault_crypto::testing::check_forwarding(Metered).await.unwrap_err();
/// assert_eq!(found.methods(), ["is_current"]);
/// # });
/// ```
///
/// # Errors
/// [`Unforwarded`], naming each method the wrapper does not forward.
///
/// # Panics
/// If the operating system's random number generator fails (the probe's keys come from it).
pub async fn check_forwarding<W, F>(build: F) -> Result<(), Unforwarded>
where
    W: KeyProvider,
    F: Fn(Arc<dyn KeyProvider>) -> W,
{
    let probe = Arc::new(Probe::new(true));
    let wrapper = build(probe.clone());
    let mut methods = Vec::new();
    let ctx = probe.context.clone();

    let own = probe.key_ref();
    if !wrapper.owns(&own) {
        methods.push("owns");
    }
    // The probe calls its own key stale; the default (`owns`) would call it current.
    let current = wrapper.is_current(&own, &ctx).await;
    if !matches!(current, Ok(false)) || probe.calls.is_current() == 0 {
        methods.push("is_current");
    }
    let generated = wrapper.generate_data_key(&ctx).await;
    if generated.is_err() || probe.calls.generate() != 1 {
        methods.push("generate_data_key");
    }
    let sealed = wrapper
        .data_key_for_seal(&ctx, PROBE_SCOPE, PROBE_LEN)
        .await;
    let seen = *probe.seal_len.lock().unwrap_or_else(|e| e.into_inner());
    if sealed.is_err() || seen != Some(PROBE_LEN) {
        methods.push("data_key_for_seal");
    }
    let wraps = probe.calls.wrap();
    let wrapped = match DataKey::generate() {
        Ok(key) => wrapper.wrap(&key, &ctx).await.is_ok(),
        Err(_) => false,
    };
    if !wrapped || probe.calls.wrap() != wraps.saturating_add(1) {
        methods.push("wrap");
    }
    if !unwraps_forwarded(&wrapper, &probe, &ctx).await {
        methods.push("unwrap_owned");
    }
    // Local in front of a local provider, and not in front of one that is not (a wrapper that
    // answers true by itself would let the blocking functions run a KMS provider).
    if !wrapper.is_local() || build(Arc::new(Probe::new(false))).is_local() {
        methods.push("is_local");
    }
    if methods.is_empty() {
        Ok(())
    } else {
        Err(Unforwarded { methods })
    }
}

/// Whether a wrapped key the probe made unwraps through the wrapper with the caller's
/// [`Attempts`], both kinds.
async fn unwraps_forwarded(wrapper: &dyn KeyProvider, probe: &Probe, ctx: &KeyContext) -> bool {
    for attempts in [Attempts::Retry, Attempts::Once] {
        // A key the wrapper has never seen, so a cache in it must ask the probe.
        let Ok((key, wrapped)) = probe.inner.generate_data_key(ctx).await else {
            return false;
        };
        // `unwrap_owned` itself: what the envelope functions and a router call.
        let unwrapped = wrapper.unwrap_owned(&wrapped, ctx, attempts).await;
        let seen = probe
            .unwrap_attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let same = unwrapped.is_ok_and(|k| k.expose_secret() == key.expose_secret());
        if !same || seen != Some(attempts) {
            return false;
        }
    }
    true
}

/// A provider that records what reaches it.
#[derive(Debug)]
struct Probe {
    local: bool,
    inner: ManagedKeyProvider,
    context: KeyContext,
    calls: Calls,
    seal_len: Mutex<Option<u64>>,
    unwrap_attempts: Mutex<Option<Attempts>>,
}

#[derive(Debug, Default)]
struct Calls {
    is_current: AtomicUsize,
    generate: AtomicUsize,
    wrap: AtomicUsize,
}

impl Calls {
    fn is_current(&self) -> usize {
        self.is_current.load(Ordering::Relaxed)
    }
    fn generate(&self) -> usize {
        self.generate.load(Ordering::Relaxed)
    }
    fn wrap(&self) -> usize {
        self.wrap.load(Ordering::Relaxed)
    }
}

impl Probe {
    fn new(local: bool) -> Self {
        Self {
            local,
            inner: ManagedKeyProvider::in_memory("forwarding-probe")
                .unwrap_or_else(|e| panic!("an in-memory ring: {e}")),
            context: KeyContext::from_pairs([("probe", "forwarding")])
                .unwrap_or_else(|e| panic!("a valid context: {e}")),
            calls: Calls::default(),
            seal_len: Mutex::new(None),
            unwrap_attempts: Mutex::new(None),
        }
    }

    fn key_ref(&self) -> KeyRef {
        self.inner
            .versions()
            .first()
            .map(|v| v.key_ref.clone())
            .unwrap_or_else(|| panic!("a fresh ring has a version"))
    }
}

#[async_trait]
impl KeyProvider for Probe {
    fn owns(&self, key: &KeyRef) -> bool {
        self.inner.owns(key)
    }

    fn is_local(&self) -> bool {
        self.local
    }

    async fn is_current(&self, _key: &KeyRef, _ctx: &KeyContext) -> Result<bool, ProviderError> {
        self.calls.is_current.fetch_add(1, Ordering::Relaxed);
        Ok(false)
    }

    async fn generate_data_key(
        &self,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        self.calls.generate.fetch_add(1, Ordering::Relaxed);
        self.inner.generate_data_key(ctx).await
    }

    async fn data_key_for_seal(
        &self,
        ctx: &KeyContext,
        scope: &str,
        len: u64,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        if scope == PROBE_SCOPE {
            *self.seal_len.lock().unwrap_or_else(|e| e.into_inner()) = Some(len);
        }
        self.inner.generate_data_key(ctx).await
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        self.calls.wrap.fetch_add(1, Ordering::Relaxed);
        self.inner.wrap(key, ctx).await
    }

    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        *self
            .unwrap_attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(attempts);
        self.inner.unwrap_owned(wrapped, ctx, attempts).await
    }
}
