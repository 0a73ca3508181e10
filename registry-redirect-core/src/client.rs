//! The client address: the peer, or the address that trusted proxies report.
//!
//! Forwarding headers are believed only when the peer itself is a trusted
//! proxy, because anyone else could write them. Even then, only the one
//! header that the proxies are configured to write is read
//! ([`ForwardedHeader`], `X-Forwarded-For` by default). A proxy passes on
//! headers it does not write itself, so reading any other header would let a
//! client choose its own address.
//!
//! - `X-Forwarded-For`: comma-separated addresses, optionally with ports,
//!   over one or more header lines;
//! - `Forwarded` (RFC 7239): the `for=` parameter of each element; quoted
//!   IPv6 addresses in brackets and ports are accepted;
//! - `X-Real-IP`: a single address, on a single header line.
//!
//! The chain of addresses is read from the right (the hop nearest to us),
//! and the first address that is not a trusted proxy is the client.
//!
//! A malformed entry never fails a request: reading stops there, the nearest
//! trusted hop seen so far is the client, and [`ClientAddress::note`] names
//! the malformed header. Entries that are not plain addresses count as
//! malformed: `unknown` and obfuscated identifiers (`_hidden`) in `Forwarded`,
//! IPv6 zone ids (`fe80::1%eth0`, `[fe80::1%2]:80`), and IPv4 forms other
//! than four decimal octets (`127.1`, `0x7f.0.0.1`). So are several
//! `X-Real-IP` lines, since a proxy writes one.
//!
//! ```
//! use http::HeaderMap;
//! use registry_redirect_core::client::{resolve_client, ClientSource, TrustedProxies};
//!
//! let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "203.0.113.9, 10.0.0.7".parse().unwrap());
//!
//! let client = resolve_client(Some("10.0.0.2".parse().unwrap()), &headers, &trusted);
//! assert_eq!(client.addr, Some("203.0.113.9".parse().unwrap()));
//! assert_eq!(client.source, ClientSource::XForwardedFor);
//!
//! // The same header from an untrusted peer is ignored.
//! let client = resolve_client(Some("198.51.100.1".parse().unwrap()), &headers, &trusted);
//! assert_eq!(client.addr, Some("198.51.100.1".parse().unwrap()));
//! assert_eq!(client.source, ClientSource::Peer);
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName, FORWARDED};
use ipnet::{IpNet, Ipv4Net};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The forwarding header that trusted proxies write, and the only one read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum ForwardedHeader {
    /// `X-Forwarded-For`, written by most load balancers and proxies.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
    /// `X-Real-IP`, as nginx's `proxy_set_header X-Real-IP $remote_addr` writes it.
    XRealIp,
}

impl ForwardedHeader {
    /// Returns the header name in lowercase, as configuration files write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
            ForwardedHeader::XRealIp => "x-real-ip",
        }
    }
}

/// The proxies whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Trusts the `X-Forwarded-For` header from peers inside any of `networks`.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self::with_header(networks, ForwardedHeader::XForwardedFor)
    }

    /// Trusts `header` from peers inside any of `networks`. A network
    /// inside `::ffff:0:0/96` is kept as the IPv4 network it maps (see
    /// [`canonical_network`]), because peers are compared as IPv4.
    pub fn with_header(networks: Vec<IpNet>, header: ForwardedHeader) -> Self {
        let networks = networks.into_iter().map(canonical_network).collect();
        TrustedProxies { networks, header }
    }

    /// Returns the header that is read.
    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    /// Trusts no one: the peer address is always the client address.
    pub fn none() -> Self {
        TrustedProxies::default()
    }

    /// Returns whether `addr` is a trusted proxy. IPv4-mapped IPv6 addresses
    /// are compared as IPv4.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.networks.iter().any(|net| net.contains(&addr))
    }

    /// Returns whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Returns the trusted networks.
    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }
}

/// The source of the client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    /// The address of the TCP peer.
    Peer,
    /// The `Forwarded` header, from a trusted proxy.
    Forwarded,
    /// The `X-Forwarded-For` header, from a trusted proxy.
    XForwardedFor,
    /// The `X-Real-IP` header, from a trusted proxy.
    XRealIp,
    /// No address was available: the adapter passed no peer address.
    Unknown,
}

