//! Properties of `decide` over generated policies and requests.
//!
//! Policies have registry upstreams with generated URLs (domain, IPv4 or
//! IPv6 hosts, explicit ports, base paths), `path_prefix`, `library_prefix`
//! and rules on clients, kinds, repositories and hosts. Requests mix valid
//! OCI paths with hostile fragments (encoded separators, dot segments,
//! backslashes, control bytes, lookalike characters) and arbitrary text.
//!
//! For every case:
//! - a redirect's `Location` parses with the `url` crate as an absolute URL
//!   whose scheme, host and port are those of the chosen upstream. Its path
//!   is the upstream's base path, `/v2/`, the prefix, `library/` where it
//!   applies, and the request's repository name and endpoint;
//! - the decision is the same when made twice;
//! - a valid path read with `GET` or `HEAD` is never rejected;
//! - the response is never a 5xx and every header value is visible ASCII.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use proptest::prelude::*;
use registry_redirect_core::path::{classify, RegistryPath};
use registry_redirect_core::{
    decide, ApiVersionCheck, Decision, Outcome, Policy, PolicySpec, RequestKind, RequestView,
    RuleSpec, UpstreamSpec,
};

use common::corpus::oci_error_code;
use common::location::{is_query_byte, percent_decode, LocationOracle};
use common::origin::{check_origin, Origin};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A generated registry upstream.
#[derive(Debug, Clone)]
struct GenUpstream {
    scheme: &'static str,
    host: String,
    port: Option<u16>,
    base_path: Vec<String>,
    path_prefix: Option<String>,
    library_prefix: bool,
    redirect_version_check: bool,
}

impl GenUpstream {
    fn url(&self) -> String {
        let port = self.port.map(|port| format!(":{port}")).unwrap_or_default();
        let path: String = self
            .base_path
            .iter()
            .map(|segment| format!("/{segment}"))
            .collect();
        format!("{}://{}{port}{path}", self.scheme, self.host)
    }

    /// The path of every `Location` to this upstream up to and including `/v2/`.
    fn v2_path(&self) -> String {
        let path: String = self
            .base_path
            .iter()
            .map(|segment| format!("/{segment}"))
            .collect();
        format!("{path}/v2/")
    }
}

#[derive(Debug, Clone)]
struct GenRule {
    upstream: usize,
    clients: Vec<String>,
    kinds: Vec<RequestKind>,
    repositories: Vec<String>,
    hosts: Vec<String>,
}

#[derive(Debug, Clone)]
struct GenPolicy {
    upstreams: Vec<GenUpstream>,
    rules: Vec<GenRule>,
    redirect_status: u16,
}

impl GenPolicy {
    fn spec(&self) -> PolicySpec {
        let mut spec = PolicySpec::new("u0");
        spec.redirect_status = Some(self.redirect_status);
        spec.trusted_proxies = vec!["10.0.0.0/8".into()];
        for (index, upstream) in self.upstreams.iter().enumerate() {
            let api_version_check = if upstream.redirect_version_check {
                ApiVersionCheck::Redirect
            } else {
                ApiVersionCheck::Answer
            };
            spec.upstreams.insert(
                format!("u{index}"),
                UpstreamSpec {
                    path_prefix: upstream.path_prefix.clone(),
                    library_prefix: upstream.library_prefix,
                    api_version_check,
                    ..UpstreamSpec::new(upstream.url())
                },
            );
        }
        for (index, rule) in self.rules.iter().enumerate() {
            spec.rules.push(RuleSpec {
                clients: rule.clients.clone(),
                kinds: rule.kinds.clone(),
                repositories: rule.repositories.clone(),
                hosts: rule.hosts.clone(),
                ..RuleSpec::new(format!("r{index}"), format!("u{}", rule.upstream))
            });
        }
        spec
    }
}

#[derive(Debug, Clone)]
struct GenRequest {
    method: Method,
    path: String,
    /// Whether the generator built `path` from the OCI grammar.
    valid: bool,
    query: Option<String>,
    host: Option<String>,
    peer: Option<IpAddr>,
    forwarded_for: Option<String>,
}

fn name_component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?"
}

fn repository_name() -> impl Strategy<Value = String> {
    prop::collection::vec(name_component(), 1..4).prop_map(|parts| parts.join("/"))
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9]{0,8}(\\.[a-z][a-z0-9]{0,5}){0,2}",
        1 => any::<[u8; 4]>().prop_map(|octets| Ipv4Addr::from(octets).to_string()),
        1 => any::<u128>().prop_map(|bits| format!("[{}]", Ipv6Addr::from(bits))),
    ]
}

