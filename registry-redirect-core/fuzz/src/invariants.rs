//! The invariants of the fuzz targets. A violated invariant panics with
//! the reason, so libFuzzer records the input as a crash.

use std::net::{IpAddr, SocketAddr};

use http::header::HOST;
use http::{HeaderMap, Method, Request, Uri, Version};
use registry_redirect_core::client::{canonical, resolve_client, ClientSource, TrustedProxies};
use registry_redirect_core::policy::ClientLabel;
use registry_redirect_core::{decide, ForwardedHeader, Policy, PolicySpec, RequestView};

use crate::verdict::Judge;
use crate::{ClientInput, DecideInput};

/// Runs fuzzed requests through `decide` under one policy.
pub struct DecideHarness {
    policy: Policy,
    judge: Judge,
}

impl DecideHarness {
    /// Prepares the harness for `policy`.
    pub fn new(policy: Policy) -> Self {
        let judge = Judge::new(&policy);
        DecideHarness { policy, judge }
    }

    /// Decides the input's request twice: as raw text split at the first
    /// `?` (the core must be safe for any `&str`), and, when `http::Uri`
    /// accepts the target, as a server would hand it over. Panics when a
    /// decision breaks the rule of [`crate::verdict`].
    pub fn run(&self, input: &DecideInput) {
        let Ok(method) = Method::from_bytes(&input.head.method) else {
            // A server responds with 400 to a request line without a valid method.
            return;
        };
        let peer = input.peer.address();
        self.run_raw(&method, &input.head.target, &input.head.headers, peer);
        self.run_uri(&method, &input.head.target, &input.head.headers, peer);
    }

    /// Decides a request given as parts, for targets that build their own.
    pub fn run_raw(
        &self,
        method: &Method,
        target: &[u8],
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) {
        let Ok(target) = std::str::from_utf8(target) else {
            return;
        };
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let host = headers.get(HOST).and_then(|value| value.to_str().ok());
        let view = RequestView {
            method,
            path,
            query,
            host,
            peer,
            headers,
            version: Version::HTTP_11,
        };
        let decision = decide(&self.policy, &view);
        if let Err(error) = self.judge.judge(&decision, path, query) {
            panic!("raw request {method} {target:?} from {peer:?}: {error}");
        }
    }

    fn run_uri(&self, method: &Method, target: &[u8], headers: &HeaderMap, peer: Option<IpAddr>) {
        let Ok(uri) = Uri::try_from(target) else {
            return;
        };
        let mut request = Request::new(());
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers.clone();
        // An absolute target is also what an HTTP/2 request carries, where
        // a Host line must agree with it.
        let versions: &[Version] = match request.uri().authority() {
            Some(_) => &[Version::HTTP_11, Version::HTTP_2],
            None => &[Version::HTTP_11],
        };
        for &version in versions {
            *request.version_mut() = version;
            let view = RequestView::from_request(&request, peer);
            let decision = decide(&self.policy, &view);
            if let Err(error) = self.judge.judge(&decision, view.path, view.query) {
                panic!(
                    "{version:?} request {method} {} from {peer:?}: {error}",
                    request.uri()
                );
            }
        }
    }
}

/// Checks `resolve_client` on one input: an untrusted or missing peer is
/// never replaced, only the header the proxies write is read, and any other
/// result is an address written in that header.
pub fn check_client_address(input: &ClientInput, networks: &[ipnet::IpNet]) {
    let trusted = TrustedProxies::with_header(networks.to_vec(), input.header);
    let peer = input.peer.address();
    let client = resolve_client(peer, &input.headers, &trusted);
    let again = resolve_client(peer, &input.headers, &trusted);
    assert_eq!(client, again, "resolve_client is not deterministic");

    let Some(peer) = peer else {
        assert_eq!(client.addr, None, "an unknown peer yielded {client:?}");
        assert_eq!(client.source, ClientSource::Unknown);
        return;
    };
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        assert_eq!(
            client.addr,
            Some(peer),
            "an untrusted peer was replaced: {client:?}"
        );
        assert_eq!(client.source, ClientSource::Peer);
        assert_eq!(client.note, None);
        return;
    }

    let addr = client.addr.expect("a known peer always yields an address");
    let expected_source = match input.header {
        ForwardedHeader::XForwardedFor => ClientSource::XForwardedFor,
        ForwardedHeader::Forwarded => ClientSource::Forwarded,
        ForwardedHeader::XRealIp => ClientSource::XRealIp,
    };
    match client.source {
        ClientSource::Peer => {
            assert_eq!(addr, peer, "source peer, but the address is {addr}");
            return;
        }
        source => assert_eq!(
            source, expected_source,
            "the policy reads {:?}, but the address came from {source}",
            input.header
        ),
    }
    let name = input.header.as_str();
    let written = header_addresses(&input.headers, name);
    assert!(
        written.contains(&addr),
        "{addr} from {name} is not in its values {:?} (addresses found: {written:?})",
        input.headers.get_all(name).iter().collect::<Vec<_>>()
    );
}

