//! Client address sets for look-ups: half inside some prefix, half outside
//! every prefix, shuffled, so that neither branch predictors nor caches
//! see a pattern that real traffic would not have.
//!
//! ```
//! use registry_redirect_benches::addresses::{client_addresses, AddressFamily};
//! use registry_redirect_benches::synthetic::synthetic_prefixes;
//!
//! let prefixes = synthetic_prefixes(1_000, 1);
//! let addresses = client_addresses(&prefixes, AddressFamily::V4, 4_096, 2).unwrap();
//! assert_eq!(addresses.len(), 4_096);
//! let inside = addresses
//!     .iter()
//!     .filter(|addr| prefixes.iter().any(|prefix| prefix.contains(*addr)))
//!     .count();
//! assert_eq!(inside, 2_048);
//! ```

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use registry_redirect_core::ranges::RangeTable;
use registry_redirect_core::sources::LabeledRanges;
use registry_redirect_core::Policy;

use crate::random::SplitMix64;
use crate::synthetic::{random_address_in, random_ipv4_unicast, random_ipv6_global};

/// The number of client addresses each look-up bench cycles through: a
/// power of two, so the next index is a mask, and well above the 10,000
/// needed to keep the addresses from fitting in a few cache lines.
pub const ADDRESS_COUNT: usize = 16_384;

/// Tries per address before giving up on finding one outside every prefix,
/// or one that the policy labels with a requested cloud.
const TRIES_PER_ADDRESS: usize = 1_000;

/// An IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl AddressFamily {
    fn includes(self, prefix: &IpNet) -> bool {
        matches!(
            (self, prefix),
            (AddressFamily::V4, IpNet::V4(_)) | (AddressFamily::V6, IpNet::V6(_))
        )
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressFamily::V4 => "IPv4",
            AddressFamily::V6 => "IPv6",
        })
    }
}

/// An error making an address set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No prefix of the family was given, so no address can be inside one.
    #[error("no {family} prefix among the {prefix_count} given; expected at least one to draw addresses inside")]
    NoPrefixes {
        /// The family requested.
        family: AddressFamily,
        /// The number of prefixes given, of both families.
        prefix_count: usize,
    },
    /// Random addresses kept landing inside the prefixes.
    #[error("no {family} address outside every prefix found in {tries} random tries; the prefixes cover almost all of the address space")]
    NoUncoveredAddress {
        /// The family requested.
        family: AddressFamily,
        /// The number of addresses tried.
        tries: usize,
    },
    /// Random addresses in the cloud's prefixes kept getting another label,
    /// because more specific prefixes of other clouds cover them.
    #[error("no {family} address labelled with cloud \"{cloud}\" and a region found in {tries} random tries; expected prefixes of that cloud with a region")]
    NoCloudAddress {
        /// The family requested.
        family: AddressFamily,
        /// The cloud requested.
        cloud: String,
        /// The number of addresses tried.
        tries: usize,
    },
}

/// Draws `count` addresses of `family`, the first half inside random
/// prefixes of that family and the second half outside every prefix, then
/// shuffles them. The same inputs give the same addresses.
pub fn client_addresses(
    prefixes: &[IpNet],
    family: AddressFamily,
    count: usize,
    seed: u64,
) -> Result<Vec<IpAddr>, AddressError> {
    let own: Vec<IpNet> = prefixes
        .iter()
        .filter(|prefix| family.includes(prefix))
        .copied()
        .collect();
    if own.is_empty() {
        return Err(AddressError::NoPrefixes {
            family,
            prefix_count: prefixes.len(),
        });
    }
    let table = RangeTable::build(own.iter().map(|&prefix| (prefix, ())).collect(), |_, _| ());
    let mut rng = SplitMix64::new(seed);
    let mut addresses = Vec::with_capacity(count);

    let inside = count / 2;
    for _ in 0..inside {
        let prefix = own[rng.index(own.len())];
        addresses.push(random_address_in(&mut rng, &prefix));
    }

    for _ in inside..count {
        let mut found = None;
        for _ in 0..TRIES_PER_ADDRESS {
            let addr = match family {
                AddressFamily::V4 => IpAddr::V4(random_ipv4_unicast(&mut rng)),
                AddressFamily::V6 => IpAddr::V6(random_ipv6_global(&mut rng)),
            };
            if table.lookup(addr).is_none() {
                found = Some(addr);
                break;
            }
        }
        let Some(addr) = found else {
            return Err(AddressError::NoUncoveredAddress {
                family,
                tries: TRIES_PER_ADDRESS,
            });
        };
        addresses.push(addr);
    }

    rng.shuffle(&mut addresses);
    Ok(addresses)
}

