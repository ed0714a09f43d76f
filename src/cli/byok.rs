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
            print(&done.verification, false);
            if !done.set {
                return Err(Failure {
                    code: exit::UNVERIFIED,
                    message: format!(
                        "the rule was not set: provider {provider:?} did not verify (fix it, or set the rule with --unverified)"
                    ),
                });
            }
            println!(
                "rule set: {} -> {provider}{}; running servers route by it within a second",
                done.label,
                if done.verification.verified() {
                    ""
                } else {
                    " (UNVERIFIED)"
                }
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
            for r in admin.rules().await? {
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
            let mut fields = Vec::new();
            for (field, value) in given {
                let Some(value) = value else { continue };
                if !allowed.contains(&field) {
                    return Err(bad(format!(
                        "--{} is not a field of a {type_name} provider",
                        field.replace('_', "-")
                    )));
                }
                fields.push((field, value));
            }
            let verification = admin
                .add_provider(&name, type_name, &fields, no_cache, unverified)
                .await?;
            println!("provider {name:?} added ({type_name})");
            if let Some(v) = verification {
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
            for p in admin.providers().await? {
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
