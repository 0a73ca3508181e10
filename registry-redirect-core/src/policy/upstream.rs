//! Compiled upstreams: where their redirects lead, by region.

use std::collections::{BTreeMap, BTreeSet};

use super::resolve::{compile_resolve, ResolveSettings, UpstreamAuth};
use super::spec::{
    ApiVersionCheck, FieldPath, HealthCheckSpec, PolicyError, PolicyErrorKind, UpstreamKind,
    UpstreamSpec,
};
use crate::path::{validate_name, RegistryPath};

/// The blob path of a blob store when the policy names none: the layout of
/// the registry.k8s.io blob buckets.
pub const DEFAULT_BLOB_PATH: &str = "/containers/images/{digest}";

const REGION_PLACEHOLDER: &str = "{region}";
const DIGEST_PLACEHOLDER: &str = "{digest}";

/// An upstream, checked and ready to build `Location` values.
#[derive(Debug, Clone)]
pub struct Upstream {
    name: String,
    kind: UpstreamKind,
    /// The `url` as written.
    url: String,
    /// The start of every `Location` for clients without a regional mirror:
    /// `scheme://authority/base-path/v2/` for a registry, or
    /// `scheme://authority/base-path` for a blob store. `None` when `url`
    /// is a `{region}` template or empty.
    base: Option<String>,
    /// The start of every `Location` by region, filled in at compile time
    /// for every region the policy can meet.
    regional: BTreeMap<String, String>,
    fallbacks: BTreeMap<String, Vec<String>>,
    /// `regional` as (region, base) pairs, for the chains below to index.
    regional_entries: Vec<(String, String)>,
    /// For each client label id, the indexes into `regional_entries` to try
    /// in order, computed once when the policy is compiled, so a decision
    /// makes no map lookup by region name.
    label_chains: Vec<Box<[u32]>>,
    /// The chain for clients without a label.
    unlabelled_chain: Box<[u32]>,
    /// `path_prefix` with a trailing `/`, or empty.
    path_prefix: String,
    library_prefix: bool,
    api_version_check: ApiVersionCheck,
    /// A blob store's blob path, split around `{digest}`.
    blob_path: (String, String),
    verify_blobs: bool,
    health_check: Option<HealthCheckSpec>,
    /// The resolve-mode settings, for `auth = "resolve"`.
    resolve: Option<ResolveSettings>,
}

impl Upstream {
    /// Returns the upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns what the upstream serves.
    pub fn kind(&self) -> UpstreamKind {
        self.kind
    }

    /// Returns the `url` as written, which may be a `{region}` template.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns the start of every `Location` for clients without a regional
    /// mirror (ending in `/v2/` for a registry), or `None` for an upstream
    /// that only has regional mirrors.
    pub fn base(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// Returns the start of every `Location` to the mirror of `region`, if
    /// the upstream has one there.
    pub fn regional_base(&self, region: &str) -> Option<&str> {
        self.regional.get(region).map(String::as_str)
    }

    /// Returns the regions with a mirror, in name order.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.regional.keys().map(String::as_str)
    }

    /// Returns the repository prefix inserted after `/v2/`, with a trailing
    /// `/`, or an empty string.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// Returns whether one-component names get `library/` in front.
    pub fn library_prefix(&self) -> bool {
        self.library_prefix
    }

    /// Returns how the API version check is handled for this upstream.
    pub fn api_version_check(&self) -> ApiVersionCheck {
        self.api_version_check
    }

    /// Returns whether servers check that a blob exists here before
    /// redirecting to it.
    pub fn verify_blobs(&self) -> bool {
        self.verify_blobs
    }

    /// Returns the health probe settings, if the upstream is probed.
    pub fn health_check(&self) -> Option<&HealthCheckSpec> {
        self.health_check.as_ref()
    }

    /// Returns how a server reaches this upstream: by redirect or by
    /// fetching with a token (resolve mode).
    pub fn auth(&self) -> UpstreamAuth {
        if self.resolve.is_some() {
            UpstreamAuth::Resolve
        } else {
            UpstreamAuth::None
        }
    }

    /// Returns the resolve-mode settings, for an upstream with
    /// `auth = "resolve"`.
    pub fn resolve(&self) -> Option<&ResolveSettings> {
        self.resolve.as_ref()
    }

