//! Hostile requests against the real server over TCP. `registry-redirect
//! serve` runs as a child process on 127.0.0.1 with a config this test
//! writes. Each request goes out as raw bytes, so targets that no HTTP
//! client library would send reach the server as written: raw CR, LF, NUL
//! and spaces, bytes that are not UTF-8, 64 KiB paths.
//!
//! The targets are those of the core's corpus
//! (`registry-redirect-core/tests/data/hostile-targets.txt`). Each response
//! must be one of:
//!
//! - a 4xx from hyper itself (400 for a malformed request line, 414 for a
//!   target over 64 KiB), which has no `Docker-Distribution-Api-Version`
//!   header and no body. Such a request never reached the redirector, so
//!   the OCI error body check applies only to `/v2` paths that did;
//! - the server's own answer for a path outside `/v2` (`GET /` or 404);
//! - for a `/v2` path: a 400, 404 or 405 with an OCI error body, the 200 of the
//!   API version check, or a redirect whose `Location` is an upstream's URL
//!   for the same repository.
//!
//! Never a 5xx, a closed connection without a response, or a header the
//! server does not write (an injected one). When a raw CR or LF ends the
//! request line early, the server sees a shorter target (and possibly a
//! second request); the `Location` is checked against the target up to the
//! first space, CR or LF, which is what the request line holds.
//!
//! The spoofing tests connect from 127.0.0.2, which is not a trusted proxy,
//! and from 127.0.0.1, which is and writes `X-Forwarded-For` (the default
//! `forwarded_header`). The PROXY protocol is not implemented, so nothing
//! here covers it.

#[path = "../../registry-redirect-core/tests/common/corpus.rs"]
mod corpus;
#[path = "../../registry-redirect-core/tests/common/location.rs"]
mod location;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use http::Uri;
use registry_redirect_cli::config::Config;
use registry_redirect_cli::serve::{NOT_FOUND_TEXT, ROOT_TEXT};
use registry_redirect_core::path::{classify, RegistryPath};

use corpus::{oci_error_code, targets, Target};
use location::LocationOracle;

const BIN: &str = env!("CARGO_BIN_EXE_registry-redirect");

/// Upper bound for the server to start.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// Upper bound for one request and its response.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A trusted proxy in the config.
const TRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// An untrusted client with no rule of its own.
const UNTRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// An untrusted client whose blobs go to the blob store.
const BLOB_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The server's config: a plain default, Docker Hub with `library/` for the
/// `lab` range, a mirror with port, base path and `path_prefix`, an IPv6
/// upstream, and a blob store. No upstream has blob verification or health
/// probes, so the server sends nothing anywhere.
const CONFIG: &str = r#"
trusted_proxies = ["127.0.0.1/32"]
default_upstream = "k8s"

[upstreams.k8s]
url = "https://registry.k8s.io"

[upstreams.hub]
url = "https://registry-1.docker.io"
library_prefix = true

[upstreams.prod]
url = "https://mirror.example:8443/base"
path_prefix = "k8s-artifacts-prod/images"

[upstreams.v6]
url = "http://[2001:db8::5]:5000/registry"

[upstreams.blobs]
kind = "blob_store"
url = "https://blobs.example/store"

[[rules]]
name = "lab"
clients = ["192.168.0.0/24", "2001:db8:1::/48"]
upstream = "hub"

[[rules]]
name = "blob-client"
clients = ["127.0.0.3/32"]
kinds = ["blob"]
upstream = "blobs"

[[rules]]
name = "prod-images"
repositories = ["pause", "kube*"]
upstream = "prod"

[[rules]]
name = "v6-images"
repositories = ["a"]
upstream = "v6"
"#;

/// A running `registry-redirect serve`, killed on drop so that a failing
/// test never leaves it running.
struct Server {
    child: Child,
    addr: SocketAddr,
    config_dir: PathBuf,
}

impl Server {
    fn start(name: &str) -> Server {
        let config_dir =
            std::env::temp_dir().join(format!("registry-redirect-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&config_dir).expect("create the config directory");
        let config = config_dir.join("config.toml");
        std::fs::write(&config, CONFIG).expect("write the config");

        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "error"])
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the registry-redirect binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut server = Server {
            child,
            addr: SocketAddr::from((TRUSTED, 0)),
            config_dir,
        };
        server.addr = read_listen_address(stdout);
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.config_dir);
    }
}

