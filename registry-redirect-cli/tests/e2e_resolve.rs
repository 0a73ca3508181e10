//! End-to-end test: resolve mode (`auth = "resolve"`) against a real
//! token-auth registry that redirects blobs to separate storage, and
//! containerd through a plain redirect to the same registry.
//!
//! The work happens in `tests/e2e/resolve.sh`. It starts a token issuer
//! (`tests/e2e/token_issuer.py`), Debian's `docker-registry` with token
//! auth, and nginx as the registry's front and as blob storage. skopeo then
//! fails through a plain redirect, and copies a public and a private image
//! through resolve mode, from a network namespace. The logs of storage, the
//! front, the registry, the issuer and the redirector show that blob bytes
//! went from storage to the client and never through the redirector.
//! Finally `ctr content fetch` (containerd) fetches the image through plain
//! redirects, because containerd authenticates again at the redirected
//! host. Its header lists every check.
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
fn resolve_mode_keeps_blobs_off_server() {
    runner::run_script("resolve", "resolve.sh", RESOLVE_TOOLS);
}
