//! `vault serve`: the HTTP API, its logs and its shutdown.

use std::io::{self, Write};
use std::path::PathBuf;

use vault::config::Config;

use super::args::*;
use super::exit::{self, Failure};

/// Resolves once SIGTERM or Ctrl-C arrives.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    eprintln!("vault: shutting down; finishing requests in flight");
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`, with the SQL driver's
/// per-statement lines kept at `warn`).
pub(crate) fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The server's background work: webhook deliveries from the outbox, every hour the
/// retention purge of events and of idempotent answers and the purge of deleted objects, and
/// the providers' live verification.
fn spawn_background(
    deployment: &vault::Deployment,
    vault: &vault::Vault,
    config: &Config,
    state: &std::sync::Arc<vault::server::AppState>,
) -> Result<(), Failure> {
    let bad = |message: String| Failure {
        code: exit::BAD_INPUT,
        message,
    };
    let settings = config.webhook_settings().map_err(bad)?;
    let retention = config.retention_days().map_err(bad)?;
    let purge_after = config.purge_deleted_after_days().map_err(bad)?;
    let poster =
        vault::server::webhooks::HttpPoster::new(settings.allow_link_local, settings.timeout);
    tokio::spawn(vault::objects::webhooks::run(
        vault.clone(),
        settings,
        poster,
        std::future::pending(),
    ));
    tokio::spawn(vault::objects::jobs::expire(vault.clone(), retention));
    tokio::spawn(vault::objects::jobs::purge_deleted(
        vault.clone(),
        purge_after,
    ));
    tokio::spawn(vault::objects::jobs::verify_providers(
        deployment.clone(),
        config.clone(),
        vault.clone(),
        state.clone(),
    ));
    Ok(())
}

pub(crate) async fn serve(
    deployment: &vault::Deployment,
    config: &Config,
    listen: Option<std::net::SocketAddr>,
    environment: &str,
    tls_files: Option<(PathBuf, PathBuf)>,
) -> Result<(), Failure> {
    let addr = match listen {
        Some(a) => a,
        None => config
            .server
            .listen
            .as_deref()
            .unwrap_or("127.0.0.1:8080")
            .parse()
            .map_err(|_| Failure {
                code: exit::BAD_INPUT,
                message: "server.listen is not a socket address".into(),
            })?,
    };
    let vault = deployment.open(config).await?;
    let defaults = vault::server::Limits::default();
    let limits = vault::server::Limits {
        max_body_bytes: config
            .server
            .max_body_bytes
            .unwrap_or(defaults.max_body_bytes),
        max_value_bytes: config
            .server
            .max_value_bytes
            .unwrap_or(defaults.max_value_bytes),
        max_blob_bytes: config
            .server
            .max_blob_bytes
            .unwrap_or(defaults.max_blob_bytes),
        requests_per_second: config.server.requests_per_second,
    };
    let s = &config.server;
    let tls_files = tls_files.or_else(|| s.tls_cert.clone().zip(s.tls_key.clone()));
    if tls_files.is_none() && (s.tls_cert.is_some() || s.tls_key.is_some()) {
        return Err(Failure {
            code: exit::BAD_INPUT,
            message: "[server] tls_cert and tls_key go together".into(),
        });
    }
    let tls = match &tls_files {
        Some((cert, key)) => Some(vault::server::Tls::load(cert, key).map_err(|e| Failure {
            code: exit::BAD_INPUT,
            message: format!("TLS: {e}"),
        })?),
        None => None,
    };
    let defaults = vault::server::Listening::default();
    let bad = |message: String| Failure {
        code: exit::BAD_INPUT,
        message,
    };
    let secs = |name: &str, v: Option<u64>, d: std::time::Duration| match v {
        None => Ok(d),
        Some(s @ 1..=86_400) => Ok(std::time::Duration::from_secs(s)),
        Some(_) => Err(bad(format!("[server] {name} must be 1 to 86400 seconds"))),
    };
    let listening = vault::server::Listening {
        head_timeout: secs(
            "head_timeout_secs",
            s.head_timeout_secs,
            defaults.head_timeout,
        )?,
        body_timeout: secs(
            "body_timeout_secs",
            s.body_timeout_secs,
            defaults.body_timeout,
        )?,
        idle_timeout: secs(
            "idle_timeout_secs",
            s.idle_timeout_secs,
            defaults.idle_timeout,
        )?,
        max_connections: match s.max_connections {
            None => defaults.max_connections,
            Some(n @ 1..=1_000_000) => n,
            Some(_) => return Err(bad("[server] max_connections must be 1 to 1000000".into())),
        },
        tls: tls.clone(),
    };
    if s.metrics_token.as_ref().is_some_and(|t| t.0.len() < 16) {
        return Err(bad(
            "[server] metrics_token must be at least 16 characters".into()
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // The embedded default makes its first key itself. Replicas on a shared database do not
    // (several starting at once would each make one): the operator creates keys with the CLI.
    let no_keys = vault.api_keys().is_empty().await?;
    let first_key = if no_keys && !deployment.is_postgres() {
        Some(vault::server::auth::create(&vault.api_keys(), environment, "first key").await?)
    } else {
        if no_keys {
            eprintln!(
                "vault: the database has no API key yet: create one with `vault apikey create -e {environment} --name NAME` (same --database-url)"
            );
        }
        None
    };
    let state = vault::server::AppState::with_metrics_token(
        vault.clone(),
        limits,
        s.metrics_token.as_ref().map(|t| t.0.clone()),
    );
    spawn_background(deployment, &vault, config, &state)?;
    let app = vault::server::app(state);
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none() && !local.ip().is_loopback() {
        tracing::warn!(
            target: "vault::serve",
            %local,
            "serving plain HTTP on a non-loopback address: API keys and values cross the network in clear; set [server] tls_cert/tls_key (or --tls-cert/--tls-key) or put a TLS proxy in front"
        );
        eprintln!(
            "vault: WARNING: plain HTTP on {local}, which is not loopback: API keys and values cross the network in clear; use --tls-cert/--tls-key or a TLS proxy"
        );
    }
    // SIGHUP reloads the certificate (new connections get it; established ones keep theirs).
    // Without TLS there is nothing to reload, but it is still handled: its default action
    // would end the server (a `kill -HUP` meant for a TLS replica, a closed terminal).
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let tls = tls.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match tls.as_ref().map(|t| t.reload()) {
                    Some(Ok(())) => {
                        tracing::info!(target: "vault::serve", "TLS certificate reloaded");
                    }
                    Some(Err(e)) => tracing::error!(
                        target: "vault::serve",
                        error = %e,
                        "TLS certificate not reloaded; the previous one stays in use"
                    ),
                    None => tracing::info!(
                        target: "vault::serve",
                        "SIGHUP: no TLS certificate to reload (plain HTTP); ignored"
                    ),
                }
            }
        });
    }
    let store_name = deployment.describe();
    tracing::info!(target: "vault::serve", %local, scheme, store = %store_name, "listening");
    eprintln!("vault: listening on {scheme}://{local} (store: {store_name})");
    if let Some(key) = first_key {
        let secret = key.expose_secret();
        println!(
            "First API key for environment {:?} (shown once; `vault apikey create` makes more):",
            key.record.environment
        );
        println!("{secret}");
        println!(
            "Try: curl -s -H 'Authorization: Bearer {secret}' -H 'Content-Type: application/json' -d '{{\"name\":\"card\",\"value\":\"4111\",\"key_context\":{{\"organization_id\":\"org_1\"}}}}' {scheme}://{local}/vault/v1/kv"
        );
        io::stdout().flush()?;
    }
    vault::server::serve(listener, app, listening, shutdown_signal()).await?;
    tracing::info!(target: "vault::serve", "stopped");
    eprintln!("vault: stopped");
    Ok(())
}
