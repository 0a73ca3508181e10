//! [`RegistryRedirectLayer`] and the [`RegistryRedirect`] service it builds.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use std::sync::Arc;

use arc_swap::Guard;
use http::{request, Request, Response};
use pin_project_lite::pin_project;
use registry_redirect_core::{decide, Decision, Outcome, Policy, Rejection, RequestView, Upstream};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::client_log::{ClientAddressLogging, LoggedAddress};
use crate::handle::PolicyHandle;
use crate::metrics::Metrics;
use crate::resolve::{Resolution, ResolveRequest, ResolvedBody, Resolver};
use crate::select::{Checks, Selection};

/// The `tracing` target of access-log events.
pub const ACCESS_LOG_TARGET: &str = "registry_redirect::access";

/// Settings shared by the layer and every service it builds.
#[derive(Debug, Clone, Copy)]
struct Settings {
    access_log: bool,
    client_addresses: ClientAddressLogging,
    require_host: bool,
}

/// A [`Layer`] that responds to OCI distribution requests (`/v2` and below)
/// from the policy and passes every other request to the inner service untouched.
///
/// The client address is the peer address from axum's
/// `ConnectInfo<SocketAddr>` request extension (feature `axum`, on by
/// default) or from a plain [`SocketAddr`] extension; the policy's trusted
/// proxies may then replace it with a forwarded address. Without either
/// extension the client address is unknown and rules that name client
/// ranges do not match.
///
/// ```
/// use axum::{routing::get, Router};
/// use registry_redirect_core::{Policy, PolicySpec, UpstreamSpec};
/// use registry_redirect_tower::RegistryRedirectLayer;
///
/// let mut spec = PolicySpec::new("k8s");
/// spec.upstreams.insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
/// let policy = Policy::compile(&spec).unwrap();
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(RegistryRedirectLayer::new(policy));
/// ```
///
/// Decisions with several candidates (a verified blob mirror, a health
/// checked upstream) redirect to the first candidate unless the layer has
/// [`Checks`]; see [`RegistryRedirectLayer::with_checks`].
#[derive(Debug, Clone)]
pub struct RegistryRedirectLayer {
    policy: PolicyHandle,
    settings: Settings,
    checks: Option<Checks>,
    metrics: Option<Metrics>,
    resolver: Option<Resolver>,
}

impl RegistryRedirectLayer {
    /// Creates a layer serving a fixed policy. Use [`RegistryRedirectLayer::with_handle`]
    /// to replace the policy at runtime.
    pub fn new(policy: Policy) -> Self {
        Self::with_handle(PolicyHandle::new(policy))
    }

    /// Creates a layer serving the policy that `handle` contains at each request.
    pub fn with_handle(handle: PolicyHandle) -> Self {
        RegistryRedirectLayer {
            policy: handle,
            settings: Settings {
                access_log: true,
                client_addresses: ClientAddressLogging::Off,
                require_host: false,
            },
            checks: None,
            metrics: None,
            resolver: None,
        }
    }

    /// Checks candidates before redirecting: for a decision with several
    /// candidates, the response is a redirect to the one that
    /// [`Checks::select`] chooses. The response carries the
    /// [`Selection`] as an extension, and the access-log event gets the
    /// field `checks` (its `Display` form) and the chosen candidate's
    /// `upstream`. Every other request gets the same response as
    /// without checks, at once.
    pub fn with_checks(mut self, checks: Checks) -> Self {
        if let Some(metrics) = &self.metrics {
            metrics.observe_checks(&checks);
        }
        self.checks = Some(checks);
        self
    }

