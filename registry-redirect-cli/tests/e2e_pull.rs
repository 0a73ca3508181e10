//! End-to-end test: skopeo pulls through `registry-redirect serve` from two
//! client networks and lands on the registry that the config names for each.
//!
//! The work happens in `tests/e2e/pull.sh`, which starts two real registries
//! (Debian's `docker-registry`), makes the client networks with network
//! namespaces and checks the pulled manifests, the registries' access logs,
//! the redirector's log and raw responses, then pulls again over HTTPS.
//! Its header lists every check.
//!
//! `e2e/runner.rs` checks the machine first: see there for what it needs.

#[path = "e2e/runner.rs"]
mod runner;

#[test]
fn skopeo_pull_lands_on_matching_registry() {
    runner::run_script("pull", "pull.sh", &[("openssl", "openssl")]);
}
