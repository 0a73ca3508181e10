//! `decide()` for each request kind under the cloud policy, and the time to
//! parse the range file and compile the policy.
//!
//! Run from the workspace root:
//!
//! ```text
//! REGISTRY_REDIRECT_DATA_DIR=/path/to/data cargo bench -p registry-redirect-benches --bench decision
//! BENCH_QUICK=1 cargo bench -p registry-redirect-benches --bench decision
//! ```
//!
//! The policy is `fixtures::cloud_policy`: AWS clients get blobs from a blob
//! store in their region, GCP clients get a registry mirror in their region,
//! everyone else gets the default registry. It is compiled with the 26,685
//! published cloud prefixes when `REGISTRY_REDIRECT_DATA_DIR` has
//! `cloud-ranges.txt`, and always with 26,685 synthetic prefixes.
//!
//! Clients are IPv4, because IPv6 look-ups are timed alone in `lookup.rs`.
//! Each case cycles through 16,384 shuffled clients:
//!
//! - `blob_aws` and `blob_gcp`: addresses that the policy labels with that
//!   cloud and a region;
//! - `blob_aws_xff`: the same AWS addresses behind a load balancer that
//!   sends a five-hop `X-Forwarded-For`;
//! - every other case: addresses half inside some cloud prefix and half
//!   outside every one.
//!
//! Each timed iteration includes dropping the decision, so freeing its
//! `Location`.
//!
//! Bench ids: `decide/<case>/<policy>`, `policy_build/<step>/<policy>`.

mod common;

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion, SamplingMode};
use http::{HeaderMap, StatusCode};
use registry_redirect_benches::addresses::{
    client_addresses, cloud_client_addresses, AddressFamily, ADDRESS_COUNT,
};
use registry_redirect_benches::data::{parse_cloud_ranges, read_cloud_ranges};
use registry_redirect_benches::fixtures::{
    cloud_policy, forwarded_for, RequestCase, HOST, LOAD_BALANCER,
};
use registry_redirect_benches::synthetic::synthetic_ranges;
use registry_redirect_benches::{CLOUD_PREFIX_COUNT, SEED};
use registry_redirect_core::sources::LabeledRanges;
use registry_redirect_core::{decide, Policy, RequestView};

/// A compiled policy with the client sets its benches cycle through.
struct Subject {
    name: String,
    ranges: LabeledRanges,
    policy: Policy,
    mixed: Vec<IpAddr>,
    aws: Vec<IpAddr>,
    gcp: Vec<IpAddr>,
    /// An `X-Forwarded-For` header per address of `aws`.
    aws_forwarded: Vec<HeaderMap>,
}

impl Subject {
    fn new(name: String, ranges: LabeledRanges) -> Self {
        let policy = cloud_policy(&ranges).unwrap_or_else(|errors| panic!("{name}: {errors}"));
        let prefixes: Vec<_> = ranges.entries().iter().map(|entry| entry.prefix).collect();
        let mixed = client_addresses(&prefixes, AddressFamily::V4, ADDRESS_COUNT, SEED + 3)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let cloud_clients = |cloud, seed| {
            cloud_client_addresses(
                &ranges,
                &policy,
                cloud,
                AddressFamily::V4,
                ADDRESS_COUNT,
                seed,
            )
            .unwrap_or_else(|error| panic!("{name}: {error}"))
        };
        let aws = cloud_clients("aws", SEED + 4);
        let gcp = cloud_clients("gcp", SEED + 5);
        let aws_forwarded = aws.iter().map(|&client| forwarded_for(client)).collect();
        Subject {
            name,
            ranges,
            policy,
            mixed,
            aws,
            gcp,
            aws_forwarded,
        }
    }

