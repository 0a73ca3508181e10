//! The policy as the user writes it: [`PolicySpec`] with its upstreams and
//! rules, and the errors [`crate::Policy::compile`] reports about it.

use std::collections::BTreeMap;
use std::fmt;

pub use crate::client::ForwardedHeader;
use crate::path::RequestKind;
use crate::policy::resolve::{CredentialsSpec, UpstreamAuth};

/// The redirect status used when the policy names none.
pub const DEFAULT_REDIRECT_STATUS: u16 = 307;

/// A policy as the user wrote it. [`crate::Policy::compile`] checks it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct PolicySpec {
    /// The status of redirects: 301, 302, 303, 307 or 308 (default 307).
    #[cfg_attr(feature = "serde", serde(default))]
    pub redirect_status: Option<u16>,
    /// Networks (CIDR, or a single address) whose forwarding header is believed.
    #[cfg_attr(feature = "serde", serde(default))]
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies write, and the only one read:
    /// `x-forwarded-for` (default), `forwarded` or `x-real-ip`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub forwarded_header: ForwardedHeader,
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
    /// Creates an empty policy whose default upstream is `default_upstream`.
    pub fn new(default_upstream: impl Into<String>) -> Self {
        PolicySpec {
            redirect_status: None,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            default_upstream: default_upstream.into(),
            upstreams: BTreeMap::new(),
            rules: Vec::new(),
        }
    }
}

/// The handling of the API version check (`GET /v2/`) for an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ApiVersionCheck {
    /// Respond `200 OK` with `Docker-Distribution-Api-Version: registry/2.0`.
    /// Suits anonymous upstreams, because the client never gets a challenge.
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
    /// Returns the name used in configuration files: `answer` or `redirect`.
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
    /// `https://mirror.example/registry/v2/...`. A `{region}` in the URL
    /// makes it a template for regional mirrors, filled with the client's
    /// region. Empty when `region_urls` lists every mirror.
    #[cfg_attr(feature = "serde", serde(default))]
    pub url: String,
    /// Repository components inserted after `/v2/`, such as
    /// `k8s-artifacts-prod/images`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub path_prefix: Option<String>,
    /// Whether one-component names get Docker Hub's `library/` in front
    /// (`nginx` becomes `library/nginx`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub library_prefix: bool,
    /// The handling of the API version check when this upstream is chosen.
    #[cfg_attr(feature = "serde", serde(default))]
    pub api_version_check: ApiVersionCheck,
    /// Whether this is a registry or a blob store that serves only blobs.
    #[cfg_attr(feature = "serde", serde(default))]
    pub kind: UpstreamKind,
    /// For a blob store: the path of a blob below the base URL, with
    /// `{digest}` where the digest goes. Default `/containers/images/{digest}`,
    /// the layout of the registry.k8s.io blob buckets.
    #[cfg_attr(feature = "serde", serde(default))]
    pub blob_path: Option<String>,
    /// The regions a `{region}` template in `url` serves. Empty means every
    /// region whose name is a valid host name label.
    #[cfg_attr(feature = "serde", serde(default))]
    pub regions: Vec<String>,
    /// Base URLs by region, for mirrors whose URLs follow no template.
    #[cfg_attr(feature = "serde", serde(default))]
    pub region_urls: BTreeMap<String, String>,
    /// For a client region, the regions to try next, in order, such as
    /// `"eu-north-1" = ["eu-west-1"]`. The key `*` applies to every region.
    #[cfg_attr(feature = "serde", serde(default))]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Whether a server checks with `HEAD` that a blob exists here before
    /// redirecting to it, and otherwise tries the next candidate.
    #[cfg_attr(feature = "serde", serde(default))]
    pub verify_blobs: bool,
    /// Periodic `GET /v2/` probes; an upstream that fails them is skipped.
    #[cfg_attr(feature = "serde", serde(default))]
    pub health_check: Option<HealthCheckSpec>,
    /// Whether clients are redirected (`none`, the default) or a server
    /// fetches from the upstream with a token itself (`resolve`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub auth: UpstreamAuth,
    /// In resolve mode: whether a blob that the upstream serves itself,
    /// instead of redirecting to storage, is streamed through the server.
    #[cfg_attr(feature = "serde", serde(default))]
    pub blob_proxy: bool,
    /// In resolve mode: seconds that documents fetched by tag stay cached
    /// (default 30; 0 turns caching of them off).
    #[cfg_attr(feature = "serde", serde(default))]
    pub tag_ttl_seconds: Option<u64>,
    /// In resolve mode: the credentials for the token endpoint; anonymous
    /// without them.
    #[cfg_attr(feature = "serde", serde(default))]
    pub credentials: Option<CredentialsSpec>,
}