/// Reads the first stdout line, `listening on http://ADDR`, on a thread so
/// that a server that never prints cannot hang the test. The thread then
/// drains stdout, so the server never blocks on a full pipe.
fn read_listen_address(stdout: ChildStdout) -> SocketAddr {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = sender.send(first);
        for _ in lines {}
    });
    let line = receiver
        .recv_timeout(START_DEADLINE)
        .expect("the server prints its address within the deadline");
    line.strip_prefix("listening on http://")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("first stdout line is not `listening on http://ADDR`: {line:?}"))
}

/// Connects to `server` from the loopback address `from`. The standard
/// library cannot bind before connecting, so Tokio's socket does it.
fn connect_from(
    runtime: &tokio::runtime::Runtime,
    from: Ipv4Addr,
    server: SocketAddr,
) -> TcpStream {
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("create a socket");
        socket
            .bind(SocketAddr::from((from, 0)))
            .unwrap_or_else(|error| panic!("bind {from}: {error}"));
        let stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(server))
            .await
            .expect("connect within the timeout")
            .expect("connect to the server");
        stream.into_std().expect("a std stream")
    });
    stream.set_nonblocking(false).expect("blocking mode");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    stream
}

/// A response parsed by hand from the bytes on the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Sends one raw request and reads the first response. `headers` are raw
/// header lines, each ending in CRLF.
fn send_raw(
    runtime: &tokio::runtime::Runtime,
    server: SocketAddr,
    from: Ipv4Addr,
    method: &str,
    target: &[u8],
    headers: &str,
) -> Result<Response, String> {
    let mut request = format!("{method} ").into_bytes();
    request.extend_from_slice(target);
    request.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: registry.example.test\r\n{headers}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    send_bytes(runtime, server, from, &request)
}

