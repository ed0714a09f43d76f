use std::sync::Arc;

use toml::Spanned;
use vault_crypto::{KeyContext, KeyProvider};
use vault_store::Store;

use crate::config::{Config, ProviderConfig, RuleConfig, config_error};
use crate::rings::Rings;
use crate::{IntegrityKey, VaultError};

use super::document::{ByokDocument, allowed_fields, load};

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
                            "provider {:?} names the key of provider {other:?} ({}://{}): one key, one provider (a store provider no rule has used is corrected with `vault byok provider update {other} …`, or removed at once)",
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
        let p = self
            .providers
            .get(name)
            .ok_or_else(|| config_error(format!("provider {name:?} is not defined")))?;
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
    let recorded = crate::integrity::checked_record(store, integrity).await?;
    if recorded.byok_generation == 0 && store.byok_generation().await? == 0 {
        return Ok(config.clone());
    }
    let default = config.default_provider(rings, false).await?;
    merged(config, store, &*default, integrity).await
}

pub(super) fn merge(config: &Config, document: &ByokDocument) -> Result<Config, VaultError> {
    config
        .with_store(document, |k| std::env::var(k).ok())
        .map_err(|problems| config_error(problems.join("; ")))
}