    /// Returns the repository name at this upstream for a name the client
    /// requested: with `path_prefix` and, for one-component names with
    /// `library_prefix`, `library/` in front. Token scopes name it.
    pub fn upstream_repository(&self, name: &str) -> String {
        let library = if self.library_prefix && !name.contains('/') {
            "library/"
        } else {
            ""
        };
        format!("{}{library}{name}", self.path_prefix)
    }

    /// Returns whether a server should check this upstream at runtime
    /// before redirecting a request of this kind to it.
    pub(crate) fn needs_runtime_check(&self, is_blob: bool) -> bool {
        self.health_check.is_some() || (is_blob && self.verify_blobs)
    }

    /// Calls `visit` with each base for a client in `region`, in order: the
    /// region's own mirror, the mirrors of its fallback regions (then of the
    /// `*` fallbacks, which also serve clients without a region), then the
    /// region-less base.
    pub(crate) fn for_each_base<'p>(
        &'p self,
        region: Option<&str>,
        mut visit: impl FnMut(&'p str, Option<&'p str>),
    ) {
        // A client without a region (a range labelled global, or no label)
        // still gets the `*` fallbacks.
        let specific = region
            .and_then(|region| self.fallbacks.get(region))
            .into_iter()
            .flatten();
        let any = self.fallbacks.get("*").into_iter().flatten();
        let chain = region
            .into_iter()
            .chain(specific.chain(any).map(String::as_str));
        for candidate in chain {
            if let Some((name, base)) = self.regional.get_key_value(candidate) {
                visit(base, Some(name));
            }
        }
        if let Some(base) = &self.base {
            visit(base, None);
        }
    }

    /// Computes the chain of regional bases for each client label, so that
    /// [`Upstream::for_each_label_base`] needs no lookup by region name.
    pub(crate) fn compute_label_chains(&mut self, label_regions: &[Option<&str>]) {
        let chain_for = |region: Option<&str>| -> Box<[u32]> {
            let mut chain = Vec::new();
            // Each entry is found by region name, not by base, because
            // regions may share a base and a candidate must name the
            // client's own region. `regional_entries` is sorted by region.
            self.for_each_base(region, |_base, region| {
                let Some(region) = region else {
                    return;
                };
                let found = self
                    .regional_entries
                    .binary_search_by(|(name, _)| name.as_str().cmp(region));
                if let Ok(index) = found {
                    chain.push(index as u32);
                }
            });
            chain.into_boxed_slice()
        };
        let chains = label_regions
            .iter()
            .map(|region| chain_for(*region))
            .collect();
        let unlabelled = chain_for(None);
        self.label_chains = chains;
        self.unlabelled_chain = unlabelled;
    }

    /// Calls `visit` with each base for a client with label `label` (an
    /// index into the policy's labels), in the order of
    /// [`Upstream::for_each_base`].
    pub(crate) fn for_each_label_base<'p>(
        &'p self,
        label: Option<u32>,
        mut visit: impl FnMut(&'p str, Option<&'p str>),
    ) {
        for &index in self.label_chain(label) {
            if let Some((region, base)) = self.regional_entries.get(index as usize) {
                visit(base, Some(region));
            }
        }
        if let Some(base) = &self.base {
            visit(base, None);
        }
    }

    /// Returns the first base that [`Upstream::for_each_label_base`] would
    /// visit, with its region.
    pub(crate) fn first_label_base(&self, label: Option<u32>) -> Option<(&str, Option<&str>)> {
        self.label_chain(label)
            .iter()
            .find_map(|&index| self.regional_entries.get(index as usize))
            .map(|(region, base)| (base.as_str(), Some(region.as_str())))
            .or_else(|| self.base.as_deref().map(|base| (base, None)))
    }

    /// Returns the indexes into `regional_entries` to try for a client label.
    fn label_chain(&self, label: Option<u32>) -> &[u32] {
        label
            .and_then(|label| self.label_chains.get(label as usize))
            .unwrap_or(&self.unlabelled_chain)
    }

    /// Builds the absolute `Location` for a validated path, starting from
    /// `base` (one of this upstream's bases), with one allocation.
    pub(crate) fn location(
        &self,
        base: &str,
        path: &RegistryPath<'_>,
        query: Option<&str>,
    ) -> String {
        if self.kind == UpstreamKind::BlobStore {
            return self.blob_location(base, path);
        }
        let (endpoint, reference) = match *path {
            RegistryPath::Manifest { reference, .. } => ("/manifests/", reference),
            RegistryPath::Blob { digest, .. } => ("/blobs/", digest),
            RegistryPath::TagsList { .. } => ("/tags/list", ""),
            RegistryPath::Referrers { digest, .. } => ("/referrers/", digest),
            _ => ("", ""),
        };
        let name = path.name();
        let library = match name {
            Some(name) if self.library_prefix && !name.contains('/') => "library/",
            _ => "",
        };
        let query = query.filter(|query| !query.is_empty());

        let mut capacity = base.len();
        if let Some(name) = name {
            capacity += self.path_prefix.len()
                + library.len()
                + name.len()
                + endpoint.len()
                + reference.len();
        }
        if let Some(query) = query {
            capacity += 1 + encoded_query_len(query);
        }

        let mut location = String::with_capacity(capacity);
        location.push_str(base);
        if let Some(name) = name {
            location.push_str(&self.path_prefix);
            location.push_str(library);
            location.push_str(name);
            location.push_str(endpoint);
            location.push_str(reference);
        }
        if let Some(query) = query {
            location.push('?');
            push_encoded_query(&mut location, query);
        }
        location
    }

    /// Builds a blob store `Location`: base, then the blob path with the
    /// digest. The query is not passed on, because blob stores do not take
    /// registry parameters such as `ns`.
    fn blob_location(&self, base: &str, path: &RegistryPath<'_>) -> String {
        let digest = match *path {
            RegistryPath::Blob { digest, .. } => digest,
            _ => "",
        };
        let (before, after) = &self.blob_path;
        let mut location =
            String::with_capacity(base.len() + before.len() + digest.len() + after.len());
        location.push_str(base);
        location.push_str(before);
        location.push_str(digest);
        location.push_str(after);
        location
    }
}

