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
use registry_redirect_core::{decide, Decision, Outcome, Policy, RequestView};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::handle::PolicyHandle;
use crate::select::{Checks, Selection};

/// The `tracing` target of access-log events.
pub const ACCESS_LOG_TARGET: &str = "registry_redirect::access";

/// Settings shared by the layer and every service it builds.
#[derive(Debug, Clone, Copy)]
struct Settings {
    access_log: bool,
    log_client_address: bool,
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
                log_client_address: false,
            },
            checks: None,
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
        self.checks = Some(checks);
        self
    }

    /// Returns the handle of the policy this layer serves.
    pub fn handle(&self) -> PolicyHandle {
        self.policy.clone()
    }

    /// Sets whether each `/v2` request emits an access-log event: a
    /// `tracing` event at INFO level with target [`ACCESS_LOG_TARGET`] and
    /// the fields `method`, `path`, `kind`, `outcome`, `rule`, `upstream`,
    /// `status` and `micros`, and `checks` for requests whose candidates
    /// were checked. On by default.
    pub fn access_log(mut self, enabled: bool) -> Self {
        self.settings.access_log = enabled;
        self
    }

    /// Sets whether access-log events carry the client address (field
    /// `client`). Off by default, so that logs hold no personal data
    /// unless an operator asks for it.
    pub fn log_client_address(mut self, enabled: bool) -> Self {
        self.settings.log_client_address = enabled;
        self
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
}

impl<S> RegistryRedirect<S> {
    /// Wraps `inner`, responding to `/v2` requests from the policy in `handle`.
    pub fn new(inner: S, handle: PolicyHandle) -> Self {
        RegistryRedirectLayer::with_handle(handle).layer(inner)
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
        let started = Instant::now();
        let policy = self.policy.load();
        let view = RequestView::from_request(&request, peer_address(&request));
        let decision = decide(&policy, &view);
        if matches!(decision.outcome, Outcome::NotRegistry) {
            return ResponseFuture::inner(self.inner.call(request));
        }
        if let (Some(checks), Outcome::Candidates { .. }) = (&self.checks, &decision.outcome) {
            let checks = checks.clone();
            drop(decision);
            let (parts, _body) = request.into_parts();
            let checked = respond_after_checks(
                checks,
                Guard::into_inner(policy),
                parts,
                self.settings,
                started,
            );
            return ResponseFuture::checked(Box::pin(checked));
        }

        if self.settings.access_log {
            log_decision(
                &request,
                &decision,
                started,
                self.settings.log_client_address,
                None,
            );
        }
        let response = decision
            .into_response()
            .map(|response| response.map(bytes::Bytes::from));
        ResponseFuture::ready(response)
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
    settings: Settings,
    started: Instant,
) -> Response<bytes::Bytes> {
    let request = Request::from_parts(parts, ());
    let view = RequestView::from_request(&request, peer_address(&request));
    let decision = decide(&policy, &view);
    let selection = checks.select(decision.candidates()).await;

    if settings.access_log {
        log_decision(
            &request,
            &decision,
            started,
            settings.log_client_address,
            Some(&selection),
        );
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

/// Emits the access-log event. `selection` is the result of checking the
/// candidates, if they were checked; it then names the upstream.
fn log_decision<B>(
    request: &Request<B>,
    decision: &Decision<'_>,
    started: Instant,
    with_client: bool,
    selection: Option<&Selection>,
) {
    let route = decision.route();
    let rule = route
        .and_then(|route| route.rule)
        .map_or("", |rule| rule.name());
    let chosen = selection.and_then(|selection| decision.candidates().get(selection.chosen));
    // The upstream the client is sent to, which can differ from the
    // route's when that one has no mirror for the client.
    let upstream = match chosen {
        Some(candidate) => candidate.upstream.name(),
        None => match decision.target() {
            Some((target, _)) => target.name(),
            None => route.map_or("", |route| route.upstream.name()),
        },
    };
    let checks = selection.map(tracing::field::display);

    let kind = decision.kind.map_or("", |kind| kind.as_str());
    let status = decision.status().map_or(0, |status| status.as_u16());
    let micros = started.elapsed().as_micros() as u64;
    // Debug formatting escapes control characters, so a hostile path cannot
    // forge log lines.
    let path = request.uri().path();

    // `None` fields are left out of the event, so the client address is
    // logged only when enabled.
    let client = with_client
        .then(|| decision.client.addr.map(tracing::field::display))
        .flatten();
    let client_source = with_client.then(|| decision.client.source.as_str());
    tracing::info!(
        target: ACCESS_LOG_TARGET,
        method = %request.method(),
        path = ?path,
        kind,
        outcome = decision.outcome_name(),
        rule,
        upstream,
        status,
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

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F> {
        Inner { #[pin] future: F },
        // `None` once returned.
        Ready { response: Option<Response<bytes::Bytes>> },
        // `None` once returned.
        Checked { future: Option<CheckedFuture> },
    }
}

impl<F> ResponseFuture<F> {
    fn inner(future: F) -> Self {
        ResponseFuture {
            kind: FutureKind::Inner { future },
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
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(ResponseBody::inner))),
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
        }
    }
}

/// An empty 500, for states that should not happen.
fn internal_error() -> Response<bytes::Bytes> {
    let mut response = Response::new(bytes::Bytes::new());
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}
