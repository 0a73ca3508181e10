//! Upstreams and rules: the policy as written ([`PolicySpec`]) and compiled
//! ([`Policy`]).
//!
//! A policy names its **upstreams** (registries to redirect to) and an ordered
//! list of **rules**. A rule matches on any combination of client address
//! ranges, request kinds, repository names and the registry host the client
//! asked for; an empty criterion matches everything. The first matching rule
//! picks the upstream; when none matches, the default upstream serves.
//!
//! [`Policy::compile`] checks everything once, so that deciding a request
//! cannot fail: every reference resolves, every range parses, every upstream
//! URL can be the start of a `Location`. It reports every error it finds,
//! each with the place in the specification ([`FieldPath`]) that caused it.
//!
//! ```
//! use registry_redirect_core::policy::{Policy, PolicySpec, RuleSpec, UpstreamSpec};
//!
//! let mut spec = PolicySpec::new("k8s");
//! spec.upstreams.insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
//! spec.upstreams.insert("hub".into(), UpstreamSpec::new("https://registry-1.docker.io"));
//! spec.rules.push(RuleSpec {
//!     clients: vec!["192.168.0.0/24".into()],
//!     ..RuleSpec::new("lab", "hub")
//! });
//! let policy = Policy::compile(&spec).unwrap();
//! assert_eq!(policy.rules().len(), 1);
//!
//! spec.rules[0].upstream = "hub2".into();
//! let errors = Policy::compile(&spec).unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "rules[0].upstream: rule \"lab\" names upstream \"hub2\", which is not defined (defined: hub, k8s)"
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use http::StatusCode;
use ipnet::IpNet;

use crate::client::TrustedProxies;
use crate::path::{validate_name, RequestKind};
use crate::ranges::RangeTable;

/// The redirect status used when the policy names none.
pub const DEFAULT_REDIRECT_STATUS: u16 = 307;

/// A policy as the user wrote it. [`Policy::compile`] checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct PolicySpec {
    /// The status of redirects: 301, 302, 303, 307 or 308 (default 307).
    #[cfg_attr(feature = "serde", serde(default))]
    pub redirect_status: Option<u16>,
    /// Networks (CIDR, or a single address) whose forwarding headers are believed.
    #[cfg_attr(feature = "serde", serde(default))]
    pub trusted_proxies: Vec<String>,
    /// The upstream that serves requests no rule matches.
    pub default_upstream: String,
    /// The upstreams, by name.
    #[cfg_attr(feature = "serde", serde(default))]
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    /// The rules, tried in order.
    #[cfg_attr(feature = "serde", serde(default))]
    pub rules: Vec<RuleSpec>,
}

impl PolicySpec {
    /// An empty policy whose default upstream is `default_upstream`.
    pub fn new(default_upstream: impl Into<String>) -> Self {
        PolicySpec {
            redirect_status: None,
            trusted_proxies: Vec::new(),
            default_upstream: default_upstream.into(),
            upstreams: BTreeMap::new(),
            rules: Vec::new(),
        }
    }
}

/// How an upstream wants the API version check (`GET /v2/`) handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ApiVersionCheck {
    /// Answer `200 OK` with `Docker-Distribution-Api-Version: registry/2.0`.
    /// Right for anonymous upstreams: the client never meets a challenge.
    #[default]
    Answer,
    /// Redirect to the upstream's `/v2/`, so that its authentication
    /// challenge reaches the client. Clients that authenticate again at the
    /// redirected host (containerd) then pull from token-auth upstreams; clients
    /// that drop the `Authorization` header on a redirect to another host
    /// (those built on Go's HTTP client, such as skopeo and podman) do not.
    Redirect,
}

impl ApiVersionCheck {
    /// The name used in configuration files: `answer` or `redirect`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersionCheck::Answer => "answer",
            ApiVersionCheck::Redirect => "redirect",
        }
    }
}

/// An upstream registry as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct UpstreamSpec {
    /// The base URL: `http` or `https`, a host, an optional port and path.
    /// The path is kept: `https://mirror.example/registry` serves
    /// `https://mirror.example/registry/v2/...`.
    pub url: String,
    /// Repository components inserted after `/v2/`, such as
    /// `k8s-artifacts-prod/images`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub path_prefix: Option<String>,
    /// Whether one-component names get Docker Hub's `library/` in front
    /// (`nginx` becomes `library/nginx`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub library_prefix: bool,
    /// How the API version check is handled when this upstream is chosen.
    #[cfg_attr(feature = "serde", serde(default))]
    pub api_version_check: ApiVersionCheck,
}

