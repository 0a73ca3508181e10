//! [`BlobChecker`]: whether a mirror has a blob, checked with `HEAD` and cached.
//!
//! A blob is addressed by its digest, so once a mirror has it, it keeps
//! having it: found blobs stay in a bounded LRU cache until evicted. A
//! missing blob may be uploaded any moment, so "missing" is kept only for a
//! short time. Concurrent checks of one location share one `HEAD` request.
//!
//! A check that times out or fails marks the whole mirror as failing for a
//! while, and checks of any blob on it are skipped without a request until
//! then. A dead mirror thus delays the request that finds out by one
//! timeout, and later requests skip it at once. Requests that were already
//! checking other blobs on it when the first timeout fired each wait for
//! their own timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use moka::Expiry;

use crate::client::{HttpClient, RequestError};

/// Settings of blob checks and of the HTTP client they use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSettings {
    /// Maximum number of locations whose result is cached; the least
    /// recently used is evicted first. Default 100,000.
    pub cache_capacity: u64,
    /// How long a "missing" result is cached before the location is checked
    /// again. Default 30 s.
    pub missing_ttl: Duration,
    /// Maximum time a `HEAD` check may take. Default 1 s.
    pub timeout: Duration,
    /// How long a mirror is skipped after one of its checks timed out or
    /// failed. Default 10 s.
    pub failing_mirror_skip: Duration,
    /// Maximum time to open a connection, for checks and health probes.
    /// Default 1 s.
    pub connect_timeout: Duration,
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            cache_capacity: 100_000,
            missing_ttl: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
            failing_mirror_skip: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// The result of a blob check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobCheck {
    /// The mirror has the blob: `HEAD` returned 2xx or 3xx.
    Found,
    /// The mirror lacks the blob: `HEAD` returned 403, 404 or 410. Blob
    /// stores that deny listing return 403 for absent objects.
    Missing,
    /// Not sent, because a recent check of the same mirror timed out or
    /// failed.
    MirrorFailing,
    /// The `HEAD` request timed out.
    TimedOut,
    /// The `HEAD` request failed: no connection, a reset, a 5xx, or another
    /// status that gives no information about the blob (such as 401 or 429).
    Failed,
}

impl BlobCheck {
    /// Returns whether the blob can be served from the mirror.
    pub fn is_found(self) -> bool {
        self == BlobCheck::Found
    }
}

/// Counters of a [`BlobChecker`] since it was created, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobCheckStats {
    /// Checks whose result came from the cache.
    pub cache_hits: u64,
    /// Checks not in the cache, including those that joined a `HEAD`
    /// request already in flight.
    pub cache_misses: u64,
    /// `HEAD` requests sent.
    pub checks_sent: u64,
    /// `HEAD` requests that found the blob.
    pub found: u64,
    /// `HEAD` requests that found the blob missing.
    pub missing: u64,
    /// `HEAD` requests that timed out.
    pub timeouts: u64,
    /// `HEAD` requests that failed otherwise.
    pub failures: u64,
    /// Checks skipped because their mirror was failing.
    pub skipped_failing_mirror: u64,
    /// Locations in the cache. Evictions are applied in the background, so
    /// this may exceed the capacity for a short while.
    pub cached_entries: u64,
}

/// The cached result for one location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Found,
    Missing,
}

/// Keeps "found" until evicted and "missing" for the configured time.
struct PresenceExpiry {
    missing_ttl: Duration,
}

impl Expiry<String, Presence> for PresenceExpiry {
    fn expire_after_create(
        &self,
        _location: &String,
        presence: &Presence,
        _created_at: Instant,
    ) -> Option<Duration> {
        match presence {
            Presence::Found => None,
            Presence::Missing => Some(self.missing_ttl),
        }
    }
}

/// A `HEAD` request that gave no information about the blob.
#[derive(Debug, thiserror::Error)]
enum CheckFailure {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("HEAD {url} returned {status}; expected 2xx or 3xx (blob present) or 403, 404, 410 (blob missing)")]
    UnexpectedStatus { url: String, status: StatusCode },
}

