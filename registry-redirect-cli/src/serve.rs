//! `serve`: the HTTP server. The [`RegistryRedirectLayer`] handles every
//! request under `/v2`. The server itself responds to `GET /` with a line
//! that names the program, and to every other path with 404.
//!
//! When the policy has an upstream with `verify_blobs` or a `health_check`,
//! [`start_checks`] creates the tower crate's [`Checks`] and starts the
//! health probes, so that the layer checks candidates before redirecting.
//!
//! SIGINT and SIGTERM stop the server gracefully: it stops accepting
//! connections, finishes the requests in flight, and exits. Requests still
//! running after the shutdown timeout are dropped.
//!
//! NOTE: a connection whose first bytes the server has not read when the
//! signal arrives is closed without a response, because axum 0.8 cancels
//! connections whose HTTP version hyper-util has not yet detected. The
//! client sees a closed connection and may retry.
//!
//! ```
//! use axum::body::Body;
//! use http::{Request, StatusCode};
//! use registry_redirect_cli::config::Config;
//! use registry_redirect_cli::serve::router;
//! use registry_redirect_tower::RegistryRedirectLayer;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let config = Config::builtin().unwrap();
//! let app = router(RegistryRedirectLayer::new(config.policy).access_log(false));
//! let response = app
//!     .oneshot(Request::get("/v2/pause/manifests/3.10").body(Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
//! assert_eq!(response.headers()["location"], "https://registry.k8s.io/v2/pause/manifests/3.10");
//! # });
//! ```

use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use registry_redirect_core::Policy;
use registry_redirect_tower::client::ClientError;
use registry_redirect_tower::health::{probe_targets, HealthError};
use registry_redirect_tower::{CheckSettings, Checks, RegistryRedirectLayer};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;

/// The text of `GET /`.
pub const ROOT_TEXT: &str = "registry-redirect: an OCI registry redirector. \
    Requests under /v2/ are redirected to the registry that the policy picks.\n";

/// The text of every response for a path outside `/v2` other than `/`.
pub const NOT_FOUND_TEXT: &str =
    "not found: this server answers GET / and the OCI distribution API under /v2/\n";

/// Builds the application: `layer` handles `/v2` and below, and the server's
/// own routes handle the rest.
pub fn router(layer: RegistryRedirectLayer) -> Router {
    Router::new()
        .route("/", get(|| async { ROOT_TEXT }))
        .fallback(|| async { (StatusCode::NOT_FOUND, NOT_FOUND_TEXT) })
        .layer(layer)
}

/// An error that kept the server from starting or stopped it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the listening socket failed.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The error from the operating system.
        source: io::Error,
    },
    /// A signal handler could not be installed.
    #[error("failed to install the {signal} handler: {source}")]
    Signal {
        /// `SIGINT` or `SIGTERM`.
        signal: &'static str,
        /// The error from the operating system.
        source: io::Error,
    },
    /// The HTTP client of blob checks and health probes could not be built.
    #[error("failed to create the HTTP client for blob checks and health probes: {0}")]
    CheckClient(ClientError),
    /// The health probes could not start.
    #[error("failed to start the health probes: {0}")]
    HealthProbes(HealthError),
    /// The server failed while running.
    #[error("server failed: {0}")]
    Serve(io::Error),
}

/// Returns whether any upstream of `policy` needs runtime checks: blob
/// checks (`verify_blobs`) or health probes (`health_check`).
pub fn needs_checks(policy: &Policy) -> bool {
    policy
        .upstreams()
        .iter()
        .any(|upstream| upstream.verify_blobs() || upstream.health_check().is_some())
}