impl ClientSource {
    /// The name used in explanations and logs: `peer`, `forwarded`,
    /// `x-forwarded-for`, `x-real-ip` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientSource::Peer => "peer",
            ClientSource::Forwarded => "forwarded",
            ClientSource::XForwardedFor => "x-forwarded-for",
            ClientSource::XRealIp => "x-real-ip",
            ClientSource::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ClientSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something worth knowing about how the client address was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNote {
    /// A forwarding header from a trusted proxy had an entry that is not an
    /// address; the nearest trusted hop was used instead.
    MalformedHeader(ClientSource),
}

impl fmt::Display for ClientNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientNote::MalformedHeader(source) => write!(
                f,
                "the {source} header has an entry that is not an IP address; the nearest trusted hop was used"
            ),
        }
    }
}

/// The client address used for a decision, with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// The address; `None` when the adapter knew no peer address.
    pub addr: Option<IpAddr>,
    /// The source of the address.
    pub source: ClientSource,
    /// Set when a header was malformed and a fallback was used.
    pub note: Option<ClientNote>,
}

impl ClientAddress {
    fn new(addr: IpAddr, source: ClientSource) -> Self {
        ClientAddress {
            addr: Some(canonical(addr)),
            source,
            note: None,
        }
    }
}

/// Finds the client address from the peer address and the request headers.
///
/// `peer` is `None` when the adapter does not know the connection's peer;
/// the result is then [`ClientSource::Unknown`] and no header is believed.
pub fn resolve_client(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> ClientAddress {
    let Some(peer) = peer else {
        return ClientAddress {
            addr: None,
            source: ClientSource::Unknown,
            note: None,
        };
    };
    // The header check comes first because it is the cheaper one, and most
    // requests carry no forwarding header.
    let header = match trusted.header {
        ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
        ForwardedHeader::Forwarded => &FORWARDED,
        ForwardedHeader::XRealIp => &X_REAL_IP,
    };
    if trusted.is_empty() || !headers.contains_key(header) || !trusted.contains(peer) {
        return ClientAddress::new(peer, ClientSource::Peer);
    }

    match trusted.header {
        ForwardedHeader::Forwarded => walk_forwarded(peer, headers, trusted),
        ForwardedHeader::XForwardedFor => {
            let entries = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .rev()
                .flat_map(|value| {
                    // A value that is not visible ASCII counts as one malformed entry.
                    let text = value.to_str().ok();
                    let malformed = text.is_none().then_some(None);
                    let entries = text.into_iter().flat_map(|text| text.rsplit(','));
                    entries.map(parse_node).chain(malformed)
                });
            walk_chain(peer, entries, trusted, ClientSource::XForwardedFor)
        }
        ForwardedHeader::XRealIp => {
            // A proxy writes one line; several mean a client added its own.
            let mut lines = headers.get_all(&X_REAL_IP).iter();
            let first = lines.next().and_then(|value| value.to_str().ok());
            let entry = match lines.next() {
                Some(_) => None,
                None => first.and_then(parse_node),
            };
            walk_chain(peer, std::iter::once(entry), trusted, ClientSource::XRealIp)
        }
    }
}

/// Reads a chain of addresses, nearest hop first, and picks the client.
fn walk_chain<I>(
    peer: IpAddr,
    entries: I,
    trusted: &TrustedProxies,
    source: ClientSource,
) -> ClientAddress
where
    I: Iterator<Item = Option<IpAddr>>,
{
    let mut nearest = ClientAddress::new(peer, ClientSource::Peer);
    for entry in entries {
        let Some(addr) = entry else {
            nearest.note = Some(ClientNote::MalformedHeader(source));
            return nearest;
        };
        nearest = ClientAddress::new(addr, source);
        if !trusted.contains(addr) {
            return nearest;
        }
    }
    // Every hop is a trusted proxy: the farthest one is the best we know.
    nearest
}

fn walk_forwarded(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> ClientAddress {
    let mut hops = Hops::default();
    for value in headers.get_all(FORWARDED) {
        match value.to_str() {
            Ok(text) => forwarded_for_nodes(text, &mut hops),
            Err(_) => hops.push(None),
        }
    }
    walk_chain(peer, hops.nearest_first(), trusted, ClientSource::Forwarded)
}

/// The number of `Forwarded` hops kept on the stack; longer chains spill to
/// the heap.
const INLINE_HOPS: usize = 16;

/// The hops of a `Forwarded` header, in header order. `Forwarded` elements
/// can hold quoted commas, so the header is parsed front to back and walked
/// back to front; the usual short chains need no allocation.
#[derive(Default)]
struct Hops {
    inline: [Option<IpAddr>; INLINE_HOPS],
    len: usize,
    spill: Vec<Option<IpAddr>>,
}

impl Hops {
    fn push(&mut self, hop: Option<IpAddr>) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = hop;
                self.len += 1;
            }
            None => self.spill.push(hop),
        }
    }

    fn nearest_first(&self) -> impl Iterator<Item = Option<IpAddr>> + '_ {
        let inline = self.inline[..self.len].iter().rev();
        self.spill.iter().rev().chain(inline).copied()
    }
}

