//! Fakes on 127.0.0.1 that stop when dropped: a token-auth registry with
//! its token endpoint, and a blob storage host. [`Client`] sends requests
//! through the layer.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use registry_redirect_core::policy::UpstreamAuth;
use registry_redirect_core::{Policy, PolicySpec, UpstreamSpec};
use registry_redirect_tower::resolve::{Resolver, ResolverSettings};
use registry_redirect_tower::RegistryRedirectLayer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::{service_fn, Layer, ServiceExt};

pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const MANIFEST: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const BLOB: &[u8] = b"blob bytes from the registry";

/// What the fake registry does with a blob request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BlobMode {
    /// 307 to the storage host, as Docker Hub does.
    Redirect,
    /// 200 with the bytes, or 206 for a range.
    Serve,
}

pub struct RegistryState {
    pub addr: SocketAddr,
    pub storage: SocketAddr,
    /// Tokens the registry accepts; clearing it revokes them all.
    pub valid_tokens: Mutex<HashSet<String>>,
    pub token_requests: AtomicUsize,
    pub token_delay_ms: AtomicU64,
    pub expires_in: AtomicU64,
    /// The `Authorization` header of the last token request.
    pub token_authorization: Mutex<Option<String>>,
    pub manifest_requests: AtomicUsize,
    /// `Authorization` of each request to /v2/<name>/..., by path.
    pub registry_authorization: Mutex<Vec<(String, Option<String>)>>,
    pub blob_mode: Mutex<BlobMode>,
    /// Whether a request to the storage host carried `Authorization`.
    pub storage_saw_authorization: AtomicBool,
}

/// A token-auth registry with its token endpoint at `/token`, and a
/// separate storage host for blob redirects.
pub struct FakeRegistry {
    pub state: Arc<RegistryState>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl FakeRegistry {
    pub async fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let storage_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(RegistryState {
            addr: listener.local_addr().unwrap(),
            storage: storage_listener.local_addr().unwrap(),
            valid_tokens: Mutex::new(HashSet::new()),
            token_requests: AtomicUsize::new(0),
            token_delay_ms: AtomicU64::new(0),
            expires_in: AtomicU64::new(300),
            token_authorization: Mutex::new(None),
            manifest_requests: AtomicUsize::new(0),
            registry_authorization: Mutex::new(Vec::new()),
            blob_mode: Mutex::new(BlobMode::Redirect),
            storage_saw_authorization: AtomicBool::new(false),
        });
        let app = Router::new().fallback(registry).with_state(state.clone());
        let storage = Router::new().fallback(storage).with_state(state.clone());
        let tasks = vec![
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }),
            tokio::spawn(async move { axum::serve(storage_listener, storage).await.unwrap() }),
        ];
        FakeRegistry { state, tasks }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    /// Returns the path and `Authorization` of every registry request
    /// after `/v2/`, in order.
    pub fn registry_requests(&self) -> Vec<(String, Option<String>)> {
        self.state.registry_authorization.lock().unwrap().clone()
    }

    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }
}

fn challenge(state: &RegistryState, scope: Option<&str>) -> HeaderValue {
    let mut value = format!(
        r#"Bearer realm="http://{}/token",service="fake-registry""#,
        state.addr
    );
    if let Some(scope) = scope {
        value.push_str(&format!(r#",scope="{scope}""#));
    }
    HeaderValue::try_from(value).unwrap()
}

fn oci_error(status: StatusCode, code: &str) -> Response {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"fake","detail":null}}]}}"#);
    (status, [("content-type", "application/json")], body).into_response()
}

