//! The admin listener of `serve`: health, readiness and metrics on an
//! address of their own, apart from registry traffic.
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 once the policy is loaded and the registry listener
//!   accepts connections, and 503 from the moment shutdown starts, so that
//!   load balancers stop sending new requests while the requests in flight
//!   finish.
//! - `GET /metrics`: every metric in the Prometheus text exposition format
//!   0.0.4 ([`Metrics::render`]).
//!
//! Every other path gets 404, and `/v2/` requests are never redirected
//! here. `HEAD` works wherever `GET` does.
//!
//! ```
//! use axum::body::Body;
//! use http::{Request, StatusCode};
//! use registry_redirect_cli::admin::{router, Readiness};
//! use registry_redirect_tower::Metrics;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let readiness = Readiness::new();
//! let app = router(Metrics::new(), readiness.clone());
//! let ready = |app: axum::Router| async move {
//!     let request = Request::get("/readyz").body(Body::empty()).unwrap();
//!     app.oneshot(request).await.unwrap().status()
//! };
//! assert_eq!(ready(app.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
//! readiness.set_ready();
//! assert_eq!(ready(app.clone()).await, StatusCode::OK);
//! readiness.set_shutting_down();
//! assert_eq!(ready(app).await, StatusCode::SERVICE_UNAVAILABLE);
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use registry_redirect_tower::metrics::CONTENT_TYPE;
use registry_redirect_tower::Metrics;
use tokio::net::TcpListener;

/// The admin address when neither `--admin-listen` nor the file's
/// `admin_listen` sets one: loopback, so that metrics are not exposed to
/// the network unless an operator sets another address.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// The text that turns the admin listener off.
pub const OFF: &str = "off";

/// The admin listener's address, or none when it is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// No admin listener.
    Off,
    /// Listen on this address.
    On(SocketAddr),
}

/// An `--admin-listen` or `admin_listen` value that is neither an address
/// nor `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "\"{0}\" is not a socket address (expected IP:PORT such as 127.0.0.1:9090 or [::]:9090, \
     or off to turn the admin listener off)"
)]
pub struct AdminListenError(pub String);

impl FromStr for AdminListen {
    type Err = AdminListenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == OFF {
            return Ok(AdminListen::Off);
        }
        text.parse()
            .map(AdminListen::On)
            .map_err(|_| AdminListenError(text.to_owned()))
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminListen::Off => f.write_str(OFF),
            AdminListen::On(addr) => write!(f, "{addr}"),
        }
    }
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const SHUTTING_DOWN: u8 = 2;

/// Whether the server takes new requests: starting, ready, or shutting
/// down. Cheap to clone: clones share the state. Shutting down is final.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    state: Arc<AtomicU8>,
}

impl Readiness {
    /// Creates the state of a server that is starting, so not ready.
    pub fn new() -> Self {
        Readiness::default()
    }

    /// Marks the server ready, unless shutdown has started.
    pub fn set_ready(&self) {
        let _already_shutting_down =
            self.state
                .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Marks the server as shutting down: not ready from now on.
    pub fn set_shutting_down(&self) {
        self.state.store(SHUTTING_DOWN, Ordering::SeqCst);
    }

    /// Returns whether the server takes new requests.
    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::SeqCst) == READY
    }

    fn describe(&self) -> (StatusCode, &'static str) {
        match self.state.load(Ordering::SeqCst) {
            READY => (StatusCode::OK, "ready\n"),
            SHUTTING_DOWN => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: shutting down, finishing requests in flight\n",
            ),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting\n"),
        }
    }
}

/// The text of every response for a path the admin listener does not serve.
pub const NOT_FOUND_TEXT: &str =
    "not found: the admin listener serves /healthz, /readyz and /metrics\n";

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    readiness: Readiness,
}

/// Builds the admin application: `/healthz`, `/readyz` and `/metrics`.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, NOT_FOUND_TEXT) })
        .with_state(AdminState { metrics, readiness })
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    state.readiness.describe()
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
}

