//! The admin listener of `serve`, run as a child process and spoken to over
//! loopback: `/metrics` counts match the requests sent, reloads change the
//! reload counters and the configuration hash, and `/readyz` turns 503 as
//! soon as shutdown starts while a request in flight still finishes. A
//! blob mirror on loopback that never responds keeps that request in
//! flight. No request leaves this machine.

mod common;

#[path = "common/certificates.rs"]
mod certificates;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_registry-redirect");

/// Upper bound for the server to start, to exit, or to reach a state.
const DEADLINE: Duration = Duration::from_secs(20);

/// Upper bound for one request and its response.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `registry-redirect serve` with its registry and admin
/// addresses, killed on drop so that a failing test never leaves it
/// running.
struct Server {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    /// The lines written to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server with `config` on free loopback ports. `extra_args`
    /// must set `--log-level`.
    fn start(config: &Path, extra_args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--config")
            .arg(config)
            .args(extra_args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the registry-redirect binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let unknown = SocketAddr::from(([127, 0, 0, 1], 0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut server = Server {
            child,
            addr: unknown,
            admin: unknown,
            log: Arc::clone(&log),
        };
        // The harness shows the echoed lines only for a failing test.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });

        // The first line names the registry listener and the second the
        // admin listener. A thread reads them, so that a server that never
        // prints cannot hang the test, then drains stdout.
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let first_two: Vec<String> = lines.by_ref().take(2).collect();
            let _ = sender.send(first_two);
            for _ in lines {}
        });
        let lines = receiver
            .recv_timeout(DEADLINE)
            .expect("the server prints its addresses within the deadline");
        let address = |line: Option<&String>, prefix: &str| -> SocketAddr {
            line.and_then(|line| line.strip_prefix(prefix))
                .and_then(|addr| addr.parse().ok())
                .unwrap_or_else(|| panic!("expected `{prefix}ADDR` on stdout, got {lines:?}"))
        };
        // With TLS the line starts `listening on https://`, with the same address.
        let registry = lines
            .first()
            .map(|line| line.replacen("listening on https://", "listening on http://", 1));
        server.addr = address(registry.as_ref(), "listening on http://");
        server.admin = address(lines.get(1), "admin listening on http://");
        server
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    fn wait_for_exit(&mut self) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
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

/// Sends one request with `Connection: close` and returns the status code,
/// the headers as one lowercase text, and the body.
fn send(addr: SocketAddr, method: &str, target: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the server");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let request =
        format!("{method} {target} HTTP/1.1\r\nHost: registry.test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header section");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn scrape(server: &Server) -> String {
    let (status, head, body) = send(server.admin, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// Returns the value of the sample `series` (name and labels, as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a sample value is a number"))
}

fn requests(decision: &str, rule: &str, upstream: &str, code: u16) -> String {
    format!(
        "registry_redirect_requests_total{{decision=\"{decision}\",rule=\"{rule}\",upstream=\"{upstream}\",code=\"{code}\"}}"
    )
}

/// Checks the exposition format: every family has `# HELP` then `# TYPE`,
/// and every other line is `name{labels} value` of a described family.
fn assert_well_formed(text: &str) {
    let mut described: Vec<String> = Vec::new();
    let mut typed: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and a text");
            assert!(!help.is_empty(), "{line}");
            described.push(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert_eq!(described.last().map(String::as_str), Some(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.push(name.to_owned());
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name_end = series.find('{').unwrap_or(series.len());
        let (name, labels) = series.split_at(name_end);
        if !labels.is_empty() {
            assert!(labels.starts_with('{'), "{line}");
            assert!(labels.ends_with('}'), "{line}");
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|family| typed.iter().any(|typed| typed == family))
            .unwrap_or(name);
        assert!(
            typed.iter().any(|typed| typed == family),
            "no TYPE for {line}"
        );
    }
}

/// A directory for one test's files, removed on drop, so also when the
/// test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "registry-redirect-admin-{test}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256_hex(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Clients on loopback match the rule `loopback`, which sends to `hub`.
const CONFIG: &str = "default_upstream = \"k8s\"\n\
    [upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n\
    [upstreams.hub]\nurl = \"https://registry-1.docker.io\"\n\
    [[rules]]\nname = \"loopback\"\nclients = [\"127.0.0.0/8\"]\nkinds = [\"manifest\"]\nupstream = \"hub\"\n";

/// The metric of the served certificate's notAfter.
const TLS_EXPIRY: &str = "registry_redirect_tls_certificate_expiry_timestamp_seconds";

#[test]
fn metrics_report_tls_certificate_expiry() {
    let certificates = certificates::TestCertificates::create("admin-expiry");
    let files = certificates.files();
    let dir = TempDir::new("tls-expiry");
    let config = dir.join("config.toml");
    let tls = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        files.cert_file.display(),
        files.key_file.display()
    );
    std::fs::write(&config, format!("{CONFIG}{tls}")).unwrap();
    let server = Server::start(&config, &["--log-level", "warn"]);
    let https = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(certificates.ca())
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://{}/v2/", server.addr))
        .output()
        .expect("curl runs");
    assert_eq!(
        String::from_utf8_lossy(&https.stdout),
        "200",
        "the registry listener serves HTTPS: {}",
        String::from_utf8_lossy(&https.stderr)
    );

    let text = scrape(&server);
    assert_well_formed(&text);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let day = 86_400.0;
    // The test certificate is valid for two days from its creation.
    let expiry = sample(&text, TLS_EXPIRY).unwrap_or_else(|| panic!("no {TLS_EXPIRY} in {text}"));
    assert!(expiry > now + day, "{expiry} is less than a day from {now}");
    assert!(
        expiry < now + 3.0 * day,
        "{expiry} is more than three days from {now}"
    );

    // A certificate cut short is rejected at the reload. The configuration
    // reload succeeds, the certificate reload fails, and the expiry stays.
    std::fs::write(&files.cert_file, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    server.signal("-HUP");
    let failure = "registry_redirect_tls_reloads_total{result=\"failure\"}";
    let text = wait_for_sample(&server, failure, 1.0);
    let success = "registry_redirect_tls_reloads_total{result=\"success\"}";
    assert_eq!(sample(&text, success), Some(0.0), "{text}");
    let reloads = "registry_redirect_reloads_total{result=\"success\"}";
    assert_eq!(sample(&text, reloads), Some(1.0), "{text}");
    assert_eq!(sample(&text, TLS_EXPIRY), Some(expiry), "{text}");
}

#[test]
fn metrics_count_requests_and_reloads() {
    let dir = TempDir::new("metrics");
    let config = dir.join("config.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut server = Server::start(&config, &["--log-level", "warn"]);

    let blob = format!("/v2/pause/blobs/sha256:{}", "a".repeat(64));
    let sent = [
        ("GET", "/v2/pause/manifests/3.10", 307, 4),
        ("HEAD", "/v2/pause/manifests/3.10", 307, 1),
        ("GET", blob.as_str(), 307, 3),
        ("GET", "/v2/", 200, 2),
        ("DELETE", "/v2/pause/manifests/3.10", 405, 2),
        ("GET", "/v2/_catalog", 404, 1),
        ("GET", "/", 200, 3),
        ("GET", "/elsewhere", 404, 1),
    ];
    for (method, target, status, times) in sent {
        for _ in 0..times {
            assert_eq!(
                send(server.addr, method, target).0,
                status,
                "{method} {target}"
            );
        }
    }

    // Each request had its own connection, closed after the response.
    let open = "registry_redirect_connections_open";
    let text = wait_for_sample(&server, open, 0.0);
    assert_well_formed(&text);
    let connections = sample(&text, "registry_redirect_connections_accepted_total");
    assert_eq!(connections, Some(17.0), "{text}");
    let expected = [
        (requests("redirect", "loopback", "hub", 307), 5.0),
        (requests("redirect", "", "k8s", 307), 3.0),
        (requests("api_version", "", "k8s", 200), 2.0),
        (requests("reject", "", "", 405), 2.0),
        (requests("reject", "", "", 404), 1.0),
        (requests("not_registry", "", "", 200), 3.0),
        (requests("not_registry", "", "", 404), 1.0),
    ];
    for (series, count) in &expected {
        assert_eq!(sample(&text, series), Some(*count), "{series}\n{text}");
    }
    let redirect_latency =
        "registry_redirect_decision_duration_seconds_count{decision=\"redirect\"}";
    assert_eq!(sample(&text, redirect_latency), Some(8.0), "{text}");
    let info = format!(
        "registry_redirect_config_info{{sha256=\"{}\"}}",
        sha256_hex(CONFIG)
    );
    assert_eq!(sample(&text, &info), Some(1.0), "{text}");
    let loaded = sample(&text, "registry_redirect_config_loaded_timestamp_seconds");
    assert!(loaded.is_some_and(|seconds| seconds > 1.7e9), "{text}");
    let expiry = sample(&text, TLS_EXPIRY);
    assert_eq!(expiry, None, "no TLS, yet {text}");

    // A configuration with an error is rejected: the failure is counted,
    // and the hash is still that of the configuration in force.
    std::fs::write(&config, format!("{CONFIG}unknown_key = 1\n")).unwrap();
    server.signal("-HUP");
    let failure = "registry_redirect_reloads_total{result=\"failure\"}";
    let text = wait_for_sample(&server, failure, 1.0);
    assert_eq!(
        sample(&text, "registry_redirect_reloads_total{result=\"success\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&text, &info), Some(1.0), "{text}");

    // A valid one replaces the policy and the hash; the counters go on.
    let changed = CONFIG.replace("name = \"loopback\"", "name = \"local\"");
    std::fs::write(&config, &changed).unwrap();
    server.signal("-HUP");
    let success = "registry_redirect_reloads_total{result=\"success\"}";
    let text = wait_for_sample(&server, success, 1.0);
    let new_info = format!(
        "registry_redirect_config_info{{sha256=\"{}\"}}",
        sha256_hex(&changed)
    );
    assert_eq!(sample(&text, &new_info), Some(1.0), "{text}");
    assert_eq!(sample(&text, &info), None, "{text}");
    assert_eq!(send(server.addr, "GET", "/v2/pause/manifests/3.10").0, 307);
    let text = scrape(&server);
    assert_eq!(
        sample(&text, &requests("redirect", "local", "hub", 307)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &requests("redirect", "loopback", "hub", 307)),
        Some(5.0),
        "{text}"
    );

    server.signal("-TERM");
    let status = server
        .wait_for_exit()
        .expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

/// Scrapes until `series` has `value`, at most [`DEADLINE`], and returns
/// the last scrape.
fn wait_for_sample(server: &Server, series: &str, value: f64) -> String {
    let started = Instant::now();
    loop {
        let text = scrape(server);
        if sample(&text, series) == Some(value) || started.elapsed() > DEADLINE {
            assert_eq!(sample(&text, series), Some(value), "{text}");
            return text;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `path` on the admin listener until it returns `status`, at most
/// [`DEADLINE`].
fn wait_for_status(server: &Server, path: &str, status: u16) {
    let started = Instant::now();
    while started.elapsed() < DEADLINE {
        if send(server.admin, "GET", path).0 == status {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("{path} did not return {status} within {DEADLINE:?}");
}

#[test]
fn readyz_fails_during_drain() {
    let digest = format!("sha256:{}", "c".repeat(64));
    let mirror = common::TestServer::start(&[(
        format!("HEAD /blobs/{digest}").as_str(),
        common::Reply::Hang,
    )]);
    let dir = TempDir::new("readyz");
    std::fs::write(dir.join("lab.txt"), "127.0.0.0/8 local lab\n").unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default_upstream = \"origin\"\n\
             [[client_ranges]]\nformat = \"plain\"\npath = \"lab.txt\"\n\
             [upstreams.origin]\nurl = \"http://127.0.0.1:9/origin\"\n\
             [upstreams.lab-blobs]\nkind = \"blob_store\"\n\
             region_urls = {{ lab = \"{}\" }}\nblob_path = \"/blobs/{{digest}}\"\n\
             verify_blobs = true\n\
             [[rules]]\nname = \"lab-blobs\"\nclouds = [\"local\"]\nupstream = \"lab-blobs\"\n\
             [blob_checks]\ntimeout_ms = 2000\n",
            mirror.url("")
        ),
    )
    .unwrap();
    let mut server = Server::start(&config, &["--log-level", "warn", "--shutdown-delay", "1"]);
    assert_eq!(send(server.admin, "GET", "/healthz").0, 200);
    // Ready once the registry listener accepts, a moment after the
    // addresses are printed.
    wait_for_status(&server, "/readyz", 200);

    // The blob check hangs, so this request is in flight until the check
    // times out after 2 seconds.
    let addr = server.addr;
    let target = format!("/v2/pause/blobs/{digest}");
    let in_flight = thread::spawn(move || send(addr, "GET", &target));
    let started = Instant::now();
    while mirror.requests().is_empty() && started.elapsed() < DEADLINE {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(mirror.requests(), [format!("HEAD /blobs/{digest}")]);
    let text = scrape(&server);
    let misses = sample(&text, "registry_redirect_blob_check_cache_misses_total");
    assert_eq!(misses, Some(1.0), "{text}");
    let hits = sample(&text, "registry_redirect_blob_check_cache_hits_total");
    assert_eq!(hits, Some(0.0), "{text}");

    server.signal("-TERM");
    wait_for_status(&server, "/readyz", 503);
    assert_eq!(send(server.admin, "GET", "/healthz").0, 200);
    // During the shutdown delay, new requests are still served.
    assert_eq!(send(server.addr, "GET", "/v2/").0, 200);

    let (status, head, _) = in_flight.join().expect("the request thread ends");
    assert_eq!(status, 307);
    assert!(
        head.contains("location: http://127.0.0.1:9/origin/v2/pause/blobs/"),
        "{head}"
    );
    let exited = server
        .wait_for_exit()
        .expect("the server exits after the drain");
    assert_eq!(exited.code(), Some(0));
}

#[test]
fn json_log_lines_parse() {
    let dir = TempDir::new("json");
    let config = dir.join("config.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut server = Server::start(
        &config,
        &[
            "--log-level",
            "info",
            "--log-format",
            "json",
            "--log-client-addresses=truncated",
            "--log-client-ipv4-prefix",
            "16",
        ],
    );
    assert_eq!(send(server.addr, "GET", "/v2/pause/manifests/3.10").0, 307);
    server.signal("-TERM");
    let status = server
        .wait_for_exit()
        .expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0));

    // Give the stderr thread a moment to read the last lines.
    thread::sleep(Duration::from_millis(200));
    let lines = server
        .log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(!lines.is_empty());
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let access = events
        .iter()
        .find(|event| event["target"] == "registry_redirect::access")
        .unwrap_or_else(|| panic!("no access-log event in {lines:?}"));
    let fields = [
        ("level", serde_json::json!("INFO")),
        ("method", serde_json::json!("GET")),
        ("path", serde_json::json!("/v2/pause/manifests/3.10")),
        ("kind", serde_json::json!("manifest")),
        ("outcome", serde_json::json!("redirect")),
        ("rule", serde_json::json!("loopback")),
        ("upstream", serde_json::json!("hub")),
        ("status", serde_json::json!(307)),
        ("client", serde_json::json!("127.0.0.0/16")),
        ("client_source", serde_json::json!("peer")),
    ];
    for (field, expected) in fields {
        assert_eq!(access[field], expected, "{field} in {access}");
    }
    assert!(access["timestamp"].is_string(), "{access}");
    assert!(access["micros"].is_u64(), "{access}");
    let started = events
        .iter()
        .find(|event| event["message"] == "registry-redirect started");
    assert!(started.is_some(), "{lines:?}");
}
