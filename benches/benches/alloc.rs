//! Heap allocations per decision, for each request kind, printed as a
//! Markdown table. The target is at most one allocation per redirect: the
//! `Location` string.
//!
//! Run from the workspace root:
//!
//! ```text
//! REGISTRY_REDIRECT_DATA_DIR=/path/to/data cargo bench -p registry-redirect-benches --bench alloc
//! ```
//!
//! The binary counts with `allocations::CountingAllocator` as its global
//! allocator and times nothing, so `BENCH_QUICK` and Criterion's options
//! make no difference. Each row runs 1,024 decisions after one uncounted
//! warm-up round, with the clients of the same row in `decision.rs`, on the
//! cloud policy compiled with the published ranges when
//! `REGISTRY_REDIRECT_DATA_DIR` has `cloud-ranges.txt`, else with synthetic
//! ranges. Rows ending in `_with_response` also build the `http::Response`,
//! so they are outside the target.

mod common;

use std::hint::black_box;
use std::net::IpAddr;

use http::{HeaderMap, StatusCode};
use registry_redirect_benches::addresses::{
    client_addresses, cloud_client_addresses, AddressFamily,
};
use registry_redirect_benches::allocations::{count_allocations, CountingAllocator};
use registry_redirect_benches::fixtures::{
    cloud_policy, forwarded, forwarded_for, tiny_policy, RequestCase, HOST, LOAD_BALANCER,
};
use registry_redirect_benches::synthetic::synthetic_ranges;
use registry_redirect_benches::{CLOUD_PREFIX_COUNT, SEED};
use registry_redirect_core::sources::LabeledRanges;
use registry_redirect_core::{decide, Decision, Policy, RequestView};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Decisions counted per row.
const ROUNDS: usize = 1_024;

/// The maximum allocations per redirect decision.
const REDIRECT_TARGET: f64 = 1.0;

/// One line of the table.
struct Row {
    case: String,
    outcome: &'static str,
    status: Option<StatusCode>,
    allocations: f64,
    bytes: f64,
    /// Whether the row is a bare decision, so the target applies.
    decision_only: bool,
}

impl Row {
    fn target(&self) -> &'static str {
        let is_redirect = self.status.is_some_and(|status| status.is_redirection());
        match (is_redirect, self.decision_only) {
            (true, true) if self.allocations <= REDIRECT_TARGET => "met",
            (true, true) => "MISSED",
            _ => "-",
        }
    }
}

/// Counts the allocations of `ROUNDS` decisions made by `decide_one(i)`.
fn measure<'p>(case: &str, mut decide_one: impl FnMut(usize) -> Decision<'p>) -> Row {
    let first = decide_one(0);
    let (outcome, status) = (first.outcome_name(), first.status());
    drop(first);
    for round in 0..ROUNDS {
        black_box(decide_one(round));
    }

    let ((), count) = count_allocations(|| {
        for round in 0..ROUNDS {
            black_box(decide_one(round));
        }
    });
    Row {
        case: case.to_owned(),
        outcome,
        status,
        allocations: count.allocations as f64 / ROUNDS as f64,
        bytes: count.bytes as f64 / ROUNDS as f64,
        decision_only: true,
    }
}

/// Counts the allocations of `ROUNDS` decisions turned into responses.
fn measure_with_response<'p>(case: &str, mut decide_one: impl FnMut(usize) -> Decision<'p>) -> Row {
    let mut row = measure(case, &mut decide_one);
    let ((), count) = count_allocations(|| {
        for round in 0..ROUNDS {
            black_box(decide_one(round).into_response());
        }
    });
    row.allocations = count.allocations as f64 / ROUNDS as f64;
    row.bytes = count.bytes as f64 / ROUNDS as f64;
    row.decision_only = false;
    row
}

