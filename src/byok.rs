//! Onboarding a customer's key: a live round trip through each provider before it is trusted
//! ([`verify`]), BYOK rules and providers kept in the store next to `vault.toml`'s
//! ([`Config::with_store`]), and a router that follows the store's rules while it runs
//! ([`ByokWatch`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::json;
use subtle::ConstantTimeEq;
use toml::Spanned;
use vault_crypto::{
    DataKey, KeyContext, KeyProvider, KeyRef, ProviderError, ProviderErrorKind, Router, WrappedKey,
};
use vault_objects::VaultError;
use vault_store::{Actor, ByokProvider, ByokRule, DeploymentEvent, Store, events};

use crate::Rings;
use crate::config::{Config, ProviderConfig, RuleConfig};

/// The key of the context every verification generates its data key under
/// (`{"vault_verification": "byok"}`); reserved, so no caller's context can be it.
pub const VERIFICATION_CONTEXT_KEY: &str = "vault_verification";

/// How often a running process asks the store whether its BYOK rules changed: a change made
/// anywhere routes everywhere within this plus the time to connect a new key.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// How often a customer key that could not be connected is tried again.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(10);

/// The actor of verification events and rule changes made by the operator's tools.
pub fn actor() -> Actor {
    Actor::new("vault_byok", "vault byok")
}

/// The context of every verification round trip.
///
/// # Panics
/// Never: the context is a constant within every limit.
#[allow(clippy::expect_used)] // A constant pair, checked by a test.
pub fn verification_context() -> KeyContext {
    KeyContext::from_pairs([(VERIFICATION_CONTEXT_KEY, "byok")]).expect("a valid context")
}

/// A customer key that could not be connected when the router was built: every call fails with
/// the reason (so only its own contexts fail), and it owns no wrapped key.
pub struct Disconnected {
    name: String,
    kind: ProviderErrorKind,
    scheme: String,
    operation: Option<&'static str>,
    message: String,
}

impl Disconnected {
    /// A stand-in for provider `name`, which failed to connect with `error`.
    pub fn new(name: &str, error: &ProviderError) -> Self {
        Self {
            name: name.to_owned(),
            kind: error.kind(),
            scheme: error.scheme().to_owned(),
            operation: error.operation(),
            message: error.to_string(),
        }
    }

    fn error(&self) -> ProviderError {
        let e = ProviderError::new(
            self.kind,
            self.scheme.clone(),
            format!(
                "provider {:?} is not connected ({})",
                self.name, self.message
            ),
        );
        match self.operation {
            Some(op) => e.with_operation(op),
            None => e,
        }
    }
}

impl fmt::Debug for Disconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disconnected")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl KeyProvider for Disconnected {
    fn owns(&self, _key: &KeyRef) -> bool {
        false
    }

    async fn wrap(&self, _key: &DataKey, _ctx: &KeyContext) -> Result<WrappedKey, ProviderError> {
        Err(self.error())
    }

    async fn unwrap_owned(
        &self,
        _wrapped: &WrappedKey,
        _ctx: &KeyContext,
        _attempts: vault_crypto::Attempts,
    ) -> Result<DataKey, ProviderError> {
        Err(self.error())
    }
}

/// The step of a verification that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Opening the provider (AWS: `DescribeKey`; a managed ring: reading it).
    Connect,
    /// Generating (or wrapping) a data key.
    GenerateDataKey,
    /// Unwrapping it again.
    Unwrap,
    /// Comparing the unwrapped key with the generated one.
    Compare,
}

impl Step {
    /// The step in snake case, as `--json` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::GenerateDataKey => "generate_data_key",
            Self::Unwrap => "unwrap",
            Self::Compare => "compare",
        }
    }
}

/// Why a provider failed verification, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The step that failed.
    pub step: Step,
    /// The kind of failure, if the provider answered one.
    pub kind: Option<ProviderErrorKind>,
    /// The permission (or operation) the failing call needed, where the provider named it.
    pub needs: Option<&'static str>,
    /// The error, as the provider reported it (never a secret).
    pub error: String,
    /// What to do.
    pub advice: String,
}

