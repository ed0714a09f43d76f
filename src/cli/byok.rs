//! `vault byok`: customers' keys onboarded at runtime (providers and rules in the store's
//! sealed BYOK document), and `vault keys verify`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use vault::byok::{self, ByokDocument, StoredProvider, StoredRule, Verification};
use vault::config::Config;
use vault::crypto::{KeyContext, KeyProvider, KeyRef};
use vault::store::{SqlStore, Store, Timestamp};

use super::args::*;
use super::exit::{self, Failure};
use super::keys::match_pairs;

/// Where managed rings are, for connecting providers outside a vault.
pub(crate) async fn rings(
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
            store: store.cloned(),
        }),
    }
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
    let rings = rings(deployment, config, store.as_ref()).await?;
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

/// What every `vault byok` command works with: the store, where rings are, and the default
/// provider that seals the BYOK document.
struct Ctx<'a> {
    config: &'a Config,
    store: SqlStore,
    rings: vault::Rings,
    default: Arc<dyn KeyProvider>,
    integrity: Arc<vault::objects::IntegrityKey>,
}

impl Ctx<'_> {
    async fn document(&self) -> Result<ByokDocument, Failure> {
        Ok(byok::load(&self.store, &*self.default, &self.integrity)
            .await?
            .1)
    }

    async fn update<T>(
        &self,
        change: impl FnMut(&mut ByokDocument) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        byok::update(&self.store, &*self.default, &self.integrity, change).await
    }

    /// The configuration with `document` merged, or why not.
    fn merged(&self, document: &ByokDocument) -> Result<Config, Failure> {
        self.config
            .with_store(document, |k| std::env::var(k).ok())
            .map_err(|p| bad(p.join("; ")))
    }
}

fn bad(message: String) -> Failure {
    Failure {
        code: exit::BAD_INPUT,
        message,
    }
}

pub(crate) async fn byok(
    deployment: &vault::Deployment,
    config: &Config,
    command: ByokCommand,
) -> Result<(), Failure> {
    if !deployment.has_store() && !deployment.is_postgres() {
        // Rules are kept next to the objects: make the store (SQLite in the data directory).
        std::fs::create_dir_all(deployment.data_dir())?;
    }
    let store = deployment.store().await?;
    let rings = rings(deployment, config, Some(&store)).await?;
    let integrity = deployment
        .integrity(&store, config, vault::objects::Upgrade::Refuse)
        .await?;
    let default = config.default_provider(&rings, true).await?;
    let ctx = Ctx {
        config,
        store,
        rings,
        default,
        integrity,
    };
    let result = run(&ctx, command).await;
    ctx.store.close().await;
    result
}

fn now() -> i64 {
    Timestamp::now().0
}

