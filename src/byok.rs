//! Onboarding a customer's key: a live round trip through each provider before it is trusted
//! ([`verify`]), BYOK rules and providers kept in the store next to `vault.toml`'s
//! ([`Config::with_store`]), and a router that follows the store's rules while it runs
//! ([`ByokWatch`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use toml::Spanned;
use vault_crypto::{
    DataKey, KeyContext, KeyProvider, KeyRef, ProviderError, ProviderErrorKind, Router, WrappedKey,
};
use vault_objects::{IntegrityKey, VaultError};
use vault_store::{Actor, ByokConfig, Conflict, DeploymentEvent, Store, StoreError, events};

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

/// The reserved context key the BYOK document is sealed under (`{"vault_byok": "config"}`).
pub const SEAL_CONTEXT_KEY: &str = "vault_byok";

/// A customer key that could not be connected when the router was built: every call fails with
/// the reason (so only its own contexts fail). It owns the wrapped keys of the key it stands for
/// where the definition names that key exactly, so reading them fails with the key's own
/// reason (disabled, denied, unreachable) rather than "no provider".
pub struct Disconnected {
    name: String,
    kind: ProviderErrorKind,
    scheme: String,
    operation: Option<&'static str>,
    message: String,
    identity: Option<(&'static str, String)>,
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
            identity: None,
        }
    }

    /// Owns the wrapped keys of `identity` (scheme and key id, as [`KeyRef`] names them).
    #[must_use]
    pub fn owning(mut self, identity: Option<(&'static str, String)>) -> Self {
        self.identity = identity;
        self
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
    fn owns(&self, key: &KeyRef) -> bool {
        self.identity
            .as_ref()
            .is_some_and(|(scheme, id)| key.scheme() == *scheme && key.key_id() == id)
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

/// Records `verification` as `vault.byok_key.verification_completed`, once per rule naming the
/// provider that has an `organization_id`, in each environment that used that organization
/// (stored a value for it; reading one or asking for a data key naming it is not enough): the environments the key serves, and no
/// other. Managed providers are ours, not a customer's: nothing is recorded for them.
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
    // Only the key's type (for `key_provider`): which key a customer uses is not the other
    // environments' business.
    let key_id = Some(format!("{}://", verification.provider_type));
    let detail = json!({ "verified": verification.verified() }).to_string();
    let organizations: BTreeSet<String> = config
        .rules
        .iter()
        .map(Spanned::get_ref)
        .filter(|r| r.provider.get_ref() == &verification.provider)
        .filter_map(|r| r.matches.get("organization_id").cloned())
        .collect();
    for org in organizations {
        let key_context = Some(
            KeyContext::from_pairs([("organization_id", org)])
                .map_err(vault_crypto::Error::from)?,
        );
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

    /// The key it wraps with, as its key references name it (scheme, key id), where the
    /// definition names it exactly: an AWS key ARN (not an alias), a Cloud KMS crypto key, a
    /// Key Vault key (any version).
    pub fn key_identity(&self) -> Option<(&'static str, String)> {
        match self {
            Self::Managed { .. } => None,
            Self::AwsKms { key_id, .. } => (key_id.starts_with("arn:") && key_id.contains(":key/"))
                .then(|| ("aws-kms", key_id.clone())),
            Self::GcpKms { key_name, .. } => Some(("gcp-kms", key_name.clone())),
            Self::AzureKv {
                vault_url,
                key_name,
                ..
            } => {
                let host = vault_url
                    .trim_start_matches("https://")
                    .split(['/', ':', '?', '#'])
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                Some(("azure-kv", format!("{host}/{key_name}")))
            }
        }
    }
}

/// The runtime providers and rules (`vault byok`), as the store keeps them: one JSON document,
/// sealed by the deployment's default key (see [`load`] and [`update`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByokDocument {
    /// Customer key providers, by name.
    pub providers: Vec<StoredProvider>,
    /// Rules, in order (after `vault.toml`'s).
    pub rules: Vec<StoredRule>,
}

/// A customer key provider kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredProvider {
    /// Its name, unique among providers (those of `vault.toml` included).
    pub name: String,
    /// A provider section of `vault.toml`, as TOML text, with the fields a store provider may
    /// have (see [`Config::byok_provider`]).
    pub definition: String,
    /// When it was added (microseconds since the epoch).
    pub created_at: i64,
    /// When the last rule naming it was removed, if one was: values may still be landing under
    /// it for a moment, so it cannot be removed until [`QUIET_SECS`] later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrouted_at: Option<i64>,
}

/// A BYOK rule kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRule {
    /// The pairs a context must hold.
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, String>,
    /// The store provider it sends them to.
    pub provider: String,
    /// Whether the provider verified when the rule was set (`false`: `--unverified`).
    pub verified: bool,
    /// When it was set (microseconds since the epoch).
    pub created_at: i64,
}

