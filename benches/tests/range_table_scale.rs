//! `RangeTable` checked against `prefix-trie` on large, crowded tables.
//!
//! Each table mixes more than 100,000 generated prefixes of both families.
//! They spread over the whole space, crowd into a few 16-bit buckets (the
//! first and the last among them), nest and repeat. Many IPv6 prefixes are
//! longer than /80, so their 64-bit keys collide. One IPv4 bucket is split
//! into all of its 65,536 /32 prefixes. When `REGISTRY_REDIRECT_DATA_DIR`
//! names the published ranges, they are added too.
//!
//! Every prefix's first and last address and the addresses just outside it
//! are looked up, with random addresses and their IPv4-mapped IPv6 forms.
//! Two `combine` functions are checked: "innermost wins", against the
//! longest match, and a sum over every containing prefix, against the
//! trie's cover of the address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use registry_redirect_benches::data::load_cloud_ranges;
use registry_redirect_benches::random::SplitMix64;
use registry_redirect_core::client::canonical_network;
use registry_redirect_core::ranges::RangeTable;

/// The 16-bit IPv4 buckets that generated prefixes crowd into: the first,
/// a run of neighbours, and the last.
const CROWDED_V4: [u32; 6] = [0x0000, 0x0a00, 0x0a01, 0x0a02, 0x0a03, 0xffff];
/// The 16-bit IPv6 buckets that generated prefixes crowd into.
const CROWDED_V6: [u128; 4] = [0x0000, 0x2001, 0x2002, 0xffff];
/// The IPv4 bucket split into every one of its /32 prefixes.
const FULL_V4_BUCKET: u32 = 0x0b00;

fn v4_net(addr: u32, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc())
}

fn v6_net(addr: u128, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc())
}

/// Returns a prefix inside `outer` that is 1 to 8 bits longer, or `outer`
/// itself when it is already a host prefix.
fn nested_in(outer: IpNet, random: &mut SplitMix64) -> IpNet {
    let extra = 1 + random.below(8) as u8;
    match outer {
        IpNet::V4(net) => {
            let len = (net.prefix_len() + extra).min(32);
            let host_bits = !u32::from(net.netmask());
            let addr = u32::from(net.network()) | (random.next_u64() as u32 & host_bits);
            v4_net(addr, len)
        }
        IpNet::V6(net) => {
            let len = (net.prefix_len() + extra).min(128);
            let host_bits = !u128::from(net.netmask());
            let addr = u128::from(net.network()) | (random.next_u128() & host_bits);
            v6_net(addr, len)
        }
    }
}

/// Returns an IPv4 address in one of [`CROWDED_V4`].
fn crowded_v4(random: &mut SplitMix64) -> u32 {
    let bucket = CROWDED_V4[random.index(CROWDED_V4.len())];
    bucket << 16 | (random.next_u64() as u32 & 0xffff)
}

/// Returns an IPv6 address in one of [`CROWDED_V6`], whose bits between
/// the first 16 and the last 48 take few values, so keys often collide.
fn crowded_v6(random: &mut SplitMix64) -> u128 {
    let bucket = CROWDED_V6[random.index(CROWDED_V6.len())];
    let middle = u128::from(random.below(16)) << 64 | u128::from(random.below(4)) << 48;
    bucket << 112 | middle | u128::from(random.next_u64() & 0xffff_ffff_ffff)
}

fn generated_prefixes(count: usize, seed: u64) -> Vec<IpNet> {
    let mut random = SplitMix64::new(seed);
    let mut prefixes = vec![
        v4_net(0, 0),
        v4_net(0, 1),
        v4_net(u32::MAX, 32),
        v6_net(0, 0),
        v6_net(u128::MAX, 128),
        v6_net(0, 128),
        v6_net(0xffff << 32, 96),
        v6_net(0xffff_0a00_0000, 104),
        v6_net(0xffff_0a01_0203, 128),
    ];
    while prefixes.len() < count {
        let choice = random.below(100);
        let prefix = match choice {
            0..=9 => v4_net(random.next_u64() as u32, 8 + random.below(25) as u8),
            10..=29 => v4_net(crowded_v4(&mut random), 14 + random.below(19) as u8),
            30..=39 => v6_net(random.next_u128(), 16 + random.below(113) as u8),
            40..=59 => v6_net(crowded_v6(&mut random), 14 + random.below(115) as u8),
            60..=97 => {
                let outer = prefixes[random.index(prefixes.len())];
                nested_in(outer, &mut random)
            }
            _ => prefixes[random.index(prefixes.len())],
        };
        prefixes.push(prefix);
    }
    prefixes
}

