//! The configuration file: TOML in, server settings and a compiled
//! [`Policy`] out, or every error found, each with its file, line and column.
//!
//! The top-level keys are `listen` (this server's address) and the keys of
//! the core's [`PolicySpec`]: `redirect_status`, `trusted_proxies`,
//! `default_upstream`, the `[upstreams.NAME]` tables and the `[[rules]]`
//! array. `examples/registry-redirect.toml` in this crate explains the keys
//! of upstreams and rules that pick and build redirects. The core's
//! [`UpstreamSpec`] and [`RuleSpec`] document the rest: blob stores,
//! regional mirrors, blob checks, health checks, canaries, clouds and
//! regions.
//!
//! Loading runs in three phases, and a phase runs only when the one before
//! it found no error: TOML syntax, the type and shape of every value
//! (unknown keys are errors), then the checks of [`Policy::compile`]. Each
//! phase reports all of its errors, not only the first.
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

mod error;
mod position;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use registry_redirect_core::policy::{FieldPath, FieldSegment};
use registry_redirect_core::{Policy, PolicySpec, RuleSpec, UpstreamSpec};
use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

pub use error::{ConfigError, ConfigErrors, LoadError};
pub use position::Position;

use position::{field_at, span_of_field, LineIndex};

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

/// The top-level keys a configuration file may have.
const TOP_LEVEL_KEYS: &str =
    "listen, redirect_status, trusted_proxies, default_upstream, upstreams, rules";

/// A loaded configuration: the server settings and the policy.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on: the file's `listen`, or [`DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// The policy as written, kept for summaries: the compiled [`Policy`]
    /// does not keep every criterion in its written form.
    pub spec: PolicySpec,
    /// The policy, checked and compiled.
    pub policy: Policy,
    /// Settings that are valid but have no effect here, each with its
    /// position and a message that starts with `warning: `.
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// Parses and checks the text of a configuration file. `file` names it
    /// in the errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
        let mut reader = Reader::new(file, text);

        let (document, syntax_errors) = DeTable::parse_recoverable(text);
        if !syntax_errors.is_empty() {
            for error in syntax_errors {
                let offset = error.span().map_or(0, |span| span.start);
                reader.push(offset, format!("invalid TOML: {}", error.message()));
            }
            return Err(reader.into_errors());
        }

        let root = document.get_ref();
        let parts = reader.read_document(root);
        let (Some(parts), true) = (parts, reader.errors.is_empty()) else {
            return Err(reader.into_errors());
        };

        match Policy::compile(&parts.spec) {
            Ok(policy) => Ok(Config {
                listen: parts.listen.unwrap_or(DEFAULT_LISTEN),
                warnings: reader.unused_range_criteria(root, &parts.spec),
                spec: parts.spec,
                policy,
            }),
            Err(policy_errors) => {
                for error in policy_errors.0 {
                    let span = span_of_field(root, &error.location);
                    reader.push(span.start, error.to_string());
                }
                Err(reader.into_errors())
            }
        }
    }

    /// Reads and parses a configuration file. Errors name the file as
    /// `path` is written.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&path.display().to_string(), &text).map_err(LoadError::Invalid)
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

/// The values read from a document before the policy is compiled.
struct Parts {
    listen: Option<SocketAddr>,
    spec: PolicySpec,
}

/// Reads a parsed document into typed values, collecting every error with
/// its byte offset.
struct Reader<'a> {
    file: &'a str,
    lines: LineIndex<'a>,
    errors: Vec<(usize, String)>,
}

impl<'a> Reader<'a> {
    fn new(file: &'a str, text: &'a str) -> Self {
        Reader {
            file,
            lines: LineIndex::new(text),
            errors: Vec::new(),
        }
    }

    fn push(&mut self, offset: usize, message: String) {
        self.errors.push((offset, message));
    }

    fn into_errors(self) -> ConfigErrors {
        let mut errors: Vec<ConfigError> = self
            .errors
            .into_iter()
            .map(|(offset, message)| ConfigError {
                file: self.file.to_owned(),
                position: self.lines.position(offset),
                message,
            })
            .collect();
        errors.sort_by_key(|error| error.position);
        ConfigErrors(errors)
    }

