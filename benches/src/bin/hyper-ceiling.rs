//! `hyper-ceiling`: a bare hyper server that `benches/load.sh` compares with
//! `registry-redirect serve`, as the ceiling for a hyper server on the
//! machine.
//!
//! It responds to every request with the same `307 Temporary Redirect` and
//! a fixed `Location`, over HTTP/1.1 with keep-alive, on a current-thread
//! Tokio runtime. It parses no path, decides nothing and logs nothing, so
//! the gap between its requests per CPU-second and the redirector's is the
//! cost of the policy, the tower layer and the server around it. Its
//! response is smaller than the redirector's: two headers and a 19-byte
//! body, against five headers and an HTML body of about 150 bytes.
//!
//! ```text
//! hyper-ceiling --listen 127.0.0.1:18003
//! ```
//!
//! It runs until SIGINT or SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// The `Location` of every response: the shape of the redirector's answer
/// to a blob request for a client that matches no range.
const LOCATION_VALUE: &str = "https://registry.k8s.io/v2/library/nginx/blobs/\
    sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The body of every response, as short as the redirector's.
const BODY: &str = "Temporary Redirect\n";

fn main() -> ExitCode {
    let listen = match parse_listen(std::env::args().skip(1)) {
        Ok(listen) => listen,
        Err(message) => {
            eprintln!("hyper-ceiling: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hyper-ceiling: failed to start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hyper-ceiling: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Reads `--listen IP:PORT`, the only argument.
fn parse_listen(mut args: impl Iterator<Item = String>) -> Result<SocketAddr, String> {
    const USAGE: &str = "usage: hyper-ceiling --listen IP:PORT";
    match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--listen"), Some(addr), None) => addr
            .parse()
            .map_err(|_| format!("invalid --listen address \"{addr}\" (expected IP:PORT)")),
        _ => Err(USAGE.to_owned()),
    }
}

/// Accepts connections on `listen` until SIGINT or SIGTERM, serving each on
/// its own task.
async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    println!("listening on http://{}", listener.local_addr()?);

    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        };
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            // A client that resets its connection ends only that connection.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(redirect))
                .await;
        });
    }
}

/// Returns the fixed redirect, whatever the request.
async fn redirect(
    _request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    let headers = response.headers_mut();
    headers.insert(LOCATION, HeaderValue::from_static(LOCATION_VALUE));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}
