//! Reading a parsed document into typed values, with the position of every
//! error.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ipnet::IpNet;
use registry_redirect_core::client::canonical_network;
use registry_redirect_core::policy::{FieldPath, FieldSegment};
use registry_redirect_core::{Policy, PolicySpec, RuleSpec, UpstreamSpec};
use registry_redirect_tower::resolve::ResolverSettings;
use registry_redirect_tower::CheckSettings;
use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::blob_checks::BlobChecksSpec;
use super::error::{ConfigError, ConfigErrors};
use super::listener::{LimitsSpec, TlsSpec};
use super::position::{field_at, span_of_field, LineIndex};
use super::ranges::{LoadedLabels, RangeFileSpec};
use super::resolve::ResolveSpec;
use crate::admin::AdminListen;
use crate::fetch::{check_url, FetchSource};
use crate::limits::Limits;

/// The top-level keys a configuration file may have.
const TOP_LEVEL_KEYS: &str =
    "listen, admin_listen, redirect_status, trusted_proxies, forwarded_header, \
     default_upstream, upstreams, rules, client_ranges, blob_checks, ranges_fetch, tls, \
     proxy_protocol, limits, resolve";

/// The values read from a document before the policy is compiled.
pub(crate) struct Parts {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) admin_listen: Option<AdminListen>,
    pub(crate) spec: PolicySpec,
    pub(crate) client_ranges: Vec<RangeFileSpec>,
    pub(crate) check_settings: CheckSettings,
    pub(crate) ranges_fetch: BTreeMap<FetchSource, String>,
    pub(crate) tls: Option<TlsSpec>,
    pub(crate) proxy_protocol: bool,
    pub(crate) limits: Limits,
    pub(crate) resolver_settings: ResolverSettings,
}

/// Returns the path of `key` in the `[[client_ranges]]` entry `index`.
pub(crate) fn entry_field(index: usize, key: &str) -> FieldPath {
    FieldPath(vec![
        FieldSegment::Key("client_ranges".to_owned()),
        FieldSegment::Index(index),
        FieldSegment::Key(key.to_owned()),
    ])
}

