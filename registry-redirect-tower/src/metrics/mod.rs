//! [`Metrics`]: counters and gauges of the layer and of the server around
//! it, rendered in the Prometheus text exposition format (version 0.0.4).
//!
//! The layer records every request it handles: the decision, the rule, the
//! upstream redirected to and the status code, and how long the decision
//! took (blob checks included). Recording takes no lock and allocates
//! nothing, except for the first request under a newly stored policy,
//! which builds that policy's counter table (see `requests`). Rendering
//! allocates and locks freely, since a scrape comes every few seconds at
//! most.
//!
//! The server records what happens outside the layer: reloads, the loaded
//! configuration's hash, and connections. Blob-check cache and mirror health figures are
//! read from the [`Checks`] when rendering.
//!
//! ```
//! use registry_redirect_core::{Policy, PolicySpec, UpstreamSpec};
//! use registry_redirect_tower::metrics::Metrics;
//! use registry_redirect_tower::RegistryRedirectLayer;
//!
//! let mut spec = PolicySpec::new("k8s");
//! spec.upstreams.insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
//! let metrics = Metrics::new();
//! let layer = RegistryRedirectLayer::new(Policy::compile(&spec).unwrap())
//!     .with_metrics(metrics.clone());
//! metrics.record_reload(true);
//!
//! let text = metrics.render();
//! assert!(text.contains("# TYPE registry_redirect_requests_total counter\n"));
//! assert!(text.contains("registry_redirect_reloads_total{result=\"success\"} 1\n"));
//! # drop(layer);
//! ```

mod histogram;
mod render;
mod requests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::StatusCode;
use registry_redirect_core::policy::Rule;
use registry_redirect_core::{Decision, Policy, Upstream};

use crate::handle::PolicyHandle;
use crate::select::Checks;
use histogram::Histogram;
use requests::{DecisionLabel, RouteTable, Series, StatusCounters};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The loaded configuration, as the server reports it.
#[derive(Debug, Clone)]
struct ConfigInfo {
    sha256: String,
    loaded_at_seconds: f64,
}