impl UpstreamSpec {
    /// An upstream at `url` with every option at its default.
    pub fn new(url: impl Into<String>) -> Self {
        UpstreamSpec {
            url: url.into(),
            path_prefix: None,
            library_prefix: false,
            api_version_check: ApiVersionCheck::Answer,
        }
    }
}

/// A rule as the user wrote it. Every criterion that is empty matches all
/// requests; the others must all match.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct RuleSpec {
    /// The rule's name, used in explanations and logs. Unique in a policy.
    pub name: String,
    /// Client networks (CIDR, or a single address), IPv4 or IPv6.
    #[cfg_attr(feature = "serde", serde(default))]
    pub clients: Vec<String>,
    /// Request kinds.
    #[cfg_attr(feature = "serde", serde(default))]
    pub kinds: Vec<RequestKind>,
    /// Repository name patterns: `foo/bar` matches `foo/bar` and everything
    /// below it (`foo/bar/baz`), but not `foo/barbaz`; a trailing `*` matches
    /// any name starting with the text before it (`foo/ba*`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub repositories: Vec<String>,
    /// Registry hosts the client asked for: the `ns` query parameter that
    /// containerd sends to mirrors, or else the `Host` header without its
    /// port. Matched without regard to case; `*.example.com` matches any
    /// subdomain of `example.com`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub hosts: Vec<String>,
    /// The upstream that serves matching requests.
    pub upstream: String,
}

impl RuleSpec {
    /// A rule that sends every request to `upstream`.
    pub fn new(name: impl Into<String>, upstream: impl Into<String>) -> Self {
        RuleSpec {
            name: name.into(),
            clients: Vec::new(),
            kinds: Vec::new(),
            repositories: Vec::new(),
            hosts: Vec::new(),
            upstream: upstream.into(),
        }
    }
}

/// One step of a [`FieldPath`]: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSegment {
    /// A key of a table, such as `upstreams` or `hub`.
    Key(String),
    /// An index into an array, counted from 0.
    Index(usize),
}

/// Where in a [`PolicySpec`] a value sits, such as `rules[2].clients[0]`.
///
/// Configuration front ends map it back to a line and column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<FieldSegment>);

impl FieldPath {
    fn key(mut self, key: &str) -> Self {
        self.0.push(FieldSegment::Key(key.to_owned()));
        self
    }

    fn index(mut self, index: usize) -> Self {
        self.0.push(FieldSegment::Index(index));
        self
    }

