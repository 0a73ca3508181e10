//! The policies and requests the decision benches run.
//!
//! [`cloud_policy`] routes like a registry front door that serves clients in
//! the clouds from nearby copies. AWS clients get blobs from a blob store in
//! their region, and GCP clients get everything from a registry mirror in
//! their region. Everyone else, and AWS clients for all but blobs, get the
//! default registry. [`tiny_policy`] has
//! one registry and no ranges, to time `Location` building alone.
//! [`RequestCase`] is one request of each kind the redirector handles.
//!
//! ```
//! use registry_redirect_benches::fixtures::{cloud_policy, RequestCase};
//! use registry_redirect_benches::synthetic::synthetic_ranges;
//! use registry_redirect_core::decide;
//!
//! let policy = cloud_policy(&synthetic_ranges(1_000, 1)).unwrap();
//! let blob = RequestCase::blob();
//! let decision = decide(&policy, &blob.view("192.0.2.1".parse().unwrap()));
//! assert_eq!(decision.status(), Some(blob.expected_status));
//! assert!(decision.location().unwrap().starts_with("https://registry.example.com/v2/"));
//! ```

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use registry_redirect_core::policy::UpstreamKind;
use registry_redirect_core::sources::LabeledRanges;
use registry_redirect_core::{
    Policy, PolicyErrors, PolicySpec, RequestView, RuleSpec, UpstreamSpec,
};

/// A sha256 digest, valid by the OCI digest grammar.
pub const DIGEST: &str = "sha256:2b8d0a0a4c5b3f8d3e1e6a0b7c9d2f4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d";

/// The `Host` every bench request carries.
pub const HOST: &str = "registry.example.com";

/// The trusted proxy networks of [`cloud_policy`]: the private ranges a
/// load balancer in front of the redirector typically uses.
pub const TRUSTED_PROXIES: &[&str] = &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Builds the policy specification behind [`cloud_policy`].
pub fn cloud_policy_spec() -> PolicySpec {
    let mut spec = PolicySpec::new("registry");
    spec.trusted_proxies = TRUSTED_PROXIES
        .iter()
        .map(|net| (*net).to_owned())
        .collect();
    spec.upstreams.insert(
        "registry".into(),
        UpstreamSpec::new("https://registry.example.com"),
    );
    spec.upstreams.insert(
        "aws-blobs".into(),
        UpstreamSpec {
            kind: UpstreamKind::BlobStore,
            ..UpstreamSpec::new("https://blobs-{region}.storage.example.com")
        },
    );
    spec.upstreams.insert(
        "gcp-registry".into(),
        UpstreamSpec {
            path_prefix: Some("artifacts-prod/images".into()),
            ..UpstreamSpec::new("https://{region}-registry.example.com")
        },
    );
    spec.rules.push(RuleSpec {
        clouds: vec!["aws".into()],
        ..RuleSpec::new("aws", "aws-blobs")
    });
    spec.rules.push(RuleSpec {
        clouds: vec!["gcp".into()],
        ..RuleSpec::new("gcp", "gcp-registry")
    });
    spec
}

/// Compiles [`cloud_policy_spec`] with the labelled client ranges.
pub fn cloud_policy(ranges: &LabeledRanges) -> Result<Policy, PolicyErrors> {
    Policy::compile_with_ranges(&cloud_policy_spec(), ranges)
}

/// Compiles a policy with a single registry upstream that adds Docker Hub's
/// `library/` to one-component names, and no rules or ranges.
pub fn tiny_policy() -> Result<Policy, PolicyErrors> {
    let mut spec = PolicySpec::new("hub");
    spec.upstreams.insert(
        "hub".into(),
        UpstreamSpec {
            library_prefix: true,
            ..UpstreamSpec::new("https://registry-1.docker.example.com")
        },
    );
    Policy::compile(&spec)
}

/// One request, without its client address, with the status it should get.
#[derive(Debug, Clone)]
pub struct RequestCase {
    /// A short name for bench ids and tables, such as `blob`.
    pub name: &'static str,
    /// The request method.
    pub method: Method,
    /// The request path.
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The status `decide` should return, under any policy of this module.
    pub expected_status: StatusCode,
}