    /// Collects a warning for each rule criterion on the client's cloud or
    /// region. Those come from published range files, which this program
    /// does not load yet, so such a rule never matches.
    fn unused_range_criteria(&self, root: &DeTable<'_>, spec: &PolicySpec) -> Vec<ConfigError> {
        let mut warnings = Vec::new();
        for (index, rule) in spec.rules.iter().enumerate() {
            let criteria = [
                ("clouds", "cloud", &rule.clouds),
                ("regions", "region", &rule.regions),
            ];
            for (key, label, values) in criteria {
                if values.is_empty() {
                    continue;
                }
                let path = FieldPath(vec![
                    FieldSegment::Key("rules".to_owned()),
                    FieldSegment::Index(index),
                    FieldSegment::Key(key.to_owned()),
                ]);
                let span = span_of_field(root, &path);
                warnings.push(ConfigError {
                    file: self.file.to_owned(),
                    position: self.lines.position(span.start),
                    message: format!(
                        "warning: {path}: rule \"{}\" matches on the client's {label}, but no \
                         range files are loaded, so the rule never matches",
                        rule.name
                    ),
                });
            }
        }
        warnings
    }

    /// Reads the top-level table. Each upstream and each rule is read on
    /// its own, so that one bad entry does not hide the errors in others.
    fn read_document(&mut self, root: &DeTable<'_>) -> Option<Parts> {
        let mut listen = None;
        let mut spec = PolicySpec::new("");
        let mut default_upstream = None;

        for (key, value) in root.iter() {
            let name: &str = key.get_ref();
            let path = FieldPath(vec![FieldSegment::Key(name.to_owned())]);
            match name {
                "listen" => listen = self.read_listen(path, value),
                "redirect_status" => spec.redirect_status = self.read(path, value),
                "trusted_proxies" => {
                    spec.trusted_proxies = self.read(path, value).unwrap_or_default();
                }
                "default_upstream" => default_upstream = self.read::<String>(path, value),
                "upstreams" => self.read_upstreams(path, value, &mut spec),
                "rules" => self.read_rules(path, value, &mut spec),
                _ => self.push(
                    key.span().start,
                    format!("unknown key \"{name}\" (expected one of: {TOP_LEVEL_KEYS})"),
                ),
            }
        }

        if !root.contains_key("default_upstream") {
            self.push(
                0,
                "default_upstream: missing key (expected the name of the upstream that serves \
                 requests no rule matches, such as default_upstream = \"k8s\")"
                    .to_owned(),
            );
        }
        spec.default_upstream = default_upstream?;
        Some(Parts { listen, spec })
    }

    fn read_listen(&mut self, path: FieldPath, value: &Spanned<DeValue<'_>>) -> Option<SocketAddr> {
        let text: String = self.read(path, value)?;
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.push(
                    value.span().start,
                    format!(
                        "listen: \"{text}\" is not a socket address (expected IP:PORT such as \
                         127.0.0.1:5000 or [::]:5000)"
                    ),
                );
                None
            }
        }
    }

    fn read_upstreams(
        &mut self,
        path: FieldPath,
        value: &Spanned<DeValue<'_>>,
        spec: &mut PolicySpec,
    ) {
        let DeValue::Table(table) = value.get_ref() else {
            self.push(
                value.span().start,
                format!(
                    "{path}: expected a table of upstreams such as [upstreams.hub], found {}",
                    value.get_ref().type_str()
                ),
            );
            return;
        };
        for (name, upstream) in table.iter() {
            let name: &str = name.get_ref();
            let mut upstream_path = path.clone();
            upstream_path.0.push(FieldSegment::Key(name.to_owned()));
            if let Some(upstream) = self.read::<UpstreamSpec>(upstream_path, upstream) {
                spec.upstreams.insert(name.to_owned(), upstream);
            }
        }
    }

    fn read_rules(&mut self, path: FieldPath, value: &Spanned<DeValue<'_>>, spec: &mut PolicySpec) {
        let DeValue::Array(array) = value.get_ref() else {
            self.push(
                value.span().start,
                format!(
                    "{path}: expected an array of tables written as [[rules]], found {}",
                    value.get_ref().type_str()
                ),
            );
            return;
        };
        for (index, rule) in array.iter().enumerate() {
            let mut rule_path = path.clone();
            rule_path.0.push(FieldSegment::Index(index));
            if let Some(rule) = self.read::<RuleSpec>(rule_path, rule) {
                spec.rules.push(rule);
            }
        }
    }

    /// Deserializes one value. On error, records the message under the
    /// deepest field path that contains the error's span.
    fn read<T: DeserializeOwned>(
        &mut self,
        path: FieldPath,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(typed) => Some(typed),
            Err(error) => {
                let offset = error.span().map_or(value.span().start, |span| span.start);
                let path = field_at(value, offset, path);
                self.push(offset, format!("{path}: {}", error.message()));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