/// One provider's verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The provider's name.
    pub provider: String,
    /// Its type (`managed`, `aws-kms`, `gcp-kms`, `azure-kv`).
    pub provider_type: &'static str,
    /// The key it wrapped under (a key reference) if it verified, else why not.
    pub outcome: Result<String, Failure>,
}

impl Verification {
    /// Whether the round trip succeeded.
    pub fn verified(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The verification as one JSON object (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.outcome {
            Ok(key) => json!({
                "provider": self.provider,
                "type": self.provider_type,
                "verified": true,
                "key": key,
            }),
            Err(f) => json!({
                "provider": self.provider,
                "type": self.provider_type,
                "verified": false,
                "step": f.step.as_str(),
                "kind": f.kind.map(ProviderErrorKind::as_str),
                "needs": f.needs,
                "error": f.error,
                "advice": f.advice,
            }),
        }
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(key) => write!(
                f,
                "{} ({}): verified (wrapped under {key})",
                self.provider, self.provider_type
            ),
            Err(e) => write!(
                f,
                "{} ({}): NOT verified: {} failed: {}\n  what to do: {}",
                self.provider,
                self.provider_type,
                e.step.as_str(),
                e.error,
                e.advice
            ),
        }
    }
}

/// A round trip through `provider`: a data key generated under the
/// [verification context](verification_context), its wrap owned by the provider, unwrapped, and
/// compared in constant time. Returns the key reference it wrapped under.
///
/// # Errors
/// The step that failed, with the provider's error.
pub async fn round_trip(provider: &dyn KeyProvider) -> Result<KeyRef, (Step, ProviderError)> {
    let ctx = verification_context();
    let (key, wrapped) = provider
        .generate_data_key(&ctx)
        .await
        .map_err(|e| (Step::GenerateDataKey, e))?;
    let scheme = wrapped.key_ref().scheme().to_owned();
    if !provider.owns(wrapped.key_ref()) {
        return Err((
            Step::GenerateDataKey,
            ProviderError::new(
                ProviderErrorKind::Other,
                scheme,
                "the data key was wrapped under a key this provider does not own",
            ),
        ));
    }
    let back = provider
        .unwrap(&wrapped, &ctx)
        .await
        .map_err(|e| (Step::Unwrap, e))?;
    if !bool::from(key.expose_secret().ct_eq(back.expose_secret())) {
        return Err((
            Step::Compare,
            ProviderError::new(
                ProviderErrorKind::InvalidCiphertext,
                scheme,
                "unwrapping answered another data key than the one generated",
            ),
        ));
    }
    Ok(wrapped.key_ref().clone())
}

