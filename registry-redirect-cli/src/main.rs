//! `registry-redirect`: check registry redirect policies.
//!
//! Exit status: 0 on success, 1 when a configuration is invalid, 2 for a
//! usage error or a file that cannot be read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use registry_redirect_cli::config::{Config, ConfigErrors, LoadError};
use registry_redirect_cli::summary::Summary;

/// Redirects OCI registry pulls (/v2/...) to the registry that a policy
/// picks for each client and repository.
#[derive(Debug, Parser)]
#[command(name = "registry-redirect", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and summarize its policy.
    Check {
        /// The configuration file (TOML).
        file: PathBuf,
    },
}

/// An error that ends the program, with its exit status.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Load(LoadError::Read { .. }) => 2,
            CliError::Load(LoadError::Invalid(_)) => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { file } => check(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match &error {
                CliError::Load(LoadError::Invalid(errors)) => print_config_errors(errors),
                _ => eprintln!("registry-redirect: {error}"),
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// Prints each error, already in the form `FILE:LINE:COLUMN: message`, then
/// their count.
fn print_config_errors(errors: &ConfigErrors) {
    eprintln!("{errors}");
    if let Some(first) = errors.0.first() {
        let count = errors.0.len();
        let noun = if count == 1 { "error" } else { "errors" };
        eprintln!("{}: {count} {noun}", first.file);
    }
}

fn check(file: &Path) -> Result<(), CliError> {
    let config = Config::load(file)?;
    print!("{}: ok\n{}", file.display(), Summary::new(&config));
    Ok(())
}