/// Draws `count` addresses of `family` that `policy` labels with `cloud`
/// and a region: clients that rules by cloud and regional upstreams serve.
/// `ranges` are the labelled prefixes the policy was compiled with.
pub fn cloud_client_addresses(
    ranges: &LabeledRanges,
    policy: &Policy,
    cloud: &str,
    family: AddressFamily,
    count: usize,
    seed: u64,
) -> Result<Vec<IpAddr>, AddressError> {
    let candidates: Vec<IpNet> = ranges
        .iter()
        .filter(|(prefix, label)| {
            family.includes(prefix) && label.cloud() == Some(cloud) && label.region().is_some()
        })
        .map(|(prefix, _)| prefix)
        .collect();
    let no_address = || AddressError::NoCloudAddress {
        family,
        cloud: cloud.to_owned(),
        tries: TRIES_PER_ADDRESS,
    };
    if candidates.is_empty() {
        return Err(no_address());
    }

    let mut rng = SplitMix64::new(seed);
    let mut addresses = Vec::with_capacity(count);
    for _ in 0..count {
        let mut found = None;
        for _ in 0..TRIES_PER_ADDRESS {
            let prefix = candidates[rng.index(candidates.len())];
            let addr = random_address_in(&mut rng, &prefix);
            let label = policy.client_label(addr);
            if label.is_some_and(|label| label.cloud() == Some(cloud) && label.region().is_some()) {
                found = Some(addr);
                break;
            }
        }
        addresses.push(found.ok_or_else(no_address)?);
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::cloud_policy;
    use crate::synthetic::{synthetic_prefixes, synthetic_ranges};

    #[test]
    fn half_inside_half_outside() {
        let prefixes = synthetic_prefixes(10_000, 3);
        for family in [AddressFamily::V4, AddressFamily::V6] {
            let addresses = client_addresses(&prefixes, family, 2_000, 4).unwrap();
            assert_eq!(addresses.len(), 2_000);
            let inside = addresses
                .iter()
                .filter(|addr| prefixes.iter().any(|prefix| prefix.contains(*addr)))
                .count();
            assert_eq!(inside, 1_000, "{family}");
            let same_family = addresses
                .iter()
                .all(|addr| addr.is_ipv6() == (family == AddressFamily::V6));
            assert!(same_family, "{family}");
        }
    }

    #[test]
    fn addresses_are_shuffled() {
        let prefixes = synthetic_prefixes(1_000, 3);
        let addresses = client_addresses(&prefixes, AddressFamily::V4, 1_000, 4).unwrap();
        let inside = |addr: &IpAddr| prefixes.iter().any(|prefix| prefix.contains(addr));
        let first_half_inside = addresses[..500].iter().filter(|a| inside(a)).count();
        assert!(
            (150..350).contains(&first_half_inside),
            "{first_half_inside}"
        );
    }

    #[test]
    fn family_without_prefixes_is_error() {
        let prefixes: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
        let error = client_addresses(&prefixes, AddressFamily::V6, 10, 1).unwrap_err();
        assert_eq!(
            error,
            AddressError::NoPrefixes {
                family: AddressFamily::V6,
                prefix_count: 1
            }
        );
    }

    #[test]
    fn full_coverage_is_error() {
        let prefixes: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap()];
        let error = client_addresses(&prefixes, AddressFamily::V4, 10, 1).unwrap_err();
        assert!(matches!(error, AddressError::NoUncoveredAddress { .. }));
    }

    #[test]
    fn cloud_clients_get_cloud_label() {
        let ranges = synthetic_ranges(5_000, 6);
        let policy = cloud_policy(&ranges).unwrap();
        for cloud in ["aws", "gcp"] {
            let addresses =
                cloud_client_addresses(&ranges, &policy, cloud, AddressFamily::V4, 500, 7).unwrap();
            assert_eq!(addresses.len(), 500);
            for addr in addresses {
                let label = policy.client_label(addr).unwrap();
                assert_eq!(label.cloud(), Some(cloud), "{addr}");
                assert!(label.region().is_some(), "{addr}");
            }
        }
    }

    #[test]
    fn unknown_cloud_is_error() {
        let ranges = synthetic_ranges(100, 6);
        let policy = cloud_policy(&ranges).unwrap();
        let error = cloud_client_addresses(&ranges, &policy, "oracle", AddressFamily::V4, 1, 7)
            .unwrap_err();
        assert!(matches!(error, AddressError::NoCloudAddress { .. }));
    }
}
