//! The `vault` command line.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vault::crypto::{self, Envelope, Error, KeyContext, MAGIC, VersionState};
use zeroize::Zeroizing;

/// Envelope encryption with managed and customer-managed keys.
#[derive(Debug, Parser)]
#[command(name = "vault", version, about)]
struct Cli {
    /// Where the key ring (and later the object store) lives.
    #[arg(long, global = true, env = "VAULT_DATA_DIR", default_value = vault::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
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
    /// Measure seal/open throughput against raw AES-256-GCM on this machine, in one run.
    Bench {
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
    /// Manage the managed key ring.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List the ring's versions.
    Status,
    /// Add a new primary version; older versions still decrypt.
    Rotate,
    /// Re-wrap an envelope from standard input under the current primary version.
    Rewrap {
        /// Write the binary envelope instead of base64 text.
        #[arg(long)]
        binary: bool,
    },
    /// Destroy a version's key for good: everything wrapped under it becomes unreadable.
    Destroy {
        /// The version number.
        version: u32,
        /// Required: this cannot be undone.
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
    pub(crate) const BAD_INPUT: u8 = 3;
    pub(crate) const DECRYPTION_FAILED: u8 = 4;
    pub(crate) const KEYS: u8 = 5;
    pub(crate) const IO: u8 = 1;
}

#[derive(Debug)]
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
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
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

/// An envelope from binary or base64 text input, its structure checked before any key is
/// loaded.
fn envelope_bytes(input: &[u8]) -> Result<Vec<u8>, Failure> {
    let bytes = if input.starts_with(&MAGIC) {
        input.to_vec()
    } else {
        let text = std::str::from_utf8(input)
            .map_err(|_| Error::from(crypto::EnvelopeError::Base64))?
            .trim_ascii();
        Envelope::decode_text(text).map_err(Error::from)?
    };
    Envelope::parse(&bytes).map_err(Error::from)?;
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

async fn run(cli: Cli) -> Result<(), Failure> {
    let managed = || vault::open_managed(&cli.data_dir);
    let existing = || vault::open_existing_managed(&cli.data_dir);
    match cli.command {
        Command::Encrypt {
            context,
            aad,
            binary,
        } => {
            let ctx = KeyContext::parse_json(context.as_bytes()).map_err(Error::from)?;
            let plaintext = read_stdin()?;
            let router = vault::default_router(managed()?);
            let sealed = crypto::seal(&router, &ctx, &plaintext, aad.as_bytes()).await?;
            write_envelope(&sealed, binary)
        }
        Command::Decrypt { aad, show_context } => {
            let input = read_stdin()?;
            let bytes = envelope_bytes(&input)?;
            let router = vault::default_router(existing()?);
            let opened = crypto::open(&router, &bytes, aad.as_bytes()).await?;
            if show_context {
                eprintln!("{}", opened.context());
            }
            let mut out = io::stdout().lock();
            out.write_all(opened.plaintext())?;
            out.flush()?;
            Ok(())
        }
        Command::Bench {
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
        Command::Keys { command } => {
            let ring = existing()?;
            match command {
                KeysCommand::Status => {
                    println!(
                        "ring {} (min decryption version {})",
                        ring.name(),
                        ring.min_decryption_version()
                    );
                    println!("{:>8}  {:<10}  {:>12}", "VERSION", "STATE", "CREATED_AT");
                    for v in ring.versions() {
                        let state = match v.state {
                            VersionState::Primary => "primary",
                            VersionState::Active => "active",
                            VersionState::Disabled => "disabled",
                            VersionState::Destroyed => "destroyed",
                            _ => "unknown",
                        };
                        println!("{:>8}  {:<10}  {:>12}", v.version, state, v.created_at);
                    }
                    Ok(())
                }
                KeysCommand::Rotate => {
                    let v = ring.rotate()?;
                    println!("v{v}");
                    Ok(())
                }
                KeysCommand::Rewrap { binary } => {
                    let input = read_stdin()?;
                    let bytes = envelope_bytes(&input)?;
                    let router = vault::default_router(ring);
                    let rewrapped = crypto::rewrap(&router, &bytes).await?;
                    write_envelope(&rewrapped, binary)
                }
                KeysCommand::Destroy {
                    version,
                    yes_destroy_data,
                } => {
                    if !yes_destroy_data {
                        return Err(Failure {
                            code: exit::BAD_INPUT,
                            message: format!(
                                "destroying v{version} makes its data unreadable forever; \
                                 repeat with --yes-destroy-data"
                            ),
                        });
                    }
                    ring.destroy(version)?;
                    println!("v{version} destroyed");
                    Ok(())
                }
                KeysCommand::MinVersion { version } => {
                    ring.set_min_decryption_version(version)?;
                    println!("minimum decryption version v{version}");
                    Ok(())
                }
            }
        }
    }
}
