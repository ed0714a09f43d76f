//! The `vault` command line.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use vault::VaultError;
use vault::config::Config;
use vault::crypto::{self, Envelope, Error, KeyContext, MAGIC, VersionState};
use vault::store::{Actor, ApiKeyStore as _, Cursor, ListQuery, ObjectMeta, StoreError, Timestamp};
use zeroize::Zeroizing;

/// Envelope encryption with managed and customer-managed keys.
#[derive(Debug, Parser)]
#[command(name = "vault", version, about)]
struct Cli {
    /// Where the key ring (and later the object store) lives.
    #[arg(long, global = true, env = "VAULT_DATA_DIR", default_value = vault::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The providers and BYOK rules (`vault.toml`); without it, the managed ring only.
    #[arg(long, global = true, env = "VAULT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Encrypt standard input for a key context; writes the envelope to standard output.
    Encrypt {
        /// The key context, a JSON object of 1 to 10 string pairs.
        #[arg(long)]
        context: String,
        /// Extra associated data: authenticated, not stored; decrypt needs the same.
        #[arg(long, default_value = "")]
        aad: String,
        /// Write the binary envelope instead of base64 text.
        #[arg(long)]
        binary: bool,
    },
    /// Decrypt an envelope (binary or base64 text) from standard input.
    Decrypt {
        /// The associated data given to encrypt.
        #[arg(long, default_value = "")]
        aad: String,
        /// Print the key context to standard error.
        #[arg(long)]
        show_context: bool,
    },
    /// Measure seal/open throughput against raw AES-256-GCM on this machine, in one run
    /// (`vault bench server`: a load run against the HTTP API).
    Bench {
        #[command(subcommand)]
        target: Option<BenchTarget>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds per case per round.
        #[arg(long, default_value_t = 0.3)]
        seconds: f64,
        /// Rounds (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Threads for the all-cores figure (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Versioned encrypted objects in the embedded store.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Check a configuration file and report every problem with its line.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage a managed key ring: versions, rotation, rewrap, destruction.
    Keys {
        /// The managed provider of the configuration whose ring to manage (default: the
        /// default provider if it is managed, else the only managed one; without a
        /// configuration, the ring `root` of the data directory).
        #[arg(long, global = true)]
        provider: Option<String>,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Serve the HTTP API (WorkOS Vault compatible) on the embedded store and keys.
    Serve {
        /// The address to listen on (else `[server] listen` of the configuration, else
        /// 127.0.0.1:8080).
        #[arg(long, env = "VAULT_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// The environment of the first API key, created on first start when there is none.
        #[arg(long, env = "VAULT_ENVIRONMENT", default_value = "default")]
        environment: String,
        /// The certificate chain (PEM) to serve HTTPS with (else `[server] tls_cert`); needs
        /// --tls-key. Both files are read again on SIGHUP.
        #[arg(long, env = "VAULT_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert (else `[server] tls_key`).
        #[arg(long, env = "VAULT_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The log format: one line per request, as text or JSON (filter with RUST_LOG; the
        /// default is `info`).
        #[arg(long, env = "VAULT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Create, list and revoke the server's API keys.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// Load-test the HTTP API on loopback: concurrent clients, a create/read/update mix, then
    /// every object read back and checked. Without --url, a server over a fresh embedded store
    /// in a temporary directory is started in this process.
    Server {
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Requests in all.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Value size in bytes.
        #[arg(long, default_value_t = 1024)]
        value_bytes: usize,
        /// A running server (`http://127.0.0.1:8080`) instead of an in-process one.
        #[arg(long, requires = "key")]
        url: Option<String>,
        /// The API key for --url.
        #[arg(long, env = "VAULT_API_KEY")]
        key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Create a key for one environment and print it (alone, once) on standard output.
    Create {
        /// The environment the key can see.
        #[arg(long, short = 'e', env = "VAULT_ENVIRONMENT")]
        environment: String,
        /// A display name, recorded as the actor of the key's changes.
        #[arg(long)]
        name: String,
    },
    /// Revoke a key by its id (`key_…`): it authenticates nothing from now on.
    Revoke {
        /// The key id.
        id: String,
    },
    /// List the keys (ids, environments, names; never the keys).
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct Env {
    /// The environment (tenant) the objects belong to.
    #[arg(long, short = 'e', env = "VAULT_ENVIRONMENT")]
    environment: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Create an object; the value comes from --value or standard input.
    Create {
        #[command(flatten)]
        env: Env,
        /// The object's name, unique among live objects.
        #[arg(long)]
        name: String,
        /// The key context, a JSON object of 1 to 10 string pairs. Fixed for the object's life.
        #[arg(long)]
        context: String,
        /// The value (otherwise read from standard input).
        #[arg(long)]
        value: Option<String>,
    },
    /// Print an object's value (by id, or by --name).
    Get {
        #[command(flatten)]
        env: Env,
        /// The object id.
        #[arg(required_unless_present = "name")]
        id: Option<String>,
        /// Look up by name instead.
        #[arg(long, conflicts_with = "id")]
        name: Option<String>,
    },
    /// An object's metadata.
    Describe {
        #[command(flatten)]
        env: Env,
        /// The object id.
        id: String,
    },
    /// List object names, newest first.
    List {
        #[command(flatten)]
        env: Env,
        /// Page size, 1 to 100.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// The cursor of the next page.
        #[arg(long)]
        after: Option<String>,
        /// The cursor of the previous page.
        #[arg(long)]
        before: Option<String>,
        /// asc or desc by update time.
        #[arg(long, default_value = "desc")]
        order: String,
        /// Case-insensitive name substring.
        #[arg(long)]
        search: Option<String>,
    },
    /// Write a new version; the value comes from --value or standard input.
    Update {
        #[command(flatten)]
        env: Env,
        /// The object id.
        id: String,
        /// The value (otherwise read from standard input).
        #[arg(long)]
        value: Option<String>,
        /// Fail with a conflict unless this is still the current version.
        #[arg(long)]
        expected_version: Option<String>,
    },
    /// Delete an object (unavailable at once, purged later).
    Delete {
        #[command(flatten)]
        env: Env,
        /// The object id.
        id: String,
        /// Fail with a conflict unless this is still the current version.
        #[arg(long)]
        expected_version: Option<String>,
    },
    /// An object's versions, newest first.
    Versions {
        #[command(flatten)]
        env: Env,
        /// The object id.
        id: String,
    },
    /// Remove objects deleted more than --retention-days ago, with all their versions.
    Purge {
        /// Keep deleted objects this many days (at most 36500) before removing them for good.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(..=i64::from(MAX_RETENTION_DAYS)))]
        retention_days: u32,
    },
    /// Create COUNT objects with random 1 KiB values, printing each id once it is durably
    /// stored (for load and crash testing).
    #[command(hide = true)]
    Fill {
        #[command(flatten)]
        env: Env,
        /// How many objects.
        #[arg(long, default_value_t = 1000)]
        count: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the file given with --config (or VAULT_CONFIG).
    Check,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List the ring's versions, with how many stored object versions and issued data keys
    /// each still wraps.
    Status,
    /// Add a new primary version; older versions still decrypt. Every process using the ring
    /// seals under the new version within a second.
    Rotate,
    /// Re-wrap data keys under the key the rules choose now (the primary version after a
    /// rotation, or a customer's key after a new rule): an envelope from standard input, every
    /// stored object version with --all, or those whose context matches with --match. Values
    /// are not re-encrypted; a re-run resumes an interrupted one.
    Rewrap {
        /// Rewrap stored versions whose context holds this pair (repeatable: all must match).
        #[arg(long = "match", value_name = "KEY=VALUE", conflicts_with = "all")]
        matches: Vec<String>,
        /// Rewrap every stored object version.
        #[arg(long)]
        all: bool,
        /// Write the binary envelope instead of base64 text.
        #[arg(long)]
        binary: bool,
    },
    /// Destroy a version's key for good (crypto-shredding). Refused while stored object
    /// versions or issued data keys are still under it (`vault keys rewrap --all` first).
    Destroy {
        /// The version number.
        version: u32,
        /// Consent to make whatever is still under the version unreadable, for good.
        #[arg(long)]
        yes_destroy_data: bool,
    },
    /// Refuse to decrypt with versions below this one.
    MinVersion {
        /// The version number.
        version: u32,
    },
}

/// Exit codes: distinct per failure class so scripts can react.
mod exit {
    /// A command line that does not parse (as clap's own usage errors).
    pub(crate) const USAGE: u8 = 2;
    pub(crate) const BAD_INPUT: u8 = 3;
    pub(crate) const DECRYPTION_FAILED: u8 = 4;
    pub(crate) const KEYS: u8 = 5;
    pub(crate) const NOT_FOUND: u8 = 6;
    pub(crate) const CONFLICT: u8 = 7;
    pub(crate) const STORAGE: u8 = 8;
    pub(crate) const IO: u8 = 1;
}

#[derive(Debug, Clone)]
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Context(_) | Error::Envelope(_) | Error::PlaintextTooLarge { .. } => {
                exit::BAD_INPUT
            }
            Error::DecryptionFailed => exit::DECRYPTION_FAILED,
            _ => exit::KEYS,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NotFound => exit::NOT_FOUND,
            StoreError::Conflict(_) => exit::CONFLICT,
            StoreError::InvalidArgument { .. } | StoreError::InvalidQuery { .. } => exit::BAD_INPUT,
            _ => exit::STORAGE,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

impl From<VaultError> for Failure {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Store(e) => e.into(),
            VaultError::Crypto(e) => e.into(),
            e @ (VaultError::KeyInUse { .. } | VaultError::KeyRecentlyPrimary { .. }) => Self {
                code: exit::CONFLICT,
                message: e.to_string(),
            },
            other => Self {
                code: exit::IO,
                message: other.to_string(),
            },
        }
    }
}

impl From<crypto::KeyRingError> for Failure {
    fn from(e: crypto::KeyRingError) -> Self {
        Error::from(e).into()
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self {
            code: exit::IO,
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server uses every core; everything else is one request at a time.
    let builder = if matches!(
        cli.command,
        Command::Serve { .. }
            | Command::Bench {
                target: Some(_),
                ..
            }
    ) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match { builder }.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vault: cannot start: {e}");
            return ExitCode::from(exit::IO);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("vault: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn read_stdin() -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut buf = Zeroizing::new(Vec::new());
    io::stdin().lock().read_to_end(&mut buf)?;
    Ok(buf)
}

/// An envelope's bytes from binary or base64 text input. The caller parses them (once), before
/// any key is loaded.
fn envelope_bytes(input: &[u8]) -> Result<Vec<u8>, Failure> {
    let bytes = if input.starts_with(&MAGIC) {
        input.to_vec()
    } else {
        let text = std::str::from_utf8(input)
            .map_err(|_| Error::from(crypto::EnvelopeError::Base64))?
            .trim_ascii();
        Envelope::decode_text(text).map_err(Error::from)?
    };
    Ok(bytes)
}

fn write_envelope(bytes: &[u8], binary: bool) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    if binary {
        out.write_all(bytes)?;
    } else {
        out.write_all(crypto::encode_text(bytes).as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// The configuration given, or the embedded default (the managed ring only).
fn load_config(path: Option<&std::path::Path>) -> Result<Config, Failure> {
    match path {
        None => Ok(Config::embedded()),
        Some(path) => Config::load(path).map_err(|problems| Failure {
            code: exit::BAD_INPUT,
            message: problems
                .iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        }),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let config = load_config(cli.config.as_deref())?;
    let data_dir = cli.data_dir.clone();
    let router = || async { config.router(&data_dir).await.map_err(Failure::from) };
    // Without a configuration, reading never creates a key ring.
    let existing_router = || async {
        if cli.config.is_some() {
            config.router(&data_dir).await.map_err(Failure::from)
        } else {
            Ok(vault::default_router(vault::open_existing_managed(
                &data_dir,
            )?))
        }
    };
    match cli.command {
        Command::Encrypt {
            context,
            aad,
            binary,
        } => {
            let ctx = KeyContext::parse_json(context.as_bytes()).map_err(Error::from)?;
            let plaintext = read_stdin()?;
            let router = router().await?;
            let sealed = crypto::seal(&router, &ctx, &plaintext, aad.as_bytes()).await?;
            write_envelope(&sealed, binary)
        }
        Command::Decrypt { aad, show_context } => {
            let input = read_stdin()?;
            let bytes = envelope_bytes(&input)?;
            let envelope = Envelope::parse(&bytes).map_err(Error::from)?;
            let router = existing_router().await?;
            let opened = envelope.open(&router, aad.as_bytes()).await?;
            if show_context {
                eprintln!("{}", opened.context());
            }
            let mut out = io::stdout().lock();
            out.write_all(opened.plaintext())?;
            out.flush()?;
            Ok(())
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
        } => bench_server(clients, requests, value_bytes, url, key, json).await,
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
            let settings = vault::bench::Settings {
                per_case: std::time::Duration::from_secs_f64(seconds),
                rounds,
                threads,
                progress: io::IsTerminal::is_terminal(&io::stderr()),
            };
            let report = vault::bench::run(&settings)?;
            if json {
                let text = serde_json::to_string_pretty(&report).map_err(io::Error::other)?;
                println!("{text}");
            } else {
                print!("{}", vault::bench::table(&report));
            }
            Ok(())
        }
        Command::Kv { command } => kv(&cli.data_dir, &config, command).await,
        Command::Serve {
            listen,
            environment,
            tls_cert,
            tls_key,
            log_format,
        } => {
            init_logs(log_format);
            let tls = match (tls_cert, tls_key) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            };
            serve(&cli.data_dir, &config, listen, &environment, tls).await
        }
        Command::Apikey { command } => apikey(&cli.data_dir, command).await,
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
            // What an RSA key's holder of only the public part could have forged.
            if vault::store::SqlStore::sqlite_path(&cli.data_dir).exists() {
                let store = vault::store::SqlStore::open_sqlite(&cli.data_dir).await?;
                let usage = vault::store::AuditLog::key_usage(&store).await?;
                for (name, stored, issued) in config.unsigned_azure_wraps(&usage) {
                    if stored + issued == 0 {
                        println!("provider {name:?}: every RSA wrap is signed");
                    } else {
                        println!(
                            "provider {name:?}: {stored} stored version(s) and {issued} issued data key(s) hold unsigned (unauthenticated) RSA wraps, accepted while any remain unless accept_unsigned_wraps is set; `vault keys rewrap --all` signs the stored ones, and issued keys need their holders to rekey"
                        );
                    }
                }
                store.close().await;
            }
            Ok(())
        }
        Command::Keys { provider, command } => {
            keys(
                &cli.data_dir,
                &config,
                cli.config.is_some(),
                provider.as_deref(),
                command,
            )
            .await
        }
    }
}

async fn bench_server(
    clients: usize,
    requests: usize,
    value_bytes: usize,
    url: Option<String>,
    key: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    if clients == 0 || clients > 4096 || requests < clients || value_bytes > 1 << 20 {
        return Err(Failure {
            code: exit::BAD_INPUT,
            message: "--clients must be 1..=4096, --requests at least --clients, --value-bytes at most 1 MiB".into(),
        });
    }
    let settings = vault::load::LoadSettings {
        clients,
        requests,
        value_bytes,
    };
    let mut temp = None;
    let mut local = None;
    let (base, key) = match (url, key) {
        (Some(url), Some(key)) => (url, key),
        _ => {
            let dir = tempfile::tempdir()?;
            let (base, key, server) = vault::load::start_local_server(dir.path()).await?;
            temp = Some(dir);
            local = Some(server);
            (base, key)
        }
    };
    eprintln!(
        "vault: {clients} clients, {requests} requests of {value_bytes} bytes against {base}"
    );
    let report = vault::load::run(&base, &key, settings)
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
        print!("{}", vault::load::table(&report));
    }
    if report.errors > 0 || report.intact != report.objects {
        return Err(Failure {
            code: exit::STORAGE,
            message: format!(
                "{} errors, {} of {} objects intact",
                report.errors, report.intact, report.objects
            ),
        });
    }
    Ok(())
}

/// Resolves once SIGTERM or Ctrl-C arrives.
async fn shutdown_signal() {
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

/// How `vault serve` writes its logs (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`, with the SQL driver's
/// per-statement lines kept at `warn`).
fn init_logs(format: LogFormat) {
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

async fn serve(
    data_dir: &std::path::Path,
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
    let vault = vault::open(data_dir, config).await?;
    let store = vault.store().clone();
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
    let first_key = if store.api_keys().await?.is_empty() {
        Some(vault::server::auth::create(&*store, environment, "first key").await?)
    } else {
        None
    };
    let app = vault::server::app(vault::server::AppState::with_metrics_token(
        vault,
        limits,
        s.metrics_token.as_ref().map(|t| t.0.clone()),
    ));
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
    #[cfg(unix)]
    if let Some(tls) = tls.clone() {
        // New connections get the reloaded certificate; established ones keep theirs.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!(target: "vault::serve", "TLS certificate reloaded"),
                    Err(e) => tracing::error!(
                        target: "vault::serve",
                        error = %e,
                        "TLS certificate not reloaded; the previous one stays in use"
                    ),
                }
            }
        });
    }
    tracing::info!(target: "vault::serve", %local, scheme, data_dir = %data_dir.display(), "listening");
    eprintln!(
        "vault: listening on {scheme}://{local} (data in {})",
        data_dir.display()
    );
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

async fn apikey(data_dir: &std::path::Path, command: ApikeyCommand) -> Result<(), Failure> {
    let store = vault::store::SqlStore::open_sqlite(data_dir).await?;
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

/// The longest retention `vault kv purge` takes: 100 years.
const MAX_RETENTION_DAYS: u32 = 36_500;

/// The deletion time before which objects are purged: `now` less `days`, or `None` if that
/// is not a time (never a wrapped-around cutoff in the future, which would purge everything).
fn purge_cutoff(now: Timestamp, days: u32) -> Option<Timestamp> {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    if days > MAX_RETENTION_DAYS {
        return None;
    }
    let span = i64::from(days).checked_mul(MICROS_PER_DAY)?;
    now.0.checked_sub(span).map(Timestamp)
}

/// The actor recorded in the audit trail for command-line changes.
fn cli_actor() -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Actor::new(format!("user_{user}"), format!("{user} (vault cli)"))
}

fn meta_json(m: &ObjectMeta) -> serde_json::Value {
    json!({
        "id": m.id,
        "name": m.name,
        "environment_id": m.environment,
        "context": m.context,
        "key_id": m.key_id,
        "version_id": m.version_id,
        "updated_at": m.updated_at.to_rfc3339(),
        "updated_by": {"id": m.updated_by.id, "name": m.updated_by.name},
    })
}

fn print_meta(m: &ObjectMeta, json: bool) {
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

fn value_arg(value: Option<String>) -> Result<Vec<u8>, Failure> {
    match value {
        Some(v) => Ok(v.into_bytes()),
        None => Ok(read_stdin()?.to_vec()),
    }
}

async fn kv(
    data_dir: &std::path::Path,
    config: &Config,
    command: KvCommand,
) -> Result<(), Failure> {
    let actor = cli_actor();
    // Parse what can be checked before anything is opened, so bad input changes nothing.
    if let KvCommand::Create { context, .. } = &command {
        KeyContext::parse_json(context.as_bytes()).map_err(Error::from)?;
    }
    let vault = vault::open(data_dir, config).await?;
    match command {
        KvCommand::Create {
            env,
            name,
            context,
            value,
        } => {
            let ctx = KeyContext::parse_json(context.as_bytes()).map_err(Error::from)?;
            let value = value_arg(value)?;
            let meta = vault
                .create(&env.environment, &name, &ctx, &value, &actor)
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
                    Err(_) => json!({"value_base64": crypto::encode_text(&object.value)}),
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
            let cutoff = purge_cutoff(Timestamp::now(), retention_days).ok_or_else(|| Failure {
                code: exit::USAGE,
                message: format!("--retention-days {retention_days} is out of range"),
            })?;
            let purged = vault.store().purge(cutoff, &cli_actor()).await?;
            println!("purged {purged} deleted object(s) older than {retention_days} day(s)");
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

/// `--match KEY=VALUE` arguments as pairs, checked as a context would be.
fn match_pairs(matches: &[String]) -> Result<Vec<(String, String)>, Failure> {
    let pairs = matches
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| Failure {
                    code: exit::BAD_INPUT,
                    message: format!("--match {m:?}: expected KEY=VALUE"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    KeyContext::from_pairs(pairs.clone()).map_err(Error::from)?;
    Ok(pairs)
}

/// A progress bar on a terminal, nothing otherwise.
fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if !io::IsTerminal::is_terminal(&io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Seconds since the epoch as RFC 3339.
fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000))
        .map_or_else(|| secs.to_string(), |us| Timestamp(us).to_rfc3339())
}

async fn keys(
    data_dir: &std::path::Path,
    config: &Config,
    config_given: bool,
    provider: Option<&str>,
    command: KeysCommand,
) -> Result<(), Failure> {
    let chosen = config.managed_ring(provider).map_err(|message| Failure {
        code: exit::BAD_INPUT,
        message,
    });
    // The ring must exist: key administration never creates one.
    let open_ring = || -> Result<std::sync::Arc<crypto::ManagedKeyProvider>, Failure> {
        let chosen = chosen.clone()?;
        Ok(std::sync::Arc::new(
            crypto::ManagedKeyProvider::open_existing(data_dir, &chosen.ring)?
                .with_check_interval(chosen.check_interval),
        ))
    };
    // Counting and destroying need the store, not the other providers; `None` if the data
    // directory has none (a missing store must not look like an empty one).
    let ring_vault = |ring: std::sync::Arc<crypto::ManagedKeyProvider>| async move {
        if !vault::store::SqlStore::sqlite_path(data_dir).exists() {
            return Ok(None);
        }
        let store = vault::store::SqlStore::open_sqlite(data_dir).await?;
        Ok::<_, Failure>(Some(vault::Vault::new(
            std::sync::Arc::new(vault::default_router(ring)),
            std::sync::Arc::new(store),
        )))
    };
    let no_store = || {
        format!(
            "no object store at {}",
            vault::store::SqlStore::sqlite_path(data_dir).display()
        )
    };
    match command {
        KeysCommand::Rewrap {
            matches,
            all,
            binary,
        } => {
            if matches.is_empty() && !all {
                let input = read_stdin()?;
                let bytes = envelope_bytes(&input)?;
                let envelope = Envelope::parse(&bytes).map_err(Error::from)?;
                let router = if config_given {
                    config.router(data_dir).await?
                } else {
                    vault::default_router(open_ring()?)
                };
                return match envelope.rewrap(&router).await? {
                    crypto::Rewrapped::Moved(moved) => write_envelope(&moved, binary),
                    // Already under the key the rules choose: the input is the answer.
                    crypto::Rewrapped::AlreadyCurrent => write_envelope(&bytes, binary),
                };
            }
            let scope = if all {
                vault::RewrapScope::All
            } else {
                vault::RewrapScope::Matching(match_pairs(&matches)?)
            };
            let vault = vault::open(data_dir, config).await?;
            let total = match scope {
                vault::RewrapScope::All => Some(
                    vault
                        .key_usage()
                        .await?
                        .iter()
                        .map(|u| u.stored_versions)
                        .sum(),
                ),
                _ => None,
            };
            let bar = progress_bar(total);
            let report = vault
                .rewrap(&scope, &cli_actor(), |r| {
                    bar.set_position(r.scanned);
                    bar.set_message(format!(
                        "rewrapped {}, already current {}",
                        r.rewrapped, r.already_current
                    ));
                })
                .await?;
            bar.finish_and_clear();
            println!(
                "scanned {} versions: {} matched, {} rewrapped, {} already current, {} changed meanwhile, {} unreadable",
                report.scanned,
                report.matched,
                report.rewrapped,
                report.already_current,
                report.changed_meanwhile,
                report.unreadable
            );
            if report.changed_meanwhile > 0 {
                eprintln!("vault: some versions changed while they were rewrapped; run it again");
            }
            Ok(())
        }
        KeysCommand::Status => {
            let ring = open_ring()?;
            let usage = match ring_vault(ring.clone()).await? {
                Some(v) => Some(v.key_usage().await?),
                None => None,
            };
            println!(
                "ring {} (generation {}, min decryption version {})",
                ring.name(),
                ring.stats().generation,
                ring.min_decryption_version()
            );
            println!(
                "{:>8}  {:<10}  {:<20}  {:>8}  {:>8}",
                "VERSION", "STATE", "CREATED_AT", "STORED", "ISSUED"
            );
            for v in ring.versions() {
                let state = match v.state {
                    VersionState::Primary => "primary",
                    VersionState::Active => "active",
                    VersionState::Disabled => "disabled",
                    VersionState::Destroyed => "destroyed",
                    _ => "unknown",
                };
                let key_id = v.key_ref.to_string();
                let (stored, issued) = match &usage {
                    Some(usage) => usage.iter().find(|u| u.key_id == key_id).map_or(
                        ("0".into(), "0".into()),
                        |u| {
                            (
                                u.stored_versions.to_string(),
                                u.issued_data_keys.to_string(),
                            )
                        },
                    ),
                    None => ("-".into(), "-".into()),
                };
                println!(
                    "{:>8}  {:<10}  {:<20}  {:>8}  {:>8}",
                    v.version,
                    state,
                    rfc3339(v.created_at),
                    stored,
                    issued
                );
            }
            if usage.is_none() {
                println!("{}: nothing is counted", no_store());
            }
            println!(
                "STORED: object versions in the store wrapped under the version; ISSUED: data keys handed out under it. Envelopes made with `vault encrypt` are not counted."
            );
            Ok(())
        }
        KeysCommand::Rotate => {
            let v = open_ring()?.rotate().await?;
            println!("v{v}");
            Ok(())
        }
        KeysCommand::Destroy {
            version,
            yes_destroy_data,
        } => {
            let ring = open_ring()?;
            let shred = if yes_destroy_data {
                vault::Shred::Consent
            } else {
                vault::Shred::Refuse
            };
            let report = match (ring_vault(ring.clone()).await?, shred) {
                (Some(vault), _) => vault.destroy_key_version(&ring, version, shred).await?,
                (None, vault::Shred::Refuse) => {
                    return Err(Failure {
                        code: exit::STORAGE,
                        message: format!(
                            "{}: cannot count what v{version} wraps (is --data-dir right?); --yes-destroy-data destroys it uncounted",
                            no_store()
                        ),
                    });
                }
                (None, vault::Shred::Consent) => {
                    let before = ring.versions();
                    ring.destroy(version).await?;
                    eprintln!("vault: {}: nothing was counted", no_store());
                    vault::DestroyReport::uncounted(
                        version,
                        before
                            .iter()
                            .any(|v| v.version == version && v.state != VersionState::Destroyed),
                    )
                }
            };
            if report.destroyed_now {
                println!(
                    "v{version} destroyed: {} stored object version(s) and {} issued data key(s) under it are unreadable from now on",
                    report.stored_versions, report.issued_data_keys
                );
            } else {
                println!("v{version} was already destroyed");
            }
            eprintln!(
                "vault: envelopes made outside the store (`vault encrypt`) cannot be counted; any under v{version} are unreadable too"
            );
            Ok(())
        }
        KeysCommand::MinVersion { version } => {
            open_ring()?.set_min_decryption_version(version).await?;
            println!("minimum decryption version v{version}");
            Ok(())
        }
    }
}