    /// Records every request in `metrics`: requests outside `/v2` by the
    /// inner service's status code, the others by decision, rule, upstream
    /// and status code, with the decision's latency. With
    /// [`RegistryRedirectLayer::with_checks`], the metrics also report the
    /// blob-check cache and mirror health. Recording takes no lock and
    /// allocates nothing, except once after each policy change.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        if let Some(checks) = &self.checks {
            metrics.observe_checks(checks);
        }
        self.metrics = Some(metrics);
        self
    }

    /// Fetches requests for upstreams with `auth = "resolve"` with
    /// `resolver`: documents pass through with a token, blobs are
    /// redirected to the storage URL the upstream names (see
    /// [`crate::resolve`]). The access-log event of such a request has the
    /// upstream's `status`, and `bytes`, the body bytes sent to the client.
    /// Without a resolver these requests get 503 with an OCI error.
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Returns the handle of the policy this layer serves.
    pub fn handle(&self) -> PolicyHandle {
        self.policy.clone()
    }

    /// Sets whether each `/v2` request emits an access-log event: a
    /// `tracing` event at INFO level with target [`ACCESS_LOG_TARGET`] and
    /// the fields `method`, `path`, `kind`, `outcome`, `rule`, `upstream`,
    /// `status` and `micros`, `error` (the message of the OCI error body)
    /// for rejected requests, and `checks` for requests whose candidates
    /// were checked. On by default.
    pub fn access_log(mut self, enabled: bool) -> Self {
        self.settings.access_log = enabled;
        self
    }

    /// Sets whether access-log events carry the whole client address
    /// (field `client`). Off by default, so that logs hold no personal data
    /// unless an operator asks for it. Same as
    /// [`RegistryRedirectLayer::client_address_logging`] with
    /// [`ClientAddressLogging::Full`] or [`ClientAddressLogging::Off`].
    pub fn log_client_address(self, enabled: bool) -> Self {
        let mode = if enabled {
            ClientAddressLogging::Full
        } else {
            ClientAddressLogging::Off
        };
        self.client_address_logging(mode)
    }

    /// Sets whether access-log events carry the client address, whole or
    /// truncated to its network (field `client`), and its source (field
    /// `client_source`). Off by default.
    pub fn client_address_logging(mut self, mode: ClientAddressLogging) -> Self {
        self.settings.client_addresses = mode;
        self
    }

    /// Sets whether an HTTP/1.1 `/v2` request without a host (no `Host`
    /// header and no authority in its target) gets 400 with an OCI error,
    /// as RFC 9112 (section 3.2) requires of a server. Off by default,
    /// because requests built in process, as in tests, have no `Host`.
    /// Turn it on when the layer serves requests read from the network.
    pub fn require_host(mut self, enabled: bool) -> Self {
        self.settings.require_host = enabled;
        self
    }

    /// Returns whether HTTP/1.1 requests without a host get 400 (see
    /// [`RegistryRedirectLayer::require_host`]).
    pub fn requires_host(&self) -> bool {
        self.settings.require_host
    }
}

impl<S> Layer<S> for RegistryRedirectLayer {
    type Service = RegistryRedirect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RegistryRedirect {
            inner,
            policy: self.policy.clone(),
            settings: self.settings,
            checks: self.checks.clone(),
            metrics: self.metrics.clone(),
            resolver: self.resolver.clone(),
        }
    }
}

/// The service built by [`RegistryRedirectLayer`].
#[derive(Debug, Clone)]
pub struct RegistryRedirect<S> {
    inner: S,
    policy: PolicyHandle,
    settings: Settings,
    checks: Option<Checks>,
    metrics: Option<Metrics>,
    resolver: Option<Resolver>,
}

impl<S> RegistryRedirect<S> {
    /// Wraps `inner`, responding to `/v2` requests from the policy in `handle`.
    pub fn new(inner: S, handle: PolicyHandle) -> Self {
        RegistryRedirectLayer::with_handle(handle).layer(inner)
    }

