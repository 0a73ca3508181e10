//! `registry-redirect`: serve, check and explain registry redirect policies.
//!
//! Exit status: 0 on success, 1 when a configuration is invalid, the
//! server fails or a range file fails to update, 2 for a usage error or a
//! file that cannot be read.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use http::{HeaderName, HeaderValue, Method};
use registry_redirect_cli::admin::{
    self, AdminBindError, AdminListen, Readiness, DEFAULT_ADMIN_LISTEN,
};
use registry_redirect_cli::app::app;
use registry_redirect_cli::config::{self, Config, ConfigErrors, LoadError, BUILTIN_NAME};
use registry_redirect_cli::download::{DownloadError, Downloader};
use registry_redirect_cli::explain::{parse_header, render, OutputFormat, RequestSpec};
use registry_redirect_cli::fetch::{
    self, parse_source_arg, FetchOptions, FetchSource, SourceUrls, DEFAULT_MAX_DROP_PERCENT,
};
use registry_redirect_cli::health::{self, HealthError};
use registry_redirect_cli::limits::{Limits, LimitsError};
use registry_redirect_cli::logging::{self, ClientAddresses, LogFilterError, LogFormat};
use registry_redirect_cli::proxy_protocol::ProxyProtocol;
use registry_redirect_cli::serve::{
    self, ConnectionSettings, Reloader, ServeError, ShutdownSignals,
};
use registry_redirect_cli::summary::Summary;
use registry_redirect_cli::tls::{Tls, TlsError, TlsFiles};
use registry_redirect_cli::watch::{self, WatchError};
use registry_redirect_tower::client_log::{DEFAULT_IPV4_PREFIX, DEFAULT_IPV6_PREFIX};
use registry_redirect_tower::{Metrics, PolicyHandle, RegistryRedirectLayer, ACCESS_LOG_TARGET};
use url::Url;

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
    /// Serve HTTP: respond to /v2/ requests with redirects from the policy.
    Serve(ServeArgs),
    /// Validate a configuration file and summarize its policy.
    Check {
        /// The configuration file (TOML).
        file: PathBuf,
    },
    /// Decide one request offline and show the decision and why.
    Explain(ExplainArgs),
    /// Check a running server: exit 0 when GET URL returns 200 OK within
    /// the timeout, else 1. For container HEALTHCHECKs and exec probes.
    Health(HealthArgs),
    /// Work with the published cloud range files.
    Ranges {
        #[command(subcommand)]
        command: RangesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RangesCommand {
    /// Download the published range files of AWS and GCP (and Azure, given
    /// a URL) into a directory. A file is replaced only by a download that
    /// parses and whose prefix count did not drop by more than --max-drop.
    Fetch(FetchArgs),
}

#[derive(Debug, clap::Args)]
struct FetchArgs {
    /// The directory to write to, created when missing. The files are
    /// aws-ip-ranges.json, gcp-cloud.json and azure-service-tags.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A configuration file whose ranges_fetch table sets source URLs.
    /// Only that table is read.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A source and its URL, as NAME=URL with NAME aws, gcp or azure. It
    /// overrides the default URL and the configuration file; NAME= skips
    /// the source. Repeat for more sources.
    #[arg(long = "source", value_name = "NAME=URL", value_parser = parse_source_arg_text)]
    sources: Vec<(FetchSource, String)>,
    /// The largest accepted fall in a file's prefix count, in percent of
    /// the count of the file it replaces.
    #[arg(long, value_name = "PERCENT", default_value_t = DEFAULT_MAX_DROP_PERCENT, value_parser = parse_percent)]
    max_drop: f64,
    /// Seconds each download may take, redirects and body included.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

#[derive(Debug, clap::Args)]
struct HealthArgs {
    /// The URL to request; only http:// is supported.
    #[arg(long, value_name = "URL", default_value = health::DEFAULT_URL, value_parser = parse_health_url)]
    url: Url,
    /// Seconds the request may take, connecting included.
    #[arg(long, value_name = "SECONDS", default_value_t = health::DEFAULT_TIMEOUT_SECONDS, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The configuration file (TOML). Without it, the built-in policy is
    /// used: everything to registry.k8s.io, clients in 192.168.0.0/24 to
    /// Docker Hub.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address to listen on, as IP:PORT; overrides the file's `listen`
    /// (default 127.0.0.1:5000). Port 0 picks a free port, which is printed.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The log filter, in RUST_LOG syntax, such as debug or
    /// info,registry_redirect::access=off [default: RUST_LOG, else info]
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// The format of log lines on stderr: text, or one JSON object a line.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Add the client address to each access-log line: full, or truncated
    /// to its network. Off by default, so that logs hold no client
    /// addresses; the flag alone means full.
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, default_value_t = ClientAddresses::Off, default_missing_value = "full")]
    log_client_addresses: ClientAddresses,
    /// Bits of an IPv4 client address kept by
    /// --log-client-addresses=truncated.
    #[arg(long, value_name = "BITS", default_value_t = DEFAULT_IPV4_PREFIX, value_parser = clap::value_parser!(u8).range(0..=32))]
    log_client_ipv4_prefix: u8,
    /// Bits of an IPv6 client address kept by
    /// --log-client-addresses=truncated.
    #[arg(long, value_name = "BITS", default_value_t = DEFAULT_IPV6_PREFIX, value_parser = clap::value_parser!(u8).range(0..=128))]
    log_client_ipv6_prefix: u8,
    /// The address of the admin listener (/healthz, /readyz, /metrics), as
    /// IP:PORT, or off; overrides the file's `admin_listen` [default:
    /// 127.0.0.1:9090]
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<AdminListen>,
    /// Seconds between SIGINT or SIGTERM and the drain, during which
    /// /readyz returns 503 while new connections are still served, so that
    /// load balancers stop sending first.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    shutdown_delay: u64,
    /// Seconds to wait for requests in flight after SIGINT or SIGTERM
    /// before exiting anyway.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    shutdown_timeout: u64,
    /// Threads that serve requests. With 1, the server runs on a
    /// single-threaded runtime, with no handoffs between threads [default:
    /// the CPUs this process may run on]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// Seconds a client may take to send a request's headers before the
    /// connection is closed. The time counts from the connection's start
    /// (PROXY header and TLS handshake included) or from the first byte
    /// after an idle period. Overrides limits.header_read_timeout_seconds
    /// [default: 30]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout: Option<u64>,
    /// Seconds a keep-alive connection may stay open with no request and
    /// no byte received before it is closed. Overrides
    /// limits.idle_timeout_seconds [default: 60]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: Option<u64>,
    /// The maximum size of a request's headers in bytes, at least 8192.
    /// Larger requests get 431. Overrides limits.max_header_bytes
    /// [default: 32768]
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(8192..))]
    max_header_bytes: Option<u32>,
    /// The maximum number of open connections. At the limit, new
    /// connections wait in the listen backlog until one closes. Overrides
    /// limits.max_connections [default: 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// The maximum number of concurrent requests (streams) on one HTTP/2
    /// connection. Overrides limits.http2_max_concurrent_streams
    /// [default: 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_concurrent_streams: Option<u32>,
    /// The PEM file of the certificate chain to serve HTTPS with (server
    /// certificate first). Overrides tls.cert_file. Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM file of the certificate's private key (PKCS#8, PKCS#1 or
    /// SEC1). Overrides tls.key_file. Needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Read a PROXY protocol header (v1 or v2) at the start of every
    /// connection from trusted_proxies, and take the client address from
    /// it. Such connections without a header, and headers from other
    /// peers, are closed. Same as proxy_protocol = true.
    #[arg(long)]
    proxy_protocol: bool,
    /// Reload when the configuration file, a range file or TLS file it
    /// names, or the files of --tls-cert and --tls-key change on disk, as
    /// SIGHUP does: after 200 ms without further changes, and only when a
    /// file's content changed. Follows files replaced by rename and
    /// Kubernetes ConfigMap and Secret updates.
    #[arg(long, requires = "config")]
    watch: bool,
    /// Also accept HTTP/2 with prior knowledge (h2c) on plain TCP
    /// connections. Off by default, because the server then waits for the
    /// first bytes of every connection to tell HTTP/2 from HTTP/1.1. TLS
    /// connections pick HTTP/2 by ALPN either way.
    #[arg(long)]
    h2c: bool,
}

