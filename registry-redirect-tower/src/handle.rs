//! [`PolicyHandle`]: the policy in force, replaceable while requests are served.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use registry_redirect_core::Policy;

/// A shared, replaceable [`Policy`].
///
/// Requests read the current policy without taking a lock (an `arc-swap`
/// load), and [`PolicyHandle::store`] swaps in a new one atomically: a
/// request in flight keeps the policy it started with, and the next request
/// sees the new one. Clones share the same policy.
///
/// ```
/// use registry_redirect_core::{Policy, PolicySpec, UpstreamSpec};
/// use registry_redirect_tower::PolicyHandle;
///
/// let policy_with = |url: &str| {
///     let mut spec = PolicySpec::new("main");
///     spec.upstreams.insert("main".into(), UpstreamSpec::new(url));
///     Policy::compile(&spec).unwrap()
/// };
/// let handle = PolicyHandle::new(policy_with("https://a.example"));
/// let reader = handle.clone();
/// handle.store(policy_with("https://b.example"));
/// assert_eq!(reader.load().default_upstream().base(), Some("https://b.example/v2/"));
/// ```
#[derive(Clone)]
pub struct PolicyHandle {
    current: Arc<ArcSwap<Policy>>,
}

impl PolicyHandle {
    /// Creates a handle containing `policy`.
    pub fn new(policy: Policy) -> Self {
        PolicyHandle {
            current: Arc::new(ArcSwap::from_pointee(policy)),
        }
    }

    /// Returns the current policy, for the duration of one request.
    pub fn load(&self) -> Guard<Arc<Policy>> {
        self.current.load()
    }

    /// Returns the current policy as an `Arc` that may be kept for longer.
    pub fn load_full(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Replaces the policy for every request that starts from now on.
    pub fn store(&self, policy: Policy) {
        self.current.store(Arc::new(policy));
    }
}

impl std::fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHandle").finish_non_exhaustive()
    }
}

impl From<Policy> for PolicyHandle {
    fn from(policy: Policy) -> Self {
        PolicyHandle::new(policy)
    }
}
