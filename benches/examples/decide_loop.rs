//! `decide_loop`: runs the blob decision of the `decision` bench a fixed
//! number of times, for counting instructions with callgrind, which gives
//! the same count whatever else the machine is doing.
//!
//! ```text
//! cargo build --release -p registry-redirect-benches --example decide_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/decide_loop CASE COUNT
//! ```
//!
//! `CASE` is `aws`, `gcp` or `mixed` (clients half inside some prefix and
//! half outside every one); `COUNT`
//! is the number of decisions. Each decision steps through the 16,384
//! clients of the `decision` bench, under the cloud policy with the ranges
//! of `$REGISTRY_REDIRECT_DATA_DIR/cloud-ranges.txt`. Run it twice with
//! different counts: the difference of the two totals, divided by the
//! difference of the counts, is the instructions per decision, without the
//! cost of loading the ranges.

use std::hint::black_box;
use std::net::IpAddr;
use std::process::ExitCode;

use registry_redirect_benches::addresses::{
    client_addresses, cloud_client_addresses, AddressFamily, ADDRESS_COUNT,
};
use registry_redirect_benches::data::load_cloud_ranges;
use registry_redirect_benches::fixtures::{cloud_policy, RequestCase};
use registry_redirect_benches::SEED;
use registry_redirect_core::decide;

const USAGE: &str = "usage: decide_loop aws|gcp|mixed COUNT";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (case, count) = match args.as_slice() {
        [case, count] => match count.parse::<usize>() {
            Ok(count) => (case.as_str(), count),
            Err(_) => {
                eprintln!(
                    "decide_loop: invalid COUNT \"{count}\" (expected a whole number)\n{USAGE}"
                );
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(case, count) {
        Ok(redirects) => {
            println!("{redirects} redirects");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("decide_loop: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `count` blob decisions for the clients of `case` and returns how
/// many were redirects.
fn run(case: &str, count: usize) -> Result<usize, String> {
    let ranges = load_cloud_ranges().map_err(|error| error.to_string())?;
    let policy = cloud_policy(&ranges).map_err(|errors| errors.to_string())?;
    let clients: Vec<IpAddr> = match case {
        "aws" | "gcp" => cloud_client_addresses(
            &ranges,
            &policy,
            case,
            AddressFamily::V4,
            ADDRESS_COUNT,
            SEED + 4,
        )
        .map_err(|error| error.to_string())?,
        "mixed" => {
            let prefixes: Vec<_> = ranges.entries().iter().map(|entry| entry.prefix).collect();
            client_addresses(&prefixes, AddressFamily::V4, ADDRESS_COUNT, SEED + 3)
                .map_err(|error| error.to_string())?
        }
        other => {
            return Err(format!(
                "unknown CASE \"{other}\" (expected aws, gcp or mixed)"
            ))
        }
    };

    let blob = RequestCase::blob();
    let mut redirects = 0;
    for step in 0..count {
        let client = clients[step & (ADDRESS_COUNT - 1)];
        let decision = decide(&policy, &blob.view(black_box(client)));
        if decision.location().is_some() {
            redirects += 1;
        }
    }
    Ok(redirects)
}
