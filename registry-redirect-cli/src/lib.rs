//! The `registry-redirect` server and command line, as a library so that
//! its parts can be tested and documented.
//!
//! - [`config`]: the TOML configuration file, with line and column
//!   diagnostics.
//! - [`summary`]: the policy on one screen, for `check` and `serve`.
//! - [`explain`]: one request decided offline, for `explain`.
//! - [`serve`]: the HTTP server around the `registry-redirect-tower` layer.
//! - [`admin`]: the admin listener of `serve`: health, readiness, metrics.
//! - [`app`]: the service that the server runs on each connection.
//! - [`simple_http1`]: the server's own HTTP/1.1 loop for `GET` and `HEAD`
//!   requests without a body; hyper serves the rest.
//! - [`fetch`]: `ranges fetch`, which downloads the published range files.
//! - [`download`]: the HTTP client that `ranges fetch` downloads with.
//! - [`health`]: `health`, which checks the admin listener of a running
//!   server.
//! - [`logging`]: where `serve` writes its log, and at which level.
//! - [`watch`]: `serve --watch`, which reloads when the configuration files
//!   change.
//! - [`tls`]: HTTPS for `serve`, with a certificate that reloads.
//! - [`proxy_protocol`]: client addresses from a load balancer's PROXY
//!   protocol header.
//! - [`limits`]: limits on `serve`'s connections and requests.
//! - [`activity`]: the header read and idle timeouts of a connection.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod activity;
pub mod admin;
pub mod app;
pub mod config;
pub mod download;
pub mod explain;
pub mod fetch;
pub mod health;
pub mod limits;
pub mod logging;
pub mod proxy_protocol;
pub mod serve;
pub mod simple_http1;
pub mod summary;
pub mod tls;
pub mod watch;
