//! `registry-redirect`: check and explain registry redirect policies.
//!
//! Exit status: 0 on success, 1 when a configuration is invalid, 2 for a
//! usage error or a file that cannot be read.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use http::{HeaderName, HeaderValue, Method};
use registry_redirect_cli::config::{Config, ConfigErrors, LoadError};
use registry_redirect_cli::explain::{parse_header, render, OutputFormat, RequestSpec};
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
    /// Decide one request offline and show the decision and why.
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    /// The configuration file (TOML) [default: the built-in policy]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
    /// The address of the TCP peer: the client, or the proxy in front of it.
    #[arg(long, value_name = "ADDR")]
    client: IpAddr,
    /// A request header, as 'Name: value'. Repeat for more headers.
    #[arg(long = "header", value_name = "HEADER", value_parser = parse_header_arg)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The host the client asked for [default: the Host header, if given]
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// The request method, such as GET or HEAD (case-insensitive).
    #[arg(value_name = "METHOD", value_parser = parse_method)]
    method: Method,
    /// The request path, with an optional ?query.
    #[arg(value_name = "PATH")]
    path: String,
}

fn parse_header_arg(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    parse_header(text).map_err(|error| error.to_string())
}

fn parse_method(text: &str) -> Result<Method, String> {
    Method::from_bytes(text.to_ascii_uppercase().as_bytes()).map_err(|_| {
        format!("\"{text}\" is not an HTTP method (expected a token such as GET or HEAD)")
    })
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
        Command::Explain(args) => explain(args),
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

fn explain(args: ExplainArgs) -> Result<(), CliError> {
    let config = Config::load_or_builtin(args.config.as_deref())?;
    let mut request = RequestSpec::new(args.method, args.path, args.client);
    for (name, value) in args.headers {
        request.headers.append(name, value);
    }
    request.host = args.host;
    print!("{}", render(&config.policy, &request, args.format));
    Ok(())
}
