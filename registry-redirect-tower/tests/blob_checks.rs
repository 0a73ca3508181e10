//! Blob checks against real mirrors on 127.0.0.1: the results, the cache,
//! coalescing, timeouts and failing mirrors.

mod mirror;

use std::time::{Duration, Instant};

use mirror::{Behavior, Mirror, RawListener, DIGEST};
use registry_redirect_tower::checks::{BlobCheck, BlobChecker, CheckSettings};
use registry_redirect_tower::client::HttpClient;

fn checker(settings: CheckSettings) -> BlobChecker {
    let client = HttpClient::new(settings.connect_timeout).unwrap();
    BlobChecker::new(client, &settings)
}

fn blob_path(name: &str) -> String {
    format!("/store/containers/images/{name}")
}

#[tokio::test]
async fn found_and_missing_blobs() {
    let mirror = Mirror::start().await;
    mirror.set_status(&blob_path(DIGEST), 200);
    mirror.set_status(&blob_path("forbidden"), 403);
    mirror.set_status(&blob_path("gone"), 410);
    mirror.set_status(&blob_path("moved"), 307);
    let checker = checker(CheckSettings::default());
    let base = mirror.url("/store");

    let cases = [
        (DIGEST, BlobCheck::Found),
        ("moved", BlobCheck::Found),
        ("absent", BlobCheck::Missing),
        ("forbidden", BlobCheck::Missing),
        ("gone", BlobCheck::Missing),
    ];
    for (name, expected) in cases {
        let location = mirror.url(&blob_path(name));
        assert_eq!(checker.check(&location, &base).await, expected, "{name}");
    }
    let stats = checker.stats();
    assert_eq!(stats.checks_sent, 5);
    assert_eq!(stats.found, 2);
    assert_eq!(stats.missing, 3);
    assert_eq!(mirror.heads(), 5);
}

#[tokio::test]
async fn found_blob_is_cached() {
    let mirror = Mirror::start().await;
    mirror.set_status(&blob_path(DIGEST), 200);
    let checker = checker(CheckSettings::default());
    let location = mirror.url(&blob_path(DIGEST));
    let base = mirror.url("/store");

    for _ in 0..3 {
        assert_eq!(checker.check(&location, &base).await, BlobCheck::Found);
    }
    // The mirror loses the blob, but a digest names its content, so the
    // cached result stays.
    mirror.set_status(&blob_path(DIGEST), 404);
    assert_eq!(checker.check(&location, &base).await, BlobCheck::Found);

    assert_eq!(mirror.heads(), 1);
    let stats = checker.stats();
    assert_eq!(stats.cache_hits, 3);
    assert_eq!(stats.cache_misses, 1);
}

#[tokio::test]
async fn missing_blob_rechecked_after_ttl() {
    let mirror = Mirror::start().await;
    let checker = checker(CheckSettings {
        missing_ttl: Duration::from_millis(300),
        ..CheckSettings::default()
    });
    let location = mirror.url(&blob_path(DIGEST));
    let base = mirror.url("/store");

    assert_eq!(checker.check(&location, &base).await, BlobCheck::Missing);
    // Uploaded now, but the missing result is still cached.
    mirror.set_status(&blob_path(DIGEST), 200);
    assert_eq!(checker.check(&location, &base).await, BlobCheck::Missing);
    assert_eq!(mirror.heads(), 1);

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(checker.check(&location, &base).await, BlobCheck::Found);
    assert_eq!(mirror.heads(), 2);
}

