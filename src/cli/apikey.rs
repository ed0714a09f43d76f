//! `vault apikey`: creating, listing and revoking API keys.

use serde_json::json;
use vault::store::ApiKeyStore as _;

use super::args::*;
use super::exit::Failure;

pub(crate) async fn apikey(
    deployment: &vault::Deployment,
    command: ApikeyCommand,
) -> Result<(), Failure> {
    let store = deployment.store().await?;
    match command {
        ApikeyCommand::Create { environment, name } => {
            let key = vault::server::auth::create(&store, &environment, &name).await?;
            eprintln!(
                "vault: created {} for environment {:?}; the key is shown once",
                key.record.id, key.record.environment
            );
            println!("{}", key.expose_secret());
        }
        ApikeyCommand::Revoke { id } => {
            store.revoke_api_key(&id).await?;
            println!("revoked {id}");
        }
        ApikeyCommand::List { json } => {
            for k in store.api_keys().await? {
                let revoked = k.revoked_at.map(|t| t.to_rfc3339());
                if json {
                    println!(
                        "{}",
                        json!({"id": k.id, "environment": k.environment, "name": k.name,
                               "created_at": k.created_at.to_rfc3339(), "revoked_at": revoked})
                    );
                } else {
                    println!(
                        "{}  {}  {}  {}",
                        k.id,
                        k.environment,
                        k.name,
                        revoked.map_or_else(|| "active".to_owned(), |t| format!("revoked {t}"))
                    );
                }
            }
        }
    }
    store.close().await;
    Ok(())
}
