//! [`decide`]: one request in, one [`Decision`] out, with its reasons.
//!
//! The steps, in order (`docs/request-handling.md` draws them as a flowchart):
//!
//! 1. Find the client address ([`crate::client`]).
//! 2. Classify the path ([`crate::path`]). Paths outside `/v2` are not
//!    registry requests and get [`Outcome::NotRegistry`].
//! 3. Reject every method but `GET` and `HEAD` with 405: the redirector is
//!    read-only, so pushes and deletes must go to a registry directly.
//! 4. Reject invalid names, references and digests, the catalog, blob upload
//!    paths and unknown endpoints with 404 and an OCI error body.
//! 5. Pick the upstream: the first rule that matches, else the default.
//! 6. Respond to the API version check, or redirect to the upstream. For
//!    an upstream with `auth = "resolve"`, the outcome is
//!    [`Outcome::Resolve`] instead: a server fetches from the upstream
//!    with a token (see [`crate::policy::resolve`]).
//!
//! ```
//! use http::{HeaderMap, Method, StatusCode, Version};
//! use registry_redirect_core::{decide, Outcome, Policy, PolicySpec, RequestView, UpstreamSpec};
//!
//! let mut spec = PolicySpec::new("k8s");
//! spec.upstreams.insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
//! let policy = Policy::compile(&spec).unwrap();
//!
//! let headers = HeaderMap::new();
//! let request = RequestView {
//!     method: &Method::GET,
//!     path: "/v2/pause/manifests/3.10",
//!     query: None,
//!     host: Some("registry.example.com"),
//!     peer: Some("203.0.113.5".parse().unwrap()),
//!     headers: &headers,
//!     version: Version::HTTP_11,
//! };
//! let decision = decide(&policy, &request);
//! assert_eq!(decision.status(), Some(StatusCode::TEMPORARY_REDIRECT));
//! assert_eq!(
//!     decision.location(),
//!     Some("https://registry.k8s.io/v2/pause/manifests/3.10")
//! );
//! assert!(matches!(decision.outcome, Outcome::Redirect { .. }));
//! ```

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use http::header::HOST;
use http::{HeaderMap, Method, StatusCode, Version};

use crate::client::{resolve_client, ClientAddress};
use crate::path::{classify, PathError, RegistryPath, RequestKind};
use crate::policy::{
    canary_bucket, ApiVersionCheck, ClientLabel, Policy, Rule, Upstream, UpstreamKind,
};

/// The parts of a request that the core reads. Adapters build it from
/// whatever their HTTP stack gives them; nothing here is copied.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The path, as received (not percent-decoded), without the query.
    pub path: &'a str,
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    /// The host the client asked for: the `Host` header, or the authority of
    /// an absolute-form request target. A port, if present, is ignored.
    pub host: Option<&'a str>,
    /// The address of the TCP peer, if the adapter has it.
    pub peer: Option<IpAddr>,
    /// The request headers, read for forwarding headers from trusted
    /// proxies and for `Host` lines that conflict with `host`.
    pub headers: &'a HeaderMap,
    /// The HTTP version. From HTTP/2 on, `host` is the `:authority`, and
    /// a `Host` header that names another host gets a 400.
    pub version: Version,
}

impl<'a> RequestView<'a> {
    /// Builds a view of an [`http::Request`]. The host comes from the
    /// request target's authority when it has one (absolute form and
    /// HTTP/2), else from the `Host` header. When a request with an
    /// authority also has a `Host` line that is not a host at all, that
    /// line becomes the view's host, so that [`decide`] rejects the request
    /// as RFC 9112 (section 3.2) requires.
    pub fn from_request<B>(request: &'a http::Request<B>, peer: Option<IpAddr>) -> Self {
        let uri = request.uri();
        let header = request.headers().get(HOST);
        // A `Host` value that is not visible ASCII cannot be the view's
        // host, so `decide` reads the raw header and rejects it.
        let header_text = || header.and_then(|value| value.to_str().ok());
        // The whole authority, so that user info in it (`user@host`) is
        // rejected as a Host with `@` would be. Rules ignore the port.
        let host = match uri.authority() {
            Some(_) if header.is_some_and(|value| !is_host_value(value.as_bytes())) => {
                header_text()
            }
            Some(authority) => Some(authority.as_str()),
            None => header_text(),
        };
        RequestView {
            method: request.method(),
            path: uri.path(),
            query: uri.query(),
            host,
            peer,
            headers: request.headers(),
            version: request.version(),
        }
    }

    /// Returns whether the request is HTTP/1.1 without a host: no `Host`
    /// header and no authority in its target.
    ///
    /// RFC 9112 (section 3.2) requires a server to reject such a request
    /// with 400, so a server that reads requests from the network returns
    /// [`Rejection::MISSING_HOST`] for it. [`decide`] does not, because a
    /// request built in process, as in tests, usually has no `Host`.
    pub fn lacks_host(&self) -> bool {
        self.version == Version::HTTP_11 && self.host.is_none() && !self.headers.contains_key(HOST)
    }
}

/// Why a request goes where it goes: the upstream and the rule that chose it.
#[derive(Debug, Clone, Copy)]
pub struct Route<'p> {
    /// The upstream chosen.
    pub upstream: &'p Upstream,
    /// The rule that chose it, or `None` for the default upstream.
    pub rule: Option<&'p Rule>,
    /// Whether the client fell in the rule's canary share, so `upstream`
    /// is the canary upstream.
    pub canary: bool,
}

/// One place a request may be redirected to, among several that a server
/// checks in order.
#[derive(Debug, Clone)]
pub struct Candidate<'p> {
    /// The upstream.
    pub upstream: &'p Upstream,
    /// The region of the upstream's mirror, or `None` for its region-less base.
    pub region: Option<&'p str>,
    /// The absolute URL to redirect to.
    pub location: String,
    /// Whether a server should check with `HEAD` that the blob exists there
    /// before redirecting to it.
    pub verify: bool,
    /// Whether the upstream has health probes, so a server should skip it
    /// while they fail.
    pub health_checked: bool,
}

/// An error code from the OCI distribution specification ("Error Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `NAME_INVALID`: invalid repository name.
    NameInvalid,
    /// `DIGEST_INVALID`: provided digest did not match the grammar.
    DigestInvalid,
    /// `MANIFEST_UNKNOWN`: no manifest can exist at this reference.
    ManifestUnknown,
    /// `BLOB_UPLOAD_UNKNOWN`: no upload session exists here.
    BlobUploadUnknown,
    /// `UNSUPPORTED`: the operation is not supported by this server.
    Unsupported,
}

impl ErrorCode {
    /// Returns the code as it appears in the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::Unsupported => "UNSUPPORTED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error response: status, OCI error code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status, a 4xx for a request the server cannot serve and a
    /// 5xx for a fault of its own.
    pub status: StatusCode,
    /// The OCI error code for the body.
    pub code: ErrorCode,
    /// The message for the body, saying what was wrong and what is expected.
    pub message: &'static str,
}

impl Rejection {
    /// The 400 for an HTTP/1.1 request without a host (see
    /// [`RequestView::lacks_host`]).
    pub const MISSING_HOST: Rejection = Rejection {
        status: StatusCode::BAD_REQUEST,
        code: ErrorCode::Unsupported,
        message: "the HTTP/1.1 request has no Host header; send the registry's host name in Host",
    };
}

/// The action to take for a request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome<'p> {
    /// Redirect the client to `location`.
    Redirect {
        /// The redirect status.
        status: StatusCode,
        /// The absolute URL to redirect to.
        location: String,
        /// The upstream and rule that chose it.
        route: Route<'p>,
        /// The upstream that `location` points to: the route's upstream, or
        /// the default upstream when the route's has no mirror for the client.
        target: &'p Upstream,
        /// The region of the mirror that `location` points to, if regional.
        region: Option<&'p str>,
    },
    /// Redirect to the first candidate that passes the server's checks (the
    /// blob exists there, the upstream is healthy). The last candidate is the
    /// default upstream, which is never checked. Without checks, the first
    /// candidate is the redirect.
    Candidates {
        /// The redirect status.
        status: StatusCode,
        /// The places to try, in order; never empty.
        candidates: Vec<Candidate<'p>>,
        /// The upstream and rule that chose the first candidate.
        route: Route<'p>,
    },
    /// Respond to the API version check with 200 and
    /// `Docker-Distribution-Api-Version: registry/2.0`.
    AnswerApiVersion {
        /// The upstream and rule that chose it.
        route: Route<'p>,
    },
    /// Fetch from an upstream with `auth = "resolve"` and respond from its
    /// response: documents (manifests, tag lists, referrers) with their
    /// body, blobs with a redirect to the storage URL the upstream names.
    /// A server without an HTTP client responds 503 (see
    /// [`Decision::into_response`]).
    Resolve {
        /// The upstream and rule that chose it.
        route: Route<'p>,
        /// The upstream to fetch from: the route's upstream, or the default
        /// upstream when the route's has no mirror for the client.
        target: &'p Upstream,
        /// The absolute URL of the request at the upstream, with the query.
        url: String,
        /// The repository name at the upstream, as token scopes name it
        /// (`library/nginx` for `nginx` on Docker Hub).
        repository: String,
        /// The repository name as the client wrote it, which links to
        /// further pages of a list must name for the client.
        name: String,
        /// Whether the response is addressed by digest (a blob, or a
        /// manifest by digest), so that it never changes and may be
        /// cached until evicted.
        by_digest: bool,
    },
    /// Respond with an OCI error.
    Reject(Rejection),
    /// The path is outside `/v2`: not for the redirector.
    NotRegistry,
}

