//! `vault byok` and `vault keys verify`: customers' keys onboarded at runtime, kept in the
//! store's sealed BYOK document, each verified live before a rule sends contexts to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use vault_crypto::{KeyContext, KeyProvider, KeyRef};
use vault_store::{AuditLog as _, SqlStore, Timestamp};

use super::{AdminError, rings_of};
use crate::byok::{self, ByokDocument, StoredProvider, StoredRule, Verification};
use crate::config::Config;
use crate::deployment::Deployment;
use crate::integrity::{IntegrityKey, Upgrade};
use crate::rings::Rings;

fn now() -> i64 {
    Timestamp::now().0
}

/// A rule `vault byok set` was asked for: verified, and set unless it failed verification
/// without `--unverified`.
#[derive(Debug)]
pub struct RuleSet {
    /// The rule's pairs, as a context shows them.
    pub label: String,
    /// The provider's live verification.
    pub verification: Verification,
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
    /// verifies (or regardless, with `unverified`).
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
        if !document.providers.iter().any(|p| p.name == provider) {
            return Err(AdminError::Invalid(format!(
                "no provider {provider:?} in the store: add it with `vault byok provider add {provider} --type …`"
            )));
        }
        set_rule(&mut document, rule.clone());
        let merged = self.merged(&document)?;
        let verification = self.verify_recorded(&merged, provider).await?;
        let verified = verification.verified();
        if !verified && !unverified {
            return Ok(RuleSet {
                label,
                verification,
                set: false,
            });
        }
        self.update(|document| {
            if !document.providers.iter().any(|p| p.name == provider) {
                return Err(AdminError::Invalid(format!(
                    "provider {provider:?} was removed meanwhile"
                )));
            }
            set_rule(
                document,
                StoredRule {
                    verified,
                    ..rule.clone()
                },
            );
            if let Some(p) = document.providers.iter_mut().find(|p| p.name == provider) {
                p.unrouted_at = None;
            }
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
                if !document.rules.iter().any(|r| r.provider == rule.provider)
                    && let Some(p) = document
                        .providers
                        .iter_mut()
                        .find(|p| p.name == rule.provider)
                {
                    p.unrouted_at = Some(now());
                }
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

    /// `vault byok provider add`: a customer key provider of `type_name` (`aws-kms`,
    /// `gcp-kms`, `azure-kv`) with `fields`, checked as `vault.toml`'s are; verified live
    /// unless `unverified` (the verification is returned).
    ///
    /// # Errors
    /// `Invalid` for a name of the configuration file or a definition that does not check;
    /// `Conflict` if the store has a provider of that name.
    pub async fn add_provider(
        &self,
        name: &str,
        type_name: &str,
        fields: &[(&str, String)],
        no_cache: bool,
        unverified: bool,
    ) -> Result<Option<Verification>, AdminError> {
        let mut table = toml::Table::new();
        table.insert("type".into(), type_name.into());
        for (field, value) in fields {
            table.insert((*field).into(), value.clone().into());
        }
        if no_cache {
            table.insert("cache".into(), false.into());
        }
        let definition = toml::to_string(&table)
            .map_err(|e| AdminError::Invalid(format!("cannot write the definition: {e}")))?;
        if self.config.providers.contains_key(name) {
            return Err(AdminError::Invalid(format!(
                "provider {name:?} is defined in the configuration file: choose another name"
            )));
        }
        let stored = StoredProvider {
            name: name.to_owned(),
            definition,
            created_at: now(),
            unrouted_at: None,
        };
        self.update(|document| {
            if document.providers.iter().any(|p| p.name == name) {
                return Err(AdminError::Conflict(format!(
                    "provider {name:?} exists in the store"
                )));
            }
            document.providers.push(stored.clone());
            // Checked as vault.toml's providers are, and against the file's names and keys.
            self.merged(document).map(drop)
        })
        .await?;
        if unverified {
            return Ok(None);
        }
        let merged = self.merged(&self.document().await?)?;
        Ok(Some(self.verify_recorded(&merged, name).await?))
    }

    /// `vault byok provider list`: the store's providers.
    ///
    /// # Errors
    /// If the document cannot be read or fails its checks.
    pub async fn providers(&self) -> Result<Vec<StoredProvider>, AdminError> {
        Ok(self.document().await?.providers)
    }

    /// `vault byok provider remove`: refused while a rule names it, while values sealed under
    /// it may still be landing, and (unless `strand`) while its key wraps anything stored or
    /// issued, so removing it never makes data unreadable unasked.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` for each refusal above.
    pub async fn remove_provider(&self, name: &str, strand: bool) -> Result<(), AdminError> {
        let document = self.document().await?;
        let Some(p) = document.providers.iter().find(|p| p.name == name) else {
            return Err(AdminError::NotFound(format!(
                "no provider {name:?} in the store"
            )));
        };
        if document.rules.iter().any(|r| r.provider == name) {
            return Err(AdminError::Conflict(format!(
                "a rule sends contexts to provider {name:?}: `vault byok remove --match …` it first"
            )));
        }
        // Every process routes by the new rules within a second; values sealed under the
        // key just before may still be landing.
        let quiet = i64::try_from(byok::QUIET_SECS * 1_000_000).unwrap_or(i64::MAX);
        if let Some(at) = p.unrouted_at
            && now().saturating_sub(at) < quiet
        {
            return Err(AdminError::Conflict(format!(
                "provider {name:?} was routed to until moments ago; values sealed under its key may still be landing: try again in {} s",
                byok::QUIET_SECS
            )));
        }
        if !strand {
            let merged = self.merged(&document)?;
            match self.wrapped_by(&merged, name).await {
                Ok((0, 0)) => {}
                Ok((stored, issued)) => {
                    return Err(AdminError::Conflict(format!(
                        "provider {name:?}'s key still wraps {stored} stored object version(s) and {issued} issued data key(s), which would become unreadable: `vault keys rewrap --all` moves the stored ones; or remove it with --yes-strand-data"
                    )));
                }
                Err(e) => {
                    let message = format!(
                        "cannot tell what provider {name:?}'s key still wraps ({e}); remove it with --yes-strand-data to accept leaving that unreadable"
                    );
                    return Err(e.reworded(message));
                }
            }
        }
        self.update(|document| {
            if document.rules.iter().any(|r| r.provider == name) {
                return Err(AdminError::Conflict(format!(
                    "a rule naming provider {name:?} was set meanwhile"
                )));
            }
            document.providers.retain(|p| p.name != name);
            Ok(())
        })
        .await
    }

    /// How many stored object versions and issued data keys provider `name`'s key wraps (it is
    /// connected to tell which key references are its own).
    async fn wrapped_by(&self, merged: &Config, name: &str) -> Result<(u64, u64), AdminError> {
        let only = Config {
            default: toml::Spanned::new(0..0, name.to_owned()),
            ..merged.clone()
        };
        let provider = only.default_provider(&self.rings, false).await?;
        let usage = self.store.key_usage().await?;
        let (mut stored, mut issued) = (0, 0);
        for u in usage {
            if KeyRef::parse(&u.key_id).is_ok_and(|k| provider.owns(&k)) {
                stored += u.stored_versions;
                issued += u.issued_data_keys;
            }
        }
        Ok((stored, issued))
    }
}

/// Sets `rule`: replaces the rule with the same pairs in place, or adds it last.
fn set_rule(document: &mut ByokDocument, rule: StoredRule) {
    match document
        .rules
        .iter_mut()
        .find(|r| r.matches == rule.matches)
    {
        Some(existing) => *existing = rule,
        None => document.rules.push(rule),
    }
}
