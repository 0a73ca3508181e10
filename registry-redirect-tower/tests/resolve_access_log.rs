//! The access-log event of a resolve-mode request. It runs in a binary of
//! its own, because a per-thread `tracing` subscriber received no events
//! when the layer tests shared one (see `access_log.rs`).

mod log_capture;
mod token_registry;

use axum::http::StatusCode;
use log_capture::{access_lines, Capture};
use token_registry::{policy, resolver, Client, FakeRegistry, DIGEST, MANIFEST};

#[tokio::test]
async fn access_log_counts_body_bytes() {
    let registry = FakeRegistry::start().await;
    let (capture, _guard) = Capture::install();
    let mut client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));
    client.layer = client.layer.access_log(true);

    let (status, _, _) = client.get("/v2/nginx/manifests/latest").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = client.get(&format!("/v2/nginx/blobs/{DIGEST}")).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);

    let log = capture.text();
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].contains("outcome=\"resolve\""), "{}", lines[0]);
    // Quoted like the rule and upstream of every other access-log event.
    assert!(lines[0].contains("rule=\"\""), "{}", lines[0]);
    assert!(lines[0].contains("upstream=\"hub\""), "{}", lines[0]);
    assert!(lines[0].contains("kind=\"manifest\""), "{}", lines[0]);
    assert!(lines[0].contains("status=200"), "{}", lines[0]);
    assert!(
        lines[0].contains(&format!("bytes={}", MANIFEST.len())),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("kind=\"blob\""), "{}", lines[1]);
    assert!(lines[1].contains("status=307"), "{}", lines[1]);
    assert!(lines[1].contains("bytes=0"), "{}", lines[1]);
    assert!(lines[1].contains("streamed=false"), "{}", lines[1]);
}
