//! `vault store copy`: moving house from the embedded store into PostgreSQL, the integrity key
//! and every managed ring (sealed on the way) with the rows.

use std::sync::Arc;
use vault_crypto::FileRingStore;

use vault_crypto::managed::copy_ring;
use vault_crypto::sealed_ring::SealedRingStore;
use vault_store::{IntegrityStore as _, SqlStore};

use super::AdminError;
use crate::config::{Config, ProviderConfig, StoreConfig};
use crate::deployment::Deployment;
use crate::integrity::{IntegrityKey, KeyHome, Upgrade};
use crate::rings::Rings;

/// What `vault store copy` copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows copied, by table.
    pub tables: Vec<(String, u64)>,
    /// The integrity key's id, sealed for the target.
    pub integrity_key: String,
    /// Each managed ring: its name, and `Some((generation, seal))` if it was copied now,
    /// `None` if the target had it already.
    pub rings: Vec<(String, Option<(u64, String)>)>,
    /// The target, described.
    pub target: String,
}

/// Copies `deployment`'s store into the PostgreSQL database `to` (password from
/// `target_password` or the URL), whose rings are sealed with the deployment's seal.
/// `progress` is called with each table and the rows copied so far.
///
/// # Errors
/// `Invalid` for a target that is the source or cannot be sealed; the store's refusal of a
/// target that is not empty; any failure to read or write.
pub async fn copy_store(
    deployment: &Deployment,
    config: &Config,
    to: &str,
    target_password: Option<String>,
    progress: impl Fn(&str, u64),
) -> Result<CopyReport, AdminError> {
    // The target: a PostgreSQL database whose ring is sealed with this deployment's seal. Its
    // password comes from `target_password` or its URL, never the source's password file.
    let mut target_config = config.clone();
    target_config.store = StoreConfig::default();
    let target = Deployment::resolve(
        deployment.data_dir(),
        Some(to.to_owned()),
        deployment.seal_name().map(str::to_owned),
        target_password,
        &target_config,
    )
    .map_err(AdminError::Invalid)?;
    if target.describe() == deployment.describe() {
        return Err(AdminError::Invalid(
            "the target is the store being copied".into(),
        ));
    }
    let source = deployment.store().await?;
    // Only an authentic store is copied, and its integrity key goes with it: checked before
    // the target is opened (and migrated).
    let key = match deployment.integrity(&source, config, Upgrade::Refuse).await {
        Ok(key) => key,
        Err(e) => {
            source.close().await;
            return Err(e.into());
        }
    };
    let target_store = match target.store().await {
        Ok(store) => store,
        Err(e) => {
            source.close().await;
            return Err(e.into());
        }
    };
    let result = copy_between(
        deployment,
        &target,
        config,
        (&source, &target_store),
        &key,
        progress,
    )
    .await;
    source.close().await;
    target_store.close().await;
    result
}

async fn copy_between(
    deployment: &Deployment,
    target: &Deployment,
    config: &Config,
    (source, target_store): (&SqlStore, &SqlStore),
    key: &Arc<IntegrityKey>,
    progress: impl Fn(&str, u64),
) -> Result<CopyReport, AdminError> {
    // The source's one name: the database file's absolute path, or the PostgreSQL it is on.
    let label = if deployment.is_postgres() {
        deployment.describe()
    } else {
        let path = SqlStore::sqlite_path(deployment.data_dir());
        std::fs::canonicalize(&path)?.display().to_string()
    };
    let report = source.copy_into(target_store, &label, progress).await?;
    // The record was copied with its tag; the key it names is sealed afresh into it for the
    // target (whose processes have no data directory of this machine), whatever the source's
    // row held there.
    if target_store.integrity().await?.is_some() {
        let KeyHome::Sealed(seal) = target.integrity_home(target_store, config).await? else {
            return Err(AdminError::Invalid(
                "the target's integrity key must be sealed: give --seal".into(),
            ));
        };
        let sealed = key.seal(&*seal).await?;
        target_store
            .keep_sealed_key(&sealed.sealed_by, &sealed.bytes)
            .await?;
    }
    target
        .integrity(target_store, config, Upgrade::Refuse)
        .await?;
    // Every managed ring, its root keys sealed with the target's seal on the way: from the
    // source database if it holds the ring (sealed), else from the data directory's file.
    let source_seal = deployment.root_seal(config).await?;
    let Rings::Database { seal, .. } = target.rings(target_store, config).await? else {
        return Err(AdminError::Invalid(
            "the target's ring must be sealed: give --seal".into(),
        ));
    };
    let mut rings = Vec::new();
    for p in config.providers.values() {
        let ProviderConfig::Managed { ring, .. } = p.get_ref() else {
            continue;
        };
        if target_store.has_ring(ring).await? {
            rings.push((ring.clone(), None));
            continue;
        }
        let into = SealedRingStore::new(
            Arc::new(target_store.ring_rows(ring).moving_in()),
            seal.clone(),
            key.clone(),
        );
        let generation = match &source_seal {
            Some(seal) if source.has_ring(ring).await? => {
                let from = SealedRingStore::new(
                    Arc::new(source.ring_rows(ring)),
                    seal.clone(),
                    key.clone(),
                );
                copy_ring(&from, &into).await?
            }
            _ => {
                let file = FileRingStore::new(deployment.data_dir(), ring)?;
                copy_ring(&file, &into).await?
            }
        };
        rings.push((ring.clone(), Some((generation, seal.describe()))));
    }
    target_store.finish_copy().await?;
    Ok(CopyReport {
        tables: report
            .tables
            .iter()
            .map(|(t, n)| ((*t).to_owned(), *n))
            .collect(),
        integrity_key: key.id().to_owned(),
        rings,
        target: target.describe(),
    })
}