#[derive(Default)]
struct Counters {
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    checks_sent: AtomicU64,
    found: AtomicU64,
    missing: AtomicU64,
    timeouts: AtomicU64,
    failures: AtomicU64,
    skipped_failing_mirror: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Inner {
    client: HttpClient,
    cache: Cache<String, Presence>,
    /// Mirror base → the instant until which it is skipped. One entry per
    /// mirror that failed recently; expired entries are removed when the
    /// map is written.
    failing: Mutex<HashMap<Box<str>, Instant>>,
    counters: Counters,
    timeout: Duration,
    failing_mirror_skip: Duration,
}

/// Checks with `HEAD` whether a mirror has a blob, caching the results.
/// Cheap to clone: clones share the cache, the failing mirrors and the
/// counters.
///
/// ```
/// use std::time::Duration;
/// use registry_redirect_tower::checks::{BlobCheck, BlobChecker, CheckSettings};
/// use registry_redirect_tower::client::HttpClient;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let settings = CheckSettings { timeout: Duration::from_millis(200), ..CheckSettings::default() };
/// let client = HttpClient::new(settings.connect_timeout).unwrap();
/// let checker = BlobChecker::new(client, &settings);
///
/// // A loopback port that no server listens on: the check fails, and the
/// // mirror is skipped without a request for the next 10 seconds.
/// let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
/// let mirror = format!("http://127.0.0.1:{port}/mirror");
/// let blob = format!("{mirror}/containers/images/sha256:0123");
/// assert_eq!(checker.check(&blob, &mirror).await, BlobCheck::Failed);
/// assert_eq!(checker.check(&blob, &mirror).await, BlobCheck::MirrorFailing);
/// assert_eq!(checker.stats().checks_sent, 1);
/// # }
/// ```
#[derive(Clone)]
pub struct BlobChecker {
    inner: Arc<Inner>,
}

impl BlobChecker {
    /// Creates a checker that sends its requests with `client`.
    pub fn new(client: HttpClient, settings: &CheckSettings) -> Self {
        let cache = Cache::builder()
            .max_capacity(settings.cache_capacity)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(PresenceExpiry {
                missing_ttl: settings.missing_ttl,
            })
            .build();
        BlobChecker {
            inner: Arc::new(Inner {
                client,
                cache,
                failing: Mutex::new(HashMap::new()),
                counters: Counters::default(),
                timeout: settings.timeout,
                failing_mirror_skip: settings.failing_mirror_skip,
            }),
        }
    }

    /// Checks whether the blob at `location` exists, from the cache or with
    /// one `HEAD` request that does not follow redirects. `mirror` is the
    /// base URL of the mirror that `location` is on: when a check times out
    /// or fails, every location on that mirror is skipped for a while and
    /// gets [`BlobCheck::MirrorFailing`].
    pub async fn check(&self, location: &str, mirror: &str) -> BlobCheck {
        if self.is_mirror_failing(mirror) {
            return BlobCheck::MirrorFailing;
        }
        let counters = &self.inner.counters;
        if let Some(presence) = self.inner.cache.get(location).await {
            bump(&counters.cache_hits);
            return presence.into();
        }

        bump(&counters.cache_misses);
        let result = self
            .inner
            .cache
            .try_get_with_by_ref(location, self.send_head(location, mirror))
            .await;
        match result {
            Ok(presence) => presence.into(),
            Err(failure) => match *failure {
                CheckFailure::Request(RequestError::TimedOut { .. }) => BlobCheck::TimedOut,
                _ => BlobCheck::Failed,
            },
        }
    }

    /// Returns whether a recent check of `mirror` timed out or failed, so
    /// its candidates are skipped; counts the skip in the stats.
    pub fn is_mirror_failing(&self, mirror: &str) -> bool {
        let failing = self
            .inner
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let is_failing = failing
            .get(mirror)
            .is_some_and(|until| Instant::now() < *until);
        drop(failing);
        if is_failing {
            bump(&self.inner.counters.skipped_failing_mirror);
        }
        is_failing
    }