fn upstream() -> impl Strategy<Value = GenUpstream> {
    (
        prop_oneof![Just("http"), Just("https")],
        host(),
        prop::option::of(prop_oneof![Just(80u16), Just(443u16), 1u16..=65535]),
        prop::collection::vec("[a-z0-9][a-z0-9-]{0,6}", 0..3),
        prop::option::of(repository_name()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                scheme,
                host,
                port,
                base_path,
                path_prefix,
                library_prefix,
                redirect_version_check,
            )| {
                // A base path ending in /v2 is invalid, because /v2/ is added to it.
                let base_path = base_path
                    .into_iter()
                    .filter(|segment| segment != "v2")
                    .collect();
                GenUpstream {
                    scheme,
                    host,
                    port,
                    base_path,
                    path_prefix,
                    library_prefix,
                    redirect_version_check,
                }
            },
        )
}

fn rule(upstreams: usize) -> impl Strategy<Value = GenRule> {
    (
        0..upstreams,
        prop::collection::vec(
            prop_oneof![
                Just("192.168.0.0/24".to_owned()),
                Just("2001:db8::/32".to_owned()),
                (any::<[u8; 4]>(), 8u8..=32)
                    .prop_map(|(octets, bits)| format!("{}/{bits}", Ipv4Addr::from(octets))),
            ],
            0..2,
        ),
        prop::collection::vec(prop::sample::select(RequestKind::ALL.to_vec()), 0..3),
        prop::collection::vec(
            prop_oneof![
                repository_name(),
                name_component().prop_map(|name| format!("{name}*"))
            ],
            0..2,
        ),
        prop::collection::vec(
            prop::sample::select(vec!["docker.io", "*.example.test", "quay.io"]),
            0..2,
        ),
    )
        .prop_map(|(upstream, clients, kinds, repositories, hosts)| GenRule {
            upstream,
            clients,
            kinds,
            repositories,
            hosts: hosts.into_iter().map(str::to_owned).collect(),
        })
}

fn policy() -> impl Strategy<Value = GenPolicy> {
    prop::collection::vec(upstream(), 1..5).prop_flat_map(|upstreams| {
        let count = upstreams.len();
        (
            Just(upstreams),
            prop::collection::vec(rule(count), 0..5),
            prop::sample::select(vec![301u16, 302, 303, 307, 308]),
        )
            .prop_map(|(upstreams, rules, redirect_status)| GenPolicy {
                upstreams,
                rules,
                redirect_status,
            })
    })
}

fn reference() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}",
        Just(DIGEST.to_owned()),
        "[a-f0-9]{64}".prop_map(|hex| format!("sha256:{hex}")),
    ]
}

/// A path that follows the distribution grammar.
fn valid_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/v2/".to_owned()),
        Just("/v2".to_owned()),
        (repository_name(), reference())
            .prop_map(|(name, reference)| format!("/v2/{name}/manifests/{reference}")),
        repository_name().prop_map(|name| format!("/v2/{name}/blobs/{DIGEST}")),
        repository_name().prop_map(|name| format!("/v2/{name}/tags/list")),
        repository_name().prop_map(|name| format!("/v2/{name}/referrers/{DIGEST}")),
    ]
}

/// Fragments that try to change where a redirect leads.
const HOSTILE: &[&str] = &[
    "%2f",
    "%2F",
    "%252f",
    "%2e%2e",
    "%2e",
    "/../",
    "/./",
    "..",
    "//",
    "\\",
    "%5c",
    "\r\n",
    "\n",
    "\0",
    "\t",
    " ",
    "@evil.example",
    "//evil.example/",
    "http://evil.example/",
    "?",
    "#",
    "\u{2215}",
    "\u{2044}",
    "\u{ff0f}",
    "\u{ff0e}",
    "\u{2024}",
    "%e2%88%95",
    "%c0%af",
    ":",
    ";",
    "%00",
    "%0d%0a",
    "\u{7f}",
    "\u{ff3c}",
    "A",
];

/// Returns whether `host` is a host name or IPv4 address and an optional
/// port: letters, digits, `-`, `.` and `_`, then at most one `:` and digits.
fn is_plain_host(host: &str) -> bool {
    let (name, port) = host.split_once(':').unwrap_or((host, ""));
    name.bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b"-._".contains(&byte))
        && port.bytes().all(|byte| byte.is_ascii_digit())
}