impl ServeArgs {
    /// Returns the configuration's limits with the flags' overrides.
    fn limits(&self, config: &Config) -> Limits {
        let mut limits = config.limits;
        if let Some(seconds) = self.header_read_timeout {
            limits.header_read_timeout = Duration::from_secs(seconds);
        }
        if let Some(seconds) = self.idle_timeout {
            limits.idle_timeout = Duration::from_secs(seconds);
        }
        if let Some(bytes) = self.max_header_bytes {
            limits.max_header_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        if let Some(count) = self.max_connections {
            limits.max_connections = usize::try_from(count).unwrap_or(usize::MAX);
        }
        if let Some(count) = self.http2_max_concurrent_streams {
            limits.http2_max_concurrent_streams = count;
        }
        limits
    }

    /// Returns the certificate files of --tls-cert and --tls-key.
    fn flag_tls_files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
            _ => None,
        }
    }

    /// Returns the certificate files: the flags', else the configuration's.
    fn tls_files(&self, config: &Config) -> Option<TlsFiles> {
        self.flag_tls_files().or_else(|| config.tls.clone())
    }
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
    ///
    /// Without either, rules that name hosts do not match. The decision is
    /// that of a request whose Host names no such host: `serve` itself
    /// rejects an HTTP/1.1 request with no Host at all, which RFC 9112
    /// requires clients to send.
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

