//! `serve`: the HTTP server. It runs the [`App`] of the [`crate::app`]
//! module on every connection. The layer handles every request under
//! `/v2`, and the server itself responds to `GET /` with a line that names
//! the program, and to every other path with 404.
//!
//! Plain TCP connections speak HTTP/1.1 only, unless
//! [`ConnectionSettings::h2c`] also allows HTTP/2 with prior knowledge
//! (h2c). TLS connections speak the version that ALPN picked. HTTP/1.1
//! `GET` and `HEAD` requests without a body are parsed, and their responses
//! written, by the server's own loop in [`crate::simple_http1`]. hyper serves
//! the rest of the connection from the first other request on, and HTTP/2.
//!
//! When the policy has an upstream with `verify_blobs` or a `health_check`,
//! [`start_checks`] creates the tower crate's [`Checks`] and starts the
//! health probes, so that the layer checks candidates before redirecting.
//!
//! SIGINT and SIGTERM stop the server gracefully: it stops accepting
//! connections, finishes the requests in flight, and exits. Requests still
//! running after the shutdown timeout are dropped.
//!
//! With [`ConnectionSettings`], a connection may first carry a PROXY
//! protocol header ([`crate::proxy_protocol`]) and a TLS handshake
//! ([`crate::tls`]), and is bounded by the [`Limits`]. A plain HTTP
//! request on the HTTPS port gets 400 with an OCI error body.
//!
//! NOTE: a connection that has not started its first request when the
//! signal arrives (no byte yet, or still in its PROXY header or TLS
//! handshake) is closed without a response. The client sees a closed
//! connection and may retry.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use registry_redirect_core::Policy;
use registry_redirect_tower::client::ClientError;
use registry_redirect_tower::health::{probe_targets, HealthError};
use registry_redirect_tower::resolve::{Resolver, ResolverSettings};
use registry_redirect_tower::{CheckSettings, Checks, Metrics, PolicyHandle};

use crate::activity::{Activity, Expiry};
use crate::admin::Readiness;
use crate::app::{App, ConnectionService};
pub use crate::app::{NOT_FOUND_TEXT, ROOT_TEXT};
use crate::config::{Config, LoadError};
use crate::limits::Limits;
use crate::proxy_protocol::ProxyProtocol;
use crate::simple_http1::{serve_simple_requests, Outcome};
use crate::tls::Tls;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

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
    /// The HTTP client of resolve mode could not be built.
    #[error("failed to create the HTTP client for resolve mode: {0}")]
    ResolveClient(ClientError),
    /// The health probes could not start.
    #[error("failed to start the health probes: {0}")]
    HealthProbes(HealthError),
}

/// Returns whether any upstream of `policy` needs runtime checks: blob
/// checks (`verify_blobs`) or health probes (`health_check`).
pub fn needs_checks(policy: &Policy) -> bool {
    policy
        .upstreams()
        .iter()
        .any(|upstream| upstream.verify_blobs() || upstream.health_check().is_some())
}

