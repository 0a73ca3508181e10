//! The bench tables checked against a reference: `RangeTable` must find the
//! same prefix as `prefix-trie` for every address the benches look up, and
//! the hard-coded length mix must still be that of the published file.
//!
//! The real-data tests run when `REGISTRY_REDIRECT_DATA_DIR` names a
//! directory containing `cloud-ranges.txt`, and pass with a note otherwise.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use registry_redirect_benches::addresses::{client_addresses, AddressFamily};
use registry_redirect_benches::data::load_cloud_ranges;
use registry_redirect_benches::synthetic::{
    synthetic_prefixes, IPV4_PREFIX_LENGTHS, IPV6_PREFIX_LENGTHS,
};
use registry_redirect_core::ranges::RangeTable;

fn cloud_prefixes() -> Option<Vec<IpNet>> {
    match load_cloud_ranges() {
        Ok(ranges) => Some(ranges.entries().iter().map(|entry| entry.prefix).collect()),
        Err(error) if error.is_absent() => {
            eprintln!("skipped: {error}");
            None
        }
        Err(error) => panic!("{error}"),
    }
}

/// Asserts that `RangeTable` and `prefix-trie` find the same prefix for
/// 4,096 addresses of each family, and that the table counts every prefix.
fn assert_agreement(prefixes: &[IpNet]) {
    let entries: Vec<(IpNet, u32)> = prefixes
        .iter()
        .enumerate()
        .map(|(index, &prefix)| (prefix, index as u32))
        .collect();
    let table = RangeTable::build(entries.clone(), |_outer, inner| *inner);
    let mut ipv4: PrefixMap<Ipv4Net, u32> = PrefixMap::new();
    let mut ipv6: PrefixMap<Ipv6Net, u32> = PrefixMap::new();
    for (prefix, value) in entries {
        match prefix {
            IpNet::V4(net) => ipv4.insert(net, value),
            IpNet::V6(net) => ipv6.insert(net, value),
        };
    }
    assert_eq!(table.prefix_count(), prefixes.len());

    for family in [AddressFamily::V4, AddressFamily::V6] {
        let addresses = client_addresses(prefixes, family, 4_096, 17).unwrap();
        for addr in addresses {
            let expected = match addr {
                IpAddr::V4(v4) => ipv4.get_lpm(&Ipv4Net::from(v4)).map(|(_, &v)| v),
                IpAddr::V6(v6) => ipv6.get_lpm(&Ipv6Net::from(v6)).map(|(_, &v)| v),
            };
            assert_eq!(table.lookup(addr).copied(), expected, "{addr}");
        }
    }
}

#[test]
fn synthetic_tables_match_prefix_trie() {
    for size in [100, 10_000] {
        assert_agreement(&synthetic_prefixes(size, 23));
    }
}

#[test]
fn cloud_ranges_match_prefix_trie() {
    if let Some(prefixes) = cloud_prefixes() {
        assert_agreement(&prefixes);
    }
}

#[test]
fn length_mix_matches_cloud_ranges() {
    let Some(prefixes) = cloud_prefixes() else {
        return;
    };
    let mut counted: BTreeMap<(bool, u8), u32> = BTreeMap::new();
    for prefix in &prefixes {
        *counted
            .entry((prefix.addr().is_ipv6(), prefix.prefix_len()))
            .or_default() += 1;
    }
    let hard_coded: BTreeMap<(bool, u8), u32> = IPV4_PREFIX_LENGTHS
        .iter()
        .map(|&(length, n)| ((false, length), n))
        .chain(
            IPV6_PREFIX_LENGTHS
                .iter()
                .map(|&(length, n)| ((true, length), n)),
        )
        .collect();
    assert_eq!(
        counted, hard_coded,
        "the prefix lengths of cloud-ranges.txt changed; count them again as the doc of IPV4_PREFIX_LENGTHS shows"
    );
}
