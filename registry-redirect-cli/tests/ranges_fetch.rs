//! `ranges fetch` as the real binary, against an HTTP server that this test
//! runs on 127.0.0.1. Every run turns the default AWS and GCP URLs off
//! first, so no test contacts the published URLs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{Reply, TestServer, HANG};

const BIN: &str = env!("CARGO_BIN_EXE_registry-redirect");

const AWS: &str = r#"{"syncToken": "1", "prefixes": [
    {"ip_prefix": "192.0.2.0/24", "region": "eu-west-1", "service": "EC2"},
    {"ip_prefix": "198.51.100.0/24", "region": "us-east-1", "service": "EC2"},
    {"ip_prefix": "203.0.113.0/24", "region": "GLOBAL", "service": "AMAZON"}
], "ipv6_prefixes": [
    {"ipv6_prefix": "2001:db8::/32", "region": "eu-west-1", "service": "EC2"}
]}"#;

const AWS_ONE_PREFIX: &str = r#"{"prefixes": [
    {"ip_prefix": "192.0.2.0/24", "region": "eu-west-1", "service": "EC2"}
]}"#;

const GCP: &str = r#"{"syncToken": "1", "prefixes": [
    {"ipv4Prefix": "192.0.2.0/25", "service": "Google Cloud", "scope": "europe-west4"},
    {"ipv6Prefix": "2001:db8:1::/48", "service": "Google Cloud", "scope": "us-central1"}
]}"#;

