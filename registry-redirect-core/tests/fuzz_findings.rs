//! Regression tests for what the fuzz targets in `fuzz/` found.

use registry_redirect_core::policy::UpstreamKind;
use registry_redirect_core::{Policy, PolicySpec, RuleSpec, UpstreamSpec};

/// Found by the `policy_toml` target: `compile_blob_path` allowed `.` in a
/// blob path and checked only for `//`, so `/x/../{digest}` compiled. Its `Location`
/// `https://blobs.example/x/../sha256:...` is a different path once a
/// client resolves the dot segments, and `/{digest}/..` drops the digest.
#[test]
fn blob_path_with_dot_segments_is_rejected() {
    for blob_path in [
        "/x/../{digest}",
        "/./{digest}",
        "/{digest}/..",
        "/x/{digest}/.",
    ] {
        let mut spec = PolicySpec::new("k8s");
        spec.upstreams
            .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
        spec.upstreams.insert(
            "blobs".into(),
            UpstreamSpec {
                kind: UpstreamKind::BlobStore,
                blob_path: Some(blob_path.into()),
                ..UpstreamSpec::new("https://blobs.example")
            },
        );
        spec.rules.push(RuleSpec::new("blobs", "blobs"));
        let errors = Policy::compile(&spec).expect_err(blob_path);
        assert_eq!(
            errors.0[0].location.to_string(),
            "upstreams.blobs.blob_path",
            "{blob_path}"
        );
    }
}