impl RequestCase {
    fn get(name: &'static str, path: String, expected_status: StatusCode) -> Self {
        RequestCase {
            name,
            method: Method::GET,
            path,
            headers: HeaderMap::new(),
            expected_status,
        }
    }

    /// `GET` of a blob.
    pub fn blob() -> Self {
        Self::get(
            "blob",
            format!("/v2/pause/blobs/{DIGEST}"),
            StatusCode::TEMPORARY_REDIRECT,
        )
    }

    /// `GET` of a manifest by tag.
    pub fn manifest_by_tag() -> Self {
        Self::get(
            "manifest_tag",
            "/v2/pause/manifests/3.10".into(),
            StatusCode::TEMPORARY_REDIRECT,
        )
    }

    /// `GET` of a manifest by digest, in a two-component repository.
    pub fn manifest_by_digest() -> Self {
        Self::get(
            "manifest_digest",
            format!("/v2/kube-proxy/amd64/manifests/{DIGEST}"),
            StatusCode::TEMPORARY_REDIRECT,
        )
    }

    /// `GET` of a tag list.
    pub fn tags_list() -> Self {
        Self::get(
            "tags_list",
            "/v2/pause/tags/list".into(),
            StatusCode::TEMPORARY_REDIRECT,
        )
    }

    /// `GET /v2/`, which gets 200 from the redirector itself, because the
    /// default registry's `api_version_check` is `answer`.
    pub fn api_version_check() -> Self {
        Self::get("api_version_check", "/v2/".into(), StatusCode::OK)
    }

    /// `PUT` of a manifest, rejected with 405.
    pub fn put_manifest() -> Self {
        RequestCase {
            method: Method::PUT,
            ..Self::get(
                "reject_put",
                "/v2/pause/manifests/3.10".into(),
                StatusCode::METHOD_NOT_ALLOWED,
            )
        }
    }

    /// `GET` of a manifest in a repository whose name breaks the grammar
    /// (an uppercase letter), rejected with 404.
    pub fn invalid_name() -> Self {
        Self::get(
            "reject_name",
            "/v2/Pause/manifests/3.10".into(),
            StatusCode::NOT_FOUND,
        )
    }

    /// Returns the cases above, in the order of the bench output.
    pub fn all() -> Vec<Self> {
        vec![
            Self::blob(),
            Self::manifest_by_tag(),
            Self::manifest_by_digest(),
            Self::tags_list(),
            Self::api_version_check(),
            Self::put_manifest(),
            Self::invalid_name(),
        ]
    }

    /// Returns this request as seen from `peer`.
    pub fn view(&self, peer: IpAddr) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            path: &self.path,
            query: None,
            host: Some(HOST),
            peer: Some(peer),
            headers: &self.headers,
            version: http::Version::HTTP_11,
        }
    }
}

/// The peer address of [`forwarded_for`] requests: a load balancer inside
/// [`TRUSTED_PROXIES`].
pub const LOAD_BALANCER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

/// Builds an `X-Forwarded-For` header of five hops: `client`, then four
/// proxies inside [`TRUSTED_PROXIES`], so finding the client reads every hop.
pub fn forwarded_for(client: IpAddr) -> HeaderMap {
    let value = format!("{client}, 192.168.7.1, 172.16.3.4, 10.20.0.5, 10.0.0.9");
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert("x-forwarded-for", value);
    }
    headers
}