/// Checks an upstream specification and compiles it, for clients in
/// `known_regions` (the regions the loaded range files name).
pub(crate) fn compile_upstream(
    name: &str,
    spec: &UpstreamSpec,
    known_regions: &BTreeSet<&str>,
    errors: &mut Vec<PolicyError>,
) -> Option<Upstream> {
    let location = FieldPath::root("upstreams").key(name);
    let error_count = errors.len();
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

    let regional_error = |field: &'static str, reason: String| PolicyError {
        location: location.clone().key(field),
        kind: PolicyErrorKind::InvalidRegionalUpstream {
            upstream: name.to_owned(),
            field,
            reason,
        },
    };
    let url_error = |url: &str, reason: String| PolicyError {
        location: location.clone().key("url"),
        kind: PolicyErrorKind::InvalidUpstreamUrl {
            upstream: name.to_owned(),
            url: url.to_owned(),
            reason,
        },
    };

    // The region-less base, or the template.
    let is_template = spec.url.contains(REGION_PLACEHOLDER);
    let mut base = None;
    if spec.url.is_empty() {
        if spec.region_urls.is_empty() {
            errors.push(url_error(
                &spec.url,
                "a url is required unless region_urls lists the mirrors".to_owned(),
            ));
        }
    } else if is_template {
        // A sample region shows whether the template builds valid URLs.
        if let Err(reason) = base_url(
            &spec.url.replace(REGION_PLACEHOLDER, "sample-region-1"),
            spec.kind,
        ) {
            errors.push(url_error(&spec.url, reason));
        }
    } else {
        match base_url(&spec.url, spec.kind) {
            Ok(url) => base = Some(url),
            Err(reason) => errors.push(url_error(&spec.url, reason)),
        }
    }

    // Regional bases: listed regions, or every region the policy can meet.
    let mut regional = BTreeMap::new();
    if is_template {
        if spec.regions.is_empty() {
            for region in known_regions
                .iter()
                .filter(|region| is_region_label(region))
            {
                if let Ok(url) = base_url(&spec.url.replace(REGION_PLACEHOLDER, region), spec.kind)
                {
                    regional.insert((*region).to_owned(), url);
                }
            }
        } else {
            for (index, region) in spec.regions.iter().enumerate() {
                if !is_region_label(region) {
                    errors.push(PolicyError {
                        location: location.clone().key("regions").index(index),
                        kind: PolicyErrorKind::InvalidRegionalUpstream {
                            upstream: name.to_owned(),
                            field: "regions",
                            reason: format!("\"{region}\" cannot fill a {{region}} template (expected lowercase letters, digits and '-')"),
                        },
                    });
                    continue;
                }
                match base_url(&spec.url.replace(REGION_PLACEHOLDER, region), spec.kind) {
                    Ok(url) => {
                        regional.insert(region.clone(), url);
                    }
                    Err(reason) => errors.push(url_error(
                        &spec.url,
                        format!("for region {region}: {reason}"),
                    )),
                }
            }
        }
    } else if !spec.regions.is_empty() {
        errors.push(regional_error(
            "regions",
            "regions needs a url with a {region} template".to_owned(),
        ));
    }
    for (region, url) in &spec.region_urls {
        match base_url(url, spec.kind) {
            Ok(url) => {
                regional.insert(region.clone(), url);
            }
            Err(reason) => errors.push(PolicyError {
                location: location.clone().key("region_urls").key(region),
                kind: PolicyErrorKind::InvalidUpstreamUrl {
                    upstream: name.to_owned(),
                    url: url.clone(),
                    reason,
                },
            }),
        }
    }
    for (region, fallbacks) in &spec.fallbacks {
        if region.is_empty() || fallbacks.iter().any(String::is_empty) {
            errors.push(regional_error(
                "fallbacks",
                format!("region \"{region}\" has an empty region name"),
            ));
        }
    }

    let path_prefix = compile_path_prefix(name, spec, &location, errors);
    let resolve = compile_resolve(name, spec, &location, errors);
    let blob_path = compile_blob_path(spec, errors, &regional_error);
    if let Some(check) = &spec.health_check {
        for (field, value) in [
            ("interval_seconds", check.interval_seconds),
            ("timeout_ms", check.timeout_ms),
            ("unhealthy_after", u64::from(check.unhealthy_after)),
        ] {
            if value == 0 {
                errors.push(PolicyError {
                    location: location.clone().key("health_check").key(field),
                    kind: PolicyErrorKind::InvalidHealthCheck {
                        upstream: name.to_owned(),
                        field,
                    },
                });
            }
        }
    }

    if errors.len() > error_count {
        return None;
    }
    Some(Upstream {
        name: name.to_owned(),
        kind: spec.kind,
        url: spec.url.clone(),
        base,
        regional_entries: regional
            .iter()
            .map(|(region, base)| (region.clone(), base.clone()))
            .collect(),
        regional,
        fallbacks: spec.fallbacks.clone(),
        label_chains: Vec::new(),
        unlabelled_chain: Box::new([]),
        path_prefix,
        library_prefix: spec.library_prefix,
        api_version_check: spec.api_version_check,
        blob_path,
        verify_blobs: spec.verify_blobs,
        health_check: spec.health_check.clone(),
        resolve,
    })
}

