//! `RangeTable` checked against a linear scan.
//!
//! The generated prefixes crowd into a few 16-bit buckets, nest, cross bucket
//! edges and, for IPv6, share their first 80 bits. One table is large enough
//! that a bucket's values no longer fit the compact 16-bit form.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use registry_redirect_core::ranges::RangeTable;

/// Returns the value of the most specific prefix containing `addr`. Of
/// identical prefixes the last one wins, as `|_, inner| *inner` keeps it.
fn linear_lookup(entries: &[(IpNet, u32)], addr: IpAddr) -> Option<u32> {
    entries
        .iter()
        .filter(|(net, _)| net.contains(&addr))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(net, _)| entries.iter().rfind(|(other, _)| other == net).unwrap().1)
}

fn innermost(entries: &[(IpNet, u32)]) -> RangeTable<u32> {
    RangeTable::build(entries.to_vec(), |_, inner| *inner)
}

/// Generates an IPv4 address in one of four adjacent 16-bit buckets.
fn crowded_ipv4() -> impl Strategy<Value = u32> {
    (0u32..4, any::<u16>()).prop_map(|(bucket, low)| (0x0a00 + bucket) << 16 | u32::from(low))
}

fn ipv4_prefix() -> impl Strategy<Value = IpNet> {
    (crowded_ipv4(), 8u8..=32).prop_map(|(addr, len)| {
        IpNet::new(IpAddr::V4(Ipv4Addr::from(addr)), len)
            .unwrap()
            .trunc()
    })
}

/// Generates an IPv6 address in one of two 16-bit buckets. Its bits below the
/// first 80 are mostly zero, so prefixes longer than /80 share keys.
fn crowded_ipv6() -> impl Strategy<Value = u128> {
    (0u128..2, 0u128..8, 0u128..4, any::<u16>()).prop_map(|(bucket, middle, tail, low)| {
        (0x2001 + bucket) << 112 | middle << 64 | tail << 48 | u128::from(low)
    })
}

fn ipv6_prefix() -> impl Strategy<Value = IpNet> {
    (
        crowded_ipv6(),
        prop_oneof![Just(16u8), 17u8..=80, 81u8..=128],
    )
        .prop_map(|(addr, len)| {
            IpNet::new(IpAddr::V6(Ipv6Addr::from(addr)), len)
                .unwrap()
                .trunc()
        })
}

/// Returns the addresses to look up: each prefix's first and last address,
/// the ones just outside it, and the generated extra addresses.
fn probes(entries: &[(IpNet, u32)], extra: &[IpAddr]) -> Vec<IpAddr> {
    let mut probes = extra.to_vec();
    for (net, _) in entries {
        match net {
            IpNet::V4(net) => {
                let first = u32::from(net.network());
                let last = u32::from(net.broadcast());
                for addr in [first.wrapping_sub(1), first, last, last.wrapping_add(1)] {
                    probes.push(IpAddr::V4(Ipv4Addr::from(addr)));
                }
            }
            IpNet::V6(net) => {
                let first = u128::from(net.network());
                let last = u128::from(net.broadcast());
                for addr in [first.wrapping_sub(1), first, last, last.wrapping_add(1)] {
                    probes.push(IpAddr::V6(Ipv6Addr::from(addr)));
                }
            }
        }
    }
    probes
}

fn check(entries: &[(IpNet, u32)], extra: &[IpAddr]) -> Result<(), TestCaseError> {
    let table = innermost(entries);
    for addr in probes(entries, extra) {
        prop_assert_eq!(
            table.lookup(addr).copied(),
            linear_lookup(entries, addr),
            "address {}",
            addr
        );
    }
    Ok(())
}

fn numbered(prefixes: Vec<IpNet>) -> Vec<(IpNet, u32)> {
    prefixes.into_iter().zip(0..).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ipv4_matches_linear_scan(
        prefixes in prop::collection::vec(ipv4_prefix(), 1..120),
        extra in prop::collection::vec(crowded_ipv4(), 0..200),
    ) {
        let extra: Vec<IpAddr> = extra.into_iter().map(|a| IpAddr::V4(Ipv4Addr::from(a))).collect();
        check(&numbered(prefixes), &extra)?;
    }

    #[test]
    fn ipv6_matches_linear_scan(
        prefixes in prop::collection::vec(ipv6_prefix(), 1..120),
        extra in prop::collection::vec(crowded_ipv6(), 0..200),
    ) {
        let extra: Vec<IpAddr> = extra.into_iter().map(|a| IpAddr::V6(Ipv6Addr::from(a))).collect();
        check(&numbered(prefixes), &extra)?;
    }
}

