//! The hostile request targets of the core's corpus
//! (`registry-redirect-core/tests/data/hostile-targets.txt`) through an
//! axum application with the layer, called with `oneshot`.
//!
//! Only targets that parse as an `http::Uri` can be requests here, because
//! `http::Request` contains a `Uri`. hyper responds to the others with 400
//! (414 when too long) before any service runs, and the CLI's server test
//! `hostile_tcp.rs` covers them over TCP. For every other target:
//!
//! - a path outside `/v2` reaches the application's own routes untouched,
//!   with no `Location` and no registry headers;
//! - a `/v2` path gets a 400, 404 or 405 with an OCI error body, the 200 of the
//!   API version check, or a redirect whose `Location` is an upstream's URL
//!   for the same repository; never a 5xx.

#[path = "../../registry-redirect-core/tests/common/corpus.rs"]
mod corpus;
#[path = "../../registry-redirect-core/tests/common/location.rs"]
mod location;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use registry_redirect_core::path::{classify, RegistryPath};
use registry_redirect_core::policy::{ClientLabel, UpstreamKind};
use registry_redirect_core::{Policy, PolicySpec, RuleSpec, UpstreamSpec};
use registry_redirect_tower::RegistryRedirectLayer;
use tower::ServiceExt;

use corpus::{oci_error_code, targets, Target};
use location::LocationOracle;

const ROOT_TEXT: &str = "the application's root";
const FALLBACK_TEXT: &str = "the application's 404";

/// Peers that lead to different upstreams: no rule, the `lab` rule (Docker
/// Hub with `library/`), the blob store rule for a cloud region, and a
/// trusted proxy forwarding for no one.
const PEERS: [[u8; 4]; 4] = [
    [203, 0, 113, 9],
    [192, 168, 0, 20],
    [198, 51, 100, 7],
    [10, 0, 0, 1],
];

/// Builds a policy with a plain default, `library_prefix`, a mirror with a port,
/// base path and `path_prefix`, an IPv6 upstream, and a regional blob store
/// without blob verification, so that no request leaves the test.
fn policy() -> Policy {
    let mut spec = PolicySpec::new("k8s");
    spec.trusted_proxies = vec!["10.0.0.0/8".into()];
    spec.upstreams
        .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
    spec.upstreams.insert(
        "hub".into(),
        UpstreamSpec {
            library_prefix: true,
            ..UpstreamSpec::new("https://registry-1.docker.io")
        },
    );
    spec.upstreams.insert(
        "prod".into(),
        UpstreamSpec {
            path_prefix: Some("k8s-artifacts-prod/images".into()),
            ..UpstreamSpec::new("https://mirror.example:8443/base")
        },
    );
    spec.upstreams.insert(
        "v6".into(),
        UpstreamSpec::new("http://[2001:db8::5]:5000/registry"),
    );
    spec.upstreams.insert(
        "buckets".into(),
        UpstreamSpec {
            kind: UpstreamKind::BlobStore,
            ..UpstreamSpec::new("https://bucket-{region}.example")
        },
    );

    spec.rules.push(RuleSpec {
        clients: vec!["192.168.0.0/24".into()],
        ..RuleSpec::new("lab", "hub")
    });
    spec.rules.push(RuleSpec {
        clouds: vec!["aws".into()],
        ..RuleSpec::new("aws-blobs", "buckets")
    });
    spec.rules.push(RuleSpec {
        repositories: vec!["pause".into(), "kube*".into()],
        ..RuleSpec::new("prod-images", "prod")
    });
    spec.rules.push(RuleSpec {
        repositories: vec!["a".into()],
        ..RuleSpec::new("v6-images", "v6")
    });

    let labels = vec![ClientLabel::new(Some("aws"), Some("eu-west-1"))];
    let prefixes = [("198.51.100.0/24".parse().unwrap(), 0)];
    Policy::compile_with_labels(&spec, labels, &prefixes).expect("the test policy compiles")
}

fn app(policy: Policy) -> Router {
    Router::new()
        .route("/", get(|| async { ROOT_TEXT }))
        .fallback(|| async { (StatusCode::NOT_FOUND, FALLBACK_TEXT) })
        .layer(RegistryRedirectLayer::new(policy).access_log(false))
}

/// How a target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    /// `http::Uri` rejects it, so it cannot be a request.
    NotAUri,
    /// Outside `/v2`: the application responded.
    Application,
    /// 400 (user info in an absolute-form target), 404 or 405, with an OCI
    /// error body.
    Rejected,
    /// 200 for the API version check.
    Answered,
    /// A redirect to an upstream.
    Redirected,
}