    fn root(key: &str) -> Self {
        FieldPath::default().key(key)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                FieldSegment::Key(key) if position == 0 => f.write_str(key)?,
                FieldSegment::Key(key) => write!(f, ".{key}")?,
                FieldSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// What is wrong with a policy specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// A rule names an upstream that does not exist.
    #[error(
        "rule \"{rule}\" names upstream \"{upstream}\", which is not defined (defined: {defined})"
    )]
    UndefinedRuleUpstream {
        /// The rule's name.
        rule: String,
        /// The name it uses.
        upstream: String,
        /// The defined upstream names, comma-separated.
        defined: String,
    },
    /// `default_upstream` names an upstream that does not exist.
    #[error("default_upstream \"{upstream}\" is not defined (defined: {defined})")]
    UndefinedDefaultUpstream {
        /// The name it uses.
        upstream: String,
        /// The defined upstream names, comma-separated.
        defined: String,
    },
    /// A network is neither a CIDR nor an IP address.
    #[error("\"{value}\" is not a CIDR or IP address (expected a form like 192.0.2.0/24 or 2001:db8::/32)")]
    InvalidNetwork {
        /// The text as written.
        value: String,
    },
    /// An upstream URL is not usable as the base of a redirect.
    #[error("upstream \"{upstream}\" has an invalid url \"{url}\": {reason}")]
    InvalidUpstreamUrl {
        /// The upstream's name.
        upstream: String,
        /// The URL as written.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An upstream's `path_prefix` is not a sequence of repository name components.
    #[error("upstream \"{upstream}\" has an invalid path_prefix \"{prefix}\" (expected repository name components such as k8s-artifacts-prod/images)")]
    InvalidPathPrefix {
        /// The upstream's name.
        upstream: String,
        /// The prefix as written.
        prefix: String,
    },
    /// An upstream name is empty or uses characters outside `[A-Za-z0-9_.-]`.
    #[error("upstream name \"{0}\" is invalid (expected letters, digits, '_', '.' or '-')")]
    InvalidUpstreamName(String),
    /// The redirect status is not a redirect.
    #[error("redirect_status {0} is not allowed (expected 301, 302, 303, 307 or 308)")]
    InvalidRedirectStatus(u16),
    /// Two rules share a name.
    #[error("rule name \"{0}\" is used by more than one rule")]
    DuplicateRuleName(String),
    /// A rule has an empty name.
    #[error("rule name is empty")]
    EmptyRuleName,
    /// A repository pattern cannot match any valid name.
    #[error("rule \"{rule}\" has an invalid repository pattern \"{pattern}\" (expected a repository name such as library/nginx, optionally ending in *)")]
    InvalidRepositoryPattern {
        /// The rule's name.
        rule: String,
        /// The pattern as written.
        pattern: String,
    },
    /// A host pattern is not a host name.
    #[error("rule \"{rule}\" has an invalid host \"{host}\" (expected a host name such as docker.io or *.example.com, without scheme or port)")]
    InvalidHost {
        /// The rule's name.
        rule: String,
        /// The host as written.
        host: String,
    },
}

/// One error in a policy specification, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct PolicyError {
    /// Where the offending value is.
    pub location: FieldPath,
    /// What is wrong.
    pub kind: PolicyErrorKind,
}

/// Every error found in a policy specification, in the order of the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, error) in self.0.iter().enumerate() {
            if position > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// An upstream, checked and ready to build `Location` values.
#[derive(Debug, Clone)]
pub struct Upstream {
    name: String,
    url: url::Url,
    /// `scheme://authority/base-path/v2/`, the start of every `Location`.
    v2_base: String,
    /// `path_prefix` with a trailing `/`, or empty.
    path_prefix: String,
    library_prefix: bool,
    api_version_check: ApiVersionCheck,
}

impl Upstream {
    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base URL, as parsed.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The start of every `Location` to this upstream, ending in `/v2/`.
    pub fn v2_base(&self) -> &str {
        &self.v2_base
    }

    /// The repository prefix inserted after `/v2/`, with a trailing `/`, or empty.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// Whether one-component names get `library/` in front.
    pub fn library_prefix(&self) -> bool {
        self.library_prefix
    }

    /// How the API version check is handled for this upstream.
    pub fn api_version_check(&self) -> ApiVersionCheck {
        self.api_version_check
    }

    /// The repository name as the upstream knows it, in two parts: the
    /// configured prefixes, then `name`.
    pub(crate) fn repository_prefix(&self, name: &str) -> (&str, &'static str) {
        let library = if self.library_prefix && !name.contains('/') {
            "library/"
        } else {
            ""
        };
        (&self.path_prefix, library)
    }
}

/// A repository name pattern of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RepositoryPattern {
    /// Matches the name and every name below it.
    Tree(String),
    /// Matches every name that starts with the text.
    Prefix(String),
}

impl RepositoryPattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            RepositoryPattern::Tree(root) => match name.strip_prefix(root.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
            RepositoryPattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

/// A host pattern of a rule, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => host.eq_ignore_ascii_case(exact),
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    index: usize,
    upstream: usize,
    has_clients: bool,
    clients: Vec<IpNet>,
    /// Bit set of [`RequestKind::bit`]; 0 matches every kind.
    kinds: u8,
    repositories: Vec<RepositoryPattern>,
    hosts: Vec<HostPattern>,
}

impl Rule {
    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's position in the policy, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The client networks the rule matches; empty matches every client.
    pub fn clients(&self) -> &[IpNet] {
        &self.clients
    }

