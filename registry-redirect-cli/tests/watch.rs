//! `serve --watch` under load: several clients send requests over
//! keep-alive connections on loopback while the configuration and its
//! range file change on disk in a Kubernetes ConfigMap layout. No request
//! may fail, each client must see the policies in the order written, and
//! the admin listener's reload counters must agree. No request leaves this machine: only `Location` headers name other
//! hosts, and those point at the discard port of 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_registry-redirect");

const TARGET: &str = "/v2/pause/manifests/3.10";

/// Concurrent clients, each on its own keep-alive connection.
const CLIENTS: usize = 4;

/// Upper bound of the requests of one client, so that the loop ends even
/// when the stop flag is never set.
const MAX_REQUESTS_PER_CLIENT: usize = 200_000;

/// The minimum number of requests the clients must send in total for the
/// run to count as a run under load.
const MIN_TOTAL_REQUESTS: usize = 2_000;

/// Upper bound for the server to start, for a change to reach the policy,
/// and for one response.
const DEADLINE: Duration = Duration::from_secs(15);

/// A running `registry-redirect serve`, killed on drop, whose log lines are
/// collected.
struct Server {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(config: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--watch"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--log-level", "info,registry_redirect::access=off"])
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the registry-redirect binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log: Arc::clone(&log),
        };
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                log.lock().unwrap().push(line);
            }
        });

        // The first line has the registry address, and a later one the
        // admin listener's.
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let line = receiver
            .recv_timeout(DEADLINE)
            .expect("the server prints its address within the deadline");
        server.addr = line
            .strip_prefix("listening on http://")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| {
                panic!("first stdout line is not `listening on http://ADDR`: {line:?}")
            });
        loop {
            let line = receiver
                .recv_timeout(DEADLINE)
                .expect("the server prints its admin address within the deadline");
            if let Some(addr) = line.strip_prefix("admin listening on http://") {
                server.admin = addr.parse().expect("the admin address parses");
                break;
            }
        }
        server
    }

    /// Returns the value of the metric sample `series` from `/metrics`.
    fn metric(&self, series: &str) -> Option<f64> {
        let mut reader = connect(self.admin);
        let request = "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
        reader.get_mut().write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    /// Counts the log lines that contain `text`.
    fn log_count(&self, text: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|line| line.contains(text)).count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response's status and `Location`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    status: u16,
    location: Option<String>,
}

/// Sends one GET on a keep-alive connection and reads the response,
/// body included.
fn exchange(reader: &mut BufReader<TcpStream>, target: &str) -> std::io::Result<Response> {
    let request = format!("GET {target} HTTP/1.1\r\nHost: registry.example.test\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes())?;

    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("invalid status line {status_line:?}")))?;
    let mut location = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other(
                "connection closed inside the headers",
            ));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "location" => location = Some(value.trim().to_owned()),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Response { status, location })
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect to the server");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    BufReader::new(stream)
}

