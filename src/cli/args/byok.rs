use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum ByokCommand {
    /// Send contexts holding every --match pair to --provider's key. The provider is verified
    /// live first (a data key generated, unwrapped and compared); a rule with the same pairs is
    /// replaced.
    Set {
        /// A pair the context must hold, as KEY=VALUE or a JSON object (repeatable: all must
        /// match).
        #[arg(long = "match", value_name = "KEY=VALUE|JSON", required = true)]
        matches: Vec<String>,
        /// A provider added with `vault byok provider add`.
        #[arg(long)]
        provider: String,
        /// Set the rule without verifying the provider (its contexts fail until it works).
        #[arg(long)]
        unverified: bool,
    },
    /// Remove the rule with exactly these pairs; new values of its contexts go where the other
    /// rules send them. The provider stays, to decrypt what it wrapped.
    Remove {
        /// A pair of the rule, as KEY=VALUE or a JSON object (repeatable).
        #[arg(long = "match", value_name = "KEY=VALUE|JSON", required = true)]
        matches: Vec<String>,
    },
    /// The rules in force, in order: the configuration file's, then the store's.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The customer key providers kept in the store.
    Provider {
        #[command(subcommand)]
        command: ByokProviderCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ByokProviderCommand {
    /// Add a customer's key, with the fields of a provider section of vault.toml, then verify
    /// it live and report (an unverified provider is kept: grant its permissions, then
    /// `vault keys verify --provider NAME`).
    Add {
        /// Its name: 1 to 64 of [A-Za-z0-9_-], unique among providers.
        name: String,
        #[command(flatten)]
        definition: ProviderDefinition,
        /// Do not verify now.
        #[arg(long)]
        unverified: bool,
    },
    /// Correct a provider no rule has used yet (a mistyped key, region or endpoint): its
    /// definition is replaced by the one given, then verified live.
    Update {
        /// The provider's name.
        name: String,
        #[command(flatten)]
        definition: ProviderDefinition,
        /// Do not verify now.
        #[arg(long)]
        unverified: bool,
    },
    /// List them, with their definitions.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove one. Refused while a rule names it, or while its key still wraps stored values
    /// or issued data keys (`vault keys rewrap --all` moves the stored ones); one no rule has
    /// ever used goes at once.
    Remove {
        /// The provider's name.
        name: String,
        /// Consent to leave whatever is still under its key unreadable.
        #[arg(long)]
        yes_strand_data: bool,
    },
}

/// A provider's definition: the fields of a provider section of vault.toml.
#[derive(Debug, clap::Args)]
pub(crate) struct ProviderDefinition {
    /// The key service.
    #[arg(long = "type", value_enum)]
    pub(crate) kind: ByokType,
    /// aws-kms: the key's ARN, id or alias.
    #[arg(long)]
    pub(crate) key_id: Option<String>,
    /// aws-kms: the region (else from the AWS configuration chain).
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// aws-kms, gcp-kms: another endpoint (an emulator, a private endpoint).
    #[arg(long)]
    pub(crate) endpoint_url: Option<String>,
    /// gcp-kms: `projects/…/locations/…/keyRings/…/cryptoKeys/…`; azure-kv: the key's name.
    #[arg(long)]
    pub(crate) key_name: Option<String>,
    /// azure-kv: `https://<vault>.vault.azure.net/`.
    #[arg(long)]
    pub(crate) vault_url: Option<String>,
    /// azure-kv: wrap with this version (else the current one).
    #[arg(long)]
    pub(crate) key_version: Option<String>,
    /// azure-kv: `RSA-OAEP-256` (default) or `A256KW`.
    #[arg(long)]
    pub(crate) algorithm: Option<String>,
    /// azure-kv: `environment`, `managed-identity` or `azure-cli`.
    #[arg(long)]
    pub(crate) credential: Option<String>,
    /// Turn the data-key cache off for this key (every seal calls the key service).
    #[arg(long)]
    pub(crate) no_cache: bool,
}

/// The key services a BYOK provider can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ByokType {
    /// AWS KMS.
    AwsKms,
    /// Google Cloud KMS.
    GcpKms,
    /// Azure Key Vault or Managed HSM.
    AzureKv,
}