/// Appends the `for=` node of each element of a `Forwarded` header value, in
/// order; `None` for a node that is not an address, or an element without
/// `for=` or that cannot be parsed.
fn forwarded_for_nodes(text: &str, nodes: &mut Hops) {
    let mut element_for: Option<Option<IpAddr>> = None;
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        // One `name=value` pair.
        let Some(eq) = rest.find('=') else {
            nodes.push(None);
            return;
        };
        let name = rest[..eq].trim();
        rest = &rest[eq + 1..];
        let (value, after) = match take_forwarded_value(rest) {
            Some(parts) => parts,
            None => {
                nodes.push(None);
                return;
            }
        };
        if name.eq_ignore_ascii_case("for") && element_for.is_none() {
            element_for = Some(parse_node(value));
        }
        rest = after.trim_start_matches([' ', '\t']);

        match rest.as_bytes().first() {
            Some(b';') => rest = &rest[1..],
            Some(b',') => {
                nodes.push(element_for.take().flatten());
                rest = &rest[1..];
            }
            None => {
                nodes.push(element_for.take().flatten());
                return;
            }
            Some(_) => {
                nodes.push(None);
                return;
            }
        }
    }
}

/// Splits a token or quoted-string value off the front of `text`.
fn take_forwarded_value(text: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let end = quoted.find('"')?;
        let value = &quoted[..end];
        // A quoted-pair would need unescaping, and no address contains one.
        if value.contains('\\') {
            return None;
        }
        return Some((value, &quoted[end + 1..]));
    }
    let end = text.find([';', ',', ' ', '\t']).unwrap_or(text.len());
    Some((&text[..end], &text[end..]))
}

