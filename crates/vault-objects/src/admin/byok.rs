//! `vault byok` and `vault keys verify`: customers' keys onboarded at runtime, kept in the
//! store's sealed BYOK document, each verified live before a rule sends contexts to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use vault_crypto::{KeyContext, KeyProvider};
use vault_store::{SqlStore, Timestamp};

use super::{AdminError, rings_of};

mod providers;
use crate::byok::{self, ByokDocument, StoredRule, Verification};
use crate::config::Config;
use crate::deployment::Deployment;
use crate::integrity::{IntegrityKey, Upgrade};
use crate::rings::Rings;

fn now() -> i64 {
    Timestamp::now().0
}

/// A rule `vault byok set` was asked for: verified and set unless it failed verification, or
/// (`--unverified`) set without verifying.
#[derive(Debug)]
pub struct RuleSet {
    /// The rule's pairs, as a context shows them.
    pub label: String,
    /// The provider's live verification (`None`: not verified, as asked).
    pub verification: Option<Verification>,
    /// Whether the rule is set (routing within a second).
    pub set: bool,
}

/// A rule `vault byok remove` removed.
#[derive(Debug)]
pub struct RuleRemoved {
    /// Its pairs, as a context shows them.
    pub label: String,
    /// The `--match` arguments that name them.
    pub match_args: String,
    /// The provider it sent contexts to.
    pub provider: String,
    /// The stored object versions and issued data keys that provider's key still wraps, or why
    /// they could not be counted.
    pub still_wraps: Result<(u64, u64), String>,
}

/// A rule as `vault byok list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    /// `key=value` pairs, comma-separated.
    pub matches: String,
    /// The provider it sends contexts to.
    pub provider: String,
    /// `vault.toml` or `store`.
    pub source: &'static str,
    /// For a store rule: whether its provider verified when it was set.
    pub verified: Option<bool>,
}

/// What every `vault byok` command works with: the store, where rings are, and the default
/// provider that seals the BYOK document.
pub struct ByokAdmin<'a> {
    config: &'a Config,
    store: SqlStore,
    rings: Rings,
    default: Arc<dyn KeyProvider>,
    integrity: Arc<IntegrityKey>,
}

impl std::fmt::Debug for ByokAdmin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByokAdmin").finish_non_exhaustive()
    }
}

impl<'a> ByokAdmin<'a> {
    /// The BYOK document of `deployment`'s store (made beside the data directory when it is
    /// the embedded default and there is none yet), sealed by `config`'s default provider.
    ///
    /// # Errors
    /// If the store, its integrity record or the default provider cannot be opened.
    pub async fn open(deployment: &Deployment, config: &'a Config) -> Result<Self, AdminError> {
        if !deployment.has_store() && !deployment.is_postgres() {
            // Rules are kept next to the objects: make the store (SQLite in the data directory).
            std::fs::create_dir_all(deployment.data_dir())?;
        }
        let store = deployment.store().await?;
        let rings = rings_of(deployment, config, Some(&store)).await?;
        let integrity = deployment
            .integrity(&store, config, Upgrade::Refuse)
            .await?;
        let default = config.default_provider(&rings, true).await?;
        Ok(Self {
            config,
            store,
            rings,
            default,
            integrity,
        })
    }

    /// Closes the store.
    pub async fn close(self) {
        self.store.close().await;
    }

    async fn document(&self) -> Result<ByokDocument, AdminError> {
        Ok(byok::load(&self.store, &*self.default, &self.integrity)
            .await?
            .1)
    }

    async fn update<T>(
        &self,
        change: impl FnMut(&mut ByokDocument) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        byok::update(&self.store, &*self.default, &self.integrity, change).await
    }

    /// The configuration with `document` merged, or why not.
    fn merged(&self, document: &ByokDocument) -> Result<Config, AdminError> {
        self.config
            .with_store(document, |k| std::env::var(k).ok())
            .map_err(|p| AdminError::Invalid(p.join("; ")))
    }

    async fn verify_recorded(
        &self,
        merged: &Config,
        name: &str,
    ) -> Result<Verification, AdminError> {
        let v = byok::verify(merged, &self.rings, name).await;
        byok::record(&self.store, merged, &v).await?;
        Ok(v)
    }

