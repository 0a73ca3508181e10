//! An axum application with routes of its own that also serves as a
//! registry redirector under `/v2`.
//!
//! ```text
//! cargo run -p registry-redirect-tower --example axum_app -- 127.0.0.1:8080
//! curl -si http://127.0.0.1:8080/v2/pause/manifests/3.10
//! ```
//!
//! Clients on loopback are sent to a local registry at `127.0.0.1:5001`;
//! everyone else to registry.k8s.io. `GET /metrics` returns the layer's
//! metrics in the Prometheus text format.

use std::net::SocketAddr;

use axum::http::header::CONTENT_TYPE;
use axum::{routing::get, Router};
use registry_redirect_core::{Policy, PolicySpec, RuleSpec, UpstreamSpec};
use registry_redirect_tower::metrics::{self, Metrics};
use registry_redirect_tower::{PolicyHandle, RegistryRedirectLayer};

/// Builds the example's policy.
pub fn policy() -> Policy {
    let mut spec = PolicySpec::new("k8s");
    spec.upstreams
        .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
    spec.upstreams
        .insert("local".into(), UpstreamSpec::new("http://127.0.0.1:5001"));
    spec.rules.push(RuleSpec {
        clients: vec!["127.0.0.0/8".into(), "::1".into()],
        ..RuleSpec::new("loopback", "local")
    });
    Policy::compile(&spec).expect("the example policy is valid")
}

/// Builds the application: its own routes, with the redirect layer in front.
pub fn app(handle: PolicyHandle) -> Router {
    let metrics = Metrics::new();
    let render = metrics.clone();
    Router::new()
        .route(
            "/",
            get(|| async { "an application that also redirects registry pulls\n" }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || async move { ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], render.render()) }),
        )
        .layer(
            RegistryRedirectLayer::with_handle(handle)
                .with_metrics(metrics)
                // Requests come from the network, so HTTP/1.1 /v2 requests
                // without a Host header get 400, as RFC 9112 requires. The
                // application's own routes are left as they are.
                .require_host(true),
        )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let app = app(PolicyHandle::new(policy()));
    // `ConnectInfo` gives the layer each connection's peer address.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
