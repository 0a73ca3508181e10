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
//! 6. Answer the API version check, or redirect to the upstream.
//!
//! ```
//! use http::{HeaderMap, Method, StatusCode};
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
//! };
//! let decision = decide(&policy, &request);
//! assert_eq!(decision.status(), Some(StatusCode::TEMPORARY_REDIRECT));
//! assert_eq!(
//!     decision.location(),
//!     Some("https://registry.k8s.io/v2/pause/manifests/3.10")
//! );
//! assert!(matches!(decision.outcome, Outcome::Redirect { .. }));
//! ```

use std::fmt;
use std::net::IpAddr;

use http::{HeaderMap, Method, StatusCode};

use crate::client::{resolve_client, ClientAddress};
use crate::path::{classify, PathError, RegistryPath, RequestKind};
use crate::policy::{ApiVersionCheck, Policy, Rule, Upstream};

/// What the core needs to know about a request. Adapters build it from
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
    /// The address of the TCP peer, if the adapter knows it.
    pub peer: Option<IpAddr>,
    /// The request headers, read for forwarding headers from trusted proxies.
    pub headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    /// Builds a view of an [`http::Request`]. The host comes from the
    /// request target's authority when it has one (absolute form and
    /// HTTP/2), else from the `Host` header.
    pub fn from_request<B>(request: &'a http::Request<B>, peer: Option<IpAddr>) -> Self {
        let uri = request.uri();
        let host = uri
            .authority()
            .map(|authority| authority.host())
            .or_else(|| {
                request
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|value| value.to_str().ok())
            });
        RequestView {
            method: request.method(),
            path: uri.path(),
            query: uri.query(),
            host,
            peer,
            headers: request.headers(),
        }
    }
}

/// Why a request goes where it goes: the upstream and the rule that chose it.
#[derive(Debug, Clone, Copy)]
pub struct Route<'p> {
    /// The upstream chosen.
    pub upstream: &'p Upstream,
    /// The rule that chose it, or `None` for the default upstream.
    pub rule: Option<&'p Rule>,
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
    /// The code as it appears in the error body.
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

/// A request the redirector answers with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status: 404 or 405.
    pub status: StatusCode,
    /// The OCI error code for the body.
    pub code: ErrorCode,
    /// The message for the body, saying what was wrong and what is expected.
    pub message: &'static str,
}

/// What to do with a request.
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
    },
    /// Answer the API version check with 200 and
    /// `Docker-Distribution-Api-Version: registry/2.0`.
    AnswerApiVersion {
        /// The upstream and rule that chose it.
        route: Route<'p>,
    },
    /// Answer with an OCI error.
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
    /// Whether the request was `HEAD`, whose responses have no body.
    pub is_head: bool,
    /// What to do.
    pub outcome: Outcome<'p>,
}

impl<'p> Decision<'p> {
    /// The status of the response, or `None` when the request is not a
    /// registry request.
    pub fn status(&self) -> Option<StatusCode> {
        match &self.outcome {
            Outcome::Redirect { status, .. } => Some(*status),
            Outcome::AnswerApiVersion { .. } => Some(StatusCode::OK),
            Outcome::Reject(rejection) => Some(rejection.status),
            Outcome::NotRegistry => None,
        }
    }

    /// The `Location` of a redirect.
    pub fn location(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Redirect { location, .. } => Some(location),
            _ => None,
        }
    }

    /// The upstream and rule, when an upstream was chosen.
    pub fn route(&self) -> Option<Route<'p>> {
        match &self.outcome {
            Outcome::Redirect { route, .. } | Outcome::AnswerApiVersion { route } => Some(*route),
            Outcome::Reject(_) | Outcome::NotRegistry => None,
        }
    }

    /// A short name for the outcome: `redirect`, `answer`, `reject` or `not_registry`.
    pub fn outcome_name(&self) -> &'static str {
        match self.outcome {
            Outcome::Redirect { .. } => "redirect",
            Outcome::AnswerApiVersion { .. } => "answer",
            Outcome::Reject(_) => "reject",
            Outcome::NotRegistry => "not_registry",
        }
    }
}