    /// Handles `request` as [`Service::call`] does, from the client at
    /// `peer` instead of the peer address in the request's extensions. A
    /// server that has the peer of each connection calls this and saves
    /// inserting an extension, which allocates, into every request. As with
    /// `call`, the inner service must be ready (`poll_ready`).
    pub fn call_with_peer<ReqBody, ResBody>(
        &mut self,
        request: Request<ReqBody>,
        peer: Option<IpAddr>,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    {
        match self.respond(request, peer) {
            Ok(response) => response,
            Err(request) => ResponseFuture::inner(self.inner.call(request), self.metrics.clone()),
        }
    }

    /// Handles `request` as [`RegistryRedirect::call_with_peer`] does, but
    /// through a shared reference: a request outside `/v2` goes to a clone
    /// of the inner service. A hyper service, whose `call` takes `&self`,
    /// saves cloning `self` for each request, which costs an atomic
    /// increment and decrement for each of the policy, metrics, checks and
    /// resolver handles. A clone of the inner service must be ready
    /// without `poll_ready`.
    ///
    /// ```
    /// use std::convert::Infallible;
    ///
    /// use http::{Request, Response, StatusCode};
    /// use registry_redirect_core::{Policy, PolicySpec, UpstreamSpec};
    /// use registry_redirect_tower::{PolicyHandle, RegistryRedirect};
    ///
    /// let mut spec = PolicySpec::new("k8s");
    /// spec.upstreams.insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
    /// let handle = PolicyHandle::new(Policy::compile(&spec).unwrap());
    /// let inner = tower::service_fn(|_: Request<String>| async {
    ///     Ok::<_, Infallible>(Response::new(String::new()))
    /// });
    /// let service = RegistryRedirect::new(inner, handle);
    ///
    /// let request = Request::get("/v2/pause/manifests/3.10").body(String::new()).unwrap();
    /// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let response = runtime
    ///     .block_on(service.call_shared(request, Some("203.0.113.7".parse().unwrap())))
    ///     .unwrap();
    /// assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    /// ```
    pub fn call_shared<ReqBody, ResBody>(
        &self,
        request: Request<ReqBody>,
        peer: Option<IpAddr>,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    {
        match self.respond(request, peer) {
            Ok(response) => response,
            Err(request) => {
                ResponseFuture::inner(self.inner.clone().call(request), self.metrics.clone())
            }
        }
    }

    /// Responds to a `/v2` request, or returns any other request for the
    /// inner service.
    // Boxing the returned request would allocate for every request
    // outside `/v2`, and it is moved only once.
    #[allow(clippy::result_large_err)]
    fn respond<ReqBody, F>(
        &self,
        request: Request<ReqBody>,
        peer: Option<IpAddr>,
    ) -> Result<ResponseFuture<F>, Request<ReqBody>> {
        let started = Instant::now();
        let policy = self.policy.load();
        let view = RequestView::from_request(&request, peer);
        let mut decision = decide(&policy, &view);
        if matches!(decision.outcome, Outcome::NotRegistry) {
            if let Some(metrics) = &self.metrics {
                metrics.record_not_registry(started);
            }
            return Err(request);
        }
        if self.settings.require_host && view.lacks_host() {
            decision.outcome = Outcome::Reject(Rejection::MISSING_HOST);
        }
        if let (Some(checks), Outcome::Candidates { .. }) = (&self.checks, &decision.outcome) {
            let checks = checks.clone();
            drop(decision);
            let (parts, _body) = request.into_parts();
            let checked = respond_after_checks(
                checks,
                Guard::into_inner(policy),
                parts,
                peer,
                self.settings,
                self.metrics
                    .clone()
                    .map(|metrics| (metrics, self.policy.clone())),
                started,
            );
            return Ok(ResponseFuture::checked(Box::pin(checked)));
        }
        if let Some(resolver) = &self.resolver {
            if let Some(resolve) = ResolveRequest::from_decision(&decision, request.headers()) {
                let entry = AccessEntry::of(&request, &decision, self.settings.client_addresses);
                let resolved = respond_resolved(
                    resolver.clone(),
                    resolve,
                    entry,
                    self.settings.access_log,
                    self.metrics.clone(),
                    started,
                );
                return Ok(ResponseFuture::resolved(Box::pin(resolved)));
            }
        }

        if self.settings.access_log {
            log_decision(
                &request,
                &decision,
                started,
                self.settings.client_addresses,
                None,
            );
        }
        if let Some(metrics) = &self.metrics {
            let upstream = chosen_upstream(&decision, None);
            metrics.record_decision(&self.policy, &policy, &decision, upstream, started);
        }
        let response = decision
            .into_response()
            .map(|response| response.map(bytes::Bytes::from));
        Ok(ResponseFuture::ready(response))
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RegistryRedirect<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let peer = peer_address(&request);
        self.call_with_peer(request, peer)
    }
}

/// Decides again on the request's parts under the same policy, checks the
/// candidates, and redirects to the one chosen. The future must own the
/// policy, and the first decision borrowed it, so the decision is made
/// again. Because `decide` is a pure function, the candidates are the same.
async fn respond_after_checks(
    checks: Checks,
    policy: Arc<Policy>,
    parts: request::Parts,
    peer: Option<IpAddr>,
    settings: Settings,
    metrics: Option<(Metrics, PolicyHandle)>,
    started: Instant,
) -> Response<bytes::Bytes> {
    let request = Request::from_parts(parts, ());
    let view = RequestView::from_request(&request, peer);
    let decision = decide(&policy, &view);
    let selection = checks.select(decision.candidates()).await;

    if settings.access_log {
        log_decision(
            &request,
            &decision,
            started,
            settings.client_addresses,
            Some(&selection),
        );
    }
    if let Some((metrics, handle)) = &metrics {
        let upstream = chosen_upstream(&decision, Some(&selection));
        metrics.record_decision(handle, &policy, &decision, upstream, started);
    }
    let Some(response) = decision.into_response_for_candidate(selection.chosen) else {
        // Only requests outside `/v2` have no response, and they never
        // have candidates.
        return internal_error();
    };
    let mut response = response.map(bytes::Bytes::from);
    response.extensions_mut().insert(selection);
    response
}

/// Fetches a resolve-mode request from its upstream, and logs and counts
/// it with the upstream's status and the body bytes sent.
async fn respond_resolved(
    resolver: Resolver,
    request: ResolveRequest,
    entry: AccessEntry,
    access_log: bool,
    metrics: Option<Metrics>,
    started: Instant,
) -> Response<ResolvedBody> {
    let Resolution {
        response,
        bytes,
        streamed,
        cached,
    } = resolver.resolve(&request).await;
    if let Some(metrics) = &metrics {
        metrics.record_resolved(&entry.rule, &request.upstream, response.status(), started);
    }
    if access_log {
        let micros = started.elapsed().as_micros() as u64;
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            method = %entry.method,
            path = entry.path.as_str(),
            kind = entry.kind,
            outcome = "resolve",
            // As strings, like the other access-log events, so that the
            // text format quotes them the same way.
            rule = entry.rule.as_str(),
            upstream = request.upstream.as_str(),
            status = response.status().as_u16(),
            micros,
            bytes,
            streamed,
            cached,
            client = entry.client.map(tracing::field::display),
            client_source = entry.client_source,
        );
    }
    response
}

/// The fields of an access-log event that come from the request and its
/// decision, owned so that they outlive both.
struct AccessEntry {
    method: http::Method,
    path: String,
    kind: &'static str,
    rule: String,
    client: Option<LoggedAddress>,
    client_source: Option<&'static str>,
}

impl AccessEntry {
    fn of<B>(
        request: &Request<B>,
        decision: &Decision<'_>,
        client_addresses: ClientAddressLogging,
    ) -> Self {
        let with_client = client_addresses != ClientAddressLogging::Off;
        let rule = decision
            .route()
            .and_then(|route| route.rule)
            .map_or("", |rule| rule.name());
        AccessEntry {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            kind: decision.kind.map_or("", |kind| kind.as_str()),
            rule: rule.to_owned(),
            client: decision
                .client
                .addr
                .and_then(|addr| client_addresses.apply(addr)),
            client_source: with_client.then(|| decision.client.source.as_str()),
        }
    }
}

/// Returns the peer address from axum's `ConnectInfo<SocketAddr>` or a `SocketAddr` extension.
fn peer_address<B>(request: &Request<B>) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    request.extensions().get::<SocketAddr>().map(SocketAddr::ip)
}