async fn run(ctx: &Ctx<'_>, command: ByokCommand) -> Result<(), Failure> {
    match command {
        ByokCommand::Set {
            matches,
            provider,
            unverified,
        } => {
            let pairs: BTreeMap<String, String> = match_pairs(&matches)?.into_iter().collect();
            let label =
                KeyContext::from_pairs(pairs.clone()).map_err(vault::crypto::Error::from)?;
            let rule = StoredRule {
                matches: pairs.clone(),
                provider: provider.clone(),
                verified: false,
                created_at: now(),
            };
            // Checked as it will be merged, then verified, then written.
            let mut document = ctx.document().await?;
            if !document.providers.iter().any(|p| p.name == provider) {
                return Err(bad(format!(
                    "no provider {provider:?} in the store: add it with `vault byok provider add {provider} --type …`"
                )));
            }
            set_rule(&mut document, rule.clone());
            let merged = ctx.merged(&document)?;
            let v = byok::verify(&merged, &ctx.rings, &provider).await;
            byok::record(&ctx.store, &merged, &v).await?;
            print(&v, false);
            if !v.verified() && !unverified {
                return Err(Failure {
                    code: exit::UNVERIFIED,
                    message: format!(
                        "the rule was not set: provider {provider:?} did not verify (fix it, or set the rule with --unverified)"
                    ),
                });
            }
            let verified = v.verified();
            ctx.update(|document| {
                if !document.providers.iter().any(|p| p.name == provider) {
                    return Err(bad(format!("provider {provider:?} was removed meanwhile")));
                }
                set_rule(
                    document,
                    StoredRule {
                        verified,
                        ..rule.clone()
                    },
                );
                if let Some(p) = document.providers.iter_mut().find(|p| p.name == provider) {
                    p.unrouted_at = None;
                }
                ctx.merged(document).map(drop)
            })
            .await?;
            println!(
                "rule set: {label} -> {provider}{}; running servers route by it within a second",
                if verified { "" } else { " (UNVERIFIED)" }
            );
            Ok(())
        }
        ByokCommand::Remove { matches } => {
            let pairs: BTreeMap<String, String> = match_pairs(&matches)?.into_iter().collect();
            let label =
                KeyContext::from_pairs(pairs.clone()).map_err(vault::crypto::Error::from)?;
            let removed = ctx
                .update(|document| {
                    let i = document
                        .rules
                        .iter()
                        .position(|r| r.matches == pairs)
                        .ok_or_else(|| Failure {
                            code: exit::NOT_FOUND,
                            message: format!("no rule {label} in the store (`vault byok list`)"),
                        })?;
                    let rule = document.rules.remove(i);
                    if !document.rules.iter().any(|r| r.provider == rule.provider)
                        && let Some(p) = document
                            .providers
                            .iter_mut()
                            .find(|p| p.name == rule.provider)
                    {
                        p.unrouted_at = Some(now());
                    }
                    Ok(rule)
                })
                .await?;
            println!(
                "rule removed: {label} -> {}; new values of its contexts go where the other rules send them within a second",
                removed.provider
            );
            let merged = ctx.merged(&ctx.document().await?)?;
            match wrapped_by(&merged, &ctx.rings, &ctx.store, &removed.provider).await {
                Ok((0, _)) => println!(
                    "provider {:?} wraps no stored value; `vault byok provider remove {}` removes it",
                    removed.provider, removed.provider
                ),
                Ok((stored, _)) => println!(
                    "provider {:?} stays to decrypt the {stored} stored object version(s) its key wraps; `vault keys rewrap {}` moves this rule's to the key the rules choose now",
                    removed.provider,
                    byok::match_args(&label)
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
            let label = |m: &BTreeMap<String, String>| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            for r in &ctx.config.rules {
                let r = r.get_ref();
                listed.push((
                    label(&r.matches),
                    r.provider.get_ref().clone(),
                    "vault.toml",
                    None,
                ));
            }
            for r in ctx.document().await?.rules {
                listed.push((label(&r.matches), r.provider, "store", Some(r.verified)));
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
        ByokCommand::Provider { command } => provider(ctx, command).await,
    }
}

/// Sets `rule`: replaces the rule with the same pairs in place, or adds it last.
fn set_rule(document: &mut ByokDocument, rule: StoredRule) {
    match document
        .rules
        .iter_mut()
        .find(|r| r.matches == rule.matches)
    {
        Some(existing) => *existing = rule,
        None => document.rules.push(rule),
    }
}

async fn provider(ctx: &Ctx<'_>, command: ByokProviderCommand) -> Result<(), Failure> {
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
            let type_name = match kind {
                ByokType::AwsKms => "aws-kms",
                ByokType::GcpKms => "gcp-kms",
                ByokType::AzureKv => "azure-kv",
            };
            let allowed: &[&str] = match kind {
                ByokType::AwsKms => &["key_id", "region", "endpoint_url"],
                ByokType::GcpKms => &["key_name", "endpoint_url"],
                ByokType::AzureKv => &[
                    "vault_url",
                    "key_name",
                    "key_version",
                    "algorithm",
                    "credential",
                ],
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
            if ctx.config.providers.contains_key(&name) {
                return Err(bad(format!(
                    "provider {name:?} is defined in the configuration file: choose another name"
                )));
            }
            let stored = StoredProvider {
                name: name.clone(),
                definition,
                created_at: now(),
                unrouted_at: None,
            };
            ctx.update(|document| {
                if document.providers.iter().any(|p| p.name == name) {
                    return Err(Failure {
                        code: exit::CONFLICT,
                        message: format!("provider {name:?} exists in the store"),
                    });
                }
                document.providers.push(stored.clone());
                // Checked as vault.toml's providers are, and against the file's names and keys.
                ctx.merged(document).map(drop)
            })
            .await?;
            println!("provider {name:?} added ({type_name})");
            if !unverified {
                let merged = ctx.merged(&ctx.document().await?)?;
                let v = byok::verify(&merged, &ctx.rings, &name).await;
                byok::record(&ctx.store, &merged, &v).await?;
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
            for p in ctx.document().await?.providers {
                let created = Timestamp(p.created_at).to_rfc3339();
                if json {
                    println!(
                        "{}",
                        json!({"name": p.name, "definition": p.definition, "created_at": created})
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
            let document = ctx.document().await?;
            let Some(p) = document.providers.iter().find(|p| p.name == name) else {
                return Err(Failure {
                    code: exit::NOT_FOUND,
                    message: format!("no provider {name:?} in the store"),
                });
            };
            if document.rules.iter().any(|r| r.provider == name) {
                return Err(Failure {
                    code: exit::CONFLICT,
                    message: format!(
                        "a rule sends contexts to provider {name:?}: `vault byok remove --match …` it first"
                    ),
                });
            }
            // Every process routes by the new rules within a second; values sealed under the
            // key just before may still be landing.
            let quiet = i64::try_from(byok::QUIET_SECS * 1_000_000).unwrap_or(i64::MAX);
            if let Some(at) = p.unrouted_at
                && now().saturating_sub(at) < quiet
            {
                return Err(Failure {
                    code: exit::CONFLICT,
                    message: format!(
                        "provider {name:?} was routed to until moments ago; values sealed under its key may still be landing: try again in {} s",
                        byok::QUIET_SECS
                    ),
                });
            }
            if !yes_strand_data {
                let merged = ctx.merged(&document)?;
                match wrapped_by(&merged, &ctx.rings, &ctx.store, &name).await {
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
            ctx.update(|document| {
                if document.rules.iter().any(|r| r.provider == name) {
                    return Err(Failure {
                        code: exit::CONFLICT,
                        message: format!("a rule naming provider {name:?} was set meanwhile"),
                    });
                }
                document.providers.retain(|p| p.name != name);
                Ok(())
            })
            .await?;
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
    let only = Config {
        default: toml::Spanned::new(0..0, name.to_owned()),
        ..merged.clone()
    };
    let provider = only.default_provider(rings, false).await?;
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
