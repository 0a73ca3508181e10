//! The layer's metrics over a plain tower service: exact request counts by
//! decision, rule, upstream and status code, counters that survive a
//! policy change, and no allocation added to a redirect.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use registry_redirect_core::{Policy, PolicySpec, RuleSpec, UpstreamSpec};
use registry_redirect_tower::metrics::Metrics;
use registry_redirect_tower::{PolicyHandle, RegistryRedirectLayer};
use tower::{service_fn, Service, ServiceExt};

/// Counts the allocations of the current thread, so that tests running in
/// parallel do not disturb each other's counts.
struct ThreadCountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call goes to the system allocator unchanged; the counter
// is a const-initialized thread local, which never allocates.
unsafe impl GlobalAlloc for ThreadCountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: ThreadCountingAllocator = ThreadCountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn policy(lab_upstream: &str) -> Policy {
    let mut spec = PolicySpec::new("k8s");
    spec.upstreams
        .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
    spec.upstreams
        .insert("lab".into(), UpstreamSpec::new("https://lab.example"));
    spec.upstreams
        .insert("lab2".into(), UpstreamSpec::new("https://lab2.example"));
    spec.rules.push(RuleSpec {
        clients: vec!["192.168.0.0/24".into()],
        ..RuleSpec::new("lab", lab_upstream)
    });
    Policy::compile(&spec).unwrap()
}

type Inner = tower::util::ServiceFn<
    fn(Request<Full<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

fn inner_service() -> Inner {
    fn answer(
        request: Request<Full<Bytes>>,
    ) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
        let status = if request.uri().path() == "/" {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        let mut response = Response::new(Full::new(Bytes::from_static(b"inner")));
        *response.status_mut() = status;
        std::future::ready(Ok(response))
    }
    service_fn(answer as fn(_) -> _)
}

fn request(method: Method, path: &str, client: [u8; 4]) -> Request<Full<Bytes>> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::default())
        .unwrap();
    request
        .extensions_mut()
        .insert(SocketAddr::from((client, 40000)));
    request
}

const LAB_CLIENT: [u8; 4] = [192, 168, 0, 7];
const OTHER_CLIENT: [u8; 4] = [203, 0, 113, 9];

/// Returns the value of the sample `series` (name and labels, as written)
/// in `text`, or `None` when it is absent.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

fn requests(decision: &str, rule: &str, upstream: &str, code: u16) -> String {
    format!(
        "registry_redirect_requests_total{{decision=\"{decision}\",rule=\"{rule}\",upstream=\"{upstream}\",code=\"{code}\"}}"
    )
}

#[tokio::test]
async fn requests_are_counted_exactly() {
    let metrics = Metrics::new();
    let layer = RegistryRedirectLayer::new(policy("lab"))
        .access_log(false)
        .with_metrics(metrics.clone());
    let service = tower::Layer::layer(&layer, inner_service());

    let sent = [
        (Method::GET, "/v2/app/manifests/1", LAB_CLIENT, 3),
        (
            Method::HEAD,
            "/v2/app/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            OTHER_CLIENT,
            2,
        ),
        (Method::GET, "/v2/", OTHER_CLIENT, 4),
        (Method::DELETE, "/v2/app/manifests/1", OTHER_CLIENT, 1),
        (Method::GET, "/v2/_catalog", OTHER_CLIENT, 2),
        (Method::GET, "/", OTHER_CLIENT, 5),
        (Method::GET, "/elsewhere", OTHER_CLIENT, 1),
    ];
    for (method, path, client, times) in sent {
        for _ in 0..times {
            let request = request(method.clone(), path, client);
            service.clone().oneshot(request).await.unwrap();
        }
    }

    let text = metrics.render();
    let expected = [
        (requests("redirect", "lab", "lab", 307), 3),
        (requests("redirect", "lab", "k8s", 307), 0),
        (requests("redirect", "", "k8s", 307), 2),
        (requests("api_version", "", "k8s", 200), 4),
        (requests("reject", "", "", 405), 1),
        (requests("reject", "", "", 404), 2),
        (requests("not_registry", "", "", 200), 5),
        (requests("not_registry", "", "", 404), 1),
    ];
    for (series, count) in expected {
        assert_eq!(sample(&text, &series), Some(count), "{series}\n{text}");
    }
    let latency = "registry_redirect_decision_duration_seconds_count";
    let latency_counts = [
        ("redirect", 5),
        ("api_version", 4),
        ("reject", 3),
        ("not_registry", 6),
        ("candidates", 0),
    ];
    for (decision, count) in latency_counts {
        let series = format!("{latency}{{decision=\"{decision}\"}}");
        assert_eq!(sample(&text, &series), Some(count), "{series}\n{text}");
    }
}

