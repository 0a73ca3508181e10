//! Upstreams and rules: the policy as written ([`PolicySpec`]) and compiled
//! ([`Policy`]).
//!
//! A policy names its **upstreams** (registries, regional mirrors and blob
//! stores to redirect to) and an ordered list of **rules**. A rule matches on
//! any combination of client address ranges, the cloud and region of the
//! client's range, request kinds, repository names and the registry host the
//! client asked for. An empty criterion matches everything. The first
//! matching rule picks the upstream, and when none matches, the default
//! upstream serves.
//!
//! Client ranges labelled with a cloud and region come from range files
//! (see [`crate::sources`]) and are given to [`Policy::compile_with_labels`]
//! or [`Policy::compile_with_ranges`].
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

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;

use http::StatusCode;
use ipnet::IpNet;

use crate::client::TrustedProxies;
use crate::path::RequestKind;
use crate::ranges::RangeTable;

pub mod resolve;
mod rule;
mod spec;
mod upstream;

pub use resolve::{
    Credentials, CredentialsSpec, Password, ResolveSettings, UpstreamAuth, DEFAULT_TAG_TTL,
};
pub use rule::{ClientLabel, Rule};
pub use spec::{
    ApiVersionCheck, CanarySpec, FieldPath, FieldSegment, ForwardedHeader, HealthCheckSpec,
    PolicyError, PolicyErrorKind, PolicyErrors, PolicySpec, RuleSpec, UpstreamKind, UpstreamSpec,
    DEFAULT_REDIRECT_STATUS,
};
pub use upstream::{Upstream, DEFAULT_BLOB_PATH};

pub(crate) use rule::canary_bucket;
use rule::{
    combine_classes, compile_hosts, compile_regions, compile_repositories, set_contains, Canary,
    ClientClass, RuleSets, NONE,
};

impl ClientLabel {
    /// Creates a label. An empty cloud or region counts as none.
    pub fn new(cloud: Option<&str>, region: Option<&str>) -> Self {
        ClientLabel {
            cloud: cloud.filter(|cloud| !cloud.is_empty()).map(str::to_owned),
            region: region
                .filter(|region| !region.is_empty())
                .map(str::to_owned),
        }
    }
}

/// The result of one lookup in the client table for a client.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientClassification<'p> {
    /// The rules whose networks contain the client, as a bit set.
    pub(crate) rules: Option<&'p [u64]>,
    /// The index of the client's label in the policy's labels.
    pub(crate) label_id: Option<u32>,
    pub(crate) label: Option<&'p ClientLabel>,
}

/// A checked policy, ready for [`crate::decide`].
#[derive(Debug, Clone)]
pub struct Policy {
    redirect_status: StatusCode,
    trusted_proxies: TrustedProxies,
    upstreams: Vec<Upstream>,
    default_upstream: usize,
    rules: Vec<Rule>,
    /// Rule networks and labelled ranges in one longest-prefix table.
    client_table: RangeTable<ClientClass>,
    rule_sets: Vec<Box<[u64]>>,
    labels: Vec<ClientLabel>,
    labelled_prefixes: usize,
    /// Whether some rule matches on the requested host, which is otherwise
    /// not worked out.
    matches_hosts: bool,
}

impl Policy {
    /// Checks a specification and compiles it, or returns every error found.
    pub fn compile(spec: &PolicySpec) -> Result<Policy, PolicyErrors> {
        Self::compile_with_labels(spec, Vec::new(), &[])
    }

    /// Compiles a specification with client ranges read from range files,
    /// so that rules can match on the client's cloud and region.
    #[cfg(feature = "cloud-ranges")]
    pub fn compile_with_ranges(
        spec: &PolicySpec,
        ranges: &crate::sources::LabeledRanges,
    ) -> Result<Policy, PolicyErrors> {
        let labels = ranges
            .labels()
            .iter()
            .map(|label| ClientLabel::new(label.cloud(), label.region()))
            .collect();
        let prefixes: Vec<(IpNet, u32)> = ranges
            .entries()
            .iter()
            .map(|entry| (entry.prefix, entry.label))
            .collect();
        Self::compile_with_labels(spec, labels, &prefixes)
    }

