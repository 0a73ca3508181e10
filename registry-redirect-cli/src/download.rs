//! [`Downloader`]: `GET` of a published file over `http` or `https`, with a
//! time limit, a size limit and a bounded number of redirects.
//!
//! HTTPS uses rustls with the `ring` provider and trusts the Mozilla root
//! certificates compiled in from `webpki-roots`, so downloads work in
//! container images that ship no CA bundle.
//!
//! ```
//! use std::time::Duration;
//! use registry_redirect_cli::download::{DownloadError, Downloader};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let downloader = Downloader::new(Duration::from_secs(5)).unwrap();
//! let error = downloader.get("ftp://example.com/ranges.json").await.unwrap_err();
//! assert!(matches!(error, DownloadError::InvalidUrl { .. }));
//! # });
//! ```

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, LOCATION, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use url::Url;

/// The largest body accepted. The published range files are a few
/// megabytes (AWS `ip-ranges.json` is about 2.5 MB), so this
/// leaves room for growth while stopping an endless response.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The maximum number of redirects followed for one download.
pub const MAX_REDIRECTS: usize = 5;

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const USER_AGENT_VALUE: &str = concat!("registry-redirect/", env!("CARGO_PKG_VERSION"));

/// A download that failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The URL is not an absolute `http` or `https` URL.
    #[error("\"{url}\" is not an absolute http or https URL: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// The reason it was rejected.
        reason: String,
    },
    /// The TLS configuration could not be built.
    #[error("building the TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The server returned a status other than 200 or a redirect.
    #[error("GET {url} returned HTTP {status} (expected 200)")]
    Status {
        /// The URL requested last, after any redirects.
        url: String,
        /// The status received.
        status: StatusCode,
    },
    /// A redirect had no usable `Location` header.
    #[error("GET {url} returned a {status} redirect without a valid Location header")]
    BadRedirect {
        /// The URL that redirected.
        url: String,
        /// The redirect status.
        status: StatusCode,
    },
    /// A redirect went from `https` to `http`, which would drop the
    /// protection of TLS.
    #[error("GET {url} redirected to {location}, from https to http, which is refused")]
    InsecureRedirect {
        /// The URL that redirected.
        url: String,
        /// The redirect target.
        location: String,
    },
    /// More than [`MAX_REDIRECTS`] redirects in a row.
    #[error("GET {url} redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects {
        /// The URL first requested.
        url: String,
    },
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the body of {url} is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge {
        /// The URL whose body was too large.
        url: String,
    },
    /// The download did not finish in time.
    #[error("GET {url} did not finish within {} s", .timeout.as_secs_f64())]
    TimedOut {
        /// The URL first requested.
        url: String,
        /// The time limit that expired.
        timeout: Duration,
    },
    /// The connection failed, or broke before the whole body arrived.
    #[error("GET {url} failed: {reason}")]
    Failed {
        /// The URL requested.
        url: String,
        /// The error and its causes, outermost first.
        reason: String,
    },
}

/// An HTTP/1.1 client for downloading whole files.
#[derive(Clone, Debug)]
pub struct Downloader {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl Downloader {
    /// Creates a client whose downloads, redirects and body included, give
    /// up after `timeout`. Building it needs no Tokio runtime; downloading
    /// does.
    pub fn new(timeout: Duration) -> Result<Self, DownloadError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));

        let provider = rustls::crypto::ring::default_provider();
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Downloader { client, timeout })
    }

    /// Downloads `url` and returns its body. Redirects are followed, up to
    /// [`MAX_REDIRECTS`], except from `https` to `http`. Any final status
    /// other than 200 is an error.
    pub async fn get(&self, url: &str) -> Result<Bytes, DownloadError> {
        let start = parse_url(url)?;
        match tokio::time::timeout(self.timeout, self.follow(start)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(DownloadError::TimedOut {
                url: url.to_owned(),
                timeout: self.timeout,
            }),
        }
    }

    async fn follow(&self, start: Url) -> Result<Bytes, DownloadError> {
        let mut current = start.clone();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send(&current).await?;
            let status = response.status();

            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|location| current.join(location).ok())
                    .filter(|next| matches!(next.scheme(), "http" | "https"))
                    .ok_or_else(|| DownloadError::BadRedirect {
                        url: current.to_string(),
                        status,
                    })?;
                if current.scheme() == "https" && next.scheme() == "http" {
                    return Err(DownloadError::InsecureRedirect {
                        url: current.to_string(),
                        location: next.to_string(),
                    });
                }
                current = next;
                continue;
            }
            if status != StatusCode::OK {
                return Err(DownloadError::Status {
                    url: current.to_string(),
                    status,
                });
            }

            let limited = Limited::new(response.into_body(), MAX_BODY_BYTES);
            return match limited.collect().await {
                Ok(collected) => Ok(collected.to_bytes()),
                Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                    Err(DownloadError::TooLarge {
                        url: current.to_string(),
                    })
                }
                Err(error) => Err(DownloadError::Failed {
                    url: current.to_string(),
                    reason: error_chain(error.as_ref()),
                }),
            };
        }
        Err(DownloadError::TooManyRedirects {
            url: start.to_string(),
        })
    }

    async fn send(
        &self,
        url: &Url,
    ) -> Result<http::Response<hyper::body::Incoming>, DownloadError> {
        let failed = |reason: String| DownloadError::Failed {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|error: http::uri::InvalidUri| failed(error.to_string()))?;
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = uri;
        request
            .headers_mut()
            .insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        self.client
            .request(request)
            .await
            .map_err(|error| failed(error_chain(&error)))
    }
}

/// Parses an absolute `http` or `https` URL with a host.
pub fn parse_url(text: &str) -> Result<Url, DownloadError> {
    let invalid = |reason: String| DownloadError::InvalidUrl {
        url: text.to_owned(),
        reason,
    };
    let url = Url::parse(text).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme is {}, expected http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host".to_owned()));
    }
    Ok(url)
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

    #[test]
    fn urls_need_http_scheme_and_host() {
        assert!(parse_url("https://ip-ranges.example/ip-ranges.json").is_ok());
        assert!(parse_url("http://127.0.0.1:8080/a.json").is_ok());
        for text in [
            "",
            "ranges.json",
            "ftp://example.com/a",
            "file:///etc/passwd",
            "https://",
        ] {
            let error = parse_url(text).unwrap_err();
            assert!(
                matches!(error, DownloadError::InvalidUrl { .. }),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn invalid_url_message_names_url_and_reason() {
        let error = parse_url("ftp://example.com/a").unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"ftp://example.com/a\" is not an absolute http or https URL: the scheme is ftp, \
             expected http or https"
        );
    }
}
