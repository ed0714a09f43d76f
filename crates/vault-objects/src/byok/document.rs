use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vault_crypto::KeyProvider;
use vault_store::{ByokConfig, Conflict, Store, StoreError};

use crate::config::{ProviderConfig, config_error};
use crate::{IntegrityKey, VaultError};

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
    /// have (see [`Config::byok_provider`](crate::config::Config::byok_provider)).
    pub definition: String,
    /// When it was added (microseconds since the epoch).
    pub created_at: i64,
    /// When the last rule naming it was removed, if one was: values may still be landing under
    /// it for a moment, so it cannot be removed until [`QUIET_SECS`] later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrouted_at: Option<i64>,
    /// The `organization_id`s of the rules that sent contexts to it: whose key it is, told by
    /// `vault.byok_key.deleted` when it is removed.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub organizations: BTreeSet<String>,
    /// Whether a rule has ever sent contexts to it: `Some(false)` from its adding until a rule
    /// names it, then `Some(true)` for good. `None`: kept by a release that did not record it,
    /// so it may have been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed: Option<bool>,
}

impl StoredProvider {
    /// Whether no rule has ever sent contexts to it, so its key wraps nothing of ours (known
    /// only for providers added since this is recorded, and only while no rule names it).
    pub fn never_routed(&self, document: &ByokDocument) -> bool {
        self.routed == Some(false) && !document.rules.iter().any(|r| r.provider == self.name)
    }

    /// Its type, as its definition names it.
    pub fn type_name(&self) -> Option<String> {
        let table: toml::Table = toml::from_str(&self.definition).ok()?;
        table.get("type")?.as_str().map(str::to_owned)
    }
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
pub(super) fn allowed_fields(type_name: &str) -> &'static [&'static str] {
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
pub(super) fn seal_aad(generation: u64, document: &str) -> Vec<u8> {
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
        let recorded = crate::integrity::checked_record(store, integrity)
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
        return Err(config_error(format!(
            "the BYOK rules (table byok_config) are missing, but the integrity record says generation {recorded} exists: deleted by someone who can write the database; nothing is routed by them until they are restored (from a backup of the database)"
        )));
    };
    let not_authentic = |why: &str| {
        config_error(format!(
            "the BYOK rules in the store (table byok_config, generation {}) {why}: they are not used; restore them with `vault byok` from a process holding this deployment's keys",
            c.generation
        ))
    };
    if c.generation != recorded {
        return Err(not_authentic(&format!(
            "are not the generation the integrity record says exists ({recorded}): an older copy put back?"
        )));
    }
    match vault_crypto::open(
        default,
        &c.seal,
        &crate::byok_seal_context()?,
        vault_crypto::Aad::new(&seal_aad(c.generation, &c.document)),
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
            .map_err(|_| config_error("cannot write the BYOK document"))?;
        let next = generation + 1;
        let sealed = vault_crypto::seal(
            default,
            &crate::byok_seal_context()?,
            b"",
            vault_crypto::Aad::new(&seal_aad(next, &text)),
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
        let record = crate::integrity::checked_record(store, integrity).await?;
        let change = crate::integrity::record_change(integrity, &record, |r| {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a provider known never to have been routed counts as such: one kept by a release
    /// that did not record it (its rule maybe replaced by another provider's) is guarded.
    #[test]
    fn never_routed_is_known_not_guessed() {
        let legacy: ByokDocument = serde_json::from_str(
            r#"{"providers":[{"name":"a","definition":"type = \"aws-kms\"\nkey_id = \"alias/a\"\n","created_at":1}],"rules":[]}"#,
        )
        .unwrap();
        assert_eq!(legacy.providers[0].routed, None);
        assert!(!legacy.providers[0].never_routed(&legacy));
        assert_eq!(legacy.providers[0].type_name().as_deref(), Some("aws-kms"));
        let mut fresh = legacy.clone();
        fresh.providers[0].routed = Some(false);
        assert!(fresh.providers[0].never_routed(&fresh));
        let mut named = fresh.clone();
        named.rules.push(StoredRule {
            matches: BTreeMap::from([("organization_id".into(), "org_a".into())]),
            provider: "a".into(),
            verified: false,
            created_at: 2,
        });
        assert!(!named.providers[0].never_routed(&named));
        let mut was = fresh;
        was.providers[0].routed = Some(true);
        assert!(!was.providers[0].never_routed(&was));
    }
}