fn parse_health_url(text: &str) -> Result<Url, String> {
    health::parse_url(text).map_err(|error| error.to_string())
}

fn parse_source_arg_text(text: &str) -> Result<(FetchSource, String), String> {
    parse_source_arg(text).map_err(|error| error.to_string())
}

fn parse_percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(percent) if (0.0..=100.0).contains(&percent) => Ok(percent),
        _ => Err(format!(
            "\"{text}\" is not a percentage (expected a number from 0 to 100, such as 20)"
        )),
    }
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
    #[error(transparent)]
    LogFilter(#[from] LogFilterError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Admin(#[from] AdminBindError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("health: {0}")]
    Unhealthy(Box<HealthError>),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("invalid limit: {0}")]
    Limits(#[from] LimitsError),
    #[error("failed to start the Tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("ranges fetch: every source is skipped, so there is nothing to fetch (give a source with --source NAME=URL)")]
    NoSources,
    #[error("ranges fetch: failed to create the output directory {}: {source}", dir.display())]
    OutputDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("ranges fetch: {0}")]
    Downloader(DownloadError),
    #[error("ranges fetch: {failed} of {total} sources failed, and their old files are kept")]
    SourcesFailed { failed: usize, total: usize },
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Load(LoadError::Read { .. })
            | CliError::LogFilter(_)
            | CliError::Limits(_)
            | CliError::NoSources => 2,
            CliError::Load(LoadError::Invalid(_))
            | CliError::Serve(_)
            | CliError::Admin(_)
            | CliError::Watch(_)
            | CliError::Unhealthy(_)
            | CliError::Tls(_)
            | CliError::Runtime(_)
            | CliError::OutputDir { .. }
            | CliError::Downloader(_)
            | CliError::SourcesFailed { .. } => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check { file } => check(&file),
        Command::Explain(args) => explain(args),
        Command::Health(args) => check_health(args),
        Command::Ranges {
            command: RangesCommand::Fetch(args),
        } => fetch(args),
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

fn print_warnings(config: &Config) {
    for warning in &config.warnings {
        eprintln!("{warning}");
    }
}

fn check(file: &Path) -> Result<(), CliError> {
    let config = Config::load(file)?;
    print_warnings(&config);
    write_stdout(&format!(
        "{}: ok\n{}",
        file.display(),
        Summary::new(&config)
    ));
    Ok(())
}

/// Writes `text` to standard output. A reader that went away (`check FILE |
/// head`) is not an error worth a panic, so a write error ends the output
/// quietly, as other command-line tools do on a closed pipe.
fn write_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

