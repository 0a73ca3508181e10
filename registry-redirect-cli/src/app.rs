//! The service that `serve` runs on each connection: the
//! [`RegistryRedirectLayer`] over the server's own responses, called by
//! hyper directly.
//!
//! The layer responds to every request under `/v2`. [`OwnRoutes`] responds
//! to the rest: `GET /` and `HEAD /` with a line that names the program,
//! other methods on `/` with 405, and every other path with 404. When the
//! layer requires a host, an HTTP/1.1 request without one gets 400 on
//! every path.
//!
//! No router and no boxed body sit between hyper and the layer, because
//! each costs time or an allocation on every request. For the same reason
//! the peer address goes to the layer as an argument, not as a request
//! extension.
//!
//! ```
//! use http::{Request, StatusCode};
//! use registry_redirect_cli::app::app;
//! use registry_redirect_cli::config::Config;
//! use registry_redirect_tower::RegistryRedirectLayer;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let config = Config::builtin().unwrap();
//! let service = app(RegistryRedirectLayer::new(config.policy).access_log(false));
//! let response = service
//!     .oneshot(Request::get("/v2/pause/manifests/3.10").body(()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
//! assert_eq!(response.headers()["location"], "https://registry.k8s.io/v2/pause/manifests/3.10");
//! # });
//! ```

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use registry_redirect_core::RequestView;
use registry_redirect_tower::{
    RegistryRedirect, RegistryRedirectLayer, ResponseBody, ResponseFuture,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::activity::{Activity, RequestGuard};

/// The text of `GET /`.
pub const ROOT_TEXT: &str = "registry-redirect: an OCI registry redirector. \
    Requests under /v2/ are redirected to the registry that the policy picks.\n";

/// The text of every response for a path outside `/v2` other than `/`.
pub const NOT_FOUND_TEXT: &str =
    "not found: this server answers GET / and the OCI distribution API under /v2/\n";

/// The text of the 400 for an HTTP/1.1 request without a host, outside `/v2`.
pub const MISSING_HOST_TEXT: &str =
    "bad request: the HTTP/1.1 request has no Host header; send the server's host name in Host\n";

static TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
static GET_HEAD: HeaderValue = HeaderValue::from_static("GET,HEAD");

/// The application: the layer over [`OwnRoutes`].
pub type App = RegistryRedirect<OwnRoutes>;

/// The body of every response of [`App`].
pub type AppBody = ResponseBody<Full<Bytes>>;

/// Builds the application: `layer` handles `/v2` and below, and
/// [`OwnRoutes`] the rest, requiring a host when the layer does.
pub fn app(layer: RegistryRedirectLayer) -> App {
    let own_routes = OwnRoutes {
        require_host: layer.requires_host(),
    };
    layer.layer(own_routes)
}

/// The server's responses to requests outside `/v2`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnRoutes {
    /// Whether an HTTP/1.1 request without a host gets 400.
    pub require_host: bool,
}

impl<B> Service<Request<B>> for OwnRoutes {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.require_host && RequestView::from_request(&request, None).lacks_host() {
            return ready(Ok(text_response(
                StatusCode::BAD_REQUEST,
                MISSING_HOST_TEXT,
                request.method() == Method::HEAD,
            )));
        }
        ready(Ok(own_response(request.method(), request.uri().path())))
    }
}

/// Builds the response to `method` on `path`, a path outside `/v2`.
fn own_response(method: &Method, path: &str) -> Response<Full<Bytes>> {
    if path != "/" {
        return text_response(
            StatusCode::NOT_FOUND,
            NOT_FOUND_TEXT,
            method == Method::HEAD,
        );
    }
    if method == Method::GET || method == Method::HEAD {
        return text_response(StatusCode::OK, ROOT_TEXT, method == Method::HEAD);
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response.headers_mut().insert(ALLOW, GET_HEAD.clone());
    response
}

/// Builds a plain-text response. For `HEAD`, it has no body and the
/// `Content-Length` of the text.
fn text_response(status: StatusCode, text: &'static str, is_head: bool) -> Response<Full<Bytes>> {
    let body = if is_head { "" } else { text };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, TEXT_PLAIN.clone());
    if is_head {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    }
    response
}

/// [`App`] as a hyper service for the requests of one connection, whose
/// client is `client`. Each request counts as in flight in the
/// connection's [`Activity`] until its response future is dropped.
#[derive(Debug, Clone)]
pub struct ConnectionService {
    app: App,
    client: IpAddr,
    activity: Activity,
}

impl ConnectionService {
    /// Serves the requests of a connection from `client` with `app`.
    pub fn new(app: App, client: IpAddr, activity: Activity) -> Self {
        ConnectionService {
            app,
            client,
            activity,
        }
    }
}

