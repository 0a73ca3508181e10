//! `serve` as a child process, spoken to over loopback with raw HTTP/1.1:
//! redirects, the API version check, rejections, HEAD, a clean exit on
//! SIGTERM, requests in flight at SIGTERM, and blob checks against a mirror
//! on loopback. No request leaves this machine: only `Location` headers
//! name other hosts.

mod common;

#[path = "common/certificates.rs"]
mod certificates;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_registry-redirect");

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Upper bound for the server to start, and for it to exit after SIGTERM.
const PROCESS_DEADLINE: Duration = Duration::from_secs(20);

/// Upper bound for one request and its response.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `registry-redirect serve`, killed on drop so that a failing
/// test never leaves it running.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts the server on a free loopback port and reads the address it
    /// prints first.
    fn start(extra_args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--log-level", "warn"])
            .args(extra_args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the registry-redirect binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        // Build the guard before reading, so that a failed read kills the child.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        echo_lines(stderr);
        server.addr = read_listen_address(stdout);
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, at most [`PROCESS_DEADLINE`].
    fn wait_for_exit(&mut self) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < PROCESS_DEADLINE {
            if let Some(status) = self.child.try_wait().expect("try_wait works") {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies the server's stderr into the test's output on a thread, so that
/// the harness shows it only for a failing test.
fn echo_lines(stream: impl Read + Send + 'static) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("server: {line}");
        }
    });
}

/// Reads the first stdout line, `listening on http://ADDR` (or https), on a thread so
/// that a server that never prints cannot hang the test. The thread then
/// drains the rest of stdout, so the server never blocks on a full pipe.
fn read_listen_address(stdout: ChildStdout) -> SocketAddr {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = sender.send(first);
        for _ in lines {}
    });
    let line = receiver
        .recv_timeout(PROCESS_DEADLINE)
        .expect("the server prints its address within the deadline");
    line.strip_prefix("listening on http://")
        .or_else(|| line.strip_prefix("listening on https://"))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| {
            panic!("first stdout line is not `listening on http://ADDR` or https: {line:?}")
        })
}

/// A parsed HTTP/1.1 response.
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

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with `Connection: close` and reads the whole response.
fn send(addr: SocketAddr, method: &str, target: &str) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the server");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: registry.example.test\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("the response has a header section");
    let head = std::str::from_utf8(&raw[..split]).expect("headers are text");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Sends SIGTERM with the system's `kill`, which avoids a libc dependency
/// for one call.
fn terminate(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid} failed");
}

fn assert_oci_error(response: &Response, code: &str) {
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&response.body).expect("the body is JSON");
    assert_eq!(body["errors"][0]["code"], code, "{}", response.body_text());
    assert!(body["errors"][0]["message"].is_string());
}