    /// Returns whether the rule's criteria other than the client address
    /// match a request.
    pub(crate) fn matches_request(
        &self,
        kind: RequestKind,
        name: Option<&str>,
        host: Option<&str>,
    ) -> bool {
        if self.kinds != 0 && self.kinds & kind.bit() == 0 {
            return false;
        }
        if !self.repositories.is_empty() {
            let Some(name) = name else { return false };
            if !self
                .repositories
                .iter()
                .any(|pattern| pattern.matches(name))
            {
                return false;
            }
        }
        if !self.hosts.is_empty() {
            let Some(host) = host else { return false };
            if !self.hosts.iter().any(|pattern| pattern.matches(host)) {
                return false;
            }
        }
        true
    }

    pub(crate) fn has_clients(&self) -> bool {
        self.has_clients
    }
}

/// The set of rules whose client networks contain an address, as a bit set
/// indexed by rule position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleSet(Box<[u64]>);

impl RuleSet {
    fn single(rule: usize, rule_count: usize) -> Self {
        let mut words = vec![0u64; rule_count.div_ceil(64).max(1)];
        words[rule / 64] |= 1 << (rule % 64);
        RuleSet(words.into_boxed_slice())
    }

    fn union(&self, other: &RuleSet) -> RuleSet {
        let words = self
            .0
            .iter()
            .zip(other.0.iter())
            .map(|(a, b)| a | b)
            .collect();
        RuleSet(words)
    }

    pub(crate) fn contains(&self, rule: usize) -> bool {
        self.0
            .get(rule / 64)
            .is_some_and(|word| word & (1 << (rule % 64)) != 0)
    }
}

/// A checked policy, ready for [`crate::decide`].
#[derive(Debug, Clone)]
pub struct Policy {
    redirect_status: StatusCode,
    trusted_proxies: TrustedProxies,
    upstreams: Vec<Upstream>,
    default_upstream: usize,
    rules: Vec<Rule>,
    client_ranges: RangeTable<RuleSet>,
}

impl Policy {
    /// Checks a specification and compiles it, or returns every error found.
    pub fn compile(spec: &PolicySpec) -> Result<Policy, PolicyErrors> {
        let mut errors = Vec::new();

        let redirect_status = compile_redirect_status(spec.redirect_status, &mut errors);
        let trusted = compile_networks(
            &spec.trusted_proxies,
            FieldPath::root("trusted_proxies"),
            &mut errors,
        );

        let mut upstreams = Vec::with_capacity(spec.upstreams.len());
        for (name, upstream) in &spec.upstreams {
            if let Some(upstream) = compile_upstream(name, upstream, &mut errors) {
                upstreams.push(upstream);
            }
        }
        let defined = spec
            .upstreams
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let upstream_index = |name: &str| spec.upstreams.keys().position(|key| key == name);

        let default_upstream = upstream_index(&spec.default_upstream);
        if default_upstream.is_none() {
            errors.push(PolicyError {
                location: FieldPath::root("default_upstream"),
                kind: PolicyErrorKind::UndefinedDefaultUpstream {
                    upstream: spec.default_upstream.clone(),
                    defined: defined.clone(),
                },
            });
        }

        let mut rules = Vec::with_capacity(spec.rules.len());
        let mut range_entries = Vec::new();
        for (index, rule) in spec.rules.iter().enumerate() {
            let location = FieldPath::root("rules").index(index);
            if rule.name.is_empty() {
                errors.push(PolicyError {
                    location: location.clone().key("name"),
                    kind: PolicyErrorKind::EmptyRuleName,
                });
            } else if spec.rules[..index]
                .iter()
                .any(|earlier| earlier.name == rule.name)
            {
                errors.push(PolicyError {
                    location: location.clone().key("name"),
                    kind: PolicyErrorKind::DuplicateRuleName(rule.name.clone()),
                });
            }

            let upstream = upstream_index(&rule.upstream);
            if upstream.is_none() {
                errors.push(PolicyError {
                    location: location.clone().key("upstream"),
                    kind: PolicyErrorKind::UndefinedRuleUpstream {
                        rule: rule.name.clone(),
                        upstream: rule.upstream.clone(),
                        defined: defined.clone(),
                    },
                });
            }

            let clients =
                compile_networks(&rule.clients, location.clone().key("clients"), &mut errors);
            for net in &clients {
                range_entries.push((*net, RuleSet::single(index, spec.rules.len())));
            }
            let repositories = compile_repositories(rule, &location, &mut errors);
            let hosts = compile_hosts(rule, &location, &mut errors);

            rules.push(Rule {
                name: rule.name.clone(),
                index,
                upstream: upstream.unwrap_or(0),
                has_clients: !rule.clients.is_empty(),
                clients,
                kinds: rule.kinds.iter().fold(0, |bits, kind| bits | kind.bit()),
                repositories,
                hosts,
            });
        }

        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        Ok(Policy {
            redirect_status,
            trusted_proxies: TrustedProxies::new(trusted),
            upstreams,
            default_upstream: default_upstream.unwrap_or(0),
            rules,
            client_ranges: RangeTable::build(range_entries, RuleSet::union),
        })
    }

