use std::collections::BTreeSet;
use std::fmt;

use serde_json::json;
use subtle::ConstantTimeEq;
use toml::Spanned;
use vault_crypto::{KeyContext, KeyProvider, KeyRef, ProviderError, ProviderErrorKind};
use vault_store::{DeploymentEvent, Store, events};

use crate::VaultError;
use crate::config::Config;
use crate::rings::Rings;

use super::{actor, verification_context};

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
    // Everything the provider uses, in the names its errors give (docs/BYOK.md, "Permissions").
    let all = match provider_type {
        "aws-kms" => "kms:DescribeKey, kms:GenerateDataKey, kms:Encrypt and kms:Decrypt",
        "gcp-kms" => {
            "cloudkms.cryptoKeyVersions.useToEncrypt and cloudkms.cryptoKeyVersions.useToDecrypt"
        }
        "azure-kv" => "keys/wrapKey, keys/unwrapKey, and for RSA keys keys/sign and keys/get",
        _ => "the key's use",
    };
    match (kind, needs) {
        (K::AccessDenied, Some(op)) => {
            format!("grant {op} on the key to {principal}; all the vault uses: {all}")
        }
        (K::AccessDenied, None) => format!(
            "the key service refused this process's credentials: check them, and grant {all} on the key to {principal}"
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
        (K::Unavailable, _) => match provider_type {
            "gcp-kms" => "the key service, or the metadata server that gives this process credentials on Google Cloud, cannot be reached: check endpoint_url, DNS and the network path; off Google Cloud, give this process credentials (GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login`); then verify again".into(),
            "aws-kms" => "the key service, or the role or metadata service that gives this process credentials, cannot be reached: check endpoint_url, DNS, the network path and the region; then verify again".into(),
            _ => "the key service cannot be reached: check endpoint_url or vault_url, DNS, the network path and the region, then verify again".into(),
        },
        (K::Throttled, _) => "the key service is throttling this process: verify again later, or raise its quota".into(),
        (K::Configuration, _) => "fix the provider's definition (`vault config check`)".into(),
        (K::NoCredentials, _) => match provider_type {
            "aws-kms" => "give this process AWS credentials: the default chain looked in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), the shared profile (AWS_PROFILE, ~/.aws/credentials and ~/.aws/config), web identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), the container role (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI) and the EC2 instance role, and found none; then verify again".into(),
            "gcp-kms" => "give this process Google credentials: Application Default Credentials looked at GOOGLE_APPLICATION_CREDENTIALS (a service account key file), gcloud's application_default_credentials.json (`gcloud auth application-default login`) and the metadata server of Google Cloud, and found none; then verify again".into(),
            "azure-kv" => "give this process Azure credentials for its `credential` source (environment: AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET; managed-identity: run on Azure with one assigned; azure-cli: `az login`); then verify again".into(),
            _ => "give this process credentials for the key service, then verify again".into(),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused permission is named, with everything else the vault uses on the key, in the
    /// names the errors and docs/BYOK.md use; missing credentials name the chain per cloud.
    #[test]
    fn advice_names_every_permission_and_the_credential_chain() {
        let denied = advice(
            "aws-kms",
            Step::GenerateDataKey,
            ProviderErrorKind::AccessDenied,
            Some("kms:GenerateDataKey"),
        );
        assert!(denied.starts_with("grant kms:GenerateDataKey"), "{denied}");
        for p in ["kms:DescribeKey", "kms:Encrypt", "kms:Decrypt"] {
            assert!(denied.contains(p), "{denied}");
        }
        let azure = advice(
            "azure-kv",
            Step::GenerateDataKey,
            ProviderErrorKind::AccessDenied,
            Some("keys/wrapKey"),
        );
        for p in ["keys/unwrapKey", "keys/sign", "keys/get"] {
            assert!(azure.contains(p), "{azure}");
        }
        let aws = advice(
            "aws-kms",
            Step::Connect,
            ProviderErrorKind::NoCredentials,
            None,
        );
        assert!(
            aws.contains("AWS_ACCESS_KEY_ID") && aws.contains("AWS_PROFILE"),
            "{aws}"
        );
        let gcp = advice(
            "gcp-kms",
            Step::GenerateDataKey,
            ProviderErrorKind::NoCredentials,
            None,
        );
        assert!(gcp.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{gcp}");
        assert!(!gcp.contains("network"), "{gcp}");
        // Off Google Cloud, no key file and no login leave only the metadata server, which
        // does not answer: the advice says what to give, though it may be the network.
        let unreachable = advice(
            "gcp-kms",
            Step::GenerateDataKey,
            ProviderErrorKind::Unavailable,
            None,
        );
        assert!(
            unreachable.contains("GOOGLE_APPLICATION_CREDENTIALS"),
            "{unreachable}"
        );
    }
}
