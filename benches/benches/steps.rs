//! The steps of a decision, timed alone: path classification, the client
//! address from forwarding headers, and `Location` building.
//!
//! Run from the workspace root (no range file is needed):
//!
//! ```text
//! cargo bench -p registry-redirect-benches --bench steps
//! BENCH_QUICK=1 cargo bench -p registry-redirect-benches --bench steps
//! ```
//!
//! `Location` building is timed through `decide()` on `fixtures::tiny_policy`
//! (one registry, no rules, no ranges), where little else happens, and
//! again with `into_response()`, which adds the HTML redirect body and the
//! response headers.
//!
//! Bench ids: `classify/<path>`, `resolve_client/<headers>`,
//! `redirect_tiny_policy/<case>`.

mod common;

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion};
use http::{HeaderMap, Method};
use registry_redirect_benches::fixtures::{
    forwarded, forwarded_for, tiny_policy, RequestCase, LOAD_BALANCER, TRUSTED_PROXIES,
};
use registry_redirect_core::client::{resolve_client, ForwardedHeader, TrustedProxies};
use registry_redirect_core::decide;
use registry_redirect_core::path::classify;

/// A client outside every trusted network.
const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

fn bench_classify(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("classify");
    let mut paths: Vec<(&str, String)> = RequestCase::all()
        .into_iter()
        .map(|case| (case.name, case.path))
        .collect();
    paths.push((
        "deep_name",
        "/v2/team/project/component/service/image/manifests/v1.2.3".into(),
    ));
    paths.push(("not_registry", "/healthz".into()));
    for (name, path) in &paths {
        group.bench_function(BenchmarkId::from_parameter(name), |bencher| {
            bencher.iter(|| classify(black_box(path)));
        });
    }
    group.finish();
}

fn bench_resolve_client(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("resolve_client");
    let networks: Vec<_> = TRUSTED_PROXIES
        .iter()
        .filter_map(|net| net.parse().ok())
        .collect();
    // Trusted proxies write one header, and only that one is read.
    let xff = TrustedProxies::with_header(networks.clone(), ForwardedHeader::XForwardedFor);
    let rfc7239 = TrustedProxies::with_header(networks, ForwardedHeader::Forwarded);
    let cases: [(&str, IpAddr, HeaderMap, &TrustedProxies); 3] = [
        ("peer_untrusted", CLIENT, HeaderMap::new(), &xff),
        ("xff_five_hops", LOAD_BALANCER, forwarded_for(CLIENT), &xff),
        (
            "forwarded_five_hops",
            LOAD_BALANCER,
            forwarded(CLIENT),
            &rfc7239,
        ),
    ];
    for (name, peer, headers, trusted) in &cases {
        group.bench_function(BenchmarkId::from_parameter(name), |bencher| {
            bencher.iter(|| resolve_client(Some(black_box(*peer)), black_box(headers), trusted));
        });
    }
    group.finish();
}

fn bench_tiny_policy(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("redirect_tiny_policy");
    let policy = tiny_policy().unwrap_or_else(|errors| panic!("tiny policy: {errors}"));
    let blob = RequestCase::blob();
    let manifest = RequestCase::manifest_by_tag();
    let head_blob = RequestCase {
        method: Method::HEAD,
        ..RequestCase::blob()
    };

    group.bench_function("blob", |bencher| {
        bencher.iter(|| decide(&policy, &blob.view(black_box(CLIENT))));
    });
    group.bench_function("manifest_tag", |bencher| {
        bencher.iter(|| decide(&policy, &manifest.view(black_box(CLIENT))));
    });
    group.bench_function("blob_with_response", |bencher| {
        bencher.iter(|| decide(&policy, &blob.view(black_box(CLIENT))).into_response());
    });
    group.bench_function("head_blob_with_response", |bencher| {
        bencher.iter(|| decide(&policy, &head_blob.view(black_box(CLIENT))).into_response());
    });
    group.finish();
}

fn main() {
    let mut criterion = common::criterion();
    bench_classify(&mut criterion);
    bench_resolve_client(&mut criterion);
    bench_tiny_policy(&mut criterion);
    criterion.final_summary();
}
