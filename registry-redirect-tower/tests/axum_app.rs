//! Runs the `axum_app` example's application on loopback and talks to it
//! over TCP.

#[allow(dead_code)]
#[path = "../examples/axum_app.rs"]
mod axum_app;

use std::net::SocketAddr;

use registry_redirect_core::{Policy, PolicySpec, UpstreamSpec};
use registry_redirect_tower::PolicyHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(handle: PolicyHandle) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum_app::app(handle);
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    Server { addr, task }
}

/// Sends one raw HTTP/1.1 request and returns the whole response as text.
async fn send(addr: SocketAddr, method: &str, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: registry.example.com\r\nConnection: close\r\n\r\n"
    );
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

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test]
async fn own_routes_reach_the_app() {
    let server = start(PolicyHandle::new(axum_app::policy())).await;
    let response = send(server.addr, "GET", "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(body(&response), "ok\n");

    let response = send(server.addr, "GET", "/nowhere").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}

#[tokio::test]
async fn metrics_route_counts_redirects() {
    let server = start(PolicyHandle::new(axum_app::policy())).await;
    for _ in 0..3 {
        let response = send(server.addr, "GET", "/v2/app/manifests/1.0").await;
        assert!(response.starts_with("HTTP/1.1 307"), "{response}");
    }
    let response = send(server.addr, "GET", "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let content_type = header(&response, "content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let redirects = "registry_redirect_requests_total{decision=\"redirect\",rule=\"loopback\",upstream=\"local\",code=\"307\"} 3\n";
    assert!(body(&response).contains(redirects), "{response}");
}

#[tokio::test]
async fn loopback_client_goes_to_local_registry() {
    let server = start(PolicyHandle::new(axum_app::policy())).await;
    let response = send(server.addr, "GET", &format!("/v2/app/blobs/{DIGEST}")).await;
    assert!(response.starts_with("HTTP/1.1 307"), "{response}");
    let expected = format!("http://127.0.0.1:5001/v2/app/blobs/{DIGEST}");
    assert_eq!(header(&response, "location"), Some(expected.as_str()));
    assert_eq!(header(&response, "cache-control"), Some("private"));
    assert!(body(&response).contains(&expected));
}

#[tokio::test]
async fn head_redirect_has_no_body() {
    let server = start(PolicyHandle::new(axum_app::policy())).await;
    let response = send(server.addr, "HEAD", "/v2/app/manifests/1.0").await;
    assert!(response.starts_with("HTTP/1.1 307"), "{response}");
    assert_eq!(body(&response), "");
}

#[tokio::test]
async fn api_version_check_and_refusals() {
    let server = start(PolicyHandle::new(axum_app::policy())).await;
    let response = send(server.addr, "GET", "/v2/").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        header(&response, "docker-distribution-api-version"),
        Some("registry/2.0")
    );

    let response = send(server.addr, "POST", "/v2/app/blobs/uploads/").await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert_eq!(header(&response, "allow"), Some("GET, HEAD"));

    let response = send(server.addr, "GET", "/v2/_catalog").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(
        body(&response).contains("\"code\":\"UNSUPPORTED\""),
        "{response}"
    );

    let response = send(server.addr, "GET", "/v2/a%2Fb/manifests/1").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(
        body(&response).contains("\"code\":\"NAME_INVALID\""),
        "{response}"
    );
}

#[tokio::test]
async fn policy_swap_takes_effect() {
    let handle = PolicyHandle::new(axum_app::policy());
    let server = start(handle.clone()).await;

    let mut spec = PolicySpec::new("other");
    spec.upstreams
        .insert("other".into(), UpstreamSpec::new("https://other.example"));
    handle.store(Policy::compile(&spec).unwrap());

    let response = send(server.addr, "GET", "/v2/app/manifests/1.0").await;
    assert_eq!(
        header(&response, "location"),
        Some("https://other.example/v2/app/manifests/1.0")
    );
}
