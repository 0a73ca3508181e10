//! Inputs, the fixed policy and the invariants of the fuzz targets in
//! `fuzz_targets/`.
//!
//! The structured targets (`decide`, `client_address`) take a
//! [`PeerInput`] built by `arbitrary` from the first 17 bytes. The rest of
//! the input is text in the shape of an HTTP/1.1 request head, so that
//! seeds can be written by hand and libFuzzer's mutations stay close to
//! real requests:
//!
//! ```text
//! GET /v2/library/nginx/manifests/latest?ns=docker.io
//! Host: registry.example.test
//! X-Forwarded-For: 203.0.113.5, 10.0.0.7
//! ```
//!
//! `client_address` inputs have one more byte after the peer, which picks
//! the forwarding header the policy reads, and then header lines only.
//! `seeds/*.txt` contains the seeds in readable form, and
//! `cargo run --bin write-seeds` turns them into `corpus/<target>/`.
//!
//! Run a target from `registry-redirect-core` with cargo-fuzz on a nightly
//! toolchain. Give a scratch corpus directory first, because libFuzzer
//! writes new inputs to the first directory and the seeds should stay as
//! committed:
//!
//! ```text
//! cargo +nightly fuzz run decide /tmp/decide-corpus fuzz/corpus/decide -- -dict=fuzz/decide.dict
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::{Arbitrary, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue};
use registry_redirect_core::ForwardedHeader;

// The core's test helpers, shared so that the fuzz targets and the
// hostile-corpus tests check the same rule.
#[path = "../../tests/common/corpus.rs"]
pub mod corpus;
#[path = "../../tests/common/location.rs"]
pub mod location;
#[path = "../../tests/common/origin.rs"]
pub mod origin;
#[path = "../../tests/common/verdict.rs"]
pub mod verdict;

pub mod fixture;
pub mod invariants;

/// The TCP peer of a fuzzed request: which kind of address, and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub struct PeerInput {
    /// Selects the form, modulo [`PeerInput::KINDS`]: none, IPv4, IPv6, a
    /// trusted IPv4 proxy, a trusted IPv6 proxy, or an IPv4-mapped IPv6
    /// address.
    pub kind: u8,
    /// The address bytes; IPv4 forms use the first four.
    pub octets: [u8; 16],
}

impl PeerInput {
    /// The number of peer forms.
    pub const KINDS: u8 = 6;
    /// The bytes [`PeerInput`] takes from the front of an input.
    pub const ENCODED_LEN: usize = 17;

    /// Returns the peer address, or `None` for an adapter without one.
    pub fn address(&self) -> Option<IpAddr> {
        let [a, b, c, d, ..] = self.octets;
        match self.kind % Self::KINDS {
            0 => None,
            1 => Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
            2 => Some(IpAddr::V6(Ipv6Addr::from(self.octets))),
            // Inside the fixture's trusted proxies, 10.0.0.0/8 and fd00::/8.
            3 => Some(IpAddr::V4(Ipv4Addr::new(10, b, c, d))),
            4 => {
                let mut octets = self.octets;
                octets[0] = 0xfd;
                Some(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            _ => Some(IpAddr::V6(Ipv4Addr::new(a, b, c, d).to_ipv6_mapped())),
        }
    }

    /// Returns the 17 bytes that `arbitrary` reads back as this peer.
    pub fn encode(peer: Option<IpAddr>) -> [u8; Self::ENCODED_LEN] {
        let mut bytes = [0u8; Self::ENCODED_LEN];
        match peer {
            None => {}
            Some(IpAddr::V4(v4)) => {
                bytes[0] = 1;
                bytes[1..5].copy_from_slice(&v4.octets());
            }
            Some(IpAddr::V6(v6)) => {
                bytes[0] = 2;
                bytes[1..].copy_from_slice(&v6.octets());
            }
        }
        bytes
    }
}

/// A request line and headers, parsed from the text after the peer.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The method token, as bytes.
    pub method: Vec<u8>,
    /// The request target, as bytes; it may contain anything but LF.
    pub target: Vec<u8>,
    /// The headers whose names and values `http` accepts; the others are
    /// dropped, as a server would not pass them on either.
    pub headers: HeaderMap,
}

impl RequestHead {
    /// Parses `METHOD SP TARGET LF *(NAME ":" VALUE LF)`. The target is the
    /// rest of the first line, spaces included.
    pub fn parse(text: &[u8]) -> RequestHead {
        let mut lines = text.split(|&byte| byte == b'\n');
        let first = lines.next().unwrap_or_default();
        let (method, target) = match first.iter().position(|&byte| byte == b' ') {
            Some(space) => (&first[..space], &first[space + 1..]),
            None => (first, &b""[..]),
        };
        RequestHead {
            method: method.to_vec(),
            target: target.to_vec(),
            headers: parse_headers(lines),
        }
    }
}

/// Parses `NAME ":" VALUE` lines; a value's leading spaces and tabs and a
/// trailing CR are dropped, as HTTP/1.1 parsers drop them.
pub fn parse_headers<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            continue;
        };
        let value = &line[colon + 1..];
        let start = value
            .iter()
            .position(|&byte| byte != b' ' && byte != b'\t')
            .unwrap_or(value.len());
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(&value[start..]);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    headers
}