fn compile_path_prefix(
    name: &str,
    spec: &UpstreamSpec,
    location: &FieldPath,
    errors: &mut Vec<PolicyError>,
) -> String {
    match spec
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
    }
}

fn compile_blob_path(
    spec: &UpstreamSpec,
    errors: &mut Vec<PolicyError>,
    regional_error: &dyn Fn(&'static str, String) -> PolicyError,
) -> (String, String) {
    if spec.kind != UpstreamKind::BlobStore {
        if spec.blob_path.is_some() {
            errors.push(regional_error(
                "blob_path",
                "blob_path applies only to kind = \"blob_store\"".to_owned(),
            ));
        }
        return (String::new(), String::new());
    }
    let path = spec.blob_path.as_deref().unwrap_or(DEFAULT_BLOB_PATH);
    let valid_chars = path.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-' | b'.' | b'_' | b'~' | b'{' | b'}' | b':' | b'@'
            )
    });
    let parts = path.split_once(DIGEST_PLACEHOLDER);
    match parts {
        Some((before, after))
            if path.starts_with('/')
                && valid_chars
                && !after.contains(DIGEST_PLACEHOLDER)
                && !path.contains("//")
                && !path.split('/').any(|segment| segment == "." || segment == "..") =>
        {
            let no_other_braces = !before.contains(['{', '}']) && !after.contains(['{', '}']);
            if no_other_braces {
                return (before.to_owned(), after.to_owned());
            }
            errors.push(regional_error("blob_path", format!("\"{path}\" has a placeholder other than {{digest}}")));
        }
        _ => errors.push(regional_error(
            "blob_path",
            format!("\"{path}\" must start with '/', contain {{digest}} once, have no empty, '.' or '..' segments, and use only URL path characters"),
        )),
    }
    (String::new(), String::new())
}

