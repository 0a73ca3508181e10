//! The PROXY protocol (versions 1 and 2, as HAProxy's `proxy-protocol.txt`
//! defines them) on `serve`'s listener. A load balancer that passes TCP
//! through writes the client's address in a header before the connection's
//! first byte. That address becomes the connection's client address.
//!
//! A header is believed only from a peer in the policy's `trusted_proxies`,
//! read when the connection starts, so a reload takes effect for new
//! connections. The rules:
//!
//! - A trusted peer must start every connection with a header. A connection
//!   without one is closed, because a load balancer set up for the PROXY
//!   protocol always sends it, and serving such a connection would take
//!   the load balancer's own address for the client's.
//! - An untrusted peer that starts with a header is closed: it may be a
//!   client that claims another address. An untrusted peer without a
//!   header is served with its TCP address as the client address.
//! - A version 2 `LOCAL` header (a load balancer's own health check), a
//!   version 1 `UNKNOWN` header and version 2 addresses of other families
//!   (`UNSPEC`, `UNIX`) keep the TCP peer's address, as the protocol requires.
//! - Version 2 TLVs are skipped. A header longer than
//!   [`MAX_HEADER_BYTES`] is rejected.
//!
//! The header is read before TLS. Reading it counts against the header read
//! timeout, which the caller applies.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ppp::v2;
use registry_redirect_tower::{ClientAddressLogging, PolicyHandle};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The maximum header length accepted, in bytes. A version 1 header has at
/// most 107 bytes. A version 2 header has 16 fixed bytes, then up to 36
/// bytes of addresses, then TLVs, and may declare up to 16 + 65535 bytes.
/// 1024 bytes leave room for the TLVs that cloud load balancers add (an
/// endpoint id, a TLS summary).
pub const MAX_HEADER_BYTES: usize = 1024;

/// The maximum length of a version 1 header, CRLF included.
const V1_MAX_BYTES: usize = 107;

/// The start of a version 1 header.
const V1_PREFIX: &[u8] = b"PROXY ";

/// The 12-byte signature that starts a version 2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part of a version 2 header: signature, version and command,
/// family and protocol, and the 16-bit length of the rest.
const V2_FIXED_BYTES: usize = 16;

/// A PROXY protocol header that could not be accepted. The connection is
/// closed without a response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// An untrusted peer sent a header.
    #[error("PROXY protocol header from {peer}, which is not in trusted_proxies (add the load balancer's address to trusted_proxies if it is one)")]
    Untrusted {
        /// The TCP peer.
        peer: SocketAddr,
    },
    /// A trusted peer started the connection without a header.
    #[error("connection from trusted proxy {peer} does not start with a PROXY protocol header (turn the PROXY protocol on at the load balancer, or off here)")]
    Missing {
        /// The TCP peer.
        peer: SocketAddr,
    },
    /// The header is not valid.
    #[error("invalid PROXY protocol header from {peer}: {reason}")]
    Invalid {
        /// The TCP peer.
        peer: SocketAddr,
        /// The parser's message.
        reason: String,
    },
    /// The header is longer than [`MAX_HEADER_BYTES`].
    #[error("PROXY protocol header from {peer} is {length} bytes, more than the maximum of {MAX_HEADER_BYTES}")]
    TooLong {
        /// The TCP peer.
        peer: SocketAddr,
        /// The length read or declared so far.
        length: usize,
    },
    /// The peer closed the connection before the header was complete.
    #[error("connection from {peer} closed before its PROXY protocol header was complete")]
    Closed {
        /// The TCP peer.
        peer: SocketAddr,
    },
    /// Reading from the socket failed.
    #[error("failed to read the PROXY protocol header from {peer}: {source}")]
    Io {
        /// The TCP peer.
        peer: SocketAddr,
        /// The error from the operating system.
        source: io::Error,
    },
}

/// The PROXY protocol on a listener, with the policy whose
/// `trusted_proxies` lists the load balancers.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    handle: PolicyHandle,
    warnings: Arc<Mutex<WarningBudget>>,
    untrusted_peers: ClientAddressLogging,
}

/// At most one warning a second, so that a client that keeps sending bad
/// headers cannot flood the log. The next warning carries the count of
/// those left out.
#[derive(Debug, Default)]
struct WarningBudget {
    last: Option<Instant>,
    suppressed: u64,
}

/// The kind of a connection's first bytes.
#[derive(Clone, Copy)]
enum Start {
    /// Bytes that start no header.
    Other,
    V1,
    V2,
}