/// Reads a parsed document into typed values, collecting every error with
/// its byte offset.
pub(crate) struct Reader<'a> {
    file: &'a str,
    lines: LineIndex<'a>,
    pub(crate) errors: Vec<(usize, String)>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Reader {
            file,
            lines: LineIndex::new(text),
            errors: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, offset: usize, message: String) {
        self.errors.push((offset, message));
    }

    /// Records TOML syntax errors, and returns whether there were any.
    pub(crate) fn push_syntax_errors(&mut self, errors: Vec<toml::de::Error>) -> bool {
        let found = !errors.is_empty();
        for error in errors {
            let offset = error.span().map_or(0, |span| span.start);
            self.push(offset, format!("invalid TOML: {}", error.message()));
        }
        found
    }

    pub(crate) fn into_errors(self) -> ConfigErrors {
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
    /// region that cannot match. Without range files no client has a cloud
    /// or a region, so such a rule never matches. With range files, a value
    /// that no loaded range carries never matches, which is most often a
    /// misspelling.
    pub(crate) fn unused_range_criteria(
        &self,
        root: &DeTable<'_>,
        spec: &PolicySpec,
        labels: Option<&LoadedLabels>,
    ) -> Vec<ConfigError> {
        let mut warnings = Vec::new();
        let mut warn = |path: &FieldPath, message: String| {
            let span = span_of_field(root, path);
            warnings.push(ConfigError {
                file: self.file.to_owned(),
                position: self.lines.position(span.start),
                message: format!("warning: {path}: {message}"),
            });
        };
        for (index, rule) in spec.rules.iter().enumerate() {
            let criteria = [
                ("clouds", "cloud", &rule.clouds),
                ("regions", "region", &rule.regions),
            ];
            for (key, label, values) in criteria {
                let path = FieldPath(vec![
                    FieldSegment::Key("rules".to_owned()),
                    FieldSegment::Index(index),
                    FieldSegment::Key(key.to_owned()),
                ]);
                let Some(labels) = labels else {
                    if !values.is_empty() {
                        warn(
                            &path,
                            format!(
                                "rule \"{}\" matches on the client's {label}, but no range \
                                 files are loaded, so the rule never matches (add \
                                 [[client_ranges]] entries)",
                                rule.name
                            ),
                        );
                    }
                    continue;
                };
                for (value_index, value) in values.iter().enumerate() {
                    let matches = match key {
                        "clouds" => labels.clouds.contains(&value.to_ascii_lowercase()),
                        _ => labels.has_region_matching(value),
                    };
                    if matches {
                        continue;
                    }
                    let mut value_path = path.clone();
                    value_path.0.push(FieldSegment::Index(value_index));
                    let reason = match key {
                        "clouds" => format!(
                            "no loaded range has that cloud, so this value never matches \
                             (loaded clouds: {})",
                            labels.clouds.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                        _ => "no loaded range has a matching region, so this value never matches"
                            .to_owned(),
                    };
                    warn(
                        &value_path,
                        format!(
                            "rule \"{}\" matches {label} \"{value}\", but {reason}",
                            rule.name
                        ),
                    );
                }
            }
        }
        warnings
    }

    /// Reads the top-level table. Each upstream and each rule is read on
    /// its own, so that one bad entry does not hide the errors in others.
    pub(crate) fn read_document(&mut self, root: &DeTable<'_>) -> Option<Parts> {
        let mut listen = None;
        let mut admin_listen = None;
        let mut spec = PolicySpec::new("");
        let mut default_upstream = None;
        let mut client_ranges = Vec::new();
        let mut check_settings = CheckSettings::default();
        let mut ranges_fetch = BTreeMap::new();
        let mut tls = None;
        let mut proxy_protocol = false;
        let mut limits = Limits::default();
        let mut resolver_settings = ResolverSettings::default();

        for (key, value) in root.iter() {
            let name: &str = key.get_ref();
            let path = FieldPath(vec![FieldSegment::Key(name.to_owned())]);
            match name {
                "listen" => listen = self.read_listen(path, value),
                "admin_listen" => admin_listen = self.read_admin_listen(path, value),
                "redirect_status" => spec.redirect_status = self.read(path, value),
                "trusted_proxies" => {
                    spec.trusted_proxies = self.read(path, value).unwrap_or_default();
                }
                "forwarded_header" => {
                    if let Some(header) = self.read(path, value) {
                        spec.forwarded_header = header;
                    }
                }
                "default_upstream" => default_upstream = self.read::<String>(path, value),
                "upstreams" => self.read_upstreams(path, value, &mut spec),
                "rules" => self.read_rules(path, value, &mut spec),
                "client_ranges" => client_ranges = self.read_client_ranges(path, value),
                "blob_checks" => {
                    if let Some(settings) = self.read_blob_checks(path, value) {
                        check_settings = settings;
                    }
                }
                "ranges_fetch" => ranges_fetch = self.read_ranges_fetch(value),
                "tls" => tls = self.read(path, value),
                "proxy_protocol" => proxy_protocol = self.read(path, value).unwrap_or_default(),
                "limits" => {
                    if let Some(read) = self.read_limits(path, value) {
                        limits = read;
                    }
                }
                "resolve" => {
                    if let Some(settings) = self.read_resolve(path, value) {
                        resolver_settings = settings;
                    }
                }
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
        Some(Parts {
            listen,
            admin_listen,
            spec,
            client_ranges,
            check_settings,
            ranges_fetch,
            tls,
            proxy_protocol,
            limits,
            resolver_settings,
        })
    }

    fn read_resolve(
        &mut self,
        path: FieldPath,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<ResolverSettings> {
        let spec = self.read::<ResolveSpec>(path, value)?;
        match spec.settings() {
            Ok(settings) => Some(settings),
            Err(errors) => {
                for (key, message) in errors {
                    let offset = match value.get_ref() {
                        DeValue::Table(table) => table.get(key).map(|value| value.span().start),
                        _ => None,
                    };
                    self.push(offset.unwrap_or(value.span().start), message);
                }
                None
            }
        }
    }

    fn read_limits(&mut self, path: FieldPath, value: &Spanned<DeValue<'_>>) -> Option<Limits> {
        let spec = self.read::<LimitsSpec>(path, value)?;
        match spec.limits() {
            Ok(limits) => Some(limits),
            Err(message) => {
                self.push(value.span().start, message);
                None
            }
        }
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

    fn read_admin_listen(
        &mut self,
        path: FieldPath,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<AdminListen> {
        let text: String = self.read(path, value)?;
        match text.parse() {
            Ok(admin_listen) => Some(admin_listen),
            Err(error) => {
                self.push(value.span().start, format!("admin_listen: {error}"));
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

    fn read_client_ranges(
        &mut self,
        path: FieldPath,
        value: &Spanned<DeValue<'_>>,
    ) -> Vec<RangeFileSpec> {
        let DeValue::Array(array) = value.get_ref() else {
            self.push(
                value.span().start,
                format!(
                    "{path}: expected an array of tables written as [[client_ranges]], found {}",
                    value.get_ref().type_str()
                ),
            );
            return Vec::new();
        };
        let mut entries = Vec::with_capacity(array.len());
        for (index, entry) in array.iter().enumerate() {
            let mut entry_path = path.clone();
            entry_path.0.push(FieldSegment::Index(index));
            if let Some(entry) = self.read::<RangeFileSpec>(entry_path, entry) {
                entries.push(entry);
            }
        }
        entries
    }

    fn read_blob_checks(
        &mut self,
        path: FieldPath,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<CheckSettings> {
        let spec = self.read::<BlobChecksSpec>(path, value)?;
        match spec.settings() {
            Ok(settings) => Some(settings),
            Err(errors) => {
                for (key, message) in errors {
                    let offset = match value.get_ref() {
                        DeValue::Table(table) => table.get(key).map(|value| value.span().start),
                        _ => None,
                    };
                    self.push(offset.unwrap_or(value.span().start), message);
                }
                None
            }
        }
    }

    /// Collects a warning for each network in `trusted_proxies` or a rule's
    /// `clients` with host bits set, such as `10.1.2.3/8`. It is read as its
    /// network (`10.0.0.0/8`), which is seldom what a writer of one address
    /// and a prefix length meant.
    pub(crate) fn networks_with_host_bits(
        &self,
        root: &DeTable<'_>,
        spec: &PolicySpec,
    ) -> Vec<ConfigError> {
        let mut lists = vec![(
            FieldPath(vec![FieldSegment::Key("trusted_proxies".to_owned())]),
            &spec.trusted_proxies,
        )];
        for (index, rule) in spec.rules.iter().enumerate() {
            let path = FieldPath(vec![
                FieldSegment::Key("rules".to_owned()),
                FieldSegment::Index(index),
                FieldSegment::Key("clients".to_owned()),
            ]);
            lists.push((path, &rule.clients));
        }

        let mut warnings = Vec::new();
        for (path, values) in lists {
            for (index, value) in values.iter().enumerate() {
                let Ok(written) = value.trim().parse::<IpNet>() else {
                    continue;
                };
                let network = written.trunc();
                if network == written {
                    continue;
                }
                let mut value_path = path.clone();
                value_path.0.push(FieldSegment::Index(index));
                let span = span_of_field(root, &value_path);
                // Shown as the server uses them: `::ffff:192.0.2.5/120` is
                // the IPv4 network 192.0.2.0/24.
                let network = canonical_network(network);
                let single = canonical_network(IpNet::from(written.addr()));
                warnings.push(ConfigError {
                    file: self.file.to_owned(),
                    position: self.lines.position(span.start),
                    message: format!(
                        "warning: {value_path}: {value:?} has host bits set, so it is read as \
                         {network} (write \"{network}\", or \"{single}\" for the one address)"
                    ),
                });
            }
        }
        warnings
    }

    /// Collects a warning when `[blob_checks]` is set but no upstream has
    /// `verify_blobs` or a `health_check`, so that nothing uses it.
    /// Builds the warning `message` at byte `offset` of the file.
    pub(crate) fn warning_at(&self, offset: usize, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            position: self.lines.position(offset),
            message,
        }
    }

    pub(crate) fn unused_blob_checks(
        &self,
        root: &DeTable<'_>,
        policy: &Policy,
    ) -> Option<ConfigError> {
        let (key, _) = root.get_key_value("blob_checks")?;
        let used = policy
            .upstreams()
            .iter()
            .any(|upstream| upstream.verify_blobs() || upstream.health_check().is_some());
        (!used).then(|| ConfigError {
            file: self.file.to_owned(),
            position: self.lines.position(key.span().start),
            message: "warning: blob_checks: no upstream has verify_blobs = true or a \
                      health_check, so these settings have no effect"
                .to_owned(),
        })
    }

    /// Reads `[ranges_fetch]`: a URL for each of `aws`, `gcp` and `azure`.
    pub(crate) fn read_ranges_fetch(
        &mut self,
        value: &Spanned<DeValue<'_>>,
    ) -> BTreeMap<FetchSource, String> {
        let mut urls = BTreeMap::new();
        let DeValue::Table(table) = value.get_ref() else {
            self.push(
                value.span().start,
                format!(
                    "ranges_fetch: expected a table such as [ranges_fetch] with aws, gcp or \
                     azure = \"URL\", found {}",
                    value.get_ref().type_str()
                ),
            );
            return urls;
        };
        for (key, url) in table.iter() {
            let name: &str = key.get_ref();
            let source = match name.parse::<FetchSource>() {
                Ok(source) => source,
                Err(_) => {
                    self.push(
                        key.span().start,
                        format!(
                            "ranges_fetch: unknown key \"{name}\" (expected one of: aws, gcp, \
                             azure)"
                        ),
                    );
                    continue;
                }
            };
            let path = FieldPath(vec![
                FieldSegment::Key("ranges_fetch".to_owned()),
                FieldSegment::Key(name.to_owned()),
            ]);
            let Some(text) = self.read::<String>(path.clone(), url) else {
                continue;
            };
            match check_url(&text) {
                Ok(()) => {
                    urls.insert(source, text);
                }
                Err(reason) => self.push(url.span().start, format!("{path}: {reason}")),
            }
        }
        urls
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
