//! The `check` and `explain` subcommands, run as the real binary: output,
//! error lines and exit status.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_registry-redirect");

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the registry-redirect binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file in a fresh temporary directory, removed on drop.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "registry-redirect-cli-test-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        TempFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn example_config() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/registry-redirect.toml"
    )
    .to_owned()
}

#[test]
fn check_accepts_example_config() {
    let example = example_config();
    let output = run(&["check", &example]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with(&format!("{example}: ok\nupstreams:\n")),
        "{text}"
    );
    assert!(text.contains("default upstream: k8s\n"), "{text}");
    assert!(
        text.ends_with(
            "client ranges: 4 prefixes, 3 labels (cloud and region pairs)\n\
             \x20 client_ranges[0] plain ranges/example.txt: 4 prefixes, 3 labels\n"
        ),
        "{text}"
    );
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
}

#[test]
fn check_names_range_entry_and_file() {
    let config = TempFile::new(
        "ranges.toml",
        "default_upstream = \"k8s\"\n\
         [upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n\
         [[client_ranges]]\nformat = \"plain\"\npath = \"ranges/missing.txt\"\n\
         [[client_ranges]]\nformat = \"plain\"\npath = \"bad.txt\"\n",
    );
    std::fs::write(config.dir.join("bad.txt"), "192.0.2.0/24 a b c\n").unwrap();
    let output = run(&["check", config.path()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    let path = config.path();
    let dir = config.dir.display();
    assert_eq!(
        stderr(&output),
        format!(
            "{path}:6:8: client_ranges[0].path: failed to read range file ranges/missing.txt \
             (resolved to {dir}/ranges/missing.txt): No such file or directory (os error 2)\n\
             {path}:9:8: client_ranges[1].path: bad.txt: line 1 has 4 fields (\"192.0.2.0/24 a \
             b c\"), expected PREFIX, PREFIX REGION or PREFIX CLOUD REGION\n\
             {path}: 2 errors\n"
        )
    );
}

#[test]
fn explain_json_shows_cloud_region_candidates() {
    let example = example_config();
    let path = format!("/v2/pause/blobs/{DIGEST}");
    let output = run(&[
        "explain",
        "--config",
        &example,
        "--format",
        "json",
        "--client",
        "192.0.2.7",
        "GET",
        &path,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["decision"], "candidates");
    assert_eq!(value["rule"], "example-cloud-blobs");
    assert_eq!(value["cloud"], "example");
    assert_eq!(value["region"], "eu-west");

    let candidates: Vec<(String, String, String, bool)> = value["candidates"]
        .as_array()
        .expect("candidates is an array")
        .iter()
        .map(|candidate| {
            (
                candidate["upstream"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                candidate["region"].as_str().unwrap_or("-").to_owned(),
                candidate["location"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                candidate["verify"].as_bool().unwrap_or_default(),
            )
        })
        .collect();

    let owned = |upstream: &str, region: &str, location: String, verify| {
        (upstream.to_owned(), region.to_owned(), location, verify)
    };
    assert_eq!(
        candidates,
        [
            owned(
                "regional-blobs",
                "eu-west",
                format!("https://blobs-eu-west.example.net/blobs/{DIGEST}"),
                true
            ),
            owned(
                "regional-blobs",
                "us-east",
                format!("https://blobs-us-east.example.net/blobs/{DIGEST}"),
                true
            ),
            owned(
                "k8s",
                "-",
                format!("https://registry.k8s.io/v2/pause/blobs/{DIGEST}"),
                false
            ),
        ]
    );
    assert_eq!(value["location"], candidates[0].2);
}

/// Range file prefixes on either side of a 16-bit bucket edge, longer
/// than /80, and written as IPv4-mapped IPv6, found through `explain`.
#[test]
fn explain_finds_region_at_bucket_edges() {
    let ranges = TempFile::new(
        "edges.txt",
        "0.0.0.0/0 lab world\n\
         127.0.255.255/32 lab bucket-last\n\
         127.1.0.0/32 lab bucket-first\n\
         ::ffff:127.2.0.0/112 lab mapped\n\
         2001:db8::/32 lab doc\n\
         2001:db8:0:0:1::8/125 lab doc-125\n\
         2001:db9::/128 lab next-bucket-first\n",
    );
    let config = ranges.dir.join("config.toml");
    std::fs::write(
        &config,
        "default_upstream = \"registry\"\n\
         [[client_ranges]]\nformat = \"plain\"\npath = \"edges.txt\"\n\
         [upstreams.registry]\nurl = \"https://registry.example\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();

    for (client, region) in [
        ("127.0.255.254", Some("world")),
        ("127.0.255.255", Some("bucket-last")),
        ("127.1.0.0", Some("bucket-first")),
        ("127.1.0.1", Some("world")),
        ("127.2.0.1", Some("mapped")),
        ("::ffff:127.2.255.255", Some("mapped")),
        ("127.3.0.0", Some("world")),
        ("2001:db8:0:0:1::7", Some("doc")),
        ("2001:db8:0:0:1::8", Some("doc-125")),
        ("2001:db8:0:0:1::f", Some("doc-125")),
        ("2001:db8:0:0:1::10", Some("doc")),
        ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Some("doc")),
        ("2001:db9::", Some("next-bucket-first")),
        ("2001:db9::1", None),
    ] {
        let output = run(&[
            "explain",
            "--config",
            config,
            "--format",
            "json",
            "--client",
            client,
            "GET",
            "/v2/pause/manifests/3.10",
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(value["region"].as_str(), region, "client {client}");
    }
}

#[test]
fn check_reports_each_error_with_position() {
    let file = TempFile::new(
        "broken.toml",
        "default_upstream = \"k8s\"\n\
         \n\
         [upstreams.k8s]\n\
         url = \"https://registry.k8s.io\"\n\
         \n\
         [[rules]]\n\
         name = \"lab\"\n\
         clients = [\"192.168.0.0/24\", \"192.168.0.0/33\"]\n\
         upstream = \"hub2\"\n",
    );
    let output = run(&["check", file.path()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    let path = file.path();
    assert_eq!(
        stderr(&output),
        format!(
            "{path}:8:30: rules[0].clients[1]: \"192.168.0.0/33\" is not a CIDR or IP address \
             (expected a form like 192.0.2.0/24 or 2001:db8::/32, with no leading zeros in IPv4 \
             numbers or prefix lengths)\n\
             {path}:9:12: rules[0].upstream: rule \"lab\" names upstream \"hub2\", which is not \
             defined (defined: k8s)\n\
             {path}: 2 errors\n"
        )
    );
}

#[test]
fn check_reports_syntax_error() {
    let file = TempFile::new("syntax.toml", "default_upstream = \"k8s\n");
    let output = run(&["check", file.path()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.starts_with(&format!(
            "{}:1:24: invalid TOML: invalid basic string",
            file.path()
        )),
        "{text}"
    );
}

#[test]
fn check_exit_codes() {
    let valid = example_config();
    let invalid = TempFile::new("invalid.toml", "listen = 5000\n");
    let cases: [(&[&str], i32); 5] = [
        (&["check", &valid], 0),
        (&["check", invalid.path()], 1),
        (&["check", "/nonexistent/registry-redirect.toml"], 2),
        (&["check"], 2),
        (&["check", &valid, "--no-such-flag"], 2),
    ];
    for (args, code) in cases {
        let output = run(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn check_names_unreadable_file_and_os_error() {
    let output = run(&["check", "/nonexistent/registry-redirect.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "registry-redirect: failed to read config file /nonexistent/registry-redirect.toml: \
         No such file or directory (os error 2)\n"
    );
}

#[test]
fn explain_text_shows_rule_and_client() {
    let path = "/v2/nginx/manifests/latest";
    let output = run(&["explain", "--client", "192.168.0.20", "GET", path]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "decision: resolve\n\
         upstream url: https://registry-1.docker.io/v2/library/nginx/manifests/latest\n\
         resolve: the server fetches with a token from upstream hub; documents pass through, \
         blobs are redirected to storage\n\
         upstream: hub\n\
         rule: lan-to-docker-hub (rules[0])\n\
         kind: manifest\n\
         client: 192.168.0.20 (from peer)\n"
    );
}

#[test]
fn explain_json_for_redirect() {
    let path = format!("/v2/pause/blobs/{DIGEST}?ns=registry.k8s.io");
    let output = run(&[
        "explain",
        "--format",
        "json",
        "--client",
        "203.0.113.7",
        "head",
        &path,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["decision"], "redirect");
    assert_eq!(value["status"], 307);
    assert_eq!(
        value["location"],
        format!("https://registry.k8s.io/v2/pause/blobs/{DIGEST}?ns=registry.k8s.io")
    );
    assert_eq!(value["upstream"], "k8s");
    assert_eq!(value["rule"], serde_json::Value::Null);
    assert_eq!(value["kind"], "blob");
    assert_eq!(value["client"], "203.0.113.7");
    assert_eq!(value["client_source"], "peer");
    assert_eq!(value["error_code"], serde_json::Value::Null);
    assert_eq!(value["message"], serde_json::Value::Null);
    assert_eq!(value["note"], serde_json::Value::Null);
}

#[test]
fn explain_json_for_rejection() {
    let output = run(&[
        "explain",
        "--format",
        "json",
        "--client",
        "203.0.113.7",
        "GET",
        "/v2/_catalog",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["decision"], "reject");
    assert_eq!(value["status"], 404);
    assert_eq!(value["error_code"], "UNSUPPORTED");
    assert!(value["message"].as_str().unwrap().contains("catalog"));
    assert_eq!(value["location"], serde_json::Value::Null);
}

#[test]
fn explain_uses_trusted_forwarding_headers() {
    let file = TempFile::new(
        "proxied.toml",
        "trusted_proxies = [\"10.0.0.1\"]\n\
         default_upstream = \"k8s\"\n\
         [upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n\
         [upstreams.hub]\nurl = \"https://registry-1.docker.io\"\n\
         [[rules]]\nname = \"lab\"\nclients = [\"192.168.0.0/24\"]\nupstream = \"hub\"\n\
         [[rules]]\nname = \"docker\"\nhosts = [\"docker.io\"]\nupstream = \"hub\"\n",
    );
    let output = run(&[
        "explain",
        "--config",
        file.path(),
        "--format",
        "json",
        "--client",
        "10.0.0.1",
        "--header",
        "X-Forwarded-For: 192.168.0.5",
        "GET",
        "/v2/",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["client"], "192.168.0.5");
    assert_eq!(value["client_source"], "x-forwarded-for");
    assert_eq!(value["peer"], "10.0.0.1");
    assert_eq!(value["rule"], "lab");

    let output = run(&[
        "explain",
        "--config",
        file.path(),
        "--client",
        "203.0.113.1",
        "--host",
        "docker.io",
        "GET",
        "/v2/",
    ]);
    assert!(
        stdout(&output).contains("rule: docker (rules[1])\n"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn explain_usage_errors_exit_2() {
    let cases: [&[&str]; 4] = [
        &["explain", "GET", "/v2/"],
        &["explain", "--client", "not-an-address", "GET", "/v2/"],
        &[
            "explain", "--client", "10.0.0.1", "--header", "no colon", "GET", "/v2/",
        ],
        &[
            "explain", "--client", "10.0.0.1", "--format", "yaml", "GET", "/v2/",
        ],
    ];
    for args in cases {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stdout(&output).is_empty(), "{args:?}");
    }
}

#[test]
fn explain_with_invalid_config_exits_1() {
    let file = TempFile::new("bad-upstream.toml", "default_upstream = \"nowhere\"\n");
    let output = run(&[
        "explain",
        "--config",
        file.path(),
        "--client",
        "10.0.0.1",
        "GET",
        "/v2/",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).starts_with(&format!(
        "{}:1:20: default_upstream: default_upstream \"nowhere\" is not defined",
        file.path()
    )));
}