/// Returns whether `region` can fill a `{region}` template: lowercase
/// letters, digits and `-`, as AWS, GCP and Azure region names are.
fn is_region_label(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 63
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Builds the start of every `Location` from an upstream URL:
/// `scheme://authority/path/v2/` for a registry, `scheme://authority/path`
/// for a blob store. Returns why the URL cannot be used otherwise.
pub(crate) fn base_url(text: &str, kind: UpstreamKind) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|error| error.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be http or https".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("a host is required".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL would be sent to every client; remove them".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a query or fragment cannot be part of a base URL".to_owned());
    }
    let path = url.path().trim_end_matches('/');
    // `origin()` omits the default port and brackets IPv6 hosts.
    let origin = url.origin().ascii_serialization();
    match kind {
        UpstreamKind::Registry => {
            if path.ends_with("/v2") {
                return Err(
                    "the path must not end in /v2, which is added to every redirect".to_owned(),
                );
            }
            Ok(format!("{origin}{path}/v2/"))
        }
        UpstreamKind::BlobStore => Ok(format!("{origin}{path}")),
    }
}

/// Returns whether a query byte may appear as is (RFC 3986 `query`), apart
/// from `%`, which needs two hex digits after it.
fn is_query_byte(byte: u8) -> bool {
    is_unreserved_or_sub_delim(byte) || matches!(byte, b':' | b'@' | b'/' | b'?')
}

/// Returns whether `byte` is an RFC 3986 `unreserved` or `sub-delims`
/// character, which URI components other than the scheme allow as is.
fn is_unreserved_or_sub_delim(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

fn is_percent_escape(bytes: &[u8], at: usize) -> bool {
    bytes.get(at) == Some(&b'%')
        && bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
        && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit)
}

fn encoded_query_len(query: &str) -> usize {
    let bytes = query.as_bytes();
    (0..bytes.len())
        .map(|at| {
            if is_query_byte(bytes[at]) || is_percent_escape(bytes, at) {
                1
            } else {
                3
            }
        })
        .sum()
}