/// Returns the upstream the client is sent to: the candidate chosen by
/// the checks, else the redirect's target, which can differ from the
/// route's upstream when that one has no mirror for the client, else the
/// route's upstream.
fn chosen_upstream<'p>(
    decision: &Decision<'p>,
    selection: Option<&Selection>,
) -> Option<&'p Upstream> {
    let chosen = selection.and_then(|selection| decision.candidates().get(selection.chosen));
    match chosen {
        Some(candidate) => Some(candidate.upstream),
        None => match decision.target() {
            Some((target, _)) => Some(target),
            None => decision.route().map(|route| route.upstream),
        },
    }
}

/// Emits the access-log event. `selection` is the result of checking the
/// candidates, if they were checked; it then names the upstream.
fn log_decision<B>(
    request: &Request<B>,
    decision: &Decision<'_>,
    started: Instant,
    client_addresses: ClientAddressLogging,
    selection: Option<&Selection>,
) {
    let rule = decision
        .route()
        .and_then(|route| route.rule)
        .map_or("", |rule| rule.name());
    let upstream = chosen_upstream(decision, selection).map_or("", Upstream::name);
    let checks = selection.map(tracing::field::display);

    let kind = decision.kind.map_or("", |kind| kind.as_str());
    let status = match decision.outcome {
        // Without a resolver the core's response is 503.
        Outcome::Resolve { .. } => 503,
        _ => decision.status().map_or(0, |status| status.as_u16()),
    };
    // The rejection's message, so that operators can tell rejections with
    // the same status apart.
    let error = match &decision.outcome {
        Outcome::Reject(rejection) => Some(rejection.message),
        _ => None,
    };
    let micros = started.elapsed().as_micros() as u64;
    // Recorded as a string: the text format writes it with Debug
    // formatting, which escapes control characters so that a hostile path
    // cannot forge log lines, and the JSON format writes a JSON string.
    let path = request.uri().path();

    // `None` fields are left out of the event, so the client address is
    // logged only when enabled.
    let with_client = client_addresses != ClientAddressLogging::Off;
    let client = decision
        .client
        .addr
        .and_then(|addr| client_addresses.apply(addr))
        .map(tracing::field::display);
    let client_source = with_client.then(|| decision.client.source.as_str());
    tracing::info!(
        target: ACCESS_LOG_TARGET,
        method = %request.method(),
        path,
        kind,
        outcome = decision.outcome_name(),
        rule,
        upstream,
        status,
        error,
        micros,
        checks,
        client,
        client_source,
    );
}