/// Creates the resolver of resolve mode with the settings of `[resolve]`,
/// and logs, at INFO, each upstream that uses it. It sends nothing until
/// a request for such an upstream arrives.
pub fn start_resolver(config: &Config) -> Result<Resolver, ServeError> {
    let settings = config.resolver_settings.clone();
    for upstream in config.policy.upstreams() {
        let Some(resolve) = upstream.resolve() else {
            continue;
        };
        tracing::info!(
            upstream = upstream.name(),
            url = upstream.url(),
            blob_proxy = resolve.blob_proxy,
            tag_ttl_secs = resolve.tag_ttl.as_secs(),
            credentials = resolve.credentials.is_some(),
            timeout_ms = settings.timeout.as_millis() as u64,
            "fetching from this upstream with a token (auth = \"resolve\")"
        );
    }
    Resolver::new(settings).map_err(ServeError::ResolveClient)
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

/// Reloads the configuration file of a running server. Every trigger
/// (`SIGHUP` in [`reload_on_hangup`], file watching) reloads through
/// [`Reloader::reload`], so a reload logs the same way whatever started it.
///
/// A new configuration is read and checked completely (range files
/// included) on a blocking thread, and only then replaces the policy in the
/// handle, atomically: requests in flight finish with the old policy, and
/// none waits on a lock. A configuration with errors is logged with every
/// error (file, line, column) and the old policy keeps serving. With
/// checks, the health probes restart for the new policy's mirrors.
///
/// With TLS (see [`Reloader::with_tls`]), the certificate and key are
/// loaded too, and replace the old ones only when both are valid; see
/// [`crate::tls::reload_certificate`].
///
/// `listen`, `[blob_checks]`, `proxy_protocol`, `[limits]` and `[resolve]`
/// take effect only at start: a reload that changes them is logged with a
/// warning. A
/// reload that adds the first verified or probed upstream also needs a
/// restart, because the checks start with the server.
#[derive(Clone)]
pub struct Reloader {
    path: PathBuf,
    handle: PolicyHandle,
    checks: Option<Checks>,
    listen: SocketAddr,
    check_settings: CheckSettings,
    listener_keys: (bool, Limits),
    resolver_settings: ResolverSettings,
    tls: Option<Tls>,
    /// Held for the whole of a reload, so that reloads started at once (a
    /// SIGHUP during a file change) run one after the other, and the one
    /// that read the files last also stores its policy last.
    running: Arc<tokio::sync::Mutex<()>>,
    metrics: Option<Metrics>,
}

impl Reloader {
    /// Creates a reloader of the configuration file at `path`, which the
    /// server started with as `started`. New policies go to `handle`.
    pub fn new(
        path: PathBuf,
        handle: PolicyHandle,
        checks: Option<Checks>,
        started: &Config,
    ) -> Self {
        Reloader {
            path,
            handle,
            checks,
            listen: started.listen,
            check_settings: started.check_settings.clone(),
            listener_keys: (started.proxy_protocol, started.limits),
            resolver_settings: started.resolver_settings.clone(),
            tls: None,
            running: Arc::default(),
            metrics: None,
        }
    }

    /// Makes each reload load the TLS certificate and key into `tls`.
    pub fn with_tls(mut self, tls: Option<Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// Counts every reload in `metrics`, and sets the configuration's hash
    /// and load time there after each one that succeeds. With TLS, it also
    /// counts certificate reloads and sets the served certificate's expiry.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Returns the path of the configuration file, as given to the server.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the configuration file again and, when it is valid, replaces
    /// the policy. `trigger` names what started the reload in the log, such
    /// as `SIGHUP`. Returns whether the new policy is serving.
    pub async fn reload(&self, trigger: &'static str) -> bool {
        let _running = self.running.lock().await;
        let (reloaded, certificate) = self.load_and_apply(trigger).await;
        if let Some(metrics) = &self.metrics {
            metrics.record_reload(reloaded.is_some());
            if let Some(sha256) = &reloaded {
                metrics.set_config(sha256, SystemTime::now());
            }
            record_certificate(metrics, self.tls.as_ref(), certificate);
        }
        reloaded.is_some()
    }

    /// Logs a reload that failed with one error, such as an unreadable
    /// file.
    fn log_failure(&self, trigger: &'static str, error: &dyn std::fmt::Display) {
        tracing::error!(
            config = %self.path.display(),
            trigger,
            %error,
            "reload failed; the previous policy keeps serving"
        );
    }

    /// Reloads, and returns the SHA-256 of the configuration when it
    /// serves, and the result of the certificate reload when there was one.
    async fn load_and_apply(&self, trigger: &'static str) -> (Option<String>, Option<bool>) {
        let file = self.path.clone();
        let tls = self.tls.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let config = Config::load(&file)?;
            let certificate = crate::tls::reload_certificate(tls.as_ref(), config.tls.as_ref());
            Ok::<_, LoadError>((config, certificate))
        })
        .await;
        let (config, certificate) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(LoadError::Invalid(errors))) => {
                // One event per error, so that each log line contains one
                // `FILE:LINE:COLUMN: message`.
                tracing::error!(
                    config = %self.path.display(),
                    trigger,
                    errors = errors.0.len(),
                    "reload failed; the previous policy keeps serving"
                );
                for error in &errors.0 {
                    tracing::error!(
                        config = %self.path.display(),
                        trigger,
                        %error,
                        "invalid configuration"
                    );
                }
                return (None, None);
            }
            Ok(Err(error)) => {
                self.log_failure(trigger, &error);
                return (None, None);
            }
            Err(error) => {
                self.log_failure(trigger, &error);
                return (None, None);
            }
        };
        if (config.proxy_protocol, config.limits) != self.listener_keys {
            tracing::warn!(
                config = %self.path.display(),
                trigger,
                "new proxy_protocol or [limits] settings take effect only after a restart"
            );
        }
        if config.resolver_settings != self.resolver_settings {
            tracing::warn!(
                config = %self.path.display(),
                trigger,
                "new [resolve] settings take effect only after a restart"
            );
        }
        let sha256 = config.sha256.clone();
        let applied = apply_reload(
            &self.path,
            trigger,
            config,
            &self.handle,
            self.checks.as_ref(),
            self.listen,
            &self.check_settings,
        );
        (applied.then_some(sha256), certificate)
    }
}