/// A valid path with hostile fragments inserted at character boundaries.
fn hostile_path() -> impl Strategy<Value = String> {
    (
        valid_path(),
        prop::collection::vec(
            (any::<prop::sample::Index>(), prop::sample::select(HOSTILE)),
            1..4,
        ),
    )
        .prop_map(|(mut path, insertions)| {
            for (index, fragment) in insertions {
                let boundaries: Vec<usize> = (0..=path.len())
                    .filter(|&at| path.is_char_boundary(at))
                    .collect();
                let at = boundaries[index.index(boundaries.len())];
                path.insert_str(at, fragment);
            }
            path
        })
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "(ns=(docker\\.io|evil\\.example)&)?[a-z]{1,4}=[a-z0-9%]{0,6}",
        ".{0,24}",
        prop::collection::vec(prop::sample::select(HOSTILE), 1..4).prop_map(|parts| parts.concat()),
    ])
}

fn peer() -> impl Strategy<Value = Option<IpAddr>> {
    prop::option::of(prop_oneof![
        Just(IpAddr::from([192, 168, 0, 20])),
        Just(IpAddr::from([10, 0, 0, 1])),
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ])
}

fn request() -> impl Strategy<Value = GenRequest> {
    (
        prop_oneof![
            6 => Just(Method::GET),
            2 => Just(Method::HEAD),
            1 => prop::sample::select(vec![Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS]),
        ],
        prop_oneof![
            4 => valid_path().prop_map(|path| (path, true)),
            3 => hostile_path().prop_map(|path| (path, false)),
            1 => ".{0,40}".prop_map(|path| (path, false)),
        ],
        query(),
        prop::option::of(prop_oneof![
            Just("docker.io".to_owned()),
            Just("mirror.example.test:5000".to_owned()),
            ".{0,16}",
        ]),
        peer(),
        prop::option::of(prop_oneof![
            Just("192.168.0.20".to_owned()),
            "[0-9a-f:., ]{0,30}",
        ]),
    )
        .prop_map(|(method, (path, valid), query, host, peer, forwarded_for)| GenRequest {
            method,
            path,
            valid,
            query,
            host,
            peer,
            forwarded_for,
        })
}

fn run<'p>(policy: &'p Policy, request: &GenRequest, headers: &HeaderMap) -> Decision<'p> {
    let view = RequestView {
        method: &request.method,
        path: &request.path,
        query: request.query.as_deref(),
        host: request.host.as_deref(),
        peer: request.peer,
        headers,
        version: http::Version::HTTP_11,
    };
    decide(policy, &view)
}

fn headers(request: &GenRequest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = request
        .forwarded_for
        .as_deref()
        .and_then(|value| HeaderValue::from_str(value).ok())
    {
        headers.insert("x-forwarded-for", value);
    }
    headers
}

/// Builds the path of the `Location` that `upstream` gives a valid path.
fn expected_path(upstream: &GenUpstream, path: &RegistryPath<'_>) -> String {
    let name = |name: &str| {
        let prefix = upstream
            .path_prefix
            .as_deref()
            .map(|prefix| format!("{prefix}/"))
            .unwrap_or_default();
        let library = if upstream.library_prefix && !name.contains('/') {
            "library/"
        } else {
            ""
        };
        format!("{prefix}{library}{name}")
    };
    let rest = match *path {
        RegistryPath::Manifest {
            name: repository,
            reference,
        } => {
            format!("{}/manifests/{reference}", name(repository))
        }
        RegistryPath::Blob {
            name: repository,
            digest,
        } => format!("{}/blobs/{digest}", name(repository)),
        RegistryPath::TagsList { name: repository } => format!("{}/tags/list", name(repository)),
        RegistryPath::Referrers {
            name: repository,
            digest,
        } => {
            format!("{}/referrers/{digest}", name(repository))
        }
        _ => String::new(),
    };
    format!("{}{rest}", upstream.v2_path())
}