    /// The status used for redirects.
    pub fn redirect_status(&self) -> StatusCode {
        self.redirect_status
    }

    /// The proxies whose forwarding headers are believed.
    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.trusted_proxies
    }

    /// The upstreams, sorted by name.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// Finds an upstream by name.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|upstream| upstream.name == name)
    }

    /// The upstream for requests that no rule matches.
    pub fn default_upstream(&self) -> &Upstream {
        &self.upstreams[self.default_upstream]
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The upstream a rule sends to.
    pub fn rule_upstream(&self, rule: &Rule) -> &Upstream {
        &self.upstreams[rule.upstream]
    }

    /// Finds the first rule matching a request, given its client address.
    pub(crate) fn match_rule(
        &self,
        client: Option<IpAddr>,
        kind: RequestKind,
        name: Option<&str>,
        host: Option<&str>,
    ) -> Option<&Rule> {
        // One longest-prefix lookup finds every rule whose networks contain the client.
        let client_rules = client.and_then(|addr| self.client_ranges.lookup(addr));
        self.rules.iter().find(|rule| {
            if rule.has_clients() && !client_rules.is_some_and(|set| set.contains(rule.index)) {
                return false;
            }
            rule.matches_request(kind, name, host)
        })
    }
}

fn compile_redirect_status(status: Option<u16>, errors: &mut Vec<PolicyError>) -> StatusCode {
    let code = status.unwrap_or(DEFAULT_REDIRECT_STATUS);
    match code {
        301 | 302 | 303 | 307 | 308 => {
            StatusCode::from_u16(code).unwrap_or(StatusCode::TEMPORARY_REDIRECT)
        }
        _ => {
            errors.push(PolicyError {
                location: FieldPath::root("redirect_status"),
                kind: PolicyErrorKind::InvalidRedirectStatus(code),
            });
            StatusCode::TEMPORARY_REDIRECT
        }
    }
}

/// Parses networks written as CIDRs or single addresses.
fn compile_networks(
    values: &[String],
    location: FieldPath,
    errors: &mut Vec<PolicyError>,
) -> Vec<IpNet> {
    let mut networks = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        match parse_network(value) {
            Some(net) => networks.push(net),
            None => errors.push(PolicyError {
                location: location.clone().index(index),
                kind: PolicyErrorKind::InvalidNetwork {
                    value: value.clone(),
                },
            }),
        }
    }
    networks
}

/// Parses `192.0.2.0/24`, `2001:db8::/32`, or a single address. Host bits
/// are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

fn compile_upstream(
    name: &str,
    spec: &UpstreamSpec,
    errors: &mut Vec<PolicyError>,
) -> Option<Upstream> {
    let location = FieldPath::root("upstreams").key(name);
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !name_ok {
        errors.push(PolicyError {
            location: location.clone(),
            kind: PolicyErrorKind::InvalidUpstreamName(name.to_owned()),
        });
    }

    let url_error = |reason: &str| PolicyError {
        location: location.clone().key("url"),
        kind: PolicyErrorKind::InvalidUpstreamUrl {
            upstream: name.to_owned(),
            url: spec.url.clone(),
            reason: reason.to_owned(),
        },
    };
    let v2_base = match url::Url::parse(&spec.url) {
        Ok(url) => match redirect_base(&url) {
            Ok(base) => Some((url, base)),
            Err(reason) => {
                errors.push(url_error(reason));
                None
            }
        },
        Err(error) => {
            errors.push(url_error(&error.to_string()));
            None
        }
    };

    let path_prefix = match spec
        .path_prefix
        .as_deref()
        .map(|prefix| prefix.trim_matches('/'))
    {
        None | Some("") => String::new(),
        Some(prefix) => {
            if validate_name(prefix).is_err() {
                errors.push(PolicyError {
                    location: location.clone().key("path_prefix"),
                    kind: PolicyErrorKind::InvalidPathPrefix {
                        upstream: name.to_owned(),
                        prefix: spec.path_prefix.clone().unwrap_or_default(),
                    },
                });
            }
            format!("{prefix}/")
        }
    };

    let (url, v2_base) = v2_base?;
    Some(Upstream {
        name: name.to_owned(),
        url,
        v2_base,
        path_prefix,
        library_prefix: spec.library_prefix,
        api_version_check: spec.api_version_check,
    })
}

