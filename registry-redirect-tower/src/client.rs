//! [`HttpClient`]: the outgoing HTTP client of blob checks, health probes
//! and resolve mode.
//!
//! It speaks HTTP/1.1 over `http` and `https` (rustls with the `ring`
//! provider), never follows redirects, and bounds every request by a
//! timeout. HTTPS trusts the Mozilla root certificates compiled in from
//! `webpki-roots`, so checks work in container images that ship no CA
//! bundle. The `native-roots` feature trusts the operating system's roots
//! instead, for mirrors behind a private CA.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, USER_AGENT};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The `User-Agent` of every check and probe, so that mirror operators can
/// tell them from client traffic.
const USER_AGENT_VALUE: &str = concat!("registry-redirect/", env!("CARGO_PKG_VERSION"));

/// How long an idle connection to a mirror stays open for the next check.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// An error building the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS configuration could not be built.
    #[error("building the TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The operating system's root certificates could not be read
    /// (feature `native-roots`).
    #[error("reading the operating system's root certificates failed: {0}; install a CA bundle or build without the native-roots feature")]
    NativeRoots(#[source] std::io::Error),
}

/// An error sending one request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// No response arrived within the timeout.
    #[error("{method} {url} timed out after {} ms", .timeout.as_millis())]
    TimedOut {
        /// The request method.
        method: Method,
        /// The request URL.
        url: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The connection could not be made or broke before a response arrived.
    #[error("{method} {url} failed: {reason}")]
    Failed {
        /// The request method.
        method: Method,
        /// The request URL.
        url: String,
        /// The error and its causes, outermost first.
        reason: String,
    },
    /// The URL cannot be sent: not an absolute `http` or `https` URL.
    #[error("{url:?} is not an absolute http or https URL: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// The reason for the rejection.
        reason: String,
    },
}

/// A pooled HTTP/1.1 client for requests without a body.
/// Clones share the connection pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HttpClient {
    /// Creates a client whose connection attempts give up after
    /// `connect_timeout`. Building it needs no Tokio runtime; sending does.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the TLS configuration cannot be built, or with
    /// the `native-roots` feature when the system's roots cannot be read.
    pub fn new(connect_timeout: Duration) -> Result<Self, ClientError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);

        let provider = rustls::crypto::ring::default_provider();
        let builder = HttpsConnectorBuilder::new();
        #[cfg(feature = "native-roots")]
        let builder = builder
            .with_provider_and_native_roots(provider)
            .map_err(ClientError::NativeRoots)?;
        #[cfg(not(feature = "native-roots"))]
        let builder = builder.with_provider_and_webpki_roots(provider)?;
        let https = builder.https_or_http().enable_http1().wrap_connector(http);

        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);
        Ok(HttpClient { client })
    }

    /// Sends `method url` with no body and returns the response status, or
    /// an error when no response arrives within `timeout`. A redirect is
    /// returned as its status, not followed. The response body is dropped
    /// unread.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        timeout: Duration,
    ) -> Result<StatusCode, RequestError> {
        let request = build_request(method, url, HeaderMap::new())?;
        let response = self.send_request(request, timeout).await?;
        Ok(response.status())
    }

    /// Sends a request built by [`build_request`] and returns the response
    /// with its body unread, or an error when the response headers do not
    /// arrive within `timeout`. Reading the body is not bounded by
    /// `timeout`. A redirect is returned, not followed.
    pub async fn send_request(
        &self,
        request: Request<Empty<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, RequestError> {
        let method = request.method().clone();
        let url = request.uri().to_string();
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(RequestError::Failed {
                method,
                url,
                reason: error_chain(&error),
            }),
            Err(_elapsed) => Err(RequestError::TimedOut {
                method,
                url,
                timeout,
            }),
        }
    }
}

/// Builds a request without a body to an absolute `http` or `https` URL,
/// with `headers` and this client's `User-Agent`.
///
/// # Errors
///
/// [`RequestError::InvalidUrl`] when `url` is not such a URL.
pub fn build_request(
    method: Method,
    url: &str,
    headers: HeaderMap,
) -> Result<Request<Empty<Bytes>>, RequestError> {
    let uri: Uri =
        url.parse()
            .map_err(|error: http::uri::InvalidUri| RequestError::InvalidUrl {
                url: url.to_owned(),
                reason: error.to_string(),
            })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(RequestError::InvalidUrl {
            url: url.to_owned(),
            reason: "expected a scheme of http or https and a host".to_owned(),
        });
    }

    let mut request = Request::new(Empty::new());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request
        .headers_mut()
        .insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    Ok(request)
}

/// Joins an error and its sources with `: `, because the client's own
/// message ("client error (Connect)") hides the cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_urls_rejected_before_sending() {
        let client = HttpClient::new(Duration::from_secs(1)).unwrap();
        for url in [
            "",
            "/relative/path",
            "ftp://host/file",
            "http://",
            "not a url",
        ] {
            let error = client
                .send(Method::HEAD, url, Duration::from_secs(1))
                .await
                .unwrap_err();
            assert!(
                matches!(error, RequestError::InvalidUrl { .. }),
                "{url:?}: {error}"
            );
        }
    }

    #[test]
    fn error_chain_lists_causes() {
        let outer = OuterError(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&outer), "connect: connection refused");
    }

    #[derive(Debug)]
    struct OuterError(std::io::Error);

    impl std::fmt::Display for OuterError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connect")
        }
    }

    impl std::error::Error for OuterError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
