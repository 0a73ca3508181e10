//! Compiled rules and their criteria.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::spec::{FieldPath, PolicyError, PolicyErrorKind, RuleSpec};
use crate::path::{validate_name, RequestKind};

/// A repository name pattern of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RepositoryPattern {
    /// Matches the name and every name below it.
    Tree(String),
    /// Matches every name that starts with the text.
    Prefix(String),
}

impl RepositoryPattern {
    pub(crate) fn matches(&self, name: &str) -> bool {
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
pub(crate) enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    pub(crate) fn matches(&self, host: &str) -> bool {
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

/// A region pattern of a rule: a region name, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RegionPattern {
    Exact(String),
    Prefix(String),
}

impl RegionPattern {
    fn matches(&self, region: &str) -> bool {
        match self {
            RegionPattern::Exact(exact) => region.eq_ignore_ascii_case(exact),
            RegionPattern::Prefix(prefix) => {
                region.len() >= prefix.len()
                    && region.is_char_boundary(prefix.len())
                    && region[..prefix.len()].eq_ignore_ascii_case(prefix)
            }
        }
    }
}

/// The cloud and region of the client's address range, from the loaded
/// range files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientLabel {
    pub(crate) cloud: Option<String>,
    pub(crate) region: Option<String>,
}

impl ClientLabel {
    /// Returns the cloud, such as `aws`.
    pub fn cloud(&self) -> Option<&str> {
        self.cloud.as_deref()
    }

    /// Returns the region, such as `eu-west-1`.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

/// A share of a rule's clients that goes to another upstream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Canary {
    pub(crate) upstream: usize,
    /// Clients whose bucket (0 to 9,999) is below this go to the canary.
    pub(crate) buckets: u32,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) index: usize,
    pub(crate) upstream: usize,
    pub(crate) clients: Vec<IpNet>,
    /// Bit set of [`RequestKind::bit`]; 0 matches every kind.
    pub(crate) kinds: u8,
    pub(crate) repositories: Vec<RepositoryPattern>,
    pub(crate) hosts: Vec<HostPattern>,
    /// Lowercase cloud names.
    pub(crate) clouds: Vec<String>,
    pub(crate) regions: Vec<RegionPattern>,
    pub(crate) canary: Option<Canary>,
}

impl Rule {
    /// Returns the rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the rule's position in the policy, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Returns the client networks the rule matches; empty matches every client.
    pub fn clients(&self) -> &[IpNet] {
        &self.clients
    }

    /// Returns whether the rule's criteria other than the client networks
    /// match a request.
    pub(crate) fn matches_request(
        &self,
        kind: RequestKind,
        name: Option<&str>,
        host: Option<&str>,
        label: Option<&ClientLabel>,
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
        if !self.clouds.is_empty() {
            let Some(cloud) = label.and_then(ClientLabel::cloud) else {
                return false;
            };
            if !self
                .clouds
                .iter()
                .any(|wanted| wanted.eq_ignore_ascii_case(cloud))
            {
                return false;
            }
        }
        if !self.regions.is_empty() {
            let Some(region) = label.and_then(ClientLabel::region) else {
                return false;
            };
            if !self.regions.iter().any(|pattern| pattern.matches(region)) {
                return false;
            }
        }
        true
    }

    pub(crate) fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }
}

/// Returns the canary bucket of a client, from 0 to 9,999: a hash (FNV-1a)
/// of the client address and the repository name, so the same client and
/// repository always land in the same bucket.
pub(crate) fn canary_bucket(client: Option<IpAddr>, name: Option<&str>) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    match client {
        Some(IpAddr::V4(v4)) => feed(&v4.octets()),
        Some(IpAddr::V6(v6)) => feed(&v6.octets()),
        None => {}
    }
    feed(&[0]);
    feed(name.unwrap_or("").as_bytes());
    (hash % 10_000) as u32
}

/// The result of one lookup in the client table: the rules whose networks
/// contain the address, and the label of the most specific labelled range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientClass {
    /// Index into the policy's rule sets, or [`NONE`].
    pub(crate) rules: u32,
    /// Index into the policy's labels, or [`NONE`].
    pub(crate) label: u32,
}

pub(crate) const NONE: u32 = u32::MAX;

/// Sets of rule indexes as bit sets, each stored once.
#[derive(Debug, Default)]
pub(crate) struct RuleSets {
    sets: Vec<Box<[u64]>>,
    ids: HashMap<Box<[u64]>, u32>,
    words: usize,
}

impl RuleSets {
    pub(crate) fn new(rule_count: usize) -> Self {
        RuleSets {
            sets: Vec::new(),
            ids: HashMap::new(),
            words: rule_count.div_ceil(64).max(1),
        }
    }

    fn intern(&mut self, set: Box<[u64]>) -> u32 {
        if let Some(&id) = self.ids.get(&set) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        id
    }

    /// Returns the id of the set holding only `rule`.
    pub(crate) fn single(&mut self, rule: usize) -> u32 {
        let mut words = vec![0u64; self.words];
        words[rule / 64] |= 1 << (rule % 64);
        self.intern(words.into_boxed_slice())
    }

    /// Returns the id of the union of two sets, either of which may be [`NONE`].
    pub(crate) fn union(&mut self, a: u32, b: u32) -> u32 {
        if a == NONE || a == b {
            return b;
        }
        if b == NONE {
            return a;
        }
        let words = self.sets[a as usize]
            .iter()
            .zip(self.sets[b as usize].iter())
            .map(|(x, y)| x | y)
            .collect();
        self.intern(words)
    }

