//! Synthetic range tables with the prefix-length mix of the published cloud
//! ranges, so table size can grow without changing the table's shape.
//!
//! The mix comes from [`IPV4_PREFIX_LENGTHS`] and [`IPV6_PREFIX_LENGTHS`].
//! Network addresses are drawn uniformly, IPv4 from unicast space
//! (`1.0.0.0` to `223.255.255.255`) and IPv6 from global unicast space
//! (`2000::/3`). Real cloud prefixes cluster in fewer address blocks than
//! these, so a synthetic table spreads over more of the 16-bit buckets of
//! [`registry_redirect_core::ranges::RangeTable`] than a real table of the
//! same size.
//!
//! ```
//! use registry_redirect_benches::synthetic::synthetic_prefixes;
//!
//! let prefixes = synthetic_prefixes(1_000, 1);
//! assert_eq!(prefixes.len(), 1_000);
//! let ipv6 = prefixes.iter().filter(|prefix| prefix.addr().is_ipv6()).count();
//! assert!((200..300).contains(&ipv6), "about a quarter are IPv6, as in the cloud ranges");
//! assert_eq!(prefixes, synthetic_prefixes(1_000, 1));
//! ```

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use registry_redirect_core::sources::{Label, LabeledRanges};

use crate::random::SplitMix64;

/// The number of IPv4 prefixes of each length in `cloud-ranges.txt`, as
/// `(prefix length, count)`: 19,837 prefixes in all.
///
/// The file lists the AWS, GCP and Azure ranges published in July 2026
/// (26,685 prefixes). To count a newer file, run this in its directory; it
/// prints both families:
///
/// ```text
/// grep -v '^#' cloud-ranges.txt \
///   | awk '{ split($1, p, "/"); f = index($1, ":") ? "v6" : "v4"; n[f " " p[2]]++ }
///          END { for (k in n) print k, n[k] }' \
///   | sort -k1,1 -k2,2n
/// ```
pub const IPV4_PREFIX_LENGTHS: &[(u8, u32)] = &[
    (11, 2),
    (12, 11),
    (13, 27),
    (14, 67),
    (15, 228),
    (16, 728),
    (17, 755),
    (18, 633),
    (19, 429),
    (20, 469),
    (21, 570),
    (22, 972),
    (23, 1800),
    (24, 5669),
    (25, 788),
    (26, 1028),
    (27, 1076),
    (28, 872),
    (29, 835),
    (30, 583),
    (31, 1063),
    (32, 1232),
];

/// The number of IPv6 prefixes of each length in `cloud-ranges.txt`, as
/// `(prefix length, count)`: 6,848 prefixes in all. See
/// [`IPV4_PREFIX_LENGTHS`] for the source and how to count them again.
pub const IPV6_PREFIX_LENGTHS: &[(u8, u32)] = &[
    (32, 1),
    (33, 1),
    (34, 2),
    (35, 7),
    (36, 184),
    (37, 1),
    (38, 3),
    (39, 70),
    (40, 1230),
    (41, 2),
    (42, 25),
    (43, 5),
    (44, 72),
    (45, 8),
    (46, 20),
    (47, 180),
    (48, 1171),
    (49, 5),
    (50, 1),
    (52, 6),
    (54, 81),
    (55, 117),
    (56, 711),
    (57, 104),
    (58, 33),
    (59, 210),
    (60, 191),
    (61, 152),
    (62, 350),
    (63, 528),
    (64, 1343),
    (65, 16),
    (96, 5),
    (128, 13),
];

/// The clouds of synthetic labels, with their prefix counts in
/// `cloud-ranges.txt` as weights.
const CLOUD_WEIGHTS: &[(&str, u64)] = &[("aws", 10_580), ("azure", 15_058), ("gcp", 1_047)];

/// The number of distinct regions per cloud in synthetic labels. The cloud
/// ranges name 165 regions across three clouds.
const REGIONS_PER_CLOUD: u64 = 50;

/// The first and last IPv4 unicast addresses drawn from (1.0.0.0 to
/// 223.255.255.255).
const IPV4_FIRST: u32 = 0x0100_0000;
const IPV4_LAST: u32 = 0xdfff_ffff;

/// Tries per prefix before a length with too few free prefixes is given up.
const TRIES_PER_PREFIX: usize = 100;