/// Prints the decision and its reasons, one `key: value` a line.
impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "decision: {}", self.outcome_name())?;
        if let Some(status) = self.status() {
            write!(f, " {}", status.as_u16())?;
        }
        writeln!(f)?;
        if let Some(location) = self.location() {
            writeln!(f, "location: {location}")?;
        }
        if let Outcome::Reject(rejection) = &self.outcome {
            writeln!(f, "error: {} {}", rejection.code, rejection.message)?;
        }
        if let Some(route) = self.route() {
            writeln!(f, "upstream: {}", route.upstream.name())?;
            match route.rule {
                Some(rule) => writeln!(f, "rule: {} (rules[{}])", rule.name(), rule.index())?,
                None => writeln!(f, "rule: none matched; default upstream")?,
            }
        }
        match self.kind {
            Some(kind) => writeln!(f, "kind: {kind}")?,
            None => writeln!(f, "kind: none")?,
        }
        match self.client.addr {
            Some(addr) => writeln!(f, "client: {addr} (from {})", self.client.source)?,
            None => writeln!(f, "client: unknown")?,
        }
        if let Some(note) = self.client.note {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

/// Decides what to do with a request under a policy. Never fails and never
/// panics: every input gets an [`Outcome`].
pub fn decide<'p>(policy: &'p Policy, request: &RequestView<'_>) -> Decision<'p> {
    let client = resolve_client(request.peer, request.headers, policy.trusted_proxies());
    let is_head = request.method == Method::HEAD;
    let decision = |kind, outcome| Decision {
        kind,
        client,
        is_head,
        outcome,
    };

    let path = match classify(request.path) {
        Ok(RegistryPath::NotRegistry) => return decision(None, Outcome::NotRegistry),
        Ok(path) => path,
        Err(error) => {
            let outcome = if is_read(request.method) {
                Outcome::Reject(path_rejection(error))
            } else {
                Outcome::Reject(METHOD_NOT_ALLOWED)
            };
            return decision(None, outcome);
        }
    };
    let kind = path.kind();
    if !is_read(request.method) {
        return decision(kind, Outcome::Reject(METHOD_NOT_ALLOWED));
    }
    let Some(kind) = kind else {
        return decision(None, Outcome::Reject(unsupported_rejection(&path)));
    };

    let host = requested_host(request.query, request.host);
    let name = path.name();
    let rule = policy.match_rule(client.addr, kind, name, host);
    let upstream = match rule {
        Some(rule) => policy.rule_upstream(rule),
        None => policy.default_upstream(),
    };
    let route = Route { upstream, rule };

    if kind == RequestKind::ApiVersionCheck
        && upstream.api_version_check() == ApiVersionCheck::Answer
    {
        return decision(Some(kind), Outcome::AnswerApiVersion { route });
    }
    let location = build_location(upstream, &path, request.query);
    decision(
        Some(kind),
        Outcome::Redirect {
            status: policy.redirect_status(),
            location,
            route,
        },
    )
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

const METHOD_NOT_ALLOWED: Rejection = Rejection {
    status: StatusCode::METHOD_NOT_ALLOWED,
    code: ErrorCode::Unsupported,
    message: "this registry is read-only: only GET and HEAD are allowed; push to the upstream registry directly",
};

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

/// The registry host the client asked for: containerd's `ns` query
/// parameter when it talks to a mirror, else the `Host` without its port.
fn requested_host<'a>(query: Option<&'a str>, host: Option<&'a str>) -> Option<&'a str> {
    let namespace = query.and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("ns="))
            .filter(|value| !value.is_empty())
    });
    namespace.or_else(|| host.map(strip_port))
}

fn strip_port(host: &str) -> &str {
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Builds the absolute `Location` on `upstream` for a validated path, with
/// one allocation.
fn build_location(upstream: &Upstream, path: &RegistryPath<'_>, query: Option<&str>) -> String {
    let (endpoint, reference) = match *path {
        RegistryPath::Manifest { reference, .. } => ("/manifests/", reference),
        RegistryPath::Blob { digest, .. } => ("/blobs/", digest),
        RegistryPath::TagsList { .. } => ("/tags/list", ""),
        RegistryPath::Referrers { digest, .. } => ("/referrers/", digest),
        _ => ("", ""),
    };
    let name = path.name().unwrap_or("");
    let (prefix, library) = match path.name() {
        Some(name) => upstream.repository_prefix(name),
        None => ("", ""),
    };
    let query = query.filter(|query| !query.is_empty());

    let mut capacity = upstream.v2_base().len() + prefix.len() + library.len() + name.len();
    capacity += endpoint.len() + reference.len();
    if let Some(query) = query {
        capacity += 1 + encoded_query_len(query);
    }
    let mut location = String::with_capacity(capacity);
    location.push_str(upstream.v2_base());
    if path.name().is_some() {
        location.push_str(prefix);
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

/// Returns whether a query byte may appear as is (RFC 3986 `query`), apart
/// from `%`, which needs two hex digits after it.
fn is_query_byte(byte: u8) -> bool {
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
                | b':'
                | b'@'
                | b'/'
                | b'?'
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
    fn strip_port_forms() {
        assert_eq!(strip_port("a.example:5000"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:5000"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
    }
}
