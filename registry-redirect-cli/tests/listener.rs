//! The listener of `serve` over real loopback TCP, in process. The tests
//! cover PROXY protocol headers from trusted and untrusted peers, the
//! connection, header size and idle limits, and HTTPS: curl as the client,
//! a PROXY header before a TLS handshake, a stalled handshake, and plain
//! HTTP on the HTTPS port.
//!
//! Loopback has a whole /8, so a client socket bound to 127.0.0.2 is the
//! trusted proxy and one bound to 127.0.0.3 is not. Upstream URLs point at
//! 127.0.0.1:9 and are only ever written into `Location` headers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/certificates.rs"]
mod certificates;

use certificates::TestCertificates;
use registry_redirect_cli::app::app;
use registry_redirect_cli::config::Config;
use registry_redirect_cli::limits::Limits;
use registry_redirect_cli::proxy_protocol::ProxyProtocol;
use registry_redirect_cli::serve::{self, ConnectionSettings, ShutdownSignals};
use registry_redirect_cli::tls::{reload_certificate, Tls, TlsFiles};
use registry_redirect_tower::{PolicyHandle, RegistryRedirectLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const TRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const UNTRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// Upper bound for one exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A policy whose redirect shows the client's network: documentation
/// ranges for IPv4 and IPv6, everything else to `default`.
const POLICY: &str = r#"
trusted_proxies = ["127.0.0.2/32"]
default_upstream = "default"

[upstreams.default]
url = "http://127.0.0.1:9/default"

[upstreams.v4]
url = "http://127.0.0.1:9/v4net"

[upstreams.v6]
url = "http://127.0.0.1:9/v6net"

[[rules]]
name = "v4"
clients = ["192.0.2.0/24"]
upstream = "v4"

[[rules]]
name = "v6"
clients = ["2001:db8::/32"]
upstream = "v6"
"#;

const REQUEST: &[u8] =
    b"GET /v2/pause/manifests/3.10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Starts [`serve::run`] on a free port of 127.0.0.1 with [`POLICY`].
async fn start(limits: Limits, proxy_protocol: bool, tls: Option<Tls>) -> SocketAddr {
    start_with_h2c(limits, proxy_protocol, tls, false).await
}

/// Starts the server as [`start`] does, with h2c on plain connections when `h2c`.
async fn start_with_h2c(
    limits: Limits,
    proxy_protocol: bool,
    tls: Option<Tls>,
    h2c: bool,
) -> SocketAddr {
    let listener = serve::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config::parse("listener-test.toml", POLICY).unwrap();
    let handle = PolicyHandle::new(config.policy);
    let layer = RegistryRedirectLayer::with_handle(handle.clone()).access_log(false);
    let settings = ConnectionSettings {
        limits,
        tls,
        proxy_protocol: proxy_protocol.then(|| ProxyProtocol::new(handle)),
        metrics: None,
        h2c,
    };
    let signals = ShutdownSignals::install().unwrap();
    tokio::spawn(serve::run(
        listener,
        app(layer),
        signals,
        Duration::from_secs(1),
        settings,
    ));
    addr
}

/// Connects to `server` from the loopback address `source`.
async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads until the server closes the connection, at most [`IO_TIMEOUT`].
/// A reset counts as a close: the server drops connections it rejects
/// with unread bytes in them.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    let read = tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut response)).await;
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(error)) => panic!("reading the response failed: {error}"),
        Err(_) => panic!("the server neither responded nor closed within {IO_TIMEOUT:?}"),
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// Sends `prefix` and then [`REQUEST`] from `source`, and returns the
/// response; empty when the server closed the connection.
async fn exchange(server: SocketAddr, source: Ipv4Addr, prefix: &[u8]) -> String {
    let mut stream = connect_from(source, server).await;
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(REQUEST);
    // A server that closes at once may reset the connection mid-write.
    let _ = stream.write_all(&bytes).await;
    read_until_closed(&mut stream).await
}

fn location(response: &str) -> Option<&str> {
    response
        .lines()
        .find_map(|line| line.strip_prefix("location: "))
}

/// Builds a version 2 header: `command` 0x20 (LOCAL) or 0x21 (PROXY),
/// `family` 0x11 (TCP over IPv4), 0x21 (TCP over IPv6) or 0x00, then the
/// address block and TLVs as given.
fn v2_header(command: u8, family: u8, rest: &[u8]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(command);
    header.push(family);
    let length = u16::try_from(rest.len()).unwrap();
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(rest);
    header
}

fn v2_tcp4(source: [u8; 4]) -> Vec<u8> {
    let mut addresses = source.to_vec();
    addresses.extend([127, 0, 0, 1]);
    addresses.extend(40000u16.to_be_bytes());
    addresses.extend(5000u16.to_be_bytes());
    addresses
}