/// Counts of reloads that succeeded and of reloads that failed.
#[derive(Default)]
struct ReloadCounts {
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl ReloadCounts {
    fn record(&self, succeeded: bool) {
        let counter = if succeeded {
            &self.succeeded
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct Inner {
    /// The counter table of the policy that requests met last.
    table: ArcSwap<RouteTable>,
    /// Every routed counter by labels. Locked only to build a table and to
    /// render.
    series: Mutex<Series>,
    unrouted: StatusCounters,
    latency: [Histogram; DecisionLabel::ALL.len()],
    reloads: ReloadCounts,
    config: Mutex<Option<ConfigInfo>>,
    /// The served TLS certificate's notAfter, in seconds since the Unix
    /// epoch, or `None` without TLS.
    tls_certificate_expiry: Mutex<Option<i64>>,
    tls_reloads: ReloadCounts,
    checks: Mutex<Option<Checks>>,
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
}

/// The metrics of a [`RegistryRedirectLayer`](crate::RegistryRedirectLayer)
/// and the server around it. Cheap to clone: clones share every counter.
///
/// Give a clone to [`RegistryRedirectLayer::with_metrics`](crate::RegistryRedirectLayer::with_metrics),
/// and serve [`Metrics::render`] with [`CONTENT_TYPE`] on a metrics
/// endpoint. One `Metrics` belongs with one layer (or clones of one
/// layer): two layers with different policies would rebuild the counter
/// table in turn.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates metrics with every counter at zero.
    pub fn new() -> Self {
        Metrics {
            inner: Arc::new(Inner {
                table: ArcSwap::from_pointee(RouteTable::empty()),
                series: Mutex::new(Series::new()),
                unrouted: StatusCounters::default(),
                latency: Default::default(),
                reloads: ReloadCounts::default(),
                config: Mutex::new(None),
                tls_certificate_expiry: Mutex::new(None),
                tls_reloads: ReloadCounts::default(),
                checks: Mutex::new(None),
                connections_accepted: AtomicU64::new(0),
                connections_open: AtomicU64::new(0),
            }),
        }
    }

    /// Counts a configuration reload that replaced the policy
    /// (`succeeded`), or one that failed and left the old policy serving.
    pub fn record_reload(&self, succeeded: bool) {
        self.inner.reloads.record(succeeded);
    }

    /// Sets the configuration in force: the SHA-256 of its text, as
    /// lowercase hex, and when it was loaded.
    pub fn set_config(&self, sha256: &str, loaded_at: SystemTime) {
        let loaded_at_seconds = loaded_at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        *lock(&self.inner.config) = Some(ConfigInfo {
            sha256: sha256.to_owned(),
            loaded_at_seconds,
        });
    }

    /// Sets when the TLS certificate being served expires: its notAfter,
    /// in seconds since the Unix epoch. Without a call, the metric is left
    /// out.
    ///
    /// ```
    /// use registry_redirect_tower::Metrics;
    ///
    /// let metrics = Metrics::new();
    /// metrics.set_tls_certificate_expiry(1_800_000_000);
    /// metrics.record_tls_reload(false);
    /// let text = metrics.render();
    /// assert!(text.contains("registry_redirect_tls_certificate_expiry_timestamp_seconds 1800000000\n"));
    /// assert!(text.contains("registry_redirect_tls_reloads_total{result=\"failure\"} 1\n"));
    /// ```
    pub fn set_tls_certificate_expiry(&self, not_after_seconds: i64) {
        *lock(&self.inner.tls_certificate_expiry) = Some(not_after_seconds);
    }

    /// Counts a reload of the TLS certificate that replaced it
    /// (`succeeded`), or one that failed and left the old one serving.
    pub fn record_tls_reload(&self, succeeded: bool) {
        self.inner.tls_reloads.record(succeeded);
    }

    /// Reports the blob-check cache and the mirror health of `checks` in
    /// the metrics. The layer calls this when it has both metrics and
    /// checks.
    pub fn observe_checks(&self, checks: &Checks) {
        *lock(&self.inner.checks) = Some(checks.clone());
    }

    /// Counts an accepted connection, open until the returned guard is
    /// dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.inner
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        self.inner.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            metrics: self.clone(),
        }
    }

    /// Renders every metric in the Prometheus text exposition format 0.0.4,
    /// each family with its `# HELP` and `# TYPE` lines.
    pub fn render(&self) -> String {
        render::render(&self.inner)
    }

    /// Records a decision the layer responded to. `policy` is the policy it
    /// was made under, `upstream` the upstream redirected to, and
    /// `started` when the request arrived. Requests outside `/v2` are
    /// counted by [`Metrics::record_inner_response`] instead.
    pub(crate) fn record_decision(
        &self,
        handle: &PolicyHandle,
        policy: &Arc<Policy>,
        decision: &Decision<'_>,
        upstream: Option<&Upstream>,
        started: Instant,
    ) {
        let label = DecisionLabel::of(&decision.outcome);
        if label == DecisionLabel::Resolve {
            // Counted by `record_resolved` once the upstream responded.
            return;
        }
        self.observe_latency(label, started);
        match (decision.route(), upstream, decision.status()) {
            (Some(route), Some(upstream), _) if label != DecisionLabel::Other => {
                self.count_routed(handle, policy, route.rule, upstream, label);
            }
            (_, _, Some(status)) => self.inner.unrouted.count(label, status),
            (_, _, None) => {}
        }
    }

    /// Records a resolve-mode request once the upstream responded: `rule`
    /// is the matching rule's name (empty for the default upstream),
    /// `upstream` the upstream fetched from, `status` the response's
    /// status, and `started` when the request arrived. Unlike redirects,
    /// these are counted under a lock and allocate their labels, which
    /// costs far less than the fetch they follow.
    pub fn record_resolved(
        &self,
        rule: &str,
        upstream: &str,
        status: StatusCode,
        started: Instant,
    ) {
        self.observe_latency(DecisionLabel::Resolve, started);
        let key = requests::SeriesKey {
            decision: DecisionLabel::Resolve,
            rule: rule.to_owned(),
            upstream: upstream.to_owned(),
            code: status.as_u16(),
        };
        lock(&self.inner.series)
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time to decide that a request is not for the registry.
    pub(crate) fn record_not_registry(&self, started: Instant) {
        self.observe_latency(DecisionLabel::NotRegistry, started);
    }

    /// Counts a request outside `/v2` by the inner service's response status.
    pub(crate) fn record_inner_response(&self, status: StatusCode) {
        self.inner
            .unrouted
            .count(DecisionLabel::NotRegistry, status);
    }

    fn observe_latency(&self, label: DecisionLabel, started: Instant) {
        if let Some(histogram) = self.inner.latency.get(label.index()) {
            histogram.observe(started.elapsed());
        }
    }

    fn count_routed(
        &self,
        handle: &PolicyHandle,
        policy: &Arc<Policy>,
        rule: Option<&Rule>,
        upstream: &Upstream,
        label: DecisionLabel,
    ) {
        let table = self.inner.table.load();
        if table.is_for(policy) {
            table.count(policy, rule, upstream, label);
            return;
        }
        drop(table);

        // The first request under a new policy, or a request still in
        // flight under an old one: build the policy's table. Only a table
        // of the handle's current policy is kept, so old requests do not
        // replace it.
        let table = RouteTable::build(policy, &mut lock(&self.inner.series));
        table.count(policy, rule, upstream, label);
        if Arc::ptr_eq(&handle.load(), policy) {
            self.inner.table.store(Arc::new(table));
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// An open connection, counted in `registry_redirect_connections_open`
/// until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    metrics: Metrics,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics
            .inner
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