/// Builds `scheme://authority/path/v2/` from an upstream URL, or says why the
/// URL cannot be the start of a redirect.
fn redirect_base(url: &url::Url) -> Result<String, &'static str> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("a host is required");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL would be sent to every client; remove them");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a query or fragment cannot be part of a registry base URL");
    }
    let path = url.path().trim_end_matches('/');
    if path.ends_with("/v2") {
        return Err("the path must not end in /v2, which is added to every redirect");
    }
    // `origin()` omits the default port and brackets IPv6 hosts.
    Ok(format!(
        "{}{}/v2/",
        url.origin().ascii_serialization(),
        path
    ))
}

fn compile_repositories(
    rule: &RuleSpec,
    location: &FieldPath,
    errors: &mut Vec<PolicyError>,
) -> Vec<RepositoryPattern> {
    let mut patterns = Vec::with_capacity(rule.repositories.len());
    for (index, pattern) in rule.repositories.iter().enumerate() {
        let compiled = match pattern.strip_suffix('*') {
            Some(prefix) if is_name_prefix(prefix) => {
                Some(RepositoryPattern::Prefix(prefix.to_owned()))
            }
            Some(_) => None,
            None => {
                let root = pattern.trim_end_matches('/');
                validate_name(root)
                    .ok()
                    .map(|()| RepositoryPattern::Tree(root.to_owned()))
            }
        };
        match compiled {
            Some(compiled) => patterns.push(compiled),
            None => errors.push(PolicyError {
                location: location.clone().key("repositories").index(index),
                kind: PolicyErrorKind::InvalidRepositoryPattern {
                    rule: rule.name.clone(),
                    pattern: pattern.clone(),
                },
            }),
        }
    }
    patterns
}

/// Returns whether `prefix` uses only characters that repository names use.
fn is_name_prefix(prefix: &str) -> bool {
    prefix.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'/')
    })
}

fn compile_hosts(
    rule: &RuleSpec,
    location: &FieldPath,
    errors: &mut Vec<PolicyError>,
) -> Vec<HostPattern> {
    let mut patterns = Vec::with_capacity(rule.hosts.len());
    for (index, host) in rule.hosts.iter().enumerate() {
        let lower = host.to_ascii_lowercase();
        let compiled = match lower.strip_prefix("*.") {
            Some(domain) if is_host_name(domain) => {
                Some(HostPattern::Subdomains(format!(".{domain}")))
            }
            Some(_) => None,
            None if is_host_name(&lower) => Some(HostPattern::Exact(lower)),
            None => None,
        };
        match compiled {
            Some(compiled) => patterns.push(compiled),
            None => errors.push(PolicyError {
                location: location.clone().key("hosts").index(index),
                kind: PolicyErrorKind::InvalidHost {
                    rule: rule.name.clone(),
                    host: host.clone(),
                },
            }),
        }
    }
    patterns
}