/// Checks a redirect's `Location` against the generated upstream it names.
fn check_redirect(
    generated: &GenPolicy,
    decision: &Decision<'_>,
    location: &str,
    request: &GenRequest,
) -> Result<(), TestCaseError> {
    let route = decision
        .route()
        .ok_or_else(|| TestCaseError::fail("a redirect without a route"))?;
    let index: usize = route.upstream.name()[1..]
        .parse()
        .map_err(|_| TestCaseError::fail("upstream names are u0, u1, ..."))?;
    let upstream = &generated.upstreams[index];

    let (location_origin, url) = Origin::of(location).map_err(TestCaseError::fail)?;
    let (upstream_origin, _) = Origin::of(&upstream.url()).map_err(TestCaseError::fail)?;
    prop_assert_eq!(&location_origin, &upstream_origin, "Location {}", location);
    check_origin(location, &[upstream_origin]).map_err(TestCaseError::fail)?;

    let path = classify(&request.path).map_err(|error| TestCaseError::fail(error.to_string()))?;
    prop_assert_eq!(
        url.path(),
        expected_path(upstream, &path),
        "Location {}",
        location
    );

    let requested = request.query.as_deref().filter(|query| !query.is_empty());
    let written = location.split_once('?').map(|(_, query)| query);
    match (written, requested) {
        (None, None) => {}
        (Some(written), Some(requested)) => {
            prop_assert!(
                written
                    .bytes()
                    .all(|byte| byte == b'%' || is_query_byte(byte)),
                "query {:?} has bytes RFC 3986 does not allow",
                written
            );
            prop_assert_eq!(
                percent_decode(written.as_bytes()),
                percent_decode(requested.as_bytes())
            );
        }
        (written, requested) => {
            prop_assert!(false, "query {:?} written for {:?}", written, requested)
        }
    }
    Ok(())
}

fn check_response(decision: Decision<'_>) -> Result<(), TestCaseError> {
    let is_head = decision.is_head;
    let Some(response) = decision.into_response() else {
        return Ok(());
    };
    let status = response.status();
    prop_assert!(
        !status.is_server_error(),
        "status {} body {}",
        status,
        response.body()
    );
    for (name, value) in response.headers() {
        prop_assert!(value.to_str().is_ok(), "header {} = {:?}", name, value);
    }
    if status.is_client_error() && !is_head {
        oci_error_code(response.body().as_bytes()).map_err(TestCaseError::fail)?;
    }
    Ok(())
}

proptest! {
    #[test]
    fn generated_policies_compile(generated in policy()) {
        let compiled = Policy::compile(&generated.spec());
        prop_assert!(compiled.is_ok(), "{:?}", compiled.err());
    }

    #[test]
    fn redirects_stay_on_chosen_upstream(generated in policy(), request in request()) {
        let policy = Policy::compile(&generated.spec()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let headers = headers(&request);
        let decision = run(&policy, &request, &headers);

        if let Some(location) = decision.location() {
            check_redirect(&generated, &decision, location, &request)?;
            // The common oracle agrees, from the compiled policy's side.
            let path = classify(&request.path).map_err(|e| TestCaseError::fail(e.to_string()))?;
            LocationOracle::new(&policy)
                .check(location, &path, request.query.as_deref())
                .map_err(TestCaseError::fail)?;
        }
        check_response(decision)?;
    }

    #[test]
    fn decision_is_deterministic(generated in policy(), request in request()) {
        let policy = Policy::compile(&generated.spec()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let headers = headers(&request);
        let first = run(&policy, &request, &headers);
        let second = run(&policy, &request, &headers);
        prop_assert_eq!(first.outcome_name(), second.outcome_name());
        prop_assert_eq!(first.status(), second.status());
        prop_assert_eq!(first.location(), second.location());
        prop_assert_eq!(first.client, second.client);
        let rule = |decision: &Decision<'_>| decision.route().and_then(|route| route.rule).map(|rule| rule.index());
        prop_assert_eq!(rule(&first), rule(&second));
        prop_assert_eq!(first.to_string(), second.to_string());
    }

    #[test]
    fn valid_reads_are_never_rejected(generated in policy(), request in request()) {
        prop_assume!(request.valid);
        prop_assume!(request.method == Method::GET || request.method == Method::HEAD);
        let policy = Policy::compile(&generated.spec()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let headers = headers(&request);
        let decision = run(&policy, &request, &headers);
        if !request.host.as_deref().is_none_or(is_plain_host) {
            // A Host with other characters is either an IP literal in
            // brackets or invalid, and RFC 9112 requires a 400 for that.
            if let Outcome::Reject(rejection) = decision.outcome {
                prop_assert_eq!(rejection.status, StatusCode::BAD_REQUEST, "Host {:?}", request.host);
                return Ok(());
            }
        }
        prop_assert!(
            matches!(decision.outcome, Outcome::Redirect { .. } | Outcome::AnswerApiVersion { .. }),
            "{} was {}",
            request.path,
            decision
        );
        if let Outcome::Redirect { status, .. } = decision.outcome {
            prop_assert_eq!(status, StatusCode::from_u16(generated.redirect_status).unwrap());
        }
    }
}
