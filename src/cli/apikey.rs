//! `vault apikey`: creating, listing and revoking API keys (their rows tagged with the
//! deployment's integrity key).

use serde_json::json;
use vault::config::Config;
use vault::objects::admin::ApiKeyAdmin;

use super::args::*;
use super::exit::Failure;

pub(crate) async fn apikey(
    deployment: &vault::Deployment,
    config: &Config,
    command: ApikeyCommand,
) -> Result<(), Failure> {
    let admin = ApiKeyAdmin::open(deployment, config).await?;
    let keys = admin.keys();
    match command {
        ApikeyCommand::Create { environment, name } => {
            let key = vault::objects::api_keys::create(keys, &environment, &name).await?;
            eprintln!(
                "vault: created {} for environment {:?}; the key is shown once",
                key.record.id, key.record.environment
            );
            println!("{}", key.expose_secret());
        }
        ApikeyCommand::Revoke { id } => {
            keys.revoke(&id).await?;
            println!("revoked {id}");
        }
        ApikeyCommand::List { json } => {
            for listed in keys.list().await? {
                let k = &listed.record;
                let revoked = k.revoked_at.map(|t| t.to_rfc3339());
                if json {
                    println!(
                        "{}",
                        json!({"id": k.id, "environment": k.environment, "name": k.name,
                               "created_at": k.created_at.to_rfc3339(), "revoked_at": revoked,
                               "authentic": listed.authentic})
                    );
                } else {
                    let state = if !listed.authentic {
                        "TAMPERED (fails its integrity check: authenticates nothing)".to_owned()
                    } else {
                        revoked.map_or_else(|| "active".to_owned(), |t| format!("revoked {t}"))
                    };
                    println!("{}  {}  {}  {state}", k.id, k.environment, k.name);
                }
            }
        }
    }
    admin.close().await;
    Ok(())
}
