//! The decision engine of registry-redirect: which registry should serve an
//! OCI distribution request (`/v2/...`), for the client asking.
//!
//! This crate is pure: no I/O, no async runtime, no clock, no logging. It
//! takes a compiled [`Policy`] and a [`RequestView`] and returns a
//! [`Decision`], which explains itself and turns into an [`http::Response`].
//! Servers and middleware (the `registry-redirect-tower` layer, the
//! `registry-redirect` server) do the I/O around it.
//!
//! ```
//! use http::{HeaderMap, Method, StatusCode, Version};
//! use registry_redirect_core::{decide, Policy, PolicySpec, RequestView, RuleSpec, UpstreamSpec};
//!
//! let mut spec = PolicySpec::new("k8s");
//! spec.upstreams.insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
//! spec.upstreams.insert(
//!     "hub".into(),
//!     UpstreamSpec { library_prefix: true, ..UpstreamSpec::new("https://registry-1.docker.io") },
//! );
//! spec.rules.push(RuleSpec { clients: vec!["192.168.0.0/24".into()], ..RuleSpec::new("lab", "hub") });
//! let policy = Policy::compile(&spec).expect("valid policy");
//!
//! let headers = HeaderMap::new();
//! let request = RequestView {
//!     method: &Method::GET,
//!     path: "/v2/nginx/manifests/latest",
//!     query: None,
//!     host: Some("registry.example.com"),
//!     peer: Some("192.168.0.20".parse().unwrap()),
//!     headers: &headers,
//!     version: Version::HTTP_11,
//! };
//! let decision = decide(&policy, &request);
//! assert_eq!(decision.route().unwrap().rule.unwrap().name(), "lab");
//!
//! let response = decision.into_response().expect("a /v2 request");
//! assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
//! assert_eq!(
//!     response.headers()["location"],
//!     "https://registry-1.docker.io/v2/library/nginx/manifests/latest"
//! );
//! ```
//!
//! The modules, in the order a request meets them: [`client`] (who is
//! asking), [`path`] (what is requested), [`policy`] with [`ranges`] (the
//! rules), [`decision`] (the outcome) and [`response`] (the outcome as HTTP).
//! [`sources`] parses the published cloud range files (feature
//! `cloud-ranges`, on by default).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod decision;
pub mod path;
pub mod policy;
pub mod ranges;
pub mod response;
#[cfg(feature = "cloud-ranges")]
pub mod sources;

pub use client::{ClientAddress, ClientSource, ForwardedHeader, TrustedProxies};
pub use decision::{decide, Decision, ErrorCode, Outcome, Rejection, RequestView, Route};
pub use path::{RegistryPath, RequestKind};
pub use policy::{
    ApiVersionCheck, Policy, PolicyError, PolicyErrorKind, PolicyErrors, PolicySpec, RuleSpec,
    Upstream, UpstreamSpec,
};