/// Counts a certificate reload in `metrics` when there was one, and sets
/// the expiry of the certificate that serves, which can change even when
/// the policy does not.
fn record_certificate(metrics: &Metrics, tls: Option<&Tls>, reloaded: Option<bool>) {
    if let Some(succeeded) = reloaded {
        metrics.record_tls_reload(succeeded);
    }
    if let Some(tls) = tls {
        metrics.set_tls_certificate_expiry(tls.certificate_expiry());
    }
}

/// Handles `SIGHUP` for a server started without a configuration file:
/// each one reloads the certificate from the files of `--tls-cert` and
/// `--tls-key`. Without TLS there is nothing to reload, and the signal is
/// only logged, so that it never stops the server.
pub fn reload_certificate_on_hangup(
    mut hangups: Hangups,
    tls: Option<Tls>,
    metrics: Option<Metrics>,
) {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(tls) = &tls else {
                tracing::info!(
                    trigger = "SIGHUP",
                    "nothing to reload: the server runs the built-in policy, without a \
                     configuration file or TLS"
                );
                continue;
            };
            let reloading = tls.clone();
            let reloaded = tokio::task::spawn_blocking(move || {
                crate::tls::reload_certificate(Some(&reloading), None)
            })
            .await
            .ok()
            .flatten();
            if let Some(metrics) = &metrics {
                record_certificate(metrics, Some(tls), reloaded);
            }
        }
    });
}

/// The stream of `SIGHUP` signals that the process receives.
pub type Hangups = tokio::signal::unix::Signal;

/// Starts listening for `SIGHUP`, which from then on no longer ends the
/// process. Call it before the listeners open, because a script or service
/// manager may send the signal as soon as a port accepts connections.
pub fn hangups() -> Result<Hangups, ServeError> {
    signal(SignalKind::hangup()).map_err(|source| ServeError::Signal {
        signal: "SIGHUP",
        source,
    })
}

/// Reloads the configuration with `reloader` on every signal of `hangups`.
pub fn reload_on_hangup(mut hangups: Hangups, reloader: Reloader) {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            reloader.reload("SIGHUP").await;
        }
    });
}

fn apply_reload(
    path: &Path,
    trigger: &'static str,
    config: Config,
    handle: &PolicyHandle,
    checks: Option<&Checks>,
    listen: SocketAddr,
    check_settings: &CheckSettings,
) -> bool {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if config.listen != listen {
        tracing::warn!(
            config = %path.display(),
            listen = %config.listen,
            "the new listen address takes effect only after a restart"
        );
    }
    if &config.check_settings != check_settings {
        tracing::warn!(config = %path.display(), "new [blob_checks] settings take effect only after a restart");
    }
    if checks.is_none() && needs_checks(&config.policy) {
        tracing::warn!(
            config = %path.display(),
            "the new policy verifies blobs or probes upstreams, which needs a restart; until then its candidates are not checked"
        );
    }

    let upstreams = config.policy.upstreams().len();
    let rules = config.policy.rules().len();
    let stored = match checks {
        Some(checks) => checks.store_policy(handle, config.policy),
        None => {
            handle.store(config.policy);
            Ok(())
        }
    };
    match stored {
        Ok(()) => {
            tracing::info!(
                config = %path.display(),
                trigger,
                upstreams,
                rules,
                client_range_prefixes = config.client_ranges.prefixes,
                "configuration reloaded"
            );
            true
        }
        Err(error) => {
            tracing::error!(
                config = %path.display(),
                trigger,
                %error,
                "reload failed to restart the health probes; the previous policy keeps serving"
            );
            false
        }
    }
}