/// Returns whether `host` is a DNS name or an IP address, without port.
fn is_host_name(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_spec() -> PolicySpec {
        let mut spec = PolicySpec::new("k8s");
        spec.upstreams
            .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
        spec.upstreams.insert(
            "hub".into(),
            UpstreamSpec::new("https://registry-1.docker.io"),
        );
        spec
    }

    fn only_error(spec: &PolicySpec) -> PolicyError {
        let errors = Policy::compile(spec).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.into_iter().next().unwrap()
    }

    #[test]
    fn undefined_rule_upstream() {
        let mut spec = base_spec();
        spec.rules.push(RuleSpec::new("lab", "hub2"));
        let error = only_error(&spec);
        assert_eq!(error.location.to_string(), "rules[0].upstream");
        assert_eq!(
            error.kind.to_string(),
            "rule \"lab\" names upstream \"hub2\", which is not defined (defined: hub, k8s)"
        );
    }

    #[test]
    fn undefined_default_upstream() {
        let mut spec = base_spec();
        spec.default_upstream = "nowhere".into();
        let error = only_error(&spec);
        assert_eq!(error.location.to_string(), "default_upstream");
        assert!(matches!(
            error.kind,
            PolicyErrorKind::UndefinedDefaultUpstream { .. }
        ));
    }

    #[test]
    fn invalid_networks() {
        let mut spec = base_spec();
        spec.rules.push(RuleSpec {
            clients: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()],
            ..RuleSpec::new("lab", "hub")
        });
        spec.trusted_proxies = vec!["proxy.example".into()];
        let errors = Policy::compile(&spec).unwrap_err().0;
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].location.to_string(), "trusted_proxies[0]");
        assert_eq!(errors[1].location.to_string(), "rules[0].clients[1]");
        assert_eq!(
            errors[1].kind.to_string(),
            "\"10.0.0.0/33\" is not a CIDR or IP address (expected a form like 192.0.2.0/24 or 2001:db8::/32)"
        );
    }

    #[test]
    fn single_addresses_are_networks() {
        assert_eq!(
            parse_network("192.0.2.1"),
            Some("192.0.2.1/32".parse().unwrap())
        );
        assert_eq!(
            parse_network("2001:db8::1"),
            Some("2001:db8::1/128".parse().unwrap())
        );
        assert_eq!(
            parse_network("10.1.2.3/8"),
            Some("10.0.0.0/8".parse().unwrap())
        );
    }

    #[test]
    fn invalid_upstream_urls() {
        for (url, reason) in [
            ("ftp://example.com", "the scheme must be http or https"),
            ("https://user:pw@example.com", "credentials"),
            ("https://example.com/?x=1", "query"),
            ("https://example.com/#x", "query or fragment"),
            ("https://example.com/v2", "must not end in /v2"),
            ("not a url", "relative URL"),
        ] {
            let mut spec = base_spec();
            spec.upstreams.get_mut("hub").unwrap().url = url.into();
            let error = only_error(&spec);
            assert_eq!(error.location.to_string(), "upstreams.hub.url", "{url}");
            assert!(
                error.kind.to_string().contains(reason),
                "{url}: {}",
                error.kind
            );
        }
    }

    #[test]
    fn upstream_base_keeps_path_and_port() {
        let mut spec = base_spec();
        spec.upstreams
            .insert("m".into(), UpstreamSpec::new("http://[::1]:5000/registry/"));
        spec.upstreams
            .insert("n".into(), UpstreamSpec::new("https://Mirror.Example:443"));
        let policy = Policy::compile(&spec).unwrap();
        assert_eq!(
            policy.upstream("m").unwrap().v2_base(),
            "http://[::1]:5000/registry/v2/"
        );
        assert_eq!(
            policy.upstream("n").unwrap().v2_base(),
            "https://mirror.example/v2/"
        );
    }

    #[test]
    fn invalid_path_prefix() {
        let mut spec = base_spec();
        spec.upstreams.get_mut("k8s").unwrap().path_prefix = Some("Bad/../x".into());
        let error = only_error(&spec);
        assert_eq!(error.location.to_string(), "upstreams.k8s.path_prefix");
    }

    #[test]
    fn path_prefix_slashes_are_trimmed() {
        let mut spec = base_spec();
        spec.upstreams.get_mut("k8s").unwrap().path_prefix =
            Some("/k8s-artifacts-prod/images/".into());
        let policy = Policy::compile(&spec).unwrap();
        assert_eq!(
            policy.upstream("k8s").unwrap().path_prefix(),
            "k8s-artifacts-prod/images/"
        );
    }

    #[test]
    fn invalid_redirect_status() {
        let mut spec = base_spec();
        spec.redirect_status = Some(200);
        let error = only_error(&spec);
        assert_eq!(error.kind, PolicyErrorKind::InvalidRedirectStatus(200));
    }

    #[test]
    fn redirect_status_default_and_allowed() {
        let policy = Policy::compile(&base_spec()).unwrap();
        assert_eq!(policy.redirect_status(), StatusCode::TEMPORARY_REDIRECT);
        for code in [301, 302, 303, 307, 308] {
            let mut spec = base_spec();
            spec.redirect_status = Some(code);
            assert_eq!(
                Policy::compile(&spec).unwrap().redirect_status().as_u16(),
                code
            );
        }
    }

    #[test]
    fn duplicate_and_empty_rule_names() {
        let mut spec = base_spec();
        spec.rules.push(RuleSpec::new("a", "hub"));
        spec.rules.push(RuleSpec::new("a", "hub"));
        spec.rules.push(RuleSpec::new("", "hub"));
        let errors = Policy::compile(&spec).unwrap_err().0;
        assert_eq!(
            errors[0].kind,
            PolicyErrorKind::DuplicateRuleName("a".into())
        );
        assert_eq!(errors[0].location.to_string(), "rules[1].name");
        assert_eq!(errors[1].kind, PolicyErrorKind::EmptyRuleName);
    }

    #[test]
    fn invalid_upstream_name() {
        let mut spec = base_spec();
        spec.upstreams
            .insert("bad name".into(), UpstreamSpec::new("https://x.example"));
        let error = only_error(&spec);
        assert_eq!(
            error.kind,
            PolicyErrorKind::InvalidUpstreamName("bad name".into())
        );
    }

    #[test]
    fn repository_patterns() {
        let tree = RepositoryPattern::Tree("foo/bar".into());
        assert!(tree.matches("foo/bar"));
        assert!(tree.matches("foo/bar/baz"));
        assert!(!tree.matches("foo/barbaz"));
        assert!(!tree.matches("foo"));
        let prefix = RepositoryPattern::Prefix("foo/ba".into());
        assert!(prefix.matches("foo/barbaz"));
        assert!(!prefix.matches("foo/c"));

        let mut spec = base_spec();
        spec.rules.push(RuleSpec {
            repositories: vec![
                "library/nginx".into(),
                "kube*".into(),
                "Bad".into(),
                "a%2f*".into(),
            ],
            ..RuleSpec::new("r", "hub")
        });
        let errors = Policy::compile(&spec).unwrap_err().0;
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].location.to_string(), "rules[0].repositories[2]");
        assert_eq!(errors[1].location.to_string(), "rules[0].repositories[3]");
    }

    #[test]
    fn host_patterns() {
        let exact = HostPattern::Exact("docker.io".into());
        assert!(exact.matches("Docker.IO"));
        assert!(!exact.matches("xdocker.io"));
        let sub = HostPattern::Subdomains(".example.com".into());
        assert!(sub.matches("a.example.com"));
        assert!(sub.matches("a.b.Example.com"));
        assert!(!sub.matches("example.com"));
        assert!(!sub.matches("badexample.com"));

        let mut spec = base_spec();
        spec.rules.push(RuleSpec {
            hosts: vec![
                "docker.io".into(),
                "*.example.com".into(),
                "https://x".into(),
                "h:5000".into(),
            ],
            ..RuleSpec::new("r", "hub")
        });
        let errors = Policy::compile(&spec).unwrap_err().0;
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].location.to_string(), "rules[0].hosts[2]");
    }

    #[test]
    fn every_error_is_reported() {
        let mut spec = base_spec();
        spec.redirect_status = Some(404);
        spec.default_upstream = "x".into();
        spec.rules.push(RuleSpec {
            clients: vec!["bad".into()],
            ..RuleSpec::new("lab", "y")
        });
        let errors = Policy::compile(&spec).unwrap_err();
        assert_eq!(errors.0.len(), 4);
        assert_eq!(errors.to_string().lines().count(), 4);
    }

    #[test]
    fn rule_sets_union() {
        let a = RuleSet::single(1, 130);
        let b = RuleSet::single(129, 130);
        let both = a.union(&b);
        assert!(both.contains(1));
        assert!(both.contains(129));
        assert!(!both.contains(2));
        assert!(!both.contains(500));
    }
}