    /// Compiles a specification with labelled client ranges: `prefixes`
    /// pairs each range with an index into `labels`. The most specific
    /// range containing a client gives its label; indexes out of range are
    /// ignored.
    pub fn compile_with_labels(
        spec: &PolicySpec,
        labels: Vec<ClientLabel>,
        prefixes: &[(IpNet, u32)],
    ) -> Result<Policy, PolicyErrors> {
        let mut errors = Vec::new();

        let redirect_status = compile_redirect_status(spec.redirect_status, &mut errors);
        let trusted = compile_networks(
            &spec.trusted_proxies,
            FieldPath::root("trusted_proxies"),
            &mut errors,
        );

        let mut known_regions: BTreeSet<&str> =
            labels.iter().filter_map(ClientLabel::region).collect();
        for upstream in spec.upstreams.values() {
            for (region, fallbacks) in &upstream.fallbacks {
                known_regions.insert(region);
                known_regions.extend(fallbacks.iter().map(String::as_str));
            }
        }
        let mut upstreams = Vec::with_capacity(spec.upstreams.len());
        for (name, upstream) in &spec.upstreams {
            if let Some(upstream) =
                upstream::compile_upstream(name, upstream, &known_regions, &mut errors)
            {
                upstreams.push(upstream);
            }
        }
        let defined = if spec.upstreams.is_empty() {
            "none; add an [upstreams.NAME] table with a url".to_owned()
        } else {
            spec.upstreams
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let upstream_index = |name: &str| spec.upstreams.keys().position(|key| key == name);

        let default_upstream = upstream_index(&spec.default_upstream);
        match default_upstream {
            None => errors.push(PolicyError {
                location: FieldPath::root("default_upstream"),
                kind: PolicyErrorKind::UndefinedDefaultUpstream {
                    upstream: spec.default_upstream.clone(),
                    defined: defined.clone(),
                },
            }),
            Some(_) => {
                let usable = spec
                    .upstreams
                    .get(&spec.default_upstream)
                    .is_some_and(|upstream| {
                        upstream.kind == UpstreamKind::Registry
                            && !upstream.url.is_empty()
                            && !upstream.url.contains("{region}")
                    });
                if !usable {
                    errors.push(PolicyError {
                        location: FieldPath::root("default_upstream"),
                        kind: PolicyErrorKind::InvalidDefaultUpstream {
                            upstream: spec.default_upstream.clone(),
                        },
                    });
                }
            }
        }

        let rule_sets = RefCell::new(RuleSets::new(spec.rules.len()));
        let mut rules = Vec::with_capacity(spec.rules.len());
        let mut table_entries = Vec::new();
        for (index, rule) in spec.rules.iter().enumerate() {
            let location = FieldPath::root("rules").index(index);
            if rule.name.is_empty() {
                errors.push(PolicyError {
                    location: location.clone().key("name"),
                    kind: PolicyErrorKind::EmptyRuleName,
                });
            } else if rule.name.chars().any(char::is_control) {
                errors.push(PolicyError {
                    location: location.clone().key("name"),
                    kind: PolicyErrorKind::ControlCharacterInRuleName(rule.name.clone()),
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

            let undefined = |field: &str, upstream: &str| PolicyError {
                location: location.clone().key(field),
                kind: PolicyErrorKind::UndefinedRuleUpstream {
                    rule: rule.name.clone(),
                    upstream: upstream.to_owned(),
                    defined: defined.clone(),
                },
            };
            let upstream = upstream_index(&rule.upstream);
            if upstream.is_none() {
                errors.push(undefined("upstream", &rule.upstream));
            }
            let canary = compile_canary(rule, &location, &upstream_index, &undefined, &mut errors);

            let clients =
                compile_networks(&rule.clients, location.clone().key("clients"), &mut errors);
            for net in &clients {
                let rules = rule_sets.borrow_mut().single(index);
                table_entries.push((*net, ClientClass { rules, label: NONE }));
            }

            rules.push(Rule {
                name: rule.name.clone(),
                index,
                upstream: upstream.unwrap_or(0),
                clients,
                kinds: rule.kinds.iter().fold(0, |bits, kind| bits | kind.bit()),
                repositories: compile_repositories(rule, &location, &mut errors),
                hosts: compile_hosts(rule, &location, &mut errors),
                clouds: rule
                    .clouds
                    .iter()
                    .map(|cloud| cloud.to_ascii_lowercase())
                    .collect(),
                regions: compile_regions(rule, &location, &mut errors),
                canary,
            });
        }

        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }

        let label_regions: Vec<Option<&str>> = labels.iter().map(ClientLabel::region).collect();
        for upstream in &mut upstreams {
            upstream.compute_label_chains(&label_regions);
        }
        let label_count = labels.len();
        for &(prefix, label) in prefixes {
            if (label as usize) < label_count {
                table_entries.push((prefix, ClientClass { rules: NONE, label }));
            }
        }
        let client_table = RangeTable::build(table_entries, |outer, inner| {
            combine_classes(&rule_sets, outer, inner)
        });

        Ok(Policy {
            matches_hosts: rules.iter().any(|rule| !rule.hosts.is_empty()),
            redirect_status,
            trusted_proxies: TrustedProxies::with_header(trusted, spec.forwarded_header),
            upstreams,
            default_upstream: default_upstream.unwrap_or(0),
            rules,
            client_table,
            rule_sets: rule_sets.into_inner().into_sets(),
            labels,
            labelled_prefixes: prefixes.len(),
        })
    }

    /// Returns the status used for redirects.
    pub fn redirect_status(&self) -> StatusCode {
        self.redirect_status
    }

    /// Returns the proxies whose forwarding headers are believed.
    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.trusted_proxies
    }

    /// Returns the upstreams, sorted by name.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// Finds an upstream by name.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams
            .iter()
            .find(|upstream| upstream.name() == name)
    }

    /// Returns the upstream for requests that no rule matches.
    pub fn default_upstream(&self) -> &Upstream {
        &self.upstreams[self.default_upstream]
    }

    /// Returns the rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Returns the upstream a rule sends to.
    pub fn rule_upstream(&self, rule: &Rule) -> &Upstream {
        &self.upstreams[rule.upstream]
    }

    /// Returns the canary upstream of a rule and its share in percent.
    pub fn rule_canary(&self, rule: &Rule) -> Option<(&Upstream, f64)> {
        rule.canary.map(|canary| {
            (
                &self.upstreams[canary.upstream],
                f64::from(canary.buckets) / 100.0,
            )
        })
    }

    /// Returns the number of labelled client ranges the policy was compiled with.
    pub fn labelled_prefix_count(&self) -> usize {
        self.labelled_prefixes
    }

    /// Finds the label of the most specific labelled range containing `addr`.
    pub fn client_label(&self, addr: IpAddr) -> Option<&ClientLabel> {
        let class = self.client_table.lookup(addr)?;
        self.labels.get(class.label as usize)
    }

    /// Finds, with one lookup, the rules whose networks contain the client
    /// and the client's label with its index.
    pub(crate) fn classify_client(&self, client: Option<IpAddr>) -> ClientClassification<'_> {
        let Some(class) = client.and_then(|addr| self.client_table.lookup(addr)) else {
            return ClientClassification::default();
        };
        let label = self.labels.get(class.label as usize);
        ClientClassification {
            rules: self.rule_sets.get(class.rules as usize).map(|set| &set[..]),
            label_id: label.map(|_| class.label),
            label,
        }
    }