pin_project! {
    /// The future of [`RegistryRedirect`]: the inner service's response, or
    /// one the layer already wrote.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: FutureKind<F>,
    }
}

/// The future of a response written after candidate checks.
type CheckedFuture = Pin<Box<dyn Future<Output = Response<bytes::Bytes>> + Send>>;

/// The future of a resolve-mode response.
type ResolvedFuture = Pin<Box<dyn Future<Output = Response<ResolvedBody>> + Send>>;

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F> {
        // `metrics` counts the inner response's status.
        Inner { #[pin] future: F, metrics: Option<Metrics> },
        // `None` once returned.
        Ready { response: Option<Response<bytes::Bytes>> },
        // `None` once returned.
        Checked { future: Option<CheckedFuture> },
        // `None` once returned.
        Resolved { future: Option<ResolvedFuture> },
    }
}

impl<F> ResponseFuture<F> {
    fn inner(future: F, metrics: Option<Metrics>) -> Self {
        ResponseFuture {
            kind: FutureKind::Inner { future, metrics },
        }
    }

    fn ready(response: Option<Response<bytes::Bytes>>) -> Self {
        ResponseFuture {
            kind: FutureKind::Ready { response },
        }
    }

    fn checked(future: CheckedFuture) -> Self {
        ResponseFuture {
            kind: FutureKind::Checked {
                future: Some(future),
            },
        }
    }

    fn resolved(future: ResolvedFuture) -> Self {
        ResponseFuture {
            kind: FutureKind::Resolved {
                future: Some(future),
            },
        }
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Inner { future, metrics } => {
                let result = std::task::ready!(future.poll(cx));
                if let (Ok(response), Some(metrics)) = (&result, metrics.as_ref()) {
                    metrics.record_inner_response(response.status());
                }
                Poll::Ready(result.map(|response| response.map(ResponseBody::inner)))
            }
            FutureKindProj::Ready { response } => {
                match response.take() {
                    Some(response) => Poll::Ready(Ok(response.map(ResponseBody::full))),
                    // Polled again after completion, which breaks the `Future`
                    // contract: return an empty 500 rather than panic.
                    None => Poll::Ready(Ok(internal_error().map(ResponseBody::full))),
                }
            }
            FutureKindProj::Checked { future } => {
                let Some(pending) = future.as_mut() else {
                    return Poll::Ready(Ok(internal_error().map(ResponseBody::full)));
                };
                let response = std::task::ready!(pending.as_mut().poll(cx));
                *future = None;
                Poll::Ready(Ok(response.map(ResponseBody::full)))
            }
            FutureKindProj::Resolved { future } => {
                let Some(pending) = future.as_mut() else {
                    return Poll::Ready(Ok(internal_error().map(ResponseBody::full)));
                };
                let response = std::task::ready!(pending.as_mut().poll(cx));
                *future = None;
                Poll::Ready(Ok(response.map(ResponseBody::resolved)))
            }
        }
    }
}

/// An empty 500, for states that should not happen.
fn internal_error() -> Response<bytes::Bytes> {
    let mut response = Response::new(bytes::Bytes::new());
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}
