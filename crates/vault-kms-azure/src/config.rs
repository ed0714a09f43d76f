//! What a Key Vault provider is configured with, checked: the key's location, the wrap
//! algorithm and the credential source.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::Url;
use azure_security_keyvault_keys::models::EncryptionAlgorithm;
use vault_crypto::{ConfigError, KeyRef, ProviderError, ProviderErrorKind};

use crate::{SCHEME, error};

/// How data keys are wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapAlgorithm {
    /// RSA-OAEP with SHA-256 (an RSA key of a Standard or Premium vault, or a Managed HSM).
    RsaOaep256,
    /// AES key wrap with a 256-bit key (RFC 3394; a Managed HSM `oct-HSM` key).
    A256Kw,
}

impl std::str::FromStr for WrapAlgorithm {
    type Err = ConfigError;

    /// The Key Vault name: `RSA-OAEP-256` or `A256KW`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "RSA-OAEP-256" => Ok(Self::RsaOaep256),
            "A256KW" => Ok(Self::A256Kw),
            _ => Err(config_error("algorithm must be RSA-OAEP-256 or A256KW")),
        }
    }
}

impl WrapAlgorithm {
    pub(crate) fn to_azure(self) -> EncryptionAlgorithm {
        match self {
            Self::RsaOaep256 => EncryptionAlgorithm::RsaOaep256,
            Self::A256Kw => EncryptionAlgorithm::A256Kw,
        }
    }
}

/// Where the credential comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// A service principal from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`.
    Environment,
    /// The managed identity of the VM, App Service or container (`AZURE_CLIENT_ID` picks a
    /// user-assigned one).
    ManagedIdentity,
    /// The developer's `az login` (Azure CLI, then Azure Developer CLI).
    AzureCli,
}

impl std::str::FromStr for CredentialSource {
    type Err = ConfigError;

    /// `environment`, `managed-identity` or `azure-cli`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "environment" => Ok(Self::Environment),
            "managed-identity" => Ok(Self::ManagedIdentity),
            "azure-cli" => Ok(Self::AzureCli),
            _ => Err(config_error(
                "credential must be environment, managed-identity or azure-cli",
            )),
        }
    }
}

fn config_error(rule: &'static str) -> ConfigError {
    ConfigError {
        scheme: SCHEME,
        rule,
    }
}

/// A key in a vault, checked: an `https://` vault URL, a key name of 1 to 127 of
/// `[0-9a-zA-Z-]`, and optionally a version of `[0-9a-zA-Z]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLocation {
    pub(crate) url: Url,
    pub(crate) host: String,
    pub(crate) key_name: String,
    pub(crate) key_version: Option<String>,
}

impl KeyLocation {
    /// Checks the parts of a key's location.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first rule broken ([`problems`](Self::problems) has all).
    pub fn new(
        vault_url: &str,
        key_name: &str,
        key_version: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let (host, problems) = Self::check(vault_url, key_name, key_version);
        match (host, problems.first()) {
            (Some((url, host)), None) => Ok(Self {
                url,
                host,
                key_name: key_name.to_owned(),
                key_version: key_version.map(str::to_owned),
            }),
            (_, Some(e)) => Err(*e),
            (None, None) => Err(config_error(
                "vault_url must be https://<vault>.vault.azure.net/",
            )),
        }
    }

    /// Every rule the parts break, for a configuration check.
    pub fn problems(
        vault_url: &str,
        key_name: &str,
        key_version: Option<&str>,
    ) -> Vec<ConfigError> {
        Self::check(vault_url, key_name, key_version).1
    }

    fn check(
        vault_url: &str,
        key_name: &str,
        key_version: Option<&str>,
    ) -> (Option<(Url, String)>, Vec<ConfigError>) {
        let mut problems = Vec::new();
        let url = Url::parse(vault_url).ok().and_then(|url| {
            let host = url
                .host_str()
                .filter(|_| url.scheme() == "https")?
                .to_owned();
            Some((url, host))
        });
        if url.is_none() {
            problems.push(config_error(
                "vault_url must be https://<vault>.vault.azure.net/",
            ));
        }
        let name_ok = !key_name.is_empty()
            && key_name.len() <= 127
            && key_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !name_ok {
            problems.push(config_error("key_name must be 1 to 127 of [0-9a-zA-Z-]"));
        }
        if let Some(v) = key_version
            && (v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            problems.push(config_error("key_version must be 1 to 64 of [0-9a-zA-Z]"));
        }
        if let Some((_, host)) = &url
            && problems.is_empty()
            && KeyRef::new(
                SCHEME,
                format!("{host}/{key_name}"),
                key_version.unwrap_or(""),
            )
            .is_err()
        {
            problems.push(config_error("the key reference is invalid"));
        }
        (url, problems)
    }
}

impl CredentialSource {
    /// `Environment` when `AZURE_CLIENT_SECRET` is set, else `ManagedIdentity`.
    pub fn from_environment() -> Self {
        if std::env::var_os("AZURE_CLIENT_SECRET").is_some() {
            Self::Environment
        } else {
            Self::ManagedIdentity
        }
    }

    /// Builds the credential.
    ///
    /// # Errors
    /// A [`ProviderError`] (`AccessDenied`) naming what is missing; never a secret.
    pub fn credential(self) -> Result<Arc<dyn TokenCredential>, ProviderError> {
        let denied = |what: &str| error(ProviderErrorKind::AccessDenied, what.to_owned());
        Ok(match self {
            Self::Environment => {
                let var =
                    |k: &str| std::env::var(k).map_err(|_| denied(&format!("{k} is not set")));
                let tenant = var("AZURE_TENANT_ID")?;
                let client = var("AZURE_CLIENT_ID")?;
                let secret = var("AZURE_CLIENT_SECRET")?;
                azure_identity::ClientSecretCredential::new(&tenant, client, secret.into(), None)
                    .map_err(|_| denied("invalid service principal settings"))?
            }
            Self::ManagedIdentity => azure_identity::ManagedIdentityCredential::new(None)
                .map_err(|_| denied("cannot set up the managed identity credential"))?,
            Self::AzureCli => azure_identity::DeveloperToolsCredential::new(None)
                .map_err(|_| denied("cannot set up the Azure CLI credential"))?,
        })
    }
}
