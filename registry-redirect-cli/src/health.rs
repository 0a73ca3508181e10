//! `health`: one `GET` to the server's admin listener, for container
//! `HEALTHCHECK`s and exec probes on images that have no curl.
//!
//! Only plain `http://` URLs are accepted, because the admin listener
//! speaks plain HTTP. The request, connection included, must finish within
//! a timeout, and only `200 OK` counts as healthy.
//!
//! ```
//! use std::time::Duration;
//! use registry_redirect_cli::health::{check, parse_url, HealthError};
//!
//! let url = parse_url("http://127.0.0.1:9/readyz").unwrap();
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // Nothing listens on the discard port, so the check fails.
//! let error = check(&url, Duration::from_secs(1)).await.unwrap_err();
//! assert!(matches!(error, HealthError::Connect { .. }));
//! # });
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use http::{header, Request, StatusCode};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::Url;

/// The URL that `health` requests by default: `/readyz` of the admin
/// listener at its default address on loopback.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090/readyz";

/// The default time the whole request may take, in seconds.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 2;

/// A `--url` that `health` cannot request.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The text is not a URL.
    #[error("\"{text}\" is not a URL ({reason}); expected one such as {DEFAULT_URL}")]
    Invalid {
        /// The text given.
        text: String,
        /// The parser's message.
        reason: url::ParseError,
    },
    /// The URL's scheme is not `http`.
    #[error(
        "\"{text}\" uses the scheme \"{scheme}\"; expected http, which the admin listener speaks"
    )]
    Scheme {
        /// The text given.
        text: String,
        /// The scheme of the URL.
        scheme: String,
    },
    /// The URL has no host.
    #[error("\"{text}\" has no host; expected one such as {DEFAULT_URL}")]
    NoHost {
        /// The text given.
        text: String,
    },
}

/// Parses `text` as the URL for [`check`]: `http://HOST[:PORT]/PATH`.
pub fn parse_url(text: &str) -> Result<Url, UrlError> {
    let url = Url::parse(text).map_err(|reason| UrlError::Invalid {
        text: text.to_owned(),
        reason,
    })?;
    if url.scheme() != "http" {
        return Err(UrlError::Scheme {
            text: text.to_owned(),
            scheme: url.scheme().to_owned(),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost {
            text: text.to_owned(),
        });
    }
    Ok(url)
}

/// The reason a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The host did not resolve to an address.
    #[error("failed to resolve the host of {url}: {reason}")]
    Resolve {
        /// The URL requested.
        url: Url,
        /// The resolver's message.
        reason: String,
    },
    /// The URL's path and query do not form an HTTP request target.
    #[error("{url} has a path that is not a valid HTTP request target")]
    Target {
        /// The URL requested.
        url: Url,
    },
    /// The TCP connection failed, for example because nothing listens.
    #[error("failed to connect to {addr} for {url}: {source}")]
    Connect {
        /// The URL requested.
        url: Url,
        /// The address tried.
        addr: SocketAddr,
        /// The error from the operating system.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("GET {url} failed: {source}")]
    Request {
        /// The URL requested.
        url: Url,
        /// hyper's error.
        source: hyper::Error,
    },
    /// No response arrived within the timeout.
    #[error("GET {url} timed out after {} s", timeout.as_secs_f64())]
    TimedOut {
        /// The URL requested.
        url: Url,
        /// The timeout.
        timeout: Duration,
    },
    /// The response was not `200 OK`.
    #[error("GET {url} returned {status}; expected 200 OK")]
    Status {
        /// The URL requested.
        url: Url,
        /// The status received.
        status: StatusCode,
    },
}

/// Sends `GET url` and succeeds when the response is `200 OK` within
/// `timeout`, which covers resolving, connecting and the response head.
pub async fn check(url: &Url, timeout: Duration) -> Result<(), HealthError> {
    match tokio::time::timeout(timeout, request(url)).await {
        Ok(result) => result,
        Err(_) => Err(HealthError::TimedOut {
            url: url.clone(),
            timeout,
        }),
    }
}

async fn request(url: &Url) -> Result<(), HealthError> {
    let addr = resolve(url).await?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HealthError::Connect {
            url: url.clone(),
            addr,
            source,
        })?;
    let request_failed = |source| HealthError::Request {
        url: url.clone(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(request_failed)?;
    // The connection runs on its own task until the response head has
    // arrived. The guard aborts it then, or when a timeout drops this
    // future, because the body is never read.
    let _connection = AbortOnDrop(tokio::spawn(connection));

    let mut target = url.path().to_owned();
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let request = Request::get(target)
        .header(header::HOST, host)
        .header(
            header::USER_AGENT,
            concat!("registry-redirect-health/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new());
    let Ok(request) = request else {
        return Err(HealthError::Target { url: url.clone() });
    };
    let status = sender
        .send_request(request)
        .await
        .map_err(request_failed)?
        .status();
    if status != StatusCode::OK {
        return Err(HealthError::Status {
            url: url.clone(),
            status,
        });
    }
    Ok(())
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Returns the first address of the URL's host.
async fn resolve(url: &Url) -> Result<SocketAddr, HealthError> {
    let resolve_failed = |reason: String| HealthError::Resolve {
        url: url.clone(),
        reason,
    };
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    // An IPv6 host is written in brackets in URLs, not in socket addresses.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| resolve_failed(error.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| resolve_failed("no address found".to_owned()))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn urls_parse_or_say_why() {
        let cases = [
            ("http://127.0.0.1:9090/readyz", true),
            ("http://[::1]:9090/healthz", true),
            ("http://localhost/readyz?verbose=1", true),
            ("https://127.0.0.1:9090/readyz", false),
            ("127.0.0.1:9090/readyz", false),
            ("not a url", false),
        ];
        for (text, valid) in cases {
            assert_eq!(parse_url(text).is_ok(), valid, "{text}");
        }
        let error = parse_url("https://127.0.0.1:9090/readyz").unwrap_err();
        assert!(error.to_string().contains("expected http"), "{error}");
    }

    /// Starts a loopback server that sends `response` to the first
    /// connection, after reading its request, and returns its URL.
    async fn serve_once(response: &'static str) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(response.as_bytes()).await;
        });
        parse_url(&format!("http://{addr}/readyz")).unwrap()
    }

    #[tokio::test]
    async fn ok_response_is_healthy() {
        let url = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        check(&url, Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn other_statuses_are_unhealthy() {
        for response in [
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 301 Moved Permanently\r\nLocation: /\r\nContent-Length: 0\r\n\r\n",
        ] {
            let url = serve_once(response).await;
            let error = check(&url, Duration::from_secs(5)).await.unwrap_err();
            assert!(matches!(error, HealthError::Status { .. }), "{error}");
        }
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = parse_url(&format!("http://{}/readyz", listener.local_addr().unwrap())).unwrap();
        // The listener accepts (the kernel completes the handshake) but
        // never responds.
        let error = check(&url, Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(error, HealthError::TimedOut { .. }), "{error}");
        drop(listener);
    }
}