/// The signals that stop the server, installed before it starts so that a
/// failure to install them is reported at once.
pub struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
    readiness: Option<Readiness>,
    delay: Duration,
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
            readiness: None,
            delay: Duration::ZERO,
        })
    }

    /// Marks `readiness` as shutting down as soon as a signal arrives, then
    /// keeps accepting connections for `delay` before the drain starts, so
    /// that load balancers polling `/readyz` stop sending first.
    pub fn before_drain(mut self, readiness: Readiness, delay: Duration) -> Self {
        self.readiness = Some(readiness);
        self.delay = delay;
        self
    }

    /// Waits for the first signal, marks the server not ready and waits
    /// the delay, then returns the signal's name.
    async fn received(mut self) -> &'static str {
        let signal = tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        };
        if let Some(readiness) = &self.readiness {
            readiness.set_shutting_down();
        }
        if !self.delay.is_zero() {
            tracing::info!(
                signal,
                delay_secs = self.delay.as_secs_f64(),
                "shutdown started: /readyz returns 503; accepting connections until the delay ends"
            );
            tokio::time::sleep(self.delay).await;
        }
        signal
    }
}

/// Binds `addr`. The returned listener's `local_addr` is the real address,
/// with the port the system picked when `addr` has port 0.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Settings of the connections that [`run`] serves.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSettings {
    /// Timeouts, sizes and counts; see [`Limits`].
    pub limits: Limits,
    /// HTTPS, or `None` for plain HTTP.
    pub tls: Option<Tls>,
    /// PROXY protocol headers from trusted proxies, or `None` to read none.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// The metrics that count accepted and open connections, if any.
    pub metrics: Option<Metrics>,
    /// Whether a plain TCP connection may speak HTTP/2 with prior knowledge
    /// (h2c) instead of HTTP/1.1. The server then waits for the first
    /// bytes of each connection to tell the versions apart. Off by default.
    pub h2c: bool,
}

/// Serves `app` on `listener` until a signal arrives, then waits up to
/// `shutdown_timeout` for the requests in flight. A failed `accept` is
/// logged and retried, so nothing stops the server but a signal.
///
/// Each connection is served on its own task by hyper's HTTP/1.1 or HTTP/2
/// connection (HTTP/2 by ALPN over TLS, or with prior knowledge when
/// [`ConnectionSettings::h2c`] is on). `TCP_NODELAY` is set, so that a
/// redirect goes out at once rather than waiting for the client's delayed
/// ACK. The layer gets the client address: the peer's, or the one of its
/// PROXY protocol header.
///
/// With `max_connections` open, the loop stops accepting until one closes,
/// so that further clients wait in the kernel's listen backlog rather than
/// being accepted and dropped.
pub async fn run(
    listener: TcpListener,
    app: App,
    signals: ShutdownSignals,
    shutdown_timeout: Duration,
    settings: ConnectionSettings,
) {
    // Each connection task holds a receiver. Sending `true` makes every
    // task shut its connection down, and `closed` completes once the last
    // task has ended.
    let (stop_sender, stop_receiver) = watch::channel(false);
    let mut shutdown = pin!(signals.received());
    // Limits::validate rejects larger limits; clamping keeps `run` from
    // panicking on limits that were not validated.
    let permits = settings.limits.max_connections.min(Semaphore::MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(permits));
    let mut waits = LimitWaits::default();

    let signal = loop {
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                waits.record(settings.limits.max_connections);
                tokio::select! {
                    signal = &mut shutdown => break signal,
                    permit = connections.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // The semaphore is never closed.
                        Err(_) => continue,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            signal = &mut shutdown => break signal,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        let open = settings.metrics.as_ref().map(Metrics::connection_opened);
        let connection = serve_connection(
            stream,
            peer,
            app.clone(),
            settings.clone(),
            stop_receiver.clone(),
            permit,
        );
        tokio::spawn(async move {
            connection.await;
            drop(open);
        });
    };
    drop(listener);
    drop(stop_receiver);
    tracing::info!(
        signal,
        timeout_secs = shutdown_timeout.as_secs_f64(),
        "shutting down: no new connections; finishing requests in flight"
    );

    let _no_receiver_left = stop_sender.send(true);
    if tokio::time::timeout(shutdown_timeout, stop_sender.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_secs = shutdown_timeout.as_secs_f64(),
            "requests still in flight after the shutdown timeout; dropping them"
        );
    }
    tracing::info!("server stopped");
}

