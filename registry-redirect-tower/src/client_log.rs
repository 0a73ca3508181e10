//! [`ClientAddressLogging`]: whether access-log events carry the client
//! address, whole or truncated to its network.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IPv4 prefix length of [`ClientAddressLogging::truncated`]: a /24
/// names a network of 256 addresses, not one host.
pub const DEFAULT_IPV4_PREFIX: u8 = 24;

/// The IPv6 prefix length of [`ClientAddressLogging::truncated`]: a /48 is
/// the usual assignment to one site, so it names a site, not a host.
pub const DEFAULT_IPV6_PREFIX: u8 = 48;

/// Whether access-log events carry the client address (field `client`)
/// and where it came from (field `client_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAddressLogging {
    /// No client address: logs hold no personal data. The default.
    #[default]
    Off,
    /// The whole address, such as `203.0.113.9`.
    Full,
    /// The address's network, such as `203.0.113.0/24`: enough to see
    /// which network or cloud region traffic comes from, without naming
    /// a host. An IPv4-mapped IPv6 address is truncated as IPv4.
    Truncated {
        /// Prefix length for IPv4 addresses, from 0 to 32; longer values
        /// count as 32.
        ipv4_prefix: u8,
        /// Prefix length for IPv6 addresses, from 0 to 128; longer values
        /// count as 128.
        ipv6_prefix: u8,
    },
}

impl ClientAddressLogging {
    /// Returns truncation to [`DEFAULT_IPV4_PREFIX`] and [`DEFAULT_IPV6_PREFIX`].
    pub fn truncated() -> Self {
        ClientAddressLogging::Truncated {
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }

    /// Returns the form of `addr` to log, or `None` when addresses are off.
    ///
    /// ```
    /// use registry_redirect_tower::ClientAddressLogging;
    ///
    /// let truncated = ClientAddressLogging::truncated();
    /// let logged = truncated.apply("203.0.113.9".parse().unwrap()).unwrap();
    /// assert_eq!(logged.to_string(), "203.0.113.0/24");
    /// assert!(ClientAddressLogging::Off.apply("203.0.113.9".parse().unwrap()).is_none());
    /// ```
    pub fn apply(self, addr: IpAddr) -> Option<LoggedAddress> {
        match self {
            ClientAddressLogging::Off => None,
            ClientAddressLogging::Full => Some(LoggedAddress::Full(addr)),
            ClientAddressLogging::Truncated {
                ipv4_prefix,
                ipv6_prefix,
            } => Some(truncate(addr, ipv4_prefix, ipv6_prefix)),
        }
    }
}

/// A client address as logged: whole, or a network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedAddress {
    /// The whole address.
    Full(IpAddr),
    /// The network address and its prefix length.
    Network(IpAddr, u8),
}

impl fmt::Display for LoggedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoggedAddress::Full(addr) => write!(f, "{addr}"),
            LoggedAddress::Network(addr, prefix) => write!(f, "{addr}/{prefix}"),
        }
    }
}

fn truncate(addr: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> LoggedAddress {
    let v4 = match addr {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    if let Some(v4) = v4 {
        let prefix = ipv4_prefix.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let network = Ipv4Addr::from(u32::from(v4) & mask);
        return LoggedAddress::Network(IpAddr::V4(network), prefix);
    }
    let IpAddr::V6(v6) = addr else {
        return LoggedAddress::Full(addr);
    };
    let prefix = ipv6_prefix.min(128);
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    let network = Ipv6Addr::from(u128::from(v6) & mask);
    LoggedAddress::Network(IpAddr::V6(network), prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_network_only() {
        let cases = [
            ("203.0.113.9", 24, 48, "203.0.113.0/24"),
            ("203.0.113.9", 16, 48, "203.0.0.0/16"),
            ("203.0.113.9", 32, 48, "203.0.113.9/32"),
            ("203.0.113.9", 0, 48, "0.0.0.0/0"),
            ("203.0.113.9", 40, 48, "203.0.113.9/32"),
            ("2001:db8:1234:5678::1", 24, 48, "2001:db8:1234::/48"),
            ("2001:db8:1234:5678::1", 24, 64, "2001:db8:1234:5678::/64"),
            ("2001:db8:1234:5678::1", 24, 0, "::/0"),
            ("2001:db8::1", 24, 200, "2001:db8::1/128"),
            ("::ffff:198.51.100.77", 24, 48, "198.51.100.0/24"),
            ("::1", 24, 48, "::/48"),
        ];
        for (addr, ipv4_prefix, ipv6_prefix, expected) in cases {
            let mode = ClientAddressLogging::Truncated {
                ipv4_prefix,
                ipv6_prefix,
            };
            let logged = mode.apply(addr.parse().unwrap()).unwrap();
            assert_eq!(
                logged.to_string(),
                expected,
                "{addr} /{ipv4_prefix} /{ipv6_prefix}"
            );
        }
    }

    #[test]
    fn full_and_off_modes() {
        let addr: IpAddr = "2001:db8::7".parse().unwrap();
        let full = ClientAddressLogging::Full.apply(addr).unwrap();
        assert_eq!(full.to_string(), "2001:db8::7");
        assert_eq!(ClientAddressLogging::Off.apply(addr), None);
        assert_eq!(ClientAddressLogging::default(), ClientAddressLogging::Off);
    }
}
