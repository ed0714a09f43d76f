//! `vault webhook`: endpoints that receive an environment's events, signed.

use serde_json::json;
use vault::config::Config;

use super::args::*;
use super::exit::Failure;

pub(crate) async fn webhook(
    deployment: &vault::Deployment,
    config: &Config,
    command: WebhookCommand,
) -> Result<(), Failure> {
    let vault = deployment.open(config).await?;
    match command {
        WebhookCommand::Create {
            environment,
            url,
            events,
        } => {
            let (endpoint, secret) = vault.create_webhook(&environment, &url, &events).await?;
            eprintln!(
                "vault: created {} for environment {:?}: {} event type(s) to {}; the signing secret is shown once",
                endpoint.id,
                endpoint.environment,
                endpoint.events.len(),
                endpoint.url
            );
            println!("{}", endpoint.id);
            println!("{}", secret.expose_secret());
        }
        WebhookCommand::List { environment, json } => {
            for e in vault.webhooks(environment.as_deref()).await? {
                let authentic = vault.webhook_is_authentic(&e).await;
                if json {
                    println!(
                        "{}",
                        json!({"id": e.id, "environment": e.environment, "url": e.url,
                               "events": e.events, "created_at": e.created_at.to_rfc3339(),
                               "pending": e.pending, "dead": e.dead, "last_error": e.last_error,
                               "authentic": authentic})
                    );
                } else {
                    println!(
                        "{}  {}  {}  {}  pending {}  dead {}{}{}",
                        e.id,
                        e.environment,
                        e.url,
                        e.events.join(","),
                        e.pending,
                        e.dead,
                        e.last_error
                            .as_deref()
                            .map_or_else(String::new, |err| format!("  last error: {err}")),
                        if authentic {
                            ""
                        } else {
                            "  TAMPERED (fails its integrity check: never delivered to)"
                        }
                    );
                }
            }
        }
        WebhookCommand::Delete { id } => {
            vault.delete_webhook(&id).await?;
            println!("deleted {id}");
        }
        WebhookCommand::RotateSecret { id } => {
            let secret = vault.rotate_webhook_secret(&id).await?;
            eprintln!("vault: {id} signs with a new secret from now on; it is shown once");
            println!("{}", secret.expose_secret());
        }
        WebhookCommand::Replay { id } => {
            let n = vault.replay_webhook(&id).await?;
            println!("{n} dead deliver(ies) of {id} will be delivered again");
        }
    }
    Ok(())
}