fn v4(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Prefixes longer than /80 that share their first 80 bits with each other
/// and with shorter prefixes.
#[test]
fn ipv6_prefixes_longer_than_80() {
    let entries: Vec<(IpNet, u32)> = [
        ("2001:db8::/32", 1),
        ("2001:db8:0:1::/64", 2),
        ("2001:db8:0:1::/96", 3),
        ("2001:db8:0:1::8/125", 4),
        ("2001:db8:0:1::9/128", 5),
        ("2001:db8:0:1:0:1::/96", 6),
        ("2001:db8:0:2::/64", 7),
    ]
    .into_iter()
    .map(|(net, value)| (net.parse().unwrap(), value))
    .collect();
    let table = innermost(&entries);
    for (addr, expected) in [
        ("2001:db8::1", Some(1)),
        ("2001:db8:0:1::", Some(3)),
        ("2001:db8:0:1::7", Some(3)),
        ("2001:db8:0:1::8", Some(4)),
        ("2001:db8:0:1::9", Some(5)),
        ("2001:db8:0:1::a", Some(4)),
        ("2001:db8:0:1::10", Some(3)),
        ("2001:db8:0:1:0:1::5", Some(6)),
        ("2001:db8:0:1:0:2::", Some(2)),
        ("2001:db8:0:1:1::", Some(2)),
        ("2001:db8:0:2::ffff", Some(7)),
        ("2001:db8:0:3::", Some(1)),
        ("2001:db9::", None),
    ] {
        let addr: IpAddr = addr.parse().unwrap();
        assert_eq!(table.lookup(addr).copied(), expected, "{addr}");
        assert_eq!(linear_lookup(&entries, addr), expected, "{addr}");
    }
}

/// A bucket whose values lie more than 2^16 apart: an outer /8 numbered
/// first, then 65,536 /32 prefixes before the ones in the bucket looked up.
#[test]
fn values_too_far_for_codes() {
    let mut entries: Vec<(IpNet, u32)> = vec![("10.0.0.0/8".parse().unwrap(), 0)];
    let mut value = 1;
    for bucket in [1u32, 2] {
        for low in (0..=u16::MAX).step_by(2) {
            let addr = Ipv4Addr::from(0x0a00_0000 | bucket << 16 | u32::from(low));
            entries.push((IpNet::new(IpAddr::V4(addr), 32).unwrap(), value));
            value += 1;
        }
    }
    let table = innermost(&entries);
    assert_eq!(table.prefix_count(), 65_537);
    for (addr, expected) in [
        ("10.0.0.1", 0),
        ("10.1.0.0", 1),
        ("10.1.0.1", 0),
        ("10.1.255.254", 32_768),
        ("10.2.0.0", 32_769),
        ("10.2.0.1", 0),
        ("10.2.255.254", 65_536),
        ("10.2.255.255", 0),
        ("10.3.0.0", 0),
    ] {
        assert_eq!(table.lookup(v4(addr)).copied(), Some(expected), "{addr}");
    }
    assert_eq!(table.lookup(v4("11.0.0.0")), None);
}

/// Prefixes that cover whole buckets, end exactly on a bucket's edge, or
/// sit on either side of one.
#[test]
fn prefixes_on_bucket_edges() {
    let entries: Vec<(IpNet, u32)> = [
        ("10.0.0.0/15", 1),
        ("10.0.255.0/24", 2),
        ("10.1.0.0/24", 3),
        ("10.1.255.255/32", 4),
        ("10.2.0.0/16", 5),
        ("10.3.0.0/17", 6),
    ]
    .into_iter()
    .map(|(net, value)| (net.parse().unwrap(), value))
    .collect();
    let table = innermost(&entries);
    for (addr, expected) in [
        ("10.0.0.0", Some(1)),
        ("10.0.254.255", Some(1)),
        ("10.0.255.0", Some(2)),
        ("10.0.255.255", Some(2)),
        ("10.1.0.0", Some(3)),
        ("10.1.1.0", Some(1)),
        ("10.1.255.254", Some(1)),
        ("10.1.255.255", Some(4)),
        ("10.2.0.0", Some(5)),
        ("10.2.255.255", Some(5)),
        ("10.3.127.255", Some(6)),
        ("10.3.128.0", None),
    ] {
        assert_eq!(table.lookup(v4(addr)).copied(), expected, "{addr}");
    }
}

fn v4_host(addr: u32) -> IpNet {
    IpNet::new(IpAddr::V4(Ipv4Addr::from(addr)), 32).unwrap()
}

/// Every address of 10.1.0.0/16 as its own /32: the bucket has the most
/// interval starts a 16-bit header can count (65,535 after its first).
#[test]
fn every_address_of_bucket_as_prefix() {
    for outer in [
        None,
        Some(("10.0.0.0/8".parse::<IpNet>().unwrap(), u32::MAX)),
    ] {
        let mut entries: Vec<(IpNet, u32)> = outer.into_iter().collect();
        entries.extend((0..=u32::from(u16::MAX)).map(|low| (v4_host(0x0a01_0000 | low), low)));
        let table = innermost(&entries);
        for low in 0..=u32::from(u16::MAX) {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a01_0000 | low));
            assert_eq!(table.lookup(addr).copied(), Some(low), "{addr}");
        }
        let outer_value = outer.map(|(_, value)| value);
        assert_eq!(table.lookup(v4("10.0.255.255")).copied(), outer_value);
        assert_eq!(table.lookup(v4("10.2.0.0")).copied(), outer_value);
        assert_eq!(table.lookup(v4("11.0.0.0")), None);
    }
}

