//! The access-log event of a request whose candidates were checked. When
//! this test shared a binary with the other layer tests, its per-thread
//! `tracing` subscriber received no events, so it runs in a binary of its own.

mod log_capture;
mod mirror;

use log_capture::Capture;
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
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
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

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|line| line.contains("registry_redirect::access"))
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
