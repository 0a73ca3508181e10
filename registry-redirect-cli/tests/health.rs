//! `registry-redirect health` as a process: its exit status for a healthy
//! endpoint, an unhealthy one, a silent one, a closed port, and the admin
//! listener of a running server, all on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Reply, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_registry-redirect");

fn health(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("health")
        .args(args)
        .output()
        .expect("the registry-redirect binary runs")
}

#[test]
fn health_exit_status_by_response() {
    let server = TestServer::start(&[
        ("GET /readyz", Reply::Body("ready\n")),
        ("GET /unready", Reply::Status(503)),
        ("GET /silent", Reply::Hang),
    ]);
    let cases = [
        ("/readyz", 0, "healthy: GET "),
        (
            "/unready",
            1,
            "returned 503 Service Unavailable; expected 200 OK",
        ),
        ("/missing", 1, "returned 404 Not Found; expected 200 OK"),
    ];
    for (path, expected_code, expected_text) in cases {
        let output = health(&["--url", &server.url(path)]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(expected_code), "{path}: {text}");
        assert!(text.contains(expected_text), "{path}: {text}");
    }

    let started = Instant::now();
    let output = health(&["--url", &server.url("/silent"), "--timeout", "1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("timed out after 1 s"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn health_fails_on_closed_port() {
    // Bind and drop a listener, so the port is very likely closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = health(&["--url", &format!("http://{addr}/readyz")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("failed to connect to"), "{stderr}");
}

#[test]
fn health_rejects_https_url() {
    let output = health(&["--url", "https://127.0.0.1:9090/readyz"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expected http"), "{stderr}");
}

#[test]
fn health_checks_server_admin_listener() {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0", "--log-level", "warn"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the registry-redirect binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let admin = loop {
        let Ok(line) = receiver.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server printed no admin address within 20 s");
        };
        if let Some(url) = line.strip_prefix("admin listening on ") {
            break url.to_owned();
        }
    };

    // The admin address is printed before the server finishes starting,
    // so /readyz may return 503 for a moment. Ask again for a while.
    let started = Instant::now();
    let ready = loop {
        let ready = health(&["--url", &format!("{admin}/readyz")]);
        if ready.status.code() == Some(0) || started.elapsed() > Duration::from_secs(10) {
            break ready;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let alive = health(&["--url", &format!("{admin}/healthz")]);
    let _ = child.kill();
    let _ = child.wait();
    let stopped = health(&["--url", &format!("{admin}/readyz")]);

    assert_eq!(ready.status.code(), Some(0), "{ready:?}");
    assert_eq!(alive.status.code(), Some(0), "{alive:?}");
    assert_eq!(stopped.status.code(), Some(1), "{stopped:?}");
}