const AZURE: &str = r#"{"changeNumber": 1, "values": [
    {"name": "AzureCloud.westeurope", "properties": {"region": "westeurope",
     "addressPrefixes": ["198.51.100.0/25", "2001:db8:2::/48"]}}
]}"#;

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "registry-redirect-fetch-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `ranges fetch --out DIR` with the default sources turned off, then
/// `args`.
fn fetch(out: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["ranges", "fetch", "--out"])
        .arg(out)
        .args(["--source", "aws=", "--source", "gcp="])
        .args(args)
        .output()
        .expect("the registry-redirect binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn fetch_writes_each_source_file() {
    let server = TestServer::start(&[
        ("GET /aws.json", Reply::Body(AWS)),
        ("GET /cloud.json", Reply::Body(GCP)),
        ("GET /tags.json", Reply::Body(AZURE)),
    ]);
    let out = TempDir::new("writes");
    let aws = server.url("/aws.json");
    let gcp = server.url("/cloud.json");
    let azure = server.url("/tags.json");
    let output = fetch(
        &out.0,
        &[
            "--source",
            &format!("aws={aws}"),
            "--source",
            &format!("gcp={gcp}"),
            "--source",
            &format!("azure={azure}"),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(out.read("aws-ip-ranges.json"), AWS);
    assert_eq!(out.read("gcp-cloud.json"), GCP);
    assert_eq!(out.read("azure-service-tags.json"), AZURE);
    assert_eq!(
        out.names(),
        [
            "aws-ip-ranges.json",
            "azure-service-tags.json",
            "gcp-cloud.json"
        ]
    );
    let dir = out.0.display();
    assert_eq!(
        stdout(&output),
        format!(
            "aws: updated {dir}/aws-ip-ranges.json from {aws}: 4 prefixes (new file), {} bytes\n\
             gcp: updated {dir}/gcp-cloud.json from {gcp}: 2 prefixes (new file), {} bytes\n\
             azure: updated {dir}/azure-service-tags.json from {azure}: 2 prefixes (new file), {} bytes\n",
            AWS.len(),
            GCP.len(),
            AZURE.len()
        )
    );
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));

    // A second run compares with the files now in place.
    let output = fetch(&out.0, &["--source", &format!("aws={aws}")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(": 4 prefixes (before: 4), "),
        "{}",
        stdout(&output)
    );
}

#[test]
fn failed_source_keeps_old_file() {
    let server = TestServer::start(&[
        ("GET /aws.json", Reply::Body(AWS)),
        (
            "GET /invalid.json",
            Reply::Body(r#"{"prefixes": [{"ip_prefix": "192.0.2.0/33", "region": "x"}]}"#),
        ),
        ("GET /truncated.json", Reply::Body(&GCP[..GCP.len() / 2])),
        ("GET /cut-short.json", Reply::CutShort(AZURE)),
        ("GET /error", Reply::Status(500)),
        ("GET /empty.json", Reply::Body(r#"{"prefixes": []}"#)),
    ]);
    // (source, path, the reason on stderr)
    let cases = [
        (
            "aws",
            "/invalid.json",
            "the download is not a valid aws range file: prefixes[0].ip_prefix is \
             \"192.0.2.0/33\", which is not an IPv4 prefix such as 192.0.2.0/24",
        ),
        (
            "gcp",
            "/truncated.json",
            "the download is not a valid gcp range file: invalid JSON at line ",
        ),
        ("azure", "/cut-short.json", "failed: "),
        (
            "aws",
            "/error",
            "returned HTTP 500 Internal Server Error (expected 200)",
        ),
        (
            "aws",
            "/missing.json",
            "returned HTTP 404 Not Found (expected 200)",
        ),
        (
            "aws",
            "/empty.json",
            "the download is not a valid aws range file: the aws range file lists no prefixes",
        ),
    ];
    for (source, path, reason) in cases {
        let out = TempDir::new(&format!("keeps-{source}"));
        let file_name = match source {
            "aws" => "aws-ip-ranges.json",
            "gcp" => "gcp-cloud.json",
            _ => "azure-service-tags.json",
        };
        std::fs::write(out.file(file_name), "old content").unwrap();
        let url = server.url(path);
        // A good AWS download beside the failing one, unless AWS is the one
        // failing: the good one is written anyway.
        let good = server.url("/aws.json");
        let mut args = vec!["--source".to_owned(), format!("{source}={url}")];
        if source != "aws" {
            args.extend(["--source".to_owned(), format!("aws={good}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = fetch(&out.0, &args);
        let error = stderr(&output);

        assert_eq!(output.status.code(), Some(1), "{source} {path}: {error}");
        assert_eq!(out.read(file_name), "old content", "{source} {path}");
        let prefix = format!("registry-redirect: ranges fetch: {source} from {url}: ");
        assert!(error.starts_with(&prefix), "{source} {path}: {error}");
        assert!(error.contains(reason), "{source} {path}: {error}");
        assert!(
            error.contains(&format!(
                "; kept the old {}\n",
                out.file(file_name).display()
            )),
            "{source} {path}: {error}"
        );
        assert!(
            error.ends_with("ranges fetch: 1 of 1 sources failed, and their old files are kept\n")
                || error.ends_with(
                    "ranges fetch: 1 of 2 sources failed, and their old files are kept\n"
                ),
            "{error}"
        );
        if source != "aws" {
            assert_eq!(out.read("aws-ip-ranges.json"), AWS, "{source} {path}");
        }
        // No temporary file is left behind.
        assert!(
            out.names().iter().all(|name| !name.starts_with('.')),
            "{:?}",
            out.names()
        );
    }
}

#[test]
fn large_drop_is_refused_unless_allowed() {
    let server = TestServer::start(&[("GET /aws.json", Reply::Body(AWS_ONE_PREFIX))]);
    let out = TempDir::new("drop");
    std::fs::write(out.file("aws-ip-ranges.json"), AWS).unwrap();
    let source = format!("aws={}", server.url("/aws.json"));

    // 4 prefixes to 1 is a 75% drop.
    let output = fetch(&out.0, &["--source", &source]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(
            "the download lists 1 prefixes, 75.0% fewer than the 4 of the current file, and at \
             most 20% fewer are accepted"
        ),
        "{}",
        stderr(&output)
    );
    assert_eq!(out.read("aws-ip-ranges.json"), AWS);

    let output = fetch(&out.0, &["--source", &source, "--max-drop", "75"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(out.read("aws-ip-ranges.json"), AWS_ONE_PREFIX);
    assert!(stdout(&output).contains(": 1 prefixes (before: 4), "));
}

#[test]
fn unparsable_old_file_is_replaced_with_warning() {
    let server = TestServer::start(&[("GET /aws.json", Reply::Body(AWS))]);
    let out = TempDir::new("old-invalid");
    std::fs::write(out.file("aws-ip-ranges.json"), "not json").unwrap();
    let output = fetch(
        &out.0,
        &["--source", &format!("aws={}", server.url("/aws.json"))],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(out.read("aws-ip-ranges.json"), AWS);
    assert!(
        stderr(&output).starts_with(&format!(
            "registry-redirect: ranges fetch: warning: aws: the current {} is not a valid aws \
             range file (",
            out.file("aws-ip-ranges.json").display()
        )),
        "{}",
        stderr(&output)
    );
}

#[test]
fn config_table_sets_urls_and_flags_win() {
    let server = TestServer::start(&[
        ("GET /aws.json", Reply::Body(AWS)),
        ("GET /cloud.json", Reply::Body(GCP)),
        ("GET /moved", Reply::Redirect("/cloud.json")),
    ]);
    let out = TempDir::new("config");
    let config = out.file("config.toml");

    // The rest of the file is not read: the range file it names does not
    // exist yet.
    std::fs::write(
        &config,
        format!(
            "[[client_ranges]]\nformat = \"aws\"\npath = \"aws-ip-ranges.json\"\n\
             [ranges_fetch]\naws = \"{}\"\ngcp = \"{}\"\n",
            server.url("/missing.json"),
            server.url("/moved"),
        ),
    )
    .unwrap();

    // The config file sets both sources that have a published URL, so no
    // run here contacts one. The --source flag wins over the file.
    let output = Command::new(BIN)
        .args(["ranges", "fetch", "--out"])
        .arg(&out.0)
        .arg("--config")
        .arg(&config)
        .args(["--source", &format!("aws={}", server.url("/aws.json"))])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(out.read("aws-ip-ranges.json"), AWS);
    // GCP came from the config file's URL, through a redirect.
    assert_eq!(out.read("gcp-cloud.json"), GCP);
    assert!(stdout(&output).contains(&format!("from {}: 2 prefixes", server.url("/moved"))));
}

#[test]
fn download_gives_up_after_timeout() {
    let server = TestServer::start(&[("GET /hang", Reply::Hang)]);
    let out = TempDir::new("timeout");
    let url = server.url("/hang");
    let started = Instant::now();
    let output = fetch(
        &out.0,
        &["--source", &format!("aws={url}"), "--timeout", "1"],
    );
    assert!(
        started.elapsed() < HANG,
        "took {:?}, not bounded by --timeout 1",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("GET {url} did not finish within 1 s")),
        "{}",
        stderr(&output)
    );
    assert!(out.names().is_empty(), "{:?}", out.names());
}

#[test]
fn fetch_usage_errors_exit_2() {
    let out = TempDir::new("usage");
    let dir = out.0.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&[], "every source is skipped"),
        (
            &["--source", "oracle=http://127.0.0.1:9/a"],
            "unknown range source \"oracle\"",
        ),
        (&["--source", "aws"], "has no '='"),
        (
            &["--source", "aws=ftp://127.0.0.1/a"],
            "is not an absolute http or https URL",
        ),
        (&["--max-drop", "150"], "is not a percentage"),
        (&["--timeout", "0"], "--timeout"),
    ];
    for (args, message) in cases {
        let output = fetch(Path::new(dir), args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(out.names().is_empty(), "{args:?}");
    }
}