    /// Stops the bench unless `case` from `clients` gets its expected
    /// status, and redirects start with `location_start`.
    fn check(&self, case: &RequestCase, clients: &[IpAddr], location_start: Option<&str>) {
        for &client in clients.iter().take(1_000) {
            let decision = decide(&self.policy, &case.view(client));
            assert_eq!(
                decision.status(),
                Some(case.expected_status),
                "{} {} from {client}",
                self.name,
                case.name
            );
            if let Some(start) = location_start {
                let location = decision.location().unwrap_or_default();
                assert!(
                    location.starts_with(start),
                    "{} {} from {client}: Location {location}, expected it to start with {start}",
                    self.name,
                    case.name
                );
            }
        }
    }
}

fn subjects() -> Vec<Subject> {
    let mut subjects = vec![Subject::new(
        format!("synthetic-{CLOUD_PREFIX_COUNT}"),
        synthetic_ranges(CLOUD_PREFIX_COUNT, SEED),
    )];
    if let Some(ranges) = common::cloud_ranges_or_skip("decision") {
        subjects.push(Subject::new(format!("cloud-{}", ranges.len()), ranges));
    }
    subjects
}

/// Times one decision per iteration, stepping through `clients`.
fn bench_case(
    criterion_group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    subject: &Subject,
    case: &RequestCase,
    clients: &[IpAddr],
) {
    criterion_group.bench_function(BenchmarkId::new(id, &subject.name), |bencher| {
        let mut next = 0usize;
        bencher.iter(|| {
            next = (next + 1) & (ADDRESS_COUNT - 1);
            let view = case.view(black_box(clients[next]));
            decide(&subject.policy, &view)
        });
    });
}

fn bench_decide(criterion: &mut Criterion, subjects: &[Subject]) {
    let mut group = criterion.benchmark_group("decide");
    let blob = RequestCase::blob();
    for subject in subjects {
        subject.check(&blob, &subject.aws, Some("https://blobs-"));
        bench_case(&mut group, "blob_aws", subject, &blob, &subject.aws);

        // GCP regions fill the host of the template, so only the scheme is
        // common to every Location.
        subject.check(&blob, &subject.gcp, Some("https://"));
        bench_case(&mut group, "blob_gcp", subject, &blob, &subject.gcp);

        for case in RequestCase::all() {
            subject.check(&case, &subject.mixed, None);
            bench_case(&mut group, case.name, subject, &case, &subject.mixed);
        }

        group.bench_function(BenchmarkId::new("blob_aws_xff", &subject.name), |bencher| {
            let mut next = 0usize;
            bencher.iter(|| {
                next = (next + 1) & (ADDRESS_COUNT - 1);
                let view = RequestView {
                    method: &blob.method,
                    path: &blob.path,
                    query: None,
                    host: Some(HOST),
                    peer: Some(LOAD_BALANCER),
                    headers: black_box(&subject.aws_forwarded[next]),
                    version: http::Version::HTTP_11,
                };
                let decision = decide(&subject.policy, &view);
                debug_assert_eq!(decision.status(), Some(StatusCode::TEMPORARY_REDIRECT));
                decision
            });
        });
    }
    group.finish();
}

fn bench_policy_build(criterion: &mut Criterion, subjects: &[Subject]) {
    let mut group = criterion.benchmark_group("policy_build");
    group.sampling_mode(SamplingMode::Flat);
    if !common::is_quick() {
        group.sample_size(20);
    }
    if let Ok((_, bytes)) = read_cloud_ranges() {
        let name = subjects
            .last()
            .map_or("cloud", |subject| subject.name.as_str());
        group.bench_function(BenchmarkId::new("parse", name), |bencher| {
            bencher.iter(|| parse_cloud_ranges(&bytes));
        });
    }
    for subject in subjects {
        group.bench_function(BenchmarkId::new("compile", &subject.name), |bencher| {
            bencher.iter(|| cloud_policy(&subject.ranges));
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = common::criterion();
    let subjects = subjects();
    bench_decide(&mut criterion, &subjects);
    bench_policy_build(&mut criterion, &subjects);
    criterion.final_summary();
}