/// Returns the addresses to look up: each prefix's edges and their
/// neighbours, random addresses, and IPv4-mapped forms of the IPv4 ones.
fn probe_addresses(prefixes: &[IpNet], random_count: usize, seed: u64) -> Vec<IpAddr> {
    let mut random = SplitMix64::new(seed);
    let mut probes = Vec::with_capacity(prefixes.len() * 4 + random_count * 2);
    for prefix in prefixes {
        match prefix {
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
    for _ in 0..random_count / 4 {
        probes.push(IpAddr::V4(Ipv4Addr::from(random.next_u64() as u32)));
        probes.push(IpAddr::V4(Ipv4Addr::from(crowded_v4(&mut random))));
        probes.push(IpAddr::V6(Ipv6Addr::from(random.next_u128())));
        probes.push(IpAddr::V6(Ipv6Addr::from(crowded_v6(&mut random))));
    }
    let mapped: Vec<IpAddr> = probes
        .iter()
        .step_by(7)
        .filter_map(|addr| match addr {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        })
        .collect();
    probes.extend(mapped);
    probes
}

/// One `prefix-trie` map per family, the reference for `RangeTable`. An
/// IPv4-mapped IPv6 address, and a prefix inside `::ffff:0:0/96`, are
/// IPv4, as `RangeTable` documents.
struct Tries<T> {
    v4: PrefixMap<Ipv4Net, T>,
    v6: PrefixMap<Ipv6Net, T>,
}

impl<T> Tries<T> {
    fn build(entries: impl IntoIterator<Item = (IpNet, T)>, merge: impl Fn(&mut T, T)) -> Self {
        let mut tries = Tries {
            v4: PrefixMap::new(),
            v6: PrefixMap::new(),
        };
        for (prefix, value) in entries {
            match canonical_network(prefix) {
                IpNet::V4(net) => match tries.v4.get_mut(&net) {
                    Some(old) => merge(old, value),
                    None => {
                        tries.v4.insert(net, value);
                    }
                },
                IpNet::V6(net) => match tries.v6.get_mut(&net) {
                    Some(old) => merge(old, value),
                    None => {
                        tries.v6.insert(net, value);
                    }
                },
            }
        }
        tries
    }

    fn longest_match(&self, addr: IpAddr) -> Option<&T> {
        match canonical(addr) {
            IpAddr::V4(v4) => self.v4.get_lpm(&Ipv4Net::from(v4)).map(|(_, v)| v),
            IpAddr::V6(v6) => self.v6.get_lpm(&Ipv6Net::from(v6)).map(|(_, v)| v),
        }
    }

    /// Returns the values of every prefix containing `addr`.
    fn covering(&self, addr: IpAddr) -> Vec<&T> {
        match canonical(addr) {
            IpAddr::V4(v4) => self.v4.cover_values(&Ipv4Net::from(v4)).collect(),
            IpAddr::V6(v6) => self.v6.cover_values(&Ipv6Net::from(v6)).collect(),
        }
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// Returns the generated prefixes, every /32 of [`FULL_V4_BUCKET`], and the
/// published ranges when they are available.
fn large_table_prefixes() -> Vec<IpNet> {
    let mut prefixes = generated_prefixes(120_000, 41);
    prefixes.extend((0..=u16::MAX).map(|low| v4_net(FULL_V4_BUCKET << 16 | u32::from(low), 32)));
    match load_cloud_ranges() {
        Ok(ranges) => prefixes.extend(ranges.entries().iter().map(|entry| entry.prefix)),
        Err(error) if error.is_absent() => eprintln!("published ranges left out: {error}"),
        Err(error) => panic!("{error}"),
    }
    prefixes
}

#[test]
fn innermost_matches_longest_prefix_match() {
    let prefixes = large_table_prefixes();
    let entries: Vec<(IpNet, u32)> = prefixes.iter().copied().zip(0..).collect();
    let table = RangeTable::build(entries.clone(), |_outer, inner| *inner);
    // Of identical prefixes, the last is the innermost and wins.
    let tries = Tries::build(entries, |old, new| *old = new);

    let probes = probe_addresses(&prefixes, 200_000, 43);
    assert!(probes.len() > 700_000, "{} probes", probes.len());
    for addr in probes {
        assert_eq!(
            table.lookup(addr),
            tries.longest_match(addr),
            "address {addr}"
        );
    }
}

#[test]
fn sum_combines_every_containing_prefix() {
    let prefixes = large_table_prefixes();
    let mut random = SplitMix64::new(47);
    let entries: Vec<(IpNet, u64)> = prefixes
        .iter()
        .map(|&prefix| (prefix, random.next_u64()))
        .collect();
    let table = RangeTable::build(entries.clone(), |outer, inner| outer.wrapping_add(*inner));
    let tries = Tries::build(entries, |old, new| *old = old.wrapping_add(new));

    for addr in probe_addresses(&prefixes, 100_000, 53) {
        let covering = tries.covering(addr);
        let expected = match covering.is_empty() {
            true => None,
            false => Some(
                covering
                    .into_iter()
                    .fold(0u64, |sum, v| sum.wrapping_add(*v)),
            ),
        };
        assert_eq!(table.lookup(addr).copied(), expected, "address {addr}");
    }
}