#[test]
fn serve_answers_registry_requests() {
    let mut server = Server::start(&[]);
    let addr = server.addr;
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);

    let blob = send(addr, "GET", &format!("/v2/library/nginx/blobs/{DIGEST}"));
    assert_eq!(blob.status, 307);
    assert_eq!(
        blob.header("location"),
        Some(format!("https://registry.k8s.io/v2/library/nginx/blobs/{DIGEST}").as_str())
    );

    let version_check = send(addr, "GET", "/v2/");
    assert_eq!(version_check.status, 200);
    assert_eq!(
        version_check.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    let upload = send(addr, "POST", "/v2/x/blobs/uploads/");
    assert_eq!(upload.status, 405);
    assert_eq!(upload.header("allow"), Some("GET, HEAD"));
    assert_oci_error(&upload, "UNSUPPORTED");

    let catalog = send(addr, "GET", "/v2/_catalog");
    assert_eq!(catalog.status, 404);
    assert_oci_error(&catalog, "UNSUPPORTED");

    let encoded = send(addr, "GET", "/v2/library%2Fnginx/manifests/latest");
    assert_eq!(encoded.status, 404);
    assert_oci_error(&encoded, "NAME_INVALID");

    let head = send(addr, "HEAD", "/v2/pause/manifests/3.10");
    assert_eq!(head.status, 307);
    assert_eq!(
        head.header("location"),
        Some("https://registry.k8s.io/v2/pause/manifests/3.10")
    );
    assert!(
        head.body.is_empty(),
        "HEAD has a body: {:?}",
        head.body_text()
    );

    let root = send(addr, "GET", "/");
    assert_eq!(root.status, 200);
    assert!(root.body_text().starts_with("registry-redirect: "));

    let other = send(addr, "GET", "/metrics");
    assert_eq!(other.status, 404);
    assert!(other
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain"));

    terminate(server.pid());
    let status = server
        .wait_for_exit()
        .expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn serve_reads_config_and_listen_flag_wins() {
    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-serve-test-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        // `listen` names a port that --listen overrides.
        "listen = \"127.0.0.1:1\"\n\
         default_upstream = \"mirror\"\n\
         [upstreams.mirror]\nurl = \"http://127.0.0.1:9/registry\"\npath_prefix = \"k8s\"\n",
    )
    .unwrap();
    let mut server = Server::start(&["--config", config.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);

    assert_ne!(server.addr.port(), 1);
    let response = send(server.addr, "GET", "/v2/pause/tags/list");
    assert_eq!(response.status, 307);
    assert_eq!(
        response.header("location"),
        Some("http://127.0.0.1:9/registry/v2/k8s/pause/tags/list")
    );

    terminate(server.pid());
    let status = server
        .wait_for_exit()
        .expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

/// Sends `signal` (such as `-HUP`) to `pid` with the system's `kill`.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// Sends requests until the `Location` of `target` is `expected`, or fails
/// after the process deadline.
fn wait_for_location(addr: SocketAddr, target: &str, expected: &str) {
    let started = Instant::now();
    loop {
        let response = send(addr, "GET", target);
        if response.header("location") == Some(expected) {
            return;
        }
        assert!(
            started.elapsed() < PROCESS_DEADLINE,
            "Location is still {:?}, expected {expected}",
            response.header("location")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reloads_and_keeps_good_policy() {
    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-reload-test-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    let policy_for =
        |url: &str| format!("default_upstream = \"main\"\n[upstreams.main]\nurl = \"{url}\"\n");
    std::fs::write(&config, policy_for("http://127.0.0.1:9/first")).unwrap();
    let mut server = Server::start(&["--config", config.to_str().unwrap()]);
    let target = "/v2/pause/manifests/3.10";
    wait_for_location(
        server.addr,
        target,
        "http://127.0.0.1:9/first/v2/pause/manifests/3.10",
    );

    // A good file, saved by rename as editors do, replaces the policy.
    let staged = dir.join("config.toml.new");
    std::fs::write(&staged, policy_for("http://127.0.0.1:9/second")).unwrap();
    std::fs::rename(&staged, &config).unwrap();
    send_signal(server.pid(), "-HUP");
    wait_for_location(
        server.addr,
        target,
        "http://127.0.0.1:9/second/v2/pause/manifests/3.10",
    );

    // A bad file is logged and the previous policy keeps serving.
    std::fs::write(&config, "default_upstream = \"nowhere\"\n").unwrap();
    send_signal(server.pid(), "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        let response = send(server.addr, "GET", target);
        assert_eq!(response.status, 307);
        assert_eq!(
            response.header("location"),
            Some("http://127.0.0.1:9/second/v2/pause/manifests/3.10")
        );
    }

    terminate(server.pid());
    let status = server
        .wait_for_exit()
        .expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens a connection and sends the start of a request, without the blank
/// line that ends its headers.
fn start_request(addr: SocketAddr, target: &str) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the server");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let head = format!("GET {target} HTTP/1.1\r\nHost: registry.example.test\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Waits until the server has read all that was sent on `stream`: Linux
/// shows an empty receive queue for the server's end in /proc/net/tcp.
///
/// A connection whose first bytes are unread at SIGTERM is closed without
/// a response, because axum 0.8 cancels connections whose HTTP version it
/// has not yet read. Waiting here makes the request truly in flight.
fn wait_until_read(stream: &TcpStream) {
    let server_end = proc_net_address(stream.peer_addr().unwrap());
    let client_end = proc_net_address(stream.local_addr().unwrap());
    let started = Instant::now();
    while started.elapsed() < PROCESS_DEADLINE {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp is readable");
        let receive_queue = table.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let queues = (fields.get(1) == Some(&server_end.as_str())
                && fields.get(2) == Some(&client_end.as_str()))
            .then(|| fields.get(4))??;
            let (_, receive) = queues.split_once(':')?;
            u64::from_str_radix(receive, 16).ok()
        });
        if receive_queue == Some(0) {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("the server did not read the request within {PROCESS_DEADLINE:?}");
}

/// Formats an IPv4 socket address as /proc/net/tcp does: the address as a
/// native-endian 32-bit hex number, then the port in hex.
fn proc_net_address(addr: SocketAddr) -> String {
    let SocketAddr::V4(addr) = addr else {
        panic!("the test uses IPv4 loopback only, not {addr}");
    };
    format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(addr.ip().octets()),
        addr.port()
    )
}

/// Waits until the server stops accepting connections, which it does as
/// soon as it handles SIGTERM.
fn wait_until_refused(addr: SocketAddr) {
    let started = Instant::now();
    while started.elapsed() < PROCESS_DEADLINE {
        if TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("the server still accepts connections {PROCESS_DEADLINE:?} after SIGTERM");
}

#[test]
fn sigterm_finishes_request_in_flight() {
    let mut server = Server::start(&[]);
    let mut stream = start_request(server.addr, "/v2/pause/manifests/3.10");
    wait_until_read(&stream);

    terminate(server.pid());
    wait_until_refused(server.addr);
    stream.write_all(b"\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let response = parse_response(&raw);
    assert_eq!(response.status, 307);
    assert_eq!(
        response.header("location"),
        Some("https://registry.k8s.io/v2/pause/manifests/3.10")
    );

    let status = server
        .wait_for_exit()
        .expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn shutdown_timeout_ends_stalled_request() {
    let mut server = Server::start(&["--shutdown-timeout", "1"]);
    let stalled = start_request(server.addr, "/v2/pause/manifests/3.10");
    wait_until_read(&stalled);

    let signalled = Instant::now();
    terminate(server.pid());
    let status = server
        .wait_for_exit()
        .expect("the server exits after the shutdown timeout");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "exited after {:?}, before the 1 s shutdown timeout",
        signalled.elapsed()
    );
}

#[test]
fn serve_startup_errors_exit_nonzero() {
    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-serve-bad-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let invalid = dir.join("invalid.toml");
    std::fs::write(&invalid, "default_upstream = \"nowhere\"\n").unwrap();
    let invalid = invalid.to_str().unwrap().to_owned();
    let missing_ranges = dir.join("missing-ranges.toml");
    std::fs::write(
        &missing_ranges,
        "default_upstream = \"k8s\"\n\
         [upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n\
         [[client_ranges]]\nformat = \"aws\"\npath = \"aws-ip-ranges.json\"\n",
    )
    .unwrap();
    let missing_ranges = missing_ranges.to_str().unwrap().to_owned();

    // (arguments after `serve --listen 127.0.0.1:0`, exit status, text on stderr)
    let cases: [(&[&str], i32, &str); 8] = [
        (
            &["--config", &invalid],
            1,
            "default_upstream \"nowhere\" is not defined",
        ),
        (
            &["--config", &missing_ranges],
            1,
            ":6:8: client_ranges[0].path: failed to read range file aws-ip-ranges.json",
        ),
        (
            &["--config", "/nonexistent/config.toml"],
            2,
            "/nonexistent/config.toml",
        ),
        (&["--log-level", "info,=x=y"], 2, "invalid log filter"),
        (
            &[
                "--tls-cert",
                "/nonexistent/tls.crt",
                "--tls-key",
                "/nonexistent/tls.key",
            ],
            1,
            "TLS: failed to read /nonexistent/tls.crt",
        ),
        (&["--tls-cert", "/nonexistent/tls.crt"], 2, "--tls-key"),
        (
            &["--max-connections", "18000000000000000000"],
            2,
            "invalid limit: max_connections is 18000000000000000000, but the maximum is",
        ),
        (&["--max-header-bytes", "4096"], 2, "--max-header-bytes"),
    ];
    for (args, code, message) in cases {
        let output = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_checks_blobs_on_verified_mirror() {
    let present = format!("sha256:{}", "a".repeat(64));
    let absent = format!("sha256:{}", "b".repeat(64));
    let mirror = common::TestServer::start(&[(
        format!("HEAD /blobs/{present}").as_str(),
        common::Reply::Status(200),
    )]);

    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-serve-checks-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(dir.join("ranges")).unwrap();
    // The server's clients connect from 127.0.0.1, which this range file
    // labels as region "lab" of cloud "local".
    std::fs::write(dir.join("ranges/lab.txt"), "127.0.0.0/8 local lab\n").unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default_upstream = \"origin\"\n\
             [[client_ranges]]\nformat = \"plain\"\npath = \"ranges/lab.txt\"\n\
             [upstreams.origin]\nurl = \"http://127.0.0.1:9/origin\"\n\
             [upstreams.lab-blobs]\nkind = \"blob_store\"\n\
             region_urls = {{ lab = \"{}\" }}\nblob_path = \"/blobs/{{digest}}\"\n\
             verify_blobs = true\n\
             [[rules]]\nname = \"lab-blobs\"\nclouds = [\"local\"]\nupstream = \"lab-blobs\"\n\
             [blob_checks]\ntimeout_ms = 5000\n",
            mirror.url("")
        ),
    )
    .unwrap();
    let mut server = Server::start(&["--config", config.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);

    let found = send(server.addr, "GET", &format!("/v2/pause/blobs/{present}"));
    assert_eq!(found.status, 307);
    assert_eq!(
        found.header("location"),
        Some(mirror.url(&format!("/blobs/{present}")).as_str())
    );

    let missing = send(server.addr, "GET", &format!("/v2/pause/blobs/{absent}"));
    assert_eq!(missing.status, 307);
    assert_eq!(
        missing.header("location"),
        Some(format!("http://127.0.0.1:9/origin/v2/pause/blobs/{absent}").as_str())
    );

    // A found blob is cached: asking again sends no second HEAD.
    let again = send(server.addr, "GET", &format!("/v2/pause/blobs/{present}"));
    assert_eq!(again.header("location"), found.header("location"));
    assert_eq!(
        mirror.requests(),
        [
            format!("HEAD /blobs/{present}"),
            format!("HEAD /blobs/{absent}")
        ]
    );

    // Manifests are not blobs, so the blob store's rule does not match.
    let manifest = send(server.addr, "GET", "/v2/pause/manifests/3.10");
    assert_eq!(
        manifest.header("location"),
        Some("http://127.0.0.1:9/origin/v2/pause/manifests/3.10")
    );

    terminate(server.pid());
    let status = server
        .wait_for_exit()
        .expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_drains_blob_check_in_flight() {
    // The mirror responds to the blob check after 2 seconds, so the request is
    // in flight inside the server, not in its socket, when SIGTERM comes.
    let digest = format!("sha256:{}", "c".repeat(64));
    let mirror_delay = Duration::from_secs(2);
    let mirror = common::TestServer::start(&[(
        format!("HEAD /blobs/{digest}").as_str(),
        common::Reply::Delayed(mirror_delay, 200),
    )]);
    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-serve-drain-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default_upstream = \"origin\"\n\
             [upstreams.origin]\nurl = \"http://127.0.0.1:9/origin\"\n\
             [upstreams.mirror]\nkind = \"blob_store\"\nurl = \"{}\"\n\
             blob_path = \"/blobs/{{digest}}\"\nverify_blobs = true\n\
             [[rules]]\nname = \"blobs\"\nkinds = [\"blob\"]\nupstream = \"mirror\"\n\
             [blob_checks]\ntimeout_ms = 5000\n",
            mirror.url("")
        ),
    )
    .unwrap();
    let shutdown_timeout = Duration::from_secs(10);
    let mut server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--shutdown-timeout",
        &shutdown_timeout.as_secs().to_string(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);

    let addr = server.addr;
    let target = format!("/v2/pause/blobs/{digest}");
    let (sender, receiver) = mpsc::channel();
    let client = thread::spawn(move || {
        let _ = sender.send(send(addr, "GET", &target));
    });
    let started = Instant::now();
    while mirror.requests().is_empty() {
        assert!(
            started.elapsed() < PROCESS_DEADLINE,
            "the blob check never reached the mirror"
        );
        thread::sleep(Duration::from_millis(10));
    }

    let signalled = Instant::now();
    terminate(server.pid());
    wait_until_refused(server.addr);
    let response = receiver
        .recv_timeout(shutdown_timeout)
        .expect("the request in flight gets its response");
    client.join().unwrap();
    assert_eq!(response.status, 307);
    assert_eq!(
        response.header("location"),
        Some(mirror.url(&format!("/blobs/{digest}")).as_str())
    );

    let status = server
        .wait_for_exit()
        .expect("the server exits after the request in flight");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < shutdown_timeout,
        "exited {:?} after SIGTERM, not within the shutdown timeout",
        signalled.elapsed()
    );
}

/// Runs curl on `/v2/pause/manifests/3.10` over HTTPS, trusting only `ca`,
/// and returns the status, or curl's error.
fn https_status(addr: SocketAddr, ca: &std::path::Path) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://{addr}/v2/pause/manifests/3.10"))
        .output()
        .expect("curl runs");
    if output.status.success() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        format!("curl failed: {}", String::from_utf8_lossy(&output.stderr))
    }
}

/// Polls over HTTPS, trusting only `ca`, until the server responds with a
/// redirect, at most [`PROCESS_DEADLINE`].
fn wait_for_https(addr: SocketAddr, ca: &std::path::Path) {
    let started = Instant::now();
    while https_status(addr, ca) != "307" {
        assert!(
            started.elapsed() < PROCESS_DEADLINE,
            "no certificate of {} ever served",
            ca.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the server with SIGTERM and checks that it exits cleanly.
fn stop(server: &mut Server) {
    terminate(server.pid());
    let status = server
        .wait_for_exit()
        .expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sighup_reloads_certificate_keeps_bad() {
    let first = certificates::TestCertificates::create("sighup-first");
    let second = certificates::TestCertificates::create("sighup-second");
    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-tls-reload-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let install = |files: &registry_redirect_cli::tls::TlsFiles| {
        std::fs::copy(&files.cert_file, dir.join("server.crt")).unwrap();
        std::fs::copy(&files.key_file, dir.join("server.key")).unwrap();
    };
    install(&first.files());
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "default_upstream = \"main\"\n[upstreams.main]\nurl = \"http://127.0.0.1:9\"\n\
         [tls]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\n",
    )
    .unwrap();
    let mut server = Server::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(https_status(server.addr, &first.ca()), "307");

    // A certificate file cut short is rejected, and the first certificate
    // keeps serving.
    std::fs::write(
        dir.join("server.crt"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .unwrap();
    send_signal(server.pid(), "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_eq!(https_status(server.addr, &first.ca()), "307");
    }

    // A valid pair from another CA replaces it.
    install(&second.files());
    send_signal(server.pid(), "-HUP");
    wait_for_https(server.addr, &second.ca());
    assert!(https_status(server.addr, &first.ca()).starts_with("curl failed"));

    stop(&mut server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_without_config_reloads_flag_certificate() {
    let first = certificates::TestCertificates::create("hup-flags-first");
    let second = certificates::TestCertificates::create("hup-flags-second");
    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-tls-flags-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let install = |files: &registry_redirect_cli::tls::TlsFiles| {
        std::fs::copy(&files.cert_file, &cert).unwrap();
        std::fs::copy(&files.key_file, &key).unwrap();
    };
    install(&first.files());
    let mut server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(https_status(server.addr, &first.ca()), "307");

    // Without a configuration file, SIGHUP reloads the flags' files, and
    // the server keeps running.
    install(&second.files());
    send_signal(server.pid(), "-HUP");
    wait_for_https(server.addr, &second.ca());

    stop(&mut server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_without_config_or_tls_keeps_serving() {
    let mut server = Server::start(&[]);
    send_signal(server.pid(), "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        send(server.addr, "GET", "/v2/pause/manifests/3.10").status,
        307
    );

    stop(&mut server);
}

/// A service manager may send SIGHUP as soon as the port accepts
/// connections, before the server prints anything. The handler must be in
/// place by then, or the signal ends the process.
#[test]
fn sighup_once_port_accepts_keeps_serving() {
    for round in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(BIN)
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--log-level", "warn"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the registry-redirect binary starts");
        let mut server = Server { child, addr };
        // The shell starts before the port opens, so it signals within
        // microseconds of the first connection. Starting `kill` only then
        // takes milliseconds, which could miss a short startup window.
        let mut signaller = Command::new("sh")
            .args(["-c", &format!("read _ && kill -HUP {}", server.pid())])
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh starts");

        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < PROCESS_DEADLINE,
                "round {round}: the port never accepted connections"
            );
        }
        let mut trigger = signaller.stdin.take().expect("stdin is piped");
        trigger.write_all(b"\n").expect("write to sh");
        drop(trigger);
        let signalled = signaller.wait().expect("sh exits");
        assert!(signalled.success(), "round {round}: kill -HUP failed");
        thread::sleep(Duration::from_millis(200));
        assert!(
            server.child.try_wait().expect("try_wait works").is_none(),
            "round {round}: SIGHUP ended the server"
        );
        assert_eq!(
            send(addr, "GET", "/v2/pause/manifests/3.10").status,
            307,
            "round {round}"
        );
        stop(&mut server);
    }
}

#[test]
fn serve_resolves_from_loopback_upstream() {
    // An upstream without token auth: its `GET /v2/` returns 200, so the
    // server fetches without a token. The tower crate's tests cover tokens.
    let upstream = common::TestServer::start(&[
        ("GET /v2/", common::Reply::Body("{}")),
        (
            "GET /v2/library/app/manifests/v1",
            common::Reply::Body(r#"{"schemaVersion":2}"#),
        ),
        (
            format!("GET /v2/library/app/blobs/{DIGEST}").as_str(),
            common::Reply::Redirect("/storage/blob-1?signature=abc"),
        ),
    ]);
    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-serve-resolve-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hub-password"), "secret\n").unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default_upstream = \"hub\"\n\
             [upstreams.hub]\nurl = \"{}\"\nlibrary_prefix = true\nauth = \"resolve\"\n\
             tag_ttl_seconds = 0\n\
             [upstreams.hub.credentials]\nusername = \"puller\"\n\
             password_file = \"hub-password\"\n\
             [resolve]\ntimeout_ms = 5000\n",
            upstream.url("")
        ),
    )
    .unwrap();
    let mut server = Server::start(&["--config", config.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);

    let version = send(server.addr, "GET", "/v2/");
    assert_eq!(version.status, 200);
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());

    let manifest = send(server.addr, "GET", "/v2/app/manifests/v1");
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.body_text(), r#"{"schemaVersion":2}"#);
    assert_eq!(
        manifest.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    let blob = send(server.addr, "GET", &format!("/v2/app/blobs/{DIGEST}"));
    assert_eq!(blob.status, 302);
    assert_eq!(
        blob.header("location"),
        Some(upstream.url("/storage/blob-1?signature=abc").as_str())
    );

    let missing = send(server.addr, "GET", "/v2/app/manifests/v2");
    assert_eq!(missing.status, 404);

    assert_eq!(
        upstream.requests(),
        [
            "GET /v2/".to_owned(),
            "GET /v2/library/app/manifests/v1".to_owned(),
            format!("GET /v2/library/app/blobs/{DIGEST}"),
            "GET /v2/library/app/manifests/v2".to_owned(),
        ]
    );

    terminate(server.pid());
    let status = server
        .wait_for_exit()
        .expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}
