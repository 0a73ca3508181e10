//! A tower [`Layer`](tower_layer::Layer) that turns any axum or hyper
//! service into an OCI registry redirector.
//!
//! [`RegistryRedirectLayer`] responds to every request under `/v2` with the
//! decision of `registry-redirect-core`: a redirect to the chosen upstream,
//! the API version check, or an OCI error. Every other request reaches the
//! inner service untouched, so the layer sits beside an application's own
//! routes. The policy lives in a [`PolicyHandle`] and can be replaced while
//! requests are served, without a lock on the request path.
//!
//! ```
//! use axum::{routing::get, Router};
//! use registry_redirect_core::{Policy, PolicySpec, UpstreamSpec};
//! use registry_redirect_tower::{PolicyHandle, RegistryRedirectLayer};
//!
//! let mut spec = PolicySpec::new("k8s");
//! spec.upstreams.insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
//! let handle = PolicyHandle::new(Policy::compile(&spec).unwrap());
//!
//! let app: Router = Router::new()
//!     .route("/healthz", get(|| async { "ok" }))
//!     .layer(RegistryRedirectLayer::with_handle(handle.clone()));
//! // Serve `app` with `into_make_service_with_connect_info::<SocketAddr>()`
//! // so that rules can match on the client address; later,
//! // `handle.store(new_policy)` switches policies.
//! ```
//!
//! Policies with verified blob mirrors or health checked upstreams give
//! some requests several candidates. Without checks the layer redirects to
//! the first one. With [`Checks`] ([`RegistryRedirectLayer::with_checks`])
//! it redirects to the first candidate that passes them: the blob exists
//! there, checked with a cached `HEAD` ([`checks`]), and the mirror passes
//! its periodic health probes ([`health`]). Both use the HTTP client of
//! [`client`], and [`select`] walks the candidates.
//!
//! [`Metrics`] ([`RegistryRedirectLayer::with_metrics`]) counts requests by
//! decision, rule, upstream and status code without a lock on the request
//! path, and renders them for Prometheus. [`ClientAddressLogging`] sets
//! whether the access log carries client addresses, whole or truncated.
//!
//! Upstreams with `auth = "resolve"` need a bearer token for every
//! request. With a [`resolve::Resolver`]
//! ([`RegistryRedirectLayer::with_resolver`]) the layer fetches their
//! documents with a token and redirects blob requests to the storage URL
//! the upstream names. Without one, such requests get 503.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
pub mod checks;
pub mod client;
pub mod client_log;
mod handle;
pub mod health;
mod layer;
pub mod metrics;
pub mod resolve;
pub mod select;

pub use body::{BoxError, ResponseBody};
pub use checks::CheckSettings;
pub use client_log::ClientAddressLogging;
pub use handle::PolicyHandle;
pub use layer::{RegistryRedirect, RegistryRedirectLayer, ResponseFuture, ACCESS_LOG_TARGET};
pub use metrics::Metrics;
pub use registry_redirect_core as core;
pub use select::{Checks, Selection};