/// A decision on one request, with what it was based on.
#[derive(Debug, Clone)]
pub struct Decision<'p> {
    /// The request kind, for requests that can be redirected.
    pub kind: Option<RequestKind>,
    /// The client address used, and where it came from.
    pub client: ClientAddress,
    /// The cloud and region of the client's range, from the range files.
    pub label: Option<&'p ClientLabel>,
    /// Whether the request was `HEAD`, whose responses have no body.
    pub is_head: bool,
    /// The action to take.
    pub outcome: Outcome<'p>,
}

impl<'p> Decision<'p> {
    /// Returns the status of the response, or `None` when the request is
    /// not a registry request or the status comes from the upstream
    /// ([`Outcome::Resolve`]).
    pub fn status(&self) -> Option<StatusCode> {
        match &self.outcome {
            Outcome::Redirect { status, .. } | Outcome::Candidates { status, .. } => Some(*status),
            Outcome::AnswerApiVersion { .. } => Some(StatusCode::OK),
            Outcome::Reject(rejection) => Some(rejection.status),
            Outcome::Resolve { .. } | Outcome::NotRegistry => None,
        }
    }

    /// Returns the URL a server fetches from, for [`Outcome::Resolve`].
    pub fn upstream_url(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Resolve { url, .. } => Some(url),
            _ => None,
        }
    }

    /// Returns the `Location` of a redirect, or of the first candidate.
    pub fn location(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Redirect { location, .. } => Some(location),
            Outcome::Candidates { candidates, .. } => candidates
                .first()
                .map(|candidate| candidate.location.as_str()),
            _ => None,
        }
    }

    /// Returns the upstream that the redirect points to, with the region of
    /// its mirror: for candidates, the first one; for resolve mode, the
    /// upstream fetched from.
    pub fn target(&self) -> Option<(&'p Upstream, Option<&'p str>)> {
        match &self.outcome {
            Outcome::Redirect { target, region, .. } => Some((*target, *region)),
            Outcome::Resolve { target, .. } => Some((*target, None)),
            Outcome::Candidates { candidates, .. } => candidates
                .first()
                .map(|candidate| (candidate.upstream, candidate.region)),
            _ => None,
        }
    }

    /// Returns the candidates a server checks in order, for a decision with several.
    pub fn candidates(&self) -> &[Candidate<'p>] {
        match &self.outcome {
            Outcome::Candidates { candidates, .. } => candidates,
            _ => &[],
        }
    }

    /// Returns the upstream and rule, when an upstream was chosen.
    pub fn route(&self) -> Option<Route<'p>> {
        match &self.outcome {
            Outcome::Redirect { route, .. }
            | Outcome::Candidates { route, .. }
            | Outcome::Resolve { route, .. }
            | Outcome::AnswerApiVersion { route } => Some(*route),
            Outcome::Reject(_) | Outcome::NotRegistry => None,
        }
    }

    /// Returns a short name for the outcome: `redirect`, `candidates`,
    /// `resolve`, `answer`, `reject` or `not_registry`.
    pub fn outcome_name(&self) -> &'static str {
        match self.outcome {
            Outcome::Redirect { .. } => "redirect",
            Outcome::Candidates { .. } => "candidates",
            Outcome::Resolve { .. } => "resolve",
            Outcome::AnswerApiVersion { .. } => "answer",
            Outcome::Reject(_) => "reject",
            Outcome::NotRegistry => "not_registry",
        }
    }
}

/// Prints the decision and its reasons, one `key: value` a line, with no
/// newline after the last line.
impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = String::new();
        self.write_lines(&mut lines)?;
        f.write_str(lines.strip_suffix('\n').unwrap_or(&lines))
    }
}

impl Decision<'_> {
    /// Writes the lines of the `Display` form, each ending with a newline.
    fn write_lines(&self, out: &mut String) -> fmt::Result {
        use fmt::Write as _;

        write!(out, "decision: {}", self.outcome_name())?;
        if let Some(status) = self.status() {
            write!(out, " {}", status.as_u16())?;
        }
        writeln!(out)?;
        if let Some(location) = self.location() {
            writeln!(out, "location: {location}")?;
        }
        if let Outcome::Resolve { url, target, .. } = &self.outcome {
            writeln!(out, "upstream url: {url}")?;
            let blobs = match target.resolve() {
                Some(settings) if settings.blob_proxy => {
                    "redirected to storage, or streamed through when the upstream serves them"
                }
                _ => "redirected to storage",
            };
            writeln!(
                out,
                "resolve: the server fetches with a token from upstream {}; documents pass through, blobs are {blobs}",
                target.name()
            )?;
        }
        if let Outcome::Reject(rejection) = &self.outcome {
            writeln!(out, "error: {} {}", rejection.code, rejection.message)?;
        }
        if let Some(route) = self.route() {
            writeln!(out, "upstream: {}", route.upstream.name())?;
            match route.rule {
                Some(rule) => writeln!(out, "rule: {} (rules[{}])", rule.name(), rule.index())?,
                None => writeln!(out, "rule: none matched; default upstream")?,
            }
            if route.canary {
                writeln!(out, "canary: yes, the client is in the rule's canary share")?;
            }
            if let Outcome::Redirect { target, region, .. } = &self.outcome {
                if !std::ptr::eq(*target, route.upstream) {
                    writeln!(
                        out,
                        "redirected to: upstream {}, because {} has no mirror for this client",
                        target.name(),
                        route.upstream.name()
                    )?;
                } else if let Some(region) = region {
                    writeln!(out, "mirror region: {region}")?;
                }
            }
        }
        for (position, candidate) in self.candidates().iter().enumerate() {
            let region = candidate.region.unwrap_or("-");
            let checks = match (candidate.verify, candidate.health_checked) {
                (true, true) => ", blob verified, health checked",
                (true, false) => ", blob verified",
                (false, true) => ", health checked",
                (false, false) => "",
            };
            writeln!(
                out,
                "candidate {}: {} (upstream {}, region {region}{checks})",
                position + 1,
                candidate.location,
                candidate.upstream.name()
            )?;
        }
        match self.kind {
            Some(kind) => writeln!(out, "kind: {kind}")?,
            None => writeln!(out, "kind: none")?,
        }
        match self.client.addr {
            Some(addr) => writeln!(out, "client: {addr} (from {})", self.client.source)?,
            None => writeln!(out, "client: unknown")?,
        }
        if let Some(label) = self.label {
            let cloud = label.cloud().unwrap_or("-");
            let region = label.region().unwrap_or("-");
            writeln!(out, "client range: cloud {cloud}, region {region}")?;
        }
        if let Some(note) = self.client.note {
            writeln!(out, "note: {note}")?;
        }
        Ok(())
    }
}

/// Decides what to do with a request under a policy. Every input gets an
/// [`Outcome`]: invalid input is a rejection, not an error.
pub fn decide<'p>(policy: &'p Policy, request: &RequestView<'_>) -> Decision<'p> {
    let client = resolve_client(request.peer, request.headers, policy.trusted_proxies());
    let classification = policy.classify_client(client.addr);
    let (client_rules, label) = (classification.rules, classification.label);
    let is_head = request.method == Method::HEAD;
    let is_read = is_head || request.method == Method::GET;
    let decision = |kind, outcome| Decision {
        kind,
        client,
        label,
        is_head,
        outcome,
    };

    let path = classify(request.path);
    if let Ok(RegistryPath::NotRegistry) = path {
        return decision(None, Outcome::NotRegistry);
    }
    if let Some(rejection) = host_rejection(request) {
        return decision(None, Outcome::Reject(rejection));
    }
    let path = match path {
        Ok(path) => path,
        Err(error) => {
            let outcome = if is_read {
                Outcome::Reject(path_rejection(error))
            } else {
                Outcome::Reject(METHOD_NOT_ALLOWED)
            };
            return decision(None, outcome);
        }
    };
    let kind = path.kind();
    if !is_read {
        return decision(kind, Outcome::Reject(METHOD_NOT_ALLOWED));
    }
    let Some(kind) = kind else {
        return decision(None, Outcome::Reject(unsupported_rejection(&path)));
    };

    // Working out the host scans the query and the host, so it is left
    // out when no rule could use it.
    let host = if policy.matches_hosts() {
        requested_host(request.query, request.host)
    } else {
        None
    };
    let name = path.name();
    let route = choose_route(
        policy,
        client_rules,
        label,
        kind,
        name,
        host.as_deref(),
        client.addr,
    );
    let resolves = route.upstream.resolve().is_some();
    if kind == RequestKind::ApiVersionCheck
        && (resolves || route.upstream.api_version_check() == ApiVersionCheck::Answer)
    {
        // In resolve mode the server authenticates itself, so the client
        // must never meet the upstream's challenge.
        return decision(Some(kind), Outcome::AnswerApiVersion { route });
    }
    if let (true, Some(base)) = (resolves, route.upstream.base()) {
        let outcome = resolve_outcome(route, route.upstream, base, &path, request.query);
        return decision(Some(kind), outcome);
    }

    let outcome = redirect_outcome(
        policy,
        route,
        classification.label_id,
        &path,
        kind,
        request.query,
    );
    decision(Some(kind), outcome)
}

