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

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod handle;
mod layer;

pub use body::ResponseBody;
pub use handle::PolicyHandle;
pub use layer::{RegistryRedirect, RegistryRedirectLayer, ResponseFuture, ACCESS_LOG_TARGET};
pub use registry_redirect_core as core;