/// The count of times the accept loop waited at the connection limit,
/// logged at most once every 10 seconds (the first wait is logged at once).
#[derive(Default)]
struct LimitWaits {
    last_logged: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl LimitWaits {
    fn record(&mut self, max_connections: usize) {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(10))
        {
            return;
        }
        tracing::warn!(
            max_connections,
            waits = self.unlogged,
            "connection limit reached; new connections wait in the listen backlog until one closes"
        );
        self.last_logged = Some(now);
        self.unlogged = 0;
    }
}

/// Logs a failed `accept` and pauses, so that a full file descriptor table
/// (EMFILE) does not turn the accept loop into a busy loop. Errors of one
/// connection, such as a reset before accept, end only that connection.
async fn accept_failed(error: io::Error) {
    tracing::warn!(%error, "failed to accept a connection; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until the client has sent enough bytes to tell HTTP/1 from
/// HTTP/2: one byte that does not start the HTTP/2 preface, or the whole
/// preface. Returns whether it is HTTP/2, or `None` when `deadline` passes
/// or the client closes the connection first. The bytes stay in the socket
/// for hyper to read.
async fn wait_for_request_start(
    stream: &TcpStream,
    deadline: tokio::time::Instant,
) -> Option<bool> {
    let mut start = [0u8; HTTP2_PREFACE.len()];
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut start)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(count)) => count,
        };
        if !HTTP2_PREFACE.starts_with(&start[..peeked]) {
            return Some(false);
        }
        if peeked == HTTP2_PREFACE.len() {
            return Some(true);
        }
        // Part of the HTTP/2 preface: peeking again at once would return
        // the same bytes, so wait a little for the rest.
        let pause = tokio::time::sleep(Duration::from_millis(20));
        if tokio::time::timeout_at(deadline, pause).await.is_err() {
            return None;
        }
    }
}

/// Serves one connection until it ends: reads the PROXY protocol header
/// and runs the TLS handshake when they are on, then serves HTTP. Once
/// `stop` turns true or its sender is dropped, the connection finishes the
/// request in flight and closes. `_permit` counts the connection against
/// `max_connections` until it ends.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: App,
    settings: ConnectionSettings,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let started = tokio::time::Instant::now();
    let deadline = started + settings.limits.header_read_timeout;
    // Without TCP_NODELAY, Nagle's algorithm may hold a small response until
    // the client acknowledges the previous one.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "failed to set TCP_NODELAY; serving the connection anyway");
    }

    let mut client = peer;
    if let Some(proxy_protocol) = &settings.proxy_protocol {
        let read = tokio::select! {
            read = tokio::time::timeout_at(
                deadline,
                proxy_protocol.read_client_address(&mut stream, peer),
            ) => read,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        client = match read {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                proxy_protocol.log_rejection(&error);
                return;
            }
            Err(_) => {
                tracing::debug!("PROXY protocol header timed out; closing connection");
                return;
            }
        };
    }

    let Some(tls) = &settings.tls else {
        if !settings.h2c {
            serve_http(stream, false, client, app, &settings.limits, started, stop).await;
            return;
        }
        // Tell HTTP/1 from HTTP/2 by the first bytes here, where the
        // deadline and the stop signal can end the wait.
        let http2 = tokio::select! {
            http2 = wait_for_request_start(&stream, deadline) => http2,
            _ = stop.wait_for(|stop| *stop) => None,
        };
        if let Some(http2) = http2 {
            serve_http(stream, http2, client, app, &settings.limits, started, stop).await;
        }
        return;
    };
    let plain_http = tokio::select! {
        plain = tokio::time::timeout_at(deadline, crate::tls::starts_with_plain_http(&stream)) => plain,
        _ = stop.wait_for(|stop| *stop) => return,
    };
    if plain_http == Ok(true) {
        crate::tls::respond_to_plain_http(&mut stream).await;
        return;
    }
    let accepted = tokio::select! {
        accepted = tokio::time::timeout_at(deadline, tls.accept(stream)) => accepted,
        _ = stop.wait_for(|stop| *stop) => return,
    };
    match accepted {
        Ok(Ok((stream, http2))) => {
            serve_http(stream, http2, client, app, &settings.limits, started, stop).await;
        }
        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed; closing connection"),
        Err(_) => tracing::debug!("TLS handshake timed out; closing connection"),
    }
}

