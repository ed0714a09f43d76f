use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List the ring's versions, with how many stored object versions and issued data keys
    /// each still wraps.
    Status,
    /// Verify every provider (or --provider) live: a data key generated under a fixed
    /// verification context, unwrapped and compared. Reports what failed and what to grant or
    /// fix; exits 0 only if every one verified. Customer keys' outcomes are recorded as
    /// `vault.byok_key.verification_completed` events.
    Verify {
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add a new primary version; older versions still decrypt. Every process using the ring
    /// seals under the new version within a second.
    Rotate,
    /// Protect a store from a release before row integrity, once: every API key and webhook
    /// endpoint row is tagged as it is now, and what exists is recorded (docs/SECURITY.md).
    /// Needed for a database store (its processes refuse to start until it is done); an
    /// embedded store is protected at its first start. Run it only on a database you trust
    /// as it is.
    Protect {
        /// Take every row as it is even if some carry tags already (a store that was protected
        /// before and lost its record).
        #[arg(long)]
        force: bool,
    },
    /// Re-wrap data keys under the key the rules choose now (the primary version after a
    /// rotation, or a customer's key after a new rule): an envelope from standard input, every
    /// stored object version with --all, or those whose context matches with --match. Values
    /// are not re-encrypted; a re-run resumes an interrupted one.
    Rewrap {
        /// Rewrap stored versions whose context holds this pair, as KEY=VALUE or a JSON object
        /// (repeatable: all must match).
        #[arg(long = "match", value_name = "KEY=VALUE|JSON", conflicts_with = "all")]
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
    /// Make a master key file (mode 0600) for `--seal file:PATH`. Keep it apart from the
    /// database: whoever holds both holds every key.
    InitSeal {
        /// Where to write it (must not exist).
        path: PathBuf,
    },
    /// Move the ring between its file in the data directory and the database (sealed with
    /// --seal), keys and versions as they are. Refused if the target holds a ring already.
    MigrateRing {
        /// Where the ring goes.
        #[arg(long, value_enum)]
        to: RingPlace,
    },
    /// Seal the ring's root keys in the database with another seal (no data key changes).
    /// Give every process the new --seal before it next starts.
    Reseal {
        /// The new seal: `file:/path/master.key` or a KMS provider of vault.toml.
        #[arg(long)]
        to: String,
    },
}

/// Where `vault keys migrate-ring` moves a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RingPlace {
    /// The database of --database-url (or the SQLite store), sealed with --seal.
    Database,
    /// The key-ring file in the data directory (unsealed, mode 0600).
    File,
}
