//! The `vault` command line.

#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser as _;
use cli::{Cli, Command};

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
            return ExitCode::from(cli::EXIT_IO);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("vault: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
