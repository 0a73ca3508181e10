//! The access-log event of a request whose candidates were checked. When
//! this test shared a binary with the other layer tests, its per-thread
//! `tracing` subscriber received no events, so it runs in a binary of its own.

mod mirror;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use mirror::{regional_policy, Mirror, DIGEST};
use registry_redirect_tower::{CheckSettings, Checks, RegistryRedirectLayer};
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// A `tracing` writer that keeps what it is given.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

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
