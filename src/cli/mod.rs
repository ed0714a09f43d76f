//! The `vault` command line: arguments, exit codes, and one file per command group.

mod apikey;
mod args;
mod bench;
mod byok;
mod client;
mod exit;
mod files;
mod keys;
mod kv;
mod load;
mod pairs;
mod serve;
mod stdio;
mod store;
mod terminal;
mod webhook;

pub(crate) use args::{Cli, Command};
pub(crate) use exit::{Failure, IO as EXIT_IO};

use std::io;

use vault::objects::admin::{FileKeys, check_store};

use self::args::*;
use self::stdio::*;

pub(crate) async fn run(cli: Cli) -> Result<(), Failure> {
    // The command that makes the seal a PostgreSQL deployment demands needs neither the
    // deployment nor the configuration: exported settings must not stop it.
    if let Command::Keys {
        command: KeysCommand::InitSeal { path },
        ..
    } = &cli.command
    {
        return keys::init_seal(path);
    }
    let config = load_config(cli.config.as_deref())?;
    let data_dir = cli.data_dir.clone();
    let deployment = vault::Deployment::resolve(
        &data_dir,
        cli.database_url.clone(),
        cli.seal.clone(),
        std::env::var("VAULT_DATABASE_PASSWORD").ok(),
        &config,
    )
    .map_err(|message| Failure {
        code: exit::BAD_INPUT,
        message,
    })?;
    let d = &deployment;
    let config_given = cli.config.is_some();
    match cli.command {
        Command::Encrypt {
            context,
            aad,
            binary,
            stream,
            input,
            output,
        } => {
            let ctx = pairs::context_arg(&context)?;
            let keys = FileKeys::open(d, &config, true, config_given).await?;
            let files = files::Files::new(input, output);
            files
                .encrypt(&keys, &ctx, aad.as_bytes(), binary, stream)
                .await
        }
        Command::Decrypt {
            aad,
            show_context,
            range,
            input,
            output,
        } => {
            let range = range.as_deref().map(files::Range::parse).transpose()?;
            let files = files::Files::new(input, output);
            let keys = async { FileKeys::open(d, &config, false, config_given).await };
            files
                .decrypt(keys, aad.as_bytes(), show_context, range)
                .await
        }
        Command::Bench {
            target:
                Some(BenchTarget::Server {
                    clients,
                    requests,
                    value_bytes,
                    url,
                    key,
                    json,
                }),
            ..
        } => bench_server(clients, requests, value_bytes, &url, key, json).await,
        Command::Bench {
            target: None,
            json,
            seconds,
            rounds,
            threads,
        } => {
            if !(seconds > 0.0 && seconds <= 60.0) || rounds == 0 || rounds > 100 {
                return Err(Failure {
                    code: exit::BAD_INPUT,
                    message: "--seconds must be in (0, 60] and --rounds in 1..=100".into(),
                });
            }
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            });
            let settings = vault::objects::bench::Settings {
                per_case: std::time::Duration::from_secs_f64(seconds),
                rounds,
                threads,
            };
            let bar = bench::Bar::new(io::IsTerminal::is_terminal(&io::stderr()));
            let report = vault::objects::bench::run(&settings, &bar)?;
            if json {
                let text = serde_json::to_string_pretty(&report).map_err(io::Error::other)?;
                println!("{text}");
            } else {
                print!("{}", bench::table(&report));
            }
            Ok(())
        }
        Command::Kv { command } => kv::kv(d, &config, command).await,
        Command::Serve {
            listen,
            environment,
            tls_cert,
            tls_key,
            log_format,
        } => {
            serve::init_logs(log_format);
            let tls = match (tls_cert, tls_key) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            };
            serve::serve(d, &config, listen, &environment, tls).await
        }
        Command::Apikey { command } => apikey::apikey(d, &config, command).await,
        Command::Webhook { command } => webhook::webhook(d, &config, command).await,
        Command::Byok { command } => byok::byok(d, &config, command).await,
        Command::Store {
            command: StoreCommand::Copy { to },
        } => store::copy(d, &config, &to).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let Some(path) = &cli.config else {
                return Err(Failure {
                    code: exit::BAD_INPUT,
                    message: "give the file to check with --config or VAULT_CONFIG".into(),
                });
            };
            println!(
                "{}: ok ({} provider(s), {} rule(s))",
                path.display(),
                config.providers.len(),
                config.rules.len()
            );
            if d.has_store() {
                let found = check_store(d, &config).await?;
                if found.providers + found.rules > 0 {
                    println!(
                        "the store adds {} provider(s) and {} rule(s) (`vault byok list`)",
                        found.providers, found.rules
                    );
                }
                // What an RSA key's holder of only the public part could have forged.
                for (name, stored, issued) in found.unsigned_wraps {
                    if stored + issued == 0 {
                        println!("provider {name:?}: every RSA wrap is signed");
                    } else {
                        println!(
                            "provider {name:?}: {stored} stored version(s) and {issued} issued data key(s) hold unsigned (unauthenticated) RSA wraps, accepted while any remain unless accept_unsigned_wraps is set; `vault keys rewrap --all` signs the stored ones, and issued keys need their holders to rekey"
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Keys { provider, command } => {
            keys::keys(
                d,
                &config,
                cli.config.is_some(),
                provider.as_deref(),
                command,
            )
            .await
        }
    }
}

pub(crate) async fn bench_server(
    clients: usize,
    requests: usize,
    value_bytes: usize,
    urls: &[String],
    key: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    if clients == 0 || clients > 4096 || requests < clients || value_bytes > 1 << 20 {
        return Err(Failure {
            code: exit::BAD_INPUT,
            message: "--clients must be 1..=4096, --requests at least --clients, --value-bytes at most 1 MiB".into(),
        });
    }
    let settings = load::LoadSettings {
        clients,
        requests,
        value_bytes,
    };
    let mut temp = None;
    let mut local = None;
    let (bases, key) = match (urls, key) {
        ([_, ..], Some(key)) => (urls.to_vec(), key),
        _ => {
            let dir = tempfile::tempdir()?;
            let (base, key, server) = load::start_local_server(dir.path()).await?;
            temp = Some(dir);
            local = Some(server);
            (vec![base], key)
        }
    };
    eprintln!(
        "vault: {clients} clients, {requests} requests of {value_bytes} bytes against {}",
        bases.join(", ")
    );
    let report = load::run(&bases, &key, settings)
        .await
        .map_err(|message| Failure {
            code: exit::IO,
            message,
        })?;
    if let Some(server) = local {
        server.shutdown().await;
    }
    drop(temp);
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(io::Error::other)?;
        println!("{text}");
    } else {
        print!("{}", load::table(&report));
    }
    if report.errors > 0 || report.intact != report.objects {
        return Err(Failure {
            code: exit::STORAGE,
            message: format!(
                "{} errors, {} of {} objects intact ({} could not be read)",
                report.errors, report.intact, report.objects, report.unread
            ),
        });
    }
    Ok(())
}
