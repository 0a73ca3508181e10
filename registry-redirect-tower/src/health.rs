//! [`HealthProbes`]: periodic `GET` probes of upstream mirrors, and whether
//! each mirror is healthy.
//!
//! Every base of an upstream with a `health_check` (its region-less base
//! and each regional mirror) gets its own Tokio task. It sends
//! `GET` to the probe URL every `interval_seconds`, allowing `timeout_ms`
//! per probe. Any status below 500 counts as a pass, because a registry
//! returns 401 for `/v2/` when it requires a token, and a blob store
//! returns 403 or 404 for its root. After `unhealthy_after` consecutive failures the
//! mirror is unhealthy, until a probe passes again. A mirror is healthy
//! until its probes show otherwise, so a fresh start skips nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Method;
use registry_redirect_core::policy::UpstreamKind;
use registry_redirect_core::{Policy, Upstream};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::client::HttpClient;

/// One mirror to probe, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The upstream's name.
    pub upstream: String,
    /// The mirror's region, or `None` for the upstream's region-less base.
    pub region: Option<String>,
    /// The mirror's base URL, as [`Upstream::base`] or
    /// [`Upstream::regional_base`] returns it. Candidates are matched to
    /// their health by this value.
    pub base: String,
    /// The URL probed with `GET`.
    pub url: String,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// Maximum time a probe may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive failures after which the mirror is unhealthy.
    pub unhealthy_after: u32,
}

/// The health of one probed mirror at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorHealth {
    /// The probed mirror and the probe settings.
    pub target: ProbeTarget,
    /// Whether the mirror receives redirects.
    pub healthy: bool,
    /// Failures since the last pass.
    pub consecutive_failures: u32,
    /// Probes sent since the probe started.
    pub probes: u64,
    /// Probes failed since the probe started.
    pub failures: u64,
    /// The error of the last probe, if it failed.
    pub last_error: Option<String>,
}

/// An error starting health probes.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Probes run as Tokio tasks, and no runtime was running.
    #[error("health probes need a Tokio runtime, and none is running: start them from async code run by Tokio")]
    NoRuntime,
}

/// Lists the mirrors of `policy` that have health probes: for every upstream
/// with a `health_check`, its region-less base and each regional base, in
/// the policy's upstream order. A base shared by two upstreams is listed once.
pub fn probe_targets(policy: &Policy) -> Vec<ProbeTarget> {
    let mut targets: Vec<ProbeTarget> = Vec::new();
    for upstream in policy.upstreams() {
        let Some(check) = upstream.health_check() else {
            continue;
        };
        let regional = upstream.regions().filter_map(|region| {
            upstream
                .regional_base(region)
                .map(|base| (Some(region), base))
        });
        let bases = upstream.base().map(|base| (None, base)).into_iter();
        for (region, base) in bases.chain(regional) {
            if targets.iter().any(|target| target.base == base) {
                continue;
            }
            targets.push(ProbeTarget {
                upstream: upstream.name().to_owned(),
                region: region.map(str::to_owned),
                base: base.to_owned(),
                url: probe_url(upstream, base, check.path.as_deref()),
                interval: Duration::from_secs(check.interval_seconds),
                timeout: Duration::from_millis(check.timeout_ms),
                unhealthy_after: check.unhealthy_after,
            });
        }
    }
    targets
}

/// Builds the probe URL of one base of `upstream`. A registry is probed at
/// its `/v2/` unless `path` is given, which then replaces `/v2/`. A blob
/// store is probed at `path` below its base, or at `/` below it.
pub fn probe_url(upstream: &Upstream, base: &str, path: Option<&str>) -> String {
    let (root, default_path) = match upstream.kind() {
        UpstreamKind::Registry => (base.strip_suffix("/v2/").unwrap_or(base), "/v2/"),
        UpstreamKind::BlobStore => (base.trim_end_matches('/'), "/"),
    };
    let path = path.unwrap_or(default_path);
    let slash = if path.starts_with('/') { "" } else { "/" };
    format!("{root}{slash}{path}")
}

