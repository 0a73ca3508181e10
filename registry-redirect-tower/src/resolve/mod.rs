//! [`Resolver`]: resolve mode, for upstreams with `auth = "resolve"` whose
//! every request needs a bearer token.
//!
//! For such an upstream the core decides [`Outcome::Resolve`], and the
//! resolver acts on it:
//!
//! - Manifests, tag lists and referrers are fetched from the upstream with
//!   a token and passed to the client with the upstream's status, body and
//!   registry headers (an upstream `404 MANIFEST_UNKNOWN` stays one). `HEAD`
//!   gets the same headers and no body. `Accept` is passed on. Bodies
//!   larger than [`ResolverSettings::max_document_bytes`] are rejected, so
//!   the server never buffers anything large. `200 OK` replies are cached,
//!   by digest until evicted and by tag for the upstream's `tag_ttl`.
//! - Blobs are requested with a token, and the upstream's redirect to
//!   pre-signed storage is passed to the client, so the blob bytes never
//!   pass through the server and the token never reaches the storage host.
//!   An upstream that serves the bytes itself gets a `502` error, unless
//!   the upstream has `blob_proxy`, which streams them through. `Range` is
//!   passed on.
//! - Tokens come from the realm of the upstream's `Bearer` challenge
//!   ([`challenge`]), learnt once per upstream from `GET /v2/`, and are
//!   cached per scope until shortly before they expire. On a `401` the
//!   request is retried once with a token for the challenge of that
//!   response.
//!
//! Failures get an OCI error body: `503 UNAVAILABLE` when the upstream or
//! its token endpoint cannot be reached or does not respond within
//! [`ResolverSettings::timeout`], and `502` when it responds with
//! something unusable.

pub mod challenge;
mod documents;
mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
    RANGE,
};
use http::{HeaderMap, Method, Response, StatusCode};
use hyper::body::Incoming;
use moka::future::Cache;
use registry_redirect_core::policy::ResolveSettings;
use registry_redirect_core::response::{oci_error_body, API_VERSION, API_VERSION_HEADER};
use registry_redirect_core::{Decision, Outcome, RequestKind};

use crate::client::{build_request, ClientError, HttpClient, RequestError};
use challenge::{bearer_challenge, BearerChallenge, ChallengeError};
use documents::{
    blob_headers, document_headers, rename_tag_list, rewrite_pagination_links, DocumentCache,
    NotCached, Reply,
};
use token::{check_realm_transport, read_limited, TokenCache, TokenKey};

/// Settings of resolve mode, shared by every resolve-mode upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// The maximum time from a request to the response sent to the
    /// client, covering the `/v2/` probe, the token request and the
    /// upstream request with its retry. Default 10 s. A streamed blob's
    /// body is not bounded by it.
    pub timeout: Duration,
    /// The maximum time to open a connection. Default 2 s.
    pub connect_timeout: Duration,
    /// The largest document (manifest, tag list, referrers, error body)
    /// passed through. Default 4 MiB. A larger one gets a `502` error.
    pub max_document_bytes: usize,
    /// The approximate size of the document cache in bytes, headers
    /// included. Default 64 MiB.
    pub document_cache_bytes: u64,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            max_document_bytes: 4 * 1024 * 1024,
            document_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// How long the outcome of an upstream's `GET /v2/` is kept.
const CHALLENGE_TTL: Duration = Duration::from_secs(3600);