    /// Returns the counters, for metrics.
    pub fn stats(&self) -> BlobCheckStats {
        let counters = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BlobCheckStats {
            cache_hits: load(&counters.cache_hits),
            cache_misses: load(&counters.cache_misses),
            checks_sent: load(&counters.checks_sent),
            found: load(&counters.found),
            missing: load(&counters.missing),
            timeouts: load(&counters.timeouts),
            failures: load(&counters.failures),
            skipped_failing_mirror: load(&counters.skipped_failing_mirror),
            cached_entries: self.inner.cache.entry_count(),
        }
    }

    /// Applies pending evictions and expirations to the cache now. The cache
    /// does this by itself as it is used; call this before reading
    /// [`BlobCheckStats::cached_entries`] when it must be exact.
    pub async fn run_pending_tasks(&self) {
        self.inner.cache.run_pending_tasks().await;
    }

    /// Sends the `HEAD` request for one location. Runs once for all the
    /// concurrent checks of that location; only its result is cached.
    async fn send_head(&self, location: &str, mirror: &str) -> Result<Presence, CheckFailure> {
        let counters = &self.inner.counters;
        bump(&counters.checks_sent);
        let result = self
            .inner
            .client
            .send(Method::HEAD, location, self.inner.timeout)
            .await;
        let presence = match result {
            Ok(status) => presence_from_status(location, status),
            Err(error) => Err(CheckFailure::Request(error)),
        };

        match &presence {
            Ok(Presence::Found) => bump(&counters.found),
            Ok(Presence::Missing) => bump(&counters.missing),
            Err(failure) => {
                match failure {
                    CheckFailure::Request(RequestError::TimedOut { .. }) => {
                        bump(&counters.timeouts)
                    }
                    _ => bump(&counters.failures),
                }
                self.mark_mirror_failing(mirror);
                tracing::warn!(
                    mirror,
                    error = %failure,
                    skip_seconds = self.inner.failing_mirror_skip.as_secs_f64(),
                    "blob check failed; skipping the mirror for a while",
                );
            }
        }
        presence
    }

    fn mark_mirror_failing(&self, mirror: &str) {
        let now = Instant::now();
        let until = now + self.inner.failing_mirror_skip;
        let mut failing = self
            .inner
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        failing.retain(|_, until| now < *until);
        failing.insert(mirror.into(), until);
    }
}

impl std::fmt::Debug for BlobChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobChecker")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn presence_from_status(location: &str, status: StatusCode) -> Result<Presence, CheckFailure> {
    if status.is_success() || status.is_redirection() {
        return Ok(Presence::Found);
    }
    match status {
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::GONE => Ok(Presence::Missing),
        _ => Err(CheckFailure::UnexpectedStatus {
            url: location.to_owned(),
            status,
        }),
    }
}

impl From<Presence> for BlobCheck {
    fn from(presence: Presence) -> Self {
        match presence {
            Presence::Found => BlobCheck::Found,
            Presence::Missing => BlobCheck::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_map_to_presence() {
        let cases = [
            (200, Some(Presence::Found)),
            (204, Some(Presence::Found)),
            (302, Some(Presence::Found)),
            (307, Some(Presence::Found)),
            (403, Some(Presence::Missing)),
            (404, Some(Presence::Missing)),
            (410, Some(Presence::Missing)),
            (400, None),
            (401, None),
            (429, None),
            (500, None),
            (503, None),
        ];
        for (code, expected) in cases {
            let status = StatusCode::from_u16(code).unwrap();
            let presence = presence_from_status("http://mirror.test/blob", status).ok();
            assert_eq!(presence, expected, "status {code}");
        }
    }

    #[test]
    fn unexpected_status_message_names_url_and_status() {
        let failure =
            presence_from_status("http://mirror.test/blob", StatusCode::UNAUTHORIZED).unwrap_err();
        assert_eq!(
            failure.to_string(),
            "HEAD http://mirror.test/blob returned 401 Unauthorized; expected 2xx or 3xx (blob present) or 403, 404, 410 (blob missing)"
        );
    }
}