    /// Returns whether some rule matches on the requested host.
    pub(crate) fn matches_hosts(&self) -> bool {
        self.matches_hosts
    }

    /// Finds the first rule matching a request.
    pub(crate) fn match_rule(
        &self,
        client_rules: Option<&[u64]>,
        label: Option<&ClientLabel>,
        kind: RequestKind,
        name: Option<&str>,
        host: Option<&str>,
    ) -> Option<&Rule> {
        self.rules.iter().find(|rule| {
            if rule.has_clients() && !client_rules.is_some_and(|set| set_contains(set, rule.index))
            {
                return false;
            }
            // Blob stores serve blobs only, so their rules skip other kinds.
            if kind != RequestKind::Blob
                && self.upstreams[rule.upstream].kind() == UpstreamKind::BlobStore
            {
                return false;
            }
            rule.matches_request(kind, name, host, label)
        })
    }

    pub(crate) fn upstream_at(&self, index: usize) -> &Upstream {
        &self.upstreams[index]
    }
}

fn compile_canary(
    rule: &RuleSpec,
    location: &FieldPath,
    upstream_index: &dyn Fn(&str) -> Option<usize>,
    undefined: &dyn Fn(&str, &str) -> PolicyError,
    errors: &mut Vec<PolicyError>,
) -> Option<Canary> {
    let canary = rule.canary.as_ref()?;
    let upstream = upstream_index(&canary.upstream);
    if upstream.is_none() {
        let mut error = undefined("canary", &canary.upstream);
        error.location = location.clone().key("canary").key("upstream");
        errors.push(error);
    }
    if !(0.0..=100.0).contains(&canary.percent) {
        errors.push(PolicyError {
            location: location.clone().key("canary").key("percent"),
            kind: PolicyErrorKind::InvalidCanaryPercent {
                rule: rule.name.clone(),
                percent: canary.percent,
            },
        });
        return None;
    }
    Some(Canary {
        upstream: upstream?,
        buckets: (canary.percent * 100.0).round() as u32,
    })
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
///
/// The address is read as a single address is, so an IPv4 number with a
/// leading zero (`010.0.0.0/8`) is rejected, because C's `inet_aton` reads
/// it as octal (`8.0.0.0`).
/// The prefix length is decimal digits without a leading zero.
pub fn parse_network(text: &str) -> Option<IpNet> {
    parse_network_as_written(text).map(|net| net.trunc())
}

/// Parses a network as [`parse_network`] does, but keeps its host bits
/// (`10.1.2.3/8` stays `10.1.2.3/8`).
pub(crate) fn parse_network_as_written(text: &str) -> Option<IpNet> {
    let text = text.trim();
    let Some((address, length)) = text.split_once('/') else {
        return text.parse::<IpAddr>().ok().map(IpNet::from);
    };
    let address = address.parse::<IpAddr>().ok()?;
    let is_decimal = !length.is_empty()
        && length.bytes().all(|byte| byte.is_ascii_digit())
        && (length == "0" || !length.starts_with('0'));
    if !is_decimal {
        return None;
    }
    let length = length.parse::<u8>().ok()?;
    IpNet::new(address, length).ok()
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
    fn undefined_default_without_upstreams() {
        let mut spec = base_spec();
        spec.upstreams.clear();
        let errors = Policy::compile(&spec).unwrap_err().0;
        let messages: Vec<String> = errors.iter().map(|error| error.kind.to_string()).collect();
        assert!(
            messages.iter().any(|message| message.ends_with(
                "is not defined (defined: none; add an [upstreams.NAME] table with a url)"
            )),
            "{messages:?}"
        );
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
            "\"10.0.0.0/33\" is not a CIDR or IP address (expected a form like 192.0.2.0/24 or 2001:db8::/32, with no leading zeros in IPv4 numbers or prefix lengths)"
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
    fn networks_reject_leading_zeros() {
        for text in [
            "010.0.0.0/8",
            "10.0.0.01/32",
            "010.0.0.1",
            "10.0.0.0/08",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "/8",
            "::ffff:010.0.0.0/104",
        ] {
            assert_eq!(parse_network(text), None, "{text}");
        }
    }

    #[test]
    fn ipv6_double_colon_stands_for_zeros() {
        // `::` stands for one or more zero groups (RFC 4291, section 2.2),
        // so it cannot join eight written groups.
        for text in [
            "1::2:3:4:5:6:7:8/128",
            "::1:2:3:4:5:6:7:8/128",
            "1:2:3:4:5:6:7::8/128",
        ] {
            assert_eq!(parse_network(text), None, "{text}");
        }
        assert_eq!(
            parse_network("1:2:3:4:5:6::8/128"),
            Some("1:2:3:4:5:6:0:8/128".parse().unwrap())
        );
    }

    #[test]
    fn networks_accept_zero_lengths_and_ipv6_zeros() {
        for (text, expected) in [
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("10.0.0.0/0", "0.0.0.0/0"),
            ("2001:0db8::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            (" 192.0.2.0/24 ", "192.0.2.0/24"),
        ] {
            assert_eq!(
                parse_network(text),
                Some(expected.parse().unwrap()),
                "{text}"
            );
        }
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
            policy.upstream("m").unwrap().base(),
            Some("http://[::1]:5000/registry/v2/")
        );
        assert_eq!(
            policy.upstream("n").unwrap().base(),
            Some("https://mirror.example/v2/")
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
    fn control_characters_in_rule_name_rejected() {
        for name in ["line\nbreak", "tab\there", "escape\u{1b}[31m", "del\u{7f}"] {
            let mut spec = base_spec();
            spec.rules.push(RuleSpec::new(name, "hub"));
            let error = only_error(&spec);
            assert_eq!(
                error.kind,
                PolicyErrorKind::ControlCharacterInRuleName(name.into()),
                "{name:?}"
            );
            assert_eq!(error.location.to_string(), "rules[0].name");
        }
        let mut spec = base_spec();
        spec.rules
            .push(RuleSpec::new("Zürich pulls, region eu", "hub"));
        assert!(Policy::compile(&spec).is_ok());
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
    fn default_upstream_must_serve_everything() {
        for upstream in [
            UpstreamSpec::new("https://{region}.example"),
            UpstreamSpec {
                kind: UpstreamKind::BlobStore,
                ..UpstreamSpec::new("https://bucket.example")
            },
        ] {
            let mut spec = base_spec();
            spec.upstreams.insert("k8s".into(), upstream);
            let error = only_error(&spec);
            assert_eq!(error.location.to_string(), "default_upstream");
            assert!(matches!(
                error.kind,
                PolicyErrorKind::InvalidDefaultUpstream { .. }
            ));
        }
    }

    #[test]
    fn canary_errors() {
        let mut spec = base_spec();
        spec.rules.push(RuleSpec {
            canary: Some(CanarySpec {
                upstream: "nowhere".into(),
                percent: 10.0,
            }),
            ..RuleSpec::new("a", "hub")
        });
        spec.rules.push(RuleSpec {
            canary: Some(CanarySpec {
                upstream: "hub".into(),
                percent: 120.0,
            }),
            ..RuleSpec::new("b", "k8s")
        });
        let errors = Policy::compile(&spec).unwrap_err().0;
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].location.to_string(), "rules[0].canary.upstream");
        assert_eq!(errors[1].location.to_string(), "rules[1].canary.percent");
    }

    #[test]
    fn invalid_region_pattern() {
        let mut spec = base_spec();
        spec.rules.push(RuleSpec {
            regions: vec!["eu-*".into(), "".into(), "eu west".into()],
            ..RuleSpec::new("r", "hub")
        });
        let errors = Policy::compile(&spec).unwrap_err().0;
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].location.to_string(), "rules[0].regions[1]");
    }

    #[test]
    fn labels_and_rule_networks_share_one_table() {
        let mut spec = base_spec();
        spec.rules.push(RuleSpec {
            clients: vec!["10.0.0.0/8".into()],
            ..RuleSpec::new("corp", "hub")
        });
        let labels = vec![ClientLabel::new(Some("corp"), Some("lab-1"))];
        let prefixes = [
            ("10.1.0.0/16".parse().unwrap(), 0),
            ("10.2.0.0/16".parse().unwrap(), 7),
        ];
        let policy = Policy::compile_with_labels(&spec, labels, &prefixes).unwrap();

        let found = policy.classify_client(Some("10.1.2.3".parse().unwrap()));
        let (rules, label) = (found.rules, found.label);
        assert!(set_contains(rules.unwrap(), 0));
        assert_eq!(label.unwrap().region(), Some("lab-1"));

        let found = policy.classify_client(Some("10.2.2.3".parse().unwrap()));
        let (rules, label) = (found.rules, found.label);
        assert!(set_contains(rules.unwrap(), 0));
        assert!(label.is_none(), "an out-of-range label index is ignored");

        let found = policy.classify_client(Some("11.0.0.1".parse().unwrap()));
        let (rules, label) = (found.rules, found.label);
        assert!(rules.is_none());
        assert!(label.is_none());
    }

    /// Loads a published range file when `REGISTRY_REDIRECT_DATA_DIR` names
    /// a directory that has it.
    #[cfg(feature = "cloud-ranges")]
    fn published(
        name: &str,
        format: crate::sources::SourceFormat,
    ) -> Option<crate::sources::LabeledRanges> {
        let dir = std::env::var_os("REGISTRY_REDIRECT_DATA_DIR")?;
        let Ok(bytes) = std::fs::read(std::path::Path::new(&dir).join(name)) else {
            eprintln!("skipped: {name} is not in REGISTRY_REDIRECT_DATA_DIR");
            return None;
        };
        Some(crate::sources::parse(format, &bytes, None).unwrap())
    }

    #[cfg(feature = "cloud-ranges")]
    #[test]
    fn published_ranges_route_by_region() {
        use crate::sources::SourceFormat;
        let (Some(aws), Some(gcp)) = (
            published("aws-ip-ranges.json", SourceFormat::Aws),
            published("gcp-cloud.json", SourceFormat::Gcp),
        ) else {
            eprintln!("skipped: set REGISTRY_REDIRECT_DATA_DIR to the published range files");
            return;
        };
        let mut ranges = aws.clone();
        ranges.merge(&gcp).unwrap();

        let mut spec = base_spec();
        spec.upstreams.insert(
            "s3".into(),
            UpstreamSpec {
                kind: UpstreamKind::BlobStore,
                ..UpstreamSpec::new("https://bucket-{region}.example")
            },
        );
        spec.rules.push(RuleSpec {
            clouds: vec!["aws".into()],
            ..RuleSpec::new("aws", "s3")
        });
        spec.rules.push(RuleSpec {
            clouds: vec!["gcp".into()],
            ..RuleSpec::new("gcp", "hub")
        });
        let policy = Policy::compile_with_ranges(&spec, &ranges).unwrap();

        // The first AWS eu-west-1 prefix that no more specific prefix overrides.
        let eu_west = aws
            .iter()
            .filter(|(_, label)| label.region() == Some("eu-west-1"))
            .map(|(prefix, _)| prefix.network())
            .find(|addr| {
                policy.client_label(*addr).and_then(ClientLabel::region) == Some("eu-west-1")
            })
            .expect("an eu-west-1 address");
        let found = policy.classify_client(Some(eu_west));
        let (rules, label) = (found.rules, found.label);
        assert_eq!(label.unwrap().cloud(), Some("aws"));
        let rule = policy.match_rule(rules, label, RequestKind::Blob, Some("pause"), None);
        assert_eq!(rule.unwrap().name(), "aws");
        assert!(policy
            .upstream("s3")
            .unwrap()
            .regional_base("eu-west-1")
            .is_some());

        let europe_west4 = gcp
            .iter()
            .filter(|(_, label)| label.region() == Some("europe-west4"))
            .map(|(prefix, _)| prefix.network())
            .find(|addr| {
                policy.client_label(*addr).and_then(ClientLabel::region) == Some("europe-west4")
            })
            .expect("a europe-west4 address");
        let found = policy.classify_client(Some(europe_west4));
        let (rules, label) = (found.rules, found.label);
        let rule = policy.match_rule(rules, label, RequestKind::Manifest, Some("pause"), None);
        assert_eq!(rule.unwrap().name(), "gcp");
    }
}
