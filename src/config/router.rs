//! From a configuration to a router: every provider connected (remote ones behind the
//! data-key cache), then the rules in order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vault_crypto::{KeyProvider, ManagedKeyProvider, Router};

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
        self.router_for_store(data_dir, None).await
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
        data_dir: &Path,
        usage: Option<&[vault_store::KeyUsage]>,
    ) -> Result<Router, crate::VaultError> {
        let unsigned_in_store: Option<BTreeMap<String, bool>> = usage.map(|u| {
            self.unsigned_azure_wraps(u)
                .into_iter()
                .map(|(name, stored, issued)| (name, stored + issued > 0))
                .collect()
        });
        let mut built: BTreeMap<&str, Arc<dyn KeyProvider>> = BTreeMap::new();
        for (name, p) in &self.providers {
            let accept_unsigned = |explicit: Option<bool>| {
                explicit.unwrap_or_else(|| {
                    unsigned_in_store
                        .as_ref()
                        .is_none_or(|m| m.get(name.as_str()).copied().unwrap_or(false))
                })
            };
            let provider: Arc<dyn KeyProvider> = match p.get_ref() {
                ProviderConfig::Managed {
                    ring,
                    check_interval_ms,
                } => Arc::new(
                    ManagedKeyProvider::open_or_create(data_dir, ring)?
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
                    match cache.limits() {
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
                    match cache.limits() {
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
                    .accept_unsigned_wraps(accept_unsigned(*accept_unsigned_wraps));
                    match cache.limits() {
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
            };
            built.insert(name, provider);
        }
        let get = |name: &str| {
            built.get(name).cloned().ok_or_else(|| {
                crate::VaultError::from(vault_crypto::Error::from(
                    vault_crypto::ProviderError::new(
                        vault_crypto::ProviderErrorKind::Configuration,
                        "config",
                        format!("provider {name:?} is not defined"),
                    ),
                ))
            })
        };
        let mut router = Router::new(get(self.default.get_ref())?);
        for rule in &self.rules {
            let r = rule.get_ref();
            router = router
                .rule(r.matches.clone(), get(r.provider.get_ref())?)
                .map_err(vault_crypto::Error::from)?;
        }
        // Providers no rule uses any more still open what they wrapped.
        for (name, p) in &built {
            let used = *name == self.default.get_ref()
                || self
                    .rules
                    .iter()
                    .any(|r| r.get_ref().provider.get_ref() == name);
            if !used {
                router = router.decrypt_only(p.clone());
            }
        }
        Ok(router)
    }
}

/// A managed ring's check interval, or the default.
pub(super) fn check_interval(ms: Option<u64>) -> Duration {
    ms.map_or(
        vault_crypto::managed::DEFAULT_CHECK_INTERVAL,
        Duration::from_millis,
    )
}
