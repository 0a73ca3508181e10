//! End-to-end test: a real token-auth registry that redirects blobs to
//! separate storage, reached through `registry-redirect serve`.
//!
//! The work happens in `tests/e2e/resolve.sh`. It starts a token issuer
//! (`tests/e2e/token_issuer.py`), Debian's `docker-registry` with token
//! auth, and nginx as the registry's front and as blob storage. It checks
//! that skopeo copies the image straight from the front, that skopeo fails
//! through a plain redirect, and that containerd (`ctr content fetch`)
//! succeeds through it, because containerd authenticates again at the
//! redirected host. Its header lists every check.
//!
//! `e2e/runner.rs` checks the machine first: see there for what it needs,
//! beyond the tools below.

#[path = "e2e/runner.rs"]
mod runner;

/// Tools `resolve.sh` needs beyond the runner's, with their Debian packages.
const RESOLVE_TOOLS: &[(&str, &str)] = &[
    ("nginx", "nginx"),
    ("openssl", "openssl"),
    ("python3", "python3"),
    ("containerd", "containerd"),
    ("ctr", "containerd"),
];

#[test]
fn token_auth_registry_through_redirect() {
    runner::run_script("resolve", "resolve.sh", RESOLVE_TOOLS);
}