/// Serves HTTP on `io`, HTTP/2 when `http2`, until the connection ends,
/// its header read or idle timeout passes, or `stop` turns true.
pub(crate) async fn serve_http<IO>(
    io: IO,
    http2: bool,
    client: SocketAddr,
    app: App,
    limits: &Limits,
    started: tokio::time::Instant,
    stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The header read clock started with the connection, so the PROXY
    // header and the TLS handshake count against the first request's time.
    let activity = Activity::new(
        started,
        limits.header_read_timeout,
        limits.idle_timeout,
        !http2,
    );
    let service = ConnectionService::new(app, client.ip(), activity.clone());
    let io = activity.track(io);

    if http2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .max_header_list_size(limits.http2_max_header_list_size());
        let connection = builder.serve_connection(TokioIo::new(io), service);
        drive_connection(
            connection,
            |connection| connection.graceful_shutdown(),
            &activity,
            stop,
        )
        .await;
        return;
    }

    let simple = serve_simple_requests(io, &service, limits.max_header_bytes, &activity, &stop);
    let io = match simple.await {
        Outcome::Closed => return,
        Outcome::Expired(expiry) => {
            log_expiry(expiry);
            return;
        }
        Outcome::HandOff(io) => io,
    };
    let mut builder = http1::Builder::new();
    // A response is a few hundred bytes: copying the body after the head
    // and writing once costs less than a writev of two buffers. hyper's
    // own header read timer would also end idle connections, so
    // `Activity` enforces both timeouts instead, and hyper needs no timer.
    builder
        .writev(false)
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    drive_connection(
        connection,
        |connection| connection.graceful_shutdown(),
        &activity,
        stop,
    )
    .await;
}

/// Drives `connection` until it ends, its header read or idle timeout in
/// `activity` passes, or `stop` turns true. On an idle timeout or a stop,
/// `graceful_shutdown` lets the requests in flight finish first.
async fn drive_connection<C, E>(
    connection: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    activity: &Activity,
    mut stop: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut connection = pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            return;
        }
        expiry = activity.expired() => {
            log_expiry(expiry);
            if expiry == Expiry::HeaderRead {
                return;
            }
            // Closing gracefully sends HTTP/2's GOAWAY; an idle HTTP/1
            // connection closes at once.
        }
        _ = stop.wait_for(|stop| *stop) => {}
    }
    graceful_shutdown(connection.as_mut());
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection ended with an error during shutdown");
    }
}

/// Logs the timeout that ends a connection.
fn log_expiry(expiry: Expiry) {
    match expiry {
        Expiry::HeaderRead => tracing::debug!("request headers timed out; closing connection"),
        Expiry::Idle => tracing::debug!("idle timeout; closing connection"),
    }
}

#[cfg(test)]
mod tests {
    use registry_redirect_tower::RegistryRedirectLayer;

    use super::*;
    use crate::app::app;
    use crate::config::Config;

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

    /// Starts [`run`] on a free loopback port with the built-in policy.
    async fn start_server(settings: ConnectionSettings) -> SocketAddr {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config::builtin().unwrap();
        let app = app(RegistryRedirectLayer::new(config.policy).access_log(false));
        let signals = ShutdownSignals::install().unwrap();
        tokio::spawn(run(
            listener,
            app,
            signals,
            Duration::from_secs(1),
            settings,
        ));
        addr
    }