/// The live state of one probe, written by its task.
#[derive(Debug)]
struct ProbeState {
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    probes: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ProbeState {
    fn new() -> Self {
        ProbeState {
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            probes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn record(&self, target: &ProbeTarget, failure: Option<String>) {
        self.probes.fetch_add(1, Ordering::Relaxed);
        let Some(error) = failure else {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            *self.lock_last_error() = None;
            if !self.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    upstream = target.upstream,
                    region = target.region,
                    url = target.url,
                    "mirror passed its health probe; sending clients to it again",
                );
            }
            return;
        };

        self.failures.fetch_add(1, Ordering::Relaxed);
        let failed_in_a_row = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let becomes_unhealthy = failed_in_a_row >= target.unhealthy_after
            && self.healthy.swap(false, Ordering::Relaxed);
        if becomes_unhealthy {
            tracing::warn!(
                upstream = target.upstream,
                region = target.region,
                error = %error,
                failed_in_a_row,
                "mirror failed its health probes; skipping it until a probe passes",
            );
        } else {
            tracing::debug!(
                upstream = target.upstream,
                region = target.region,
                error = %error,
                failed_in_a_row,
                "health probe failed",
            );
        }
        *self.lock_last_error() = Some(error);
    }

    fn lock_last_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self, target: &ProbeTarget) -> MirrorHealth {
        MirrorHealth {
            target: target.clone(),
            healthy: self.healthy.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            probes: self.probes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self.lock_last_error().clone(),
        }
    }
}

struct Running {
    target: ProbeTarget,
    state: Arc<ProbeState>,
    task: JoinHandle<()>,
}

struct Inner {
    client: HttpClient,
    /// Base → state, read on the request path without a lock.
    states: ArcSwap<HashMap<String, Arc<ProbeState>>>,
    /// The probes running now; locked only to start, stop or list them.
    running: Mutex<Vec<Running>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let running = self
            .running
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for probe in running.drain(..) {
            probe.task.abort();
        }
    }
}

/// The health probes of the mirrors of a policy, and their results.
///
/// Cheap to clone: clones share the probes. The probes stop when
/// [`HealthProbes::stop`] is called or the last clone is dropped.
///
/// ```
/// use registry_redirect_core::policy::HealthCheckSpec;
/// use registry_redirect_core::{Policy, PolicySpec, UpstreamSpec};
/// use registry_redirect_tower::client::HttpClient;
/// use registry_redirect_tower::health::HealthProbes;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut spec = PolicySpec::new("main");
/// spec.upstreams.insert("main".into(), UpstreamSpec::new("https://registry.example"));
/// spec.upstreams.insert(
///     "mirror".into(),
///     UpstreamSpec {
///         health_check: Some(HealthCheckSpec::default()),
///         ..UpstreamSpec::new("http://127.0.0.1:9/mirror")
///     },
/// );
/// let policy = Policy::compile(&spec).unwrap();
///
/// let probes = HealthProbes::new(HttpClient::new(std::time::Duration::from_secs(1)).unwrap());
/// probes.start(&policy).unwrap();
/// assert_eq!(probes.health("http://127.0.0.1:9/mirror/v2/"), Some(true));
/// assert_eq!(probes.health("https://registry.example/v2/"), None);
/// probes.stop();
/// assert!(probes.snapshot().is_empty());
/// # }
/// ```
#[derive(Clone)]
pub struct HealthProbes {
    inner: Arc<Inner>,
}