/// What an operator does about `kind` from a provider of type `provider_type`, the failing call
/// needing `needs`.
pub fn advice(
    provider_type: &str,
    step: Step,
    kind: ProviderErrorKind,
    needs: Option<&str>,
) -> String {
    use ProviderErrorKind as K;
    let principal = match provider_type {
        "aws-kms" => {
            "this process's AWS principal (in the key policy, or an IAM policy the key policy allows)"
        }
        "gcp-kms" => {
            "this process's service account (roles/cloudkms.cryptoKeyEncrypterDecrypter grants both directions)"
        }
        "azure-kv" => {
            "this process's identity (an access policy, or the RBAC role Key Vault Crypto User)"
        }
        _ => "this process",
    };
    match (kind, needs) {
        (K::AccessDenied, Some(op)) => format!("grant {op} on the key to {principal}"),
        (K::AccessDenied, None) => format!(
            "the key service refused this process's credentials: check them, and grant the key's use to {principal}"
        ),
        (K::NotFound, _) => match provider_type {
            "aws-kms" => "no such key where it was looked for: check key_id (an ARN, key id or alias) and region (a key lives in one region; its ARN names it); a deleted key is gone for good".into(),
            "gcp-kms" => "no such key: check key_name (project, location, key ring and key); a destroyed key version cannot come back".into(),
            "azure-kv" => "no such key: check vault_url, key_name and key_version; a deleted key can be recovered while soft-deleted".into(),
            _ => "no such key: check the provider's definition".into(),
        },
        (K::Disabled, _) => match provider_type {
            "aws-kms" => "the key is disabled or pending deletion: enable it (kms:EnableKey) or cancel its deletion (kms:CancelKeyDeletion)".into(),
            "gcp-kms" => "the key's primary version is disabled or destroyed: enable it, or make an enabled version primary".into(),
            "azure-kv" => "the key is disabled or outside its activation dates: enable it, or fix its dates".into(),
            _ => "the key is disabled: enable it".into(),
        },
        (K::Unavailable, _) => "the key service cannot be reached: check endpoint_url or vault_url, DNS, the network path and the region, then verify again".into(),
        (K::Throttled, _) => "the key service is throttling this process: verify again later, or raise its quota".into(),
        (K::Configuration, _) => "fix the provider's definition (`vault config check`)".into(),
        (K::InvalidCiphertext | K::NotMine | K::Other, _) if step == Step::Compare => {
            "the key service answered another data key than it generated: do not route data to this key".into()
        }
        _ => "see the error; verify again once it is fixed".into(),
    }
}

/// A verification that failed at `step` with `error`.
fn failed(
    provider: &str,
    provider_type: &'static str,
    step: Step,
    error: &ProviderError,
) -> Verification {
    Verification {
        provider: provider.to_owned(),
        provider_type,
        outcome: Err(Failure {
            step,
            kind: Some(error.kind()),
            needs: error.operation(),
            error: error.to_string(),
            advice: advice(provider_type, step, error.kind(), error.operation()),
        }),
    }
}

/// Verifies provider `name` of `config` live: connected afresh (without the data-key cache,
/// so every call reaches the key service), then a [round trip](round_trip).
pub async fn verify(config: &Config, rings: &Rings, name: &str) -> Verification {
    let Some(p) = config.providers.get(name) else {
        return Verification {
            provider: name.to_owned(),
            provider_type: "unknown",
            outcome: Err(Failure {
                step: Step::Connect,
                kind: Some(ProviderErrorKind::Configuration),
                needs: None,
                error: format!("no provider {name:?}"),
                advice: "name a provider of vault.toml or of `vault byok provider list`".into(),
            }),
        };
    };
    let provider_type = p.get_ref().type_name();
    let connected = Box::pin(config.connect(p.get_ref(), rings, false, false, true)).await;
    let provider = match connected {
        Ok(p) => p,
        Err(VaultError::Crypto(vault_crypto::Error::Provider(e))) => {
            return failed(name, provider_type, Step::Connect, &e);
        }
        Err(e) => {
            let advice = match &e {
                VaultError::Crypto(vault_crypto::Error::KeyRing(
                    vault_crypto::KeyRingError::Missing { .. },
                )) => {
                    "the ring does not exist yet: the first write makes it (`vault serve`, `vault kv create`, `vault encrypt`); or point --data-dir / --database-url at the deployment's"
                }
                _ => "see the error; verify again once it is fixed",
            };
            return Verification {
                provider: name.to_owned(),
                provider_type,
                outcome: Err(Failure {
                    step: Step::Connect,
                    kind: None,
                    needs: None,
                    error: e.to_string(),
                    advice: advice.into(),
                }),
            };
        }
    };
    verify_connected(name, provider_type, &*provider).await
}

/// Verifies a provider already connected (without a cache in front): a [round trip](round_trip),
/// and on failure the step, the permission the failing call needed, and what to do.
pub async fn verify_connected(
    name: &str,
    provider_type: &'static str,
    provider: &dyn KeyProvider,
) -> Verification {
    match round_trip(provider).await {
        Ok(key) => Verification {
            provider: name.to_owned(),
            provider_type,
            outcome: Ok(key.to_string()),
        },
        Err((step, e)) => failed(name, provider_type, step, &e),
    }
}