async fn send(app: &Router, method: &Method, uri: Uri, peer: [u8; 4]) -> (Response<Body>, Vec<u8>) {
    let mut request = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header("host", "registry.example.test")
        .body(Body::empty())
        .expect("the request builds");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
    let mut response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the app is infallible");
    let body = response
        .body_mut()
        .collect()
        .await
        .expect("the body is readable")
        .to_bytes()
        .to_vec();
    (response, body)
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap_or("<not visible ASCII>"))
}

async fn judge(
    app: &Router,
    oracle: &LocationOracle,
    target: &Target,
    peer: [u8; 4],
) -> Result<Verdict, String> {
    let Ok(uri) = Uri::try_from(target.bytes.as_slice()) else {
        return Ok(Verdict::NotAUri);
    };
    let method = Method::from_bytes(target.method.as_bytes()).map_err(|error| error.to_string())?;
    let path = uri.path().to_owned();
    let query = uri.query().map(str::to_owned);
    let (response, body) = send(app, &method, uri, peer).await;
    let status = response.status();
    if status.is_server_error() {
        return Err(format!("status {status}"));
    }
    for (name, value) in response.headers() {
        if value.to_str().is_err() {
            return Err(format!("header {name} is not visible ASCII: {value:?}"));
        }
    }
    let is_head = method == Method::HEAD;

    let registry_path = classify(&path);
    if registry_path == Ok(RegistryPath::NotRegistry) {
        if header(&response, "location").is_some()
            || header(&response, "docker-distribution-api-version").is_some()
        {
            return Err(format!(
                "a path outside /v2 got registry headers: {:?}",
                response.headers()
            ));
        }
        let expected = if path == "/" && method == Method::GET {
            (StatusCode::OK, ROOT_TEXT)
        } else if path == "/" && is_head {
            (StatusCode::OK, "")
        } else if path == "/" {
            (StatusCode::METHOD_NOT_ALLOWED, "")
        } else {
            (
                StatusCode::NOT_FOUND,
                if is_head { "" } else { FALLBACK_TEXT },
            )
        };
        if (status, body.as_slice()) != (expected.0, expected.1.as_bytes()) {
            return Err(format!(
                "the application should answer {expected:?}, got {status} {:?}",
                String::from_utf8_lossy(&body)
            ));
        }
        return Ok(Verdict::Application);
    }

    if header(&response, "docker-distribution-api-version") != Some("registry/2.0") {
        return Err("no Docker-Distribution-Api-Version: registry/2.0".to_owned());
    }
    if status.is_redirection() {
        let location = header(&response, "location").ok_or("a redirect without Location")?;
        let registry_path = registry_path
            .map_err(|error| format!("redirected a path that classify rejects: {error}"))?;
        oracle.check(location, &registry_path, query.as_deref())?;
        return Ok(Verdict::Redirected);
    }
    if status == StatusCode::OK {
        if registry_path != Ok(RegistryPath::ApiVersionCheck) {
            return Err(format!("200 for {registry_path:?}"));
        }
        return Ok(Verdict::Answered);
    }
    let rejections = [
        StatusCode::BAD_REQUEST,
        StatusCode::NOT_FOUND,
        StatusCode::METHOD_NOT_ALLOWED,
    ];
    if !rejections.contains(&status) {
        return Err(format!("status {status} for a /v2 path"));
    }
    if header(&response, "content-type") != Some("application/json") {
        return Err("a rejection without Content-Type: application/json".to_owned());
    }
    if !is_head {
        oci_error_code(&body)?;
    }
    Ok(Verdict::Rejected)
}

#[tokio::test]
async fn hostile_targets_through_layer() {
    let policy = policy();
    let oracle = LocationOracle::new(&policy);
    let app = app(policy);
    let mut counts: BTreeMap<(String, Verdict), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for target in targets() {
        for peer in PEERS {
            match judge(&app, &oracle, &target, peer).await {
                Ok(verdict) => *counts.entry((target.class.clone(), verdict)).or_default() += 1,
                Err(error) => failures.push(format!("{} from {peer:?}: {error}", target.display())),
            }
        }
    }
    println!(
        "hostile corpus through the layer (targets x {} peers):",
        PEERS.len()
    );
    for ((class, verdict), count) in &counts {
        println!("  {class}: {verdict:?} {count}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn baseline_targets_redirect_through_layer() {
    let policy = policy();
    let oracle = LocationOracle::new(&policy);
    let app = app(policy);
    for target in targets().iter().filter(|target| target.class == "baseline") {
        let verdict = judge(&app, &oracle, target, PEERS[0]).await;
        assert!(
            matches!(verdict, Ok(Verdict::Redirected | Verdict::Answered)),
            "{}: {verdict:?}",
            target.display()
        );
    }
}