fn explain(args: ExplainArgs) -> Result<(), CliError> {
    let config = Config::load_or_builtin(args.config.as_deref())?;
    print_warnings(&config);
    let mut request = RequestSpec::new(args.method, args.path, args.client);
    for (name, value) in args.headers {
        request.headers.append(name, value);
    }
    request.host = args.host;
    write_stdout(&render(&config.policy, &request, args.format));
    Ok(())
}

fn check_health(args: HealthArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime
        .block_on(health::check(&args.url, Duration::from_secs(args.timeout)))
        .map_err(|error| CliError::Unhealthy(Box::new(error)))?;
    write_stdout(&format!("healthy: GET {} returned 200 OK\n", args.url));
    Ok(())
}

fn fetch(args: FetchArgs) -> Result<(), CliError> {
    let mut urls = SourceUrls::defaults();
    if let Some(path) = &args.config {
        for (source, url) in config::load_ranges_fetch(path)? {
            urls.set(source, &url);
        }
    }
    for (source, url) in &args.sources {
        urls.set(*source, url);
    }
    if urls.is_empty() {
        return Err(CliError::NoSources);
    }

    let downloader =
        Downloader::new(Duration::from_secs(args.timeout)).map_err(CliError::Downloader)?;
    let options = FetchOptions {
        out: args.out,
        max_drop_percent: args.max_drop,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let reports = runtime
        .block_on(fetch::fetch_all(&downloader, &urls, &options))
        .map_err(|source| CliError::OutputDir {
            dir: options.out.clone(),
            source,
        })?;

    let mut failed = 0;
    for report in &reports {
        for warning in &report.warnings {
            eprintln!(
                "registry-redirect: ranges fetch: warning: {}: {warning}",
                report.source
            );
        }
        if let Some(line) = report.success_line() {
            write_stdout(&format!("{line}\n"));
        }
        if let Some(line) = report.failure_line(&options.out) {
            eprintln!("registry-redirect: ranges fetch: {line}");
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(CliError::SourcesFailed {
            failed,
            total: reports.len(),
        });
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<(), CliError> {
    logging::init(logging::filter(args.log_level.as_deref())?, args.log_format);
    let config = Config::load_or_builtin(args.config.as_deref())?;
    let source = args.config.as_deref().map_or_else(
        || BUILTIN_NAME.to_owned(),
        |path| path.display().to_string(),
    );
    let listen = args.listen.unwrap_or(config.listen);

    let limits = args.limits(&config);
    limits.validate()?;
    let tls = match (args.tls_files(&config), args.flag_tls_files()) {
        (Some(files), Some(fixed)) => Some(Tls::new(&files)?.with_fixed_files(fixed)),
        (Some(files), None) => Some(Tls::new(&files)?),
        (None, _) => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };

    let runtime = build_runtime(args.workers).map_err(CliError::Runtime)?;
    let metrics = Metrics::new();
    metrics.set_config(&config.sha256, SystemTime::now());
    if let Some(tls) = &tls {
        metrics.set_tls_certificate_expiry(tls.certificate_expiry());
    }
    let readiness = Readiness::new();
    let admin_listen = args.admin_listen.or(config.admin_listen);
    let result = runtime.block_on(async {
        let delay = Duration::from_secs(args.shutdown_delay);
        let signals = ShutdownSignals::install()?.before_drain(readiness.clone(), delay);
        // SIGHUP is handled from before the listeners open, because a
        // script or service manager may send it as soon as a port accepts
        // connections, and an unhandled SIGHUP ends the process.
        let hangups = serve::hangups()?;
        let listener = serve::bind(listen).await?;
        let local = listener.local_addr().unwrap_or(listen);
        // Built before the admin listener starts, so that /readyz turns
        // ready soon after the admin address is printed.
        let resolver = serve::start_resolver(&config)?;
        let admin = admin::start(
            admin_listen.unwrap_or(AdminListen::On(DEFAULT_ADMIN_LISTEN)),
            admin_listen.is_some(),
            admin::router(metrics.clone(), readiness.clone()),
        )
        .await?;

        let checks = serve::start_checks(&config.policy, config.check_settings.clone())?;
        // With the access log filtered out, the layer skips building its
        // event altogether. The filter is fixed for the life of the process.
        let access_log = tracing::enabled!(target: ACCESS_LOG_TARGET, tracing::Level::INFO);
        let handle = PolicyHandle::new(config.policy.clone());
        let mut watching = None;
        if let Some(path) = &args.config {
            let reloader = Reloader::new(path.clone(), handle.clone(), checks.clone(), &config)
                .with_tls(tls.clone())
                .with_metrics(metrics.clone());
            if args.watch {
                let fixed_files = args
                    .flag_tls_files()
                    .map(|files| vec![files.cert_file, files.key_file])
                    .unwrap_or_default();
                watching = Some(watch::watch_files(
                    reloader.clone(),
                    fixed_files,
                    watch::DEFAULT_QUIET_PERIOD,
                )?);
            }
            serve::reload_on_hangup(hangups, reloader);
        } else {
            serve::reload_certificate_on_hangup(hangups, tls.clone(), Some(metrics.clone()));
        }

        // The address goes to stdout first, so that a script can read the
        // port picked for --listen ADDR:0 from the first line, and the
        // admin listener's from the second. A closed stdout does not stop
        // the server, so write errors are ignored.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on {scheme}://{local}");
        if let Some(admin) = &admin {
            let _ = writeln!(stdout, "admin listening on http://{}", admin.addr());
        }
        let _ = write!(stdout, "policy: {source}\n{}", Summary::new(&config));
        let _ = stdout.flush();
        drop(stdout);
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            listen = %local,
            policy = %source,
            upstreams = config.policy.upstreams().len(),
            rules = config.policy.rules().len(),
            client_range_files = config.client_ranges.files.len(),
            client_range_prefixes = config.client_ranges.prefixes,
            "registry-redirect started"
        );

        let client_addresses = args
            .log_client_addresses
            .logging(args.log_client_ipv4_prefix, args.log_client_ipv6_prefix);
        let proxy_protocol = (args.proxy_protocol || config.proxy_protocol).then(|| {
            if config.policy.trusted_proxies().is_empty() {
                tracing::warn!(
                    "the PROXY protocol is on but trusted_proxies is empty, so every PROXY \
                     header is rejected and every peer's own address is its client address"
                );
            }
            ProxyProtocol::new(handle.clone()).untrusted_peer_logging(client_addresses)
        });
        let settings = ConnectionSettings {
            limits,
            tls,
            proxy_protocol,
            metrics: Some(metrics.clone()),
            h2c: args.h2c,
        };
        tracing::info!(
            tls = settings.tls.is_some(),
            proxy_protocol = settings.proxy_protocol.is_some(),
            h2c = settings.h2c,
            header_read_timeout_secs = limits.header_read_timeout.as_secs(),
            idle_timeout_secs = limits.idle_timeout.as_secs(),
            max_header_bytes = limits.max_header_bytes,
            max_connections = limits.max_connections,
            http2_max_concurrent_streams = limits.http2_max_concurrent_streams,
            "listener settings"
        );
        let mut layer = RegistryRedirectLayer::with_handle(handle)
            .require_host(true)
            .access_log(access_log)
            .client_address_logging(client_addresses)
            .with_metrics(metrics);
        if let Some(checks) = &checks {
            layer = layer.with_checks(checks.clone());
        }
        // Always present, so that a reload can add an upstream with
        // auth = "resolve" without a restart.
        layer = layer.with_resolver(resolver);
        let timeout = Duration::from_secs(args.shutdown_timeout);
        readiness.set_ready();
        serve::run(listener, app(layer), signals, timeout, settings).await;
        if let Some(admin) = admin {
            admin.stop().await;
        }
        drop(watching);
        if let Some(checks) = &checks {
            checks.health().stop();
        }
        Ok(())
    });
    // A blocking task can be stuck in a read that never returns, such as a
    // watched path replaced by a FIFO. Dropping the runtime would wait for
    // it and keep the process alive after the drain.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Builds the runtime of `serve`: a current-thread runtime for one worker,
/// which needs no wakeups across threads, else a multi-thread runtime with
/// `workers` threads. The default is `available_parallelism`, which on
/// Linux counts the CPUs of the process's affinity mask and cgroup quota.
fn build_runtime(workers: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = match workers {
        Some(workers) => usize::from(workers),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    if workers == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}