/// How long after its last rule went a provider cannot be removed: every process routes by the
/// new rules well within this, so no value is still being sealed under the key.
pub const QUIET_SECS: u64 = 5;

/// The fields a store provider may have, by type. The key and where it is: `accept_unsigned_wraps`
/// (which lets forgeable wraps open) is a decision for `vault.toml` alone.
fn allowed_fields(type_name: &str) -> &'static [&'static str] {
    match type_name {
        "aws-kms" => &["type", "key_id", "region", "endpoint_url", "cache"],
        "gcp-kms" => &["type", "key_name", "endpoint_url", "cache"],
        "azure-kv" => &[
            "type",
            "vault_url",
            "key_name",
            "key_version",
            "algorithm",
            "credential",
            "cache",
        ],
        _ => &[],
    }
}

/// The seal's associated data: the document and the generation it is for.
fn seal_aad(generation: u64, document: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(24 + document.len());
    aad.extend_from_slice(b"vault-byok/v1\0");
    aad.extend_from_slice(&generation.to_be_bytes());
    aad.extend_from_slice(document.as_bytes());
    aad
}

/// The store's BYOK document and its generation, its seal checked with `default` (the
/// deployment's default key provider) and its generation with the store's integrity record
/// (checked with `integrity`). No document yet, and none recorded: generation 0, empty.
///
/// # Errors
/// A configuration error if the seal does not open (the document was not written through this
/// deployment's keys: refused whole, never routed by) or the document is missing or older than
/// the record says (deleted, or an older copy put back); `Tampered` if the record fails; or the
/// store fails.
pub async fn load(
    store: &dyn Store,
    default: &dyn KeyProvider,
    integrity: &IntegrityKey,
) -> Result<(u64, ByokDocument), VaultError> {
    // The record and the document are two reads: a change landing between them is read again.
    let mut attempts = 0;
    let (recorded, found) = loop {
        let recorded = vault_objects::integrity::checked_record(store, integrity)
            .await?
            .byok_generation;
        let found = store.byok_config().await?;
        let generation = found.as_ref().map_or(0, |c| c.generation);
        attempts += 1;
        if generation == recorded || attempts == 3 {
            break (recorded, found);
        }
    };
    let Some(c) = found else {
        if recorded == 0 {
            return Ok((0, ByokDocument::default()));
        }
        return Err(crate::deployment::config_error(format!(
            "the BYOK rules (table byok_config) are missing, but the integrity record says generation {recorded} exists: deleted by someone who can write the database; nothing is routed by them until they are restored (from a backup of the database)"
        )));
    };
    let not_authentic = |why: &str| {
        crate::deployment::config_error(format!(
            "the BYOK rules in the store (table byok_config, generation {}) {why}: they are not used; restore them with `vault byok` from a process holding this deployment's keys",
            c.generation
        ))
    };
    if c.generation != recorded {
        return Err(not_authentic(&format!(
            "are not the generation the integrity record says exists ({recorded}): an older copy put back?"
        )));
    }
    match vault_crypto::open_for(
        default,
        &c.seal,
        &vault_objects::byok_seal_context()?,
        &seal_aad(c.generation, &c.document),
    )
    .await
    {
        Ok(_) => {}
        Err(vault_crypto::Error::Provider(e)) if e.is_retryable() => {
            return Err(vault_crypto::Error::from(e).into());
        }
        Err(_) => {
            return Err(not_authentic(
                "are not sealed by this deployment's default key",
            ));
        }
    }
    let document = serde_json::from_str(&c.document)
        .map_err(|_| not_authentic("are sealed but not a document this version reads"))?;
    Ok((c.generation, document))
}

