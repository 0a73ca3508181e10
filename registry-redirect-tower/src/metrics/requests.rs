//! Request counters by decision, rule, upstream and status code.
//!
//! A request under a rule is counted in a slot of a [`RouteTable`], built
//! once per policy: one slot per (rule, upstream, decision) that the
//! policy can produce, so recording is an index computation and one atomic
//! addition. Each slot is an `Arc<AtomicU64>` shared with the [`Series`]
//! map that rendering reads, and a table built for a new policy reuses the
//! counters of the series that it shares with the old one. Counters
//! therefore keep counting across reloads, and requests still in flight
//! under the old policy add to the same counters.
//!
//! Rejections and requests outside `/v2` have no rule or upstream and are
//! counted by status code alone, in fixed arrays.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use http::StatusCode;
use registry_redirect_core::policy::Rule;
use registry_redirect_core::{Outcome, Policy, Upstream};

/// The decision label of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DecisionLabel {
    Redirect,
    Candidates,
    ApiVersion,
    /// A fetch from an upstream with `auth = "resolve"`, counted by name
    /// once the upstream responded.
    Resolve,
    Reject,
    NotRegistry,
    /// An outcome added to the core after this code was written.
    Other,
}

impl DecisionLabel {
    pub(crate) const ALL: [DecisionLabel; 7] = [
        DecisionLabel::Redirect,
        DecisionLabel::Candidates,
        DecisionLabel::ApiVersion,
        DecisionLabel::Resolve,
        DecisionLabel::Reject,
        DecisionLabel::NotRegistry,
        DecisionLabel::Other,
    ];

    pub(crate) fn of(outcome: &Outcome<'_>) -> Self {
        match outcome {
            Outcome::Redirect { .. } => DecisionLabel::Redirect,
            Outcome::Candidates { .. } => DecisionLabel::Candidates,
            Outcome::AnswerApiVersion { .. } => DecisionLabel::ApiVersion,
            Outcome::Resolve { .. } => DecisionLabel::Resolve,
            Outcome::Reject(_) => DecisionLabel::Reject,
            Outcome::NotRegistry => DecisionLabel::NotRegistry,
            _ => DecisionLabel::Other,
        }
    }

    /// Returns the position in [`DecisionLabel::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DecisionLabel::Redirect => "redirect",
            DecisionLabel::Candidates => "candidates",
            DecisionLabel::ApiVersion => "api_version",
            DecisionLabel::Resolve => "resolve",
            DecisionLabel::Reject => "reject",
            DecisionLabel::NotRegistry => "not_registry",
            DecisionLabel::Other => "other",
        }
    }

    /// Returns the position among the decisions that have a route, whose
    /// counters live in a [`RouteTable`].
    fn routed_position(self) -> Option<usize> {
        match self {
            DecisionLabel::Redirect => Some(0),
            DecisionLabel::Candidates => Some(1),
            DecisionLabel::ApiVersion => Some(2),
            _ => None,
        }
    }

    /// Returns the position among the decisions counted by status code
    /// alone.
    fn unrouted_position(self) -> usize {
        match self {
            DecisionLabel::Reject => 0,
            DecisionLabel::NotRegistry => 1,
            _ => 2,
        }
    }
}

const ROUTED: [DecisionLabel; 3] = [
    DecisionLabel::Redirect,
    DecisionLabel::Candidates,
    DecisionLabel::ApiVersion,
];
const UNROUTED: [DecisionLabel; 3] = [
    DecisionLabel::Reject,
    DecisionLabel::NotRegistry,
    DecisionLabel::Other,
];

/// The rule label of requests that no rule matched, as in the access log.
const DEFAULT_RULE: &str = "";

/// The rule and upstream label of a routed request that its policy's table
/// has no slot for. No decision of the current core produces one.
pub(crate) const UNATTRIBUTED: &str = "*";

/// The labels of one request counter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SeriesKey {
    pub(crate) decision: DecisionLabel,
    pub(crate) rule: String,
    pub(crate) upstream: String,
    pub(crate) code: u16,
}

/// Every routed counter created so far, by labels: what rendering reads.
pub(crate) type Series = BTreeMap<SeriesKey, Arc<AtomicU64>>;

/// The slots of one route: a rule, or the default upstream.
#[derive(Debug)]
struct RouteSlots {
    /// Indexes into the policy's upstreams that this route can redirect
    /// to: the rule's upstream, its canary upstream and the default
    /// upstream, without repeats.
    upstreams: Box<[usize]>,
    /// The slot of the first upstream's first decision; the slots of
    /// upstream `u` and routed decision `d` follow at
    /// `first + u * ROUTED.len() + d`.
    first: usize,
}

/// The request counters of one policy, indexed by rule, upstream and
/// decision.
#[derive(Debug)]
pub(crate) struct RouteTable {
    /// The policy the indexes refer to. A `Weak` keeps the allocation, so
    /// no later policy can reuse its address while this table exists.
    policy: Weak<Policy>,
    /// One entry per rule, in rule order, then the default route.
    routes: Box<[RouteSlots]>,
    counters: Box<[Arc<AtomicU64>]>,
    /// One counter per routed decision, for requests without a slot.
    unattributed: [Arc<AtomicU64>; 3],
}