    /// `vault byok set`: contexts holding `matches` go to store provider `provider`, once it
    /// verifies (or, with `unverified`, at once without verifying).
    ///
    /// # Errors
    /// `Invalid` for pairs that are not a context or a provider not in the store.
    pub async fn set_rule(
        &self,
        matches: Vec<(String, String)>,
        provider: &str,
        unverified: bool,
    ) -> Result<RuleSet, AdminError> {
        let label = KeyContext::from_pairs(matches.clone())
            .map_err(vault_crypto::Error::from)?
            .to_string();
        let pairs: BTreeMap<String, String> = matches.into_iter().collect();
        let rule = StoredRule {
            matches: pairs,
            provider: provider.to_owned(),
            verified: false,
            created_at: now(),
        };
        // Checked as it will be merged, then verified, then written.
        let mut document = self.document().await?;
        let Some(definition) = document
            .providers
            .iter()
            .find(|p| p.name == provider)
            .map(|p| p.definition.clone())
        else {
            return Err(AdminError::Invalid(format!(
                "no provider {provider:?} in the store: add it with `vault byok provider add {provider} --type …`"
            )));
        };
        set_rule(&mut document, rule.clone());
        let merged = self.merged(&document)?;
        let verification = if unverified {
            None
        } else {
            let v = self.verify_recorded(&merged, provider).await?;
            if !v.verified() {
                return Ok(RuleSet {
                    label,
                    verification: Some(v),
                    set: false,
                });
            }
            Some(v)
        };
        let verified = verification.as_ref().is_some_and(Verification::verified);
        self.update(|document| {
            match document.providers.iter().find(|p| p.name == provider) {
                None => {
                    return Err(AdminError::Invalid(format!(
                        "provider {provider:?} was removed meanwhile"
                    )));
                }
                // The rule is for the key that was verified, not one put in its place since.
                Some(p) if p.definition != definition => {
                    return Err(AdminError::Conflict(format!(
                        "provider {provider:?} was changed meanwhile: run the command again"
                    )));
                }
                Some(_) => {}
            }
            set_rule(
                document,
                StoredRule {
                    verified,
                    ..rule.clone()
                },
            );
            self.merged(document).map(drop)
        })
        .await?;
        Ok(RuleSet {
            label,
            verification,
            set: true,
        })
    }

    /// `vault byok remove`: the store rule for exactly `matches` goes.
    ///
    /// # Errors
    /// `NotFound` if there is none.
    pub async fn remove_rule(
        &self,
        matches: Vec<(String, String)>,
    ) -> Result<RuleRemoved, AdminError> {
        let context = KeyContext::from_pairs(matches.clone()).map_err(vault_crypto::Error::from)?;
        let label = context.to_string();
        let pairs: BTreeMap<String, String> = matches.into_iter().collect();
        let removed = self
            .update(|document| {
                let i = document
                    .rules
                    .iter()
                    .position(|r| r.matches == pairs)
                    .ok_or_else(|| {
                        AdminError::NotFound(format!(
                            "no rule {label} in the store (`vault byok list`)"
                        ))
                    })?;
                let rule = document.rules.remove(i);
                unroute_if_unused(document, &rule.provider);
                Ok(rule)
            })
            .await?;
        let merged = self.merged(&self.document().await?)?;
        let still_wraps = self
            .wrapped_by(&merged, &removed.provider)
            .await
            .map_err(|e| e.to_string());
        Ok(RuleRemoved {
            label,
            match_args: byok::match_args(&context),
            provider: removed.provider,
            still_wraps,
        })
    }

    /// `vault byok list`: `vault.toml`'s rules, then the store's, in the order they apply.
    ///
    /// # Errors
    /// If the document cannot be read or fails its checks.
    pub async fn rules(&self) -> Result<Vec<ListedRule>, AdminError> {
        let label = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut listed = Vec::new();
        for r in &self.config.rules {
            let r = r.get_ref();
            listed.push(ListedRule {
                matches: label(&r.matches),
                provider: r.provider.get_ref().clone(),
                source: "vault.toml",
                verified: None,
            });
        }
        for r in self.document().await?.rules {
            listed.push(ListedRule {
                matches: label(&r.matches),
                provider: r.provider,
                source: "store",
                verified: Some(r.verified),
            });
        }
        Ok(listed)
    }
}

/// Sets `rule`: replaces the rule with the same pairs in place, or adds it last. The provider
/// it names learns the rule's organization; one it takes the pairs from, left without a rule,
/// is marked unrouted (values may still be landing under its key).
fn set_rule(document: &mut ByokDocument, rule: StoredRule) {
    let replaced = match document
        .rules
        .iter_mut()
        .find(|r| r.matches == rule.matches)
    {
        Some(existing) => Some(std::mem::replace(existing, rule.clone()).provider),
        None => {
            document.rules.push(rule.clone());
            None
        }
    };
    if let Some(old) = replaced {
        unroute_if_unused(document, &old);
    }
    if let Some(p) = document
        .providers
        .iter_mut()
        .find(|p| p.name == rule.provider)
    {
        p.unrouted_at = None;
        p.routed = Some(true);
        if let Some(org) = rule.matches.get("organization_id") {
            p.organizations.insert(org.clone());
        }
    }
}

/// Marks store provider `name` unrouted now if no rule names it any more: values sealed under
/// its key may still be landing, so it cannot be removed for [`byok::QUIET_SECS`].
fn unroute_if_unused(document: &mut ByokDocument, name: &str) {
    if !document.rules.iter().any(|r| r.provider == name)
        && let Some(p) = document.providers.iter_mut().find(|p| p.name == name)
    {
        p.unrouted_at = Some(now());
    }
}
