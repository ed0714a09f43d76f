//! `vault byok`: customers' keys onboarded at runtime (providers and rules in the store), and
//! `vault keys verify`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use vault::byok::{self, Verification};
use vault::config::Config;
use vault::crypto::{KeyContext, KeyProvider, KeyRef};
use vault::store::{ByokProvider, ByokRule, ByokStore as _, SqlStore, Store, Timestamp};

use super::args::*;
use super::exit::{self, Failure};
use super::keys::match_pairs;

/// Where managed rings are, for connecting providers outside a vault.
async fn rings(
    deployment: &vault::Deployment,
    config: &Config,
    store: Option<&SqlStore>,
) -> Result<vault::Rings, Failure> {
    match store {
        Some(store) if deployment.rings_in_database() => {
            Ok(deployment.rings(store, config).await?)
        }
        _ => Ok(vault::Rings::Files {
            dir: deployment.data_dir().to_owned(),
            store: None,
        }),
    }
}

/// The store, which BYOK commands cannot do without.
async fn store(deployment: &vault::Deployment) -> Result<SqlStore, Failure> {
    if !deployment.has_store() && !deployment.is_postgres() {
        // Rules are kept next to the objects: make the store (SQLite in the data directory).
        std::fs::create_dir_all(deployment.data_dir())?;
    }
    Ok(deployment.store().await?)
}

fn print(v: &Verification, json: bool) {
    if json {
        println!("{}", v.to_json());
    } else {
        println!("{v}");
    }
}

