//! End-to-end test of the container image: built as an OCI image layout
//! without a container engine, pushed to a real registry, pulled back
//! through `registry-redirect serve` with skopeo, unpacked, and run.
//!
//! The work happens in `tests/e2e/image.sh`, whose header lists every
//! check. `e2e/runner.rs` checks the machine first: see there for what it
//! needs.

#[path = "e2e/runner.rs"]
mod runner;

#[test]
fn image_pulls_through_redirector_and_runs() {
    runner::run_script(
        "image",
        "image.sh",
        &[
            ("umoci", "umoci"),
            ("chroot", "coreutils"),
            ("strip", "binutils"),
        ],
    );
}
