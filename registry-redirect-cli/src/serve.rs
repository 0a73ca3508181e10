//! `serve`: the HTTP server. The [`RegistryRedirectLayer`] handles every
//! request under `/v2`. The server itself responds to `GET /` with a line
//! that names the program, and to every other path with 404.
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
use registry_redirect_tower::RegistryRedirectLayer;
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
    /// The server failed while running.
    #[error("server failed: {0}")]
    Serve(io::Error),
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
    async fn v2_is_answered_by_layer() {
        let (status, body) = send(Method::GET, "/v2/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "{}");
    }
}
