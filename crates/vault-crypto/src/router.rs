//! The router: which provider wraps the data keys of which key context.
//!
//! Sealing: the first rule whose pairs are all present and equal in the context wins; every
//! other context goes to the default (managed) provider. This is how BYOK works: a rule
//! `organization_id = org_byok` sends that customer's objects to a provider holding the
//! customer's own key. Opening: the provider that [owns](KeyProvider::owns) the key reference
//! recorded in the wrapped key unwraps it, whatever the rules say today, so changing a rule
//! never strands old data.
//!
//! The rules can change while the router is in use ([`Router::replace_rules`]): a running
//! server follows BYOK rules kept in its store. Every clone of a router shares its rules, so a
//! replacement reaches every holder at once; a call already routed finishes with the rules it
//! started with.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use async_trait::async_trait;

use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::error::{ContextError, ProviderError, ProviderErrorKind};
use crate::provider::{Attempts, FreshKey, KeyProvider, KeyRef, WrappedKey};

/// One routing rule: every listed pair must be present and equal.
#[derive(Debug, Clone)]
pub struct Rule {
    matches: Vec<(String, String)>,
    provider: Arc<dyn KeyProvider>,
}

impl Rule {
    /// Whether the rule applies to `ctx`.
    pub fn matches(&self, ctx: &KeyContext) -> bool {
        ctx.contains_all(self.pairs())
    }

    /// The pairs the rule requires.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.matches.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The provider it sends matching contexts to.
    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }
}

/// Routes each key context to a provider, and each wrapped key back to its owner.
///
/// ```
/// # async fn demo() -> Result<(), vault_crypto::Error> {
/// use std::sync::Arc;
/// use vault_crypto::{Aad, KeyContext, KeyProvider, ManagedKeyProvider, Router};
///
/// let shared = Arc::new(ManagedKeyProvider::in_memory("root")?);
/// let byok = Arc::new(ManagedKeyProvider::in_memory("org-byok")?); // a customer's key
/// let router = Router::new(shared).rule([("organization_id", "org_byok")], byok)?;
///
/// let ctx = KeyContext::from_pairs([("organization_id", "org_byok")])?;
/// let sealed = vault_crypto::seal(&router, &ctx, b"secret", Aad::NONE).await?;
/// assert!(router.route(&ctx).owns(sealed.key_ref()));
/// assert_eq!(vault_crypto::open(&router, &sealed, &ctx, Aad::NONE).await?.plaintext(), b"secret");
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Router {
    default: Arc<dyn KeyProvider>,
    /// The rules and the decrypt-only providers, shared by clones and replaced whole.
    table: Arc<ArcSwap<Rules>>,
    /// Calls dispatched to providers, shared by clones (for metrics).
    calls: Arc<CallCounters>,
}

/// Routing rules in order, and the providers kept only to unwrap: what
/// [`Router::replace_rules`] swaps in.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Rule positions by the first (smallest) key and its value: a rule can only match a
    /// context holding that pair, so routing costs a few hash lookups, not a scan of every rule.
    index: HashMap<String, HashMap<String, Vec<usize>>>,
    /// Providers that only unwrap: keys no rule points at any more.
    decrypt_only: Vec<Arc<dyn KeyProvider>>,
}

impl Rules {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule after the existing ones: contexts holding every pair of `matches` go to
    /// `provider`.
    ///
    /// # Errors
    /// [`ContextError`] if `matches` is empty, repeats a key, or breaks a key or value limit.
    pub fn rule<I, K, V>(
        mut self,
        matches: I,
        provider: Arc<dyn KeyProvider>,
    ) -> Result<Self, ContextError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        // The same rules as a context: non-empty, unique keys, limits.
        let as_context = KeyContext::from_pairs(matches)?;
        let matches: Vec<(String, String)> = as_context
            .pairs()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if let Some((k, v)) = matches.first() {
            self.index
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(self.rules.len());
        }
        self.rules.push(Rule { matches, provider });
        Ok(self)
    }

    /// Adds a provider used only to unwrap (for example a retired customer key).
    #[must_use]
    pub fn decrypt_only(mut self, provider: Arc<dyn KeyProvider>) -> Self {
        self.decrypt_only.push(provider);
        self
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The providers kept only to unwrap.
    pub fn decrypt_only_providers(&self) -> &[Arc<dyn KeyProvider>] {
        &self.decrypt_only
    }

    /// The first rule matching `ctx`, if any.
    fn matching(&self, ctx: &KeyContext) -> Option<&Rule> {
        // The first matching rule is the one with the smallest position among the candidates.
        ctx.pairs()
            .filter_map(|(k, v)| self.index.get(k)?.get(v))
            .flatten()
            .copied()
            .filter(|&i| self.rules.get(i).is_some_and(|r| r.matches(ctx)))
            .min()
            .and_then(|i| self.rules.get(i))
    }
}

