//! `vault keys`: the key ring, rewrap, destroy and usage.

use std::io::{self, Read as _, Write as _};
use vault::config::Config;
use vault::objects::admin::{self, KeyAdmin, RingMove, init_master_key, ring_actor};

use vault::objects::stream::StreamHead;
use vault::objects::{CryptoError as Error, Envelope};

use super::args::*;
use super::exit::Failure;
use super::pairs::match_pairs;
use super::stdio::*;
use super::terminal::{progress_bar, rfc3339};

pub(crate) async fn keys(
    deployment: &vault::Deployment,
    config: &Config,
    config_given: bool,
    provider: Option<&str>,
    command: KeysCommand,
) -> Result<(), Failure> {
    let admin = KeyAdmin::new(deployment, config, provider);
    match command {
        KeysCommand::Rewrap {
            matches,
            all,
            binary,
        } => {
            if matches.is_empty() && !all {
                let (start, mut input) = super::files::peek(Box::new(io::stdin().lock()))?;
                let mut out = io::BufWriter::new(io::stdout().lock());
                if super::files::is_streamed(&start) {
                    // Only the head changes: the segments are copied through as they are.
                    let head = StreamHead::read_from(&mut input)?;
                    let moved = admin
                        .rewrap_envelope(&head.envelope(), config_given)
                        .await?;
                    out.write_all(&moved)?;
                    io::copy(&mut input, &mut out)?;
                } else {
                    let mut all = Vec::new();
                    input.read_to_end(&mut all)?;
                    let bytes = envelope_bytes(&all)?;
                    let envelope = Envelope::parse(&bytes).map_err(Error::from)?;
                    let moved = admin.rewrap_envelope(&envelope, config_given).await?;
                    write_envelope(&mut out, &moved, binary)?;
                }
                out.flush()?;
                return Ok(());
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
            let status = admin.status().await?;
            println!(
                "ring {} (generation {}, min decryption version {})",
                status.name, status.generation, status.min_decryption_version
            );
            println!(
                "{:>8}  {:<10}  {:<20}  {:>8}  {:>8}",
                "VERSION", "STATE", "CREATED_AT", "STORED", "ISSUED"
            );
            for v in &status.versions {
                let (stored, issued) = v.usage.map_or(("-".into(), "-".into()), |(s, i)| {
                    (s.to_string(), i.to_string())
                });
                println!(
                    "{:>8}  {:<10}  {:<20}  {:>8}  {:>8}",
                    v.version,
                    v.state,
                    rfc3339(v.created_at),
                    stored,
                    issued
                );
            }
            if let Some(why) = &status.uncounted {
                println!("{why}: nothing is counted");
            }
            println!(
                "STORED: object versions in the store wrapped under the version; ISSUED: data keys handed out under it. Envelopes made with `vault encrypt` are not counted."
            );
            Ok(())
        }
        KeysCommand::Rotate => {
            let v = admin.rotate().await?;
            // The version alone on standard output, for scripts; what it means for people.
            println!("v{v}");
            eprintln!(
                "v{v} is the primary key version now: new values are sealed under it (running servers switch within a second), and every older version still decrypts what it wraps. `vault keys rewrap --all` moves stored values to v{v}; `vault keys status` shows what each version still wraps."
            );
            Ok(())
        }
        KeysCommand::Destroy {
            version,
            yes_destroy_data,
        } => {
            let shred = if yes_destroy_data {
                vault::Shred::Consent
            } else {
                vault::Shred::Refuse
            };
            let (report, counted) = admin.destroy(version, shred).await?;
            if !counted {
                eprintln!(
                    "vault: no object store at {}: nothing was counted",
                    deployment.describe()
                );
            }
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
            let done = admin.protect(force).await?;
            if done.already {
                println!("already protected ({})", done.key_id);
            } else {
                println!(
                    "protected: every API key and webhook endpoint row tagged with {}",
                    done.key_id
                );
            }
            Ok(())
        }
        KeysCommand::InitSeal { path } => init_seal(&path),
        KeysCommand::MigrateRing { to } => {
            let to = match to {
                RingPlace::Database => admin::RingPlace::Database,
                RingPlace::File => admin::RingPlace::File,
            };
            match admin.migrate_ring(to).await? {
                RingMove::IntoDatabase {
                    ring,
                    generation,
                    store,
                    aside,
                } => {
                    println!(
                        "ring {ring} (generation {generation}) moved into {store}; the file is kept, unused, as {}",
                        aside.display()
                    );
                    eprintln!(
                        "vault: the old file holds the root keys unsealed: delete it once the move is checked"
                    );
                }
                RingMove::IntoFile {
                    ring,
                    generation,
                    path,
                } => println!(
                    "ring {ring} (generation {generation}) moved into {}",
                    path.display()
                ),
            }
            Ok(())
        }
        KeysCommand::Reseal { to } => {
            let done = admin.reseal(&to).await?;
            if let Some(key) = &done.integrity_key {
                println!("integrity key {key}: sealed again with {}", done.seal);
            }
            println!(
                "ring {}: {} root key(s) sealed again with {}",
                done.ring, done.root_keys, done.seal
            );
            eprintln!("vault: give every process --seal {to} before it next starts");
            Ok(())
        }
        KeysCommand::MinVersion { version } => {
            admin.set_min_version(version).await?;
            println!("minimum decryption version v{version}");
            Ok(())
        }
    }
}

/// `vault keys init-seal PATH`: a new master key file. It needs no deployment and no
/// configuration (it makes the seal a PostgreSQL deployment asks for).
pub(crate) fn init_seal(path: &std::path::Path) -> Result<(), Failure> {
    println!("{}", init_master_key(path)?);
    eprintln!(
        "vault: wrote the master key {} (mode 0600); use it with --seal file:{} and keep it apart from the database and its backups",
        path.display(),
        path.display()
    );
    Ok(())
}
