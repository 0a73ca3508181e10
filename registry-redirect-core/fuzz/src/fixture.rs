//! The policy the `decide` target runs under: every kind of upstream and
//! rule criterion the core has, so that fuzzed requests can reach each
//! branch of `decide`.

use registry_redirect_core::policy::{
    CanarySpec, ClientLabel, HealthCheckSpec, Policy, PolicySpec, RuleSpec, UpstreamKind,
    UpstreamSpec,
};
use registry_redirect_core::{ApiVersionCheck, RequestKind};

/// Builds the fixed policy.
///
/// Its upstreams:
/// - `k8s`, the plain default;
/// - `hub`, Docker Hub with `library_prefix` and a redirected API version check;
/// - `prod`, a mirror with a port, a base path and a `path_prefix`;
/// - `v6`, an IPv6 literal with a port;
/// - `buckets`, verified regional blob buckets with fallbacks;
/// - `regional`, a registry with a `region_urls` mirror and a health check;
/// - `next`, a canary target.
///
/// Its rules match on client ranges (IPv4 and IPv6), clouds and regions,
/// request kinds, repository names and prefixes, hosts, and one has a
/// canary share. The trusted proxies are `10.0.0.0/8` and `fd00::/8`, and
/// labelled ranges place clients in AWS and GCP regions.
pub fn policy() -> Policy {
    let mut spec = PolicySpec::new("k8s");
    spec.trusted_proxies = vec!["10.0.0.0/8".into(), "fd00::/8".into()];

    let upstreams = &mut spec.upstreams;
    upstreams.insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
    upstreams.insert(
        "hub".into(),
        UpstreamSpec {
            library_prefix: true,
            api_version_check: ApiVersionCheck::Redirect,
            ..UpstreamSpec::new("https://registry-1.docker.io")
        },
    );
    upstreams.insert(
        "prod".into(),
        UpstreamSpec {
            path_prefix: Some("k8s-artifacts-prod/images".into()),
            ..UpstreamSpec::new("https://mirror.example:8443/base")
        },
    );
    upstreams.insert(
        "v6".into(),
        UpstreamSpec::new("http://[2001:db8::5]:5000/registry/"),
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
    buckets
        .fallbacks
        .insert("*".into(), vec!["us-east-1".into()]);
    upstreams.insert("buckets".into(), buckets);
    let mut regional = UpstreamSpec {
        health_check: Some(HealthCheckSpec::default()),
        ..UpstreamSpec::new("https://central.example")
    };
    regional.region_urls.insert(
        "europe-west4".into(),
        "https://europe-west4.mirror.example/r".into(),
    );
    upstreams.insert("regional".into(), regional);
    upstreams.insert("next".into(), UpstreamSpec::new("http://next.example:80"));

    spec.rules = vec![
        RuleSpec {
            clients: vec!["192.168.0.0/24".into(), "2001:db8:1::/48".into()],
            ..RuleSpec::new("lab", "hub")
        },
        RuleSpec {
            clouds: vec!["aws".into()],
            kinds: vec![RequestKind::Blob],
            ..RuleSpec::new("aws-blobs", "buckets")
        },
        RuleSpec {
            clouds: vec!["gcp".into()],
            regions: vec!["europe-*".into()],
            ..RuleSpec::new("gcp-europe", "regional")
        },
        RuleSpec {
            hosts: vec!["docker.io".into(), "*.docker.io".into()],
            ..RuleSpec::new("docker-hub", "hub")
        },
        RuleSpec {
            repositories: vec!["pause".into(), "kube*".into(), "k8s/".into()],
            kinds: vec![RequestKind::Manifest, RequestKind::Blob],
            ..RuleSpec::new("prod-images", "prod")
        },
        RuleSpec {
            clients: vec!["198.18.0.0/15".into()],
            repositories: vec!["a".into()],
            ..RuleSpec::new("v6-images", "v6")
        },
        RuleSpec {
            repositories: vec!["canary".into()],
            canary: Some(CanarySpec {
                upstream: "next".into(),
                percent: 50.0,
            }),
            ..RuleSpec::new("canary", "k8s")
        },
    ];

    let labels = vec![
        ClientLabel::new(Some("aws"), Some("eu-west-1")),
        ClientLabel::new(Some("aws"), Some("eu-north-1")),
        ClientLabel::new(Some("aws"), Some("ap-south-1")),
        ClientLabel::new(Some("gcp"), Some("europe-west4")),
    ];
    let prefixes = [
        (net("198.51.100.0/24"), 0),
        (net("198.51.101.0/24"), 1),
        (net("198.51.102.0/24"), 2),
        (net("192.0.2.0/24"), 3),
        (net("2600:1f00::/24"), 0),
    ];
    match Policy::compile_with_labels(&spec, labels, &prefixes) {
        Ok(policy) => policy,
        Err(errors) => panic!("the fuzz fixture policy is invalid:\n{errors}"),
    }
}

fn net(text: &str) -> ipnet::IpNet {
    match text.parse() {
        Ok(net) => net,
        Err(error) => panic!("{text:?} in the fuzz fixture is not a CIDR: {error}"),
    }
}