/// How many provider calls a [`Router`] dispatched, by operation, and how many of them failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderCalls {
    /// Data keys asked for to seal a value ([`KeyProvider::data_key_for_seal`]). A router
    /// cannot see behind the provider it calls: with a [`CachingProvider`](crate::CachingProvider)
    /// there, most are answered from the cache ([`CacheStats`](crate::CacheStats) counts the
    /// calls that reached the key service).
    pub seal_keys: u64,
    /// Fresh data keys asked for outside a seal ([`KeyProvider::generate_data_key`]: an issued
    /// data key, a verification).
    pub generate: u64,
    /// Data keys wrapped.
    pub wrap: u64,
    /// Data keys unwrapped.
    pub unwrap: u64,
    /// Calls of any kind that returned an error.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct CallCounters {
    seal_keys: AtomicU64,
    generate: AtomicU64,
    wrap: AtomicU64,
    unwrap: AtomicU64,
    failed: AtomicU64,
}

impl CallCounters {
    fn count<T>(
        &self,
        op: &AtomicU64,
        result: Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        op.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl Router {
    /// A router that sends every context to `default`.
    pub fn new(default: Arc<dyn KeyProvider>) -> Self {
        Self::with_rules(default, Rules::new())
    }

    /// A router that sends contexts to `default` unless one of `rules` matches.
    pub fn with_rules(default: Arc<dyn KeyProvider>, rules: Rules) -> Self {
        Self {
            default,
            table: Arc::new(ArcSwap::from_pointee(rules)),
            calls: Arc::default(),
        }
    }

    /// Replaces the rules and decrypt-only providers for this router and every clone of it,
    /// at once: a call routed after this returns uses the new rules. The default provider
    /// stays.
    pub fn replace_rules(&self, rules: Rules) {
        self.table.store(Arc::new(rules));
    }

    /// The rules in force now (a snapshot: a later [`replace_rules`](Self::replace_rules)
    /// does not change it).
    pub fn current_rules(&self) -> Arc<Rules> {
        self.table.load_full()
    }

    /// The default provider: where contexts no rule matches go.
    pub fn default_provider(&self) -> &Arc<dyn KeyProvider> {
        &self.default
    }

    /// The provider calls dispatched so far (by this router and its clones).
    pub fn calls(&self) -> ProviderCalls {
        let c = &self.calls;
        ProviderCalls {
            seal_keys: c.seal_keys.load(Ordering::Relaxed),
            generate: c.generate.load(Ordering::Relaxed),
            wrap: c.wrap.load(Ordering::Relaxed),
            unwrap: c.unwrap.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Adds a rule after the existing ones: contexts holding every pair of `matches` go to
    /// `provider`.
    ///
    /// # Errors
    /// [`ContextError`] if `matches` is empty, repeats a key, or breaks a key or value limit.
    ///
    /// A builder: the router returned no longer shares its rules with clones made before.
    pub fn rule<I, K, V>(
        self,
        matches: I,
        provider: Arc<dyn KeyProvider>,
    ) -> Result<Self, ContextError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let rules = Rules::clone(&self.table.load()).rule(matches, provider)?;
        Ok(self.detached(rules))
    }

    /// Adds a provider used only to unwrap (for example a retired customer key). A builder,
    /// as [`rule`](Self::rule).
    #[must_use]
    pub fn decrypt_only(self, provider: Arc<dyn KeyProvider>) -> Self {
        let rules = Rules::clone(&self.table.load()).decrypt_only(provider);
        self.detached(rules)
    }

    fn detached(mut self, rules: Rules) -> Self {
        self.table = Arc::new(ArcSwap::from_pointee(rules));
        self
    }

    /// The provider that wraps data keys for `ctx` under the rules in force now.
    pub fn route(&self, ctx: &KeyContext) -> Arc<dyn KeyProvider> {
        self.table
            .load()
            .matching(ctx)
            .map_or_else(|| self.default.clone(), |r| r.provider.clone())
    }

    /// The provider that owns `key`, if any.
    pub fn owner(&self, key: &KeyRef) -> Option<Arc<dyn KeyProvider>> {
        if self.default.owns(key) {
            return Some(self.default.clone());
        }
        let table = self.table.load();
        table
            .rules
            .iter()
            .map(|r| &r.provider)
            .chain(&table.decrypt_only)
            .find(|p| p.owns(key))
            .cloned()
    }

    fn no_owner(key: &KeyRef) -> ProviderError {
        ProviderError::new(
            ProviderErrorKind::NotMine,
            "router",
            format!("no provider for key scheme {:?}", key.scheme()),
        )
    }
}

#[async_trait]
impl KeyProvider for Router {
    fn owns(&self, key: &KeyRef) -> bool {
        self.owner(key).is_some()
    }

    /// Local when every provider it may call is: the default, each rule's, each kept for
    /// decryption (as the rules stand now).
    fn is_local(&self) -> bool {
        let table = self.table.load();
        self.default.is_local()
            && table.rules.iter().all(|r| r.provider.is_local())
            && table.decrypt_only.iter().all(|p| p.is_local())
    }

    /// Whether `key` is what the provider the rules choose for `ctx` now would wrap with.
    async fn is_current(&self, key: &KeyRef, ctx: &KeyContext) -> Result<bool, ProviderError> {
        self.route(ctx).is_current(key, ctx).await
    }

    async fn generate_data_key(
        &self,
        ctx: &KeyContext,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        let r = self.route(ctx).generate_data_key(ctx).await;
        self.calls.count(&self.calls.generate, r)
    }

    async fn data_key_for_seal(
        &self,
        ctx: &KeyContext,
        scope: &str,
        len: u64,
    ) -> Result<(DataKey, WrappedKey), ProviderError> {
        let r = self.route(ctx).data_key_for_seal(ctx, scope, len).await;
        self.calls.count(&self.calls.seal_keys, r)
    }

    fn data_key_now(
        &self,
        ctx: &KeyContext,
        scope: &str,
        len: u64,
        fresh: FreshKey,
    ) -> Option<Result<(DataKey, WrappedKey), ProviderError>> {
        let r = self.route(ctx).data_key_now(ctx, scope, len, fresh)?;
        Some(self.calls.count(&self.calls.seal_keys, r))
    }

    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        let r = self.route(ctx).wrap(key, ctx).await;
        self.calls.count(&self.calls.wrap, r)
    }

    /// With [`Attempts::Once`] (a caller's blob), only the provider the rules choose for
    /// `ctx` today, or one kept for decryption, may be asked: a caller cannot point a blob of
    /// its own at another customer's key.
    async fn unwrap_owned(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
        attempts: Attempts,
    ) -> Result<DataKey, ProviderError> {
        let key = wrapped.key_ref();
        let owner = match attempts {
            Attempts::Retry => self.owner(key).ok_or_else(|| Self::no_owner(key))?,
            Attempts::Once => {
                let routed = self.route(ctx);
                if routed.owns(key) {
                    routed
                } else {
                    self.table
                        .load()
                        .decrypt_only
                        .iter()
                        .find(|p| p.owns(key))
                        .cloned()
                        .ok_or_else(|| {
                            ProviderError::new(
                                ProviderErrorKind::NotMine,
                                "router",
                                "the key context is not routed to this key",
                            )
                        })?
                }
            }
        };
        let r = owner.unwrap_owned(wrapped, ctx, attempts).await;
        self.calls.count(&self.calls.unwrap, r)
    }

    /// As [`unwrap_owned`](KeyProvider::unwrap_owned) with [`Attempts::Retry`]: the key's owner.
    fn unwrap_owned_now(
        &self,
        wrapped: &WrappedKey,
        ctx: &KeyContext,
    ) -> Option<Result<DataKey, ProviderError>> {
        let key = wrapped.key_ref();
        let Some(owner) = self.owner(key) else {
            return Some(Err(Self::no_owner(key)));
        };
        let r = owner.unwrap_owned_now(wrapped, ctx)?;
        Some(self.calls.count(&self.calls.unwrap, r))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.matches.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{k} = {v}")?;
        }
        write!(f, " -> {:?}", self.provider)
    }
}