/// Creates the blob checks and starts the health probes of `policy`, or
/// returns `None` when no upstream needs them. Logs, at INFO, which
/// upstreams are verified and which mirrors are probed. Needs a Tokio
/// runtime, which runs the probes until [`Checks::health`]'s `stop` or the
/// runtime's end.
pub fn start_checks(
    policy: &Policy,
    settings: CheckSettings,
) -> Result<Option<Checks>, ServeError> {
    if !needs_checks(policy) {
        return Ok(None);
    }
    let checks = Checks::new(settings.clone()).map_err(ServeError::CheckClient)?;
    checks
        .health()
        .start(policy)
        .map_err(ServeError::HealthProbes)?;

    for upstream in policy
        .upstreams()
        .iter()
        .filter(|upstream| upstream.verify_blobs())
    {
        tracing::info!(
            upstream = upstream.name(),
            regional_mirrors = upstream.regions().count(),
            timeout_ms = settings.timeout.as_millis(),
            cache_capacity = settings.cache_capacity,
            missing_ttl_secs = settings.missing_ttl.as_secs(),
            "checking that blobs exist before redirecting to this upstream"
        );
    }
    for target in probe_targets(policy) {
        tracing::info!(
            upstream = %target.upstream,
            region = target.region.as_deref().unwrap_or("-"),
            url = %target.url,
            interval_secs = target.interval.as_secs(),
            unhealthy_after = target.unhealthy_after,
            "probing mirror health"
        );
    }
    Ok(Some(checks))
}

/// The signals that stop the server, installed before it starts so that a
/// failure to install them is reported at once.
pub struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    /// Installs handlers for SIGINT and SIGTERM. Needs a Tokio runtime.
    pub fn install() -> Result<Self, ServeError> {
        let install = |kind, name| {
            signal(kind).map_err(|source| ServeError::Signal {
                signal: name,
                source,
            })
        };
        Ok(ShutdownSignals {
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Waits for the first signal and returns its name.
    async fn received(mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Binds `addr`. The returned listener's `local_addr` is the real address,
/// with the port the system picked when `addr` has port 0.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves `app` on `listener` until a signal arrives, then waits up to
/// `shutdown_timeout` for the requests in flight.
pub async fn run(
    listener: TcpListener,
    app: Router,
    signals: ShutdownSignals,
    shutdown_timeout: Duration,
) -> Result<(), ServeError> {
    let stopping = Arc::new(Notify::new());
    let shutdown = {
        let stopping = Arc::clone(&stopping);
        async move {
            let signal = signals.received().await;
            tracing::info!(
                signal,
                timeout_secs = shutdown_timeout.as_secs_f64(),
                "shutting down: no new connections; finishing requests in flight"
            );
            stopping.notify_one();
        }
    };
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .into_future();
    let deadline = async {
        stopping.notified().await;
        tokio::time::sleep(shutdown_timeout).await;
    };

    tokio::select! {
        result = server => result.map_err(ServeError::Serve)?,
        () = deadline => tracing::warn!(
            timeout_secs = shutdown_timeout.as_secs_f64(),
            "requests still in flight after the shutdown timeout; dropping them"
        ),
    }
    tracing::info!("server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};
    use http::{Method, Request};
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;

    async fn send(method: Method, path: &str) -> (StatusCode, String) {
        let config = Config::builtin().unwrap();
        let app = router(RegistryRedirectLayer::new(config.policy).access_log(false));
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn root_says_what_this_is() {
        assert_eq!(
            send(Method::GET, "/").await,
            (StatusCode::OK, ROOT_TEXT.to_owned())
        );
    }

    #[tokio::test]
    async fn other_paths_are_not_found() {
        for path in ["/healthz", "/v3/", "/v2x"] {
            assert_eq!(
                send(Method::GET, path).await,
                (StatusCode::NOT_FOUND, NOT_FOUND_TEXT.to_owned()),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn checks_start_only_when_needed() {
        let config = Config::builtin().unwrap();
        assert!(!needs_checks(&config.policy));
        let checks = start_checks(&config.policy, CheckSettings::default()).unwrap();
        assert!(checks.is_none());

        // The probe targets a closed loopback port, and is stopped at once.
        let text = "default_upstream = \"k8s\"\n\
                    [upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n\
                    [upstreams.mirror]\nurl = \"http://127.0.0.1:9\"\n\
                    health_check = { interval_seconds = 60 }\n";
        let config = Config::parse("config.toml", text).unwrap();
        assert!(needs_checks(&config.policy));
        let checks = start_checks(&config.policy, CheckSettings::default())
            .unwrap()
            .expect("the mirror has a health check");
        let probed: Vec<String> = checks
            .health()
            .snapshot()
            .into_iter()
            .map(|health| health.target.url)
            .collect();
        assert_eq!(probed, ["http://127.0.0.1:9/v2/"]);
        checks.health().stop();
    }

    #[tokio::test]
    async fn v2_is_answered_by_layer() {
        let (status, body) = send(Method::GET, "/v2/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "{}");
    }
}
