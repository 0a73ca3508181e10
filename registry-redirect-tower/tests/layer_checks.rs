//! Candidate checks through the layer, with the policy of
//! [`mirror::regional_policy`]: blobs for clients on 127.0.0.0/8 come from
//! verified regional mirrors on a test server, else from the registry.

mod mirror;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mirror::{
    regional_policy as policy, regional_policy_at, wait_until, Behavior, Mirror, RawListener,
    DEFAULT_REGISTRY, DIGEST,
};
use registry_redirect_core::policy::HealthCheckSpec;
use registry_redirect_tower::health::probe_targets;
use registry_redirect_tower::select::CandidateResult;
use registry_redirect_tower::{
    CheckSettings, Checks, PolicyHandle, RegistryRedirectLayer, ResponseBody, Selection,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{service_fn, ServiceBuilder, ServiceExt};

fn blob_path(region: &str) -> String {
    format!("/mirror-{region}/containers/images/{DIGEST}")
}

fn registry_location() -> String {
    format!("{DEFAULT_REGISTRY}/v2/app/blobs/{DIGEST}")
}

fn checks() -> Checks {
    Checks::new(CheckSettings::default()).unwrap()
}

type TestResponse = Response<ResponseBody<Full<Bytes>>>;

/// Sends one request from 127.0.0.1 through the layer over a plain service.
async fn call(layer: RegistryRedirectLayer, method: Method, path: &str) -> (TestResponse, Bytes) {
    let inner = service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"inner"))))
    });
    let service = ServiceBuilder::new().layer(layer).service(inner);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::default())
        .unwrap();
    request
        .extensions_mut()
        .insert(SocketAddr::from(([127, 0, 0, 1], 40000)));
    let mut response = service.oneshot(request).await.unwrap();
    let body = response.body_mut().collect().await.unwrap().to_bytes();
    (response, body)
}

async fn get_blob(layer: RegistryRedirectLayer) -> TestResponse {
    let path = format!("/v2/app/blobs/{DIGEST}");
    call(layer, Method::GET, &path).await.0
}

fn location(response: &TestResponse) -> &str {
    response.headers()["location"].to_str().unwrap()
}

fn selection(response: &TestResponse) -> &Selection {
    response.extensions().get::<Selection>().unwrap()
}

#[tokio::test]
async fn blob_on_own_region_mirror() {
    let mirror = Mirror::start().await;
    mirror.set_status(&blob_path("eu-north-1"), 200);
    let layer = RegistryRedirectLayer::new(policy(&mirror, None)).with_checks(checks());

    let response = get_blob(layer).await;
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(location(&response), mirror.url(&blob_path("eu-north-1")));
    assert_eq!(selection(&response).chosen, 0);
    assert_eq!(selection(&response).to_string(), "buckets/eu-north-1:found");
}

#[tokio::test]
async fn blob_on_fallback_region_mirror() {
    let mirror = Mirror::start().await;
    mirror.set_status(&blob_path("eu-west-1"), 200);
    let layer = RegistryRedirectLayer::new(policy(&mirror, None)).with_checks(checks());

    let response = get_blob(layer).await;
    assert_eq!(location(&response), mirror.url(&blob_path("eu-west-1")));
    assert_eq!(
        selection(&response).to_string(),
        "buckets/eu-north-1:missing,buckets/eu-west-1:found"
    );
}

#[tokio::test]
async fn blob_on_no_mirror_goes_to_default() {
    let mirror = Mirror::start().await;
    let checks = checks();
    let layer = RegistryRedirectLayer::new(policy(&mirror, None)).with_checks(checks.clone());

    let response = get_blob(layer).await;
    assert_eq!(location(&response), registry_location());
    let selection = selection(&response);
    assert_eq!(selection.chosen, 2);
    let results: Vec<CandidateResult> = selection.visited.iter().map(|c| c.result).collect();
    assert_eq!(
        results,
        [
            CandidateResult::Missing,
            CandidateResult::Missing,
            CandidateResult::Unverified
        ]
    );
    assert_eq!(
        selection.to_string(),
        "buckets/eu-north-1:missing,buckets/eu-west-1:missing,registry:unverified"
    );
    assert_eq!(mirror.heads(), 2);
    assert_eq!(checks.blobs().stats().checks_sent, 2);
}

#[tokio::test]
async fn without_checks_first_candidate_unchecked() {
    let mirror = Mirror::start().await;
    let layer = RegistryRedirectLayer::new(policy(&mirror, None));

    let response = get_blob(layer).await;
    assert_eq!(location(&response), mirror.url(&blob_path("eu-north-1")));
    assert!(response.extensions().get::<Selection>().is_none());
    assert_eq!(mirror.heads(), 0);
}

#[tokio::test]
async fn plain_redirects_skip_checks() {
    let mirror = Mirror::start().await;
    let layer = RegistryRedirectLayer::new(policy(&mirror, None)).with_checks(checks());

    let (response, _) = call(layer, Method::GET, "/v2/app/manifests/1.0").await;
    assert_eq!(
        location(&response),
        format!("{DEFAULT_REGISTRY}/v2/app/manifests/1.0")
    );
    assert!(response.extensions().get::<Selection>().is_none());
    assert_eq!(mirror.heads(), 0);
}

