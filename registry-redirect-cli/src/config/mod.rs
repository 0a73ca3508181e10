//! The configuration file: TOML in, server settings and a compiled
//! [`Policy`] out, or every error found, each with its file, line and column.
//!
//! The top-level keys are `listen` (this server's address) and the keys of
//! the core's [`PolicySpec`]: `redirect_status`, `trusted_proxies`,
//! `default_upstream`, the `[upstreams.NAME]` tables and the `[[rules]]`
//! array. Three more belong to this program. `[[client_ranges]]` lists the
//! range files that label client addresses with a cloud and a region.
//! `[blob_checks]` sets the blob checks and health probes of `serve`, and
//! `[ranges_fetch]` the URLs of `ranges fetch`. `[tls]`, `proxy_protocol`
//! and `[limits]` set `serve`'s listener. `[resolve]` sets the timeouts and
//! document cache of upstreams with `auth = "resolve"`.
//! `examples/registry-redirect.toml` in this crate explains every key.
//!
//! Loading runs in three phases, and a phase runs only when the one before
//! it found no error: TOML syntax, the type and shape of every value
//! (unknown keys are errors), then the range files and the checks of
//! [`Policy::compile_with_ranges`]. Each phase reports all of its errors,
//! not only the first. An error in a range file points at the entry's
//! `path` and names the file and the place in it.
//!
//! ```
//! use registry_redirect_cli::config::Config;
//!
//! let text = r#"
//! default_upstream = "k8s"
//!
//! [upstreams.k8s]
//! url = "https://registry.k8s.io"
//!
//! [[rules]]
//! name = "lab"
//! clients = ["192.168.0.0/24"]
//! upstream = "hub2"
//! "#;
//! let errors = Config::parse("config.toml", text).unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "config.toml:10:12: rules[0].upstream: rule \"lab\" names upstream \"hub2\", \
//!      which is not defined (defined: k8s)"
//! );
//!
//! let config = Config::parse("config.toml", &text.replace("hub2", "k8s")).unwrap();
//! assert_eq!(config.listen.to_string(), "127.0.0.1:5000");
//! assert_eq!(config.policy.rules()[0].name(), "lab");
//! ```

mod blob_checks;
mod credentials;
mod error;
mod listener;
mod position;
mod ranges;
mod reader;
mod resolve;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use registry_redirect_core::{Policy, PolicySpec};
use registry_redirect_tower::resolve::ResolverSettings;
use registry_redirect_tower::CheckSettings;
use toml::de::DeTable;

pub use error::{ConfigError, ConfigErrors, LoadError};
pub use position::Position;
pub use ranges::{ClientRanges, RangeFile};

use crate::admin::AdminListen;
use crate::fetch::FetchSource;
use crate::limits::Limits;
use crate::tls::TlsFiles;
use position::span_of_field;
use ranges::LoadedLabels;
use reader::Reader;

/// The address the server listens on when neither the file's `listen` nor
/// `--listen` sets one. It is a loopback address, so that a server started
/// without a configuration serves only this machine. Set
/// `listen = "0.0.0.0:5000"` to serve a network.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000));

/// The policy used when no configuration file is given: everything to
/// registry.k8s.io, and clients in 192.168.0.0/24 to Docker Hub.
pub const BUILTIN_TOML: &str = include_str!("builtin.toml");

/// The file name that errors in [`BUILTIN_TOML`] would carry.
pub const BUILTIN_NAME: &str = "built-in policy";