/// Builds a `Forwarded` header (RFC 7239) with the same five hops as
/// [`forwarded_for`], one element each.
pub fn forwarded(client: IpAddr) -> HeaderMap {
    let client = match client {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let value = format!(
        "for={client};proto=https, for=192.168.7.1, for=172.16.3.4, for=10.20.0.5, for=10.0.0.9"
    );
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert("forwarded", value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use registry_redirect_core::client::{
        resolve_client, ClientSource, ForwardedHeader, TrustedProxies,
    };
    use registry_redirect_core::{decide, Outcome};

    use super::*;
    use crate::addresses::{cloud_client_addresses, AddressFamily};
    use crate::synthetic::synthetic_ranges;

    const OUTSIDE: &str = "192.0.2.1";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn every_case_gets_expected_status() {
        let policies = [
            cloud_policy(&synthetic_ranges(2_000, 1)).unwrap(),
            tiny_policy().unwrap(),
        ];
        for policy in &policies {
            for case in RequestCase::all() {
                let decision = decide(policy, &case.view(ip(OUTSIDE)));
                assert_eq!(
                    decision.status(),
                    Some(case.expected_status),
                    "{}",
                    case.name
                );
            }
        }
    }

    #[test]
    fn redirects_are_single_locations() {
        let policy = cloud_policy(&synthetic_ranges(2_000, 1)).unwrap();
        for case in RequestCase::all() {
            let decision = decide(&policy, &case.view(ip(OUTSIDE)));
            if decision.status() == Some(StatusCode::TEMPORARY_REDIRECT) {
                assert!(
                    matches!(decision.outcome, Outcome::Redirect { .. }),
                    "{}",
                    case.name
                );
            }
        }
    }

    #[test]
    fn cloud_clients_reach_regional_upstreams() {
        let ranges = synthetic_ranges(5_000, 2);
        let policy = cloud_policy(&ranges).unwrap();
        let blob = RequestCase::blob();
        let manifest = RequestCase::manifest_by_tag();
        let cases = [
            ("aws", &blob, "https://blobs-aws-region-", "aws-blobs"),
            (
                "aws",
                &manifest,
                "https://registry.example.com/v2/",
                "registry",
            ),
            ("gcp", &blob, "https://gcp-region-", "gcp-registry"),
            ("gcp", &manifest, "https://gcp-region-", "gcp-registry"),
        ];
        for (cloud, case, location, upstream) in cases {
            let clients =
                cloud_client_addresses(&ranges, &policy, cloud, AddressFamily::V4, 20, 3).unwrap();
            for client in clients {
                let decision = decide(&policy, &case.view(client));
                let label = format!("{cloud} {} {client}", case.name);
                assert!(
                    decision.location().unwrap().starts_with(location),
                    "{label}: {:?}",
                    decision.location()
                );
                assert_eq!(
                    decision.route().unwrap().upstream.name(),
                    upstream,
                    "{label}"
                );
            }
        }
    }

    #[test]
    fn tiny_policy_adds_library_prefix() {
        let policy = tiny_policy().unwrap();
        let decision = decide(&policy, &RequestCase::blob().view(ip(OUTSIDE)));
        assert_eq!(
            decision.location(),
            Some(
                format!("https://registry-1.docker.example.com/v2/library/pause/blobs/{DIGEST}")
                    .as_str()
            )
        );
    }

    #[test]
    fn forwarding_headers_name_the_client() {
        let networks: Vec<_> = TRUSTED_PROXIES
            .iter()
            .map(|net| net.parse().unwrap())
            .collect();
        let cases = [
            (
                forwarded_for as fn(IpAddr) -> HeaderMap,
                ClientSource::XForwardedFor,
                "203.0.113.7",
            ),
            (forwarded_for, ClientSource::XForwardedFor, "2001:db8::7"),
            (forwarded, ClientSource::Forwarded, "203.0.113.7"),
            (forwarded, ClientSource::Forwarded, "2001:db8::7"),
        ];
        for (build, source, client) in cases {
            // Trusted proxies write one header, and only that one is read.
            let header = match source {
                ClientSource::Forwarded => ForwardedHeader::Forwarded,
                _ => ForwardedHeader::XForwardedFor,
            };
            let trusted = TrustedProxies::with_header(networks.clone(), header);
            let headers = build(ip(client));
            let resolved = resolve_client(Some(LOAD_BALANCER), &headers, &trusted);
            assert_eq!(resolved.addr, Some(ip(client)), "{source} {client}");
            assert_eq!(resolved.source, source, "{client}");
            assert_eq!(resolved.note, None, "{source} {client}");
        }
    }
}
