//! [`Checks`]: picking the first candidate of a decision that passes the
//! runtime checks, and the [`Selection`] that records why.
//!
//! `decide()` returns several candidates when a mirror needs a check before
//! a redirect. They are walked in order, and each is skipped when
//!
//! 1. it is health checked and its probes say the mirror is unhealthy,
//! 2. a recent blob check on its mirror timed out or failed, or
//! 3. it needs a blob check and the blob is missing there, or the check
//!    times out or fails.
//!
//! The first candidate not skipped is chosen. The last candidate, the
//! default upstream, is chosen without any check when every other one is
//! skipped. Candidates are checked one after another, so a request waits
//! at most one blob check timeout per candidate it checks.

use std::fmt;

use registry_redirect_core::decision::Candidate;
use registry_redirect_core::{Policy, Upstream};

use crate::checks::{BlobCheck, BlobChecker, CheckSettings};
use crate::client::{ClientError, HttpClient};
use crate::handle::PolicyHandle;
use crate::health::{HealthError, HealthProbes};

/// The result of checking one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateResult {
    /// Chosen without a blob check: it needs none, or it is the last
    /// candidate.
    Unverified,
    /// Chosen: the mirror has the blob.
    Found,
    /// Skipped: the mirror lacks the blob.
    Missing,
    /// Skipped: the health probes mark the mirror unhealthy.
    Unhealthy,
    /// Skipped without a request: a recent check of the mirror timed out or
    /// failed.
    MirrorFailing,
    /// Skipped: the blob check timed out.
    TimedOut,
    /// Skipped: the blob check failed.
    Failed,
}

impl CandidateResult {
    /// Returns whether the candidate is chosen.
    pub fn is_chosen(self) -> bool {
        matches!(self, CandidateResult::Unverified | CandidateResult::Found)
    }

    /// Returns the name used in logs: `unverified`, `found`, `missing`,
    /// `unhealthy`, `mirror_failing`, `timeout` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateResult::Unverified => "unverified",
            CandidateResult::Found => "found",
            CandidateResult::Missing => "missing",
            CandidateResult::Unhealthy => "unhealthy",
            CandidateResult::MirrorFailing => "mirror_failing",
            CandidateResult::TimedOut => "timeout",
            CandidateResult::Failed => "error",
        }
    }
}

impl From<BlobCheck> for CandidateResult {
    fn from(check: BlobCheck) -> Self {
        match check {
            BlobCheck::Found => CandidateResult::Found,
            BlobCheck::Missing => CandidateResult::Missing,
            BlobCheck::MirrorFailing => CandidateResult::MirrorFailing,
            BlobCheck::TimedOut => CandidateResult::TimedOut,
            BlobCheck::Failed => CandidateResult::Failed,
        }
    }
}

/// One candidate visited by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateCheck {
    /// The candidate's upstream.
    pub upstream: String,
    /// The candidate's region, or `None` for a region-less base.
    pub region: Option<String>,
    /// The result of its checks.
    pub result: CandidateResult,
}

/// The outcome of walking the candidates of one decision. The layer adds it
/// to the extensions of the responses it writes after checks.
///
/// Its `Display` form, used in the access log, lists the candidates
/// visited as `upstream/region:result`, separated by commas:
/// `buckets/eu-west-1:missing,registry:unverified`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The index of the chosen candidate in the decision's candidates; pass
    /// it to `Decision::into_response_for_candidate`.
    pub chosen: usize,
    /// The candidates visited, in order, up to and including the chosen one.
    pub visited: Vec<CandidateCheck>,
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, check) in self.visited.iter().enumerate() {
            if position > 0 {
                f.write_str(",")?;
            }
            f.write_str(&check.upstream)?;
            if let Some(region) = &check.region {
                write!(f, "/{region}")?;
            }
            write!(f, ":{}", check.result.as_str())?;
        }
        Ok(())
    }
}