#[tokio::test]
async fn checked_head_request_has_no_body() {
    let mirror = Mirror::start().await;
    mirror.set_status(&blob_path("eu-north-1"), 200);
    let layer = RegistryRedirectLayer::new(policy(&mirror, None)).with_checks(checks());

    let path = format!("/v2/app/blobs/{DIGEST}");
    let (response, body) = call(layer.clone(), Method::HEAD, &path).await;
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(location(&response), mirror.url(&blob_path("eu-north-1")));
    assert!(body.is_empty());

    let (_, body) = call(layer, Method::GET, &path).await;
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains(&blob_path("eu-north-1")), "{body}");
}

#[tokio::test]
async fn unhealthy_mirror_skipped_without_head() {
    let mirror = Mirror::start().await;
    mirror.set_status(&blob_path("eu-north-1"), 200);
    mirror.set_status(&blob_path("eu-west-1"), 200);
    mirror.set_status("/mirror-eu-north-1/", 503);
    let health = HealthCheckSpec {
        unhealthy_after: 1,
        ..HealthCheckSpec::default()
    };
    let policy = policy(&mirror, Some(health));
    let checks = checks();
    let targets = probe_targets(&policy)
        .into_iter()
        .map(|mut target| {
            target.interval = Duration::from_millis(50);
            target
        })
        .collect();
    checks.health().start_targets(targets).unwrap();
    let north = policy
        .upstream("buckets")
        .and_then(|upstream| upstream.regional_base("eu-north-1"))
        .unwrap()
        .to_owned();
    assert!(wait_until(|| checks.health().health(&north) == Some(false)).await);

    let layer = RegistryRedirectLayer::new(policy).with_checks(checks);
    let response = get_blob(layer).await;
    assert_eq!(location(&response), mirror.url(&blob_path("eu-west-1")));
    assert_eq!(
        selection(&response).to_string(),
        "buckets/eu-north-1:unhealthy,buckets/eu-west-1:found"
    );
    assert_eq!(mirror.heads(), 1);
}

#[tokio::test]
async fn silent_mirrors_fall_back_then_skipped() {
    let listener = RawListener::start(Behavior::NeverAnswer).await;
    let timeout = Duration::from_millis(200);
    let checks = Checks::new(CheckSettings {
        timeout,
        ..CheckSettings::default()
    })
    .unwrap();
    let policy = regional_policy_at(&listener.url(""), None);
    let layer = RegistryRedirectLayer::new(policy).with_checks(checks);

    // Both regional mirrors time out, one after the other.
    let started = Instant::now();
    let response = get_blob(layer.clone()).await;
    assert!(
        started.elapsed() < 2 * timeout + Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(location(&response), registry_location());
    assert_eq!(
        selection(&response).to_string(),
        "buckets/eu-north-1:timeout,buckets/eu-west-1:timeout,registry:unverified"
    );
    assert_eq!(listener.accepted(), 2);

    // The next request skips both without a connection, so without a wait.
    let response = get_blob(layer).await;
    assert_eq!(location(&response), registry_location());
    assert_eq!(
        selection(&response).to_string(),
        "buckets/eu-north-1:mirror_failing,buckets/eu-west-1:mirror_failing,registry:unverified"
    );
    assert_eq!(listener.accepted(), 2);
}

#[tokio::test]
async fn reload_restarts_probes_for_new_policy() {
    let mirror = Mirror::start().await;
    let checks = checks();
    let handle = PolicyHandle::new(policy(&mirror, None));
    checks.health().start(&handle.load()).unwrap();
    assert!(checks.health().snapshot().is_empty());

    checks
        .store_policy(&handle, policy(&mirror, Some(HealthCheckSpec::default())))
        .unwrap();
    let probed: Vec<Option<String>> = checks
        .health()
        .snapshot()
        .into_iter()
        .map(|state| state.target.region)
        .collect();
    assert_eq!(
        probed,
        [Some("eu-north-1".to_owned()), Some("eu-west-1".to_owned())]
    );
    assert!(handle
        .load()
        .upstream("buckets")
        .unwrap()
        .health_check()
        .is_some());
}

/// Sends one raw HTTP/1.1 request and returns the whole response as text.
async fn send(addr: SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: registry.example.com\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn axum_app_redirects_by_blob_presence() {
    let mirror = Mirror::start().await;
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(RegistryRedirectLayer::new(policy(&mirror, None)).with_checks(checks()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    let blob = format!("/v2/app/blobs/{DIGEST}");

    let response = send(addr, &blob).await;
    assert!(response.starts_with("HTTP/1.1 307"), "{response}");
    assert_eq!(
        header(&response, "location"),
        Some(registry_location().as_str())
    );

    // The missing result is cached, so use another digest once the blob
    // is on the mirror.
    let other = DIGEST.replace("0123", "4567");
    mirror.set_status(
        &format!("/mirror-eu-north-1/containers/images/{other}"),
        200,
    );
    let response = send(addr, &format!("/v2/app/blobs/{other}")).await;
    let expected = mirror.url(&format!("/mirror-eu-north-1/containers/images/{other}"));
    assert_eq!(header(&response, "location"), Some(expected.as_str()));

    let response = send(addr, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.abort();
}