/// Generates `count` distinct prefixes with the length mix of the cloud
/// ranges, the same for the same `count` and `seed`, in shuffled order.
///
/// Each length gets its share of `count` (largest remainder rounding), so a
/// small table drops the rarest lengths. A length whose address space
/// runs out of free prefixes after many tries gets fewer, so the result
/// can be shorter than `count`, but not for the lengths and counts up to
/// 100,000 used by the benches.
pub fn synthetic_prefixes(count: usize, seed: u64) -> Vec<IpNet> {
    let mut rng = SplitMix64::new(seed);
    let mut seen = HashSet::with_capacity(count);
    let mut prefixes = Vec::with_capacity(count);

    for (is_ipv6, length, quota) in length_quotas(count) {
        let mut generated = 0;
        let mut tries = 0;
        while generated < quota && tries < quota * TRIES_PER_PREFIX {
            tries += 1;
            let prefix = if is_ipv6 {
                random_ipv6_prefix(&mut rng, length)
            } else {
                random_ipv4_prefix(&mut rng, length)
            };
            if seen.insert(prefix) {
                prefixes.push(prefix);
                generated += 1;
            }
        }
    }

    rng.shuffle(&mut prefixes);
    prefixes
}

/// Generates `count` synthetic prefixes ([`synthetic_prefixes`]), each
/// labelled with a cloud (`aws`, `azure` or `gcp`, weighted as in the cloud
/// ranges) and one of 50 regions of that cloud, such as `aws-region-7`.
///
/// ```
/// use registry_redirect_benches::synthetic::synthetic_ranges;
///
/// let ranges = synthetic_ranges(500, 1);
/// assert_eq!(ranges.len(), 500);
/// assert!(ranges.iter().all(|(_, label)| label.region().is_some()));
/// ```
pub fn synthetic_ranges(count: usize, seed: u64) -> LabeledRanges {
    let prefixes = synthetic_prefixes(count, seed);
    let mut rng = SplitMix64::new(seed ^ 0x5eed_1abe_1000_0000);
    let total_weight: u64 = CLOUD_WEIGHTS.iter().map(|&(_, weight)| weight).sum();
    let mut ranges = LabeledRanges::new();
    for prefix in prefixes {
        let mut pick = rng.below(total_weight);
        let mut cloud = "aws";
        for &(name, weight) in CLOUD_WEIGHTS {
            if pick < weight {
                cloud = name;
                break;
            }
            pick -= weight;
        }
        let region = format!("{cloud}-region-{}", rng.below(REGIONS_PER_CLOUD) + 1);
        // At most 150 labels, far below the interning limit of u32::MAX.
        if ranges
            .insert(prefix, Label::new(Some(cloud), Some(&region)))
            .is_err()
        {
            break;
        }
    }
    ranges
}

/// Splits `count` over the lengths of both families in proportion to the
/// cloud ranges: `(is_ipv6, length, how many)`, summing to `count`.
fn length_quotas(count: usize) -> Vec<(bool, u8, usize)> {
    let lengths: Vec<(bool, u8, u64)> = IPV4_PREFIX_LENGTHS
        .iter()
        .map(|&(length, n)| (false, length, u64::from(n)))
        .chain(
            IPV6_PREFIX_LENGTHS
                .iter()
                .map(|&(length, n)| (true, length, u64::from(n))),
        )
        .collect();
    let total: u64 = lengths.iter().map(|&(_, _, n)| n).sum();
    let count = count as u64;

    let mut quotas: Vec<(bool, u8, usize)> = Vec::with_capacity(lengths.len());
    let mut remainders: Vec<(u64, usize)> = Vec::with_capacity(lengths.len());
    let mut assigned = 0;
    for (position, &(is_ipv6, length, n)) in lengths.iter().enumerate() {
        let exact = n * count;
        quotas.push((is_ipv6, length, (exact / total) as usize));
        remainders.push((exact % total, position));
        assigned += exact / total;
    }

    // Largest remainder first; ties go to the earlier length.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, position) in remainders.iter().take((count - assigned) as usize) {
        if let Some(quota) = quotas.get_mut(position) {
            quota.2 += 1;
        }
    }
    quotas
}

fn random_ipv4_prefix(rng: &mut SplitMix64, length: u8) -> IpNet {
    let span = u64::from(IPV4_LAST - IPV4_FIRST) + 1;
    let addr = IPV4_FIRST + rng.below(span) as u32;
    let net = Ipv4Net::new(Ipv4Addr::from(addr), length.min(32)).unwrap_or_default();
    IpNet::V4(net.trunc())
}

