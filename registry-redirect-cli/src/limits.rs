//! Limits on the connections and requests that `serve` accepts: request
//! header size, concurrent connections, HTTP/2 streams, and the two
//! timeouts of a connection without a request in flight.
//!
//! The defaults suit a public service. A registry client sends a request of
//! a few hundred bytes, plus a bearer token of a few kilobytes at most, so
//! 32 KiB of headers leaves room without letting a client make the server
//! buffer much. Each limit is a `serve` flag and a key of the `[limits]`
//! table, and the flag wins.
//!
//! ```
//! use std::time::Duration;
//! use registry_redirect_cli::limits::{Limits, LimitsError};
//!
//! let limits = Limits::default();
//! assert_eq!(limits.max_header_bytes, 32 * 1024);
//! assert_eq!(limits.idle_timeout, Duration::from_secs(60));
//!
//! let small = Limits { max_header_bytes: 1024, ..Limits::default() };
//! assert_eq!(
//!     small.validate().unwrap_err(),
//!     LimitsError::HeaderBytesTooSmall { value: 1024 }
//! );
//! ```

use std::time::Duration;

/// The smallest accepted `max_header_bytes`: hyper (1.13) panics on a
/// read buffer limit below 8192 bytes.
pub const MIN_HEADER_BYTES: usize = 8192;

/// The limits of `serve`'s connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The maximum time from the start of a connection, or from the first
    /// byte after an idle period, until a request's headers are complete.
    /// It also bounds the PROXY protocol header and the TLS handshake,
    /// which count against the first request's time. A slower connection
    /// is closed without a response.
    pub header_read_timeout: Duration,
    /// The maximum time a keep-alive connection may stay open with no
    /// request in flight and no byte received since the last response.
    pub idle_timeout: Duration,
    /// The maximum size of a request's headers, in bytes: the HTTP/1 read
    /// buffer (request line and headers) and the HTTP/2 header list (as
    /// RFC 9113 counts it, 32 bytes added per field). A larger request
    /// gets 431 Request Header Fields Too Large.
    pub max_header_bytes: usize,
    /// The maximum number of connections open at once. At the limit the
    /// server stops accepting, so new connections wait in the kernel's
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// The maximum number of concurrent streams (requests) a client may
    /// open on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 32 * 1024,
            max_connections: 10_000,
            http2_max_concurrent_streams: 100,
        }
    }
}

/// A limit out of its accepted range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// `max_header_bytes` is below [`MIN_HEADER_BYTES`].
    #[error("max_header_bytes is {value}, but the minimum is {MIN_HEADER_BYTES} (hyper's smallest read buffer)")]
    HeaderBytesTooSmall {
        /// The value given.
        value: usize,
    },
    /// `max_header_bytes` does not fit HTTP/2's 32-bit header list size.
    #[error(
        "max_header_bytes is {value}, but the maximum is {} (HTTP/2's header list size is 32 bits)",
        u32::MAX
    )]
    HeaderBytesTooLarge {
        /// The value given.
        value: usize,
    },
    /// `max_connections` is more than Tokio's semaphore can count.
    #[error("max_connections is {value}, but the maximum is {max}")]
    TooManyConnections {
        /// The value given.
        value: usize,
        /// [`tokio::sync::Semaphore::MAX_PERMITS`].
        max: usize,
    },
    /// A limit that must be at least 1 is 0.
    #[error("{name} is 0 (expected at least 1)")]
    Zero {
        /// The key of the limit.
        name: &'static str,
    },
}

impl Limits {
    /// Checks that every limit is in its accepted range.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(LimitsError::HeaderBytesTooSmall {
                value: self.max_header_bytes,
            });
        }
        if u32::try_from(self.max_header_bytes).is_err() {
            return Err(LimitsError::HeaderBytesTooLarge {
                value: self.max_header_bytes,
            });
        }
        if self.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(LimitsError::TooManyConnections {
                value: self.max_connections,
                max: tokio::sync::Semaphore::MAX_PERMITS,
            });
        }
        let zeros = [
            ("header_read_timeout", self.header_read_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("max_connections", self.max_connections == 0),
            (
                "http2_max_concurrent_streams",
                self.http2_max_concurrent_streams == 0,
            ),
        ];
        match zeros.into_iter().find(|(_, zero)| *zero) {
            Some((name, _)) => Err(LimitsError::Zero { name }),
            None => Ok(()),
        }
    }

    /// Returns `max_header_bytes` as HTTP/2's header list size, saturated
    /// at `u32::MAX` for limits that [`Limits::validate`] rejects.
    pub fn http2_max_header_list_size(&self) -> u32 {
        u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn out_of_range_limits_rejected() {
        let cases = [
            (
                Limits {
                    max_header_bytes: 8191,
                    ..Limits::default()
                },
                LimitsError::HeaderBytesTooSmall { value: 8191 },
            ),
            (
                Limits {
                    idle_timeout: Duration::ZERO,
                    ..Limits::default()
                },
                LimitsError::Zero {
                    name: "idle_timeout",
                },
            ),
            (
                Limits {
                    max_connections: 0,
                    ..Limits::default()
                },
                LimitsError::Zero {
                    name: "max_connections",
                },
            ),
            (
                Limits {
                    http2_max_concurrent_streams: 0,
                    ..Limits::default()
                },
                LimitsError::Zero {
                    name: "http2_max_concurrent_streams",
                },
            ),
        ];
        for (limits, expected) in cases {
            assert_eq!(limits.validate(), Err(expected.clone()), "{expected}");
        }
    }
}