/// Picks the upstream: the first matching rule's (or its canary's), else the default.
fn choose_route<'p>(
    policy: &'p Policy,
    client_rules: Option<&[u64]>,
    label: Option<&ClientLabel>,
    kind: RequestKind,
    name: Option<&str>,
    host: Option<&str>,
    client: Option<IpAddr>,
) -> Route<'p> {
    let Some(rule) = policy.match_rule(client_rules, label, kind, name, host) else {
        return Route {
            upstream: policy.default_upstream(),
            rule: None,
            canary: false,
        };
    };
    let upstream = policy.rule_upstream(rule);
    if let Some(canary) = rule.canary {
        let canary_upstream = policy.upstream_at(canary.upstream);
        let compatible =
            kind == RequestKind::Blob || canary_upstream.kind() == UpstreamKind::Registry;
        if compatible && canary_bucket(client, name) < canary.buckets {
            return Route {
                upstream: canary_upstream,
                rule: Some(rule),
                canary: true,
            };
        }
    }
    Route {
        upstream,
        rule: Some(rule),
        canary: false,
    }
}

/// Builds the redirect, or the ordered candidates when a server has checks
/// to make: the route's upstream by the client's region (its mirror, then
/// the mirrors of the fallback regions, then its region-less base), then the
/// default upstream.
fn redirect_outcome<'p>(
    policy: &'p Policy,
    route: Route<'p>,
    label: Option<u32>,
    path: &RegistryPath<'_>,
    kind: RequestKind,
    query: Option<&str>,
) -> Outcome<'p> {
    let is_blob = kind == RequestKind::Blob;
    let default = policy.default_upstream();
    let status = policy.redirect_status();
    // Without runtime checks only the first candidate counts: the chosen
    // upstream's first base for the client, else the default's.
    let checked =
        !std::ptr::eq(route.upstream, default) && route.upstream.needs_runtime_check(is_blob);
    if !checked {
        let first = route
            .upstream
            .first_label_base(label)
            .map(|(base, region)| (route.upstream, base, region))
            .or_else(|| {
                default
                    .first_label_base(label)
                    .map(|(base, region)| (default, base, region))
            });
        if let Some((target, base, region)) = first {
            if target.resolve().is_some() {
                return resolve_outcome(route, target, base, path, query);
            }
            return Outcome::Redirect {
                status,
                location: target.location(base, path, query),
                route,
                target,
                region,
            };
        }
    }

    let mut first: Option<(&'p Upstream, &'p str, Option<&'p str>)> = None;
    let mut needs_checks = false;
    let visit_all = |visit: &mut dyn FnMut(&'p Upstream, &'p str, Option<&'p str>)| {
        route
            .upstream
            .for_each_label_base(label, |base, region| visit(route.upstream, base, region));
        if !std::ptr::eq(route.upstream, default) {
            default.for_each_label_base(label, |base, region| visit(default, base, region));
        }
    };

    // First pass, without allocating: the first candidate, and whether any
    // candidate before the default needs a runtime check.
    visit_all(&mut |upstream, base, region| {
        if first.is_none() {
            first = Some((upstream, base, region));
        }
        if !std::ptr::eq(upstream, default) && upstream.needs_runtime_check(is_blob) {
            needs_checks = true;
        }
    });
    let Some((target, base, region)) = first else {
        // The default upstream always has a base, so this is not expected.
        let location = default.location(default.base().unwrap_or_default(), path, query);
        return Outcome::Redirect {
            status,
            location,
            route,
            target: default,
            region: None,
        };
    };
    if !needs_checks {
        if target.resolve().is_some() {
            return resolve_outcome(route, target, base, path, query);
        }
        let location = target.location(base, path, query);
        return Outcome::Redirect {
            status,
            location,
            route,
            target,
            region,
        };
    }

    // NOTE: a default upstream with auth = "resolve" that ends a list of
    // candidates is redirected to like any other candidate, because the
    // checks pick among redirects.
    let mut candidates: Vec<Candidate<'p>> = Vec::new();
    visit_all(&mut |upstream, base, region| {
        let location = upstream.location(base, path, query);
        if candidates
            .iter()
            .any(|candidate| candidate.location == location)
        {
            return;
        }
        let is_default = std::ptr::eq(upstream, default);
        candidates.push(Candidate {
            upstream,
            region,
            location,
            verify: is_blob && upstream.verify_blobs() && !is_default,
            health_checked: upstream.health_check().is_some() && !is_default,
        });
    });
    Outcome::Candidates {
        status,
        candidates,
        route,
    }
}

/// Builds the resolve-mode outcome for a request to `target`, whose base
/// is `base`.
fn resolve_outcome<'p>(
    route: Route<'p>,
    target: &'p Upstream,
    base: &str,
    path: &RegistryPath<'_>,
    query: Option<&str>,
) -> Outcome<'p> {
    let by_digest = match *path {
        RegistryPath::Blob { .. } => true,
        RegistryPath::Manifest { reference, .. } => reference.contains(':'),
        _ => false,
    };
    Outcome::Resolve {
        route,
        target,
        url: target.location(base, path, query),
        repository: target.upstream_repository(path.name().unwrap_or_default()),
        name: path.name().unwrap_or_default().to_owned(),
        by_digest,
    }
}

const METHOD_NOT_ALLOWED: Rejection = Rejection {
    status: StatusCode::METHOD_NOT_ALLOWED,
    code: ErrorCode::Unsupported,
    message: "this registry is read-only: only GET and HEAD are allowed; push to the upstream registry directly",
};

/// Returns the 400 rejection that RFC 9112 (section 3.2) requires for a
/// request with more than one `Host` line, or with a host that is not a
/// host and optional port. From HTTP/2 on, a `Host` line that names
/// another host than `:authority` gets it too (RFC 9113, section 8.3.1).
/// Each could make the host that rules match differ from the host that a
/// proxy in front of the server read.
fn host_rejection(request: &RequestView<'_>) -> Option<Rejection> {
    let headers = request.headers;
    // The map has more values than names only when some name repeats, so
    // most requests skip the look-up of `Host`.
    let repeated =
        headers.len() != headers.keys_len() && headers.get_all(HOST).iter().nth(1).is_some();
    // The checked host is the one rules match: the first `Host` line, or
    // the authority of the request target, which the HTTP stack parsed.
    // Without one, a `Host` line may still be there that an adapter could
    // not read as text (bytes that are not visible ASCII).
    let invalid = match request.host {
        Some(host) => !is_host_value(host.as_bytes()),
        None => headers
            .get(HOST)
            .is_some_and(|value| !is_host_value(value.as_bytes())),
    };
    // An HTTP/2 request's host is its `:authority`. Only such requests
    // look `Host` up a second time, so HTTP/1.1 requests cost no more.
    let conflicting = request.version >= Version::HTTP_2
        && request.host.is_some_and(|host| {
            headers.get(HOST).is_some_and(|value| {
                value
                    .to_str()
                    .map_or(true, |value| !same_authority(value, host))
            })
        });
    let message = if repeated {
        "the request has more than one Host header; send exactly one"
    } else if invalid {
        "the Host header is not a host name or address with an optional port"
    } else if conflicting {
        "the Host header names another host than :authority; send the same host in both, or only :authority"
    } else {
        return None;
    };
    Some(Rejection {
        status: StatusCode::BAD_REQUEST,
        code: ErrorCode::Unsupported,
        message,
    })
}

/// The bytes of a host name or an IPv4 address: letters, digits, `-`, `.`
/// and `_`.
static NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut index = 0;
    while index < table.len() {
        let byte = index as u8;
        table[index] = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_');
        index += 1;
    }
    table
};

