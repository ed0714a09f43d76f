//! The command line: every command, subcommand and argument.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use vault::objects::MAX_RETENTION_DAYS;

mod byok;
pub(crate) use byok::*;

mod keys;
pub(crate) use keys::*;

/// Envelope encryption with managed and customer-managed keys.
#[derive(Debug, Parser)]
#[command(name = "vault", version, about)]
pub(crate) struct Cli {
    /// The data directory of the embedded default: the managed key ring, the SQLite store
    /// (objects, API keys, audit trail, BYOK rules) and the integrity key.
    #[arg(long, global = true, env = "VAULT_DATA_DIR", default_value = vault::DEFAULT_DATA_DIR)]
    pub(crate) data_dir: PathBuf,
    /// The providers and BYOK rules (`vault.toml`); without it, the managed ring only.
    #[arg(long, global = true, env = "VAULT_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// A PostgreSQL database for objects, API keys, the audit trail and the managed ring
    /// (`postgres://user@host:5432/db`; the password from VAULT_DATABASE_PASSWORD or
    /// `[store] password_file`). Default: SQLite in the data directory.
    #[arg(
        long,
        global = true,
        env = "VAULT_DATABASE_URL",
        hide_env_values = true
    )]
    pub(crate) database_url: Option<String>,
    /// What seals the managed ring's root keys in the database: `file:/path/master.key`
    /// (`vault keys init-seal`) or a KMS provider of vault.toml. Needed with --database-url.
    #[arg(long, global = true, env = "VAULT_SEAL")]
    pub(crate) seal: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Encrypt standard input (or --in FILE) for a key context, to standard output (or --out)
    ///
    /// Inputs over 8 MiB, or with --stream, are sealed as a stream in 64 KiB segments: a binary
    /// envelope of any size, made in constant memory.
    Encrypt {
        /// The key context: a JSON object of 1 to 10 string pairs, or KEY=VALUE (repeatable).
        #[arg(long, value_name = "JSON|KEY=VALUE", required = true)]
        context: Vec<String>,
        /// Extra associated data: authenticated, not stored; decrypt needs the same.
        #[arg(long, default_value = "")]
        aad: String,
        /// Write the binary envelope instead of base64 text (streams are always binary).
        #[arg(long)]
        binary: bool,
        /// Seal as a stream whatever the input's size.
        #[arg(long)]
        stream: bool,
        /// Read the plaintext from FILE instead of standard input.
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Write the envelope to FILE instead of standard output: a regular file is complete or
        /// untouched (written beside it, then renamed over it).
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Decrypt an envelope (binary or text, whole or streamed) from standard input (or --in FILE)
    ///
    /// Writes the plaintext to standard output, or to --out FILE: a regular file complete or
    /// not at all. A streamed envelope goes to standard output (or a pipe or device) segment by
    /// segment as each verifies: if one fails (exit 4), what was written is the verified start.
    Decrypt {
        /// The associated data given to encrypt.
        #[arg(long, default_value = "")]
        aad: String,
        /// Print the key context to standard error.
        #[arg(long)]
        show_context: bool,
        /// Only plaintext bytes START to END, both included (`START-` to the end): of a
        /// streamed envelope, only the segments holding them are read and opened.
        #[arg(long, value_name = "START-END")]
        range: Option<String>,
        /// Read the envelope from FILE instead of standard input.
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Write the plaintext to FILE instead of standard output: a regular file is complete or
        /// untouched (written beside it, then renamed over it).
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
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
    /// Manage a managed key ring: versions, rotation, rewrap, destruction; verify providers.
    Keys {
        /// The managed provider of the configuration whose ring to manage (default: the
        /// default provider if it is managed, else the only managed one; without a
        /// configuration, the ring `root` of the data directory). For `verify`: the one
        /// provider to verify, of any type.
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
    /// Webhook endpoints: signed deliveries of an environment's events (to a SIEM, say).
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Customers' own keys (BYOK): routing rules and the providers they name, kept in the
    /// store and followed by every running process within a second.
    Byok {
        #[command(subcommand)]
        command: ByokCommand,
    },
    /// The store as a whole: moving it to PostgreSQL.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy every object, version, API key and audit event, and the managed ring (sealed with
    /// --seal), from this store into an empty PostgreSQL database. Values are not decrypted;
    /// an interrupted copy resumes when run again.
    Copy {
        /// The target database (`postgres://…`; the password from VAULT_TARGET_PASSWORD).
        #[arg(long, env = "VAULT_TARGET_URL", hide_env_values = true)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchTarget {
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
        /// A running server (`http://127.0.0.1:8080`) instead of an in-process one; repeat it
        /// to spread the clients over several replicas.
        #[arg(long, requires = "key")]
        url: Vec<String>,
        /// The API key for --url.
        #[arg(long, env = "VAULT_API_KEY")]
        key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApikeyCommand {
    /// Create a key for one environment and print it (alone, once) on standard output.
    Create {
        /// The environment the key can see (always named: a key for the wrong tenant is not a
        /// default).
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

#[derive(Debug, clap::Subcommand)]
pub(crate) enum WebhookCommand {
    /// Create an endpoint; its signing secret is printed once, alone on the last line of
    /// standard output.
    Create {
        /// The environment whose events it receives (always named).
        #[arg(long, short = 'e', env = "VAULT_ENVIRONMENT")]
        environment: String,
        /// Where deliveries are posted (http or https).
        #[arg(long)]
        url: String,
        /// The event types it receives, comma-separated (`vault.data.read,vault.dek.read`).
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
    },
    /// List the endpoints, with their pending and dead deliveries.
    List {
        /// Only this environment's.
        #[arg(long, short = 'e')]
        environment: Option<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete an endpoint and its undelivered events.
    Delete {
        /// The endpoint id (`we_…`).
        id: String,
    },
    /// Replace an endpoint's signing secret; the new one is printed once, alone on the last
    /// line of standard output.
    RotateSecret {
        /// The endpoint id.
        id: String,
    },
    /// Deliver an endpoint's dead events again.
    Replay {
        /// The endpoint id.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct Env {
    /// The environment (tenant) the objects belong to; `default` is the one `vault serve`'s
    /// first API key is for.
    #[arg(
        long,
        short = 'e',
        env = "VAULT_ENVIRONMENT",
        default_value = "default"
    )]
    pub(crate) environment: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// Create an object; the value comes from --value or standard input.
    Create {
        #[command(flatten)]
        env: Env,
        /// The object's name, unique among live objects.
        #[arg(long)]
        name: String,
        /// The key context: a JSON object of 1 to 10 string pairs, or KEY=VALUE (repeatable).
        /// Fixed for the object's life.
        #[arg(long, value_name = "JSON|KEY=VALUE", required = true)]
        context: Vec<String>,
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
pub(crate) enum ConfigCommand {
    /// Validate the file given with --config (or VAULT_CONFIG).
    Check,
}

/// How `vault serve` writes its logs (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}
