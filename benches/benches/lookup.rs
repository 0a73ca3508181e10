//! Longest-prefix look-ups and table builds: `RangeTable` from
//! `registry-redirect-core` beside the `prefix-trie` and `ip_network_table`
//! crates, on the same prefixes and the same client addresses.
//!
//! Run from the workspace root:
//!
//! ```text
//! REGISTRY_REDIRECT_DATA_DIR=/path/to/data cargo bench -p registry-redirect-benches --bench lookup
//! BENCH_QUICK=1 cargo bench -p registry-redirect-benches --bench lookup
//! ```
//!
//! Tables: synthetic ones of 100, 10,000 and 100,000 prefixes with the
//! prefix-length mix of the cloud ranges, and the 26,685 published cloud
//! prefixes when `REGISTRY_REDIRECT_DATA_DIR` has `cloud-ranges.txt`. Each
//! look-up bench cycles through 16,384 shuffled addresses of one family,
//! half inside some prefix and half outside every prefix. Before timing,
//! the three structures must agree on every address, or the bench stops.
//!
//! Bench ids: `lookup_ipv4/<structure>/<table>`, `lookup_ipv6/...`,
//! `build/<structure>/<table>`.

mod common;

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode};
use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use registry_redirect_benches::addresses::{client_addresses, AddressFamily, ADDRESS_COUNT};
use registry_redirect_benches::synthetic::synthetic_prefixes;
use registry_redirect_benches::{SEED, SYNTHETIC_SIZES};
use registry_redirect_core::ranges::RangeTable;

/// One set of prefixes with the addresses looked up in it.
struct Dataset {
    name: String,
    prefixes: Vec<IpNet>,
    ipv4: Vec<IpAddr>,
    ipv6: Vec<IpAddr>,
}

impl Dataset {
    fn new(name: String, prefixes: Vec<IpNet>) -> Self {
        let addresses = |family, seed| {
            client_addresses(&prefixes, family, ADDRESS_COUNT, seed)
                .unwrap_or_else(|error| panic!("table {name}: {error}"))
        };
        let ipv4 = addresses(AddressFamily::V4, SEED + 1);
        let ipv6 = addresses(AddressFamily::V6, SEED + 2);
        Dataset {
            name,
            prefixes,
            ipv4,
            ipv6,
        }
    }

    /// Pairs each prefix with its position, the value every structure stores.
    fn entries(&self) -> Vec<(IpNet, u32)> {
        self.prefixes
            .iter()
            .enumerate()
            .map(|(index, &prefix)| (prefix, index as u32))
            .collect()
    }
}

/// The same prefixes in each of the compared structures.
struct Tables {
    core: RangeTable<u32>,
    trie: TriePair,
    treebitmap: IpNetworkTable<u32>,
}

struct TriePair {
    ipv4: PrefixMap<Ipv4Net, u32>,
    ipv6: PrefixMap<Ipv6Net, u32>,
}

impl TriePair {
    fn build(entries: &[(IpNet, u32)]) -> Self {
        let mut trie = TriePair {
            ipv4: PrefixMap::new(),
            ipv6: PrefixMap::new(),
        };
        for &(prefix, value) in entries {
            match prefix {
                IpNet::V4(net) => trie.ipv4.insert(net, value),
                IpNet::V6(net) => trie.ipv6.insert(net, value),
            };
        }
        trie
    }

    #[inline]
    fn lookup(&self, addr: IpAddr) -> Option<&u32> {
        match addr {
            IpAddr::V4(v4) => self.ipv4.get_lpm(&Ipv4Net::from(v4)).map(|(_, v)| v),
            IpAddr::V6(v6) => self.ipv6.get_lpm(&Ipv6Net::from(v6)).map(|(_, v)| v),
        }
    }
}

fn build_core(entries: Vec<(IpNet, u32)>) -> RangeTable<u32> {
    RangeTable::build(entries, |_outer, inner| *inner)
}

fn build_treebitmap(entries: &[(IpNet, u32)]) -> IpNetworkTable<u32> {
    let mut table = IpNetworkTable::new();
    for &(prefix, value) in entries {
        // The prefixes are truncated, so `IpNetwork::new` accepts them all.
        if let Ok(network) = IpNetwork::new(prefix.network(), prefix.prefix_len()) {
            table.insert(network, value);
        }
    }
    table
}

impl Tables {
    fn build(dataset: &Dataset) -> Self {
        let entries = dataset.entries();
        Tables {
            core: build_core(entries.clone()),
            trie: TriePair::build(&entries),
            treebitmap: build_treebitmap(&entries),
        }
    }