/// Changes the store's BYOK document with `change`, sealed again with `default`: read, changed,
/// written back only if nobody else wrote meanwhile (else read again and `change` again).
///
/// # Errors
/// `change`'s error, or the store's or the seal's.
pub async fn update<T, E: From<VaultError>>(
    store: &dyn Store,
    default: &dyn KeyProvider,
    integrity: &IntegrityKey,
    mut change: impl FnMut(&mut ByokDocument) -> Result<T, E>,
) -> Result<T, E> {
    for _ in 0..16 {
        let (generation, mut document) = load(store, default, integrity).await?;
        let out = change(&mut document)?;
        let text = serde_json::to_string(&document)
            .map_err(|_| crate::deployment::config_error("cannot write the BYOK document"))?;
        let next = generation + 1;
        let sealed = vault_crypto::seal(
            default,
            &vault_objects::byok_seal_context()?,
            b"",
            &seal_aad(next, &text),
        )
        .await
        .map_err(VaultError::from)?;
        let config = ByokConfig {
            generation: next,
            document: text,
            seal: sealed.bytes().to_vec(),
            seal_key_id: sealed.key_ref().to_string(),
        };
        // The record takes the new generation in the same transaction, only over the record
        // this change was made from (else read again).
        let record = vault_objects::integrity::checked_record(store, integrity).await?;
        let change = vault_objects::integrity::record_change(integrity, &record, |r| {
            r.byok_generation = next;
        });
        match store
            .replace_byok_config(generation, &config, &change)
            .await
        {
            Ok(()) => return Ok(out),
            Err(StoreError::Conflict(Conflict::ByokChanged)) => continue,
            Err(e) => return Err(VaultError::from(e).into()),
        }
    }
    Err(VaultError::from(StoreError::Conflict(Conflict::ByokChanged)).into())
}