/// Returns every address written in the values of header `name`: tokens
/// between `,`, `;`, `=`, `"`, `[`, `]`, spaces and tabs, read as an IP
/// address or as `IPv4:port`.
fn header_addresses(headers: &HeaderMap, name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        let Ok(text) = value.to_str() else { continue };
        let tokens = text.split([',', ';', '=', '"', '[', ']', ' ', '\t']);
        for token in tokens {
            if let Ok(addr) = token.parse::<IpAddr>() {
                out.push(canonical(addr));
            } else if let Ok(socket) = token.parse::<SocketAddr>() {
                out.push(canonical(socket.ip()));
            }
        }
    }
    out
}

/// Labels and ranges that the `policy_toml` target compiles policies
/// with, so that `{region}` templates, `regions` and `clouds` take effect.
pub fn toml_labels() -> (Vec<ClientLabel>, Vec<(ipnet::IpNet, u32)>) {
    let labels = vec![
        ClientLabel::new(Some("aws"), Some("eu-west-1")),
        ClientLabel::new(Some("aws"), Some("us-east-1")),
        ClientLabel::new(Some("gcp"), Some("europe-west4")),
        ClientLabel::new(Some("azure"), None),
    ];
    let prefixes = [
        "198.51.100.0/24",
        "198.51.101.0/24",
        "192.0.2.0/24",
        "203.0.113.0/24",
    ]
    .iter()
    .zip(0u32..)
    .filter_map(|(text, label)| Some((text.parse().ok()?, label)))
    .collect();
    (labels, prefixes)
}

/// Requests that every compiled policy is asked about in `policy_toml`.
const TOML_TARGETS: &[&str] = &[
    "/v2/",
    "/v2/nginx/manifests/latest?ns=docker.io",
    "/v2/library/nginx/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "/v2/k8s/pause/tags/list",
    "/v2/a/referrers/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "/v2/a%2f..%2fevil/manifests/x?a=\r\n#",
];

/// Peers for `policy_toml`: one per labelled range, a private address and
/// an IPv6 address.
const TOML_PEERS: &[&str] = &[
    "198.51.100.7",
    "198.51.101.7",
    "192.0.2.7",
    "203.0.113.7",
    "192.168.0.20",
    "10.0.0.1",
    "2001:db8::1",
];

/// Parses `text` as a TOML policy, compiles it, and checks the decisions
/// of a few requests under it. Text that is not a policy is fine; a panic
/// or a decision that breaks the rule of [`crate::verdict`] is not.
pub fn check_policy_toml(text: &str) {
    let Ok(spec) = toml::from_str::<PolicySpec>(text) else {
        return;
    };
    let (labels, prefixes) = toml_labels();
    let policy = match Policy::compile_with_labels(&spec, labels, &prefixes) {
        Ok(policy) => policy,
        Err(errors) => {
            // The messages must build; their text is not checked.
            let _ = errors.to_string();
            return;
        }
    };
    let harness = DecideHarness::new(policy);
    let mut headers = HeaderMap::new();
    headers.insert(HOST, http::HeaderValue::from_static("docker.io"));
    for target in TOML_TARGETS {
        for peer in TOML_PEERS {
            let peer = peer.parse().ok();
            harness.run_raw(&Method::GET, target.as_bytes(), &headers, peer);
        }
    }
}
