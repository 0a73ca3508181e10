//! The layer over a plain tower service, without a network.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use registry_redirect_core::{Policy, PolicySpec, RuleSpec, UpstreamSpec};
use registry_redirect_tower::{RegistryRedirectLayer, ResponseBody};
use tower::{service_fn, ServiceBuilder, ServiceExt};

fn policy() -> Policy {
    let mut spec = PolicySpec::new("k8s");
    spec.trusted_proxies = vec!["10.0.0.0/8".into()];
    spec.upstreams
        .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
    spec.upstreams
        .insert("lab".into(), UpstreamSpec::new("https://lab.example"));
    spec.rules.push(RuleSpec {
        clients: vec!["192.168.0.0/24".into()],
        ..RuleSpec::new("lab", "lab")
    });
    Policy::compile(&spec).unwrap()
}

async fn call(request: Request<Full<Bytes>>) -> (Response<ResponseBody<Full<Bytes>>>, Bytes) {
    call_through(RegistryRedirectLayer::new(policy()), request).await
}

/// Sends `request` through `layer` over an inner service that responds
/// `inner`, and reads the whole body.
async fn call_through(
    layer: RegistryRedirectLayer,
    request: Request<Full<Bytes>>,
) -> (Response<ResponseBody<Full<Bytes>>>, Bytes) {
    let inner = service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"inner"))))
    });
    let service = ServiceBuilder::new().layer(layer).service(inner);
    let mut response = service.oneshot(request).await.unwrap();
    let body = response.body_mut().collect().await.unwrap().to_bytes();
    (response, body)
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path)
}

fn location(response: &Response<ResponseBody<Full<Bytes>>>) -> &str {
    response.headers()["location"].to_str().unwrap()
}

#[tokio::test]
async fn non_registry_paths_reach_inner_service() {
    for path in ["/", "/healthz", "/v2foo", "/v1/_ping"] {
        let (response, body) = call(get(path).body(Full::default()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(body, "inner", "{path}");
    }
}

#[tokio::test]
async fn socket_addr_extension_is_the_peer() {
    let mut request = get("/v2/app/manifests/1").body(Full::default()).unwrap();
    request
        .extensions_mut()
        .insert(SocketAddr::from(([192, 168, 0, 7], 40000)));
    let (response, _) = call(request).await;
    assert_eq!(
        location(&response),
        "https://lab.example/v2/app/manifests/1"
    );
}

#[tokio::test]
async fn connect_info_extension_is_the_peer() {
    let mut request = get("/v2/app/manifests/1").body(Full::default()).unwrap();
    let peer = SocketAddr::from(([192, 168, 0, 7], 40000));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let (response, _) = call(request).await;
    assert_eq!(
        location(&response),
        "https://lab.example/v2/app/manifests/1"
    );
}

#[tokio::test]
async fn missing_peer_uses_default_upstream() {
    let (response, _) = call(get("/v2/app/manifests/1").body(Full::default()).unwrap()).await;
    assert_eq!(
        location(&response),
        "https://registry.k8s.io/v2/app/manifests/1"
    );
}

#[tokio::test]
async fn forwarded_header_from_trusted_proxy() {
    let mut request = get("/v2/app/tags/list")
        .header("x-forwarded-for", "192.168.0.9")
        .body(Full::default())
        .unwrap();
    request
        .extensions_mut()
        .insert(SocketAddr::from(([10, 0, 0, 1], 40000)));
    let (response, _) = call(request).await;
    assert_eq!(location(&response), "https://lab.example/v2/app/tags/list");

    let mut request = get("/v2/app/tags/list")
        .header("x-forwarded-for", "192.168.0.9")
        .body(Full::default())
        .unwrap();
    request
        .extensions_mut()
        .insert(SocketAddr::from(([203, 0, 113, 1], 40000)));
    let (response, _) = call(request).await;
    assert_eq!(
        location(&response),
        "https://registry.k8s.io/v2/app/tags/list"
    );
}

#[tokio::test]
async fn error_body_and_size_hint() {
    use http_body::Body;
    let inner = service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let service = ServiceBuilder::new()
        .layer(RegistryRedirectLayer::new(policy()))
        .service(inner);
    let request = get("/v2/_catalog").body(Full::default()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let size = response.body().size_hint().exact().unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(size, body.len() as u64);
    assert!(body.starts_with(b"{\"errors\":[{\"code\":\"UNSUPPORTED\""));
}

#[tokio::test]
async fn require_host_rejects_http11_without_host() {
    let layer = RegistryRedirectLayer::new(policy()).require_host(true);
    assert!(layer.requires_host());
    let send = |request: Request<Full<Bytes>>| call_through(layer.clone(), request);

    let (response, body) = send(get("/v2/app/manifests/1").body(Full::default()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.contains("\"UNSUPPORTED\""), "{body}");
    assert!(body.contains("no Host header"), "{body}");

    let with_host = get("/v2/app/manifests/1")
        .header("host", "registry.example.com")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send(with_host).await.0.status(),
        StatusCode::TEMPORARY_REDIRECT
    );

    let absolute = get("http://registry.example.com/v2/app/manifests/1")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send(absolute).await.0.status(),
        StatusCode::TEMPORARY_REDIRECT
    );

    let http10 = get("/v2/app/manifests/1")
        .version(http::Version::HTTP_10)
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send(http10).await.0.status(),
        StatusCode::TEMPORARY_REDIRECT
    );

    // Paths outside /v2 go to the inner service.
    let (response, body) = send(get("/healthz").body(Full::default()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "inner");
}

#[tokio::test]
async fn without_require_host_missing_host_is_decided() {
    assert!(!RegistryRedirectLayer::new(policy()).requires_host());
    let (response, _) = call(get("/v2/app/manifests/1").body(Full::default()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
}