    /// Writes `request` on a new connection and reads until the server
    /// closes it, at most 10 seconds. Returns the bytes read and the time
    /// from the write to the close.
    fn exchange(addr: SocketAddr, request: &'static [u8]) -> (String, Duration) {
        use std::io::{Read, Write};

        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let started = std::time::Instant::now();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        (
            String::from_utf8_lossy(&response).into_owned(),
            started.elapsed(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn run_serves_redirects_over_tcp() {
        let addr = start_server(ConnectionSettings::default()).await;
        let request =
            b"GET /v2/pause/manifests/3.10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let (response, _) = tokio::task::spawn_blocking(move || exchange(addr, request))
            .await
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 307 "), "{response}");
        assert!(
            response.contains("location: https://registry.k8s.io/v2/pause/manifests/3.10\r\n"),
            "{response}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn absolute_target_host_rules() {
        let addr = start_server(ConnectionSettings::default()).await;
        // The target's authority wins over another valid host in Host.
        let request = b"GET http://registry.example/v2/pause/manifests/3.10 HTTP/1.1\r\n\
            Host: other.example\r\nConnection: close\r\n\r\n";
        let (response, _) = tokio::task::spawn_blocking(move || exchange(addr, request))
            .await
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 307 "), "{response}");

        // A Host line that is not a host is a bad request all the same.
        let request = b"GET http://registry.example/v2/pause/manifests/3.10 HTTP/1.1\r\n\
            Host: bad host\r\nConnection: close\r\n\r\n";
        let (response, _) = tokio::task::spawn_blocking(move || exchange(addr, request))
            .await
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
        assert!(response.contains("UNSUPPORTED"), "{response}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn slow_headers_close_connection() {
        let timeout = Duration::from_millis(300);
        let addr = start_server(ConnectionSettings {
            limits: Limits {
                header_read_timeout: timeout,
                ..Limits::default()
            },
            ..ConnectionSettings::default()
        })
        .await;
        // The headers never end: the blank line is missing.
        let request = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n";
        let (response, elapsed) = tokio::task::spawn_blocking(move || exchange(addr, request))
            .await
            .unwrap();
        assert!(!response.contains("200 OK"), "{response}");
        assert!(elapsed >= timeout, "closed after {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "closed after {elapsed:?}");
    }

    /// Sends `request` and reads until the server closes the connection.
    /// Closing a socket with unread bytes sends a reset, which counts as
    /// closed too.
    fn closed_without_response(addr: SocketAddr, request: &'static [u8]) -> (Vec<u8>, Duration) {
        use std::io::{Read, Write};

        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let started = std::time::Instant::now();
        let mut response = Vec::new();
        match stream.read_to_end(&mut response) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(error) => panic!("reading the response failed: {error}"),
        }
        (response, started.elapsed())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn silent_and_preface_clients_are_closed() {
        let timeout = Duration::from_millis(300);
        for h2c in [false, true] {
            let addr = start_server(ConnectionSettings {
                limits: Limits {
                    header_read_timeout: timeout,
                    ..Limits::default()
                },
                h2c,
                ..ConnectionSettings::default()
            })
            .await;
            // Nothing at all, then a partial HTTP/2 preface: neither is a
            // request. Both are closed once the timeout passes, except that
            // over HTTP/1.1 only, hyper rejects the preface's version
            // `HTTP/2` at once with 400.
            for request in [&b""[..], &b"PRI * HTTP/2"[..]] {
                let (response, elapsed) =
                    tokio::task::spawn_blocking(move || closed_without_response(addr, request))
                        .await
                        .unwrap();
                let response = String::from_utf8_lossy(&response);
                let label = format!("h2c {h2c}, request {:?}", String::from_utf8_lossy(request));
                if !h2c && !request.is_empty() {
                    assert!(response.starts_with("HTTP/1.1 400 "), "{label}: {response}");
                } else {
                    assert!(response.is_empty(), "{label}: {response}");
                    assert!(elapsed >= timeout, "{label}: closed after {elapsed:?}");
                }
                assert!(
                    elapsed < Duration::from_secs(5),
                    "{label}: closed after {elapsed:?}"
                );
            }

            // A request that starts at once is still served.
            let (response, _) = tokio::task::spawn_blocking(move || {
                exchange(
                    addr,
                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
            })
            .await
            .unwrap();
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }
    }
}