/// An admin listener address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("failed to listen on {addr} for the admin listener: {source} (choose another address with --admin-listen, or turn it off with --admin-listen off)")]
pub struct AdminBindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The error from the operating system.
    pub source: std::io::Error,
}

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `addr` and serves `app` there on a task of its own.
    ///
    /// # Errors
    ///
    /// [`AdminBindError`] when `addr` cannot be bound.
    pub async fn start(addr: SocketAddr, app: Router) -> Result<Self, AdminBindError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminBindError { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, async {
            let _sender_dropped = stopped.await;
        }));
        Ok(AdminServer { addr, stop, task })
    }

    /// Returns the address it listens on, with the port the system picked
    /// for port 0.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes the requests in flight and returns.
    pub async fn stop(self) {
        let _already_stopped = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "the admin listener's task ended abnormally");
        }
    }
}

/// Starts the admin listener at `listen`, or returns `None` when it is off.
/// `explicit` is true when the address comes from `--admin-listen` or the
/// file's `admin_listen`. A default address that cannot be bound (another
/// process, such as a second server on the host, has the port) is logged
/// with a warning and leaves the server without an admin listener.
///
/// # Errors
///
/// [`AdminBindError`] when an explicit address cannot be bound.
pub async fn start(
    listen: AdminListen,
    explicit: bool,
    app: Router,
) -> Result<Option<AdminServer>, AdminBindError> {
    let AdminListen::On(addr) = listen else {
        return Ok(None);
    };
    match AdminServer::start(addr, app).await {
        Ok(server) => Ok(Some(server)),
        Err(error) if !explicit => {
            tracing::warn!(
                %error,
                "serving without an admin listener, so /healthz, /readyz and /metrics are unavailable"
            );
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Serves `app` on `listener` until `stop` completes, then finishes the
/// requests in flight. Errors of single connections end only those
/// connections.
async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "the admin listener failed; /healthz, /readyz and /metrics are gone");
    }
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};
    use http::{Method, Request};
    use tower::ServiceExt;

    use super::*;

    async fn send(
        app: &Router,
        method: Method,
        path: &str,
    ) -> (StatusCode, Option<String>, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned());
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn admin_paths_and_statuses() {
        let readiness = Readiness::new();
        readiness.set_ready();
        let app = router(Metrics::new(), readiness);
        let cases = [
            (Method::GET, "/healthz", StatusCode::OK),
            (Method::HEAD, "/healthz", StatusCode::OK),
            (Method::GET, "/readyz", StatusCode::OK),
            (Method::GET, "/metrics", StatusCode::OK),
            (Method::GET, "/", StatusCode::NOT_FOUND),
            (Method::GET, "/v2/", StatusCode::NOT_FOUND),
            (
                Method::GET,
                "/v2/pause/manifests/3.10",
                StatusCode::NOT_FOUND,
            ),
            (Method::POST, "/metrics", StatusCode::METHOD_NOT_ALLOWED),
        ];
        for (method, path, expected) in cases {
            let (status, _, _) = send(&app, method.clone(), path).await;
            assert_eq!(status, expected, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn metrics_have_prometheus_content_type() {
        let app = router(Metrics::new(), Readiness::new());
        let (status, content_type, body) = send(&app, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let content_type = content_type.unwrap();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        assert!(
            body.contains("# TYPE registry_redirect_requests_total counter\n"),
            "{body}"
        );
    }

    #[test]
    fn shutting_down_is_final() {
        let readiness = Readiness::new();
        assert!(!readiness.is_ready());
        readiness.set_ready();
        assert!(readiness.is_ready());
        readiness.set_shutting_down();
        readiness.set_ready();
        assert!(!readiness.is_ready());
    }

    #[test]
    fn admin_listen_parses_address_or_off() {
        let cases = [
            ("off", Ok(AdminListen::Off)),
            ("127.0.0.1:9090", Ok(AdminListen::On(DEFAULT_ADMIN_LISTEN))),
            ("[::1]:0", Ok(AdminListen::On("[::1]:0".parse().unwrap()))),
            (
                "localhost:9090",
                Err(AdminListenError("localhost:9090".into())),
            ),
            ("OFF", Err(AdminListenError("OFF".into()))),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<AdminListen>(), expected, "{text}");
        }
    }
}