    pub(crate) fn into_sets(self) -> Vec<Box<[u64]>> {
        self.sets
    }
}

/// Combines a prefix's class with the class of the prefix around it (or of
/// an identical earlier prefix): the rule sets are joined, and the inner
/// label wins.
pub(crate) fn combine_classes(
    sets: &RefCell<RuleSets>,
    outer: &ClientClass,
    inner: &ClientClass,
) -> ClientClass {
    let rules = sets.borrow_mut().union(outer.rules, inner.rules);
    let label = if inner.label != NONE {
        inner.label
    } else {
        outer.label
    };
    ClientClass { rules, label }
}

/// Returns whether a rule set contains `rule`.
pub(crate) fn set_contains(set: &[u64], rule: usize) -> bool {
    set.get(rule / 64)
        .is_some_and(|word| word & (1 << (rule % 64)) != 0)
}

pub(crate) fn compile_repositories(
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

pub(crate) fn compile_hosts(
    rule: &RuleSpec,
    location: &FieldPath,
    errors: &mut Vec<PolicyError>,
) -> Vec<HostPattern> {
    let mut patterns = Vec::with_capacity(rule.hosts.len());
    for (index, host) in rule.hosts.iter().enumerate() {
        // `docker.io.` names the same host as `docker.io`, as in requests.
        let lower = host.to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower).to_owned();
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

pub(crate) fn compile_regions(
    rule: &RuleSpec,
    location: &FieldPath,
    errors: &mut Vec<PolicyError>,
) -> Vec<RegionPattern> {
    let mut patterns = Vec::with_capacity(rule.regions.len());
    for (index, region) in rule.regions.iter().enumerate() {
        let (text, is_prefix) = match region.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (region.as_str(), false),
        };
        let valid = (is_prefix || !text.is_empty())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            errors.push(PolicyError {
                location: location.clone().key("regions").index(index),
                kind: PolicyErrorKind::InvalidRegion {
                    rule: rule.name.clone(),
                    region: region.clone(),
                },
            });
            continue;
        }
        let pattern = if is_prefix {
            RegionPattern::Prefix(text.to_owned())
        } else {
            RegionPattern::Exact(text.to_owned())
        };
        patterns.push(pattern);
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_pattern_forms() {
        let tree = RepositoryPattern::Tree("foo/bar".into());
        assert!(tree.matches("foo/bar"));
        assert!(tree.matches("foo/bar/baz"));
        assert!(!tree.matches("foo/barbaz"));
        assert!(!tree.matches("foo"));
        let prefix = RepositoryPattern::Prefix("foo/ba".into());
        assert!(prefix.matches("foo/barbaz"));
        assert!(!prefix.matches("foo/c"));
    }

    #[test]
    fn host_pattern_forms() {
        let exact = HostPattern::Exact("docker.io".into());
        assert!(exact.matches("Docker.IO"));
        assert!(!exact.matches("xdocker.io"));
        let sub = HostPattern::Subdomains(".example.com".into());
        assert!(sub.matches("a.example.com"));
        assert!(sub.matches("a.b.Example.com"));
        assert!(!sub.matches("example.com"));
        assert!(!sub.matches("badexample.com"));
    }

    #[test]
    fn host_patterns_drop_final_dot() {
        let rule = RuleSpec {
            hosts: vec!["Docker.IO.".into(), "*.example.com.".into(), "..".into()],
            ..RuleSpec::new("hosts", "hub")
        };
        let mut errors = Vec::new();
        let patterns = compile_hosts(&rule, &FieldPath::root("rules"), &mut errors);
        assert_eq!(
            patterns,
            [
                HostPattern::Exact("docker.io".into()),
                HostPattern::Subdomains(".example.com".into())
            ]
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn region_pattern_forms() {
        assert!(RegionPattern::Exact("eu-west-1".into()).matches("EU-west-1"));
        assert!(!RegionPattern::Exact("eu-west-1".into()).matches("eu-west-10"));
        assert!(RegionPattern::Prefix("eu-".into()).matches("eu-north-1"));
        assert!(!RegionPattern::Prefix("eu-".into()).matches("us-east-1"));
        assert!(RegionPattern::Prefix(String::new()).matches("anything"));
    }

    #[test]
    fn rule_sets_union_and_intern() {
        let mut sets = RuleSets::new(130);
        let a = sets.single(1);
        let b = sets.single(129);
        let both = sets.union(a, b);
        assert_eq!(sets.union(b, a), both);
        assert_eq!(sets.union(a, NONE), a);
        assert_eq!(sets.union(NONE, b), b);
        let sets = sets.into_sets();
        assert!(set_contains(&sets[both as usize], 1));
        assert!(set_contains(&sets[both as usize], 129));
        assert!(!set_contains(&sets[both as usize], 2));
        assert!(!set_contains(&sets[both as usize], 500));
    }

    #[test]
    fn canary_bucket_is_stable_and_spread() {
        let client = Some("203.0.113.5".parse().unwrap());
        assert_eq!(
            canary_bucket(client, Some("a/b")),
            canary_bucket(client, Some("a/b"))
        );
        let mut below_half = 0;
        for n in 0..1000u32 {
            let client = Some(IpAddr::from(n.wrapping_mul(2_654_435_761).to_be_bytes()));
            if canary_bucket(client, Some("app")) < 5000 {
                below_half += 1;
            }
        }
        // An even hash puts about half the clients below the middle.
        assert!((400..600).contains(&below_half), "{below_half}");
    }
}
