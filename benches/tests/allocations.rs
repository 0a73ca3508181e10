//! Heap allocations per decision, checked against the budget: a redirect
//! allocates its `Location` and nothing else, while the API version check
//! and rejections allocate nothing. `benches/alloc.rs` prints the same counts as a table.

use std::net::IpAddr;

use http::HeaderMap;
use registry_redirect_benches::addresses::{
    client_addresses, cloud_client_addresses, AddressFamily,
};
use registry_redirect_benches::allocations::{count_allocations, CountingAllocator};
use registry_redirect_benches::fixtures::{
    cloud_policy, cloud_policy_spec, forwarded, forwarded_for, tiny_policy, RequestCase, HOST,
    LOAD_BALANCER,
};
use registry_redirect_benches::synthetic::synthetic_ranges;
use registry_redirect_core::sources::LabeledRanges;
use registry_redirect_core::{decide, ForwardedHeader, Policy, RequestView};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const CLIENTS: usize = 200;

struct Setup {
    ranges: LabeledRanges,
    policy: Policy,
}

fn setup() -> Setup {
    let ranges = synthetic_ranges(5_000, 11);
    let policy = cloud_policy(&ranges).unwrap();
    Setup { ranges, policy }
}

/// Returns the maximum allocations of one decision, over `clients`.
fn max_allocations(policy: &Policy, case: &RequestCase, clients: &[IpAddr]) -> u64 {
    clients
        .iter()
        .map(|&client| {
            let (decision, count) = count_allocations(|| decide(policy, &case.view(client)));
            assert_eq!(
                decision.status(),
                Some(case.expected_status),
                "{} from {client}",
                case.name
            );
            count.allocations
        })
        .max()
        .unwrap_or(0)
}

/// Returns the maximum allocations of one blob decision for AWS clients
/// behind the load balancer, with forwarding headers built by `build`.
fn max_forwarded_allocations(setup: &Setup, build: fn(IpAddr) -> HeaderMap) -> u64 {
    let clients = cloud_client_addresses(
        &setup.ranges,
        &setup.policy,
        "aws",
        AddressFamily::V4,
        CLIENTS,
        3,
    )
    .unwrap();
    let blob = RequestCase::blob();
    clients
        .iter()
        .map(|&client| {
            let headers = build(client);
            let view = RequestView {
                method: &blob.method,
                path: &blob.path,
                query: None,
                host: Some(HOST),
                peer: Some(LOAD_BALANCER),
                headers: &headers,
                version: http::Version::HTTP_11,
            };
            let (decision, count) = count_allocations(|| decide(&setup.policy, &view));
            assert_eq!(decision.client.addr, Some(client));
            assert!(decision.location().unwrap().starts_with("https://blobs-"));
            count.allocations
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn each_request_kind_within_budget() {
    let setup = setup();
    let prefixes: Vec<_> = setup.ranges.entries().iter().map(|e| e.prefix).collect();
    let mixed = client_addresses(&prefixes, AddressFamily::V4, CLIENTS, 1).unwrap();
    for case in RequestCase::all() {
        let budget = u64::from(case.expected_status.is_redirection());
        let max = max_allocations(&setup.policy, &case, &mixed);
        assert!(
            max <= budget,
            "{}: {max} allocations, expected at most {budget}",
            case.name
        );
    }
}

#[test]
fn regional_redirects_allocate_once() {
    let setup = setup();
    let blob = RequestCase::blob();
    for cloud in ["aws", "gcp"] {
        let clients = cloud_client_addresses(
            &setup.ranges,
            &setup.policy,
            cloud,
            AddressFamily::V4,
            CLIENTS,
            2,
        )
        .unwrap();
        assert_eq!(
            max_allocations(&setup.policy, &blob, &clients),
            1,
            "{cloud}"
        );
    }
}

#[test]
fn tiny_policy_redirect_allocates_once() {
    let policy = tiny_policy().unwrap();
    let clients = [IpAddr::from([203, 0, 113, 7])];
    assert_eq!(max_allocations(&policy, &RequestCase::blob(), &clients), 1);
}

#[test]
fn x_forwarded_for_adds_no_allocation() {
    assert_eq!(max_forwarded_allocations(&setup(), forwarded_for), 1);
}

#[test]
fn forwarded_adds_no_allocation() {
    // The proxies of this policy write `Forwarded`, the only header read.
    let ranges = synthetic_ranges(5_000, 11);
    let mut spec = cloud_policy_spec();
    spec.forwarded_header = ForwardedHeader::Forwarded;
    let policy = Policy::compile_with_ranges(&spec, &ranges).unwrap();
    let setup = Setup { ranges, policy };
    assert_eq!(max_forwarded_allocations(&setup, forwarded), 1);
}
