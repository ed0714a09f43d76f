//! The background work of a serving process besides webhook deliveries
//! ([`webhooks::run`](crate::webhooks::run)): the retention purge of events, the purge of deleted
//! objects, and the live verification of every key provider.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::byok;
use crate::config::Config;
use crate::deployment::Deployment;
use crate::rings::Rings;
use crate::{Vault, VaultError};

/// How often every provider is verified again (besides at start and whenever the store's
/// providers change): a permission revoked or a key disabled shows within this.
pub const REVERIFY_EVERY: Duration = Duration::from_secs(3600);

/// How often the retention purge runs.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

/// Expires events older than `retention_days` (`None`: kept for ever) and idempotent answers
/// older than a day, now and every [`EXPIRE_EVERY`], for ever.
pub async fn expire(vault: Vault, retention_days: Option<u32>) {
    loop {
        match vault.expire(retention_days).await {
            Ok((events, answers)) => tracing::info!(
                target: "vault::serve", events, answers, "expired events and idempotent answers"
            ),
            Err(e) => tracing::warn!(target: "vault::serve", error = %e, "expiry failed"),
        }
        tokio::time::sleep(EXPIRE_EVERY).await;
    }
}

/// Who purges deleted objects in the audit trail: the server itself.
fn purger() -> vault_store::Actor {
    vault_store::Actor::new("vault_serve", "vault serve (scheduled purge)")
}

/// Purges the objects and blobs deleted more than `days` days ago (`[objects]
/// purge_deleted_after_days`; none with `None`), and blob uploads abandoned a day ago or given
/// up (whatever `days`: they were never values), now and every [`EXPIRE_EVERY`], for ever: in
/// batches, each object audited as `vault.data.purged` and each blob as `vault.blob.purged`.
/// Several processes may run it at once: each is purged, and recorded, once.
pub async fn purge_deleted(vault: Vault, days: Option<u32>) {
    loop {
        if let Some(days) = days {
            match vault.purge_older_than(days, &purger()).await {
                Ok(objects) => tracing::info!(
                    target: "vault::serve", objects, days, "purged deleted objects"
                ),
                Err(e) => {
                    tracing::warn!(target: "vault::serve", error = %e, "purge of deleted objects failed")
                }
            }
        }
        match vault.purge_blobs(days, &purger()).await {
            Ok(blobs) => tracing::info!(
                target: "vault::serve", blobs, "purged deleted blobs and abandoned uploads"
            ),
            Err(e) => {
                tracing::warn!(target: "vault::serve", error = %e, "purge of deleted blobs failed")
            }
        }
        tokio::time::sleep(EXPIRE_EVERY).await;
    }
}

/// Where verification outcomes are shown besides the log (the server's metrics).
pub trait VerificationReport: Send + Sync + 'static {
    /// Provider `name` verified (or not) just now.
    fn verified(&self, name: &str, ok: bool);
    /// The providers there are now: the others are gone.
    fn providers(&self, names: &BTreeSet<String>);
}

/// Verifies every key provider live at start, whenever the store's BYOK providers or rules
/// change, and every [`REVERIFY_EVERY`]: each outcome is logged (with what to do when it
/// fails), recorded as `vault.byok_key.verification_completed` for customer keys, and given to
/// `report`. A failing key stops nothing: only its own contexts fail. Runs for ever.
pub async fn verify_providers(
    deployment: Deployment,
    config: Config,
    vault: Vault,
    report: Arc<dyn VerificationReport>,
) {
    // Provider name -> the definition it was verified with.
    let mut done: BTreeMap<String, String> = BTreeMap::new();
    let mut generation = None;
    let mut since_full = Instant::now();
    loop {
        if since_full.elapsed() >= REVERIFY_EVERY {
            done.clear();
            generation = None;
            since_full = Instant::now();
        }
        let pass = async {
            let g = vault.store.byok_generation().await?;
            if generation == Some(g) {
                return Ok::<_, VaultError>(());
            }
            let sql = deployment.store().await?;
            let rings = if deployment.rings_in_database() {
                deployment.rings(&sql, &config).await?
            } else {
                Rings::Files {
                    dir: deployment.data_dir().to_owned(),
                    store: None,
                }
            };
            let merged =
                byok::merged_for(&config, &rings, &*vault.store, vault.integrity_key()).await?;
            for (name, p) in &merged.providers {
                // The key that seals the ring serves nothing else.
                if rings.seal_provider() == Some(name.as_str()) {
                    continue;
                }
                let definition = format!("{:?}", p.get_ref());
                if done.get(name) == Some(&definition) {
                    continue;
                }
                let v = byok::verify(&merged, &rings, name).await;
                if v.verified() {
                    tracing::info!(target: "vault::byok", provider = %name, "{v}");
                } else {
                    tracing::warn!(target: "vault::byok", provider = %name, "{v}");
                }
                report.verified(name, v.verified());
                byok::record(&*vault.store, &merged, &v).await?;
                done.insert(name.clone(), definition);
            }
            let names: BTreeSet<String> = merged.providers.keys().cloned().collect();
            done.retain(|n, _| names.contains(n));
            report.providers(&names);
            sql.close().await;
            generation = Some(g);
            Ok(())
        };
        if let Err(e) = pass.await {
            tracing::warn!(target: "vault::byok", error = %e, "provider verification did not run; trying again");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