impl RouteTable {
    /// Creates a table that matches no policy, to start with.
    pub(crate) fn empty() -> Self {
        RouteTable {
            policy: Weak::new(),
            routes: Box::default(),
            counters: Box::default(),
            unattributed: Default::default(),
        }
    }

    /// Builds the table of `policy`, taking the counters of series that
    /// already exist from `series` and adding the others to it.
    pub(crate) fn build(policy: &Arc<Policy>, series: &mut Series) -> Self {
        let mut counter = |decision: DecisionLabel, rule: &str, upstream: &str| {
            let key = SeriesKey {
                decision,
                rule: rule.to_owned(),
                upstream: upstream.to_owned(),
                code: routed_code(policy, decision),
            };
            Arc::clone(series.entry(key).or_default())
        };

        let upstreams = policy.upstreams();
        let position = |wanted: &Upstream| {
            upstreams
                .iter()
                .position(|upstream| std::ptr::eq(upstream, wanted))
        };
        let default = position(policy.default_upstream());
        let mut route_upstreams: Vec<(&str, Vec<usize>)> = Vec::new();
        for rule in policy.rules() {
            let canary = policy.rule_canary(rule).map(|(upstream, _)| upstream);
            let mut indexes = Vec::new();
            let reachable = [Some(policy.rule_upstream(rule)), canary]
                .into_iter()
                .flatten()
                .filter_map(position)
                .chain(default);
            for index in reachable {
                if !indexes.contains(&index) {
                    indexes.push(index);
                }
            }
            route_upstreams.push((rule.name(), indexes));
        }
        route_upstreams.push((DEFAULT_RULE, default.into_iter().collect()));

        let mut routes = Vec::with_capacity(route_upstreams.len());
        let mut counters = Vec::new();
        for (rule, indexes) in route_upstreams {
            routes.push(RouteSlots {
                upstreams: indexes.clone().into_boxed_slice(),
                first: counters.len(),
            });
            for index in indexes {
                let upstream = upstreams.get(index).map_or("", |upstream| upstream.name());
                for decision in ROUTED {
                    counters.push(counter(decision, rule, upstream));
                }
            }
        }
        let unattributed = ROUTED.map(|decision| counter(decision, UNATTRIBUTED, UNATTRIBUTED));
        RouteTable {
            policy: Arc::downgrade(policy),
            routes: routes.into_boxed_slice(),
            counters: counters.into_boxed_slice(),
            unattributed,
        }
    }

    /// Returns whether the table's indexes refer to `policy`.
    pub(crate) fn is_for(&self, policy: &Arc<Policy>) -> bool {
        std::ptr::eq(self.policy.as_ptr(), Arc::as_ptr(policy))
    }