/// `vault keys verify [--provider NAME] [--json]`.
pub(crate) async fn verify(
    deployment: &vault::Deployment,
    config: &Config,
    only: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let store = if deployment.has_store() {
        Some(deployment.store().await?)
    } else {
        None
    };
    let merged = match &store {
        Some(s) => byok::merged(config, s).await?,
        None => config.clone(),
    };
    let rings = rings(deployment, config, store.as_ref()).await?;
    let names: Vec<String> = match only {
        Some(name) => vec![name.to_owned()],
        None => merged.providers.keys().cloned().collect(),
    };
    let mut failed = 0;
    for name in &names {
        let v = byok::verify(&merged, &rings, name).await;
        print(&v, json);
        if let Some(s) = &store {
            byok::record(s, &merged, &v).await?;
        }
        if !v.verified() {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(Failure {
            code: exit::UNVERIFIED,
            message: format!("{failed} of {} provider(s) not verified", names.len()),
        });
    }
    Ok(())
}

pub(crate) async fn byok(
    deployment: &vault::Deployment,
    config: &Config,
    command: ByokCommand,
) -> Result<(), Failure> {
    let store = store(deployment).await?;
    let result = run(deployment, config, &store, command).await;
    store.close().await;
    result
}

async fn run(
    deployment: &vault::Deployment,
    config: &Config,
    store: &SqlStore,
    command: ByokCommand,
) -> Result<(), Failure> {
    let bad = |message: String| Failure {
        code: exit::BAD_INPUT,
        message,
    };
    match command {
        ByokCommand::Set {
            matches,
            provider,
            unverified,
        } => {
            let matches = KeyContext::from_pairs(match_pairs(&matches)?)
                .map_err(vault::crypto::Error::from)?;
            if !store
                .byok_providers()
                .await?
                .iter()
                .any(|p| p.name == provider)
            {
                return Err(bad(format!(
                    "no provider {provider:?} in the store: add it with `vault byok provider add {provider} --type …`"
                )));
            }
            let rule = ByokRule {
                matches: matches.clone(),
                provider: provider.clone(),
                verified: false,
                created_at: Timestamp::now(),
            };
            // Checked as it will be merged: the same pairs must not be in vault.toml too.
            let mut rules = store.byok_rules().await?;
            rules.retain(|r| r.matches != matches);
            rules.push(rule.clone());
            let merged = config
                .with_store(&store.byok_providers().await?, &rules, |k| {
                    std::env::var(k).ok()
                })
                .map_err(|p| bad(p.join("; ")))?;
            let rings = rings(deployment, config, Some(store)).await?;
            let v = byok::verify(&merged, &rings, &provider).await;
            byok::record(store, &merged, &v).await?;
            print(&v, false);
            if !v.verified() && !unverified {
                return Err(Failure {
                    code: exit::UNVERIFIED,
                    message: format!(
                        "the rule was not set: provider {provider:?} did not verify (fix it, or set the rule with --unverified)"
                    ),
                });
            }
            store
                .set_byok_rule(&ByokRule {
                    verified: v.verified(),
                    ..rule
                })
                .await?;
            println!(
                "rule set: {matches} -> {provider}{}; running servers route by it within a second",
                if v.verified() { "" } else { " (UNVERIFIED)" }
            );
            Ok(())
        }
        ByokCommand::Remove { matches } => {
            let matches = KeyContext::from_pairs(match_pairs(&matches)?)
                .map_err(vault::crypto::Error::from)?;
            let removed = store.remove_byok_rule(&matches).await?;
            println!(
                "rule removed: {} -> {}; new values of its contexts go where the other rules send them within a second",
                removed.matches, removed.provider
            );
            let merged = byok::merged(config, store).await?;
            let rings = rings(deployment, config, Some(store)).await?;
            match wrapped_by(&merged, &rings, store, &removed.provider).await {
                Ok((0, _)) => println!(
                    "provider {:?} wraps no stored value; `vault byok provider remove {}` removes it",
                    removed.provider, removed.provider
                ),
                Ok((stored, _)) => println!(
                    "provider {:?} stays to decrypt the {stored} stored object version(s) its key wraps; `vault keys rewrap {}` moves this rule's to the key the rules choose now",
                    removed.provider,
                    byok::match_args(&removed.matches)
                ),
                Err(e) => println!(
                    "provider {:?} stays to decrypt what its key wraps (not counted: {})",
                    removed.provider, e.message
                ),
            }
            Ok(())
        }
        ByokCommand::List { json } => {
            let mut listed = Vec::new();
            for r in &config.rules {
                let r = r.get_ref();
                let pairs: Vec<String> =
                    r.matches.iter().map(|(k, v)| format!("{k}={v}")).collect();
                listed.push((
                    pairs.join(","),
                    r.provider.get_ref().clone(),
                    "vault.toml",
                    None,
                ));
            }
            for r in store.byok_rules().await? {
                let pairs: Vec<String> =
                    r.matches.pairs().map(|(k, v)| format!("{k}={v}")).collect();
                listed.push((pairs.join(","), r.provider, "store", Some(r.verified)));
            }
            for (matches, provider, source, verified) in listed {
                if json {
                    println!(
                        "{}",
                        json!({"match": matches, "provider": provider, "source": source, "verified": verified})
                    );
                } else {
                    let flag = match verified {
                        Some(false) => "  (set unverified)",
                        _ => "",
                    };
                    println!("{matches}  ->  {provider}  [{source}]{flag}");
                }
            }
            Ok(())
        }
        ByokCommand::Provider { command } => provider(deployment, config, store, command).await,
    }
}

async fn provider(
    deployment: &vault::Deployment,
    config: &Config,
    store: &SqlStore,
    command: ByokProviderCommand,
) -> Result<(), Failure> {
    let bad = |message: String| Failure {
        code: exit::BAD_INPUT,
        message,
    };
    match command {
        ByokProviderCommand::Add {
            name,
            kind,
            key_id,
            region,
            endpoint_url,
            key_name,
            vault_url,
            key_version,
            algorithm,
            credential,
            no_cache,
            unverified,
        } => {
            let (type_name, allowed): (&str, &[&str]) = match kind {
                ByokType::AwsKms => ("aws-kms", &["key_id", "region", "endpoint_url"]),
                ByokType::GcpKms => ("gcp-kms", &["key_name", "endpoint_url"]),
                ByokType::AzureKv => (
                    "azure-kv",
                    &[
                        "vault_url",
                        "key_name",
                        "key_version",
                        "algorithm",
                        "credential",
                    ],
                ),
            };
            let given = [
                ("key_id", key_id),
                ("region", region),
                ("endpoint_url", endpoint_url),
                ("key_name", key_name),
                ("vault_url", vault_url),
                ("key_version", key_version),
                ("algorithm", algorithm),
                ("credential", credential),
            ];
            let mut table = toml::Table::new();
            table.insert("type".into(), type_name.into());
            for (field, value) in given {
                let Some(value) = value else { continue };
                if !allowed.contains(&field) {
                    return Err(bad(format!(
                        "--{} is not a field of a {type_name} provider",
                        field.replace('_', "-")
                    )));
                }
                table.insert(field.into(), value.into());
            }
            if no_cache {
                table.insert("cache".into(), false.into());
            }
            let definition = toml::to_string(&table)
                .map_err(|e| bad(format!("cannot write the definition: {e}")))?;
            // Checked as vault.toml's providers are, and against the file's names.
            Config::byok_provider(&name, &definition, |k| std::env::var(k).ok())
                .map_err(|p| bad(p.join("; ")))?;
            if config.providers.contains_key(&name) {
                return Err(bad(format!(
                    "provider {name:?} is defined in the configuration file: choose another name"
                )));
            }
            store
                .add_byok_provider(&ByokProvider {
                    name: name.clone(),
                    definition,
                    created_at: Timestamp::now(),
                })
                .await?;
            println!("provider {name:?} added ({type_name})");
            if !unverified {
                let merged = byok::merged(config, store).await?;
                let rings = rings(deployment, config, Some(store)).await?;
                let v = byok::verify(&merged, &rings, &name).await;
                byok::record(store, &merged, &v).await?;
                print(&v, false);
                if !v.verified() {
                    println!(
                        "once fixed: `vault keys verify --provider {name}`; `vault byok set` refuses it until it verifies"
                    );
                }
            }
            Ok(())
        }
        ByokProviderCommand::List { json } => {
            for p in store.byok_providers().await? {
                if json {
                    println!(
                        "{}",
                        json!({"name": p.name, "definition": p.definition,
                               "created_at": p.created_at.to_rfc3339()})
                    );
                } else {
                    let fields: Vec<&str> = p.definition.lines().collect();
                    println!("{}  {}", p.name, fields.join("  "));
                }
            }
            Ok(())
        }
        ByokProviderCommand::Remove {
            name,
            yes_strand_data,
        } => {
            if store.byok_rules().await?.iter().any(|r| r.provider == name) {
                return Err(Failure {
                    code: exit::CONFLICT,
                    message: format!(
                        "a rule sends contexts to provider {name:?}: `vault byok remove --match …` it first"
                    ),
                });
            }
            if !yes_strand_data {
                let merged = byok::merged(config, store).await?;
                let rings = rings(deployment, config, Some(store)).await?;
                match wrapped_by(&merged, &rings, store, &name).await {
                    Ok((0, 0)) => {}
                    Ok((stored, issued)) => {
                        return Err(Failure {
                            code: exit::CONFLICT,
                            message: format!(
                                "provider {name:?}'s key still wraps {stored} stored object version(s) and {issued} issued data key(s), which would become unreadable: `vault keys rewrap --all` moves the stored ones; or remove it with --yes-strand-data"
                            ),
                        });
                    }
                    Err(e) => {
                        return Err(Failure {
                            code: e.code,
                            message: format!(
                                "cannot tell what provider {name:?}'s key still wraps ({}); remove it with --yes-strand-data to accept leaving that unreadable",
                                e.message
                            ),
                        });
                    }
                }
            }
            store.remove_byok_provider(&name).await?;
            println!("provider {name:?} removed");
            Ok(())
        }
    }
}

/// How many stored object versions and issued data keys provider `name`'s key wraps (it is
/// connected to tell which key references are its own).
async fn wrapped_by(
    merged: &Config,
    rings: &vault::Rings,
    store: &SqlStore,
    name: &str,
) -> Result<(u64, u64), Failure> {
    let mut built: BTreeMap<String, Arc<dyn KeyProvider>> = BTreeMap::new();
    let only = Config {
        providers: merged
            .providers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect(),
        default: toml::Spanned::new(0..0, name.to_owned()),
        rules: Vec::new(),
        ..merged.clone()
    };
    let disconnected = only
        .connect_providers(rings, false, None, &mut built)
        .await?;
    let provider = built
        .get(name)
        .filter(|_| disconnected.is_empty())
        .ok_or_else(|| Failure {
            code: exit::KEYS,
            message: format!("provider {name:?} cannot be connected"),
        })?;
    let usage = vault::store::AuditLog::key_usage(store as &dyn Store).await?;
    let (mut stored, mut issued) = (0, 0);
    for u in usage {
        if KeyRef::parse(&u.key_id).is_ok_and(|k| provider.owns(&k)) {
            stored += u.stored_versions;
            issued += u.issued_data_keys;
        }
    }
    Ok((stored, issued))
}
