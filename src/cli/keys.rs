//! `vault keys`: the key ring, rewrap, destroy and usage.

use std::io::{self};

use vault::config::Config;
use vault::crypto::{self, Envelope, Error, KeyContext, VersionState};
use vault::store::{IntegrityStore as _, Timestamp};

use super::args::*;
use super::exit::{self, Failure};
use super::stdio::*;

/// `--match KEY=VALUE` arguments as pairs, checked as a context would be.
/// The actor of ring events (`vault.kek.*`) and of rewraps (`vault.data.rewrapped`). They reach
/// every environment with data under the ring (its Events API and webhooks), so they name the
/// vault's key management, never the operator's login.
fn ring_actor() -> vault::store::Actor {
    vault::store::Actor::new("vault_keys", "vault key management")
}

pub(crate) fn match_pairs(matches: &[String]) -> Result<Vec<(String, String)>, Failure> {
    let pairs = matches
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Failure {
                    code: exit::BAD_INPUT,
                    message: format!("--match {m:?}: expected KEY=VALUE"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    KeyContext::from_pairs(pairs.clone()).map_err(Error::from)?;
    Ok(pairs)
}

/// A progress bar on a terminal, nothing otherwise.
pub(crate) fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if !io::IsTerminal::is_terminal(&io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Seconds since the epoch as RFC 3339.
pub(crate) fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000))
        .map_or_else(|| secs.to_string(), |us| Timestamp(us).to_rfc3339())
}