    /// Adds one request to the counter of `decision` under `rule` (`None`
    /// for the default upstream) that redirected to `upstream`. Both must
    /// belong to the table's policy; anything without a slot is counted as
    /// unattributed. Decisions without a route are ignored.
    pub(crate) fn count(
        &self,
        policy: &Policy,
        rule: Option<&Rule>,
        upstream: &Upstream,
        decision: DecisionLabel,
    ) {
        let Some(decision) = decision.routed_position() else {
            return;
        };
        let route = match rule {
            Some(rule) => self.routes.get(rule.index()),
            None => self.routes.last(),
        };
        let slot = route.and_then(|route| {
            let position = route.upstreams.iter().position(|&index| {
                policy
                    .upstreams()
                    .get(index)
                    .is_some_and(|candidate| std::ptr::eq(candidate, upstream))
            })?;
            self.counters
                .get(route.first + position * ROUTED.len() + decision)
        });
        let counter = slot.or_else(|| self.unattributed.get(decision));
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The status code of a routed decision: the policy's redirect status for
/// redirects, 200 for the API version check.
fn routed_code(policy: &Policy, decision: DecisionLabel) -> u16 {
    match decision {
        DecisionLabel::ApiVersion => StatusCode::OK.as_u16(),
        _ => policy.redirect_status().as_u16(),
    }
}

/// The lowest and highest status codes counted by [`StatusCounters`].
const FIRST_CODE: u16 = 100;
const LAST_CODE: u16 = 999;

/// Counters of the decisions without a route, by status code: an array per
/// decision, indexed by code. About 21 KiB in all.
#[derive(Debug)]
pub(crate) struct StatusCounters {
    by_code: [Box<[AtomicU64]>; 3],
}

impl Default for StatusCounters {
    fn default() -> Self {
        let array = || {
            (FIRST_CODE..=LAST_CODE)
                .map(|_| AtomicU64::new(0))
                .collect::<Box<[AtomicU64]>>()
        };
        StatusCounters {
            by_code: [array(), array(), array()],
        }
    }
}

impl StatusCounters {
    /// Adds one request to `decision` with `status`. `http` 1 accepts only
    /// status codes from 100 to 999, so every code has a counter.
    pub(crate) fn count(&self, decision: DecisionLabel, status: StatusCode) {
        let array = self.by_code.get(decision.unrouted_position());
        let index = usize::from(status.as_u16().saturating_sub(FIRST_CODE));
        if let Some(counter) = array.and_then(|array| array.get(index)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Returns the non-zero counters as (decision, code, count), in
    /// decision and code order.
    pub(crate) fn nonzero(&self) -> Vec<(DecisionLabel, u16, u64)> {
        let mut counts = Vec::new();
        for (decision, array) in UNROUTED.iter().zip(&self.by_code) {
            for (code, counter) in (FIRST_CODE..=LAST_CODE).zip(array.iter()) {
                let count = counter.load(Ordering::Relaxed);
                if count > 0 {
                    counts.push((*decision, code, count));
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use registry_redirect_core::{PolicySpec, RuleSpec, UpstreamSpec};

    use super::*;

    fn policy(rules: &[(&str, &str)]) -> Arc<Policy> {
        let mut spec = PolicySpec::new("k8s");
        for name in ["k8s", "hub", "mirror"] {
            spec.upstreams.insert(
                name.into(),
                UpstreamSpec::new(format!("https://{name}.example")),
            );
        }
        for (rule, upstream) in rules {
            spec.rules.push(RuleSpec::new(*rule, *upstream));
        }
        Arc::new(Policy::compile(&spec).unwrap())
    }

    fn value(series: &Series, decision: DecisionLabel, rule: &str, upstream: &str) -> u64 {
        let key = SeriesKey {
            decision,
            rule: rule.into(),
            upstream: upstream.into(),
            code: 307,
        };
        series[&key].load(Ordering::Relaxed)
    }

    #[test]
    fn table_counts_by_rule_and_upstream() {
        let policy = policy(&[("lab", "hub")]);
        let mut series = Series::new();
        let table = RouteTable::build(&policy, &mut series);
        let lab = &policy.rules()[0];
        let hub = policy.upstream("hub").unwrap();
        let k8s = policy.upstream("k8s").unwrap();
        let mirror = policy.upstream("mirror").unwrap();

        table.count(&policy, Some(lab), hub, DecisionLabel::Redirect);
        table.count(&policy, Some(lab), hub, DecisionLabel::Redirect);
        table.count(&policy, Some(lab), k8s, DecisionLabel::Candidates);
        table.count(&policy, None, k8s, DecisionLabel::Redirect);
        // The lab rule never redirects to the mirror.
        table.count(&policy, Some(lab), mirror, DecisionLabel::Redirect);

        assert_eq!(value(&series, DecisionLabel::Redirect, "lab", "hub"), 2);
        assert_eq!(value(&series, DecisionLabel::Candidates, "lab", "k8s"), 1);
        assert_eq!(value(&series, DecisionLabel::Redirect, "", "k8s"), 1);
        assert_eq!(value(&series, DecisionLabel::Redirect, "*", "*"), 1);
        assert_eq!(value(&series, DecisionLabel::Redirect, "lab", "k8s"), 0);
    }

    #[test]
    fn new_table_keeps_shared_counters() {
        let old = policy(&[("lab", "hub")]);
        let mut series = Series::new();
        let old_table = RouteTable::build(&old, &mut series);
        let new = policy(&[("first", "mirror"), ("lab", "hub")]);
        let new_table = RouteTable::build(&new, &mut series);
        assert!(old_table.is_for(&old));
        assert!(!old_table.is_for(&new));

        old_table.count(
            &old,
            Some(&old.rules()[0]),
            old.upstream("hub").unwrap(),
            DecisionLabel::Redirect,
        );
        new_table.count(
            &new,
            Some(&new.rules()[1]),
            new.upstream("hub").unwrap(),
            DecisionLabel::Redirect,
        );
        assert_eq!(value(&series, DecisionLabel::Redirect, "lab", "hub"), 2);
    }

    #[test]
    fn decision_index_is_position_in_all() {
        for (position, decision) in DecisionLabel::ALL.iter().enumerate() {
            assert_eq!(decision.index(), position, "{decision:?}");
        }
    }

    #[test]
    fn status_counters_keep_codes_apart() {
        let counters = StatusCounters::default();
        counters.count(DecisionLabel::Reject, StatusCode::NOT_FOUND);
        counters.count(DecisionLabel::Reject, StatusCode::NOT_FOUND);
        counters.count(DecisionLabel::Reject, StatusCode::METHOD_NOT_ALLOWED);
        counters.count(DecisionLabel::NotRegistry, StatusCode::OK);
        let largest = StatusCode::from_u16(999).unwrap();
        counters.count(DecisionLabel::Other, largest);
        assert_eq!(
            counters.nonzero(),
            [
                (DecisionLabel::Reject, 404, 2),
                (DecisionLabel::Reject, 405, 1),
                (DecisionLabel::NotRegistry, 200, 1),
                (DecisionLabel::Other, 999, 1),
            ]
        );
    }
}