impl ProxyProtocol {
    /// Trusts the `trusted_proxies` of the policy in `handle`, as it is when
    /// each connection starts.
    pub fn new(handle: PolicyHandle) -> Self {
        ProxyProtocol {
            handle,
            warnings: Arc::default(),
            untrusted_peers: ClientAddressLogging::Off,
        }
    }

    /// Sets how the address of an untrusted peer that sent a header is
    /// logged, as the access log logs client addresses: such a peer may be
    /// a client. The addresses of trusted peers, which are load balancers,
    /// are always logged whole.
    pub fn untrusted_peer_logging(mut self, logging: ClientAddressLogging) -> Self {
        self.untrusted_peers = logging;
        self
    }

    /// Logs why a connection was closed: a WARN for headers that a load
    /// balancer's or the server's setup should fix, at most one a second,
    /// and a DEBUG for connections that closed or failed on their own. The
    /// address of an untrusted peer is logged as
    /// [`ProxyProtocol::untrusted_peer_logging`] sets, `-` when off.
    pub fn log_rejection(&self, error: &ProxyHeaderError) {
        if matches!(
            error,
            ProxyHeaderError::Closed { .. } | ProxyHeaderError::Io { .. }
        ) {
            tracing::debug!(%error, "closing connection");
            return;
        }
        let mut budget = self
            .warnings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if budget
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            budget.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut budget.suppressed);
        budget.last = Some(now);
        drop(budget);
        if let ProxyHeaderError::Untrusted { peer } = error {
            let logged = self
                .untrusted_peers
                .apply(peer.ip())
                .map_or_else(|| "-".to_owned(), |address| address.to_string());
            tracing::warn!(
                peer = %logged,
                suppressed,
                "closing connection: PROXY protocol header from a peer that is not in \
                 trusted_proxies (add the load balancer's address to trusted_proxies if it is one)"
            );
            return;
        }
        tracing::warn!(%error, suppressed, "closing connection");
    }

    /// Returns whether the policy trusts `peer` to send headers.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.handle
            .load()
            .trusted_proxies()
            .contains(peer.to_canonical())
    }

    /// Reads the header at the start of `stream`, if any, and returns the
    /// connection's client address: the header's source address, or `peer`.
    /// Only the header's bytes are consumed, so the rest of the stream is
    /// left for TLS or HTTP.
    pub async fn read_client_address(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<SocketAddr, ProxyHeaderError> {
        let trusted = self.trusts(peer.ip());
        let mut buffer = [0u8; MAX_HEADER_BYTES];

        let mut peeked = peek_more(stream, peer, &mut buffer, 0).await?;
        let start = loop {
            if let Some(start) = classify(&buffer[..peeked]) {
                break start;
            }
            peeked = peek_more(stream, peer, &mut buffer, peeked).await?;
        };
        match (start, trusted) {
            (Start::Other, false) => return Ok(peer),
            (Start::Other, true) => return Err(ProxyHeaderError::Missing { peer }),
            (_, false) => return Err(ProxyHeaderError::Untrusted { peer }),
            (Start::V1 | Start::V2, true) => {}
        }

        loop {
            let parsed = match start {
                Start::V1 => parse_v1(&buffer[..peeked], peer)?,
                _ => parse_v2(&buffer[..peeked], peer)?,
            };
            if let Some((length, client)) = parsed {
                // The parser checked that the first `length` bytes, which
                // are in the buffer already, are the header.
                let header = buffer.get_mut(..length).unwrap_or_default();
                stream
                    .read_exact(header)
                    .await
                    .map_err(|source| ProxyHeaderError::Io { peer, source })?;
                return Ok(client);
            }
            if peeked == buffer.len() {
                return Err(ProxyHeaderError::TooLong {
                    peer,
                    length: peeked,
                });
            }
            peeked = peek_more(stream, peer, &mut buffer, peeked).await?;
        }
    }
}

/// Tells from the first bytes whether a header starts, or `None` while the
/// bytes are a prefix of a header's start.
fn classify(bytes: &[u8]) -> Option<Start> {
    let could_be = |prefix: &[u8]| {
        let common = bytes.len().min(prefix.len());
        bytes[..common] == prefix[..common]
    };
    if bytes.starts_with(V1_PREFIX) {
        Some(Start::V1)
    } else if bytes.starts_with(V2_SIGNATURE) {
        Some(Start::V2)
    } else if could_be(V1_PREFIX) || could_be(V2_SIGNATURE) {
        None
    } else {
        Some(Start::Other)
    }
}