    /// Stops the bench unless every structure finds the same prefix for
    /// every address, so the numbers compare equal work.
    fn check_agreement(&self, dataset: &Dataset) {
        for &addr in dataset.ipv4.iter().chain(&dataset.ipv6) {
            let core = self.core.lookup(addr).copied();
            let trie = self.trie.lookup(addr).copied();
            let treebitmap = self.treebitmap.longest_match(addr).map(|(_, &v)| v);
            assert!(
                core == trie && core == treebitmap,
                "table {}: structures disagree on {addr}: RangeTable {core:?}, prefix-trie {trie:?}, ip_network_table {treebitmap:?}",
                dataset.name
            );
        }
    }
}

fn datasets() -> Vec<Dataset> {
    let mut datasets: Vec<Dataset> = SYNTHETIC_SIZES
        .iter()
        .map(|&size| Dataset::new(format!("synthetic-{size}"), synthetic_prefixes(size, SEED)))
        .collect();
    if let Some(ranges) = common::cloud_ranges_or_skip("lookup") {
        let prefixes: Vec<IpNet> = ranges.entries().iter().map(|entry| entry.prefix).collect();
        datasets.push(Dataset::new(format!("cloud-{}", prefixes.len()), prefixes));
    }
    datasets
}

/// Times one look-up per iteration, stepping through `addresses`.
macro_rules! bench_lookups {
    ($group:expr, $structure:expr, $dataset:expr, $addresses:expr, |$addr:ident| $lookup:expr) => {
        $group.bench_function(BenchmarkId::new($structure, &$dataset.name), |bencher| {
            let addresses: &[IpAddr] = $addresses;
            let mut next = 0usize;
            bencher.iter(|| {
                next = (next + 1) & (ADDRESS_COUNT - 1);
                let $addr = black_box(addresses[next]);
                $lookup
            });
        });
    };
}

fn bench_lookup(criterion: &mut Criterion, datasets: &[Dataset], tables: &[Tables]) {
    for family in [AddressFamily::V4, AddressFamily::V6] {
        let group_name = match family {
            AddressFamily::V4 => "lookup_ipv4",
            AddressFamily::V6 => "lookup_ipv6",
        };
        let mut group = criterion.benchmark_group(group_name);
        for (dataset, table) in datasets.iter().zip(tables) {
            let addresses = match family {
                AddressFamily::V4 => &dataset.ipv4,
                AddressFamily::V6 => &dataset.ipv6,
            };
            bench_lookups!(group, "range_table", dataset, addresses, |addr| table
                .core
                .lookup(addr));
            bench_lookups!(group, "prefix_trie", dataset, addresses, |addr| table
                .trie
                .lookup(addr));
            bench_lookups!(group, "ip_network_table", dataset, addresses, |addr| table
                .treebitmap
                .longest_match(addr));
        }
        group.finish();
    }
}

fn bench_build(criterion: &mut Criterion, datasets: &[Dataset]) {
    let mut group = criterion.benchmark_group("build");
    // A build of 100,000 prefixes takes milliseconds, so every sample runs
    // the same few iterations instead of a growing number.
    group.sampling_mode(SamplingMode::Flat);
    if !common::is_quick() {
        group.sample_size(20);
    }
    for dataset in datasets {
        let entries = dataset.entries();
        group.bench_function(BenchmarkId::new("range_table", &dataset.name), |bencher| {
            bencher.iter_batched(|| entries.clone(), build_core, BatchSize::LargeInput);
        });
        group.bench_function(BenchmarkId::new("prefix_trie", &dataset.name), |bencher| {
            bencher.iter(|| TriePair::build(&entries));
        });
        group.bench_function(
            BenchmarkId::new("ip_network_table", &dataset.name),
            |bencher| {
                bencher.iter(|| build_treebitmap(&entries));
            },
        );
    }
    group.finish();
}

fn main() {
    let mut criterion = common::criterion();
    let datasets = datasets();
    let tables: Vec<Tables> = datasets.iter().map(Tables::build).collect();
    for (dataset, table) in datasets.iter().zip(&tables) {
        table.check_agreement(dataset);
        eprintln!(
            "lookup: table {} has {} prefixes in {} intervals; the 3 structures agree on {} addresses",
            dataset.name,
            table.core.prefix_count(),
            table.core.interval_count(),
            dataset.ipv4.len() + dataset.ipv6.len()
        );
    }

    bench_lookup(&mut criterion, &datasets, &tables);
    bench_build(&mut criterion, &datasets);
    criterion.final_summary();
}