/// Returns whether `value` can be a host and optional port: a host name
/// or IPv4 address of letters, digits, `-`, `.` and `_`, or an IPv6
/// address in brackets (with `%25` and a zone), then `:` and the port's
/// digits.
///
/// RFC 3986 also allows `~` and the sub-delimiters (`!$&'()*+,;=`) in a
/// registered name, but no DNS name has them, and a comma is what a proxy
/// writes when it joins two `Host` lines into one.
fn is_host_value(value: &[u8]) -> bool {
    // One table look-up per byte, without stopping early, because this runs
    // on every request and host names are too short for a vectorized loop.
    let is_name = |bytes: &[u8]| {
        bytes.iter().fold(true, |is_name, &byte| {
            is_name & NAME_BYTES[usize::from(byte)]
        })
    };
    if is_name(value) {
        return true;
    }

    if value.first() != Some(&b'[') {
        return match value.iter().position(|&byte| byte == b':') {
            Some(colon) => {
                is_name(&value[..colon]) && value[colon + 1..].iter().all(u8::is_ascii_digit)
            }
            None => false,
        };
    }

    // An IPv6 literal: `[`, the address, `]`, then nothing or a port.
    let Some(literal) = value.strip_prefix(b"[") else {
        return false;
    };
    let Some(close) = literal.iter().position(|&byte| byte == b']') else {
        return false;
    };
    let (inside, after) = (&literal[..close], &literal[close + 1..]);
    let port_ok =
        after.is_empty() || (after[0] == b':' && after[1..].iter().all(u8::is_ascii_digit));

    // A zone (RFC 6874) is `%25`, then unreserved characters and
    // percent-encoded bytes.
    let (address, zone) = match inside.iter().position(|&byte| byte == b'%') {
        Some(percent) => inside.split_at(percent),
        None => (inside, &b""[..]),
    };
    let zone_ok = zone
        .iter()
        .all(|&byte| NAME_BYTES[usize::from(byte)] || matches!(byte, b'~' | b'%'));
    let is_ipv6 =
        std::str::from_utf8(address).is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok());
    port_ok && zone_ok && is_ipv6
}

fn path_rejection(error: PathError) -> Rejection {
    let code = match error {
        PathError::NameInvalid => ErrorCode::NameInvalid,
        PathError::ReferenceInvalid => ErrorCode::ManifestUnknown,
        PathError::DigestInvalid => ErrorCode::DigestInvalid,
        PathError::UnknownEndpoint => ErrorCode::Unsupported,
    };
    let message = error.message();
    Rejection {
        status: StatusCode::NOT_FOUND,
        code,
        message,
    }
}

fn unsupported_rejection(path: &RegistryPath<'_>) -> Rejection {
    match path {
        RegistryPath::BlobUpload { .. } => Rejection {
            status: StatusCode::NOT_FOUND,
            code: ErrorCode::BlobUploadUnknown,
            message: "this registry is read-only and has no upload sessions; push to the upstream registry directly",
        },
        _ => Rejection {
            status: StatusCode::NOT_FOUND,
            code: ErrorCode::Unsupported,
            message: "the catalog is not available through this redirector; list repositories on the upstream registry",
        },
    }
}

/// Returns the registry host the client requested: containerd's `ns` query
/// parameter when it talks to a mirror, else the `Host`. Drops the port and
/// a fully qualified name's final dot, so `docker.io.:443` is `docker.io`.
fn requested_host<'a>(query: Option<&'a str>, host: Option<&'a str>) -> Option<Cow<'a, str>> {
    let namespace = query.and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("ns="))
            .filter(|value| !value.is_empty())
    });
    // The value may be percent-encoded, as in `ns=host%3A5000` for a
    // registry with a port.
    let host = match namespace {
        Some(value) if value.contains('%') => {
            Cow::Owned(bare_host(&percent_decode(value)?).to_owned())
        }
        Some(value) => Cow::Borrowed(bare_host(value)),
        None => Cow::Borrowed(bare_host(host?)),
    };
    Some(host)
}

/// Returns `host` without its port and without a final dot.
fn bare_host(host: &str) -> &str {
    without_final_dot(strip_port(host))
}