pub(crate) async fn keys(
    deployment: &vault::Deployment,
    config: &Config,
    config_given: bool,
    provider: Option<&str>,
    command: KeysCommand,
) -> Result<(), Failure> {
    let data_dir = deployment.data_dir();
    let chosen = config.managed_ring(provider).map_err(|message| Failure {
        code: exit::BAD_INPUT,
        message,
    });
    // The store, opened once if a command needs it (the database ring lives there).
    let store = tokio::sync::OnceCell::new();
    let store = || store.get_or_try_init(|| async { deployment.store().await });
    // The ring must exist: key administration never creates one.
    let open_ring = || async {
        let chosen = chosen.clone()?;
        let rings = if deployment.rings_in_database() {
            deployment.rings(store().await?, config).await?
        } else {
            vault::Rings::Files {
                dir: data_dir.to_owned(),
                store: None,
            }
        };
        Ok::<_, Failure>(std::sync::Arc::new(
            rings
                .open(&chosen.ring, false)
                .await?
                .with_check_interval(chosen.check_interval),
        ))
    };
    // Counting and destroying need the store, not the other providers; `None` if there is
    // none (a missing store must not look like an empty one).
    let ring_vault = |ring: std::sync::Arc<crypto::ManagedKeyProvider>| async move {
        if !deployment.has_store() {
            return Ok(None);
        }
        let store = store().await?;
        let key = deployment
            .integrity(store, config, vault::objects::Upgrade::Refuse)
            .await?;
        Ok::<_, Failure>(Some(vault::Vault::new(
            std::sync::Arc::new(vault::default_router(ring)),
            std::sync::Arc::new(store.clone()),
            key,
        )))
    };
    let no_store = || format!("no object store at {}", deployment.describe());
    match command {
        KeysCommand::Rewrap {
            matches,
            all,
            binary,
        } => {
            if matches.is_empty() && !all {
                let input = read_stdin()?;
                let bytes = envelope_bytes(&input)?;
                let envelope = Envelope::parse(&bytes).map_err(Error::from)?;
                // The store's BYOK providers and rules join the file's.
                let router = if (config_given || deployment.has_store())
                    && !deployment.rings_in_database()
                {
                    let rings = vault::Rings::Files {
                        dir: data_dir.to_owned(),
                        store: None,
                    };
                    let merged = if deployment.has_store() {
                        deployment.merged(config, &rings, store().await?).await?
                    } else {
                        config.clone()
                    };
                    merged.router_for_store(&rings, false, None).await?
                } else if config_given || deployment.rings_in_database() {
                    let rings = deployment.rings(store().await?, config).await?;
                    let merged = deployment.merged(config, &rings, store().await?).await?;
                    merged.router_for_store(&rings, false, None).await?
                } else {
                    vault::default_router(open_ring().await?)
                };
                // Always unwrapped and checked, so what comes out is an envelope that opens.
                let moved = envelope.wrap_again(&router).await?;
                return write_envelope(&moved, binary);
            }
            let scope = if all {
                vault::RewrapScope::All
            } else {
                vault::RewrapScope::Matching(match_pairs(&matches)?)
            };
            let vault = deployment.open(config).await?;
            let total = match scope {
                vault::RewrapScope::All => Some(
                    vault
                        .key_usage()
                        .await?
                        .iter()
                        .map(|u| u.stored_versions)
                        .sum(),
                ),
                _ => None,
            };
            let bar = progress_bar(total);
            let report = vault
                .rewrap(&scope, &ring_actor(), |r| {
                    bar.set_position(r.scanned);
                    bar.set_message(format!(
                        "rewrapped {}, already current {}",
                        r.rewrapped, r.already_current
                    ));
                })
                .await?;
            bar.finish_and_clear();
            println!(
                "scanned {} versions: {} matched, {} rewrapped, {} already current, {} changed meanwhile, {} unreadable",
                report.scanned,
                report.matched,
                report.rewrapped,
                report.already_current,
                report.changed_meanwhile,
                report.unreadable
            );
            if report.changed_meanwhile > 0 {
                eprintln!("vault: some versions changed while they were rewrapped; run it again");
            }
            Ok(())
        }
        KeysCommand::Verify { json } => {
            super::byok::verify(deployment, config, provider, json).await
        }
        KeysCommand::Status => {
            let ring = open_ring().await?;
            let usage = match ring_vault(ring.clone()).await? {
                Some(v) => Some(v.key_usage().await?),
                None => None,
            };
            println!(
                "ring {} (generation {}, min decryption version {})",
                ring.name(),
                ring.stats().generation,
                ring.min_decryption_version()
            );
            println!(
                "{:>8}  {:<10}  {:<20}  {:>8}  {:>8}",
                "VERSION", "STATE", "CREATED_AT", "STORED", "ISSUED"
            );
            for v in ring.versions() {
                let state = match v.state {
                    VersionState::Primary => "primary",
                    VersionState::Active => "active",
                    VersionState::Disabled => "disabled",
                    VersionState::Destroyed => "destroyed",
                    _ => "unknown",
                };
                let key_id = v.key_ref.to_string();
                let (stored, issued) = match &usage {
                    Some(usage) => usage.iter().find(|u| u.key_id == key_id).map_or(
                        ("0".into(), "0".into()),
                        |u| {
                            (
                                u.stored_versions.to_string(),
                                u.issued_data_keys.to_string(),
                            )
                        },
                    ),
                    None => ("-".into(), "-".into()),
                };
                println!(
                    "{:>8}  {:<10}  {:<20}  {:>8}  {:>8}",
                    v.version,
                    state,
                    rfc3339(v.created_at),
                    stored,
                    issued
                );
            }
            if usage.is_none() {
                println!("{}: nothing is counted", no_store());
            }
            println!(
                "STORED: object versions in the store wrapped under the version; ISSUED: data keys handed out under it. Envelopes made with `vault encrypt` are not counted."
            );
            Ok(())
        }
        KeysCommand::Rotate => {
            // Through the store when there is one, so the rotation is in its audit trail
            // (`vault.kek.created` for every environment with data under the ring).
            let ring = open_ring().await?;
            let v = match ring_vault(ring.clone()).await? {
                Some(vault) => vault.rotate_key(&ring, &ring_actor()).await?,
                None => ring.rotate().await?,
            };
            println!("v{v}");
            Ok(())
        }
        KeysCommand::Destroy {
            version,
            yes_destroy_data,
        } => {
            let ring = open_ring().await?;
            let shred = if yes_destroy_data {
                vault::Shred::Consent
            } else {
                vault::Shred::Refuse
            };
            let report = match (ring_vault(ring.clone()).await?, shred) {
                (Some(vault), _) => {
                    vault
                        .destroy_key_version(&ring, version, shred, &ring_actor())
                        .await?
                }
                (None, vault::Shred::Refuse) => {
                    return Err(Failure {
                        code: exit::STORAGE,
                        message: format!(
                            "{}: cannot count what v{version} wraps (is --data-dir right?); --yes-destroy-data destroys it uncounted",
                            no_store()
                        ),
                    });
                }
                (None, vault::Shred::Consent) => {
                    let before = ring.versions();
                    ring.destroy(version).await?;
                    eprintln!("vault: {}: nothing was counted", no_store());
                    vault::DestroyReport::uncounted(
                        version,
                        before
                            .iter()
                            .any(|v| v.version == version && v.state != VersionState::Destroyed),
                    )
                }
            };
            if report.destroyed_now {
                println!(
                    "v{version} destroyed: {} stored object version(s) and {} issued data key(s) under it are unreadable from now on",
                    report.stored_versions, report.issued_data_keys
                );
            } else {
                println!("v{version} was already destroyed");
            }
            eprintln!(
                "vault: envelopes made outside the store (`vault encrypt`) cannot be counted; any under v{version} are unreadable too"
            );
            Ok(())
        }
        KeysCommand::Protect { force } => {
            let store = store().await?;
            let before = store.integrity().await?.is_some();
            let upgrade = if force {
                vault::objects::Upgrade::Force
            } else {
                vault::objects::Upgrade::Protect
            };
            let key = deployment.integrity(store, config, upgrade).await?;
            if before {
                println!("already protected ({})", key.id());
            } else {
                println!(
                    "protected: every API key and webhook endpoint row tagged with {}",
                    key.id()
                );
            }
            Ok(())
        }
        KeysCommand::InitSeal { path } => {
            let seal = crypto::managed::MasterKeySeal::create_file(&path)?;
            println!("{}", seal_id(&seal));
            eprintln!(
                "vault: wrote the master key {} (mode 0600); use it with --seal file:{} and keep it apart from the database and its backups",
                path.display(),
                path.display()
            );
            Ok(())
        }
        KeysCommand::MigrateRing { to } => migrate_ring(deployment, config, chosen?, to).await,
        KeysCommand::Reseal { to } => {
            let chosen = chosen?;
            if !deployment.rings_in_database() {
                return Err(Failure {
                    code: exit::BAD_INPUT,
                    message: "the ring is a file (unsealed); reseal moves a ring in the database to another seal".into(),
                });
            }
            config.check_seal(&to).map_err(|message| Failure {
                code: exit::BAD_INPUT,
                message,
            })?;
            let Some(from) = deployment.root_seal(config).await? else {
                return Err(Failure {
                    code: exit::BAD_INPUT,
                    message: "give the current seal with --seal".into(),
                });
            };
            let Some(new) = vault::deployment::open_seal(Some(&to), config).await? else {
                return Err(Failure {
                    code: exit::BAD_INPUT,
                    message: "no seal given".into(),
                });
            };
            // The integrity key of a PostgreSQL store is sealed the same way: it moves first,
            // and a re-run finds it moved.
            if deployment.is_postgres()
                && let Some(record) = store().await?.integrity().await?
                && let Some((sealed_by, bytes)) = record.sealed_key
                && !new.owns(&sealed_by)
            {
                let key = vault::objects::IntegrityKey::unseal(
                    &*from,
                    &crypto::managed::SealedRoot { sealed_by, bytes },
                )
                .await?;
                vault::objects::integrity::checked_record(store().await?, &key).await?;
                let sealed = key.seal(&*new).await?;
                store()
                    .await?
                    .keep_sealed_key(&sealed.sealed_by, &sealed.bytes)
                    .await?;
                println!(
                    "integrity key {}: sealed again with {}",
                    key.id(),
                    new.describe()
                );
            }
            let key = deployment
                .integrity(store().await?, config, vault::objects::Upgrade::Refuse)
                .await?;
            let ring = store().await?.ring_store(&chosen.ring, from, key);
            let n = ring.reseal(&*new).await?;
            println!(
                "ring {}: {n} root key(s) sealed again with {}",
                chosen.ring,
                new.describe()
            );
            eprintln!("vault: give every process --seal {to} before it next starts");
            Ok(())
        }
        KeysCommand::MinVersion { version } => {
            open_ring()
                .await?
                .set_min_decryption_version(version)
                .await?;
            println!("minimum decryption version v{version}");
            Ok(())
        }
    }
}

