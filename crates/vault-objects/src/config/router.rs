//! From a configuration to a router: every provider connected (remote ones behind the
//! data-key cache), then the rules in order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vault_crypto::{KeyProvider, Router, Rules};

use crate::rings::Rings;

use super::{Config, ProviderConfig};

impl Config {
    /// For each Azure Key Vault provider with an RSA key: how many stored object versions and
    /// issued data keys in `usage` hold an **unsigned** RSA wrap of its key (made before wraps
    /// were signed), which someone with the key's public part could have forged.
    pub fn unsigned_azure_wraps(&self, usage: &[vault_store::KeyUsage]) -> Vec<(String, u64, u64)> {
        let mut found = Vec::new();
        for (name, provider) in &self.providers {
            let ProviderConfig::AzureKv {
                vault_url,
                key_name,
                algorithm,
                ..
            } = provider.get_ref()
            else {
                continue;
            };
            if algorithm.as_deref().is_some_and(|a| a != "RSA-OAEP-256") {
                continue;
            }
            // As the provider names it: the URL's host, lower case.
            let host = vault_url
                .trim_start_matches("https://")
                .split(['/', ':', '?', '#'])
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let prefix = format!("azure-kv://{host}/{key_name}#");
            let (mut stored, mut issued) = (0, 0);
            for u in usage {
                if let Some(version) = u.key_id.strip_prefix(&prefix)
                    && !version.ends_with("+rs256")
                {
                    stored += u.stored_versions;
                    issued += u.issued_data_keys;
                }
            }
            found.push((name.clone(), stored, issued));
        }
        found
    }
    /// Builds the router: connects every provider (remote ones behind the data-key cache unless
    /// it is off), then the rules in order.
    ///
    /// # Errors
    /// A [`crate::VaultError`] if a provider cannot be opened or reached.
    pub async fn router(&self, data_dir: &Path) -> Result<Router, crate::VaultError> {
        let rings = Rings::Files {
            dir: data_dir.to_owned(),
            store: None,
        };
        self.router_for_store(&rings, true, None).await
    }

    /// As [`router`](Self::router), for a store whose `usage` is known: an Azure provider
    /// without an explicit `accept_unsigned_wraps` accepts unsigned RSA wraps only if the store
    /// holds some (stored versions, or issued data keys their holders may bring back), so a new
    /// deployment, or one whose old wraps are all rewrapped, refuses a wrap forged with the
    /// public key. With `usage` unknown (`None`: commands without a store, such as file
    /// decryption) they are accepted.
    ///
    /// # Errors
    /// As [`router`](Self::router).
    pub async fn router_for_store(
        &self,
        rings: &Rings,
        create: bool,
        usage: Option<&[vault_store::KeyUsage]>,
    ) -> Result<Router, crate::VaultError> {
        let mut built = BTreeMap::new();
        self.connect_providers(rings, create, usage, &mut built)
            .await?;
        let default = provider_named(&built, self.default.get_ref())?;
        Ok(Router::with_rules(default, self.rules_with(&built)?))
    }

    /// Connects every provider of the configuration not in `built` yet, and adds it there (a
    /// managed ring from `rings`; a remote one behind the data-key cache unless it is off).
    ///
    /// A customer's key that cannot be connected (its key service unreachable, the key
    /// missing, a permission not granted) does not stop the others: it is put in as a
    /// [`Disconnected`](super::Disconnected) provider that fails each call with the
    /// reason, so only its own contexts fail, and `vault keys verify` says what to fix. A KMS
    /// key that is the default may be disconnected too (every context without a rule then
    /// fails until it is back); managed rings must open.
    ///
    /// Returns the names of those put in as disconnected.
    ///
    /// # Errors
    /// A [`crate::VaultError`] if the default provider or a managed ring cannot be opened.
    pub async fn connect_providers(
        &self,
        rings: &Rings,
        create: bool,
        usage: Option<&[vault_store::KeyUsage]>,
        built: &mut BTreeMap<String, Arc<dyn KeyProvider>>,
    ) -> Result<Vec<String>, crate::VaultError> {
        let mut disconnected = Vec::new();
        let unsigned_in_store: Option<BTreeMap<String, bool>> = usage.map(|u| {
            self.unsigned_azure_wraps(u)
                .into_iter()
                .map(|(name, stored, issued)| (name, stored + issued > 0))
                .collect()
        });
        let accept_unsigned = |name: &str| {
            unsigned_in_store
                .as_ref()
                .is_none_or(|m| m.get(name).copied().unwrap_or(false))
        };
        for (name, p) in &self.providers {
            if built.contains_key(name) {
                continue;
            }
            if rings.seal_provider() == Some(name.as_str()) {
                // The key that seals the ring serves nothing else (`check_seal` keeps it out of
                // the rules and the default; here it is kept out of decrypt-only too).
                continue;
            }
            // Boxed: the providers' connect futures are large and deep.
            let connected =
                Box::pin(self.connect(p.get_ref(), rings, create, accept_unsigned(name), false))
                    .await;
            // A managed ring must open; a customer's key (or a KMS default) may be down.
            let managed = matches!(p.get_ref(), ProviderConfig::Managed { .. });
            let provider = match connected {
                Ok(p) => p,
                // Reading never creates a ring, and one that does not exist has nothing to
                // open: leave it out (unless it is the default, which a router needs).
                Err(crate::VaultError::Crypto(vault_crypto::Error::KeyRing(
                    vault_crypto::KeyRingError::Missing { .. },
                ))) if !create && name != self.default.get_ref() => continue,
                Err(crate::VaultError::Crypto(vault_crypto::Error::Provider(e))) if !managed => {
                    tracing::warn!(
                        target: "vault::byok",
                        provider = %name,
                        error = %e,
                        "a customer key cannot be connected: its contexts fail until it can (`vault keys verify` says what to fix)"
                    );
                    disconnected.push(name.clone());
                    Arc::new(super::Disconnected::new(name, &e).owning(p.get_ref().key_identity()))
                }
                Err(e) => return Err(e),
            };
            built.insert(name.clone(), provider);
        }
        Ok(disconnected)
    }

