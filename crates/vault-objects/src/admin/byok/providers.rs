//! `vault byok provider`: adding, correcting, listing and removing the customer key providers
//! kept in the store's BYOK document.

use vault_crypto::{KeyContext, KeyRef};
use vault_store::{AuditLog as _, DeploymentEvent, events};

use super::{ByokAdmin, now};
use crate::admin::AdminError;
use crate::byok::{self, ByokDocument, StoredProvider, Verification};
use crate::config::Config;

/// A provider definition as `vault.toml` writes it: `type`, then `fields`, `cache = false`
/// with `no_cache`.
fn definition(
    type_name: &str,
    fields: &[(&str, String)],
    no_cache: bool,
) -> Result<String, AdminError> {
    let mut table = toml::Table::new();
    table.insert("type".into(), type_name.into());
    for (field, value) in fields {
        table.insert((*field).into(), value.clone().into());
    }
    if no_cache {
        table.insert("cache".into(), false.into());
    }
    toml::to_string(&table)
        .map_err(|e| AdminError::Invalid(format!("cannot write the definition: {e}")))
}

/// The store provider `name` of `document`, or what to do.
fn stored<'d>(document: &'d ByokDocument, name: &str) -> Result<&'d StoredProvider, AdminError> {
    document
        .providers
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            AdminError::NotFound(format!(
                "no provider {name:?} in the store (`vault byok provider list`)"
            ))
        })
}

impl ByokAdmin<'_> {
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
        let definition = definition(type_name, fields, no_cache)?;
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
            organizations: Default::default(),
            routed: Some(false),
        };
        self.update(|document| {
            if document.providers.iter().any(|p| p.name == name) {
                return Err(AdminError::Conflict(format!(
                    "provider {name:?} exists in the store: `vault byok provider update {name} …` corrects it while no rule has used it"
                )));
            }
            document.providers.push(stored.clone());
            // Checked as vault.toml's providers are, and against the file's names and keys.
            self.merged(document).map(drop)
        })
        .await?;
        self.verified_unless(name, unverified).await
    }

    /// `vault byok provider update`: provider `name`'s definition replaced (a mistyped key,
    /// region or endpoint corrected), then verified live unless `unverified`. Only while no
    /// rule has ever sent contexts to it: afterwards its key may wrap data, which another key
    /// would strand (add a provider for the new key, and move the rule to it).
    ///
    /// # Errors
    /// `NotFound`; `Conflict` once a rule has used it; `Invalid` for a definition that does
    /// not check.
    pub async fn update_provider(
        &self,
        name: &str,
        type_name: &str,
        fields: &[(&str, String)],
        no_cache: bool,
        unverified: bool,
    ) -> Result<Option<Verification>, AdminError> {
        let definition = definition(type_name, fields, no_cache)?;
        self.update(|document| {
            let routed = !stored(document, name)?.never_routed(document);
            if routed {
                return Err(AdminError::Conflict(format!(
                    "provider {name:?} has had contexts sent to it, so its key may wrap data that another key would leave unreadable: add a provider for the new key (`vault byok provider add`), move the rule to it (`vault byok set --match … --provider NEW`), then `vault keys rewrap --all`"
                )));
            }
            if let Some(p) = document.providers.iter_mut().find(|p| p.name == name) {
                p.definition.clone_from(&definition);
            }
            self.merged(document).map(drop)
        })
        .await?;
        self.verified_unless(name, unverified).await
    }

    /// Provider `name` verified live and recorded, unless `unverified`.
    async fn verified_unless(
        &self,
        name: &str,
        unverified: bool,
    ) -> Result<Option<Verification>, AdminError> {
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
    /// issued, so removing it never makes data unreadable unasked. One no rule has ever used
    /// wraps nothing of ours: it goes without connecting to its key (a mistyped one cannot be
    /// reached). Its organizations are told: `vault.byok_key.deleted`.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` for each refusal above.
    pub async fn remove_provider(&self, name: &str, strand: bool) -> Result<(), AdminError> {
        let document = self.document().await?;
        let p = stored(&document, name)?;
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
        if !strand && !p.never_routed(&document) {
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
        // What was checked must still hold: a rule set (or moved away) meanwhile, or the
        // provider changed, and the checks run again.
        let checked = p.clone();
        let removed = self
            .update(|document| {
                if document.rules.iter().any(|r| r.provider == name) {
                    return Err(AdminError::Conflict(format!(
                        "a rule naming provider {name:?} was set meanwhile"
                    )));
                }
                if stored(document, name)? != &checked {
                    return Err(AdminError::Conflict(format!(
                        "provider {name:?} changed meanwhile: run the command again"
                    )));
                }
                document.providers.retain(|p| p.name != name);
                Ok(checked.clone())
            })
            .await?;
        self.record_deleted(&removed).await
    }

    /// `vault.byok_key.deleted` for each organization whose rules used `removed`, in the
    /// environments that stored values for it (as verification events are).
    async fn record_deleted(&self, removed: &StoredProvider) -> Result<(), AdminError> {
        let type_name = removed.type_name().unwrap_or_default();
        for org in &removed.organizations {
            let key_context = KeyContext::from_pairs([("organization_id", org.as_str())])
                .map_err(vault_crypto::Error::from)?;
            self.store
                .record_deployment_event(&DeploymentEvent {
                    event: events::BYOK_DELETED.into(),
                    actor: byok::actor(),
                    // Only the key's type: which key a customer used is not the other
                    // environments' business.
                    key_id: Some(format!("{type_name}://")),
                    key_context: Some(key_context),
                    detail: None,
                })
                .await?;
        }
        Ok(())
    }

    /// How many stored object versions and issued data keys provider `name`'s key wraps (it is
    /// connected to tell which key references are its own).
    pub(super) async fn wrapped_by(
        &self,
        merged: &Config,
        name: &str,
    ) -> Result<(u64, u64), AdminError> {
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
