//! The access-log events of checked candidates and of rejections. When
//! these tests shared a binary with the other layer tests, their per-thread
//! `tracing` subscribers received no events, so they run in a binary of
//! their own.

mod log_capture;
mod mirror;

use log_capture::{access_lines, Capture};
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use mirror::{regional_policy, Mirror, DIGEST};
use registry_redirect_tower::{CheckSettings, Checks, RegistryRedirectLayer};
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::test]
async fn access_log_names_checks_and_chosen_upstream() {
    let mirror = Mirror::start().await;
    let (capture, _guard) = Capture::install();
    let checks = Checks::new(CheckSettings::default()).unwrap();
    let layer = RegistryRedirectLayer::new(regional_policy(&mirror, None)).with_checks(checks);

    let inner = service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let service = ServiceBuilder::new().layer(layer).service(inner);
    let mut request = Request::get(format!("/v2/app/blobs/{DIGEST}"))
        .body(Full::default())
        .unwrap();
    request
        .extensions_mut()
        .insert(SocketAddr::from(([127, 0, 0, 1], 40000)));
    service.oneshot(request).await.unwrap();

    let log = capture.text();
    let line = access_lines(&log)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no access-log event in {log}"));
    assert!(
        line.contains(
            "checks=buckets/eu-north-1:missing,buckets/eu-west-1:missing,registry:unverified"
        ),
        "{line}"
    );
    assert!(line.contains("upstream=\"registry\""), "{line}");
    assert!(line.contains("rule=\"aws-blobs\""), "{line}");
}

#[tokio::test]
async fn access_log_gives_rejection_message() {
    let (capture, _guard) = Capture::install();
    let mirror = Mirror::start().await;
    let layer = RegistryRedirectLayer::new(regional_policy(&mirror, None)).require_host(true);
    let inner = service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let service = ServiceBuilder::new().layer(layer).service(inner);

    for path in ["/v2/app/manifests/v1", "/v2/app/blobs/uploads/"] {
        let request = Request::get(path).body(Full::default()).unwrap();
        service.clone().oneshot(request).await.unwrap();
    }
    let request = Request::get("/v2/app/manifests/v1")
        .header("host", "registry.example")
        .body(Full::default())
        .unwrap();
    service.oneshot(request).await.unwrap();

    let log = capture.text();
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines[0].contains("status=400"), "{}", lines[0]);
    assert!(
        lines[0].contains("error=\"the HTTP/1.1 request has no Host header"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("status=400"), "{}", lines[1]);
    assert!(lines[1].contains("error=\""), "{}", lines[1]);
    // A request that is not rejected has no error field.
    assert!(!lines[2].contains("error="), "{}", lines[2]);
}