    /// The rules of the configuration over the connected providers `built`, with every
    /// provider no rule uses (and that is not the default) kept to unwrap what it wrapped.
    ///
    /// # Errors
    /// If a rule names a provider not in `built`, or its pairs break a context's limits.
    pub fn rules_with(
        &self,
        built: &BTreeMap<String, Arc<dyn KeyProvider>>,
    ) -> Result<Rules, crate::VaultError> {
        let mut rules = Rules::new();
        for rule in &self.rules {
            let r = rule.get_ref();
            rules = rules
                .rule(
                    r.matches.clone(),
                    provider_named(built, r.provider.get_ref())?,
                )
                .map_err(vault_crypto::Error::from)?;
        }
        // Providers no rule uses any more still open what they wrapped.
        for (name, p) in built {
            let used = name == self.default.get_ref()
                || self
                    .rules
                    .iter()
                    .any(|r| r.get_ref().provider.get_ref() == name);
            if !used {
                rules = rules.decrypt_only(p.clone());
            }
        }
        Ok(rules)
    }
}

/// The provider `name` of `built`.
fn provider_named(
    built: &BTreeMap<String, Arc<dyn KeyProvider>>,
    name: &str,
) -> Result<Arc<dyn KeyProvider>, crate::VaultError> {
    built.get(name).cloned().ok_or_else(|| {
        crate::VaultError::from(vault_crypto::Error::from(vault_crypto::ProviderError::new(
            vault_crypto::ProviderErrorKind::Configuration,
            "config",
            format!("provider {name:?} is not defined"),
        )))
    })
}

impl Config {
    /// The KMS provider `name` of the configuration, connected without the data-key cache,
    /// to seal a ring's root keys.
    ///
    /// # Errors
    /// If it is not defined, is managed, or cannot be reached.
    pub async fn seal_provider(
        &self,
        name: &str,
    ) -> Result<Arc<dyn KeyProvider>, crate::VaultError> {
        let config_error = |m: String| {
            crate::VaultError::from(vault_crypto::Error::from(vault_crypto::ProviderError::new(
                vault_crypto::ProviderErrorKind::Configuration,
                "config",
                m,
            )))
        };
        self.check_seal(name).map_err(config_error)?;
        let Some(p) = self.providers.get(name) else {
            return Err(config_error(format!("provider {name:?} is not defined")));
        };
        // A KMS provider never opens a ring, so no place for rings is needed.
        let nowhere = Rings::Files {
            dir: std::path::PathBuf::new(),
            store: None,
        };
        Box::pin(self.connect(p.get_ref(), &nowhere, false, false, true)).await
    }

