//! `vault store copy`: moving house from the embedded store into PostgreSQL.

use vault::config::{Config, ProviderConfig};
use vault::crypto::managed::copy_ring;
use vault::store::IntegrityStore as _;

use super::exit::{self, Failure};
use super::keys::progress_bar;

pub(crate) async fn copy(
    deployment: &vault::Deployment,
    config: &Config,
    to: &str,
) -> Result<(), Failure> {
    let bad = |message: String| Failure {
        code: exit::BAD_INPUT,
        message,
    };
    // The target: a PostgreSQL database whose ring is sealed with this deployment's seal. Its
    // password comes from VAULT_TARGET_PASSWORD or its URL, never the source's password file.
    let mut target_config = config.clone();
    target_config.store = vault::config::StoreConfig::default();
    let target = vault::Deployment::resolve(
        deployment.data_dir(),
        Some(to.to_owned()),
        deployment.seal_name().map(str::to_owned),
        std::env::var("VAULT_TARGET_PASSWORD").ok(),
        &target_config,
    )
    .map_err(bad)?;
    if target.describe() == deployment.describe() {
        return Err(bad("the target is the store being copied".into()));
    }
    let source = deployment.store().await?;
    // Only an authentic store is copied, and its integrity key goes with it.
    let key = deployment
        .integrity(&source, config, vault::objects::Upgrade::Refuse)
        .await?;
    let target_store = target.store().await?;
    let bar = progress_bar(None);
    // The source's one name: the database file's absolute path, or the PostgreSQL it is on.
    let label = if deployment.is_postgres() {
        deployment.describe()
    } else {
        let path = vault::store::SqlStore::sqlite_path(deployment.data_dir());
        std::fs::canonicalize(&path)?.display().to_string()
    };
    let report = source
        .copy_into(&target_store, &label, |table, n| {
            bar.set_message(format!("{table}: {n} rows"));
            bar.tick();
        })
        .await?;
    bar.finish_and_clear();
    for (table, n) in &report.tables {
        println!("{table}: {n} rows");
    }
    // The record was copied with its tag; the key it names is sealed afresh into it for the
    // target (whose processes have no data directory of this machine), whatever the source's
    // row held there.
    if target_store.integrity().await?.is_some() {
        let vault::objects::KeyHome::Sealed(seal) =
            target.integrity_home(&target_store, config).await?
        else {
            return Err(bad(
                "the target's integrity key must be sealed: give --seal".into(),
            ));
        };
        let sealed = key.seal(&*seal).await?;
        target_store
            .keep_sealed_key(&sealed.sealed_by, &sealed.bytes)
            .await?;
    }
    target
        .integrity(&target_store, config, vault::objects::Upgrade::Refuse)
        .await?;
    println!("integrity key {}: sealed for the target", key.id());
    // Every managed ring, its root keys sealed with the target's seal on the way: from the
    // source database if it holds the ring (sealed), else from the data directory's file.
    let source_seal = deployment.root_seal(config).await?;
    let vault::Rings::Database { seal, .. } = target.rings(&target_store, config).await? else {
        return Err(bad("the target's ring must be sealed: give --seal".into()));
    };
    for p in config.providers.values() {
        let ProviderConfig::Managed { ring, .. } = p.get_ref() else {
            continue;
        };
        if target_store.has_ring(ring).await? {
            println!("ring {ring}: already copied");
            continue;
        }
        let into = target_store
            .ring_store(ring, seal.clone(), key.clone())
            .moving_in();
        let generation = match &source_seal {
            Some(seal) if source.has_ring(ring).await? => {
                copy_ring(&source.ring_store(ring, seal.clone(), key.clone()), &into).await?
            }
            _ => {
                let file = vault::crypto::FileRingStore::new(deployment.data_dir(), ring)?;
                copy_ring(&file, &into).await?
            }
        };
        println!(
            "ring {ring}: generation {generation}, sealed with {}",
            seal.describe()
        );
    }
    target_store.finish_copy().await?;
    println!(
        "copied into {}; point every process at it with --database-url",
        target.describe()
    );
    eprintln!(
        "vault: the source ({}) and its ring are left as they were: write nothing more there; delete them (the ring file holds root keys unsealed) once the copy is checked",
        deployment.describe()
    );
    source.close().await;
    target_store.close().await;
    Ok(())
}