#[tokio::test]
async fn cache_keeps_capacity_and_evicts_least_recent() {
    let mirror = Mirror::start().await;
    let names: Vec<String> = (0..10).map(|n| format!("blob-{n}")).collect();
    for name in &names {
        mirror.set_status(&blob_path(name), 200);
    }
    let checker = checker(CheckSettings {
        cache_capacity: 3,
        ..CheckSettings::default()
    });
    let base = mirror.url("/store");
    let location = |name: &str| mirror.url(&blob_path(name));

    for name in &names {
        assert_eq!(
            checker.check(&location(name), &base).await,
            BlobCheck::Found
        );
        checker.run_pending_tasks().await;
    }
    assert_eq!(checker.stats().cached_entries, 3);

    // blob-7, 8 and 9 are cached. Using blob-7 makes blob-8 the least
    // recently used, so the next new blob evicts it.
    let heads = mirror.heads();
    assert_eq!(
        checker.check(&location("blob-7"), &base).await,
        BlobCheck::Found
    );
    checker.run_pending_tasks().await;
    assert_eq!(mirror.heads(), heads, "blob-7 was cached");
    assert_eq!(
        checker.check(&location("blob-0"), &base).await,
        BlobCheck::Found
    );
    checker.run_pending_tasks().await;
    assert_eq!(mirror.heads(), heads + 1, "blob-0 was evicted");

    assert_eq!(
        checker.check(&location("blob-7"), &base).await,
        BlobCheck::Found
    );
    assert_eq!(
        checker.check(&location("blob-9"), &base).await,
        BlobCheck::Found
    );
    assert_eq!(mirror.heads(), heads + 1, "blob-7 and blob-9 stayed");
    assert_eq!(
        checker.check(&location("blob-8"), &base).await,
        BlobCheck::Found
    );
    assert_eq!(mirror.heads(), heads + 2, "blob-8 was evicted");
    checker.run_pending_tasks().await;
    assert_eq!(checker.stats().cached_entries, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_share_one_head() {
    let mirror = Mirror::start().await;
    mirror.set_status(&blob_path(DIGEST), 200);
    mirror.set_delay(Duration::from_millis(200));
    let checker = checker(CheckSettings::default());
    let location = mirror.url(&blob_path(DIGEST));
    let base = mirror.url("/store");

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let checker = checker.clone();
        let location = location.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            checker.check(&location, &base).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), BlobCheck::Found);
    }
    assert_eq!(mirror.heads(), 1);
    assert_eq!(checker.stats().checks_sent, 1);
}

#[tokio::test]
async fn silent_mirror_times_out_once() {
    let listener = RawListener::start(Behavior::NeverAnswer).await;
    let timeout = Duration::from_millis(200);
    let checker = checker(CheckSettings {
        timeout,
        ..CheckSettings::default()
    });
    let base = listener.url("/store");

    let started = Instant::now();
    let first = checker.check(&listener.url(&blob_path("a")), &base).await;
    assert_eq!(first, BlobCheck::TimedOut);
    assert!(
        started.elapsed() < timeout + Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(listener.accepted(), 1);

    // Another blob on the same mirror is skipped without a connection, so
    // without a wait.
    let second = checker.check(&listener.url(&blob_path("b")), &base).await;
    assert_eq!(second, BlobCheck::MirrorFailing);
    assert_eq!(listener.accepted(), 1);

    let stats = checker.stats();
    assert_eq!(stats.timeouts, 1);
    assert_eq!(stats.skipped_failing_mirror, 1);
}

#[tokio::test]
async fn closing_mirror_is_a_failure() {
    let listener = RawListener::start(Behavior::Close).await;
    let checker = checker(CheckSettings::default());
    let base = listener.url("/store");

    let result = checker.check(&listener.url(&blob_path("a")), &base).await;
    assert_eq!(result, BlobCheck::Failed);
    let result = checker.check(&listener.url(&blob_path("a")), &base).await;
    assert_eq!(result, BlobCheck::MirrorFailing);
    assert_eq!(checker.stats().failures, 1);
}

#[tokio::test]
async fn server_error_marks_mirror_failing() {
    let mirror = Mirror::start().await;
    mirror.set_status(&blob_path("a"), 503);
    mirror.set_status(&blob_path("b"), 200);
    let checker = checker(CheckSettings {
        failing_mirror_skip: Duration::from_millis(300),
        ..CheckSettings::default()
    });
    let base = mirror.url("/store");

    assert_eq!(
        checker.check(&mirror.url(&blob_path("a")), &base).await,
        BlobCheck::Failed
    );
    assert_eq!(
        checker.check(&mirror.url(&blob_path("b")), &base).await,
        BlobCheck::MirrorFailing
    );
    assert_eq!(mirror.heads(), 1);

    // Once the skip ends, the mirror is checked again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        checker.check(&mirror.url(&blob_path("b")), &base).await,
        BlobCheck::Found
    );
    assert_eq!(mirror.heads(), 2);
}

#[tokio::test]
async fn other_mirrors_unaffected_by_failure() {
    let listener = RawListener::start(Behavior::Close).await;
    let mirror = Mirror::start().await;
    mirror.set_status(&blob_path(DIGEST), 200);
    let checker = checker(CheckSettings::default());

    let failing = checker
        .check(&listener.url(&blob_path(DIGEST)), &listener.url("/store"))
        .await;
    assert_eq!(failing, BlobCheck::Failed);
    let healthy = checker
        .check(&mirror.url(&blob_path(DIGEST)), &mirror.url("/store"))
        .await;
    assert_eq!(healthy, BlobCheck::Found);
}
