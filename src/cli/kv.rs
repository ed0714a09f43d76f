//! `vault kv`: objects from the command line.

use std::io::{self, Write};

use serde_json::json;
use vault::config::Config;
use vault::objects::{
    Actor, CryptoError as Error, Cursor, KeyContext, ListQuery, ObjectMeta, encode_text,
};

use super::args::*;
use super::exit::Failure;
use super::pairs::context_arg;
use super::stdio::*;

/// The actor recorded in the audit trail for command-line changes.
pub(crate) fn cli_actor() -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Actor::new(format!("user_{user}"), format!("{user} (vault cli)"))
}

pub(crate) fn meta_json(m: &ObjectMeta) -> serde_json::Value {
    json!({
        "id": m.id,
        "name": m.name,
        "environment_id": m.environment,
        "context": m.context,
        "key_id": m.key_id,
        "version_id": m.version_id,
        "created_at": m.created_at.to_rfc3339(),
        "updated_at": m.updated_at.to_rfc3339(),
        "updated_by": {"id": m.updated_by.id, "name": m.updated_by.name},
    })
}

pub(crate) fn print_meta(m: &ObjectMeta, json: bool) {
    if json {
        println!("{}", meta_json(m));
    } else {
        println!("id          {}", m.id);
        println!("name        {}", m.name);
        println!("context     {}", m.context);
        println!("version_id  {}", m.version_id);
        println!("key_id      {}", m.key_id);
        println!("updated_at  {}", m.updated_at);
        println!("updated_by  {} ({})", m.updated_by.name, m.updated_by.id);
    }
}

pub(crate) fn value_arg(value: Option<String>) -> Result<Vec<u8>, Failure> {
    match value {
        Some(v) => Ok(v.into_bytes()),
        None => Ok(read_stdin()?.to_vec()),
    }
}

pub(crate) async fn kv(
    deployment: &vault::Deployment,
    config: &Config,
    command: KvCommand,
) -> Result<(), Failure> {
    let actor = cli_actor();
    // Parse what can be checked before anything is opened, so bad input changes nothing.
    if let KvCommand::Create { context, .. } = &command {
        context_arg(context)?;
    }
    let vault = deployment.open(config).await?;
    match command {
        KvCommand::Create {
            env,
            name,
            context,
            value,
        } => {
            let ctx = context_arg(&context)?;
            let value = value_arg(value)?;
            let meta = vault
                .create(&env.environment, &name, &ctx, None, &value, &actor)
                .await?;
            print_meta(&meta, env.json);
        }
        KvCommand::Get { env, id, name } => {
            let object = match (id, name) {
                (_, Some(name)) => vault.read_by_name(&env.environment, &name, &actor).await?,
                (Some(id), None) => vault.read(&env.environment, &id, &actor).await?,
                (None, None) => unreachable!("clap requires one"),
            };
            if env.json {
                let value = match std::str::from_utf8(&object.value) {
                    Ok(text) => json!({"value": text}),
                    Err(_) => json!({"value_base64": encode_text(&object.value)}),
                };
                let mut out = json!({"id": object.meta.id, "name": object.meta.name, "metadata": meta_json(&object.meta)});
                if let (Some(o), Some(v)) = (out.as_object_mut(), value.as_object()) {
                    o.extend(v.clone());
                }
                println!("{out}");
            } else {
                let mut stdout = io::stdout().lock();
                stdout.write_all(&object.value)?;
                stdout.flush()?;
            }
        }
        KvCommand::Describe { env, id } => {
            let meta = vault.describe(&env.environment, &id, &actor).await?;
            print_meta(&meta, env.json);
        }
        KvCommand::List {
            env,
            limit,
            after,
            before,
            order,
            search,
        } => {
            let query = ListQuery {
                limit: Some(limit),
                after: after.map(|c| Cursor::decode(&c, "after")).transpose()?,
                before: before.map(|c| Cursor::decode(&c, "before")).transpose()?,
                order: order.parse()?,
                search,
                updated_after: None,
            };
            let page = vault.list(&env.environment, &query, &actor).await?;
            if env.json {
                let data: Vec<_> = page
                    .data
                    .iter()
                    .map(|i| json!({"id": i.id, "name": i.name, "updated_at": i.updated_at.to_rfc3339()}))
                    .collect();
                println!(
                    "{}",
                    json!({"data": data, "list_metadata": {"before": page.before, "after": page.after}})
                );
            } else {
                println!("{:<39}  {:<27}  NAME", "ID", "UPDATED_AT");
                for i in &page.data {
                    println!(
                        "{:<39}  {:<27}  {}",
                        i.id,
                        i.updated_at.to_rfc3339(),
                        i.name
                    );
                }
                if let Some(after) = &page.after {
                    println!("next page: --after {after}");
                }
                if let Some(before) = &page.before {
                    println!("previous page: --before {before}");
                }
            }
        }
        KvCommand::Update {
            env,
            id,
            value,
            expected_version,
        } => {
            let value = value_arg(value)?;
            let meta = vault
                .update(
                    &env.environment,
                    &id,
                    &value,
                    expected_version.as_deref(),
                    None,
                    &actor,
                )
                .await?;
            print_meta(&meta, env.json);
        }
        KvCommand::Delete {
            env,
            id,
            expected_version,
        } => {
            let meta = vault
                .delete(&env.environment, &id, expected_version.as_deref(), &actor)
                .await?;
            if env.json {
                println!("{}", json!({"name": meta.name, "success": true}));
            } else {
                println!("deleted {} ({})", meta.id, meta.name);
            }
        }
        KvCommand::Versions { env, id } => {
            let versions = vault.versions(&env.environment, &id, &actor).await?;
            if env.json {
                let data: Vec<_> = versions
                    .iter()
                    .map(|v| json!({"id": v.id, "created_at": v.created_at.to_rfc3339(), "current_version": v.current, "etag": v.etag, "size": v.size}))
                    .collect();
                println!(
                    "{}",
                    json!({"data": data, "list_metadata": {"before": null, "after": null}})
                );
            } else {
                println!(
                    "{:<32}  {:<27}  {:>8}  CURRENT",
                    "VERSION_ID", "CREATED_AT", "SIZE"
                );
                for v in &versions {
                    println!(
                        "{:<32}  {:<27}  {:>8}  {}",
                        v.id,
                        v.created_at.to_rfc3339(),
                        v.size,
                        if v.current { "*" } else { "" }
                    );
                }
            }
        }
        KvCommand::Purge { retention_days } => {
            let purged = vault.purge_older_than(retention_days, &cli_actor()).await?;
            println!("purged {purged} deleted object(s) older than {retention_days} day(s)");
            let blobs = vault
                .purge_blobs(Some(retention_days), &cli_actor())
                .await?;
            println!(
                "purged {blobs} deleted blob(s) older than {retention_days} day(s) and abandoned upload(s)"
            );
        }
        KvCommand::Fill { env, count } => {
            let ctx =
                KeyContext::from_pairs([("organization_id", "org_fill")]).map_err(Error::from)?;
            let mut stdout = io::stdout().lock();
            for i in 0..count {
                let mut value = vec![0u8; 1024];
                getrandom::fill(&mut value).map_err(|_| Error::Random)?;
                let meta = vault
                    .create(
                        &env.environment,
                        &format!("fill-{i}-{}", std::process::id()),
                        &ctx,
                        None,
                        &value,
                        &actor,
                    )
                    .await?;
                // Printed only after the store acknowledged the commit.
                writeln!(stdout, "{}", meta.id)?;
                stdout.flush()?;
            }
        }
    }
    Ok(())
}