/// What an upstream serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum UpstreamKind {
    /// An OCI distribution registry: every request kind, at `/v2/...`.
    #[default]
    Registry,
    /// Blob storage: only blob requests, at the upstream's `blob_path`.
    /// Manifests, tag lists and referrers go to a registry upstream.
    BlobStore,
}

/// Settings of the periodic health probe of an upstream. The core only
/// carries them: servers run the probes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct HealthCheckSpec {
    /// Seconds between probes.
    #[cfg_attr(feature = "serde", serde(default = "default_health_interval"))]
    pub interval_seconds: u64,
    /// Milliseconds a probe may take before it counts as failed.
    #[cfg_attr(feature = "serde", serde(default = "default_health_timeout"))]
    pub timeout_ms: u64,
    /// Consecutive failures after which the upstream is skipped, until a
    /// probe passes again.
    #[cfg_attr(feature = "serde", serde(default = "default_unhealthy_after"))]
    pub unhealthy_after: u32,
    /// The path probed: `/v2/` below the base URL for registries. Blob
    /// stores have no `/v2/`, so for them give a path that returns 2xx or
    /// 404 when the store is up, such as `/`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub path: Option<String>,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        HealthCheckSpec {
            interval_seconds: default_health_interval(),
            timeout_ms: default_health_timeout(),
            unhealthy_after: default_unhealthy_after(),
            path: None,
        }
    }
}

fn default_health_interval() -> u64 {
    10
}

fn default_health_timeout() -> u64 {
    2000
}

fn default_unhealthy_after() -> u32 {
    3
}

impl UpstreamSpec {
    /// Creates an upstream at `url` with every option at its default.
    pub fn new(url: impl Into<String>) -> Self {
        UpstreamSpec {
            url: url.into(),
            path_prefix: None,
            library_prefix: false,
            api_version_check: ApiVersionCheck::Answer,
            kind: UpstreamKind::Registry,
            blob_path: None,
            regions: Vec::new(),
            region_urls: BTreeMap::new(),
            fallbacks: BTreeMap::new(),
            verify_blobs: false,
            health_check: None,
            auth: UpstreamAuth::None,
            blob_proxy: false,
            tag_ttl_seconds: None,
            credentials: None,
        }
    }
}

/// A rule as the user wrote it. Every criterion that is empty matches all
/// requests; the others must all match.
#[derive(Debug, Clone, PartialEq)]
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
    /// port. Matched without regard to case or to the final dot of a fully
    /// qualified name. `*.example.com` matches any subdomain of
    /// `example.com`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub hosts: Vec<String>,
    /// Clouds of the client's address range, as labelled by the loaded
    /// range files (`aws`, `gcp`, `azure`, or a name given to a file).
    #[cfg_attr(feature = "serde", serde(default))]
    pub clouds: Vec<String>,
    /// Regions of the client's address range, such as `eu-west-1`; a
    /// trailing `*` matches any region starting with the text before it.
    #[cfg_attr(feature = "serde", serde(default))]
    pub regions: Vec<String>,
    /// The upstream that serves matching requests.
    pub upstream: String,
    /// A share of clients sent to another upstream instead.
    #[cfg_attr(feature = "serde", serde(default))]
    pub canary: Option<CanarySpec>,
}

/// A share of a rule's clients sent to another upstream.
///
/// Which clients are in the share is stable: it depends on a hash of the
/// client address and the repository name, so a client pulling an image
/// stays on one side for all of its layers.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct CanarySpec {
    /// The upstream that serves the share.
    pub upstream: String,
    /// The share, in percent from 0 to 100, with up to two decimals.
    pub percent: f64,
}

