//! `layer-calls`: calls the tower layer on one redirect, many times, so
//! that `valgrind --tool=callgrind` can count the instructions that the
//! layer's metrics add to a request.
//!
//! ```text
//! cargo build --release -p registry-redirect-benches --bin layer-calls
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/layer-calls plain 100000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/layer-calls metrics 100000
//! ```
//!
//! The difference of the two totals ("Collected"), divided by the number
//! of calls, is the cost of recording one request. The access log is off
//! in both runs, and each response is dropped unpolled: the layer builds it
//! during the call.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use http::{Request, Response};
use registry_redirect_benches::fixtures::{cloud_policy, RequestCase};
use registry_redirect_benches::synthetic::synthetic_ranges;
use registry_redirect_tower::{Metrics, RegistryRedirectLayer};
use tower_layer::Layer;
use tower_service::Service;

/// The inner service, which a `/v2` request never reaches.
#[derive(Clone)]
struct Unreached;

impl Service<Request<()>> for Unreached {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(
        &mut self,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(())))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (with_metrics, calls) = match args.as_slice() {
        [mode, calls] if mode == "plain" || mode == "metrics" => match calls.parse::<u64>() {
            Ok(calls) => (mode == "metrics", calls),
            Err(_) => return usage(),
        },
        _ => return usage(),
    };

    let Ok(policy) = cloud_policy(&synthetic_ranges(1_000, 1)) else {
        eprintln!("layer-calls: the bench policy does not compile");
        return ExitCode::FAILURE;
    };
    let mut layer = RegistryRedirectLayer::new(policy).access_log(false);
    if with_metrics {
        layer = layer.with_metrics(Metrics::new());
    }
    let mut service = layer.layer(Unreached);
    let case = RequestCase::manifest_by_tag();
    let peer = SocketAddr::from(([203, 0, 113, 9], 40000));
    for _ in 0..calls {
        let mut request = Request::get(case.path.as_str())
            .body(())
            .unwrap_or_default();
        request.extensions_mut().insert(peer);
        drop(std::hint::black_box(service.call(request)));
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: layer-calls plain|metrics CALLS");
    ExitCode::from(2)
}