impl HealthProbes {
    /// Creates a set of probes, none running yet, that send with `client`.
    pub fn new(client: HttpClient) -> Self {
        HealthProbes {
            inner: Arc::new(Inner {
                client,
                states: ArcSwap::from_pointee(HashMap::new()),
                running: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Probes the mirrors of `policy` (see [`probe_targets`]), replacing the
    /// probes running before. Call it again with the new policy after each
    /// policy reload.
    ///
    /// # Errors
    ///
    /// [`HealthError::NoRuntime`] when the policy has probes and this is
    /// called outside a Tokio runtime.
    pub fn start(&self, policy: &Policy) -> Result<(), HealthError> {
        self.start_targets(probe_targets(policy))
    }

    /// Probes `targets`, replacing the probes running before. A probe whose
    /// target is unchanged keeps running with its state; other probes stop,
    /// and new ones start healthy with a first probe at once.
    ///
    /// # Errors
    ///
    /// [`HealthError::NoRuntime`] when `targets` is not empty and this is
    /// called outside a Tokio runtime. The running probes are then unchanged.
    pub fn start_targets(&self, targets: Vec<ProbeTarget>) -> Result<(), HealthError> {
        let runtime = if targets.is_empty() {
            None
        } else {
            Some(tokio::runtime::Handle::try_current().map_err(|_| HealthError::NoRuntime)?)
        };
        let mut running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut previous = std::mem::take(&mut *running);

        for target in targets {
            if running.iter().any(|probe| probe.target.base == target.base) {
                continue;
            }
            let unchanged = previous
                .iter()
                .position(|probe| probe.target == target)
                .map(|index| previous.swap_remove(index));
            let probe = match (unchanged, &runtime) {
                (Some(probe), _) => probe,
                (None, Some(runtime)) => {
                    let state = Arc::new(ProbeState::new());
                    let task = runtime.spawn(probe_loop(
                        self.inner.client.clone(),
                        target.clone(),
                        state.clone(),
                    ));
                    Running {
                        target,
                        state,
                        task,
                    }
                }
                // `runtime` is only `None` when `targets` is empty.
                (None, None) => continue,
            };
            running.push(probe);
        }
        for probe in previous {
            probe.task.abort();
        }

        let states = running
            .iter()
            .map(|probe| (probe.target.base.clone(), probe.state.clone()))
            .collect();
        self.inner.states.store(Arc::new(states));
        Ok(())
    }

    /// Stops every probe. Afterwards [`HealthProbes::health`] returns `None`
    /// for every mirror, so no candidate is skipped as unhealthy.
    pub fn stop(&self) {
        // Without targets no runtime is needed, so this cannot fail.
        let _ = self.start_targets(Vec::new());
    }

    /// Returns whether the mirror at `base` is healthy, or `None` when it is
    /// not probed. `base` is [`Upstream::base`] or [`Upstream::regional_base`].
    /// Reads without a lock or an allocation.
    pub fn health(&self, base: &str) -> Option<bool> {
        self.inner
            .states
            .load()
            .get(base)
            .map(|state| state.healthy.load(Ordering::Relaxed))
    }

    /// Returns the state of every probe, in start order, for metrics and
    /// `explain`.
    pub fn snapshot(&self) -> Vec<MirrorHealth> {
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        running
            .iter()
            .map(|probe| probe.state.snapshot(&probe.target))
            .collect()
    }
}

impl std::fmt::Debug for HealthProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthProbes")
            .field("probes", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// Probes `target` forever; the task is aborted to stop it.
async fn probe_loop(client: HttpClient, target: ProbeTarget, state: Arc<ProbeState>) {
    // `interval` rejects a zero period.
    let period = target.interval.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let failure = match client.send(Method::GET, &target.url, target.timeout).await {
            Ok(status) if status.is_server_error() => Some(format!(
                "GET {} returned {status}; expected a status below 500",
                target.url
            )),
            Ok(_) => None,
            Err(error) => Some(error.to_string()),
        };
        state.record(&target, failure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_redirect_core::policy::HealthCheckSpec;
    use registry_redirect_core::{PolicySpec, UpstreamSpec};

    fn policy() -> Policy {
        let mut spec = PolicySpec::new("main");
        spec.upstreams
            .insert("main".into(), UpstreamSpec::new("https://registry.example"));
        spec.upstreams.insert(
            "probed".into(),
            UpstreamSpec {
                health_check: Some(HealthCheckSpec::default()),
                ..UpstreamSpec::new("https://probed.example/base")
            },
        );
        spec.upstreams.insert(
            "probed-path".into(),
            UpstreamSpec {
                health_check: Some(HealthCheckSpec {
                    path: Some("healthz".into()),
                    ..HealthCheckSpec::default()
                }),
                ..UpstreamSpec::new("https://probed-path.example")
            },
        );
        spec.upstreams.insert(
            "buckets".into(),
            UpstreamSpec {
                kind: UpstreamKind::BlobStore,
                regions: vec!["eu-west-1".into(), "us-east-1".into()],
                health_check: Some(HealthCheckSpec {
                    interval_seconds: 5,
                    timeout_ms: 300,
                    unhealthy_after: 2,
                    path: None,
                }),
                ..UpstreamSpec::new("https://bucket-{region}.example/store/")
            },
        );
        spec.upstreams.insert(
            "bucket-path".into(),
            UpstreamSpec {
                kind: UpstreamKind::BlobStore,
                health_check: Some(HealthCheckSpec {
                    path: Some("/ping".into()),
                    ..HealthCheckSpec::default()
                }),
                ..UpstreamSpec::new("https://bucket.example")
            },
        );
        Policy::compile(&spec).unwrap()
    }

    #[test]
    fn probe_urls_by_kind_and_path() {
        let targets = probe_targets(&policy());
        let urls: Vec<(&str, Option<&str>, &str, &str)> = targets
            .iter()
            .map(|target| {
                (
                    target.upstream.as_str(),
                    target.region.as_deref(),
                    target.base.as_str(),
                    target.url.as_str(),
                )
            })
            .collect();
        assert_eq!(
            urls,
            [
                (
                    "bucket-path",
                    None,
                    "https://bucket.example",
                    "https://bucket.example/ping"
                ),
                (
                    "buckets",
                    Some("eu-west-1"),
                    "https://bucket-eu-west-1.example/store",
                    "https://bucket-eu-west-1.example/store/"
                ),
                (
                    "buckets",
                    Some("us-east-1"),
                    "https://bucket-us-east-1.example/store",
                    "https://bucket-us-east-1.example/store/"
                ),
                (
                    "probed",
                    None,
                    "https://probed.example/base/v2/",
                    "https://probed.example/base/v2/"
                ),
                (
                    "probed-path",
                    None,
                    "https://probed-path.example/v2/",
                    "https://probed-path.example/healthz"
                ),
            ]
        );
    }

    #[test]
    fn probe_settings_come_from_policy() {
        let targets = probe_targets(&policy());
        let bucket = targets
            .iter()
            .find(|target| target.upstream == "buckets")
            .unwrap();
        assert_eq!(bucket.interval, Duration::from_secs(5));
        assert_eq!(bucket.timeout, Duration::from_millis(300));
        assert_eq!(bucket.unhealthy_after, 2);
    }

    #[test]
    fn upstreams_without_health_check_not_probed() {
        let targets = probe_targets(&policy());
        assert!(targets.iter().all(|target| target.upstream != "main"));
    }

    #[test]
    fn start_outside_runtime_is_an_error() {
        let probes = HealthProbes::new(HttpClient::new(Duration::from_secs(1)).unwrap());
        let error = probes.start(&policy()).unwrap_err();
        assert!(matches!(error, HealthError::NoRuntime));
        assert!(probes.snapshot().is_empty());
        // Stopping needs no runtime.
        probes.stop();
    }

    #[test]
    fn state_turns_unhealthy_after_threshold_and_back() {
        let target = probe_targets(&policy()).swap_remove(1);
        assert_eq!(target.unhealthy_after, 2);
        let state = ProbeState::new();

        state.record(&target, Some("first failure".into()));
        assert!(state.healthy.load(Ordering::Relaxed));
        state.record(&target, Some("second failure".into()));
        assert!(!state.healthy.load(Ordering::Relaxed));
        let snapshot = state.snapshot(&target);
        assert_eq!(snapshot.consecutive_failures, 2);
        assert_eq!(snapshot.last_error.as_deref(), Some("second failure"));

        state.record(&target, None);
        let snapshot = state.snapshot(&target);
        assert!(snapshot.healthy);
        assert_eq!(snapshot.consecutive_failures, 0);
        assert_eq!(snapshot.probes, 3);
        assert_eq!(snapshot.failures, 2);
        assert_eq!(snapshot.last_error, None);
    }
}