impl RuleSpec {
    /// Creates a rule that sends every request to `upstream`.
    pub fn new(name: impl Into<String>, upstream: impl Into<String>) -> Self {
        RuleSpec {
            name: name.into(),
            clients: Vec::new(),
            kinds: Vec::new(),
            repositories: Vec::new(),
            hosts: Vec::new(),
            clouds: Vec::new(),
            regions: Vec::new(),
            upstream: upstream.into(),
            canary: None,
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
    pub(crate) fn key(mut self, key: &str) -> Self {
        self.0.push(FieldSegment::Key(key.to_owned()));
        self
    }

    pub(crate) fn index(mut self, index: usize) -> Self {
        self.0.push(FieldSegment::Index(index));
        self
    }

    pub(crate) fn root(key: &str) -> Self {
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
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
        /// The defined upstream names, comma-separated, or what to add when
        /// there are none.
        defined: String,
    },
    /// `default_upstream` names an upstream that does not exist.
    #[error("default_upstream \"{upstream}\" is not defined (defined: {defined})")]
    UndefinedDefaultUpstream {
        /// The name it uses.
        upstream: String,
        /// The defined upstream names, comma-separated, or what to add when
        /// there are none.
        defined: String,
    },
    /// A network is neither a CIDR nor an IP address.
    #[error("\"{value}\" is not a CIDR or IP address (expected a form like 192.0.2.0/24 or 2001:db8::/32, with no leading zeros in IPv4 numbers or prefix lengths)")]
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
    /// A rule name contains control characters, which would break log
    /// lines, summaries and metric labels.
    #[error("rule name {0:?} contains control characters (expected printable text)")]
    ControlCharacterInRuleName(String),
    /// A repository pattern cannot match any valid name.
    #[error("rule \"{rule}\" has an invalid repository pattern \"{pattern}\" (expected a repository name such as library/nginx, optionally ending in *)")]
    InvalidRepositoryPattern {
        /// The rule's name.
        rule: String,
        /// The pattern as written.
        pattern: String,
    },
    /// A `{region}` template, region table or blob path cannot build URLs.
    #[error("upstream \"{upstream}\" has an invalid {field}: {reason}")]
    InvalidRegionalUpstream {
        /// The upstream's name.
        upstream: String,
        /// The key, such as `blob_path` or `region_urls`.
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The default upstream cannot serve every request.
    #[error("default_upstream \"{upstream}\" must be a registry with a url that has no {{region}} template, because it serves every request that no rule or mirror takes")]
    InvalidDefaultUpstream {
        /// The upstream's name.
        upstream: String,
    },
    /// A canary share is outside 0 to 100.
    #[error("rule \"{rule}\" has canary percent {percent} (expected a number from 0 to 100)")]
    InvalidCanaryPercent {
        /// The rule's name.
        rule: String,
        /// The share as written.
        percent: f64,
    },
    /// A region pattern is empty or uses characters outside `[A-Za-z0-9_.-]`.
    #[error("rule \"{rule}\" has an invalid region \"{region}\" (expected a region name such as eu-west-1, optionally ending in *)")]
    InvalidRegion {
        /// The rule's name.
        rule: String,
        /// The region as written.
        region: String,
    },
    /// A health check setting is zero.
    #[error("upstream \"{upstream}\" has health_check.{field} = 0 (expected a positive number)")]
    InvalidHealthCheck {
        /// The upstream's name.
        upstream: String,
        /// The setting.
        field: &'static str,
    },
    /// A resolve-mode setting conflicts with another setting of the
    /// upstream, or is missing.
    #[error("upstream \"{upstream}\" has an invalid {field}: {reason}")]
    InvalidResolveUpstream {
        /// The upstream's name.
        upstream: String,
        /// The key, such as `auth` or `credentials.password_file`.
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A host pattern is not a host name.
    #[error("rule \"{rule}\" has an invalid host \"{host}\" (expected a host name such as docker.io or *.example.com, or an IP address such as 192.0.2.1 or ::1 without brackets, with no scheme or port)")]
    InvalidHost {
        /// The rule's name.
        rule: String,
        /// The host as written.
        host: String,
    },
}

/// One error in a policy specification, with where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct PolicyError {
    /// Where the offending value is.
    pub location: FieldPath,
    /// What is wrong.
    pub kind: PolicyErrorKind,
}

/// Every error found in a policy specification, in the order of the fields.
#[derive(Debug, Clone, PartialEq)]
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