/// Records `verification` as `vault.byok_key.verification_completed` in every environment, once
/// per rule that names the provider (with the rule's `organization_id`, where it has one), or
/// once without an organization if no rule does. Managed providers are ours, not a customer's:
/// nothing is recorded for them.
///
/// # Errors
/// If the store cannot record it.
pub async fn record(
    store: &dyn Store,
    config: &Config,
    verification: &Verification,
) -> Result<(), VaultError> {
    if verification.provider_type == "managed" {
        return Ok(());
    }
    let key_id = verification.outcome.as_ref().ok().cloned().or_else(|| {
        // A key that never answered is still named by its type, for `key_provider`.
        Some(format!("{}://", verification.provider_type))
    });
    let detail = json!({
        "verified": verification.verified(),
        "provider": verification.provider,
        "step": verification.outcome.as_ref().err().map(|f| f.step.as_str()),
    })
    .to_string();
    let mut organizations: BTreeSet<Option<String>> = config
        .rules
        .iter()
        .map(Spanned::get_ref)
        .filter(|r| r.provider.get_ref() == &verification.provider)
        .map(|r| r.matches.get("organization_id").cloned())
        .collect();
    if organizations.is_empty() {
        organizations.insert(None);
    }
    for org in organizations {
        let key_context = org
            .map(|o| KeyContext::from_pairs([("organization_id", o)]))
            .transpose()
            .map_err(vault_crypto::Error::from)?;
        store
            .record_deployment_event(&DeploymentEvent {
                event: events::BYOK_VERIFIED.into(),
                actor: actor(),
                key_id: key_id.clone(),
                key_context,
                detail: Some(detail.clone()),
            })
            .await?;
    }
    Ok(())
}

impl ProviderConfig {
    /// The provider's type as `vault.toml` names it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Managed { .. } => "managed",
            Self::AwsKms { .. } => "aws-kms",
            Self::GcpKms { .. } => "gcp-kms",
            Self::AzureKv { .. } => "azure-kv",
        }
    }
}