/// A loaded configuration: the server settings and the policy.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on: the file's `listen`, or [`DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// The file's `admin_listen`, or `None` when the file does not set it.
    pub admin_listen: Option<AdminListen>,
    /// The SHA-256 of the configuration text, as lowercase hex, for the
    /// `registry_redirect_config_info` metric.
    pub sha256: String,
    /// The policy as written, kept for summaries: the compiled [`Policy`]
    /// does not keep every criterion in its written form.
    pub spec: PolicySpec,
    /// The policy, checked and compiled with the client ranges.
    pub policy: Policy,
    /// The range files of `[[client_ranges]]`, with their prefix counts.
    pub client_ranges: ClientRanges,
    /// The settings of blob checks and health probes, from `[blob_checks]`.
    pub check_settings: CheckSettings,
    /// The URLs of `[ranges_fetch]`, by source. An empty URL turns the
    /// source off.
    pub ranges_fetch: BTreeMap<FetchSource, String>,
    /// The certificate and key of `[tls]`, relative paths resolved
    /// against the configuration file's directory. `None` serves plain
    /// HTTP.
    pub tls: Option<TlsFiles>,
    /// `proxy_protocol`: whether connections from `trusted_proxies` start
    /// with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// The connection limits of `[limits]`, defaults filled in.
    pub limits: Limits,
    /// The settings of resolve mode, from `[resolve]`.
    pub resolver_settings: ResolverSettings,
    /// Settings that are valid but have no effect here, each with its
    /// position and a message that starts with `warning: `.
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// Parses and checks the text of a configuration file. `file` names it
    /// in the errors. Range files named with relative paths are read
    /// relative to the current directory.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_in(file, text, Path::new(""))
    }

    /// Parses and checks the text of a configuration file whose range
    /// files and password files, when named with relative paths, are in
    /// `dir`.
    pub fn parse_in(file: &str, text: &str, dir: &Path) -> Result<Config, ConfigErrors> {
        Config::parse_with_env(file, text, dir, &credentials::process_env)
    }

    /// [`Config::parse_in`] with `env` in place of the process environment,
    /// for `password_env`.
    fn parse_with_env(
        file: &str,
        text: &str,
        dir: &Path,
        env: credentials::EnvLookup<'_>,
    ) -> Result<Config, ConfigErrors> {
        let mut reader = Reader::new(file, text);
        let (document, syntax_errors) = DeTable::parse_recoverable(text);
        if reader.push_syntax_errors(syntax_errors) {
            return Err(reader.into_errors());
        }
        let root = document.get_ref();

        let parts = reader.read_document(root);
        let (Some(mut parts), true) = (parts, reader.errors.is_empty()) else {
            return Err(reader.into_errors());
        };
        for (path, message) in credentials::load_passwords(&mut parts.spec, dir, env) {
            reader.push(span_of_field(root, &path).start, message);
        }
        if !reader.errors.is_empty() {
            return Err(reader.into_errors());
        }

        let loaded = ranges::load(&parts.client_ranges, dir);
        for error in &loaded.errors {
            let span = span_of_field(root, &reader::entry_field(error.index, error.key));
            reader.push(span.start, error.message.clone());
        }
        let policy = match Policy::compile_with_ranges(&parts.spec, &loaded.ranges) {
            Ok(policy) if reader.errors.is_empty() => policy,
            Ok(_) => return Err(reader.into_errors()),
            Err(policy_errors) => {
                for error in policy_errors.0 {
                    let span = span_of_field(root, &error.location);
                    reader.push(span.start, error.to_string());
                }
                return Err(reader.into_errors());
            }
        };

        let labels = loaded
            .summary
            .is_configured()
            .then(|| LoadedLabels::of(&loaded.ranges));
        let mut warnings = reader.unused_range_criteria(root, &parts.spec, labels.as_ref());
        warnings.extend(reader.unused_blob_checks(root, &policy));
        warnings.extend(reader.networks_with_host_bits(root, &parts.spec));
        for warning in loaded.warnings {
            let span = span_of_field(root, &reader::entry_field(warning.index, warning.key));
            warnings.push(reader.warning_at(span.start, warning.message));
        }
        Ok(Config {
            listen: parts.listen.unwrap_or(DEFAULT_LISTEN),
            admin_listen: parts.admin_listen,
            sha256: sha256_hex(text),
            warnings,
            spec: parts.spec,
            policy,
            client_ranges: loaded.summary,
            check_settings: parts.check_settings,
            ranges_fetch: parts.ranges_fetch,
            tls: parts.tls.map(|tls| tls.files(dir)),
            proxy_protocol: parts.proxy_protocol,
            limits: parts.limits,
            resolver_settings: parts.resolver_settings,
        })
    }

    /// Reads and parses a configuration file. Errors name the file as
    /// `path` is written. Range files named with relative paths are read
    /// relative to the directory of `path`.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = read(path)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        Config::parse_in(&path.display().to_string(), &text, dir).map_err(LoadError::Invalid)
    }

    /// Parses [`BUILTIN_TOML`]. A test keeps it valid, so an error here
    /// means the binary was built from a broken tree.
    pub fn builtin() -> Result<Config, ConfigErrors> {
        Config::parse(BUILTIN_NAME, BUILTIN_TOML)
    }

    /// Loads `path`, or the built-in policy when there is none.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<Config, LoadError> {
        match path {
            Some(path) => Config::load(path),
            None => Config::builtin().map_err(LoadError::Invalid),
        }
    }
}

/// Reads only the `[ranges_fetch]` table of a configuration file, for
/// `ranges fetch`. The rest of the file is not checked, and its range files
/// are not read: `ranges fetch` may be about to create them.
pub fn load_ranges_fetch(path: &Path) -> Result<BTreeMap<FetchSource, String>, LoadError> {
    let text = read(path)?;
    parse_ranges_fetch(&path.display().to_string(), &text).map_err(LoadError::Invalid)
}

/// Parses only the `[ranges_fetch]` table of a configuration text. See
/// [`load_ranges_fetch`].
pub fn parse_ranges_fetch(
    file: &str,
    text: &str,
) -> Result<BTreeMap<FetchSource, String>, ConfigErrors> {
    let mut reader = Reader::new(file, text);
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    if reader.push_syntax_errors(syntax_errors) {
        return Err(reader.into_errors());
    }
    let urls = match document.get_ref().get("ranges_fetch") {
        Some(value) => reader.read_ranges_fetch(value),
        None => BTreeMap::new(),
    };
    if !reader.errors.is_empty() {
        return Err(reader.into_errors());
    }
    Ok(urls)
}

/// Returns the SHA-256 of `text` as lowercase hex.
fn sha256_hex(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
