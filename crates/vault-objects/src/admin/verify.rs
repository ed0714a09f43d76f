//! `vault keys verify` and `vault config check`: every provider verified live, and the store's
//! BYOK document checked against the file.

use vault_store::AuditLog as _;

use super::{AdminError, rings_of};
use crate::byok::{self, Verification};
use crate::config::Config;
use crate::deployment::Deployment;

/// `vault keys verify`: every provider of the configuration and the store (the one that seals
/// the ring only when it is `only`), or just `only`; each outcome recorded where there is a
/// store. Calls `each` with every verification as it completes.
///
/// # Errors
/// If the store or the rings cannot be read; a provider failing is an outcome, not an error.
pub async fn verify_providers(
    deployment: &Deployment,
    config: &Config,
    only: Option<&str>,
    mut each: impl FnMut(&Verification),
) -> Result<Vec<Verification>, AdminError> {
    let store = if deployment.has_store() {
        Some(deployment.store().await?)
    } else {
        None
    };
    let rings = rings_of(deployment, config, store.as_ref()).await?;
    let merged = match &store {
        Some(s) => deployment.merged(config, &rings, s).await?,
        None => config.clone(),
    };
    // The key that seals the ring serves nothing else: verified only when named.
    let names: Vec<String> = match only {
        Some(name) => vec![name.to_owned()],
        None => merged
            .providers
            .keys()
            .filter(|n| rings.seal_provider() != Some(n.as_str()))
            .cloned()
            .collect(),
    };
    let mut done = Vec::with_capacity(names.len());
    for name in &names {
        let v = byok::verify(&merged, &rings, name).await;
        each(&v);
        if let Some(s) = &store {
            byok::record(s, &merged, &v).await?;
        }
        done.push(v);
    }
    if let Some(s) = store {
        s.close().await;
    }
    Ok(done)
}

/// What `vault config check` finds in the store beside the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCheck {
    /// Providers the store adds.
    pub providers: usize,
    /// Rules the store adds.
    pub rules: usize,
    /// Each Azure RSA provider: its name, and the stored versions and issued data keys that
    /// hold unsigned (forgeable by a holder of the public key) wraps.
    pub unsigned_wraps: Vec<(String, u64, u64)>,
}

/// `vault config check` of the store: its BYOK providers and rules must be authentic and
/// merge with `config`'s.
///
/// # Errors
/// `Invalid` if they do not merge or fail their checks; a store that cannot be read.
pub async fn check_store(
    deployment: &Deployment,
    config: &Config,
) -> Result<StoreCheck, AdminError> {
    let store = deployment.store().await?;
    let result = async {
        let rings = rings_of(deployment, config, Some(&store)).await?;
        let merged = deployment
            .merged(config, &rings, &store)
            .await
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        let usage = store.key_usage().await?;
        Ok(StoreCheck {
            providers: merged.providers.len() - config.providers.len(),
            rules: merged.rules.len() - config.rules.len(),
            unsigned_wraps: config.unsigned_azure_wraps(&usage),
        })
    }
    .await;
    store.close().await;
    result
}