impl Config {
    /// A provider section of `vault.toml` (`type = "aws-kms"` and its fields) as TOML text,
    /// checked as the file's are (environment overrides included). Managed rings are not
    /// customer keys and are refused.
    ///
    /// # Errors
    /// Every problem, as text.
    pub fn byok_provider(
        name: &str,
        definition: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ProviderConfig, Vec<String>> {
        if !vault_store::is_provider_name(name) {
            return Err(vec![format!(
                "provider name {name:?} must be 1 to 64 of [A-Za-z0-9_-]"
            )]);
        }
        let text = format!("default = \"{name}\"\n[providers.{name}]\n{definition}\n");
        let mut parsed = Self::parse(&text, env).map_err(|problems| {
            problems
                .into_iter()
                .map(|p| format!("provider {name:?}: {}", p.message))
                .collect::<Vec<_>>()
        })?;
        let provider = parsed
            .providers
            .remove(name)
            .map(Spanned::into_inner)
            .ok_or_else(|| vec![format!("provider {name:?}: no definition")])?;
        if matches!(provider, ProviderConfig::Managed { .. }) {
            return Err(vec![format!(
                "provider {name:?}: a BYOK provider is a customer's key (aws-kms, gcp-kms or azure-kv), not a managed ring"
            )]);
        }
        Ok(provider)
    }

    /// This configuration with the providers and rules kept in the store added: the store's
    /// rules after the file's, in their order.
    ///
    /// # Errors
    /// Every problem: a provider or a rule in both places, a definition that does not check, a
    /// rule naming a provider defined nowhere.
    pub fn with_store(
        &self,
        providers: &[ByokProvider],
        rules: &[ByokRule],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let mut merged = self.clone();
        let mut problems = Vec::new();
        for p in providers {
            if self.providers.contains_key(&p.name) {
                problems.push(format!(
                    "provider {:?} is defined both in the configuration file and in the store (`vault byok provider remove {}`, or rename one)",
                    p.name, p.name
                ));
                continue;
            }
            match Self::byok_provider(&p.name, &p.definition, &env) {
                Ok(config) => {
                    merged
                        .providers
                        .insert(p.name.clone(), Spanned::new(0..0, config));
                }
                Err(e) => problems.extend(e),
            }
        }
        for r in rules {
            let matches: BTreeMap<String, String> = r
                .matches
                .pairs()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            if self.rules.iter().any(|f| f.get_ref().matches == matches) {
                problems.push(format!(
                    "the rule {} is both in the configuration file and in the store (`vault byok remove {}`, or remove it from the file)",
                    r.matches,
                    match_args(&r.matches)
                ));
                continue;
            }
            if !merged.providers.contains_key(&r.provider) {
                problems.push(format!(
                    "the store's rule {} names provider {:?}, which is not defined",
                    r.matches, r.provider
                ));
                continue;
            }
            merged.rules.push(Spanned::new(
                0..0,
                RuleConfig {
                    matches,
                    provider: Spanned::new(0..0, r.provider.clone()),
                },
            ));
        }
        if problems.is_empty() {
            Ok(merged)
        } else {
            Err(problems)
        }
    }
}

/// `--match k=v` arguments for a rule's pairs.
pub fn match_args(matches: &KeyContext) -> String {
    matches
        .pairs()
        .map(|(k, v)| format!("--match {k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The configuration with the store's BYOK providers and rules (see [`Config::with_store`]).
///
/// # Errors
/// If the store cannot be read, or the two do not merge.
pub async fn merged(config: &Config, store: &dyn Store) -> Result<Config, VaultError> {
    let providers = store.byok_providers().await?;
    let rules = store.byok_rules().await?;
    config
        .with_store(&providers, &rules, |k| std::env::var(k).ok())
        .map_err(|problems| crate::deployment::config_error(problems.join("; ")))
}

/// Keeps a router's rules equal to the configuration's plus the store's, while the router is in
/// use: every [`WATCH_INTERVAL`] it reads the store's BYOK generation (one row), and when it
/// moved, reads the rules and providers, connects the new keys, and swaps the rules in.
/// Customer keys that could not be connected are tried again every [`RECONNECT_INTERVAL`].
#[derive(Debug)]
pub struct ByokWatch {
    config: Config,
    rings: Rings,
    store: Arc<dyn Store>,
    state: tokio::sync::Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    /// The generation the rules in force were read at.
    generation: Option<u64>,
    /// Connected providers by name (the file's and the store's).
    built: BTreeMap<String, Arc<dyn KeyProvider>>,
    /// The store's providers' definitions, by name: a provider removed and added again with
    /// another definition is connected again.
    definitions: BTreeMap<String, String>,
    /// Providers put in as [`Disconnected`], and when to try them again.
    disconnected: BTreeSet<String>,
    retry_at: Option<Instant>,
}

impl ByokWatch {
    /// A watch over `config`'s file providers and `store`'s BYOK rules.
    pub fn new(config: Config, rings: Rings, store: Arc<dyn Store>) -> Self {
        Self {
            config,
            rings,
            store,
            state: tokio::sync::Mutex::default(),
        }
    }

    /// Builds the router (managed rings created if `create`).
    ///
    /// # Errors
    /// If the store cannot be read, the two configurations do not merge, or the default
    /// provider or a managed ring cannot be opened.
    pub async fn router(&self, create: bool) -> Result<Router, VaultError> {
        let mut state = self.state.lock().await;
        let generation = self.store.byok_generation().await?;
        let merged = self.merged_config().await?;
        let usage = if merged.needs_key_usage() {
            Some(self.store.key_usage().await?)
        } else {
            None
        };
        let disconnected = merged
            .connect_providers(&self.rings, create, usage.as_deref(), &mut state.built)
            .await?;
        let attempted: BTreeSet<String> = state.built.keys().cloned().collect();
        let default = state
            .built
            .get(merged.default.get_ref())
            .cloned()
            .ok_or_else(|| {
                crate::deployment::config_error("the default provider is not defined")
            })?;
        let rules = merged.rules_with(&state.built)?;
        let definitions = self.store_definitions().await?;
        state.note(generation, definitions, &attempted, disconnected);
        Ok(Router::with_rules(default, rules))
    }

    async fn merged_config(&self) -> Result<Config, VaultError> {
        merged(&self.config, &*self.store).await
    }

    async fn store_definitions(&self) -> Result<BTreeMap<String, String>, VaultError> {
        Ok(self
            .store
            .byok_providers()
            .await?
            .into_iter()
            .map(|p| (p.name, p.definition))
            .collect())
    }

    /// Brings `router`'s rules up to date if the store's changed (or a disconnected key is due
    /// for another try). Returns whether the rules were replaced.
    ///
    /// # Errors
    /// If the store cannot be read or the rules do not merge: the rules in force stay.
    pub async fn refresh(&self, router: &Router) -> Result<bool, VaultError> {
        let mut state = self.state.lock().await;
        let generation = self.store.byok_generation().await?;
        let retry_due = state.retry_at.is_some_and(|at| Instant::now() >= at);
        if state.generation == Some(generation) && !retry_due {
            return Ok(false);
        }
        let merged = self.merged_config().await?;
        let definitions = self.store_definitions().await?;
        // Forget the store's providers that went or changed, and those to try again.
        let stale: Vec<String> = state
            .built
            .keys()
            .filter(|name| {
                let from_store = !self.config.providers.contains_key(*name);
                (from_store && definitions.get(*name) != state.definitions.get(*name))
                    || (retry_due && state.disconnected.contains(*name))
            })
            .cloned()
            .collect();
        for name in &stale {
            state.built.remove(name);
        }
        let usage = if merged.needs_key_usage() {
            Some(self.store.key_usage().await?)
        } else {
            None
        };
        let mut built = std::mem::take(&mut state.built);
        let before: BTreeSet<String> = built.keys().cloned().collect();
        let connected = merged
            .connect_providers(&self.rings, false, usage.as_deref(), &mut built)
            .await;
        state.built = built;
        let disconnected = connected?;
        let attempted: BTreeSet<String> = state
            .built
            .keys()
            .filter(|n| !before.contains(*n))
            .cloned()
            .collect();
        let rules = merged.rules_with(&state.built)?;
        router.replace_rules(rules);
        state.note(generation, definitions, &attempted, disconnected);
        Ok(true)
    }

    /// Follows the store's rules for `router` until it is dropped.
    pub fn spawn(self: Arc<Self>, router: Weak<Router>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(router) = router.upgrade() else {
                    break;
                };
                if let Err(e) = self.refresh(&router).await {
                    tracing::warn!(
                        target: "vault::byok",
                        error = %e,
                        "BYOK rules not refreshed; the rules in force stay"
                    );
                }
            }
        })
    }
}

impl WatchState {
    /// Records a pass: the generation read, the store's definitions, and which providers
    /// were connected on it (`attempted`) and failed (`disconnected`).
    fn note(
        &mut self,
        generation: u64,
        definitions: BTreeMap<String, String>,
        attempted: &BTreeSet<String>,
        disconnected: Vec<String>,
    ) {
        self.generation = Some(generation);
        self.definitions = definitions;
        self.disconnected.retain(|n| !attempted.contains(n));
        self.disconnected.extend(disconnected);
        let built = &self.built;
        self.disconnected.retain(|n| built.contains_key(n));
        if self.disconnected.is_empty() {
            self.retry_at = None;
        } else if self.retry_at.is_none_or(|at| Instant::now() >= at) {
            self.retry_at = Some(Instant::now() + RECONNECT_INTERVAL);
        }
    }
}