/// Parses one hop: an IP address, optionally with a port (`192.0.2.1:80`,
/// `[2001:db8::1]:80`) or in brackets (`[2001:db8::1]`).
fn parse_node(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches([' ', '\t']);
    // `SocketAddr` accepts a numeric zone id (`[fe80::1%2]:80`); a zone is
    // meaningful only on the proxy's own link, so it is malformed here.
    if entry.contains('%') {
        return None;
    }
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Some(addr);
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// Turns an IPv4-mapped IPv6 address into the IPv4 address it carries.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Turns a network inside the IPv4-mapped block `::ffff:0:0/96` into the
/// IPv4 network it maps (`::ffff:192.0.2.0/120` is `192.0.2.0/24`), the
/// network that the [`canonical`] forms of its addresses fall in. Other
/// networks, `::/0` among them, are returned unchanged.
///
/// ```
/// use ipnet::IpNet;
/// use registry_redirect_core::client::canonical_network;
///
/// let mapped: IpNet = "::ffff:192.0.2.0/120".parse().unwrap();
/// assert_eq!(canonical_network(mapped), "192.0.2.0/24".parse::<IpNet>().unwrap());
///
/// let plain: IpNet = "2001:db8::/32".parse().unwrap();
/// assert_eq!(canonical_network(plain), plain);
/// ```
pub fn canonical_network(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net.trunc() else {
        return net;
    };
    let Some(mapped_len) = v6.prefix_len().checked_sub(96) else {
        return net;
    };
    match v6.network().to_ipv4_mapped() {
        Some(v4) => Ipv4Net::new(v4, mapped_len).map_or(net, IpNet::V4),
        None => net,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ])
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn resolve(peer: &str, pairs: &[(&'static str, &str)]) -> ClientAddress {
        resolve_client(Some(ip(peer)), &headers(pairs), &trusted())
    }

    fn resolve_with(
        header: ForwardedHeader,
        peer: &str,
        pairs: &[(&'static str, &str)],
    ) -> ClientAddress {
        let trusted = TrustedProxies::with_header(trusted().networks().to_vec(), header);
        resolve_client(Some(ip(peer)), &headers(pairs), &trusted)
    }

    #[test]
    fn untrusted_peer_ignores_every_header() {
        let client = resolve(
            "198.51.100.7",
            &[
                ("forwarded", "for=203.0.113.1"),
                ("x-forwarded-for", "203.0.113.2"),
                ("x-real-ip", "203.0.113.3"),
            ],
        );
        assert_eq!(client.addr, Some(ip("198.51.100.7")));
        assert_eq!(client.source, ClientSource::Peer);
        assert_eq!(client.note, None);
    }

    #[test]
    fn no_trusted_proxies_means_peer() {
        let client = resolve_client(
            Some(ip("10.0.0.1")),
            &headers(&[("x-forwarded-for", "203.0.113.2")]),
            &TrustedProxies::none(),
        );
        assert_eq!(client.addr, Some(ip("10.0.0.1")));
        assert_eq!(client.source, ClientSource::Peer);
    }

    #[test]
    fn unknown_peer() {
        let client = resolve_client(None, &headers(&[("x-real-ip", "203.0.113.2")]), &trusted());
        assert_eq!(client.addr, None);
        assert_eq!(client.source, ClientSource::Unknown);
    }

    #[test]
    fn trusted_peer_without_headers() {
        let client = resolve("10.0.0.1", &[]);
        assert_eq!(client.addr, Some(ip("10.0.0.1")));
        assert_eq!(client.source, ClientSource::Peer);
    }

    #[test]
    fn x_forwarded_for_rightmost_untrusted() {
        let client = resolve(
            "10.0.0.1",
            &[(
                "x-forwarded-for",
                "1.1.1.1, 203.0.113.5, 10.0.0.9, 10.0.0.8",
            )],
        );
        assert_eq!(client.addr, Some(ip("203.0.113.5")));
        assert_eq!(client.source, ClientSource::XForwardedFor);
    }

    #[test]
    fn x_forwarded_for_across_header_lines() {
        let client = resolve(
            "10.0.0.1",
            &[
                ("x-forwarded-for", "203.0.113.5"),
                ("x-forwarded-for", "10.0.0.9"),
            ],
        );
        assert_eq!(client.addr, Some(ip("203.0.113.5")));
    }

    #[test]
    fn x_forwarded_for_with_ports_and_ipv6() {
        for (value, expected) in [
            ("203.0.113.5:4711", "203.0.113.5"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("::ffff:203.0.113.5", "203.0.113.5"),
        ] {
            let client = resolve("10.0.0.1", &[("x-forwarded-for", value)]);
            assert_eq!(client.addr, Some(ip(expected)), "{value}");
        }
    }

    #[test]
    fn all_hops_trusted_takes_farthest() {
        let client = resolve("10.0.0.1", &[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]);
        assert_eq!(client.addr, Some(ip("10.0.0.3")));
        assert_eq!(client.source, ClientSource::XForwardedFor);
    }

    #[test]
    fn malformed_entry_falls_back_to_nearest_trusted_hop() {
        let client = resolve(
            "10.0.0.1",
            &[("x-forwarded-for", "203.0.113.5, garbage, 10.0.0.9")],
        );
        assert_eq!(client.addr, Some(ip("10.0.0.9")));
        assert_eq!(client.source, ClientSource::XForwardedFor);
        assert_eq!(
            client.note,
            Some(ClientNote::MalformedHeader(ClientSource::XForwardedFor))
        );

        let client = resolve("10.0.0.1", &[("x-forwarded-for", "nonsense")]);
        assert_eq!(client.addr, Some(ip("10.0.0.1")));
        assert_eq!(client.source, ClientSource::Peer);
        assert!(client.note.is_some());
    }

    #[test]
    fn obfuscated_and_zoned_addresses_are_malformed() {
        for value in [
            "127.1",
            "0x7f.0.0.1",
            "fe80::1%eth0",
            "",
            "1.2.3.4.5",
            "010.1.1.1",
        ] {
            let client = resolve("10.0.0.1", &[("x-forwarded-for", value)]);
            assert_eq!(client.addr, Some(ip("10.0.0.1")), "{value:?}");
            assert!(client.note.is_some(), "{value:?}");
        }
    }

    #[test]
    fn non_ascii_header_is_malformed() {
        let mut map = HeaderMap::new();
        map.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"203.0.113.5\xff").unwrap(),
        );
        let client = resolve_client(Some(ip("10.0.0.1")), &map, &trusted());
        assert_eq!(client.addr, Some(ip("10.0.0.1")));
        assert!(client.note.is_some());
    }

    #[test]
    fn thousands_of_entries() {
        let mut chain = vec!["203.0.113.1"; 5000].join(",");
        chain.push_str(", 198.51.100.4");
        let client = resolve("10.0.0.1", &[("x-forwarded-for", &chain)]);
        assert_eq!(client.addr, Some(ip("198.51.100.4")));
    }

    #[test]
    fn forwarded_header() {
        let client = resolve_with(
            ForwardedHeader::Forwarded,
            "10.0.0.1",
            &[(
                "forwarded",
                "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\"",
            )],
        );
        assert_eq!(client.addr, Some(ip("2001:db8:cafe::17")));
        assert_eq!(client.source, ClientSource::Forwarded);
    }

    #[test]
    fn forwarded_skips_trusted_and_is_case_insensitive() {
        let client = resolve_with(
            ForwardedHeader::Forwarded,
            "10.0.0.1",
            &[("forwarded", "For=192.0.2.60, for=10.1.1.1;proto=https")],
        );
        assert_eq!(client.addr, Some(ip("192.0.2.60")));
    }

    #[test]
    fn only_configured_header_is_read() {
        let pairs = [
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=192.0.2.60"),
            ("x-real-ip", "198.51.100.3"),
        ];
        for (header, expected, source) in [
            (
                ForwardedHeader::XForwardedFor,
                "203.0.113.9",
                ClientSource::XForwardedFor,
            ),
            (
                ForwardedHeader::Forwarded,
                "192.0.2.60",
                ClientSource::Forwarded,
            ),
            (
                ForwardedHeader::XRealIp,
                "198.51.100.3",
                ClientSource::XRealIp,
            ),
        ] {
            let client = resolve_with(header, "10.0.0.1", &pairs);
            assert_eq!(client.addr, Some(ip(expected)), "{header:?}");
            assert_eq!(client.source, source, "{header:?}");
        }
    }

    #[test]
    fn unconfigured_header_is_ignored() {
        // A proxy that writes X-Forwarded-For passes a client's own
        // Forwarded header on untouched, so that header must not count.
        let client = resolve("10.0.0.1", &[("forwarded", "for=192.0.2.60")]);
        assert_eq!(client.addr, Some(ip("10.0.0.1")));
        assert_eq!(client.source, ClientSource::Peer);
    }

    #[test]
    fn repeated_x_real_ip_is_malformed() {
        let client = resolve_with(
            ForwardedHeader::XRealIp,
            "10.0.0.1",
            &[("x-real-ip", "203.0.113.7"), ("x-real-ip", "198.51.100.1")],
        );
        assert_eq!(client.addr, Some(ip("10.0.0.1")));
        assert_eq!(
            client.note,
            Some(ClientNote::MalformedHeader(ClientSource::XRealIp))
        );
    }

    #[test]
    fn numeric_zone_id_is_malformed() {
        for value in ["[fe80::1%2]:80", "fe80::1%2", "[fe80::1%25eth0]"] {
            let client = resolve("10.0.0.1", &[("x-forwarded-for", value)]);
            assert_eq!(client.addr, Some(ip("10.0.0.1")), "{value}");
            assert!(client.note.is_some(), "{value}");
        }
    }

    #[test]
    fn forwarded_quoted_comma_in_other_parameter() {
        let client = resolve_with(
            ForwardedHeader::Forwarded,
            "10.0.0.1",
            &[("forwarded", "for=192.0.2.60;ext=\"a,b\"")],
        );
        assert_eq!(client.addr, Some(ip("192.0.2.60")));
    }

    #[test]
    fn forwarded_unknown_and_obfuscated_nodes() {
        for value in [
            "for=unknown",
            "for=_hidden",
            "proto=http",
            "for=\"[::1\"",
            "garbage",
            "for=\"a\\\"b\"",
        ] {
            let client = resolve_with(
                ForwardedHeader::Forwarded,
                "10.0.0.1",
                &[("forwarded", value)],
            );
            assert_eq!(client.addr, Some(ip("10.0.0.1")), "{value:?}");
            assert_eq!(
                client.note,
                Some(ClientNote::MalformedHeader(ClientSource::Forwarded)),
                "{value:?}"
            );
        }
    }

    #[test]
    fn x_real_ip() {
        let client = resolve_with(
            ForwardedHeader::XRealIp,
            "10.0.0.1",
            &[("x-real-ip", "203.0.113.7")],
        );
        assert_eq!(client.addr, Some(ip("203.0.113.7")));
        assert_eq!(client.source, ClientSource::XRealIp);

        let client = resolve_with(
            ForwardedHeader::XRealIp,
            "10.0.0.1",
            &[("x-real-ip", "not-an-ip")],
        );
        assert_eq!(client.addr, Some(ip("10.0.0.1")));
        assert_eq!(
            client.note,
            Some(ClientNote::MalformedHeader(ClientSource::XRealIp))
        );
    }

    #[test]
    fn canonical_network_maps_ipv4_mapped_block() {
        for (written, expected) in [
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
            ("::ffff:192.0.2.1/128", "192.0.2.1/32"),
            ("::ffff:192.0.2.1/120", "192.0.2.0/24"),
            ("::/0", "::/0"),
            ("::/80", "::/80"),
            ("::ffff:0:0/95", "::ffff:0:0/95"),
            ("::192.0.2.0/120", "::192.0.2.0/120"),
            ("64:ff9b::/96", "64:ff9b::/96"),
            ("192.0.2.0/24", "192.0.2.0/24"),
        ] {
            let net: IpNet = written.parse().unwrap();
            let expected: IpNet = expected.parse().unwrap();
            assert_eq!(canonical_network(net), expected, "{written}");
        }
    }

    #[test]
    fn ipv4_mapped_trusted_network_trusts_ipv4() {
        let trusted = TrustedProxies::new(vec!["::ffff:10.0.0.0/104".parse().unwrap()]);
        for peer in ["10.0.0.1", "::ffff:10.0.0.1"] {
            let client = resolve_client(
                Some(ip(peer)),
                &headers(&[("x-forwarded-for", "203.0.113.7")]),
                &trusted,
            );
            assert_eq!(client.addr, Some(ip("203.0.113.7")), "peer {peer}");
        }
        assert!(!trusted.contains(ip("11.0.0.1")));
    }

    #[test]
    fn ipv4_mapped_peer_is_trusted_as_ipv4() {
        let client = resolve("::ffff:10.0.0.1", &[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(client.addr, Some(ip("203.0.113.7")));
        let client = resolve("::ffff:198.51.100.1", &[]);
        assert_eq!(client.addr, Some(ip("198.51.100.1")));
    }
}
