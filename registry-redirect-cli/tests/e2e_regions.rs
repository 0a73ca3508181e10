//! End-to-end test: skopeo pulls through `registry-redirect serve` from
//! clients labelled with cloud regions by a range file, and the blob
//! checks, fallbacks and health probes pick the registry for each blob.
//!
//! The work happens in `tests/e2e/regions.sh`. It starts three real
//! registries (Debian's `docker-registry`), one mirror per region and the
//! default, and deletes one layer from the region-a mirror. After pulls from
//! client networks in network namespaces, it checks the pulled manifests,
//! the registries' logs, the redirector's log and `explain`. It then kills
//! the region-a mirror and checks that the next pull goes to the fallback
//! region. Its header lists every check.
//!
//! `e2e/runner.rs` checks the machine first: see there for what it needs.

#[path = "e2e/runner.rs"]
mod runner;

#[test]
fn region_pull_falls_back_per_blob() {
    runner::run_script("region", "regions.sh", &[]);
}