    /// Connects one provider: a managed ring from `rings`; a remote one behind the data-key
    /// cache if its cache is on. `create`: whether a managed ring that does not exist yet is
    /// made. `accept_unsigned`: Azure's default for `accept_unsigned_wraps`. `for_seal`: the
    /// provider seals a ring's root keys: no cache, and never an unsigned Azure wrap.
    pub(crate) async fn connect(
        &self,
        p: &ProviderConfig,
        rings: &Rings,
        create: bool,
        accept_unsigned: bool,
        for_seal: bool,
    ) -> Result<Arc<dyn KeyProvider>, crate::VaultError> {
        // Only Azure's wraps can be unsigned.
        #[cfg(not(feature = "azure"))]
        let _ = (accept_unsigned, for_seal);
        Ok(match p {
            ProviderConfig::Managed {
                ring,
                check_interval_ms,
            } => Arc::new(
                rings
                    .open(ring, create)
                    .await
                    .map_err(vault_crypto::Error::from)?
                    .with_check_interval(check_interval(*check_interval_ms)),
            ),
            #[cfg(feature = "aws")]
            ProviderConfig::AwsKms {
                key_id,
                region,
                endpoint_url,
                cache,
            } => {
                let aws = vault_kms_aws::AwsKmsProvider::connect(
                    key_id,
                    region.as_deref(),
                    endpoint_url.as_deref(),
                    vault_kms_aws::RetryPolicy::default(),
                )
                .await
                .map_err(vault_crypto::Error::from)?;
                match cache.limits().filter(|_| !for_seal) {
                    Some(limits) => {
                        Arc::new(vault_crypto::CachingProvider::new(Arc::new(aws), limits))
                    }
                    None => Arc::new(aws),
                }
            }
            #[cfg(feature = "gcp")]
            ProviderConfig::GcpKms {
                key_name,
                endpoint_url,
                cache,
            } => {
                let gcp = vault_kms_gcp::GcpKmsProvider::connect(
                    key_name,
                    endpoint_url.as_deref(),
                    vault_crypto::RetryPolicy::default(),
                )
                .await
                .map_err(vault_crypto::Error::from)?;
                match cache.limits().filter(|_| !for_seal) {
                    Some(limits) => {
                        Arc::new(vault_crypto::CachingProvider::new(Arc::new(gcp), limits))
                    }
                    None => Arc::new(gcp),
                }
            }
            #[cfg(feature = "azure")]
            ProviderConfig::AzureKv {
                vault_url,
                key_name,
                key_version,
                algorithm,
                credential,
                accept_unsigned_wraps,
                cache,
            } => {
                use vault_kms_azure::{CredentialSource, WrapAlgorithm};
                let config_error = |e: vault_crypto::ConfigError| {
                    vault_crypto::Error::from(vault_crypto::ProviderError::from(e))
                };
                let algorithm = match algorithm.as_deref() {
                    Some(a) => a.parse().map_err(config_error)?,
                    None => WrapAlgorithm::RsaOaep256,
                };
                let source = match credential.as_deref() {
                    Some(c) => c.parse().map_err(config_error)?,
                    None => CredentialSource::from_environment(),
                };
                let azure = vault_kms_azure::AzureKeyVaultProvider::connect(
                    vault_url,
                    key_name,
                    key_version.as_deref(),
                    algorithm,
                    source,
                    vault_crypto::RetryPolicy::default(),
                )
                .map_err(vault_crypto::Error::from)?
                .accept_unsigned_wraps(
                    !for_seal && accept_unsigned_wraps.unwrap_or(accept_unsigned),
                );
                match cache.limits().filter(|_| !for_seal) {
                    Some(limits) => {
                        Arc::new(vault_crypto::CachingProvider::new(Arc::new(azure), limits))
                    }
                    None => Arc::new(azure),
                }
            }
            #[cfg(not(feature = "azure"))]
            ProviderConfig::AzureKv { .. } => {
                return Err(vault_crypto::Error::from(vault_crypto::ProviderError::new(
                    vault_crypto::ProviderErrorKind::Configuration,
                    "azure-kv",
                    "this build has no Azure support (feature `azure`)",
                ))
                .into());
            }
            #[cfg(not(feature = "gcp"))]
            ProviderConfig::GcpKms { .. } => {
                return Err(vault_crypto::Error::from(vault_crypto::ProviderError::new(
                    vault_crypto::ProviderErrorKind::Configuration,
                    "gcp-kms",
                    "this build has no Google Cloud support (feature `gcp`)",
                ))
                .into());
            }
            #[cfg(not(feature = "aws"))]
            ProviderConfig::AwsKms { .. } => {
                return Err(vault_crypto::Error::from(vault_crypto::ProviderError::new(
                    vault_crypto::ProviderErrorKind::Configuration,
                    "aws-kms",
                    "this build has no AWS support (feature `aws`)",
                ))
                .into());
            }
        })
    }
}

/// A managed ring's check interval, or the default.
pub(super) fn check_interval(ms: Option<u64>) -> Duration {
    ms.map_or(
        vault_crypto::managed::DEFAULT_CHECK_INTERVAL,
        Duration::from_millis,
    )
}