/// Values 0 to 65,535 in two buckets of one group: the last is 0xffff
/// above the group's base, the code that marks "no prefix", so its bucket
/// must store whole values.
#[test]
fn value_at_no_prefix_code() {
    let mut entries = Vec::new();
    for bucket in [0x0a01_u32, 0x0a02] {
        for low in (0..=u32::from(u16::MAX)).step_by(2) {
            entries.push(v4_host(bucket << 16 | low));
        }
    }
    let entries = numbered(entries);
    let table = innermost(&entries);
    for (addr, expected) in [
        ("10.1.0.0", Some(0)),
        ("10.1.0.1", None),
        ("10.2.0.0", Some(32_768)),
        ("10.2.255.252", Some(65_534)),
        ("10.2.255.253", None),
        ("10.2.255.254", Some(65_535)),
        ("10.2.255.255", None),
    ] {
        assert_eq!(table.lookup(v4(addr)).copied(), expected, "{addr}");
    }
}

/// More IPv6 intervals in one bucket than a 16-bit count could hold, half
/// of them starting below bit 80, where keys drop bits.
#[test]
fn ipv6_bucket_with_many_intervals() {
    let base: u128 = 0x2001_0db8 << 96;
    let mut hosts = Vec::new();
    for index in 0..40_000u128 {
        hosts.push(base | index << 48);
        hosts.push(base | index << 48 | (index + 1));
    }
    let entries = numbered(
        hosts
            .iter()
            .map(|&addr| IpNet::new(IpAddr::V6(Ipv6Addr::from(addr)), 128).unwrap())
            .collect(),
    );
    let table = innermost(&entries);
    assert!(table.interval_count() > 1 << 16);
    let listed: HashSet<u128> = hosts.iter().copied().collect();
    for (position, &addr) in hosts.iter().enumerate() {
        let expected = Some(position as u32);
        assert_eq!(table.lookup(IpAddr::V6(addr.into())).copied(), expected);
        let next = IpAddr::V6((addr + 1).into());
        if !listed.contains(&(addr + 1)) {
            assert_eq!(table.lookup(next), None, "{next}");
        }
    }
}

/// Prefixes in the first and the last bucket of each family.
#[test]
fn first_and_last_buckets() {
    let entries: Vec<(IpNet, u32)> = [
        ("0.0.0.0/32", 1),
        ("0.0.255.255/32", 2),
        ("0.1.0.0/32", 3),
        ("255.255.0.0/32", 4),
        ("255.255.255.254/31", 5),
        ("255.255.255.255/32", 6),
        ("::/128", 7),
        ("::1/128", 8),
        ("::1:0:0:0/80", 9),
        ("ffff::/16", 10),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127", 11),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", 12),
    ]
    .into_iter()
    .map(|(net, value)| (net.parse().unwrap(), value))
    .collect();
    let table = innermost(&entries);
    for (addr, expected) in [
        ("0.0.0.0", Some(1)),
        ("0.0.0.1", None),
        ("0.0.255.254", None),
        ("0.0.255.255", Some(2)),
        ("0.1.0.0", Some(3)),
        ("0.1.0.1", None),
        ("255.254.255.255", None),
        ("255.255.0.0", Some(4)),
        ("255.255.0.1", None),
        ("255.255.255.253", None),
        ("255.255.255.254", Some(5)),
        ("255.255.255.255", Some(6)),
        ("::", Some(7)),
        ("::1", Some(8)),
        ("::2", None),
        ("::1:0:0:0", Some(9)),
        ("::1:ffff:ffff:ffff", Some(9)),
        ("::2:0:0:0", None),
        ("fffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("ffff::", Some(10)),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd", Some(10)),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", Some(11)),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(12)),
    ] {
        let addr: IpAddr = addr.parse().unwrap();
        assert_eq!(table.lookup(addr).copied(), expected, "{addr}");
        assert_eq!(linear_lookup(&entries, addr), expected, "{addr}");
    }
}

/// A table of only a default route covers its own family, and IPv4-mapped
/// addresses only through the IPv4 one.
#[test]
fn only_default_routes() {
    let v4_default: IpNet = "0.0.0.0/0".parse().unwrap();
    let v6_default: IpNet = "::/0".parse().unwrap();
    for (entries, ipv4, ipv6) in [
        (vec![(v4_default, 1)], Some(1), None),
        (vec![(v6_default, 2)], None, Some(2)),
        (vec![(v4_default, 1), (v6_default, 2)], Some(1), Some(2)),
    ] {
        let table = innermost(&entries);
        for addr in ["0.0.0.0", "10.1.2.3", "255.255.255.255", "::ffff:10.1.2.3"] {
            assert_eq!(table.lookup(addr.parse().unwrap()).copied(), ipv4, "{addr}");
        }
        for addr in [
            "::",
            "2001:db8::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert_eq!(table.lookup(addr.parse().unwrap()).copied(), ipv6, "{addr}");
        }
    }
}