/// Sends `request` as written and reads the first response.
fn send_bytes(
    runtime: &tokio::runtime::Runtime,
    server: SocketAddr,
    from: Ipv4Addr,
    request: &[u8],
) -> Result<Response, String> {
    let mut stream = connect_from(runtime, from, server);
    stream
        .write_all(request)
        .map_err(|error| format!("write: {error}"))?;
    let mut raw = Vec::new();
    if let Err(error) = stream.read_to_end(&mut raw) {
        // A reset after the response was written still leaves the response.
        if raw.is_empty() {
            return Err(format!("read: {error}"));
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response: {:?}", String::from_utf8_lossy(raw)))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header line without a colon: {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut body = raw[split + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok());
    if let Some(length) = length {
        // A second pipelined response may follow; keep the first body only.
        body.truncate(length);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The headers this server writes; anything else was injected.
const KNOWN_HEADERS: &[&str] = &[
    "allow",
    "cache-control",
    "connection",
    "content-length",
    "content-type",
    "date",
    "docker-distribution-api-version",
    "location",
];

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    /// hyper rejected the request before the application saw it.
    Hyper,
    /// Outside `/v2`: the server's own routes responded.
    Application,
    /// 400 (user info in an absolute-form target), 404 or 405, with an OCI
    /// error body.
    Rejected,
    /// 200 for the API version check.
    Answered,
    /// A redirect to an upstream.
    Redirected,
}

/// Returns the target as the request line contains it: up to the first
/// space, CR or LF.
fn request_line_target(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .position(|&byte| matches!(byte, b' ' | b'\r' | b'\n'))
        .unwrap_or(bytes.len());
    &bytes[..end]
}

fn judge(oracle: &LocationOracle, target: &Target, response: &Response) -> Result<Verdict, String> {
    let status = response.status;
    if status >= 500 {
        return Err(format!("status {status}"));
    }
    if let Some((name, _)) = response
        .headers
        .iter()
        .find(|(name, _)| !KNOWN_HEADERS.contains(&name.as_str()))
    {
        return Err(format!(
            "unexpected header {name:?}: {:?}",
            response.headers
        ));
    }
    let locations = response
        .headers
        .iter()
        .filter(|(name, _)| name == "location")
        .count();
    if locations > 1 {
        return Err(format!("{locations} Location headers"));
    }
    let is_head = target.method == "HEAD";
    let registry = response.header("docker-distribution-api-version") == Some("registry/2.0");

    let line_target = request_line_target(&target.bytes);
    let uri = Uri::try_from(line_target).ok();
    let path = uri.as_ref().map(|uri| uri.path().to_owned());
    let registry_path = path.as_deref().map(classify);

    if !registry {
        if response.header("location").is_some() {
            return Err("a redirect without Docker-Distribution-Api-Version".to_owned());
        }
        if matches!(registry_path, Some(Ok(RegistryPath::NotRegistry))) {
            let body_ok = response.body.is_empty()
                || response.body == ROOT_TEXT.as_bytes()
                || response.body == NOT_FOUND_TEXT.as_bytes();
            if !body_ok {
                return Err(format!(
                    "unexpected body {:?}",
                    String::from_utf8_lossy(&response.body)
                ));
            }
            return Ok(Verdict::Application);
        }
        if (400..500).contains(&status) && response.body.is_empty() {
            return Ok(Verdict::Hyper);
        }
        return Err(format!(
            "status {status} without registry headers for {registry_path:?}, body {:?}",
            String::from_utf8_lossy(&response.body)
        ));
    }

    let registry_path =
        registry_path.ok_or("the redirector answered a target http::Uri rejects")?;
    match status {
        301 | 302 | 303 | 307 | 308 => {
            let location = response
                .header("location")
                .ok_or("a redirect without Location")?;
            let registry_path = registry_path
                .map_err(|error| format!("redirected a path that classify rejects: {error}"))?;
            let query = uri.as_ref().and_then(Uri::query);
            oracle.check(location, &registry_path, query)?;
            Ok(Verdict::Redirected)
        }
        200 => {
            if registry_path != Ok(RegistryPath::ApiVersionCheck) {
                return Err(format!("200 for {registry_path:?}"));
            }
            Ok(Verdict::Answered)
        }
        400 | 404 | 405 => {
            if response.header("content-type") != Some("application/json") {
                return Err("a rejection without Content-Type: application/json".to_owned());
            }
            if !is_head {
                oci_error_code(&response.body)?;
                let body: serde_json::Value = serde_json::from_slice(&response.body)
                    .map_err(|error| format!("the error body is not JSON: {error}"))?;
                if !body["errors"][0]["code"].is_string() {
                    return Err("no errors[0].code".to_owned());
                }
            }
            Ok(Verdict::Rejected)
        }
        other => Err(format!("status {other} from the redirector")),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

fn oracle() -> LocationOracle {
    let config = Config::parse("hostile_tcp.toml", CONFIG).expect("the test config is valid");
    LocationOracle::new(&config.policy)
}

#[test]
fn hostile_targets_over_tcp() {
    let server = Server::start("hostile-tcp");
    let runtime = runtime();
    let oracle = oracle();
    let mut counts: BTreeMap<(String, Verdict), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for target in targets() {
        for from in [UNTRUSTED, BLOB_CLIENT] {
            let result = send_raw(
                &runtime,
                server.addr,
                from,
                &target.method,
                &target.bytes,
                "",
            )
            .and_then(|response| judge(&oracle, &target, &response));
            match result {
                Ok(verdict) => *counts.entry((target.class.clone(), verdict)).or_default() += 1,
                Err(error) => failures.push(format!("{} from {from}: {error}", target.display())),
            }
        }
    }
    println!("hostile corpus over TCP (targets x 2 peers):");
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

/// Returns the `Location` of a manifest request for a one-component name,
/// which the `lab` rule sends to Docker Hub with `library/` in front.
fn location_from(
    runtime: &tokio::runtime::Runtime,
    server: SocketAddr,
    from: Ipv4Addr,
    headers: &str,
) -> String {
    let response = send_raw(
        runtime,
        server,
        from,
        "GET",
        b"/v2/nginx/manifests/latest",
        headers,
    )
    .unwrap_or_else(|error| panic!("from {from} with {headers:?}: {error}"));
    assert_eq!(
        response.status, 307,
        "from {from} with {headers:?}: {response:?}"
    );
    response
        .header("location")
        .unwrap_or_else(|| panic!("no Location from {from} with {headers:?}"))
        .to_owned()
}

const DEFAULT_LOCATION: &str = "https://registry.k8s.io/v2/nginx/manifests/latest";
const LAB_LOCATION: &str = "https://registry-1.docker.io/v2/library/nginx/manifests/latest";

#[test]
fn untrusted_peer_cannot_spoof_over_tcp() {
    let server = Server::start("spoof-untrusted");
    let runtime = runtime();
    let plain = location_from(&runtime, server.addr, UNTRUSTED, "");
    assert_eq!(plain, DEFAULT_LOCATION);
    let chain = vec!["192.168.0.20"; 3000].join(", ");
    for headers in [
        "X-Forwarded-For: 192.168.0.20\r\n".to_owned(),
        "X-Forwarded-For: 192.168.0.20, 127.0.0.1\r\n".to_owned(),
        "X-Forwarded-For: 192.168.0.20\r\nX-Forwarded-For: 127.0.0.1\r\n".to_owned(),
        format!("X-Forwarded-For: {chain}\r\n"),
        "Forwarded: for=192.168.0.20\r\n".to_owned(),
        "Forwarded: for=\"[2001:db8:1::7]:4711\";proto=https\r\n".to_owned(),
        "X-Real-IP: 192.168.0.20\r\n".to_owned(),
        "X-Real-IP: ::ffff:192.168.0.20\r\n".to_owned(),
        "Forwarded: for=192.168.0.20\r\nX-Forwarded-For: 192.168.0.21\r\nX-Real-IP: 192.168.0.22\r\n"
            .to_owned(),
    ] {
        let spoofed = location_from(&runtime, server.addr, UNTRUSTED, &headers);
        assert_eq!(spoofed, plain, "headers {headers:?}");
    }
}

#[test]
fn trusted_proxy_headers_over_tcp() {
    let server = Server::start("spoof-trusted");
    let runtime = runtime();
    let addr = server.addr;
    // The trusted peer itself is outside every rule.
    assert_eq!(location_from(&runtime, addr, TRUSTED, ""), DEFAULT_LOCATION);

    let long_chain = format!("{}, 192.168.0.20", vec!["203.0.113.1"; 3000].join(", "));
    for (headers, expected) in [
        ("X-Forwarded-For: 192.168.0.20\r\n".to_owned(), LAB_LOCATION),
        (
            "X-Forwarded-For: 192.168.0.20:4711, 127.0.0.1\r\n".to_owned(),
            LAB_LOCATION,
        ),
        (
            "X-Forwarded-For: ::ffff:192.168.0.20\r\n".to_owned(),
            LAB_LOCATION,
        ),
        (format!("X-Forwarded-For: {long_chain}\r\n"), LAB_LOCATION),
        // The proxy writes X-Forwarded-For (the default forwarded_header),
        // so the other headers came from the client and are not read.
        (
            "Forwarded: for=\"[2001:db8:1::7]:4711\"\r\n".to_owned(),
            DEFAULT_LOCATION,
        ),
        ("X-Real-IP: 192.168.0.20\r\n".to_owned(), DEFAULT_LOCATION),
        (
            "Forwarded: for=192.168.0.20\r\nX-Forwarded-For: 203.0.113.5\r\n".to_owned(),
            DEFAULT_LOCATION,
        ),
        // Garbage stops the reading at the nearest trusted hop, the peer.
        (
            "X-Forwarded-For: 192.168.0.20, garbage\r\n".to_owned(),
            DEFAULT_LOCATION,
        ),
        (
            "X-Forwarded-For: 192.168.0.20, 203.0.113.5\r\n".to_owned(),
            DEFAULT_LOCATION,
        ),
        (
            "X-Forwarded-For: fe80::1%eth0\r\n".to_owned(),
            DEFAULT_LOCATION,
        ),
        (
            "X-Forwarded-For: [2001:db8:1::7%2]:4711\r\n".to_owned(),
            DEFAULT_LOCATION,
        ),
        (
            "X-Forwarded-For: 192.168.0.020\r\n".to_owned(),
            DEFAULT_LOCATION,
        ),
        (
            "X-Forwarded-For: 0xc0.0xa8.0.20\r\n".to_owned(),
            DEFAULT_LOCATION,
        ),
        (
            "X-Forwarded-For: 192.168.20\r\n".to_owned(),
            DEFAULT_LOCATION,
        ),
    ] {
        assert_eq!(
            location_from(&runtime, addr, TRUSTED, &headers),
            expected,
            "headers {headers:?}"
        );
    }
}

#[test]
fn blob_client_reaches_blob_store_over_tcp() {
    // A control for the corpus run: the second peer's blobs go elsewhere.
    let server = Server::start("blob-client");
    let runtime = runtime();
    let target = format!("/v2/pause/blobs/{DIGEST}");
    let response = send_raw(
        &runtime,
        server.addr,
        BLOB_CLIENT,
        "GET",
        target.as_bytes(),
        "",
    )
    .expect("a response");
    assert_eq!(
        response.header("location"),
        Some(format!("https://blobs.example/store/containers/images/{DIGEST}").as_str())
    );
}

/// A second `Host` line, or a `Host` that is not a host and port, gets a
/// 400 with an OCI error body, as RFC 9112 requires. The host that the
/// rules match must not depend on which line a proxy in front of the
/// server read.
#[test]
fn ambiguous_host_header_over_tcp() {
    let server = Server::start("host-header");
    let runtime = runtime();
    // `send_raw` writes `Host: registry.example.test` first.
    for headers in [
        "Host: quay.io\r\n",
        "Host: registry.example.test\r\n",
        "X-Other: 1\r\nHost: quay.io\r\n",
    ] {
        for method in ["GET", "HEAD"] {
            let response = send_raw(
                &runtime,
                server.addr,
                UNTRUSTED,
                method,
                b"/v2/nginx/manifests/latest",
                headers,
            )
            .unwrap_or_else(|error| panic!("{method} with {headers:?}: {error}"));
            assert_eq!(
                response.status, 400,
                "{method} with {headers:?}: {response:?}"
            );
            assert_eq!(response.header("location"), None);
            if method == "GET" {
                assert_eq!(
                    oci_error_code(&response.body).as_deref(),
                    Ok("UNSUPPORTED"),
                    "{headers:?}: {response:?}"
                );
            }
        }
    }
    // Outside `/v2`, the server's own pages respond as before.
    let response = send_raw(
        &runtime,
        server.addr,
        UNTRUSTED,
        "GET",
        b"/",
        "Host: quay.io\r\n",
    )
    .expect("a response");
    assert_eq!(response.status, 200, "{response:?}");
}

/// An HTTP/1.1 request without a host gets 400 on every path, as RFC 9112
/// (section 3.2) requires. HTTP/1.0 needs no `Host`, and an absolute-form
/// target carries the host in the request line.
#[test]
fn missing_host_over_tcp() {
    let server = Server::start("missing-host");
    let runtime = runtime();
    let send = |request: &str| {
        send_bytes(&runtime, server.addr, UNTRUSTED, request.as_bytes())
            .unwrap_or_else(|error| panic!("{request:?}: {error}"))
    };

    let manifest = send("GET /v2/nginx/manifests/latest HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(manifest.status, 400, "{manifest:?}");
    assert_eq!(manifest.header("location"), None);
    assert_eq!(
        oci_error_code(&manifest.body).as_deref(),
        Ok("UNSUPPORTED"),
        "{manifest:?}"
    );
    assert!(
        String::from_utf8_lossy(&manifest.body).contains("no Host header"),
        "{manifest:?}"
    );

    let head = send("HEAD /v2/nginx/manifests/latest HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(head.status, 400, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");

    let root = send("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(root.status, 400, "{root:?}");
    assert!(
        String::from_utf8_lossy(&root.body).contains("no Host header"),
        "{root:?}"
    );

    let http10 = send("GET /v2/nginx/manifests/latest HTTP/1.0\r\n\r\n");
    assert_eq!(http10.status, 307, "{http10:?}");

    let absolute = send(
        "GET http://registry.example.test/v2/nginx/manifests/latest HTTP/1.1\r\n\
         Connection: close\r\n\r\n",
    );
    assert_eq!(absolute.status, 307, "{absolute:?}");
}

#[test]
fn header_peer_addresses_are_loopback() {
    // The spoofing tests rely on 127.0.0.2 and 127.0.0.3 being local.
    for addr in [UNTRUSTED, BLOB_CLIENT] {
        assert!(IpAddr::V4(addr).is_loopback(), "{addr}");
    }
}