/// Appends the query, percent-encoding every byte that RFC 3986 does not
/// allow there (including `#`, spaces, quotes and control bytes), so that
/// nothing in it can end the `Location` or reach another host.
fn push_encoded_query(out: &mut String, query: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = query.as_bytes();
    for (at, &byte) in bytes.iter().enumerate() {
        if is_query_byte(byte) || is_percent_escape(bytes, at) {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 0x0f) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(spec: &UpstreamSpec, regions: &[&str]) -> Result<Upstream, Vec<PolicyError>> {
        let known: BTreeSet<&str> = regions.iter().copied().collect();
        let mut errors = Vec::new();
        match compile_upstream("up", spec, &known, &mut errors) {
            Some(upstream) if errors.is_empty() => Ok(upstream),
            _ => Err(errors),
        }
    }

    fn bases(upstream: &Upstream, region: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        upstream.for_each_base(region, |base, _| out.push(base.to_owned()));
        out
    }

    #[test]
    fn template_fills_known_regions() {
        let spec = UpstreamSpec::new("https://mirror-{region}.example.net");
        let upstream = compile(&spec, &["eu-west-1", "us-east-1", "Bad Region"]).unwrap();
        assert_eq!(upstream.base(), None);
        assert_eq!(
            upstream.regional_base("eu-west-1"),
            Some("https://mirror-eu-west-1.example.net/v2/")
        );
        assert_eq!(
            upstream.regions().collect::<Vec<_>>(),
            ["eu-west-1", "us-east-1"]
        );
    }

    #[test]
    fn template_with_listed_regions() {
        let spec = UpstreamSpec {
            regions: vec!["eu-west-1".into()],
            ..UpstreamSpec::new("https://mirror.example.net/{region}")
        };
        let upstream = compile(&spec, &["eu-west-1", "us-east-1"]).unwrap();
        assert_eq!(upstream.regions().collect::<Vec<_>>(), ["eu-west-1"]);
        assert_eq!(
            upstream.regional_base("eu-west-1"),
            Some("https://mirror.example.net/eu-west-1/v2/")
        );
    }

    #[test]
    fn fallback_chain_order() {
        let mut spec = UpstreamSpec {
            regions: vec![
                "eu-west-1".into(),
                "eu-central-1".into(),
                "us-east-1".into(),
            ],
            ..UpstreamSpec::new("https://m-{region}.example")
        };
        spec.fallbacks.insert(
            "eu-north-1".into(),
            vec!["eu-central-1".into(), "eu-west-1".into()],
        );
        spec.fallbacks.insert("*".into(), vec!["us-east-1".into()]);
        let upstream = compile(&spec, &[]).unwrap();
        assert_eq!(
            bases(&upstream, Some("eu-north-1")),
            [
                "https://m-eu-central-1.example/v2/",
                "https://m-eu-west-1.example/v2/",
                "https://m-us-east-1.example/v2/"
            ]
        );
        assert_eq!(
            bases(&upstream, Some("eu-west-1")),
            [
                "https://m-eu-west-1.example/v2/",
                "https://m-us-east-1.example/v2/"
            ]
        );
        // A client without a region gets the `*` fallbacks.
        assert_eq!(bases(&upstream, None), ["https://m-us-east-1.example/v2/"]);
    }

    #[test]
    fn region_urls_table_and_plain_base() {
        let mut spec = UpstreamSpec::new("https://central.example");
        spec.region_urls
            .insert("eu".into(), "https://eu.example/registry".into());
        let upstream = compile(&spec, &[]).unwrap();
        assert_eq!(
            bases(&upstream, Some("eu")),
            [
                "https://eu.example/registry/v2/",
                "https://central.example/v2/"
            ]
        );
        assert_eq!(
            bases(&upstream, Some("us")),
            ["https://central.example/v2/"]
        );
    }

    #[test]
    fn blob_store_paths() {
        let spec = UpstreamSpec {
            kind: UpstreamKind::BlobStore,
            ..UpstreamSpec::new("https://bucket-{region}.example")
        };
        let upstream = compile(&spec, &["us-east-2"]).unwrap();
        let path = RegistryPath::Blob {
            name: "pause",
            digest: "sha256:ab",
        };
        let base = upstream.regional_base("us-east-2").unwrap();
        assert_eq!(
            upstream.location(base, &path, Some("ns=x")),
            "https://bucket-us-east-2.example/containers/images/sha256:ab"
        );
    }

    #[test]
    fn invalid_regional_settings() {
        for (spec, field) in [
            (
                UpstreamSpec {
                    kind: UpstreamKind::BlobStore,
                    blob_path: Some("/no-digest".into()),
                    ..UpstreamSpec::new("https://b.example")
                },
                "upstreams.up.blob_path",
            ),
            (
                UpstreamSpec {
                    kind: UpstreamKind::BlobStore,
                    blob_path: Some("/x/{digest}/{name}".into()),
                    ..UpstreamSpec::new("https://b.example")
                },
                "upstreams.up.blob_path",
            ),
            (
                UpstreamSpec {
                    blob_path: Some("/x/{digest}".into()),
                    ..UpstreamSpec::new("https://b.example")
                },
                "upstreams.up.blob_path",
            ),
            (
                UpstreamSpec {
                    regions: vec!["eu-west-1".into()],
                    ..UpstreamSpec::new("https://b.example")
                },
                "upstreams.up.regions",
            ),
            (
                UpstreamSpec {
                    regions: vec!["EU WEST".into()],
                    ..UpstreamSpec::new("https://{region}.b.example")
                },
                "upstreams.up.regions[0]",
            ),
            (UpstreamSpec::new(""), "upstreams.up.url"),
            (
                UpstreamSpec::new("ftp://{region}.example"),
                "upstreams.up.url",
            ),
            (
                UpstreamSpec {
                    health_check: Some(HealthCheckSpec {
                        unhealthy_after: 0,
                        ..HealthCheckSpec::default()
                    }),
                    ..UpstreamSpec::new("https://b.example")
                },
                "upstreams.up.health_check.unhealthy_after",
            ),
        ] {
            let errors = compile(&spec, &[]).unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].location.to_string(), field);
        }
    }

    #[test]
    fn region_urls_error_location() {
        let mut spec = UpstreamSpec::new("https://central.example");
        spec.region_urls.insert("eu".into(), "not a url".into());
        let errors = compile(&spec, &[]).unwrap_err();
        assert_eq!(
            errors[0].location.to_string(),
            "upstreams.up.region_urls.eu"
        );
    }
}