fn random_ipv6_prefix(rng: &mut SplitMix64, length: u8) -> IpNet {
    let addr = random_ipv6_global(rng);
    let net = Ipv6Net::new(addr, length.min(128)).unwrap_or_default();
    IpNet::V6(net.trunc())
}

/// Returns a random IPv4 unicast address (1.0.0.0 to 223.255.255.255).
pub fn random_ipv4_unicast(rng: &mut SplitMix64) -> Ipv4Addr {
    let span = u64::from(IPV4_LAST - IPV4_FIRST) + 1;
    Ipv4Addr::from(IPV4_FIRST + rng.below(span) as u32)
}

/// Returns a random IPv6 global unicast address (in `2000::/3`).
pub fn random_ipv6_global(rng: &mut SplitMix64) -> Ipv6Addr {
    let low_bits = rng.next_u128() & (u128::MAX >> 3);
    Ipv6Addr::from((0b001u128 << 125) | low_bits)
}

/// Returns a random address inside `prefix`.
pub fn random_address_in(rng: &mut SplitMix64, prefix: &IpNet) -> IpAddr {
    match prefix {
        IpNet::V4(net) => {
            let host_bits = rng.next_u64() as u32 & u32::from(net.hostmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(net.network()) | host_bits))
        }
        IpNet::V6(net) => {
            let host_bits = rng.next_u128() & u128::from(net.hostmask());
            IpAddr::V6(Ipv6Addr::from(u128::from(net.network()) | host_bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn length_tables_sum_to_cloud_ranges() {
        let ipv4: u32 = IPV4_PREFIX_LENGTHS.iter().map(|&(_, n)| n).sum();
        let ipv6: u32 = IPV6_PREFIX_LENGTHS.iter().map(|&(_, n)| n).sum();
        assert_eq!(ipv4, 19_837);
        assert_eq!(ipv6, 6_848);
        assert_eq!(ipv4 + ipv6, 26_685);
    }

    #[test]
    fn quotas_sum_to_count() {
        for count in [0, 1, 100, 10_000, 26_685, 100_000] {
            let sum: usize = length_quotas(count).iter().map(|&(_, _, n)| n).sum();
            assert_eq!(sum, count, "count {count}");
        }
    }

    #[test]
    fn full_size_quotas_match_table() {
        let quotas = length_quotas(26_685);
        for &(length, n) in IPV4_PREFIX_LENGTHS {
            assert!(quotas.contains(&(false, length, n as usize)), "/{length}");
        }
        for &(length, n) in IPV6_PREFIX_LENGTHS {
            assert!(quotas.contains(&(true, length, n as usize)), "/{length}");
        }
    }

    #[test]
    fn prefixes_are_distinct_and_follow_mix() {
        let prefixes = synthetic_prefixes(100_000, 9);
        assert_eq!(prefixes.len(), 100_000);
        let distinct: HashSet<_> = prefixes.iter().collect();
        assert_eq!(distinct.len(), prefixes.len());

        let mut by_length: BTreeMap<(bool, u8), usize> = BTreeMap::new();
        for prefix in &prefixes {
            *by_length
                .entry((prefix.addr().is_ipv6(), prefix.prefix_len()))
                .or_default() += 1;
        }
        for (is_ipv6, length, quota) in length_quotas(100_000) {
            assert_eq!(
                by_length.get(&(is_ipv6, length)).copied().unwrap_or(0),
                quota,
                "/{length}"
            );
        }
    }

    #[test]
    fn prefixes_stay_in_unicast_space() {
        for prefix in synthetic_prefixes(10_000, 4) {
            match prefix {
                IpNet::V4(net) => {
                    let first = u32::from(net.network());
                    assert!((IPV4_FIRST..=IPV4_LAST).contains(&first), "{net}");
                }
                IpNet::V6(net) => assert_eq!(net.network().segments()[0] >> 13, 1, "{net}"),
            }
        }
    }

    #[test]
    fn random_address_is_inside_prefix() {
        let mut rng = SplitMix64::new(5);
        for prefix in synthetic_prefixes(2_000, 5) {
            let addr = random_address_in(&mut rng, &prefix);
            assert!(prefix.contains(&addr), "{addr} outside {prefix}");
        }
    }
}