/// The layer's response future for the responses of [`App`].
type AppFuture = ResponseFuture<Ready<Result<Response<Full<Bytes>>, Infallible>>>;

impl<B> hyper::service::Service<Request<B>> for ConnectionService {
    type Response = Response<AppBody>;
    type Error = Infallible;
    type Future = InFlight;

    fn call(&self, request: Request<B>) -> Self::Future {
        let request_guard = self.activity.request_started();
        // `OwnRoutes` is always ready, so no `poll_ready` is needed.
        let response = self.app.call_shared(request, Some(self.client));
        InFlight {
            response,
            _request_guard: request_guard,
        }
    }
}

/// The response future of [`ConnectionService`], which keeps the request's
/// [`RequestGuard`] until hyper drops it.
pub struct InFlight {
    response: AppFuture,
    _request_guard: RequestGuard,
}

impl Future for InFlight {
    type Output = Result<Response<AppBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.response).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use registry_redirect_tower::RegistryRedirectLayer;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;

    struct Sent {
        status: StatusCode,
        headers: http::HeaderMap,
        body: String,
    }

    async fn send(method: Method, path: &str) -> Sent {
        let config = Config::builtin().unwrap();
        let service = app(RegistryRedirectLayer::new(config.policy).access_log(false));
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Sent {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    #[tokio::test]
    async fn root_says_what_this_is() {
        let sent = send(Method::GET, "/").await;
        assert_eq!(sent.status, StatusCode::OK);
        assert_eq!(sent.body, ROOT_TEXT);
        assert_eq!(sent.headers[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    #[tokio::test]
    async fn root_head_has_length_only() {
        let sent = send(Method::HEAD, "/").await;
        assert_eq!(sent.status, StatusCode::OK);
        assert_eq!(sent.body, "");
        assert_eq!(
            sent.headers[CONTENT_LENGTH],
            ROOT_TEXT.len().to_string().as_str()
        );
    }

    #[tokio::test]
    async fn root_other_methods_not_allowed() {
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let sent = send(method.clone(), "/").await;
            assert_eq!(sent.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(sent.headers[ALLOW], "GET,HEAD", "{method}");
            assert_eq!(sent.body, "", "{method}");
        }
    }

    #[tokio::test]
    async fn other_paths_are_not_found() {
        for path in ["/healthz", "/v3/", "/v2x"] {
            for method in [Method::GET, Method::POST] {
                let sent = send(method.clone(), path).await;
                assert_eq!(sent.status, StatusCode::NOT_FOUND, "{method} {path}");
                assert_eq!(sent.body, NOT_FOUND_TEXT, "{method} {path}");
            }
        }
    }

    #[tokio::test]
    async fn own_routes_require_host_when_layer_does() {
        let config = Config::builtin().unwrap();
        let layer = RegistryRedirectLayer::new(config.policy)
            .access_log(false)
            .require_host(true);
        let service = app(layer);
        let send = |host: Option<&str>| {
            let mut builder = Request::get("/");
            if let Some(host) = host {
                builder = builder.header("host", host);
            }
            service.clone().oneshot(builder.body(()).unwrap())
        };

        let response = send(None).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, MISSING_HOST_TEXT);

        let response = send(Some("registry.example.test")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn v2_is_answered_by_layer() {
        let sent = send(Method::GET, "/v2/").await;
        assert_eq!(sent.status, StatusCode::OK);
        assert_eq!(sent.body, "{}");
    }

    #[tokio::test]
    async fn connection_service_passes_peer() {
        use hyper::service::Service as _;

        let text = "default_upstream = \"k8s\"\n\
                    [upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n\
                    [upstreams.lab]\nurl = \"https://lab.example\"\n\
                    [[rules]]\nname = \"lab\"\nclients = [\"192.168.0.0/24\"]\nupstream = \"lab\"\n";
        let config = Config::parse("config.toml", text).unwrap();
        let activity = Activity::new(
            tokio::time::Instant::now(),
            Duration::from_secs(10),
            Duration::from_secs(60),
            true,
        );
        let service = ConnectionService::new(
            app(RegistryRedirectLayer::new(config.policy).access_log(false)),
            "192.168.0.7".parse().unwrap(),
            activity,
        );
        let request = Request::get("/v2/library/alpine/manifests/3")
            .body(())
            .unwrap();
        let response = service.call(request).await.unwrap();
        let location = response.headers()["location"].to_str().unwrap();
        assert_eq!(
            location,
            "https://lab.example/v2/library/alpine/manifests/3"
        );
    }
}