async fn registry(State(state): State<Arc<RegistryState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/token" {
        return token(&state, request.headers()).await;
    }
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if path == "/v2/" {
        let mut response = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        response
            .headers_mut()
            .insert("www-authenticate", challenge(&state, None));
        return response;
    }
    state
        .registry_authorization
        .lock()
        .unwrap()
        .push((path.clone(), authorization.clone()));

    let token = authorization
        .as_deref()
        .and_then(|value| value.strip_prefix("Bearer "));
    let accepted = token.is_some_and(|token| state.valid_tokens.lock().unwrap().contains(token));
    let repository = path
        .strip_prefix("/v2/")
        .and_then(|rest| {
            rest.split_once("/manifests/")
                .or(rest.split_once("/blobs/"))
                .or(rest.split_once("/tags/"))
        })
        .map(|(name, _)| name.to_owned())
        .unwrap_or_default();
    if !accepted {
        let scope = format!("repository:{repository}:pull");
        let mut response = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        response
            .headers_mut()
            .insert("www-authenticate", challenge(&state, Some(&scope)));
        return response;
    }

    if let Some((_, reference)) = path.split_once("/manifests/") {
        state.manifest_requests.fetch_add(1, Ordering::SeqCst);
        return match reference {
            "latest" | "v1" | "v2" | "v3" | DIGEST => (
                [
                    ("content-type", MANIFEST_TYPE),
                    ("docker-content-digest", DIGEST),
                    ("www-authenticate", "Bearer realm=\"http://leak.invalid/\""),
                ],
                MANIFEST,
            )
                .into_response(),
            "huge" => (
                [("content-type", MANIFEST_TYPE)],
                vec![b' '; 5 * 1024 * 1024],
            )
                .into_response(),
            _ => oci_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        };
    }
    if let Some((_, digest)) = path.split_once("/blobs/") {
        if digest != DIGEST {
            return oci_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
        }
        let mode = *state.blob_mode.lock().unwrap();
        return match mode {
            BlobMode::Redirect => {
                let location = format!("http://{}/storage/{digest}?signature=abc", state.storage);
                (StatusCode::TEMPORARY_REDIRECT, [("location", location)]).into_response()
            }
            BlobMode::Serve => serve_blob(request.headers()),
        };
    }
    if path.ends_with("/tags/list") {
        // One tag a page, with the next page linked by path as
        // docker-registry links it.
        let last = request
            .uri()
            .query()
            .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("last=")));
        let (tag, link) = match last {
            None => (
                "v1",
                Some(format!(
                    "</v2/{repository}/tags/list?last=v1&n=1>; rel=\"next\""
                )),
            ),
            Some(_) => ("v2", None),
        };
        let body = format!(r#"{{"name":"{repository}","tags":["{tag}"]}}"#);
        let mut response = ([("content-type", "application/json")], body).into_response();
        if let Some(link) = link {
            response
                .headers_mut()
                .insert("link", HeaderValue::try_from(link).unwrap());
        }
        return response;
    }
    oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN")
}

fn serve_blob(headers: &HeaderMap) -> Response {
    let digest = [("docker-content-digest", DIGEST)];
    match headers.get("range").and_then(|value| value.to_str().ok()) {
        Some("bytes=0-3") => (
            StatusCode::PARTIAL_CONTENT,
            digest,
            [("content-range", format!("bytes 0-3/{}", BLOB.len()))],
            &BLOB[..4],
        )
            .into_response(),
        _ => (digest, [("content-type", "application/octet-stream")], BLOB).into_response(),
    }
}

async fn token(state: &RegistryState, headers: &HeaderMap) -> Response {
    let delay = state.token_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let number = state.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
    *state.token_authorization.lock().unwrap() = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // Let concurrent requests pile up on the first token request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let token = format!("token-{number}");
    state.valid_tokens.lock().unwrap().insert(token.clone());
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    let body = format!(r#"{{"token":"{token}","expires_in":{expires_in}}}"#);
    ([("content-type", "application/json")], body).into_response()
}

async fn storage(State(state): State<Arc<RegistryState>>, request: Request) -> Response {
    if request.headers().contains_key("authorization") {
        state
            .storage_saw_authorization
            .store(true, Ordering::SeqCst);
    }
    BLOB.into_response()
}

pub fn policy(url: &str, configure: impl FnOnce(&mut UpstreamSpec)) -> Policy {
    let mut upstream = UpstreamSpec {
        auth: UpstreamAuth::Resolve,
        library_prefix: true,
        ..UpstreamSpec::new(url)
    };
    configure(&mut upstream);
    let mut spec = PolicySpec::new("hub");
    spec.upstreams.insert("hub".into(), upstream);
    Policy::compile(&spec).unwrap()
}

pub fn settings() -> ResolverSettings {
    ResolverSettings {
        timeout: Duration::from_secs(5),
        ..ResolverSettings::default()
    }
}

pub struct Client {
    pub layer: RegistryRedirectLayer,
}

impl Client {
    pub fn new(policy: Policy, resolver: Option<Resolver>) -> Client {
        let mut layer = RegistryRedirectLayer::new(policy).access_log(false);
        if let Some(resolver) = resolver {
            layer = layer.with_resolver(resolver);
        }
        Client { layer }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let inner = service_fn(|_request: http::Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"inner"))))
        });
        let service = self.layer.layer(inner);
        let mut request = http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = service
            .oneshot(request.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, HeaderMap, Bytes) {
        self.send(Method::GET, path, &[]).await
    }
}

pub fn resolver() -> Resolver {
    Resolver::new(settings()).unwrap()
}
