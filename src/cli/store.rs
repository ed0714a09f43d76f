//! `vault store copy`: moving house from the embedded store into PostgreSQL.

use vault::config::{Config, ProviderConfig};
use vault::crypto::managed::copy_ring;

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
    // The target: a PostgreSQL database whose ring is sealed with this deployment's seal.
    let target = vault::Deployment::resolve(
        deployment.data_dir(),
        Some(to.to_owned()),
        deployment.seal_name().map(str::to_owned),
        std::env::var("VAULT_TARGET_PASSWORD").ok(),
        config,
    )
    .map_err(bad)?;
    if target.describe() == deployment.describe() {
        return Err(bad("the target is the store being copied".into()));
    }
    let source = deployment.store().await?;
    let target_store = target.store().await?;
    let bar = progress_bar(None);
    let report = source
        .copy_into(&target_store, &deployment.describe(), |table, n| {
            bar.set_message(format!("{table}: {n} rows"));
            bar.tick();
        })
        .await?;
    bar.finish_and_clear();
    for (table, n) in &report.tables {
        println!("{table}: {n} rows");
    }
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
        let into = target_store.ring_store(ring, seal.clone()).moving_in();
        let generation = match &source_seal {
            Some(seal) if source.has_ring(ring).await? => {
                copy_ring(&source.ring_store(ring, seal.clone()), &into).await?
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
    source.close().await;
    target_store.close().await;
    Ok(())
}