/// The minimum time between two failure log lines for one upstream. The
/// failures in between are counted in the next line.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A resolve-mode request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// A request to the upstream or its token endpoint failed or timed out.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The whole resolution took longer than the timeout.
    #[error(
        "no answer for upstream \"{upstream}\" within {} ms, counting its token endpoint and the upstream itself",
        .timeout.as_millis()
    )]
    TimedOut {
        /// The upstream's name.
        upstream: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// `GET /v2/` returned a status that is neither 2xx nor 401.
    #[error("GET {url} returned {status} (expected 200, or 401 with a Bearer challenge)")]
    ProbeStatus {
        /// The `/v2/` URL.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// A 401 carried no usable bearer challenge.
    #[error("{url} requires authentication, but {error}")]
    Challenge {
        /// The URL that returned 401.
        url: String,
        /// The problem with the challenge.
        error: ChallengeError,
    },
    /// The challenge's realm is not an `http` or `https` URL.
    #[error("the token realm {realm:?} is invalid: {reason}")]
    InvalidRealm {
        /// The realm as sent.
        realm: String,
        /// The problem, and what was expected.
        reason: String,
    },
    /// The token endpoint returned an error.
    #[error("the token endpoint {realm} returned {status} (expected 200; check the upstream's credentials)")]
    TokenStatus {
        /// The realm.
        realm: String,
        /// The status.
        status: StatusCode,
    },
    /// The token response cannot be used.
    #[error("the token endpoint {realm} returned an invalid token response: {reason}")]
    InvalidToken {
        /// The realm.
        realm: String,
        /// The problem, and what was expected.
        reason: String,
    },
    /// The credentials cannot be written as a header.
    #[error("the upstream's user name or password has characters that an Authorization header cannot carry")]
    InvalidCredentials,
    /// A document is larger than the limit.
    #[error("{url} returned a body larger than {limit} bytes, the limit for documents passed through this server")]
    DocumentTooLarge {
        /// The URL.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// Reading a response body failed.
    #[error("reading the response of {url} failed: {reason}")]
    Body {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The upstream served a blob itself and the upstream has no `blob_proxy`.
    #[error("upstream \"{upstream}\" served the blob itself instead of redirecting to storage; set blob_proxy = true on the upstream to stream such blobs through this server")]
    BlobServedDirectly {
        /// The upstream's name.
        upstream: String,
    },
    /// A redirect whose `Location` is missing or not a URL.
    #[error("{url} returned {status} with an invalid or missing Location")]
    InvalidRedirect {
        /// The URL.
        url: String,
        /// The redirect status.
        status: StatusCode,
    },
}

impl ResolveError {
    /// Returns the status and OCI error code sent to the client.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ResolveError::Request(RequestError::InvalidUrl { .. }) => {
                (StatusCode::BAD_GATEWAY, "UNAVAILABLE")
            }
            ResolveError::Request(_) | ResolveError::TimedOut { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            ResolveError::DocumentTooLarge { .. } | ResolveError::BlobServedDirectly { .. } => {
                (StatusCode::BAD_GATEWAY, "UNSUPPORTED")
            }
            _ => (StatusCode::BAD_GATEWAY, "UNAVAILABLE"),
        }
    }
}

/// A resolve-mode request, taken out of a [`Decision`] so that it owns
/// everything it needs across `await` points.
#[derive(Debug, Clone)]
pub struct ResolveRequest {
    /// The upstream's name.
    pub upstream: String,
    /// The upstream's base URL, ending in `/v2/`: its API version check.
    pub base: String,
    /// The URL to fetch.
    pub url: String,
    /// The repository name at the upstream, for the token scope.
    pub repository: String,
    /// The repository name as the client wrote it, which pagination links
    /// name.
    pub name: String,
    /// The request kind.
    pub kind: RequestKind,
    /// Whether the response is addressed by digest.
    pub by_digest: bool,
    /// Whether the client sent `HEAD`.
    pub is_head: bool,
    /// The upstream's resolve-mode settings.
    pub settings: ResolveSettings,
    /// The client's `Accept` and `Range` headers, passed on.
    pub headers: HeaderMap,
}

impl ResolveRequest {
    /// Builds the request for a [`Outcome::Resolve`] decision, or `None`
    /// for any other outcome.
    pub fn from_decision(decision: &Decision<'_>, client_headers: &HeaderMap) -> Option<Self> {
        let Outcome::Resolve {
            target,
            url,
            repository,
            name,
            by_digest,
            ..
        } = &decision.outcome
        else {
            return None;
        };
        let mut headers = HeaderMap::new();
        for name in [ACCEPT, RANGE] {
            for value in client_headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Some(ResolveRequest {
            upstream: target.name().to_owned(),
            base: target.base()?.to_owned(),
            url: url.clone(),
            repository: repository.clone(),
            name: name.clone(),
            kind: decision.kind?,
            by_digest: *by_digest,
            is_head: decision.is_head,
            settings: target.resolve()?.clone(),
            headers,
        })
    }

    /// Returns whether this is a tag list whose body names the upstream's
    /// repository where the client wrote another name (`path_prefix` or
    /// `library/`), so that the body is rewritten to the client's name.
    fn renames_tag_list(&self) -> bool {
        self.kind == RequestKind::TagsList && self.repository != self.name
    }

    fn method(&self) -> Method {
        if self.is_head {
            Method::HEAD
        } else {
            Method::GET
        }
    }
}

/// The body of a resolve-mode response: complete, or a blob streamed from
/// the upstream (`blob_proxy`).
#[derive(Debug)]
pub enum ResolvedBody {
    /// A complete body; empty for `HEAD` and redirects.
    Full(Bytes),
    /// The upstream's body, passed through as it arrives.
    Streamed(Incoming),
}

/// The response to a resolve-mode request, with what the access log
/// records about it.
#[derive(Debug)]
pub struct Resolution {
    /// The response for the client.
    pub response: Response<ResolvedBody>,
    /// The body bytes sent to the client: the length of a complete body,
    /// or for a streamed blob, the `Content-Length` the upstream declared
    /// (`None` when it declared none).
    pub bytes: Option<u64>,
    /// Whether the body is streamed from the upstream.
    pub streamed: bool,
    /// Whether the response came from the document cache.
    pub cached: bool,
}

/// Counters of a [`Resolver`] since it was created, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolveStats {
    /// `GET /v2/` requests sent to learn an upstream's challenge.
    pub probes_sent: u64,
    /// Token requests sent.
    pub tokens_fetched: u64,
    /// Document and blob requests sent to upstreams, retries included.
    pub upstream_requests: u64,
    /// Documents returned from the cache.
    pub document_cache_hits: u64,
}

/// Whether an upstream needs a token, as its `GET /v2/` showed.
#[derive(Debug)]
enum AuthMode {
    Anonymous,
    Bearer(BearerChallenge),
}

struct Inner {
    client: HttpClient,
    settings: ResolverSettings,
    tokens: TokenCache,
    /// The outcome of `GET /v2/` by upstream base URL.
    auth_modes: Cache<String, Arc<AuthMode>>,
    documents: DocumentCache,
    /// Per upstream: when a failure was last logged, and the failures not
    /// logged since.
    failure_log: Mutex<HashMap<String, (Option<Instant>, u64)>>,
    probes_sent: AtomicU64,
    upstream_requests: AtomicU64,
    document_cache_hits: AtomicU64,
}

/// Fetches resolve-mode requests from their upstreams with tokens, with
/// caches for tokens, challenges and documents. Cheap to clone: clones
/// share the caches.
///
/// Give it to [`RegistryRedirectLayer::with_resolver`](crate::RegistryRedirectLayer::with_resolver):
///
/// ```
/// use registry_redirect_core::{Policy, PolicySpec, UpstreamSpec};
/// use registry_redirect_core::policy::UpstreamAuth;
/// use registry_redirect_tower::resolve::{Resolver, ResolverSettings};
/// use registry_redirect_tower::RegistryRedirectLayer;
///
/// let mut spec = PolicySpec::new("hub");
/// spec.upstreams.insert(
///     "hub".into(),
///     UpstreamSpec { auth: UpstreamAuth::Resolve, ..UpstreamSpec::new("https://registry-1.docker.io") },
/// );
/// let policy = Policy::compile(&spec).unwrap();
/// let resolver = Resolver::new(ResolverSettings::default()).unwrap();
/// let layer = RegistryRedirectLayer::new(policy).with_resolver(resolver.clone());
/// assert_eq!(resolver.stats().tokens_fetched, 0);
/// # drop(layer);
/// ```
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("settings", &self.inner.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Creates a resolver with its own HTTP client.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the HTTP client cannot be built.
    pub fn new(settings: ResolverSettings) -> Result<Self, ClientError> {
        let client = HttpClient::new(settings.connect_timeout)?;
        Ok(Resolver::with_client(client, settings))
    }

    /// Creates a resolver that sends its requests with `client`.
    pub fn with_client(client: HttpClient, settings: ResolverSettings) -> Self {
        let auth_modes = Cache::builder()
            .max_capacity(1000)
            .time_to_live(CHALLENGE_TTL)
            .build();
        Resolver {
            inner: Arc::new(Inner {
                client,
                tokens: TokenCache::new(),
                auth_modes,
                documents: DocumentCache::new(settings.document_cache_bytes),
                failure_log: Mutex::new(HashMap::new()),
                settings,
                probes_sent: AtomicU64::new(0),
                upstream_requests: AtomicU64::new(0),
                document_cache_hits: AtomicU64::new(0),
            }),
        }
    }

    /// Returns the settings.
    pub fn settings(&self) -> &ResolverSettings {
        &self.inner.settings
    }

    /// Returns the counters.
    pub fn stats(&self) -> ResolveStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ResolveStats {
            probes_sent: load(&self.inner.probes_sent),
            tokens_fetched: self.inner.tokens.fetched(),
            upstream_requests: load(&self.inner.upstream_requests),
            document_cache_hits: load(&self.inner.document_cache_hits),
        }
    }

    /// Fetches `request` from its upstream and builds the client's
    /// response. Every failure becomes an OCI error response, and is
    /// logged at WARN (at most once every 10 s per upstream). It needs a
    /// Tokio runtime with the time driver, as the blob checks do.
    pub async fn resolve(&self, request: &ResolveRequest) -> Resolution {
        let timeout = self.inner.settings.timeout;
        let result = match tokio::time::timeout(timeout, self.fetch(request)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ResolveError::TimedOut {
                upstream: request.upstream.clone(),
                timeout,
            }),
        };
        let mut resolution = result.unwrap_or_else(|error| {
            self.log_failure(request, &error);
            error_resolution(&error, request.is_head)
        });
        resolution
            .response
            .headers_mut()
            .insert(API_VERSION_HEADER.clone(), API_VERSION.clone());
        resolution
    }

    /// Logs a failure at WARN, at most once per [`FAILURE_LOG_INTERVAL`]
    /// for each upstream, with the number of failures not logged before it.
    fn log_failure(&self, request: &ResolveRequest, error: &ResolveError) {
        let now = Instant::now();
        let mut log = self
            .inner
            .failure_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = log.entry(request.upstream.clone()).or_insert((None, 0));
        if entry
            .0
            .is_some_and(|logged| now.duration_since(logged) < FAILURE_LOG_INTERVAL)
        {
            entry.1 += 1;
            return;
        }
        let not_logged = entry.1;
        *entry = (Some(now), 0);
        drop(log);
        tracing::warn!(
            upstream = %request.upstream,
            url = %request.url,
            %error,
            failures_not_logged = not_logged,
            "resolving a request at the upstream failed"
        );
    }

    async fn fetch(&self, request: &ResolveRequest) -> Result<Resolution, ResolveError> {
        if request.kind == RequestKind::Blob {
            self.blob(request).await
        } else {
            self.document(request).await
        }
    }

    /// Fetches a manifest, tag list or referrers list, from the cache when
    /// it has it.
    async fn document(&self, request: &ResolveRequest) -> Result<Resolution, ResolveError> {
        let accept: Vec<&HeaderValue> = request.headers.get_all(ACCEPT).iter().collect();
        let key = DocumentCache::key(&request.url, &request.name, &accept);
        if let Some(reply) = self.inner.documents.get(&key).await {
            self.inner
                .document_cache_hits
                .fetch_add(1, Ordering::Relaxed);
            return Ok(reply_resolution(reply, request.is_head, true));
        }

        // A renamed tag list's length is known only from its body, so a
        // `HEAD` for one is sent as `GET`, and the client gets the headers.
        let head_as_get;
        let upstream_request = if request.is_head && request.renames_tag_list() {
            head_as_get = ResolveRequest {
                is_head: false,
                ..request.clone()
            };
            &head_as_get
        } else {
            request
        };
        let ttl = if request.by_digest {
            Some(None)
        } else if request.settings.tag_ttl.is_zero() {
            None
        } else {
            Some(Some(request.settings.tag_ttl))
        };
        let (Some(ttl), false) = (ttl, upstream_request.is_head) else {
            // `HEAD` replies carry no body to cache, and tags may be
            // uncached by configuration.
            let reply = self.fetch_reply(upstream_request).await?;
            return Ok(reply_resolution(reply, request.is_head, false));
        };
        let fetched = self
            .inner
            .documents
            .get_or_fetch(key, ttl, self.fetch_reply(upstream_request))
            .await;
        match fetched {
            Ok(reply) => Ok(reply_resolution(reply, request.is_head, false)),
            Err(not_cached) => match &*not_cached {
                NotCached::Reply(reply) => {
                    Ok(reply_resolution(reply.clone(), request.is_head, false))
                }
                NotCached::Failed(error) => Err(error.clone()),
            },
        }
    }

    /// Sends a document request and reads the reply, bounded in size.
    async fn fetch_reply(&self, request: &ResolveRequest) -> Result<Reply, ResolveError> {
        let response = self.send_authorized(request).await?;
        let status = response.status();
        if status.is_redirection() {
            return redirect_reply(&request.url, &response);
        }
        let mut headers = document_headers(response.headers());
        rewrite_pagination_links(
            &mut headers,
            &request.base,
            &request.repository,
            &request.name,
        );
        if request.is_head {
            if let Some(length) = response.headers().get(CONTENT_LENGTH) {
                headers.insert(CONTENT_LENGTH, length.clone());
            }
        }
        let mut body = self.read_document(&request.url, response).await?;
        // A tag list names its repository. The client gets the name it
        // requested, not the upstream's with `path_prefix` or `library/`.
        if request.renames_tag_list() && status.is_success() {
            if let Some(renamed) = rename_tag_list(&body, &request.repository, &request.name) {
                body = renamed;
                // The upstream's digest, if it sent one, is not this body's.
                headers.remove("docker-content-digest");
            }
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Reads a document body, rejecting one larger than the limit before
    /// reading it when `Content-Length` announces it.
    async fn read_document(
        &self,
        url: &str,
        response: Response<Incoming>,
    ) -> Result<Bytes, ResolveError> {
        let limit = self.inner.settings.max_document_bytes;
        let too_large = || ResolveError::DocumentTooLarge {
            url: url.to_owned(),
            limit,
        };
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        read_limited(response.into_body(), limit)
            .await
            .map_err(|reason| {
                if reason.starts_with("the body is larger") {
                    too_large()
                } else {
                    ResolveError::Body {
                        url: url.to_owned(),
                        reason,
                    }
                }
            })
    }

    /// Requests a blob and passes the upstream's redirect to the client.
    async fn blob(&self, request: &ResolveRequest) -> Result<Resolution, ResolveError> {
        let response = self.send_authorized(request).await?;
        let status = response.status();
        if status.is_redirection() {
            let reply = redirect_reply(&request.url, &response)?;
            return Ok(reply_resolution(reply, request.is_head, false));
        }
        if !status.is_success() {
            let headers = document_headers(response.headers());
            let body = self.read_document(&request.url, response).await?;
            let reply = Reply {
                status,
                headers,
                body,
            };
            return Ok(reply_resolution(reply, request.is_head, false));
        }

        let headers = blob_headers(response.headers());
        if request.is_head {
            let mut response = Response::new(ResolvedBody::Full(Bytes::new()));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            return Ok(Resolution {
                response,
                bytes: Some(0),
                streamed: false,
                cached: false,
            });
        }
        if !request.settings.blob_proxy {
            return Err(ResolveError::BlobServedDirectly {
                upstream: request.upstream.clone(),
            });
        }
        let bytes = headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let mut proxied = Response::new(ResolvedBody::Streamed(response.into_body()));
        *proxied.status_mut() = status;
        *proxied.headers_mut() = headers;
        Ok(Resolution {
            response: proxied,
            bytes,
            streamed: true,
            cached: false,
        })
    }

    /// Sends the request with a token when the upstream needs one, and
    /// retries once with a token for the challenge of a `401`. The second
    /// `401`, if any, is returned to the caller.
    async fn send_authorized(
        &self,
        request: &ResolveRequest,
    ) -> Result<Response<Incoming>, ResolveError> {
        let auth_mode = self.auth_mode(&request.base).await?;
        let scope = format!("repository:{}:pull", request.repository);
        let mut token_key = None;
        let mut headers = request.headers.clone();
        if let AuthMode::Bearer(challenge) = &*auth_mode {
            let key = self.token_key(request, challenge, &scope);
            let authorization = self.token(request, key.clone(), challenge).await?;
            headers.insert(AUTHORIZATION, authorization);
            token_key = Some(key);
        }
        let response = self.send(request, headers.clone()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }

        // The token expired early, was revoked, or the upstream started
        // requiring one: learn the challenge from this response and retry.
        let challenge =
            bearer_challenge(response.headers()).map_err(|error| ResolveError::Challenge {
                url: request.url.clone(),
                error,
            })?;
        if let Some(key) = &token_key {
            self.inner.tokens.invalidate(key).await;
        }
        let realm_only = BearerChallenge {
            scope: None,
            ..challenge.clone()
        };
        self.inner
            .auth_modes
            .insert(request.base.clone(), Arc::new(AuthMode::Bearer(realm_only)))
            .await;
        let scope = challenge.scope.clone().unwrap_or(scope);
        let key = self.token_key(request, &challenge, &scope);
        let authorization = self.token(request, key, &challenge).await?;
        headers.insert(AUTHORIZATION, authorization);
        self.send(request, headers).await
    }

    fn token_key(
        &self,
        request: &ResolveRequest,
        challenge: &BearerChallenge,
        scope: &str,
    ) -> TokenKey {
        TokenKey {
            upstream: request.upstream.clone(),
            realm: challenge.realm.clone(),
            service: challenge.service.clone(),
            scope: scope.to_owned(),
            credentials: request
                .settings
                .credentials
                .as_ref()
                .map(|credentials| self.inner.tokens.credentials_id(credentials)),
        }
    }

    async fn token(
        &self,
        request: &ResolveRequest,
        key: TokenKey,
        challenge: &BearerChallenge,
    ) -> Result<HeaderValue, ResolveError> {
        let credentials = request.settings.credentials.as_ref();
        if credentials.is_some() {
            check_realm_transport(&request.base, &challenge.realm)?;
        }
        let mut authorization = self
            .inner
            .tokens
            .token(
                &self.inner.client,
                self.inner.settings.timeout,
                key,
                challenge,
                credentials,
            )
            .await?;
        authorization.set_sensitive(true);
        Ok(authorization)
    }

    async fn send(
        &self,
        request: &ResolveRequest,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>, ResolveError> {
        let outgoing = build_request(request.method(), &request.url, headers)?;
        self.inner.upstream_requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .inner
            .client
            .send_request(outgoing, self.inner.settings.timeout)
            .await?;
        Ok(response)
    }

    /// Returns whether the upstream at `base` needs a token, from its
    /// `GET /v2/`, sent once and cached.
    async fn auth_mode(&self, base: &str) -> Result<Arc<AuthMode>, ResolveError> {
        let probe = async {
            let request = build_request(Method::GET, base, HeaderMap::new())?;
            self.inner.probes_sent.fetch_add(1, Ordering::Relaxed);
            let response = self
                .inner
                .client
                .send_request(request, self.inner.settings.timeout)
                .await?;
            let status = response.status();
            if status.is_success() {
                return Ok(Arc::new(AuthMode::Anonymous));
            }
            if status != StatusCode::UNAUTHORIZED {
                return Err(ResolveError::ProbeStatus {
                    url: base.to_owned(),
                    status,
                });
            }
            let challenge =
                bearer_challenge(response.headers()).map_err(|error| ResolveError::Challenge {
                    url: base.to_owned(),
                    error,
                })?;
            Ok(Arc::new(AuthMode::Bearer(challenge)))
        };
        self.inner
            .auth_modes
            .try_get_with_by_ref(base, probe)
            .await
            .map_err(|error: Arc<ResolveError>| (*error).clone())
    }
}

/// Builds the reply for an upstream redirect: the same status, and the
/// `Location` made absolute against the request URL. The storage URL needs
/// no token, so none is sent there.
fn redirect_reply(url: &str, response: &Response<Incoming>) -> Result<Reply, ResolveError> {
    let status = response.status();
    let invalid = || ResolveError::InvalidRedirect {
        url: url.to_owned(),
        status,
    };
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(invalid)?;
    let base = url::Url::parse(url).map_err(|_| invalid())?;
    let absolute = base.join(location).map_err(|_| invalid())?;
    if !matches!(absolute.scheme(), "http" | "https") {
        return Err(invalid());
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        LOCATION,
        HeaderValue::try_from(absolute.as_str()).map_err(|_| invalid())?,
    );
    // Pre-signed storage URLs are for one client and expire.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private"));
    Ok(Reply {
        status,
        headers,
        body: Bytes::new(),
    })
}

/// Builds the client's response from a complete reply.
fn reply_resolution(reply: Reply, is_head: bool, cached: bool) -> Resolution {
    let length = reply.content_length();
    let body = if is_head {
        Bytes::new()
    } else {
        reply.body.clone()
    };
    let bytes = body.len() as u64;
    let mut response = Response::new(ResolvedBody::Full(body));
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    if let Some(length) = length {
        response.headers_mut().insert(CONTENT_LENGTH, length);
    }
    Resolution {
        response,
        bytes: Some(bytes),
        streamed: false,
        cached,
    }
}

/// Builds the OCI error response for a failure.
fn error_resolution(error: &ResolveError, is_head: bool) -> Resolution {
    let (status, code) = error.status_and_code();
    let body = oci_error_body(code, &error.to_string());
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let reply = Reply {
        status,
        headers,
        body: Bytes::from(body),
    };
    reply_resolution(reply, is_head, false)
}

impl http_body::Body for ResolvedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            ResolvedBody::Full(data) if data.is_empty() => std::task::Poll::Ready(None),
            ResolvedBody::Full(data) => {
                let data = std::mem::take(data);
                std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
            ResolvedBody::Streamed(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResolvedBody::Full(data) => data.is_empty(),
            ResolvedBody::Streamed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResolvedBody::Full(data) => http_body::SizeHint::with_exact(data.len() as u64),
            ResolvedBody::Streamed(body) => body.size_hint(),
        }
    }
}