fn v2_tcp6(source: &str) -> Vec<u8> {
    let source: std::net::Ipv6Addr = source.parse().unwrap();
    let mut addresses = source.octets().to_vec();
    addresses.extend(std::net::Ipv6Addr::LOCALHOST.octets());
    addresses.extend(40000u16.to_be_bytes());
    addresses.extend(5000u16.to_be_bytes());
    addresses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_set_client_address() {
    let server = start(Limits::default(), true, None).await;
    let mut with_tlv = v2_tcp4([192, 0, 2, 9]);
    // A PP2_TYPE_NOOP TLV of 3 bytes, which is skipped.
    with_tlv.extend([0x04, 0x00, 0x03, 1, 2, 3]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "v1 TCP4",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 5000\r\n".to_vec(),
            "/v4net/",
        ),
        (
            "v1 TCP6",
            b"PROXY TCP6 2001:db8::7 ::1 40000 5000\r\n".to_vec(),
            "/v6net/",
        ),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec(), "/default/"),
        (
            "v2 TCP4",
            v2_header(0x21, 0x11, &v2_tcp4([192, 0, 2, 7])),
            "/v4net/",
        ),
        (
            "v2 TCP6",
            v2_header(0x21, 0x21, &v2_tcp6("2001:db8::7")),
            "/v6net/",
        ),
        (
            "v2 LOCAL",
            v2_header(0x20, 0x11, &v2_tcp4([192, 0, 2, 7])),
            "/default/",
        ),
        ("v2 UNSPEC", v2_header(0x21, 0x00, &[]), "/default/"),
        (
            "v2 TCP4 with TLV",
            v2_header(0x21, 0x11, &with_tlv),
            "/v4net/",
        ),
    ];
    for (case, header, expected) in cases {
        let response = exchange(server, TRUSTED, &header).await;
        assert!(response.starts_with("HTTP/1.1 307 "), "{case}: {response}");
        let location = location(&response).unwrap_or_default();
        assert!(location.contains(expected), "{case}: {location}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_from_untrusted_peer_rejected() {
    let server = start(Limits::default(), true, None).await;
    let headers = [
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 5000\r\n".to_vec(),
        v2_header(0x21, 0x11, &v2_tcp4([192, 0, 2, 7])),
    ];
    for header in headers {
        let response = exchange(server, UNTRUSTED, &header).await;
        assert_eq!(response, "", "{header:?}");
    }

    // Without a header, the untrusted peer is served as itself.
    let response = exchange(server, UNTRUSTED, b"").await;
    assert!(response.starts_with("HTTP/1.1 307 "), "{response}");
    assert!(
        location(&response)
            .unwrap_or_default()
            .contains("/default/"),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_peer_without_header_rejected() {
    let server = start(Limits::default(), true, None).await;
    let response = exchange(server, TRUSTED, b"").await;
    assert_eq!(response, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_proxy_headers_rejected() {
    let server = start(Limits::default(), true, None).await;
    let mut no_crlf = b"PROXY TCP4 ".to_vec();
    no_crlf.extend([b'1'; 120]);
    let mut too_long = v2_tcp4([192, 0, 2, 7]);
    too_long.resize(2000, 0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "v1 invalid address",
            b"PROXY TCP4 999.0.2.7 127.0.0.1 40000 5000\r\n".to_vec(),
        ),
        (
            "v1 invalid protocol",
            b"PROXY UDP4 192.0.2.7 127.0.0.1 1 2\r\n".to_vec(),
        ),
        ("v1 no CRLF within 107 bytes", no_crlf),
        (
            "v2 version 1 in the binary form",
            v2_header(0x11, 0x11, &v2_tcp4([192, 0, 2, 7])),
        ),
        (
            "v2 address block too short",
            v2_header(0x21, 0x11, &[1, 2, 3]),
        ),
        (
            "v2 longer than the maximum",
            v2_header(0x21, 0x11, &too_long),
        ),
    ];
    for (case, header) in cases {
        let response = exchange(server, TRUSTED, &header).await;
        assert_eq!(response, "", "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_holds_next_connection() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let server = start(limits, false, None).await;
    let holder = connect_from(UNTRUSTED, server).await;
    // Let the server accept the first connection and take the only slot.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut waiting = connect_from(UNTRUSTED, server).await;
    waiting.write_all(REQUEST).await.unwrap();
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut first)).await;
    assert!(early.is_err(), "served at the limit: {early:?}");

    drop(holder);
    // The timed-out read above read nothing, so the response is whole.
    let response = read_until_closed(&mut waiting).await;
    assert!(response.starts_with("HTTP/1.1 307 "), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let limits = Limits {
        max_header_bytes: 8192,
        ..Limits::default()
    };
    // With h2c, so that the same server also serves HTTP/2 below.
    let server = start_with_h2c(limits, false, None, true).await;
    let padding = "a".repeat(10_000);
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Padding: {padding}\r\n\r\n");
    let mut stream = connect_from(UNTRUSTED, server).await;
    let _ = stream.write_all(request.as_bytes()).await;
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");

    // HTTP/2 (prior knowledge) counts the header list against the same
    // limit.
    let header = format!("X-Padding: {padding}");
    let written = tokio::task::spawn_blocking(move || {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--http2-prior-knowledge", "-H"])
            .arg(header)
            .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
            .arg(format!("http://{server}/v2/"))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(written, "431 2");

    // Headers below the limit are served.
    let padding = "a".repeat(4_000);
    let request = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Padding: {padding}\r\nConnection: close\r\n\r\n"
    );
    let mut stream = connect_from(UNTRUSTED, server).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
}

/// Sends a keep-alive request and returns how long after the response
/// the server closed the connection.
async fn idle_close_after_response(server: SocketAddr) -> Duration {
    let mut stream = connect_from(UNTRUSTED, server).await;
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 4096];
    let read = stream.read(&mut buffer).await.unwrap();
    let response = String::from_utf8_lossy(&buffer[..read]).into_owned();
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let responded = Instant::now();
    let rest = read_until_closed(&mut stream).await;
    assert_eq!(rest, "");
    responded.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_separate_from_header_timeout() {
    // The idle timeout is longer than the header read timeout: the
    // connection outlives the header read timeout while idle.
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(2000),
        ..Limits::default()
    };
    let server = start(limits, false, None).await;
    let closed_after = idle_close_after_response(server).await;
    assert!(
        closed_after >= Duration::from_millis(1900),
        "closed after {closed_after:?}"
    );
    assert!(
        closed_after < Duration::from_secs(5),
        "closed after {closed_after:?}"
    );

    // And shorter: the idle timeout alone ends the connection.
    let limits = Limits {
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start(limits, false, None).await;
    let closed_after = idle_close_after_response(server).await;
    assert!(
        closed_after >= Duration::from_millis(250),
        "closed after {closed_after:?}"
    );
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
}

/// Runs curl against `server` over HTTPS with `ca` as the only trusted CA,
/// and returns its `%{http_code} %{http_version}` and its Location.
fn curl(server: SocketAddr, ca: &Path, version_flag: &str) -> (String, String) {
    let url = format!("https://{server}/v2/pause/manifests/3.10");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", version_flag, "--cacert"])
        .arg(ca)
        .args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version} %{redirect_url}",
        ])
        .arg(url)
        .output()
        .expect("curl runs");
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, location) = written.rsplit_once(' ').unwrap_or((&written, ""));
    (
        format!(
            "{status}{}",
            if output.status.success() {
                String::new()
            } else {
                format!(" curl failed: {}", String::from_utf8_lossy(&output.stderr))
            }
        ),
        location.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_and_http2() {
    let certificates = TestCertificates::create("versions");
    let tls = Tls::new(&certificates.files()).unwrap();
    let server = start(Limits::default(), false, Some(tls)).await;
    let ca = certificates.ca();

    let cases = [("--http1.1", "307 1.1"), ("--http2", "307 2")];
    for (flag, expected) in cases {
        let ca = ca.clone();
        let (status, location) = tokio::task::spawn_blocking(move || curl(server, &ca, flag))
            .await
            .unwrap();
        assert_eq!(status, expected, "{flag}");
        assert_eq!(
            location, "http://127.0.0.1:9/default/v2/pause/manifests/3.10",
            "{flag}"
        );
    }
}

/// Runs curl with `flags` against the plain server at `server`, and returns
/// its status and HTTP version, or its error.
fn curl_plain(server: SocketAddr, flags: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{http_version}"])
        .args(flags)
        .arg(format!("http://{server}/v2/pause/manifests/3.10"))
        .output()
        .expect("curl runs");
    if output.status.success() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        format!("curl failed: {}", String::from_utf8_lossy(&output.stderr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http2_only_with_h2c() {
    for h2c in [false, true] {
        let server = start_with_h2c(Limits::default(), false, None, h2c).await;
        let http1 = tokio::task::spawn_blocking(move || curl_plain(server, &["--http1.1"]))
            .await
            .unwrap();
        assert_eq!(http1, "307 1.1", "h2c {h2c}");

        let http2 =
            tokio::task::spawn_blocking(move || curl_plain(server, &["--http2-prior-knowledge"]))
                .await
                .unwrap();
        if h2c {
            assert_eq!(http2, "307 2", "h2c {h2c}");
        } else {
            assert!(http2.starts_with("curl failed"), "h2c {h2c}: {http2}");
        }
    }
}

/// Sends a GET of `/v2/pause/manifests/3.10` over HTTP/2 with prior
/// knowledge, with `:authority` the server's address and the extra
/// `host` line given, and returns the status and body.
async fn http2_get_with_host(server: SocketAddr, host: Option<&str>) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let stream = TcpStream::connect(server).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::get(format!("http://{server}/v2/pause/manifests/3.10"));
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let request = request.body(Empty::<bytes::Bytes>::new()).unwrap();
    let response = tokio::time::timeout(IO_TIMEOUT, sender.send_request(request))
        .await
        .expect("a response within the timeout")
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_host_differing_from_authority_rejected() {
    let server = start_with_h2c(Limits::default(), false, None, true).await;

    let (status, body) = http2_get_with_host(server, Some("other.example")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("UNSUPPORTED"), "{body}");
    assert!(body.contains(":authority"), "{body}");

    for host in [None, Some(server.to_string())] {
        let (status, body) = http2_get_with_host(server, host.as_deref()).await;
        assert_eq!(status, 307, "host {host:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_keeps_old_on_error() {
    let first = TestCertificates::create("first");
    let second = TestCertificates::create("second");
    let tls = Tls::new(&first.files()).unwrap();
    let server = start(Limits::default(), false, Some(tls.clone())).await;
    let status_with = |ca: PathBuf| async move {
        tokio::task::spawn_blocking(move || curl(server, &ca, "--http2").0)
            .await
            .unwrap()
    };
    assert_eq!(status_with(first.ca()).await, "307 2");

    // A truncated certificate and a key of another certificate are both
    // rejected, and the first certificate keeps serving.
    let broken = first.dir.join("broken.crt");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    let bad_files = [
        TlsFiles {
            cert_file: broken,
            key_file: first.files().key_file,
        },
        TlsFiles {
            cert_file: first.files().cert_file,
            key_file: second.files().key_file,
        },
    ];
    for files in &bad_files {
        let error = tls.reload(files).unwrap_err();
        reload_certificate(Some(&tls), Some(files));
        assert_eq!(status_with(first.ca()).await, "307 2", "{error}");
    }

    // A good pair replaces it.
    tls.reload(&second.files()).unwrap();
    assert_eq!(status_with(second.ca()).await, "307 2");
    assert!(status_with(first.ca()).await.contains("curl failed"));
}

/// Connects from the trusted address, sends `proxy_header`, then runs a
/// TLS handshake that trusts only `ca` and sends [`REQUEST`] over it.
/// Returns the response.
async fn exchange_over_tls(server: SocketAddr, proxy_header: &[u8], ca: &Path) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let mut stream = connect_from(TRUSTED, server).await;
    stream.write_all(proxy_header).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, stream))
        .await
        .expect("the TLS handshake finishes in time")
        .expect("the TLS handshake succeeds");
    tls.write_all(REQUEST).await.unwrap();
    let mut response = Vec::new();
    // The server may end TLS without close_notify after Connection: close.
    let _ = tokio::time::timeout(IO_TIMEOUT, tls.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_precedes_tls() {
    let certificates = TestCertificates::create("proxy-tls");
    let tls = Tls::new(&certificates.files()).unwrap();
    let server = start(Limits::default(), true, Some(tls)).await;
    let response = exchange_over_tls(
        server,
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 5000\r\n",
        &certificates.ca(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 307 "), "{response}");
    assert!(
        location(&response).unwrap_or_default().contains("/v4net/"),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshake_closed() {
    let certificates = TestCertificates::create("stalled");
    let tls = Tls::new(&certificates.files()).unwrap();
    let timeout = Duration::from_millis(300);
    let limits = Limits {
        header_read_timeout: timeout,
        ..Limits::default()
    };
    let server = start(limits, false, Some(tls)).await;

    // The start of a TLS record header, and then nothing.
    let mut stream = connect_from(UNTRUSTED, server).await;
    stream.write_all(b"\x16\x03\x01").await.unwrap();
    let started = Instant::now();
    let response = read_until_closed(&mut stream).await;
    let elapsed = started.elapsed();
    assert_eq!(response, "");
    assert!(
        elapsed >= timeout - Duration::from_millis(50),
        "closed after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "closed after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_https_port_gets_400() {
    let certificates = TestCertificates::create("plain-on-tls");
    let tls = Tls::new(&certificates.files()).unwrap();
    let server = start(Limits::default(), false, Some(tls)).await;

    let response = exchange(server, UNTRUSTED, b"").await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["errors"][0]["code"], "UNSUPPORTED", "{body}");
    let length = format!("Content-Length: {}", body.len());
    assert!(head.contains(&length), "{head}");

    // The HTTPS side still works on the same listener.
    let https = exchange_over_tls(server, b"", &certificates.ca()).await;
    assert!(https.starts_with("HTTP/1.1 307"), "{https}");
}