/// The runtime checks of candidates: blob checks with their cache, and
/// health probes. Cheap to clone: clones share everything.
///
/// Give it to [`RegistryRedirectLayer::with_checks`](crate::RegistryRedirectLayer::with_checks),
/// start the health probes for the policy, and restart them on each reload
/// (both with [`Checks::store_policy`]):
///
/// ```
/// use registry_redirect_core::{Policy, PolicySpec, UpstreamSpec};
/// use registry_redirect_tower::{CheckSettings, Checks, PolicyHandle, RegistryRedirectLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let policy_for = |url: &str| {
///     let mut spec = PolicySpec::new("main");
///     spec.upstreams.insert("main".into(), UpstreamSpec::new(url));
///     Policy::compile(&spec).unwrap()
/// };
/// let checks = Checks::new(CheckSettings::default()).unwrap();
/// let handle = PolicyHandle::new(policy_for("https://a.example"));
/// checks.health().start(&handle.load()).unwrap();
/// let layer = RegistryRedirectLayer::with_handle(handle.clone()).with_checks(checks.clone());
///
/// // On reload:
/// checks.store_policy(&handle, policy_for("https://b.example")).unwrap();
/// assert_eq!(handle.load().default_upstream().base(), Some("https://b.example/v2/"));
/// assert_eq!(checks.blobs().stats().checks_sent, 0);
/// # drop(layer);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Checks {
    blobs: BlobChecker,
    health: HealthProbes,
}

impl Checks {
    /// Creates blob checks and idle health probes sharing one HTTP client.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the HTTP client cannot be built.
    pub fn new(settings: CheckSettings) -> Result<Self, ClientError> {
        let client = HttpClient::new(settings.connect_timeout)?;
        Ok(Checks {
            blobs: BlobChecker::new(client.clone(), &settings),
            health: HealthProbes::new(client),
        })
    }

    /// Returns the blob checker, for its stats.
    pub fn blobs(&self) -> &BlobChecker {
        &self.blobs
    }

    /// Returns the health probes, to start them and read their state.
    pub fn health(&self) -> &HealthProbes {
        &self.health
    }

    /// Starts the health probes of `policy`, then stores it in `handle`, so
    /// that requests under the new policy meet probes for its mirrors.
    ///
    /// # Errors
    ///
    /// [`HealthError`] when the probes cannot start; `handle` then keeps its
    /// policy.
    pub fn store_policy(&self, handle: &PolicyHandle, policy: Policy) -> Result<(), HealthError> {
        self.health.start(&policy)?;
        handle.store(policy);
        Ok(())
    }

    /// Walks `candidates` in order and returns the first one that passes the
    /// checks, with what was found about each one visited. The last
    /// candidate is chosen without a check when every other is skipped.
    pub async fn select(&self, candidates: &[Candidate<'_>]) -> Selection {
        let last = candidates.len().saturating_sub(1);
        let mut visited = Vec::with_capacity(candidates.len());
        for (index, candidate) in candidates.iter().enumerate() {
            let result = if index == last {
                CandidateResult::Unverified
            } else {
                self.check(candidate).await
            };
            visited.push(CandidateCheck {
                upstream: candidate.upstream.name().to_owned(),
                region: candidate.region.map(str::to_owned),
                result,
            });
            if result.is_chosen() {
                return Selection {
                    chosen: index,
                    visited,
                };
            }
        }
        Selection {
            chosen: last,
            visited,
        }
    }

    async fn check(&self, candidate: &Candidate<'_>) -> CandidateResult {
        let Some(mirror) = mirror_base(candidate.upstream, candidate.region) else {
            return CandidateResult::Unverified;
        };
        if candidate.health_checked && self.health.health(mirror) == Some(false) {
            return CandidateResult::Unhealthy;
        }
        if !candidate.verify {
            if self.blobs.is_mirror_failing(mirror) {
                return CandidateResult::MirrorFailing;
            }
            return CandidateResult::Unverified;
        }
        self.blobs.check(&candidate.location, mirror).await.into()
    }
}

/// Returns the base URL of the mirror a candidate redirects to: the
/// regional base for its region, else the region-less base.
pub fn mirror_base<'p>(upstream: &'p Upstream, region: Option<&str>) -> Option<&'p str> {
    match region {
        Some(region) => upstream.regional_base(region),
        None => upstream.base(),
    }
}