/// What `init-seal` prints: the master key's fingerprint (as `sealed_by` names it).
fn seal_id(seal: &crypto::managed::MasterKeySeal) -> String {
    use crypto::managed::RootSeal as _;
    seal.describe()
}

/// `vault keys migrate-ring --to …`: copies the ring, then retires the source (the file is
/// renamed aside; the database rows are removed), so only one copy stays in use.
async fn migrate_ring(
    deployment: &vault::Deployment,
    config: &Config,
    chosen: vault::config::ManagedRing,
    to: RingPlace,
) -> Result<(), Failure> {
    let Some(seal) = deployment.root_seal(config).await? else {
        return Err(Failure {
            code: exit::BAD_INPUT,
            message: "the ring in the database is kept sealed: give --seal".into(),
        });
    };
    let store = deployment.store().await?;
    let key = deployment
        .integrity(&store, config, vault::objects::Upgrade::Refuse)
        .await?;
    let file = crypto::FileRingStore::new(deployment.data_dir(), &chosen.ring)?;
    let database = store.ring_store(&chosen.ring, seal, key).moving_in();
    match to {
        RingPlace::Database => {
            let generation = crypto::managed::copy_ring(&file, &database).await?;
            let aside = file.path().with_extension(format!(
                "json.migrated-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ));
            if let Err(e) = file.retire(&aside, generation) {
                // Changed meanwhile (a rotation by a process on the file): the copy is stale.
                if !store.remove_ring(&chosen.ring, generation).await? {
                    return Err(Failure {
                        code: exit::CONFLICT,
                        message: format!(
                            "the ring changed during the move both in its file and in the database ({e}); both are kept: stop every process using the ring, then compare `vault keys status` with and without --seal before going on"
                        ),
                    });
                }
                return Err(moved_meanwhile(e));
            }
            println!(
                "ring {} (generation {generation}) moved into {}; the file is kept, unused, as {}",
                chosen.ring,
                deployment.describe(),
                aside.display()
            );
            eprintln!(
                "vault: the old file holds the root keys unsealed: delete it once the move is checked"
            );
        }
        RingPlace::File => {
            let generation = crypto::managed::copy_ring(&database, &file).await?;
            if !store.remove_ring(&chosen.ring, generation).await? {
                // Changed meanwhile (a rotation by a replica): the file is stale. Set aside
                // under its lock, and only if no process on the file changed it meanwhile.
                let stale = file.path().with_extension("json.stale");
                if let Err(e) = file.retire(&stale, generation) {
                    return Err(Failure {
                        code: exit::CONFLICT,
                        message: format!(
                            "the ring changed during the move both in the database and in its new file ({e}); both are kept: stop every process using the ring before going on"
                        ),
                    });
                }
                std::fs::remove_file(&stale)?;
                return Err(moved_meanwhile(crypto::KeyRingError::Busy));
            }
            println!(
                "ring {} (generation {generation}) moved into {}",
                chosen.ring,
                file.path().display()
            );
        }
    }
    Ok(())
}

fn moved_meanwhile(e: crypto::KeyRingError) -> Failure {
    Failure {
        code: exit::CONFLICT,
        message: format!(
            "the ring changed while it was moved ({e}); nothing was moved: stop the processes using it and run it again"
        ),
    }
}