/// Returns `host` without the final dot of a fully qualified name.
fn without_final_dot(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

/// Decodes the `%XX` escapes of a query value, or returns `None` when the
/// result is not UTF-8. A `%` without two hex digits after it stays.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let escaped = bytes
            .get(index + 1..index + 3)
            .filter(|_| byte == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded_byte) => {
                decoded.push(decoded_byte);
                index += 3;
            }
            None => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

fn strip_port(host: &str) -> &str {
    split_port(host).0
}

/// Splits a host and optional port into the host (an IPv6 address without
/// its brackets) and the port's digits. An empty port is no port.
fn split_port(host: &str) -> (&str, Option<&str>) {
    if let Some(bracketed) = host.strip_prefix('[') {
        let (address, rest) = bracketed.split_once(']').unwrap_or((bracketed, ""));
        let port = rest.strip_prefix(':').filter(|port| !port.is_empty());
        return (address, port);
    }
    // A byte loop, not `rsplit_once`, whose searcher costs more than the
    // whole scan of a host name, on every request.
    let Some(colon) = host.bytes().rposition(|b| b == b':') else {
        return (host, None);
    };
    let port_is_digits = host.bytes().skip(colon + 1).all(|b| b.is_ascii_digit());
    match (host.get(..colon), host.get(colon + 1..)) {
        (Some(name), Some(port)) if port_is_digits => (name, Some(port).filter(|p| !p.is_empty())),
        _ => (host, None),
    }
}

/// Returns whether two authorities name the same host and port, letter
/// case and a final dot aside. A missing port matches 80 or 443, the default ports of http
/// and https, because the view does not carry the scheme.
fn same_authority(left: &str, right: &str) -> bool {
    let (left_host, left_port) = split_port(left);
    let (right_host, right_port) = split_port(right);
    let ports_agree = match (left_port, right_port) {
        (Some(left), Some(right)) => left == right,
        (None, None) => true,
        (Some(port), None) | (None, Some(port)) => port == "80" || port == "443",
    };
    ports_agree && without_final_dot(left_host).eq_ignore_ascii_case(without_final_dot(right_host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientSource;
    use crate::policy::{PolicySpec, RuleSpec, UpstreamSpec};

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn policy() -> Policy {
        let mut spec = PolicySpec::new("k8s");
        spec.trusted_proxies = vec!["10.0.0.0/8".into()];
        spec.upstreams
            .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
        spec.upstreams.insert(
            "hub".into(),
            UpstreamSpec {
                library_prefix: true,
                api_version_check: ApiVersionCheck::Redirect,
                ..UpstreamSpec::new("https://registry-1.docker.io")
            },
        );
        spec.upstreams.insert(
            "prod".into(),
            UpstreamSpec {
                path_prefix: Some("k8s-artifacts-prod/images".into()),
                ..UpstreamSpec::new("https://mirror.example:8443/base")
            },
        );
        spec.upstreams
            .insert("quay".into(), UpstreamSpec::new("https://quay.example"));
        spec.rules.push(RuleSpec {
            clients: vec!["192.168.0.0/24".into(), "2001:db8::/32".into()],
            ..RuleSpec::new("lab", "hub")
        });
        spec.rules.push(RuleSpec {
            kinds: vec![RequestKind::Blob],
            repositories: vec!["kube*".into()],
            ..RuleSpec::new("kube-blobs", "prod")
        });
        spec.rules.push(RuleSpec {
            hosts: vec!["quay.io".into()],
            ..RuleSpec::new("quay-host", "quay")
        });
        Policy::compile(&spec).unwrap()
    }

    struct Request {
        method: Method,
        path: String,
        query: Option<String>,
        host: Option<String>,
        peer: Option<IpAddr>,
        headers: HeaderMap,
    }

    impl Request {
        fn get(path: &str) -> Self {
            Request {
                method: Method::GET,
                path: path.to_owned(),
                query: None,
                host: Some("registry.example.com".into()),
                peer: Some("203.0.113.1".parse().unwrap()),
                headers: HeaderMap::new(),
            }
        }

        fn method(mut self, method: Method) -> Self {
            self.method = method;
            self
        }

        fn peer(mut self, peer: &str) -> Self {
            self.peer = Some(peer.parse().unwrap());
            self
        }

        fn query(mut self, query: &str) -> Self {
            self.query = Some(query.into());
            self
        }

        fn host(mut self, host: &str) -> Self {
            self.host = Some(host.into());
            self
        }

        fn header(mut self, name: &'static str, value: &str) -> Self {
            self.headers.append(name, value.parse().unwrap());
            self
        }

        fn decide<'p>(&self, policy: &'p Policy) -> Decision<'p> {
            let view = RequestView {
                method: &self.method,
                path: &self.path,
                query: self.query.as_deref(),
                host: self.host.as_deref(),
                peer: self.peer,
                headers: &self.headers,
                version: Version::HTTP_11,
            };
            decide(policy, &view)
        }
    }

    fn rejection(decision: &Decision<'_>) -> Rejection {
        match decision.outcome {
            Outcome::Reject(rejection) => rejection,
            ref other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn default_upstream_redirect_for_each_kind() {
        let policy = policy();
        for (path, location) in [
            (
                "/v2/pause/manifests/3.10",
                "https://registry.k8s.io/v2/pause/manifests/3.10",
            ),
            (
                &format!("/v2/a/b/manifests/{DIGEST}"),
                &format!("https://registry.k8s.io/v2/a/b/manifests/{DIGEST}"),
            ),
            (
                &format!("/v2/library/nginx/blobs/{DIGEST}"),
                &format!("https://registry.k8s.io/v2/library/nginx/blobs/{DIGEST}"),
            ),
            ("/v2/a/tags/list", "https://registry.k8s.io/v2/a/tags/list"),
            (
                &format!("/v2/a/referrers/{DIGEST}"),
                &format!("https://registry.k8s.io/v2/a/referrers/{DIGEST}"),
            ),
        ] {
            let decision = Request::get(path).decide(&policy);
            assert_eq!(
                decision.status(),
                Some(StatusCode::TEMPORARY_REDIRECT),
                "{path}"
            );
            assert_eq!(decision.location(), Some(location), "{path}");
            let route = decision.route().unwrap();
            assert_eq!(route.upstream.name(), "k8s");
            assert!(route.rule.is_none());
        }
    }

    #[test]
    fn api_version_check_answered() {
        let policy = policy();
        for path in ["/v2/", "/v2"] {
            let decision = Request::get(path).decide(&policy);
            assert!(
                matches!(decision.outcome, Outcome::AnswerApiVersion { .. }),
                "{path}"
            );
            assert_eq!(decision.status(), Some(StatusCode::OK));
            assert_eq!(decision.kind, Some(RequestKind::ApiVersionCheck));
        }
    }

    #[test]
    fn api_version_check_redirected_per_upstream() {
        let policy = policy();
        let decision = Request::get("/v2/").peer("192.168.0.9").decide(&policy);
        assert_eq!(
            decision.location(),
            Some("https://registry-1.docker.io/v2/")
        );
    }

    #[test]
    fn client_range_rule_with_library_prefix() {
        let policy = policy();
        let decision = Request::get("/v2/nginx/manifests/latest")
            .peer("192.168.0.9")
            .decide(&policy);
        assert_eq!(
            decision.location(),
            Some("https://registry-1.docker.io/v2/library/nginx/manifests/latest")
        );
        assert_eq!(decision.route().unwrap().rule.unwrap().name(), "lab");

        let decision = Request::get("/v2/bitnami/redis/manifests/7")
            .peer("192.168.0.9")
            .decide(&policy);
        assert_eq!(
            decision.location(),
            Some("https://registry-1.docker.io/v2/bitnami/redis/manifests/7")
        );
    }

    #[test]
    fn ipv6_and_ipv4_mapped_clients() {
        let policy = policy();
        let decision = Request::get("/v2/a/tags/list")
            .peer("2001:db8::5")
            .decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "hub");
        let decision = Request::get("/v2/a/tags/list")
            .peer("::ffff:192.168.0.7")
            .decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "hub");
        assert_eq!(decision.client.addr, Some("192.168.0.7".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_rule_network_matches_ipv4() {
        let mut spec = PolicySpec::new("k8s");
        spec.upstreams
            .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
        spec.upstreams
            .insert("quay".into(), UpstreamSpec::new("https://quay.example"));
        spec.rules.push(RuleSpec {
            clients: vec!["::ffff:198.51.100.0/120".into()],
            ..RuleSpec::new("mapped", "quay")
        });
        let policy = Policy::compile(&spec).unwrap();
        for (peer, expected) in [
            ("198.51.100.9", "quay"),
            ("::ffff:198.51.100.9", "quay"),
            ("198.51.101.1", "k8s"),
        ] {
            let decision = Request::get("/v2/a/tags/list").peer(peer).decide(&policy);
            assert_eq!(
                decision.route().unwrap().upstream.name(),
                expected,
                "{peer}"
            );
        }
    }

    #[test]
    fn kind_and_repository_rule_with_path_prefix() {
        let policy = policy();
        let decision = Request::get(&format!("/v2/kube-proxy/blobs/{DIGEST}")).decide(&policy);
        assert_eq!(
            decision.location(),
            Some(format!("https://mirror.example:8443/base/v2/k8s-artifacts-prod/images/kube-proxy/blobs/{DIGEST}").as_str())
        );
        assert_eq!(decision.route().unwrap().rule.unwrap().name(), "kube-blobs");

        // Same repository, another kind: the rule does not match.
        let decision = Request::get("/v2/kube-proxy/manifests/v1").decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "k8s");
    }

    #[test]
    fn host_rule_by_host_header_and_ns_parameter() {
        let policy = policy();
        let decision = Request::get("/v2/a/manifests/1")
            .host("Quay.io:443")
            .decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "quay");

        let decision = Request::get("/v2/a/manifests/1")
            .query("ns=quay.io")
            .decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "quay");
        assert_eq!(
            decision.location(),
            Some("https://quay.example/v2/a/manifests/1?ns=quay.io")
        );

        let decision = Request::get("/v2/a/manifests/1")
            .host("registry.example.com")
            .decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "k8s");
    }

    #[test]
    fn host_rule_drops_final_dot() {
        let policy = policy();
        for host in ["quay.io.", "QUAY.IO.:443"] {
            let decision = Request::get("/v2/a/manifests/1").host(host).decide(&policy);
            assert_eq!(decision.route().unwrap().upstream.name(), "quay", "{host}");
        }
        let decision = Request::get("/v2/a/manifests/1")
            .query("ns=quay.io.")
            .decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "quay");

        // Only one dot is dropped, so a name ending in two matches nothing.
        let decision = Request::get("/v2/a/manifests/1")
            .host("quay.io..")
            .decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "k8s");
    }

    #[test]
    fn host_rule_decodes_ns_value() {
        let policy = policy();
        for query in [
            "ns=quay.io%3A5000",
            "ns=QUAY.IO%3a443",
            "ns=quay%2Eio",
            "ns=quay.io.",
        ] {
            let decision = Request::get("/v2/a/manifests/1")
                .query(query)
                .decide(&policy);
            assert_eq!(decision.route().unwrap().upstream.name(), "quay", "{query}");
        }
        // Not UTF-8 once decoded, or a different host: no host rule matches.
        for query in ["ns=quay.io%FF", "ns=quay.io%3A5000x", "ns=quay%"] {
            let decision = Request::get("/v2/a/manifests/1")
                .query(query)
                .decide(&policy);
            assert_eq!(decision.route().unwrap().upstream.name(), "k8s", "{query}");
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let policy = policy();
        // The lab rule comes before the kube-blobs rule.
        let decision = Request::get(&format!("/v2/kube-proxy/blobs/{DIGEST}"))
            .peer("192.168.0.9")
            .decide(&policy);
        assert_eq!(decision.route().unwrap().rule.unwrap().name(), "lab");
    }

    #[test]
    fn query_is_kept_and_encoded() {
        let policy = policy();
        let decision = Request::get("/v2/a/manifests/1")
            .query("ns=docker.io&x=%2F")
            .decide(&policy);
        assert_eq!(
            decision.location(),
            Some("https://registry.k8s.io/v2/a/manifests/1?ns=docker.io&x=%2F")
        );

        let decision = Request::get("/v2/a/manifests/1")
            .query("a=b c#d\"<>%zz\r\n")
            .decide(&policy);
        assert_eq!(
            decision.location(),
            Some("https://registry.k8s.io/v2/a/manifests/1?a=b%20c%23d%22%3C%3E%25zz%0D%0A")
        );
    }

    #[test]
    fn location_capacity_is_exact() {
        let policy = policy();
        let decision = Request::get("/v2/nginx/manifests/latest")
            .peer("192.168.0.9")
            .query("a=%zz b")
            .decide(&policy);
        let location = decision.location().unwrap();
        let Outcome::Redirect {
            location: owned, ..
        } = &decision.outcome
        else {
            unreachable!()
        };
        assert_eq!(owned.capacity(), location.len());
    }

    #[test]
    fn other_methods_rejected_with_405() {
        let policy = policy();
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ] {
            for path in [
                "/v2/a/blobs/uploads/",
                "/v2/a/manifests/1",
                "/v2/",
                "/v2/%2e",
            ] {
                let decision = Request::get(path).method(method.clone()).decide(&policy);
                let rejection = rejection(&decision);
                assert_eq!(
                    rejection.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
                assert_eq!(rejection.code, ErrorCode::Unsupported);
            }
        }
    }

    #[test]
    fn head_is_a_read() {
        let policy = policy();
        let decision = Request::get("/v2/a/manifests/1")
            .method(Method::HEAD)
            .decide(&policy);
        assert!(decision.is_head);
        assert_eq!(decision.status(), Some(StatusCode::TEMPORARY_REDIRECT));
    }

    #[test]
    fn invalid_paths_rejected_with_404() {
        let policy = policy();
        for (path, code) in [
            (
                "/v2/library%2Fnginx/manifests/latest",
                ErrorCode::NameInvalid,
            ),
            ("/v2/Upper/manifests/latest", ErrorCode::NameInvalid),
            ("/v2/a/manifests/-bad", ErrorCode::ManifestUnknown),
            ("/v2/a/blobs/sha256:zz", ErrorCode::DigestInvalid),
            ("/v2/a/referrers/latest", ErrorCode::DigestInvalid),
            ("/v2/_catalog", ErrorCode::Unsupported),
            ("/v2/a/blobs/uploads/123", ErrorCode::BlobUploadUnknown),
            ("/v2/a/other/thing", ErrorCode::Unsupported),
        ] {
            let decision = Request::get(path).decide(&policy);
            let rejection = rejection(&decision);
            assert_eq!(rejection.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(rejection.code, code, "{path}");
        }
    }

    #[test]
    fn paths_outside_v2_are_not_registry() {
        let policy = policy();
        for method in [Method::GET, Method::POST] {
            let decision = Request::get("/healthz").method(method).decide(&policy);
            assert!(matches!(decision.outcome, Outcome::NotRegistry));
            assert_eq!(decision.status(), None);
        }
    }

    #[test]
    fn forwarded_client_from_trusted_proxy_picks_rule() {
        let policy = policy();
        let decision = Request::get("/v2/a/tags/list")
            .peer("10.1.1.1")
            .header("x-forwarded-for", "192.168.0.44")
            .decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "hub");
        assert_eq!(decision.client.source, ClientSource::XForwardedFor);

        // The same header from an untrusted peer changes nothing.
        let decision = Request::get("/v2/a/tags/list")
            .peer("203.0.113.1")
            .header("x-forwarded-for", "192.168.0.44")
            .decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "k8s");
        assert_eq!(decision.client.source, ClientSource::Peer);
    }

    #[test]
    fn unknown_peer_skips_client_rules() {
        let policy = policy();
        let mut request = Request::get("/v2/a/tags/list");
        request.peer = None;
        let decision = request.decide(&policy);
        assert_eq!(decision.route().unwrap().upstream.name(), "k8s");
        assert_eq!(decision.client.source, ClientSource::Unknown);
    }

    #[test]
    fn explanation_names_rule_client_and_kind() {
        let policy = policy();
        let decision = Request::get("/v2/nginx/manifests/latest")
            .peer("192.168.0.9")
            .decide(&policy);
        let text = decision.to_string();
        assert!(text.contains("decision: redirect 307"), "{text}");
        assert!(text.contains("rule: lab (rules[0])"), "{text}");
        assert!(text.contains("client: 192.168.0.9 (from peer)"), "{text}");
        assert!(text.contains("kind: manifest"), "{text}");
        assert!(text.contains("upstream: hub"), "{text}");
        assert!(!text.ends_with('\n'), "{text:?}");
    }

    #[test]
    fn request_view_from_http_request() {
        let request = http::Request::get("http://quay.io/v2/a/manifests/1?ns=x")
            .header("host", "other.example")
            .body(())
            .unwrap();
        let view = RequestView::from_request(&request, None);
        assert_eq!(view.host, Some("quay.io"));
        assert_eq!(view.path, "/v2/a/manifests/1");
        assert_eq!(view.query, Some("ns=x"));

        let request = http::Request::get("/v2/")
            .header("host", "h.example:5000")
            .body(())
            .unwrap();
        let view = RequestView::from_request(&request, None);
        assert_eq!(view.host, Some("h.example:5000"));
    }

    #[test]
    fn lacks_host_only_for_http11_without_any_host() {
        let request = |version, target: &str, host: Option<&[u8]>| {
            let mut builder = http::Request::get(target).version(version);
            if let Some(host) = host {
                builder = builder.header("host", http::HeaderValue::from_bytes(host).unwrap());
            }
            builder.body(()).unwrap()
        };
        let lacks =
            |request: &http::Request<()>| RequestView::from_request(request, None).lacks_host();

        assert!(lacks(&request(Version::HTTP_11, "/v2/", None)));
        assert!(!lacks(&request(
            Version::HTTP_11,
            "/v2/",
            Some(b"h.example")
        )));
        // A Host line that is not text is present, and `decide` rejects it.
        assert!(!lacks(&request(
            Version::HTTP_11,
            "/v2/",
            Some(b"b\xfccher")
        )));
        assert!(!lacks(&request(
            Version::HTTP_11,
            "http://h.example/v2/",
            None
        )));
        // HTTP/1.0 has no Host requirement, and HTTP/2 carries :authority.
        assert!(!lacks(&request(Version::HTTP_10, "/v2/", None)));
        assert!(!lacks(&request(Version::HTTP_2, "/v2/", None)));

        let rejection = Rejection::MISSING_HOST;
        assert_eq!(rejection.status, StatusCode::BAD_REQUEST);
        assert!(rejection.message.contains("no Host header"));
    }

    #[test]
    fn http2_host_must_match_authority() {
        let policy = policy();
        let request = |version, host: Option<&str>| {
            let mut builder = http::Request::get("https://registry.example.com/v2/a/manifests/1")
                .version(version);
            if let Some(host) = host {
                builder = builder.header("host", host);
            }
            builder.body(()).unwrap()
        };

        for version in [Version::HTTP_2, Version::HTTP_3] {
            for host in ["quay.io", "registry.example.com:8443"] {
                let conflicting = request(version, Some(host));
                let decision = decide(&policy, &RequestView::from_request(&conflicting, None));
                let rejection = rejection(&decision);
                assert_eq!(
                    rejection.status,
                    StatusCode::BAD_REQUEST,
                    "{version:?} {host}"
                );
                assert!(
                    rejection.message.contains(":authority"),
                    "{}",
                    rejection.message
                );
            }
        }

        // The same host in any letter case, with a default port or none,
        // with a final dot or without, or no Host line, is accepted.
        for host in [
            None,
            Some("registry.example.com"),
            Some("Registry.Example.COM"),
            Some("registry.example.com:443"),
            Some("registry.example.com."),
        ] {
            let agreeing = request(Version::HTTP_2, host);
            let decision = decide(&policy, &RequestView::from_request(&agreeing, None));
            assert!(
                matches!(decision.outcome, Outcome::Redirect { .. }),
                "{host:?}: {decision}"
            );
        }

        // In HTTP/1.1 the absolute-form target wins and the Host line is
        // ignored, as RFC 9112 (section 3.2.2) requires of origin servers.
        let absolute = request(Version::HTTP_11, Some("quay.io"));
        let view = RequestView::from_request(&absolute, None);
        assert_eq!(view.host, Some("registry.example.com"));
        let decision = decide(&policy, &view);
        assert!(
            matches!(decision.outcome, Outcome::Redirect { .. }),
            "{decision}"
        );

        // A Host line that is not a host is a bad request either way
        // (RFC 9112, section 3.2).
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let invalid = request(version, Some("bad host"));
            let decision = decide(&policy, &RequestView::from_request(&invalid, None));
            let rejection = rejection(&decision);
            assert_eq!(rejection.status, StatusCode::BAD_REQUEST, "{version:?}");
            assert!(
                rejection.message.contains("not a host name"),
                "{version:?}: {}",
                rejection.message
            );
        }
        let raw = http::Request::get("https://registry.example.com/v2/a/manifests/1")
            .header("host", http::HeaderValue::from_bytes(b"b\xfccher").unwrap())
            .body(())
            .unwrap();
        let decision = decide(&policy, &RequestView::from_request(&raw, None));
        assert_eq!(rejection(&decision).status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn host_header_must_be_one_host_and_port() {
        let policy = policy();
        for hosts in [
            &["registry.example.com", "quay.io"][..],
            &["quay.io", "quay.io"],
            &["registry.example.com/v2"],
            &["user@quay.io"],
            &["quay.io extra"],
            &["quay.io,registry.example.com"],
            &["[2001:db8::1"],
            &["[2001:db8::1]x"],
            &["[2001:db8::1]:50a"],
            &["[registry.example.com]:5000"],
            &["[]"],
            &["registry.example.com:abc"],
            &["registry.example.com:5000:1"],
            &["[fe80::1%25eth 0]"],
            &["[fe80::1%25eth0/1]"],
        ] {
            // Adapters set the view's host from the first line.
            let mut request = Request::get("/v2/a/manifests/1").host(hosts[0]);
            for &host in hosts {
                request = request.header("host", host);
            }
            let decision = request.decide(&policy);
            let rejection = rejection(&decision);
            assert_eq!(rejection.status, StatusCode::BAD_REQUEST, "{hosts:?}");
            assert_eq!(rejection.code, ErrorCode::Unsupported, "{hosts:?}");
            assert!(rejection.message.contains("Host header"), "{hosts:?}");
        }

        for host in [
            "quay.io:443",
            "[2001:db8::1]:5000",
            "[fe80::1%25eth0]",
            "[::1]",
            "localhost:5000",
            "registry.example.com.",
            "192.0.2.1",
            "xn--bcher-kva.example",
            "",
        ] {
            let decision = Request::get("/v2/a/manifests/1")
                .host(host)
                .header("host", host)
                .decide(&policy);
            assert!(
                matches!(decision.outcome, Outcome::Redirect { .. }),
                "{host:?}: {decision}"
            );
        }

        // A Host of UTF-8 text outside ASCII (not punycode) is rejected too,
        // where it used to be read as no host, also in an IPv6 zone.
        for host in ["bücher.example", "[::1%25é.example]"] {
            let request = http::Request::get("/v2/a/manifests/1")
                .header(
                    "host",
                    http::HeaderValue::from_bytes(host.as_bytes()).unwrap(),
                )
                .body(())
                .unwrap();
            let decision = decide(&policy, &RequestView::from_request(&request, None));
            assert_eq!(
                rejection(&decision).status,
                StatusCode::BAD_REQUEST,
                "{host}"
            );
        }

        // A Host that is not UTF-8, which the view cannot carry as its host.
        let headers = {
            let mut headers = HeaderMap::new();
            headers.insert(
                HOST,
                http::HeaderValue::from_bytes(b"b\xfccher.example").unwrap(),
            );
            headers
        };
        let view = RequestView {
            method: &Method::GET,
            path: "/v2/a/manifests/1",
            query: None,
            host: None,
            peer: None,
            headers: &headers,
            version: Version::HTTP_11,
        };
        assert_eq!(
            rejection(&decide(&policy, &view)).status,
            StatusCode::BAD_REQUEST
        );

        // User info in the target's authority, which a Host cannot carry.
        let request = http::Request::get("http://user@quay.io/v2/a/manifests/1")
            .body(())
            .unwrap();
        let decision = decide(&policy, &RequestView::from_request(&request, None));
        assert_eq!(rejection(&decision).status, StatusCode::BAD_REQUEST);

        // Paths outside `/v2` go to the inner service unchecked.
        let decision = Request::get("/healthz")
            .header("host", "a.example")
            .header("host", "b.example")
            .decide(&policy);
        assert!(matches!(decision.outcome, Outcome::NotRegistry));
    }

    #[test]
    fn strip_port_forms() {
        assert_eq!(strip_port("a.example:5000"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:5000"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
    }

    #[test]
    fn split_port_forms() {
        assert_eq!(split_port("a.example:5000"), ("a.example", Some("5000")));
        assert_eq!(split_port("a.example:"), ("a.example", None));
        assert_eq!(split_port("a.example"), ("a.example", None));
        assert_eq!(split_port("[::1]:5000"), ("::1", Some("5000")));
        assert_eq!(split_port("[::1]:"), ("::1", None));
        assert_eq!(split_port("[::1]"), ("::1", None));
        assert_eq!(split_port("a.example:x1"), ("a.example:x1", None));
    }

    #[test]
    fn same_authority_forms() {
        for (left, right) in [
            ("a.example", "A.Example"),
            ("a.example:5000", "a.example:5000"),
            ("a.example", "a.example:443"),
            ("a.example:80", "a.example"),
            ("a.example:", "a.example"),
            ("[2001:db8::1]", "[2001:DB8::1]:443"),
        ] {
            assert!(same_authority(left, right), "{left} {right}");
            assert!(same_authority(right, left), "{right} {left}");
        }
        for (left, right) in [
            ("a.example", "b.example"),
            ("a.example", "a.example:5000"),
            ("a.example:80", "a.example:443"),
            ("a.example:5000", "a.example:5001"),
            ("[::1]", "[::2]"),
        ] {
            assert!(!same_authority(left, right), "{left} {right}");
            assert!(!same_authority(right, left), "{right} {left}");
        }
    }

    /// Builds a policy with cloud ranges: a regional blob mirror for AWS clients
    /// (with fallbacks), a canary rule, and a registry default.
    fn regional_policy() -> Policy {
        use crate::policy::{CanarySpec, ClientLabel, UpstreamKind};

        let mut spec = PolicySpec::new("registry");
        spec.upstreams.insert(
            "registry".into(),
            UpstreamSpec::new("https://registry.example"),
        );
        let mut buckets = UpstreamSpec {
            kind: UpstreamKind::BlobStore,
            regions: vec!["eu-west-1".into(), "us-east-1".into()],
            verify_blobs: true,
            ..UpstreamSpec::new("https://bucket-{region}.example")
        };
        buckets
            .fallbacks
            .insert("eu-north-1".into(), vec!["eu-west-1".into()]);
        spec.upstreams.insert("buckets".into(), buckets);
        spec.upstreams.insert(
            "unverified".into(),
            UpstreamSpec {
                kind: UpstreamKind::BlobStore,
                ..UpstreamSpec::new("https://plain-{region}.example")
            },
        );
        spec.upstreams.insert(
            "gcp".into(),
            UpstreamSpec::new("https://{region}-docker.gcp.example"),
        );
        spec.upstreams
            .insert("next".into(), UpstreamSpec::new("https://next.example"));
        spec.rules.push(RuleSpec {
            clouds: vec!["aws".into()],
            ..RuleSpec::new("aws-blobs", "buckets")
        });
        spec.rules.push(RuleSpec {
            clouds: vec!["azure".into()],
            ..RuleSpec::new("azure-blobs", "unverified")
        });
        spec.rules.push(RuleSpec {
            clouds: vec!["gcp".into()],
            regions: vec!["europe-*".into()],
            ..RuleSpec::new("gcp-europe", "gcp")
        });
        spec.rules.push(RuleSpec {
            repositories: vec!["canary-app".into()],
            canary: Some(CanarySpec {
                upstream: "next".into(),
                percent: 50.0,
            }),
            ..RuleSpec::new("canary", "registry")
        });
        let labels = vec![
            ClientLabel::new(Some("aws"), Some("eu-west-1")),
            ClientLabel::new(Some("aws"), Some("eu-north-1")),
            ClientLabel::new(Some("aws"), Some("ap-south-1")),
            ClientLabel::new(Some("gcp"), Some("europe-west4")),
            ClientLabel::new(Some("azure"), Some("westeurope")),
        ];
        let prefixes = [
            ("198.51.100.0/24".parse().unwrap(), 0),
            ("198.51.101.0/24".parse().unwrap(), 1),
            ("198.51.102.0/24".parse().unwrap(), 2),
            ("192.0.2.0/24".parse().unwrap(), 3),
            ("203.0.113.128/25".parse().unwrap(), 4),
        ];
        Policy::compile_with_labels(&spec, labels, &prefixes).unwrap()
    }

    #[test]
    fn region_mirror_candidates_in_order() {
        let policy = regional_policy();
        let decision = Request::get(&format!("/v2/pause/blobs/{DIGEST}"))
            .peer("198.51.101.9")
            .decide(&policy);
        let label = decision.label.unwrap();
        assert_eq!(label.cloud(), Some("aws"));
        assert_eq!(label.region(), Some("eu-north-1"));
        let candidates = decision.candidates();
        assert_eq!(candidates.len(), 2);
        assert_eq!(
            candidates[0].location,
            format!("https://bucket-eu-west-1.example/containers/images/{DIGEST}")
        );
        assert_eq!(candidates[0].region, Some("eu-west-1"));
        assert!(candidates[0].verify);
        assert_eq!(
            candidates[1].location,
            format!("https://registry.example/v2/pause/blobs/{DIGEST}")
        );
        assert!(!candidates[1].verify);
        assert_eq!(decision.location(), Some(candidates[0].location.as_str()));
        assert_eq!(decision.route().unwrap().rule.unwrap().name(), "aws-blobs");
    }

    #[test]
    fn shared_mirror_url_keeps_client_region() {
        use crate::policy::{ClientLabel, UpstreamKind};

        let mut spec = PolicySpec::new("registry");
        spec.upstreams.insert(
            "registry".into(),
            UpstreamSpec::new("https://registry.example"),
        );
        let mut shared = UpstreamSpec {
            kind: UpstreamKind::BlobStore,
            verify_blobs: true,
            ..UpstreamSpec::new("")
        };
        for region in ["eu-a", "eu-b"] {
            shared
                .region_urls
                .insert(region.into(), "https://eu.example".into());
        }
        spec.upstreams.insert("shared".into(), shared);
        spec.rules.push(RuleSpec::new("eu", "shared"));
        let labels = vec![
            ClientLabel::new(Some("aws"), Some("eu-a")),
            ClientLabel::new(Some("aws"), Some("eu-b")),
        ];
        let prefixes = [
            ("198.51.100.0/24".parse().unwrap(), 0),
            ("198.51.101.0/24".parse().unwrap(), 1),
        ];
        let policy = Policy::compile_with_labels(&spec, labels, &prefixes).unwrap();

        for (peer, region) in [("198.51.100.9", "eu-a"), ("198.51.101.9", "eu-b")] {
            let decision = Request::get(&format!("/v2/pause/blobs/{DIGEST}"))
                .peer(peer)
                .decide(&policy);
            let candidates = decision.candidates();
            assert_eq!(candidates[0].region, Some(region), "{peer}");
            assert_eq!(
                candidates[0].location,
                format!("https://eu.example/containers/images/{DIGEST}")
            );
        }
    }

    #[test]
    fn region_without_mirror_goes_to_default() {
        let policy = regional_policy();
        let decision = Request::get(&format!("/v2/pause/blobs/{DIGEST}"))
            .peer("198.51.102.9")
            .decide(&policy);
        assert_eq!(
            decision.location(),
            Some(format!("https://registry.example/v2/pause/blobs/{DIGEST}").as_str())
        );
        assert!(decision.candidates().is_empty());
    }

    #[test]
    fn blob_store_rules_skip_other_kinds() {
        let policy = regional_policy();
        let decision = Request::get("/v2/pause/manifests/3.10")
            .peer("198.51.100.9")
            .decide(&policy);
        assert_eq!(
            decision.location(),
            Some("https://registry.example/v2/pause/manifests/3.10")
        );
        assert!(decision.route().unwrap().rule.is_none());
    }

    #[test]
    fn unverified_mirror_is_a_plain_redirect() {
        let policy = regional_policy();
        // A template without listed regions has a mirror in every region
        // the range files name, westeurope included.
        let decision = Request::get(&format!("/v2/pause/blobs/{DIGEST}"))
            .peer("203.0.113.200")
            .decide(&policy);
        assert_eq!(
            decision.location(),
            Some(format!("https://plain-westeurope.example/containers/images/{DIGEST}").as_str())
        );
        assert!(matches!(decision.outcome, Outcome::Redirect { .. }));
    }

    #[test]
    fn cloud_and_region_pattern_rule() {
        let policy = regional_policy();
        let decision = Request::get("/v2/pause/manifests/3.10")
            .peer("192.0.2.77")
            .decide(&policy);
        assert_eq!(
            decision.location(),
            Some("https://europe-west4-docker.gcp.example/v2/pause/manifests/3.10")
        );
        assert_eq!(decision.route().unwrap().rule.unwrap().name(), "gcp-europe");
    }

    #[test]
    fn client_outside_ranges_has_no_label() {
        let policy = regional_policy();
        let decision = Request::get(&format!("/v2/pause/blobs/{DIGEST}"))
            .peer("100.64.0.1")
            .decide(&policy);
        assert!(decision.label.is_none());
        assert_eq!(
            decision.location(),
            Some(format!("https://registry.example/v2/pause/blobs/{DIGEST}").as_str())
        );
    }

    #[test]
    fn canary_share_is_stable_per_client() {
        let policy = regional_policy();
        let mut canaries = 0;
        for host in 0..200u32 {
            let peer = std::net::Ipv4Addr::from(0x6440_0000 + host * 7919).to_string();
            let request = Request::get("/v2/canary-app/manifests/1").peer(&peer);
            let first = request.decide(&policy);
            let again = request.decide(&policy);
            assert_eq!(first.location(), again.location(), "{peer}");
            let route = first.route().unwrap();
            if route.canary {
                canaries += 1;
                assert_eq!(route.upstream.name(), "next");
            } else {
                assert_eq!(route.upstream.name(), "registry");
            }
        }
        assert!(
            (60..140).contains(&canaries),
            "{canaries} of 200 in a 50% canary"
        );
    }

    #[test]
    fn explanation_shows_region_and_candidates() {
        let policy = regional_policy();
        let decision = Request::get(&format!("/v2/pause/blobs/{DIGEST}"))
            .peer("198.51.100.1")
            .decide(&policy);
        let text = decision.to_string();
        assert!(
            text.contains("client range: cloud aws, region eu-west-1"),
            "{text}"
        );
        assert!(
            text.contains("candidate 1: https://bucket-eu-west-1.example/containers/images/"),
            "{text}"
        );
        assert!(
            text.contains("(upstream buckets, region eu-west-1, blob verified)"),
            "{text}"
        );
        assert!(
            text.contains("candidate 2: https://registry.example/v2/pause/blobs/"),
            "{text}"
        );
    }

    #[test]
    fn response_for_chosen_candidate() {
        let policy = regional_policy();
        let decision = Request::get(&format!("/v2/pause/blobs/{DIGEST}"))
            .peer("198.51.100.1")
            .decide(&policy);
        let response = decision.into_response_for_candidate(1).unwrap();
        assert_eq!(
            response.headers()["location"],
            format!("https://registry.example/v2/pause/blobs/{DIGEST}").as_str()
        );
    }

    #[test]
    fn redirect_names_its_target_upstream() {
        let policy = regional_policy();
        let decision = Request::get("/v2/pause/manifests/3.10")
            .peer("192.0.2.77")
            .decide(&policy);
        let (target, region) = decision.target().unwrap();
        assert_eq!(target.name(), "gcp");
        assert_eq!(region, Some("europe-west4"));
        assert!(decision.to_string().contains("mirror region: europe-west4"));

        // aws ap-south-1 has no bucket and no fallback: the default serves it.
        let decision = Request::get(&format!("/v2/pause/blobs/{DIGEST}"))
            .peer("198.51.102.9")
            .decide(&policy);
        let (target, region) = decision.target().unwrap();
        assert_eq!(target.name(), "registry");
        assert_eq!(region, None);
        let text = decision.to_string();
        assert!(
            text.contains(
                "redirected to: upstream registry, because buckets has no mirror for this client"
            ),
            "{text}"
        );
    }

    fn resolve_policy() -> Policy {
        let mut spec = PolicySpec::new("k8s");
        spec.upstreams
            .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
        spec.upstreams.insert(
            "hub".into(),
            UpstreamSpec {
                library_prefix: true,
                auth: crate::policy::UpstreamAuth::Resolve,
                ..UpstreamSpec::new("https://registry-1.docker.io")
            },
        );
        spec.rules.push(RuleSpec {
            clients: vec!["192.168.0.0/24".into()],
            ..RuleSpec::new("lab", "hub")
        });
        Policy::compile(&spec).unwrap()
    }

    #[test]
    fn resolve_upstream_gets_resolve_outcome() {
        let policy = resolve_policy();
        let cases = [
            (
                "/v2/nginx/manifests/latest",
                "https://registry-1.docker.io/v2/library/nginx/manifests/latest",
                false,
            ),
            (
                &format!("/v2/nginx/manifests/{DIGEST}"),
                &format!("https://registry-1.docker.io/v2/library/nginx/manifests/{DIGEST}"),
                true,
            ),
            (
                &format!("/v2/team/app/blobs/{DIGEST}"),
                &format!("https://registry-1.docker.io/v2/team/app/blobs/{DIGEST}"),
                true,
            ),
            (
                "/v2/nginx/tags/list",
                "https://registry-1.docker.io/v2/library/nginx/tags/list",
                false,
            ),
        ];
        for (path, expected_url, expected_by_digest) in cases {
            let decision = Request::get(path).peer("192.168.0.9").decide(&policy);
            let Outcome::Resolve {
                url,
                repository,
                name,
                by_digest,
                target,
                ..
            } = &decision.outcome
            else {
                panic!(
                    "{path}: expected a resolve outcome, got {:?}",
                    decision.outcome
                );
            };
            assert_eq!(url, expected_url);
            assert_eq!(*by_digest, expected_by_digest, "{path}");
            assert_eq!(target.name(), "hub");
            let expected_repository = if path.contains("team/app") {
                "team/app"
            } else {
                "library/nginx"
            };
            assert_eq!(repository, expected_repository);
            let expected_name = if path.contains("team/app") {
                "team/app"
            } else {
                "nginx"
            };
            assert_eq!(name, expected_name);
            assert_eq!(decision.outcome_name(), "resolve");
            assert_eq!(decision.status(), None);
            assert_eq!(decision.upstream_url(), Some(expected_url));
        }
    }

    #[test]
    fn resolve_upstream_answers_api_version_check() {
        let policy = resolve_policy();
        let decision = Request::get("/v2/").peer("192.168.0.9").decide(&policy);
        assert!(matches!(decision.outcome, Outcome::AnswerApiVersion { .. }));
        assert_eq!(decision.route().unwrap().upstream.name(), "hub");
    }

    #[test]
    fn resolve_without_client_is_503() {
        let policy = resolve_policy();
        let decision = Request::get("/v2/nginx/manifests/latest")
            .peer("192.168.0.9")
            .decide(&policy);
        let response = decision.into_response().unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.body().contains(r#""code":"UNSUPPORTED""#));
        assert!(
            response.body().contains("auth = \\\"resolve\\\""),
            "{}",
            response.body()
        );
    }

    #[test]
    fn explanation_shows_resolve_url() {
        let policy = resolve_policy();
        let decision = Request::get("/v2/nginx/manifests/latest")
            .peer("192.168.0.9")
            .decide(&policy);
        let text = decision.to_string();
        assert!(text.starts_with("decision: resolve\n"), "{text}");
        assert!(
            text.contains(
                "upstream url: https://registry-1.docker.io/v2/library/nginx/manifests/latest\n"
            ),
            "{text}"
        );
        assert!(text.contains("blobs are redirected to storage"), "{text}");
    }
}