impl Config {
    /// A provider section of `vault.toml` (`type = "aws-kms"` and its fields) as TOML text,
    /// checked as the file's are (environment overrides included), with only the fields a
    /// store provider may have. Managed rings are not customer keys and are refused, and so is
    /// an `endpoint_url` that is not `https://` unless `allow_http` (`[byok]
    /// allow_http_endpoints` in `vault.toml`).
    ///
    /// # Errors
    /// Every problem, as text.
    pub fn byok_provider(
        name: &str,
        definition: &str,
        allow_http: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ProviderConfig, Vec<String>> {
        if !vault_store::is_provider_name(name) {
            return Err(vec![format!(
                "provider name {name:?} must be 1 to 64 of [A-Za-z0-9_-]"
            )]);
        }
        let table: toml::Table = definition
            .parse()
            .map_err(|e| vec![format!("provider {name:?}: {e}")])?;
        let type_name = table
            .get("type")
            .and_then(toml::Value::as_str)
            .unwrap_or("");
        if type_name == "managed" {
            return Err(vec![format!(
                "provider {name:?}: a BYOK provider is a customer's key (aws-kms, gcp-kms or azure-kv), not a managed ring"
            )]);
        }
        let allowed = allowed_fields(type_name);
        let extra: Vec<&String> = table
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        if !extra.is_empty() {
            return Err(vec![format!(
                "provider {name:?}: {extra:?} cannot be set on a provider kept in the store (type {type_name:?}: {allowed:?})"
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
        let endpoint = match &provider {
            ProviderConfig::AwsKms { endpoint_url, .. }
            | ProviderConfig::GcpKms { endpoint_url, .. } => endpoint_url.as_deref(),
            _ => None,
        };
        if let Some(url) = endpoint
            && !url.starts_with("https://")
            && !allow_http
        {
            return Err(vec![format!(
                "provider {name:?}: endpoint_url must be https:// (data keys and credentials would cross the network in clear); for an emulator on loopback, set `[byok] allow_http_endpoints = true` in vault.toml"
            )]);
        }
        Ok(provider)
    }

    /// This configuration with the store's providers and rules added: the store's rules after
    /// the file's, in their order.
    ///
    /// # Errors
    /// Every problem: a provider name, a key or a rule (the same pairs) in both places, a
    /// definition that does not check, a rule naming a provider the store does not define.
    pub fn with_store(
        &self,
        document: &ByokDocument,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let mut merged = self.clone();
        let mut problems = Vec::new();
        for p in &document.providers {
            if self.providers.contains_key(&p.name) {
                problems.push(format!(
                    "provider {:?} is defined both in the configuration file and in the store (`vault byok provider remove {}`, or rename one)",
                    p.name, p.name
                ));
                continue;
            }
            match Self::byok_provider(&p.name, &p.definition, self.byok.allow_http_endpoints, &env)
            {
                Ok(config) => {
                    if let Some(identity) = config.key_identity()
                        && let Some((other, _)) = merged
                            .providers
                            .iter()
                            .find(|(_, q)| q.get_ref().key_identity().as_ref() == Some(&identity))
                    {
                        problems.push(format!(
                            "provider {:?} names the key of provider {other:?} ({}://{}): one key, one provider",
                            p.name, identity.0, identity.1
                        ));
                        continue;
                    }
                    merged
                        .providers
                        .insert(p.name.clone(), Spanned::new(0..0, config));
                }
                Err(e) => problems.extend(e),
            }
        }
        for r in &document.rules {
            let label = r
                .matches
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            if let Err(e) =
                KeyContext::from_pairs(r.matches.clone()).and_then(|c| c.check_caller().map(|()| c))
            {
                problems.push(format!("the store's rule {label}: {e}"));
                continue;
            }
            if self.rules.iter().any(|f| f.get_ref().matches == r.matches) {
                let args: Vec<String> = r
                    .matches
                    .iter()
                    .map(|(k, v)| format!("--match {k}={v}"))
                    .collect();
                problems.push(format!(
                    "the rule {label} is both in the configuration file and in the store (`vault byok remove {}`, or remove it from the file)",
                    args.join(" ")
                ));
                continue;
            }
            if self.providers.contains_key(&r.provider)
                || !document.providers.iter().any(|p| p.name == r.provider)
            {
                problems.push(format!(
                    "the store's rule {label} names provider {:?}, which the store does not define",
                    r.provider
                ));
                continue;
            }
            merged.rules.push(Spanned::new(
                0..0,
                RuleConfig {
                    matches: r.matches.clone(),
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

    /// This configuration's default provider alone, connected (a managed ring created if
    /// `create`): what seals and opens the store's BYOK document. Strict: a key that cannot be
    /// connected is an error, never a stand-in, and an Azure RSA key never accepts an unsigned
    /// wrap (one anyone with its public key can make), whatever the store holds.
    ///
    /// # Errors
    /// If it is not defined or cannot be connected.
    pub async fn default_provider(
        &self,
        rings: &Rings,
        create: bool,
    ) -> Result<Arc<dyn KeyProvider>, VaultError> {
        let name = self.default.get_ref();
        let p = self.providers.get(name).ok_or_else(|| {
            crate::deployment::config_error(format!("provider {name:?} is not defined"))
        })?;
        Box::pin(self.connect(p.get_ref(), rings, create, false, false)).await
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

/// The configuration with the store's BYOK providers and rules (see [`Config::with_store`]),
/// the document's seal checked with `default`.
///
/// # Errors
/// If the store cannot be read, the document is not authentic, or the two do not merge.
pub async fn merged(
    config: &Config,
    store: &dyn Store,
    default: &dyn KeyProvider,
    integrity: &IntegrityKey,
) -> Result<Config, VaultError> {
    let (_, document) = load(store, default, integrity).await?;
    merge(config, &document)
}

/// As [`merged`], connecting `config`'s default provider (from `rings`) to check the seal, and
/// only when the store has a document at all (and the integrity record says none should exist).
///
/// # Errors
/// As [`merged`], or if the default provider cannot be connected.
pub async fn merged_for(
    config: &Config,
    rings: &Rings,
    store: &dyn Store,
    integrity: &IntegrityKey,
) -> Result<Config, VaultError> {
    let recorded = vault_objects::integrity::checked_record(store, integrity).await?;
    if recorded.byok_generation == 0 && store.byok_generation().await? == 0 {
        return Ok(config.clone());
    }
    let default = config.default_provider(rings, false).await?;
    merged(config, store, &*default, integrity).await
}

fn merge(config: &Config, document: &ByokDocument) -> Result<Config, VaultError> {
    config
        .with_store(document, |k| std::env::var(k).ok())
        .map_err(|problems| crate::deployment::config_error(problems.join("; ")))
}

/// Keeps a router's rules equal to the configuration's plus the store's, while the router is in
/// use: every [`WATCH_INTERVAL`] it reads the store's BYOK generation (one row), and when it
/// moved, reads and authenticates the document, connects the new keys, and swaps the rules in.
/// Customer keys that could not be connected are tried again every [`RECONNECT_INTERVAL`].
#[derive(Debug)]
pub struct ByokWatch {
    config: Config,
    rings: Rings,
    store: Arc<dyn Store>,
    integrity: Arc<IntegrityKey>,
    state: tokio::sync::Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    /// The generation the rules in force were read at.
    generation: Option<u64>,
    /// The default provider as the document's seal is opened with: strict (see
    /// [`Config::default_provider`]), never accepting a wrap anyone could forge.
    opener: Option<Arc<dyn KeyProvider>>,
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
    /// A watch over `config`'s file providers and `store`'s BYOK document (its generation
    /// checked against the integrity record with `integrity`).
    pub fn new(
        config: Config,
        rings: Rings,
        store: Arc<dyn Store>,
        integrity: Arc<IntegrityKey>,
    ) -> Self {
        Self {
            config,
            rings,
            store,
            integrity,
            state: tokio::sync::Mutex::default(),
        }
    }

    /// Builds the router (managed rings created if `create`).
    ///
    /// # Errors
    /// If the store cannot be read, its document is not authentic or does not merge, or the
    /// default provider or a managed ring cannot be opened.
    pub async fn router(&self, create: bool) -> Result<Router, VaultError> {
        let mut state = self.state.lock().await;
        // The file's providers first: the default one authenticates the store's document.
        let usage = if self.config.needs_key_usage() {
            Some(self.store.key_usage().await?)
        } else {
            None
        };
        let mut disconnected = self
            .config
            .connect_providers(&self.rings, create, usage.as_deref(), &mut state.built)
            .await?;
        let default = state
            .built
            .get(self.config.default.get_ref())
            .cloned()
            .ok_or_else(|| {
                crate::deployment::config_error("the default provider is not defined")
            })?;
        // The router's default may accept unsigned Azure RSA wraps (while the store holds
        // some); the document's seal is opened by a strict instance that never does.
        let opener = match self.config.providers.get(self.config.default.get_ref()) {
            Some(p) if matches!(p.get_ref(), ProviderConfig::AzureKv { .. }) => {
                self.config.default_provider(&self.rings, false).await?
            }
            _ => default.clone(),
        };
        let (generation, document) = load(&*self.store, &*opener, &self.integrity).await?;
        state.opener = Some(opener);
        let merged = merge(&self.config, &document)?;
        let usage = if merged.needs_key_usage() && usage.is_none() {
            Some(self.store.key_usage().await?)
        } else {
            usage
        };
        disconnected.extend(
            merged
                .connect_providers(&self.rings, create, usage.as_deref(), &mut state.built)
                .await?,
        );
        let attempted: BTreeSet<String> = state.built.keys().cloned().collect();
        let rules = merged.rules_with(&state.built)?;
        state.note(generation, definitions(&document), &attempted, disconnected);
        Ok(Router::with_rules(default, rules))
    }

    /// Brings `router`'s rules up to date if the store's document changed (or a disconnected key
    /// is due for another try). Returns whether the rules were replaced.
    ///
    /// # Errors
    /// If the store cannot be read, the document is not authentic or does not merge: the rules
    /// in force stay.
    pub async fn refresh(&self, router: &Router) -> Result<bool, VaultError> {
        let mut state = self.state.lock().await;
        let generation = self.store.byok_generation().await?;
        let retry_due = state.retry_at.is_some_and(|at| Instant::now() >= at);
        if state.generation == Some(generation) && !retry_due {
            return Ok(false);
        }
        // One read of the document: its generation, providers and rules belong together.
        let opener = state
            .opener
            .clone()
            .unwrap_or_else(|| router.default_provider().clone());
        let (generation, document) = load(&*self.store, &*opener, &self.integrity).await?;
        if state.generation.is_some_and(|seen| generation < seen) {
            return Err(crate::deployment::config_error(format!(
                "the store's BYOK rules went back from generation {} to {generation}: refused (a restored backup?)",
                state.generation.unwrap_or_default()
            )));
        }
        let merged = merge(&self.config, &document)?;
        let definitions = definitions(&document);
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

    /// Follows the store's rules for `router` until it is dropped. After a failed refresh it
    /// waits [`RECONNECT_INTERVAL`] before the next try.
    pub fn spawn(self: Arc<Self>, router: Weak<Router>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                let Some(router) = router.upgrade() else {
                    break;
                };
                if let Err(e) = self.refresh(&router).await {
                    tracing::warn!(
                        target: "vault::byok",
                        error = %e,
                        "BYOK rules not refreshed; the rules in force stay"
                    );
                    drop(router);
                    tokio::time::sleep(RECONNECT_INTERVAL).await;
                }
            }
        })
    }
}

/// The store providers' definitions by name.
fn definitions(document: &ByokDocument) -> BTreeMap<String, String> {
    document
        .providers
        .iter()
        .map(|p| (p.name.clone(), p.definition.clone()))
        .collect()
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