/// The input of the `decide` target.
#[derive(Debug, Clone)]
pub struct DecideInput {
    /// The TCP peer.
    pub peer: PeerInput,
    /// The request line and headers.
    pub head: RequestHead,
}

impl<'a> Arbitrary<'a> for DecideInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let peer = PeerInput::arbitrary(u)?;
        let text = <&[u8]>::arbitrary(u)?;
        Ok(DecideInput {
            peer,
            head: RequestHead::parse(text),
        })
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        let peer = PeerInput::arbitrary(&mut u)?;
        Ok(DecideInput {
            peer,
            head: RequestHead::parse(u.take_rest()),
        })
    }
}

/// The forwarding headers a policy can read, in the order of the selector
/// byte of [`ClientInput`].
pub const FORWARDED_HEADERS: [ForwardedHeader; 3] = [
    ForwardedHeader::XForwardedFor,
    ForwardedHeader::Forwarded,
    ForwardedHeader::XRealIp,
];

/// The input of the `client_address` target: the peer, one byte that
/// selects the header the trusted proxies write (an index into
/// [`FORWARDED_HEADERS`], modulo its length), then header lines.
#[derive(Debug, Clone)]
pub struct ClientInput {
    /// The TCP peer.
    pub peer: PeerInput,
    /// The forwarding header the policy reads.
    pub header: ForwardedHeader,
    /// The forwarding headers (and any others).
    pub headers: HeaderMap,
}

impl ClientInput {
    fn read_prefix(u: &mut Unstructured<'_>) -> arbitrary::Result<(PeerInput, ForwardedHeader)> {
        let peer = PeerInput::arbitrary(u)?;
        let selector = usize::from(u8::arbitrary(u)?);
        Ok((peer, FORWARDED_HEADERS[selector % FORWARDED_HEADERS.len()]))
    }

    /// Returns the selector byte that reads back as `header`.
    pub fn encode_header(header: ForwardedHeader) -> u8 {
        let index = FORWARDED_HEADERS.iter().position(|&known| known == header);
        index.map_or(0, |index| index as u8)
    }
}

impl<'a> Arbitrary<'a> for ClientInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let (peer, header) = Self::read_prefix(u)?;
        let text = <&[u8]>::arbitrary(u)?;
        Ok(ClientInput {
            peer,
            header,
            headers: parse_headers(text.split(|&byte| byte == b'\n')),
        })
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        let (peer, header) = Self::read_prefix(&mut u)?;
        let text = u.take_rest();
        Ok(ClientInput {
            peer,
            header,
            headers: parse_headers(text.split(|&byte| byte == b'\n')),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_encoding_round_trips() {
        for peer in [
            None,
            Some("203.0.113.5".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
        ] {
            let bytes = PeerInput::encode(peer);
            let decoded = PeerInput::arbitrary(&mut Unstructured::new(&bytes)).unwrap();
            assert_eq!(decoded.address(), peer);
        }
    }

    #[test]
    fn request_head_keeps_spaces_in_target() {
        let head =
            RequestHead::parse(b"GET /v2/a b?x\nHost: h\nX-Bad\xff: 1\nX-Real-IP:\t 1.2.3.4\r");
        assert_eq!(head.method, b"GET");
        assert_eq!(head.target, b"/v2/a b?x");
        assert_eq!(head.headers["host"], "h");
        assert_eq!(head.headers["x-real-ip"], "1.2.3.4");
        assert_eq!(head.headers.len(), 2);
    }
}