fn cloud_rows(name: &str, ranges: &LabeledRanges, policy: &Policy) -> Vec<Row> {
    let prefixes: Vec<_> = ranges.entries().iter().map(|entry| entry.prefix).collect();
    let mixed = client_addresses(&prefixes, AddressFamily::V4, ROUNDS, SEED + 3)
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    let cloud_clients = |cloud, seed| {
        cloud_client_addresses(ranges, policy, cloud, AddressFamily::V4, ROUNDS, seed)
            .unwrap_or_else(|error| panic!("{name}: {error}"))
    };
    let aws = cloud_clients("aws", SEED + 4);
    let gcp = cloud_clients("gcp", SEED + 5);
    let blob = RequestCase::blob();
    let at = |clients: &[IpAddr], round: usize| clients[round % clients.len()];

    let mut rows = vec![
        measure("blob_aws", |round| {
            decide(policy, &blob.view(at(&aws, round)))
        }),
        measure("blob_gcp", |round| {
            decide(policy, &blob.view(at(&gcp, round)))
        }),
    ];
    for case in RequestCase::all() {
        rows.push(measure(case.name, |round| {
            decide(policy, &case.view(at(&mixed, round)))
        }));
    }

    for (case, build) in [
        ("blob_aws_xff", forwarded_for as fn(IpAddr) -> HeaderMap),
        ("blob_aws_forwarded", forwarded),
    ] {
        let headers: Vec<HeaderMap> = aws.iter().map(|&client| build(client)).collect();
        rows.push(measure(case, |round| {
            let view = RequestView {
                method: &blob.method,
                path: &blob.path,
                query: None,
                host: Some(HOST),
                peer: Some(LOAD_BALANCER),
                headers: &headers[round % headers.len()],
                version: http::Version::HTTP_11,
            };
            decide(policy, &view)
        }));
    }

    rows.push(measure_with_response("blob_aws_with_response", |round| {
        decide(policy, &blob.view(at(&aws, round)))
    }));
    rows
}

fn tiny_rows(policy: &Policy) -> Vec<Row> {
    let blob = RequestCase::blob();
    let client = IpAddr::from([203, 0, 113, 7]);
    vec![
        measure("tiny_blob", |_| decide(policy, &blob.view(client))),
        measure_with_response("tiny_blob_with_response", |_| {
            decide(policy, &blob.view(client))
        }),
    ]
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}\n");
    println!("| case | outcome | status | allocations/decision | bytes/decision | target (<= 1 per redirect) |");
    println!("|---|---|---|---:|---:|---|");
    for row in rows {
        let status = row
            .status
            .map_or_else(|| "-".to_owned(), |status| status.as_u16().to_string());
        println!(
            "| {} | {} | {status} | {:.2} | {:.1} | {} |",
            row.case,
            row.outcome,
            row.allocations,
            row.bytes,
            row.target()
        );
    }
}

fn main() {
    let (name, ranges) = match common::cloud_ranges_or_skip("alloc") {
        Some(ranges) => (format!("cloud-{}", ranges.len()), ranges),
        None => (
            format!("synthetic-{CLOUD_PREFIX_COUNT}"),
            synthetic_ranges(CLOUD_PREFIX_COUNT, SEED),
        ),
    };
    let policy = cloud_policy(&ranges).unwrap_or_else(|errors| panic!("{name}: {errors}"));
    let tiny = tiny_policy().unwrap_or_else(|errors| panic!("tiny policy: {errors}"));

    let mut rows = cloud_rows(&name, &ranges, &policy);
    rows.extend(tiny_rows(&tiny));
    print_table(
        &format!("Heap allocations per decision, cloud policy with {name} ranges (rows tiny_*: tiny policy)"),
        &rows,
    );

    let missed: Vec<&str> = rows
        .iter()
        .filter(|row| row.target() == "MISSED")
        .map(|row| row.case.as_str())
        .collect();
    if missed.is_empty() {
        println!("\nTarget met: every redirect decision allocates at most once.");
    } else {
        println!(
            "\nTarget missed: {} allocate more than once per redirect decision.",
            missed.join(", ")
        );
    }
}
