//! `vault byok`: customers' keys onboarded at runtime (providers and rules in the store's
//! sealed BYOK document), and `vault keys verify`.

use serde_json::json;
use vault::byok::Verification;
use vault::config::Config;
use vault::objects::Timestamp;
use vault::objects::admin::{self, ByokAdmin};

use super::args::*;
use super::exit::{self, Failure};
use super::pairs::match_pairs;

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
    let done = admin::verify_providers(deployment, config, only, |v| print(v, json)).await?;
    let failed = done.iter().filter(|v| !v.verified()).count();
    if failed > 0 {
        return Err(Failure {
            code: exit::UNVERIFIED,
            message: format!("{failed} of {} provider(s) not verified", done.len()),
        });
    }
    Ok(())
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
    let admin = ByokAdmin::open(deployment, config).await?;
    let result = run(&admin, command).await;
    admin.close().await;
    result
}

async fn run(admin: &ByokAdmin<'_>, command: ByokCommand) -> Result<(), Failure> {
    match command {
        ByokCommand::Set {
            matches,
            provider,
            unverified,
        } => {
            let done = admin
                .set_rule(match_pairs(&matches)?, &provider, unverified)
                .await?;
            if let Some(v) = &done.verification {
                print(v, false);
            }
            if !done.set {
                return Err(Failure {
                    code: exit::UNVERIFIED,
                    message: format!(
                        "the rule was not set: provider {provider:?} did not verify (fix it, or set the rule with --unverified)"
                    ),
                });
            }
            let unverified = if done.verification.is_some() {
                String::new()
            } else {
                format!(
                    " (not verified, as asked: `vault keys verify --provider {provider}` checks it)"
                )
            };
            println!(
                "rule set: {} -> {provider}{unverified}; running servers route by it within a second",
                done.label
            );
            Ok(())
        }
        ByokCommand::Remove { matches } => {
            let removed = admin.remove_rule(match_pairs(&matches)?).await?;
            println!(
                "rule removed: {} -> {}; new values of its contexts go where the other rules send them within a second",
                removed.label, removed.provider
            );
            match removed.still_wraps {
                Ok((0, _)) => println!(
                    "provider {:?} wraps no stored value; `vault byok provider remove {}` removes it",
                    removed.provider, removed.provider
                ),
                Ok((stored, _)) => println!(
                    "provider {:?} stays to decrypt the {stored} stored object version(s) its key wraps; `vault keys rewrap {}` moves this rule's to the key the rules choose now",
                    removed.provider, removed.match_args
                ),
                Err(e) => println!(
                    "provider {:?} stays to decrypt what its key wraps (not counted: {e})",
                    removed.provider
                ),
            }
            Ok(())
        }
        ByokCommand::List { json } => {
            let rules = admin.rules().await?;
            if rules.is_empty() && !json {
                println!(
                    "no BYOK rules: every context goes to the default provider (`vault byok set --match organization_id=ORG --provider NAME` adds one)"
                );
            }
            for r in rules {
                if json {
                    println!(
                        "{}",
                        json!({"match": r.matches, "provider": r.provider, "source": r.source, "verified": r.verified})
                    );
                } else {
                    let flag = match r.verified {
                        Some(false) => "  (set unverified)",
                        _ => "",
                    };
                    println!("{}  ->  {}  [{}]{flag}", r.matches, r.provider, r.source);
                }
            }
            Ok(())
        }
        ByokCommand::Provider { command } => provider(admin, command).await,
    }
}

async fn provider(admin: &ByokAdmin<'_>, command: ByokProviderCommand) -> Result<(), Failure> {
    match command {
        ByokProviderCommand::Add {
            name,
            definition,
            unverified,
        } => define(admin, &name, &definition, unverified, false).await,
        ByokProviderCommand::Update {
            name,
            definition,
            unverified,
        } => define(admin, &name, &definition, unverified, true).await,
        ByokProviderCommand::List { json } => {
            let providers = admin.providers().await?;
            if providers.is_empty() && !json {
                println!(
                    "no customer key providers in the store (`vault byok provider add NAME --type …` adds one)"
                );
            }
            for p in providers {
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
            admin.remove_provider(&name, yes_strand_data).await?;
            println!("provider {name:?} removed");
            Ok(())
        }
    }
}

/// `byok provider add` (or, with `update`, `byok provider update`): the definition checked,
/// kept, verified unless `unverified`, and reported.
async fn define(
    admin: &ByokAdmin<'_>,
    name: &str,
    definition: &ProviderDefinition,
    unverified: bool,
    update: bool,
) -> Result<(), Failure> {
    let (type_name, fields) = fields_of(definition)?;
    let no_cache = definition.no_cache;
    let verification = if update {
        admin
            .update_provider(name, type_name, &fields, no_cache, unverified)
            .await?
    } else {
        admin
            .add_provider(name, type_name, &fields, no_cache, unverified)
            .await?
    };
    let done = if update { "updated" } else { "added" };
    println!("provider {name:?} {done} ({type_name})");
    match verification {
        Some(v) => {
            print(&v, false);
            if !v.verified() {
                println!(
                    "once fixed: `vault keys verify --provider {name}`; `vault byok set` refuses it until it verifies"
                );
            }
        }
        None => println!("not verified, as asked: `vault keys verify --provider {name}` checks it"),
    }
    Ok(())
}

/// A definition's fields, by name.
type Fields = Vec<(&'static str, String)>;

/// The type and fields of a provider definition, each field one of its type's.
fn fields_of(d: &ProviderDefinition) -> Result<(&'static str, Fields), Failure> {
    let kind = d.kind;
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
        ("key_id", &d.key_id),
        ("region", &d.region),
        ("endpoint_url", &d.endpoint_url),
        ("key_name", &d.key_name),
        ("vault_url", &d.vault_url),
        ("key_version", &d.key_version),
        ("algorithm", &d.algorithm),
        ("credential", &d.credential),
    ];
    let mut fields = Vec::new();
    for (field, value) in given {
        let Some(value) = value else { continue };
        if !allowed.contains(&field) {
            return Err(bad(format!(
                "--{} is not a field of a {type_name} provider",
                field.replace('_', "-")
            )));
        }
        fields.push((field, value.clone()));
    }
    Ok((type_name, fields))
}