fn location_of(upstream: &str) -> String {
    format!("http://127.0.0.1:9/{upstream}{TARGET}")
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientReport {
    requests: usize,
    failures: Vec<String>,
    /// Each distinct `Location` in the order it first appeared.
    locations: Vec<String>,
}

/// Sends requests until `stop` is set or [`MAX_REQUESTS_PER_CLIENT`] is
/// reached. A failed request opens a new connection, so that one failure
/// does not hide the rest of the run.
fn run_client(addr: SocketAddr, stop: &AtomicBool) -> ClientReport {
    let mut report = ClientReport::default();
    let mut connection = connect(addr);
    while !stop.load(Ordering::Relaxed) && report.requests < MAX_REQUESTS_PER_CLIENT {
        report.requests += 1;
        match exchange(&mut connection, TARGET) {
            Ok(Response {
                status: 307,
                location: Some(location),
            }) => {
                if report.locations.last() != Some(&location) {
                    report.locations.push(location);
                }
            }
            Ok(response) => report.failures.push(format!("{response:?}")),
            Err(error) => {
                report.failures.push(error.to_string());
                connection = connect(addr);
            }
        }
    }
    report
}

/// Waits until a new connection gets a redirect to `expected`.
fn wait_for_location(addr: SocketAddr, expected: &str) {
    let started = Instant::now();
    loop {
        let response = exchange(&mut connect(addr), TARGET).expect("a probe request succeeds");
        if response.location.as_deref() == Some(expected) {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "Location is still {:?}, expected {expected}",
            response.location
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Returns a configuration with the upstream `main` at `main_path`, a rule that
/// sends clients of region `lab-1` of cloud `test` to `lab`, and the range
/// file `ranges.txt` beside it.
fn config_text(main_path: &str) -> String {
    format!(
        "default_upstream = \"main\"\n\
         [[client_ranges]]\nformat = \"plain\"\npath = \"ranges.txt\"\n\
         [upstreams.main]\nurl = \"http://127.0.0.1:9/{main_path}\"\n\
         [upstreams.lab]\nurl = \"http://127.0.0.1:9/lab\"\n\
         [[rules]]\nname = \"lab\"\nclouds = [\"test\"]\nregions = [\"lab-1\"]\nupstream = \"lab\"\n"
    )
}

/// The ConfigMap volume layout: `config.toml -> ..data/config.toml`,
/// `ranges.txt -> ..data/ranges.txt`, `..data -> ..VERSION/`.
struct ConfigMapDir {
    dir: PathBuf,
    versions: usize,
    current: Option<PathBuf>,
}

impl ConfigMapDir {
    fn new(dir: PathBuf) -> Self {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ConfigMapDir {
            dir,
            versions: 0,
            current: None,
        }
    }

    /// Publishes a new version as the kubelet does: a new directory, a new
    /// `..data` link renamed over the old one, then the old directory
    /// removed.
    fn publish(&mut self, config: &str, ranges: &str) {
        self.versions += 1;
        let version = format!(
            "..2026_12_04_10_{:02}_00.{:09}",
            self.versions, self.versions
        );
        let version_dir = self.dir.join(&version);
        std::fs::create_dir(&version_dir).unwrap();
        std::fs::write(version_dir.join("config.toml"), config).unwrap();
        std::fs::write(version_dir.join("ranges.txt"), ranges).unwrap();

        let staged = self.dir.join("..data_tmp");
        symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, self.dir.join("..data")).unwrap();
        for name in ["config.toml", "ranges.txt"] {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{name}"), &link).unwrap();
            }
        }
        if let Some(old) = self.current.replace(version_dir) {
            std::fs::remove_dir_all(old).unwrap();
        }
    }

    /// Saves `text` as `name` in the current version directory by writing
    /// a temporary file and renaming it, as an editor would.
    fn save_by_rename(&self, name: &str, text: &str) {
        let current = self.current.as_ref().expect("a version is published");
        let staged = current.join(format!("{name}.swp"));
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, current.join(name)).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
}

impl Drop for ConfigMapDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn watch_reloads_under_load() {
    let mut volume = ConfigMapDir::new(std::env::temp_dir().join(format!(
        "registry-redirect-watch-load-{}",
        std::process::id()
    )));
    let outside_lab = "127.0.0.0/8 test other-1\n";
    let inside_lab = "127.0.0.0/8 test lab-1\n";
    volume.publish(&config_text("one"), outside_lab);
    let server = Server::start(&volume.config());
    wait_for_location(server.addr, &location_of("one"));

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let addr = server.addr;
            thread::spawn(move || run_client(addr, &stop))
        })
        .collect();
    // Let the clients get going before the first change.
    thread::sleep(Duration::from_millis(300));

    // A ConfigMap update.
    volume.publish(&config_text("two"), outside_lab);
    wait_for_location(server.addr, &location_of("two"));

    // An editor's rename-save in the directory the links resolve to.
    volume.save_by_rename("config.toml", &config_text("three"));
    wait_for_location(server.addr, &location_of("three"));

    // A change of the range file alone moves the client into the lab rule.
    volume.save_by_rename("ranges.txt", inside_lab);
    wait_for_location(server.addr, &location_of("lab"));
    // The new policy serves a moment before the reload's log line is
    // written, so wait for the line rather than reading the count once.
    let started = Instant::now();
    while server.log_count("configuration reloaded") < 3 && started.elapsed() < DEADLINE {
        thread::sleep(Duration::from_millis(20));
    }
    let reloads_before_invalid = server.log_count("configuration reloaded");

    // An invalid ConfigMap update is logged, one line per error, and
    // changes nothing.
    let invalid = "default_upstream = \"nowhere\"\nredirect_status = 200\n";
    volume.publish(invalid, inside_lab);
    let started = Instant::now();
    while server.log_count("invalid configuration") < 2 {
        assert!(
            started.elapsed() < DEADLINE,
            "the invalid file's two errors were not reported"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.log_count("reload failed"), 1);
    assert_eq!(server.log_count("config.toml:1:20: default_upstream"), 1);
    assert_eq!(server.log_count("config.toml:2:19: redirect_status"), 1);
    thread::sleep(Duration::from_millis(500));
    wait_for_location(server.addr, &location_of("lab"));

    // The same content again reloads nothing. The next valid update does.
    volume.save_by_rename("config.toml", invalid);
    thread::sleep(Duration::from_millis(800));
    assert_eq!(server.log_count("reload failed"), 1);
    volume.publish(&config_text("five"), outside_lab);
    wait_for_location(server.addr, &location_of("five"));
    thread::sleep(Duration::from_millis(300));

    stop.store(true, Ordering::Relaxed);
    let reports: Vec<ClientReport> = clients
        .into_iter()
        .map(|client| client.join().expect("a client thread finishes"))
        .collect();

    let total: usize = reports.iter().map(|report| report.requests).sum();
    eprintln!("requests sent: {total} by {CLIENTS} clients");
    assert!(
        total >= MIN_TOTAL_REQUESTS,
        "only {total} requests were sent"
    );
    for (index, report) in reports.iter().enumerate() {
        assert!(
            report.failures.is_empty(),
            "client {index}: {} of {} requests failed, first: {}",
            report.failures.len(),
            report.requests,
            report.failures[0]
        );
    }

    // Every client saw the policies in the order written, without going
    // back to an older one, and ended on the last.
    let order: Vec<String> = ["one", "two", "three", "lab", "five"]
        .iter()
        .map(|upstream| location_of(upstream))
        .collect();
    for (index, report) in reports.iter().enumerate() {
        let positions: Vec<Option<usize>> = report
            .locations
            .iter()
            .map(|location| order.iter().position(|known| known == location))
            .collect();
        assert!(
            positions.iter().all(Option::is_some),
            "client {index} saw an unexpected Location: {:?}",
            report.locations
        );
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "client {index} saw the policies out of order: {:?}",
            report.locations
        );
        assert_eq!(report.locations.last(), order.last(), "client {index}");
    }

    assert_eq!(reloads_before_invalid, 3);
    assert_eq!(server.log_count("configuration reloaded"), 4);
    assert_eq!(
        server.metric("registry_redirect_reloads_total{result=\"success\"}"),
        Some(4.0)
    );
    assert_eq!(
        server.metric("registry_redirect_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
}

/// A watched file replaced by a FIFO blocks the read that checks it for
/// good. SIGTERM must still end the process after the drain, rather than
/// leave it waiting for a writer that never comes.
#[test]
fn sigterm_exits_despite_blocked_file_read() {
    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-watch-fifo-exit-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "default_upstream = \"a\"\n[upstreams.a]\nurl = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let mut server = Server::start(&config);
    // Changes made before the watcher starts are not seen.
    let started = Instant::now();
    while server.log_count("watching the configuration") == 0 {
        assert!(started.elapsed() < DEADLINE, "the watcher did not start");
        thread::sleep(Duration::from_millis(20));
    }

    std::fs::remove_file(&config).unwrap();
    let made = Command::new("mkfifo").arg(&config).status().unwrap();
    assert!(made.success(), "mkfifo {} failed", config.display());
    // Longer than the watcher's quiet period, so that its read is blocked.
    thread::sleep(Duration::from_millis(1000));

    let pid = server.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success(), "kill -TERM {pid} failed");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > DEADLINE {
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.expect("the server exits within the deadline after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}
