//! Resolve mode through the layer, against the token-auth registry, token
//! endpoint and blob storage fakes of `token_registry`.

mod token_registry;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use registry_redirect_core::policy::{CredentialsSpec, Password};
use registry_redirect_tower::resolve::{Resolver, ResolverSettings};
use token_registry::{
    policy, resolver, BlobMode, Client, FakeRegistry, BLOB, DIGEST, MANIFEST, MANIFEST_TYPE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_fetched_with_token() {
    let registry = FakeRegistry::start().await;
    let client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));

    let (status, headers, body) = client.get("/v2/nginx/manifests/latest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, MANIFEST.as_bytes());
    assert_eq!(headers["content-type"], MANIFEST_TYPE);
    assert_eq!(headers["docker-content-digest"], DIGEST);
    assert_eq!(
        headers["content-length"],
        MANIFEST.len().to_string().as_str()
    );
    assert_eq!(headers["docker-distribution-api-version"], "registry/2.0");
    assert!(!headers.contains_key("www-authenticate"));
    assert_eq!(registry.token_requests(), 1);

    let seen = registry.registry_requests();
    let last = seen.last().unwrap();
    assert_eq!(last.0, "/v2/library/nginx/manifests/latest");
    assert_eq!(last.1.as_deref(), Some("Bearer token-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_version_check_answered_locally() {
    let registry = FakeRegistry::start().await;
    let client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));
    let (status, headers, _) = client.get("/v2/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["docker-distribution-api-version"], "registry/2.0");
    assert!(!headers.contains_key("www-authenticate"));
    assert_eq!(registry.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_manifest_has_headers_only() {
    let registry = FakeRegistry::start().await;
    let client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));
    let (status, headers, body) = client
        .send(Method::HEAD, "/v2/nginx/manifests/latest", &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(headers["docker-content-digest"], DIGEST);
    assert_eq!(headers["content-type"], MANIFEST_TYPE);
    assert_eq!(
        headers["content-length"],
        MANIFEST.len().to_string().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_passed_through() {
    let registry = FakeRegistry::start().await;
    let client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));
    let (status, headers, body) = client.get("/v2/nginx/manifests/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""code":"MANIFEST_UNKNOWN""#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_document_rejected() {
    let registry = FakeRegistry::start().await;
    let client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));
    let (status, _, body) = client.get("/v2/nginx/manifests/huge").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""code":"UNSUPPORTED""#), "{text}");
    assert!(text.contains("larger than 4194304 bytes"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_manifest_cached() {
    let registry = FakeRegistry::start().await;
    let client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));
    let path = format!("/v2/nginx/manifests/{DIGEST}");
    for _ in 0..3 {
        let (status, _, body) = client.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, MANIFEST.as_bytes());
    }
    assert_eq!(registry.state.manifest_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncached_tags_fetched_each_time() {
    let registry = FakeRegistry::start().await;
    let policy = policy(&registry.url(), |upstream| {
        upstream.tag_ttl_seconds = Some(0)
    });
    let client = Client::new(policy, Some(resolver()));
    for _ in 0..3 {
        assert_eq!(
            client.get("/v2/nginx/manifests/latest").await.0,
            StatusCode::OK
        );
    }
    assert_eq!(registry.state.manifest_requests.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirect_passed_without_token() {
    let registry = FakeRegistry::start().await;
    let client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));
    let (status, headers, body) = client.get(&format!("/v2/nginx/blobs/{DIGEST}")).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert!(body.is_empty());
    let location = headers["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!(
            "http://{}/storage/{DIGEST}?signature=abc",
            registry.state.storage
        )
    );

    // The registry got the token; the storage host is left to the client,
    // which needs none.
    let seen = registry.registry_requests();
    assert_eq!(seen.last().unwrap().1.as_deref(), Some("Bearer token-1"));
    assert!(!registry
        .state
        .storage_saw_authorization
        .load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_blob_rejected_without_proxy() {
    let registry = FakeRegistry::start().await;
    *registry.state.blob_mode.lock().unwrap() = BlobMode::Serve;
    let client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));
    let (status, headers, body) = client.get(&format!("/v2/nginx/blobs/{DIGEST}")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["content-type"], "application/json");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""code":"UNSUPPORTED""#), "{text}");
    assert!(
        text.contains("upstream \\\"hub\\\" served the blob itself"),
        "{text}"
    );
    assert!(text.contains("blob_proxy = true"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_blob_streamed_with_proxy() {
    let registry = FakeRegistry::start().await;
    *registry.state.blob_mode.lock().unwrap() = BlobMode::Serve;
    let policy = policy(&registry.url(), |upstream| upstream.blob_proxy = true);
    let client = Client::new(policy, Some(resolver()));
    let path = format!("/v2/nginx/blobs/{DIGEST}");

    let (status, headers, body) = client.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, BLOB);
    assert_eq!(headers["docker-content-digest"], DIGEST);

    let (status, headers, body) = client
        .send(Method::GET, &path, &[("range", "bytes=0-3")])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &BLOB[..4]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 0-3/{}", BLOB.len()).as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_token() {
    let registry = FakeRegistry::start().await;
    let policy = policy(&registry.url(), |upstream| {
        upstream.tag_ttl_seconds = Some(0)
    });
    let client = Arc::new(Client::new(policy, Some(resolver())));
    let mut tasks = Vec::new();
    for index in 0..12 {
        let client = client.clone();
        let tag = ["latest", "v1", "v2", "v3"][index % 4];
        tasks.push(tokio::spawn(async move {
            client.get(&format!("/v2/nginx/manifests/{tag}")).await.0
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(registry.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_fetched_again() {
    let registry = FakeRegistry::start().await;
    // A 2 s token is cached for 1 s.
    registry.state.expires_in.store(2, Ordering::SeqCst);
    let policy = policy(&registry.url(), |upstream| {
        upstream.tag_ttl_seconds = Some(0)
    });
    let client = Client::new(policy, Some(resolver()));

    assert_eq!(
        client.get("/v2/nginx/manifests/latest").await.0,
        StatusCode::OK
    );
    assert_eq!(
        client.get("/v2/nginx/manifests/latest").await.0,
        StatusCode::OK
    );
    assert_eq!(registry.token_requests(), 1);

    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        client.get("/v2/nginx/manifests/latest").await.0,
        StatusCode::OK
    );
    assert_eq!(registry.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_retried_once() {
    let registry = FakeRegistry::start().await;
    let policy = policy(&registry.url(), |upstream| {
        upstream.tag_ttl_seconds = Some(0)
    });
    let client = Client::new(policy, Some(resolver()));
    assert_eq!(
        client.get("/v2/nginx/manifests/latest").await.0,
        StatusCode::OK
    );

    registry.state.valid_tokens.lock().unwrap().clear();
    let (status, _, body) = client.get("/v2/nginx/manifests/latest").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(registry.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_token_endpoint_gives_503() {
    let registry = FakeRegistry::start().await;
    registry.state.token_delay_ms.store(3000, Ordering::SeqCst);
    let resolver = Resolver::new(ResolverSettings {
        timeout: Duration::from_millis(400),
        ..ResolverSettings::default()
    })
    .unwrap();
    let client = Client::new(policy(&registry.url(), |_| {}), Some(resolver));

    let started = Instant::now();
    let (status, headers, body) = client.get("/v2/nginx/manifests/latest").await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["content-type"], "application/json");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""code":"UNAVAILABLE""#), "{text}");
    // The whole request and the token request share the timeout, so
    // either one may report it.
    assert!(text.contains("400 ms"), "{text}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gives_503() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(
        policy(&format!("http://127.0.0.1:{port}"), |_| {}),
        Some(resolver()),
    );
    let (status, _, body) = client.get("/v2/nginx/manifests/latest").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""code":"UNAVAILABLE""#), "{text}");
}

/// The upstream names its own repository, under the path prefix, in a tag
/// list and in the link to its next page. The client gets the name it
/// asked for in both, and following the link reaches the second page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_list_link_names_client_repository() {
    let registry = FakeRegistry::start().await;
    let policy = policy(&registry.url(), |upstream| {
        upstream.path_prefix = Some("mirror".into());
    });
    let client = Client::new(policy, Some(resolver()));

    // HEAD, before any GET is cached, gets the length of the renamed list.
    let (status, head_headers, head_body) = client
        .send(Method::HEAD, "/v2/team/app/tags/list?n=1", &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(head_body.is_empty());

    let (status, headers, body) = client.get("/v2/team/app/tags/list?n=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"name":"team/app","tags":["v1"]}"#.as_bytes());
    assert_eq!(
        head_headers["content-length"],
        body.len().to_string().as_str()
    );
    let link = headers["link"].to_str().unwrap();
    assert_eq!(link, r#"</v2/team/app/tags/list?last=v1&n=1>; rel="next""#);

    let next = &link[1..link.find('>').unwrap()];
    let (status, headers, body) = client.get(next).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"name":"team/app","tags":["v2"]}"#.as_bytes());
    assert!(!headers.contains_key("link"));
    let seen = registry.registry_requests();
    assert_eq!(seen.last().unwrap().0, "/v2/mirror/team/app/tags/list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_sent_to_token_endpoint() {
    let registry = FakeRegistry::start().await;
    let policy = policy(&registry.url(), |upstream| {
        upstream.credentials = Some(CredentialsSpec {
            username: "puller".into(),
            password_file: None,
            password_env: Some("UNUSED".into()),
            password: Some(Password::new("secret")),
        });
    });
    let client = Client::new(policy, Some(resolver()));
    assert_eq!(
        client.get("/v2/nginx/manifests/latest").await.0,
        StatusCode::OK
    );
    let sent = registry.state.token_authorization.lock().unwrap().clone();
    // base64("puller:secret")
    assert_eq!(sent.as_deref(), Some("Basic cHVsbGVyOnNlY3JldA=="));
}

/// With `library_prefix`, the upstream's link names `library/nginx` for a
/// client that asked for `nginx`: the client gets its own name back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_list_link_drops_library_prefix() {
    let registry = FakeRegistry::start().await;
    let client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));
    let (status, headers, _) = client.get("/v2/nginx/tags/list?n=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["link"],
        r#"</v2/nginx/tags/list?last=v1&n=1>; rel="next""#
    );
}

/// A reload that changes an upstream's password keeps the resolver and
/// its caches. The next request fetches a token with the new password
/// instead of using the token that the old one got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_credentials_fetch_new_token() {
    let registry = FakeRegistry::start().await;
    let with_password = |password: &str| {
        let password = Password::new(password);
        policy(&registry.url(), |upstream| {
            upstream.credentials = Some(CredentialsSpec {
                username: "puller".into(),
                password_file: None,
                password_env: Some("UNUSED".into()),
                password: Some(password),
            });
        })
    };
    let resolver = resolver();

    let before = Client::new(with_password("secret"), Some(resolver.clone()));
    for _ in 0..2 {
        assert_eq!(before.get("/v2/nginx/manifests/v1").await.0, StatusCode::OK);
    }
    assert_eq!(registry.token_requests(), 1);

    let after = Client::new(with_password("rotated"), Some(resolver));
    assert_eq!(after.get("/v2/nginx/manifests/v2").await.0, StatusCode::OK);
    assert_eq!(registry.token_requests(), 2);
    let sent = registry.state.token_authorization.lock().unwrap().clone();
    // base64("puller:rotated")
    assert_eq!(sent.as_deref(), Some("Basic cHVsbGVyOnJvdGF0ZWQ="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resolver_responds_503() {
    let registry = FakeRegistry::start().await;
    let client = Client::new(policy(&registry.url(), |_| {}), None);
    let (status, _, body) = client.get("/v2/nginx/manifests/latest").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""code":"UNSUPPORTED""#), "{text}");
    assert_eq!(registry.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_upstream_status() {
    let registry = FakeRegistry::start().await;
    let metrics = registry_redirect_tower::Metrics::new();
    let mut client = Client::new(policy(&registry.url(), |_| {}), Some(resolver()));
    client.layer = client.layer.with_metrics(metrics.clone());

    assert_eq!(
        client.get("/v2/nginx/manifests/latest").await.0,
        StatusCode::OK
    );
    assert_eq!(
        client.get("/v2/nginx/manifests/missing").await.0,
        StatusCode::NOT_FOUND
    );

    let text = metrics.render();
    for (code, expected) in [(200, 1), (404, 1)] {
        let series = format!(
            "registry_redirect_requests_total{{decision=\"resolve\",rule=\"\",upstream=\"hub\",code=\"{code}\"}} {expected}"
        );
        assert!(
            text.lines().any(|line| line == series),
            "{series} in {text}"
        );
    }
}