/// Peeks until more than `seen` bytes are available, and returns their
/// count. A peek returns the bytes already seen at once, so between
/// attempts it waits a little for more.
async fn peek_more(
    stream: &TcpStream,
    peer: SocketAddr,
    buffer: &mut [u8],
    seen: usize,
) -> Result<usize, ProxyHeaderError> {
    loop {
        let count = stream
            .peek(buffer)
            .await
            .map_err(|source| ProxyHeaderError::Io { peer, source })?;
        if count == 0 {
            return Err(ProxyHeaderError::Closed { peer });
        }
        if count > seen {
            return Ok(count);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Parses a version 1 header. Returns its length and the client address,
/// or `None` when more bytes are needed.
fn parse_v1(
    bytes: &[u8],
    peer: SocketAddr,
) -> Result<Option<(usize, SocketAddr)>, ProxyHeaderError> {
    use ppp::v1::{Addresses, Header};

    // ppp (2.3) reads a header cut short as a complete one with missing
    // fields, so it gets only whole lines.
    let Some(end) = bytes.iter().position(|&byte| byte == b'\n') else {
        if bytes.len() >= V1_MAX_BYTES {
            return Err(ProxyHeaderError::Invalid {
                peer,
                reason: format!("version 1 header has no CRLF within {V1_MAX_BYTES} bytes"),
            });
        }
        return Ok(None);
    };
    match Header::try_from(&bytes[..=end]) {
        Ok(header) => {
            let client = match header.addresses {
                Addresses::Tcp4(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
                Addresses::Tcp6(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
                Addresses::Unknown => peer,
            };
            Ok(Some((header.header.len(), client)))
        }
        Err(error) => Err(ProxyHeaderError::Invalid {
            peer,
            reason: format!("version 1: {error}"),
        }),
    }
}

/// Parses a version 2 header. Returns its length and the client address,
/// or `None` when more bytes are needed.
fn parse_v2(
    bytes: &[u8],
    peer: SocketAddr,
) -> Result<Option<(usize, SocketAddr)>, ProxyHeaderError> {
    if let (Some(&high), Some(&low)) = (bytes.get(14), bytes.get(15)) {
        let length = V2_FIXED_BYTES + usize::from(u16::from_be_bytes([high, low]));
        if length > MAX_HEADER_BYTES {
            return Err(ProxyHeaderError::TooLong { peer, length });
        }
    }
    match v2::Header::try_from(bytes) {
        Ok(header) => {
            let client = match (header.command, header.addresses) {
                (v2::Command::Local, _) => peer,
                (v2::Command::Proxy, v2::Addresses::IPv4(ip)) => {
                    SocketAddr::from((ip.source_address, ip.source_port))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(ip)) => {
                    SocketAddr::from((ip.source_address, ip.source_port))
                }
                (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => peer,
            };
            Ok(Some((header.header.len(), client)))
        }
        Err(v2::ParseError::Incomplete(_) | v2::ParseError::Partial(..)) => Ok(None),
        Err(error) => Err(ProxyHeaderError::Invalid {
            peer,
            reason: format!("version 2: {error}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 2], 40000))
    }

    #[test]
    fn first_bytes_classified() {
        let cases: [(&[u8], Option<&str>); 7] = [
            (b"GET / HTTP/1.1\r\n", Some("other")),
            (b"PRI * HTTP/2.0", Some("other")),
            (b"\x16\x03\x01", Some("other")),
            (b"PRO", None),
            (b"\r\n\r\n\0", None),
            (b"PROXY TCP4", Some("v1")),
            (b"\r\n\r\n\0\r\nQUIT\n\x21", Some("v2")),
        ];
        for (bytes, expected) in cases {
            let found = classify(bytes).map(|start| match start {
                Start::Other => "other",
                Start::V1 => "v1",
                Start::V2 => "v2",
            });
            assert_eq!(found, expected, "{bytes:?}");
        }
    }

    #[test]
    fn v1_header_length_and_source() {
        let header = b"PROXY TCP4 192.0.2.7 198.51.100.1 41000 443\r\nGET";
        let parsed = parse_v1(header, peer()).unwrap();
        assert_eq!(
            parsed,
            Some((header.len() - 3, "192.0.2.7:41000".parse().unwrap()))
        );
        assert_eq!(parse_v1(b"PROXY TCP4 192.0.2.7", peer()).unwrap(), None);
        assert!(parse_v1(&[b'P'; 107], peer()).is_err());
    }

    #[test]
    fn v2_declared_length_capped() {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend([0x21, 0x11, 0xff, 0xff]);
        let error = parse_v2(&header, peer()).unwrap_err();
        assert!(
            matches!(error, ProxyHeaderError::TooLong { length: 65551, .. }),
            "{error}"
        );
    }
}
