//! Health probes against real mirrors on 127.0.0.1, with 50 ms intervals.

mod mirror;

use std::time::Duration;

use mirror::{wait_until, Behavior, Mirror, RawListener};
use registry_redirect_tower::client::HttpClient;
use registry_redirect_tower::health::{HealthProbes, ProbeTarget};

fn probes() -> HealthProbes {
    HealthProbes::new(HttpClient::new(Duration::from_secs(1)).unwrap())
}

fn target(base: String, url: String) -> ProbeTarget {
    ProbeTarget {
        upstream: "mirror".into(),
        region: None,
        base,
        url,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        unhealthy_after: 2,
    }
}

#[tokio::test]
async fn failing_mirror_turns_unhealthy_then_recovers() {
    let mirror = Mirror::start().await;
    let base = mirror.url("/store");
    let probes = probes();
    probes
        .start_targets(vec![target(base.clone(), mirror.url("/store/"))])
        .unwrap();
    assert_eq!(probes.health(&base), Some(true));
    assert!(wait_until(|| mirror.probes() >= 2).await);
    assert_eq!(probes.health(&base), Some(true));

    mirror.set_probe_status(503);
    assert!(wait_until(|| probes.health(&base) == Some(false)).await);
    let state = probes.snapshot().remove(0);
    assert!(state.consecutive_failures >= 2, "{state:?}");
    let error = state.last_error.unwrap_or_default();
    assert!(error.contains("503"), "{error}");

    mirror.set_probe_status(200);
    assert!(wait_until(|| probes.health(&base) == Some(true)).await);
    let state = probes.snapshot().remove(0);
    assert_eq!(state.consecutive_failures, 0);
    assert_eq!(state.last_error, None);
}

#[tokio::test]
async fn client_errors_count_as_passes() {
    let mirror = Mirror::start().await;
    mirror.set_probe_status(404);
    let base = mirror.url("/store");
    let probes = probes();
    probes
        .start_targets(vec![target(base.clone(), mirror.url("/store/"))])
        .unwrap();

    assert!(wait_until(|| mirror.probes() >= 4).await);
    assert_eq!(probes.health(&base), Some(true));
    assert_eq!(probes.snapshot()[0].failures, 0);
}

#[tokio::test]
async fn silent_mirror_times_out_to_unhealthy() {
    let listener = RawListener::start(Behavior::NeverAnswer).await;
    let base = listener.url("/store");
    let probes = probes();
    let target = ProbeTarget {
        timeout: Duration::from_millis(100),
        unhealthy_after: 1,
        ..target(base.clone(), listener.url("/store/"))
    };
    probes.start_targets(vec![target]).unwrap();

    assert!(wait_until(|| probes.health(&base) == Some(false)).await);
    let error = probes.snapshot()[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("timed out"), "{error}");
}

#[tokio::test]
async fn restart_keeps_unchanged_probes() {
    let first = Mirror::start().await;
    let second = Mirror::start().await;
    first.set_probe_status(503);
    let first_target = target(first.url("/store"), first.url("/store/"));
    let second_target = target(second.url("/store"), second.url("/store/"));
    let probes = probes();

    probes.start_targets(vec![first_target.clone()]).unwrap();
    assert!(wait_until(|| probes.health(&first_target.base) == Some(false)).await);

    // Reload with the first mirror unchanged: it stays unhealthy instead of
    // starting over as healthy.
    probes
        .start_targets(vec![first_target.clone(), second_target.clone()])
        .unwrap();
    assert_eq!(probes.health(&first_target.base), Some(false));
    assert_eq!(probes.health(&second_target.base), Some(true));
    assert!(wait_until(|| second.probes() >= 1).await);

    // Reload without the first mirror: it is no longer probed.
    probes.start_targets(vec![second_target.clone()]).unwrap();
    assert_eq!(probes.health(&first_target.base), None);
    let listed: Vec<String> = probes
        .snapshot()
        .into_iter()
        .map(|state| state.target.base)
        .collect();
    assert_eq!(listed, [second_target.base.as_str()]);
    assert_probes_stop(&first).await;
}

#[tokio::test]
async fn stop_ends_every_probe() {
    let mirror = Mirror::start().await;
    let base = mirror.url("/store");
    let probes = probes();
    probes
        .start_targets(vec![target(base.clone(), mirror.url("/store/"))])
        .unwrap();
    assert!(wait_until(|| mirror.probes() >= 1).await);

    probes.stop();
    assert_eq!(probes.health(&base), None);
    assert!(probes.snapshot().is_empty());
    assert_probes_stop(&mirror).await;
}

#[tokio::test]
async fn dropping_last_clone_ends_probes() {
    let mirror = Mirror::start().await;
    let probes = probes();
    let clone = probes.clone();
    probes
        .start_targets(vec![target(mirror.url("/store"), mirror.url("/store/"))])
        .unwrap();
    assert!(wait_until(|| mirror.probes() >= 1).await);

    drop(probes);
    assert!(
        wait_until(|| mirror.probes() >= 3).await,
        "a clone keeps them"
    );
    drop(clone);
    assert_probes_stop(&mirror).await;
}

/// Asserts that `mirror` receives no more probes, after a moment for a
/// request already on the wire to arrive.
async fn assert_probes_stop(mirror: &Mirror) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let probes = mirror.probes();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mirror.probes(), probes);
}
