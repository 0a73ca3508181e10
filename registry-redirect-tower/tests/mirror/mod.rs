//! Test servers on 127.0.0.1: a blob mirror that counts its requests, a
//! listener that never responds, and one that closes every connection at
//! once.
//! Each stops when dropped.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::Router;
use registry_redirect_core::policy::{ClientLabel, HealthCheckSpec, UpstreamKind};
use registry_redirect_core::{Policy, PolicySpec, RuleSpec, UpstreamSpec};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The default upstream of [`regional_policy`]. Nothing listens there:
/// it is the last candidate, which is never contacted.
pub const DEFAULT_REGISTRY: &str = "http://127.0.0.1:5001";

#[derive(Default)]
struct MirrorState {
    /// Path → status, for `HEAD` and `GET`.
    statuses: Mutex<HashMap<String, u16>>,
    /// Status of a `GET` (a health probe) of a path not in `statuses`;
    /// 200 unless set. A `HEAD` of such a path gets 404.
    probe_status: AtomicU16,
    /// Delay before every response, in milliseconds.
    delay_ms: AtomicUsize,
    heads: AtomicUsize,
    probes: AtomicUsize,
}

/// A blob store mirror that responds to `HEAD` for blobs and `GET` for
/// health probes.
pub struct Mirror {
    pub addr: SocketAddr,
    state: Arc<MirrorState>,
    task: JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mirror {
    pub async fn start() -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(MirrorState {
            probe_status: AtomicU16::new(200),
            ..MirrorState::default()
        });
        let app = Router::new().fallback(answer).with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Mirror { addr, state, task }
    }

    /// Returns the URL of `path` on this mirror.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_status(&self, path: &str, status: u16) {
        self.state
            .statuses
            .lock()
            .unwrap()
            .insert(path.to_owned(), status);
    }

    pub fn set_probe_status(&self, status: u16) {
        self.state.probe_status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as usize, Ordering::SeqCst);
    }

    /// `HEAD` requests received.
    pub fn heads(&self) -> usize {
        self.state.heads.load(Ordering::SeqCst)
    }

    /// Health probes (`GET` requests) received.
    pub fn probes(&self) -> usize {
        self.state.probes.load(Ordering::SeqCst)
    }
}

async fn answer(State(state): State<Arc<MirrorState>>, request: Request) -> StatusCode {
    let path = request.uri().path().to_owned();
    let is_probe = request.method() == Method::GET;
    if is_probe {
        state.probes.fetch_add(1, Ordering::SeqCst);
    } else if request.method() == Method::HEAD {
        state.heads.fetch_add(1, Ordering::SeqCst);
    }

    let delay = state.delay_ms.load(Ordering::SeqCst) as u64;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let listed = state.statuses.lock().unwrap().get(&path).copied();
    let status = match listed {
        Some(status) => status,
        None if is_probe => state.probe_status.load(Ordering::SeqCst),
        None => 404,
    };
    StatusCode::from_u16(status).unwrap()
}

/// How a [`RawListener`] treats the connections it accepts.
#[derive(Clone, Copy)]
pub enum Behavior {
    /// Keep the connection open and never respond.
    NeverAnswer,
    /// Close the connection at once, before reading the request.
    Close,
}

/// A listener that accepts connections and counts them, but never responds
/// to HTTP.
pub struct RawListener {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for RawListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawListener {
    pub async fn start(behavior: Behavior) -> RawListener {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            // Connections are kept here so that they stay open until the
            // task is aborted.
            let mut open = Vec::new();
            // Bounded: no test opens more connections than this.
            for _ in 0..1000 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                match behavior {
                    Behavior::NeverAnswer => open.push(stream),
                    Behavior::Close => drop(stream),
                }
            }
        });
        RawListener {
            addr,
            accepted,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Waits until `condition` holds, checking every 20 ms for at most 5 s.
/// Returns whether it held.
pub async fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// Builds a policy whose AWS clients get blobs from the verified blob store
/// `buckets`. It has mirrors in eu-north-1 and eu-west-1 at
/// `/mirror-{region}` on `mirror`, and eu-north-1 falls back to eu-west-1.
/// Clients on 127.0.0.0/8 are AWS eu-north-1. Everything else goes to
/// [`DEFAULT_REGISTRY`].
pub fn regional_policy(mirror: &Mirror, health_check: Option<HealthCheckSpec>) -> Policy {
    regional_policy_at(&mirror.url(""), health_check)
}

/// Builds the policy of [`regional_policy`] with the mirrors at `/mirror-{region}` below
/// `origin`, such as `http://127.0.0.1:8080`.
pub fn regional_policy_at(origin: &str, health_check: Option<HealthCheckSpec>) -> Policy {
    let mut spec = PolicySpec::new("registry");
    spec.upstreams
        .insert("registry".into(), UpstreamSpec::new(DEFAULT_REGISTRY));
    let mut buckets = UpstreamSpec {
        kind: UpstreamKind::BlobStore,
        regions: vec!["eu-north-1".into(), "eu-west-1".into()],
        verify_blobs: true,
        health_check,
        ..UpstreamSpec::new(format!("{origin}/mirror-{{region}}"))
    };
    buckets
        .fallbacks
        .insert("eu-north-1".into(), vec!["eu-west-1".into()]);
    spec.upstreams.insert("buckets".into(), buckets);
    spec.rules.push(RuleSpec {
        clouds: vec!["aws".into()],
        ..RuleSpec::new("aws-blobs", "buckets")
    });
    let labels = vec![ClientLabel::new(Some("aws"), Some("eu-north-1"))];
    let prefixes = [("127.0.0.0/8".parse().unwrap(), 0)];
    Policy::compile_with_labels(&spec, labels, &prefixes).unwrap()
}