#[tokio::test]
async fn counters_survive_policy_change() {
    let metrics = Metrics::new();
    let handle = PolicyHandle::new(policy("lab"));
    let layer = RegistryRedirectLayer::with_handle(handle.clone())
        .access_log(false)
        .with_metrics(metrics.clone());
    let service = tower::Layer::layer(&layer, inner_service());
    let send = |service: &mut _| {
        let request = request(Method::GET, "/v2/app/manifests/1", LAB_CLIENT);
        ServiceExt::oneshot(Clone::clone(service), request)
    };

    let mut service = service;
    send(&mut service).await.unwrap();
    handle.store(policy("lab2"));
    send(&mut service).await.unwrap();
    send(&mut service).await.unwrap();
    handle.store(policy("lab"));
    send(&mut service).await.unwrap();

    let text = metrics.render();
    assert_eq!(
        sample(&text, &requests("redirect", "lab", "lab", 307)),
        Some(2),
        "{text}"
    );
    assert_eq!(
        sample(&text, &requests("redirect", "lab", "lab2", 307)),
        Some(2),
        "{text}"
    );
}

#[test]
fn metrics_add_no_allocation() {
    let path = "/v2/app/manifests/1";
    let count_call = |layer: RegistryRedirectLayer| {
        let mut service = tower::Layer::layer(&layer, inner_service());
        // The first request builds the policy's counter table.
        drop(service.call(request(Method::GET, path, LAB_CLIENT)));
        let request = request(Method::GET, path, LAB_CLIENT);
        let before = allocations();
        let future = service.call(request);
        let counted = allocations() - before;
        drop(future);
        counted
    };

    let without = count_call(RegistryRedirectLayer::new(policy("lab")).access_log(false));
    let metrics = Metrics::new();
    let with = count_call(
        RegistryRedirectLayer::new(policy("lab"))
            .access_log(false)
            .with_metrics(metrics.clone()),
    );
    assert_eq!(
        with, without,
        "allocations per redirect with and without metrics"
    );
    let text = metrics.render();
    assert_eq!(
        sample(&text, &requests("redirect", "lab", "lab", 307)),
        Some(2),
        "{text}"
    );
}

#[test]
fn resolved_requests_counted_by_name() {
    let metrics = Metrics::new();
    let started = std::time::Instant::now();
    metrics.record_resolved("hub-auth", "hub", StatusCode::OK, started);
    metrics.record_resolved("hub-auth", "hub", StatusCode::OK, started);
    metrics.record_resolved("", "hub", StatusCode::BAD_GATEWAY, started);

    let text = metrics.render();
    let ok = requests("resolve", "hub-auth", "hub", 200);
    assert_eq!(sample(&text, &ok), Some(2), "{text}");
    let failed = requests("resolve", "", "hub", 502);
    assert_eq!(sample(&text, &failed), Some(1), "{text}");
    let latency = "registry_redirect_decision_duration_seconds_count{decision=\"resolve\"}";
    assert_eq!(sample(&text, latency), Some(3), "{text}");
}

#[test]
fn exposition_lines_are_well_formed() {
    let metrics = Metrics::new();
    let layer = RegistryRedirectLayer::new(policy("lab"))
        .access_log(false)
        .with_metrics(metrics.clone());
    let mut service = tower::Layer::layer(&layer, inner_service());
    drop(service.call(request(Method::GET, "/v2/app/manifests/1", LAB_CLIENT)));
    metrics.record_reload(false);
    metrics.set_config("ab12", std::time::SystemTime::now());
    metrics.set_tls_certificate_expiry(1_800_000_000);
    metrics.record_tls_reload(false);

    let text = metrics.render();
    let mut described = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, _) = help.split_once(' ').expect("HELP has a name and a text");
            described.insert(name.to_owned());
            continue;
        }
        if let Some(kind) = line.strip_prefix("# TYPE ") {
            let (name, kind) = kind.split_once(' ').expect("TYPE has a name and a type");
            assert!(described.contains(name), "TYPE before HELP: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|family| described.contains(*family))
            .unwrap_or(name);
        assert!(described.contains(family), "sample without HELP: {line}");
        assert!(name.starts_with("registry_redirect_"), "{line}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{'), "{line}");
                assert!(labels.ends_with('}'), "{line}");
            }
        }
    }
    assert_eq!(
        sample(&text, "registry_redirect_reloads_total{result=\"failure\"}"),
        Some(1)
    );
    assert_eq!(
        sample(&text, "registry_redirect_config_info{sha256=\"ab12\"}"),
        Some(1)
    );
    assert_eq!(
        sample(
            &text,
            "registry_redirect_tls_certificate_expiry_timestamp_seconds"
        ),
        Some(1_800_000_000)
    );
    assert_eq!(
        sample(
            &text,
            "registry_redirect_tls_reloads_total{result=\"failure\"}"
        ),
        Some(1)
    );
}

#[test]
fn tls_expiry_absent_without_certificate() {
    let text = Metrics::new().render();
    assert!(
        !text.contains("registry_redirect_tls_certificate_expiry"),
        "{text}"
    );
}
