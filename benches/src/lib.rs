//! Fixtures for the benchmarks of `registry-redirect-core`: range tables,
//! client addresses, policies and requests, all deterministic, and a
//! counting allocator.
//!
//! The benches themselves are in `benches/`:
//!
//! | target | what it measures |
//! |---|---|
//! | `lookup` | `RangeTable::lookup` for IPv4 and IPv6, and table build time, beside the `prefix-trie` and `ip_network_table` crates |
//! | `decision` | `decide()` for each request kind, with the cloud policy; parsing and compiling the policy |
//! | `steps` | path classification, the client address from forwarding headers, and `Location` building |
//! | `alloc` | heap allocations per decision, printed as a table |
//!
//! Run them all, or one target, from the workspace root:
//!
//! ```text
//! REGISTRY_REDIRECT_DATA_DIR=/path/to/data cargo bench -p registry-redirect-benches
//! REGISTRY_REDIRECT_DATA_DIR=/path/to/data cargo bench -p registry-redirect-benches --bench lookup
//! ```
//!
//! `REGISTRY_REDIRECT_DATA_DIR` names a directory containing
//! `cloud-ranges.txt` ([`data`]). Without it the benches run on synthetic
//! tables only and print that the real-data benches were skipped.
//!
//! `BENCH_QUICK=1` shortens warm-up and measurement for a smoke run in CI:
//!
//! ```text
//! BENCH_QUICK=1 cargo bench -p registry-redirect-benches
//! ```
//!
//! Criterion's own `--quick` (after `--`) works too, but keeps the default
//! warm-up of 3 seconds per bench.

pub mod addresses;
pub mod allocations;
pub mod data;
pub mod fixtures;
pub mod random;
pub mod synthetic;

/// The seed of every fixture, so runs compare like with like.
pub const SEED: u64 = 0x7265_6769_7374_7279;

/// The sizes of the synthetic tables, in prefixes.
pub const SYNTHETIC_SIZES: [usize; 3] = [100, 10_000, 100_000];

/// The number of prefixes in the published cloud ranges, also the size of
/// the synthetic stand-in when the real file is absent.
pub const CLOUD_PREFIX_COUNT: usize = 26_685;
