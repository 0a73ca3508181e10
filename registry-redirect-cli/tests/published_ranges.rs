//! `check` and `explain` with the range files that AWS and GCP publish.
//!
//! The files are not part of this repository. Set REGISTRY_REDIRECT_DATA_DIR
//! to a directory that contains `aws-ip-ranges.json` and `gcp-cloud.json`, as
//! `registry-redirect ranges fetch --out DIR` writes them, to run these
//! tests. Without it, each test prints that it was skipped and passes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use registry_redirect_cli::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_registry-redirect");

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const DATA_DIR_VARIABLE: &str = "REGISTRY_REDIRECT_DATA_DIR";

/// Returns the data directory, or prints why the test is skipped.
fn data_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os(DATA_DIR_VARIABLE) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            println!("skipping {test}: {DATA_DIR_VARIABLE} is not set");
            None
        }
    }
}

/// Writes a configuration that sends clients in AWS to a regional registry
/// mirror, their blobs to a verified regional blob store, and clients in
/// GCP to another mirror. It names the range files by absolute path.
/// Returns the temporary directory and the configuration file in it.
fn write_config(data: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-published-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    let text = format!(
        r#"default_upstream = "k8s"

[[client_ranges]]
format = "aws"
path = "{aws}"

[[client_ranges]]
format = "gcp"
path = "{gcp}"

[upstreams.k8s]
url = "https://registry.k8s.io"

[upstreams.aws-mirror]
url = "https://{{region}}.aws-mirror.example"
regions = ["eu-west-1", "us-east-1"]

[upstreams.aws-blobs]
kind = "blob_store"
url = "https://blobs.{{region}}.aws-mirror.example"
regions = ["eu-west-1", "us-east-1"]
fallbacks = {{ "*" = ["us-east-1"] }}
verify_blobs = true

[upstreams.gcp-mirror]
url = "https://{{region}}.gcp-mirror.example"
regions = ["europe-west4"]

[[rules]]
name = "aws-blobs"
clouds = ["aws"]
upstream = "aws-blobs"

[[rules]]
name = "aws"
clouds = ["aws"]
regions = ["eu-west-1", "us-east-1"]
upstream = "aws-mirror"

[[rules]]
name = "gcp"
clouds = ["gcp"]
regions = ["europe-west4"]
upstream = "gcp-mirror"
"#,
        aws = data.join("aws-ip-ranges.json").display(),
        gcp = data.join("gcp-cloud.json").display(),
    );
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

/// Finds an address whose most specific labelled range has `cloud` and
/// `region`: the first address of such a range, or the one after it.
fn address_in(config: &Config, cloud: &str, region: &str) -> IpAddr {
    let file = match cloud {
        "aws" => &config.client_ranges.files[0],
        _ => &config.client_ranges.files[1],
    };
    let bytes = std::fs::read(&file.resolved).unwrap();
    let ranges = registry_redirect_core::sources::parse(file.format, &bytes, None).unwrap();
    let found = ranges
        .iter()
        .filter(|(_, label)| label.region() == Some(region))
        .flat_map(|(prefix, _)| [prefix.network(), next(prefix.network())])
        .find(|&address| {
            config
                .policy
                .client_label(address)
                .is_some_and(|label| label.cloud() == Some(cloud) && label.region() == Some(region))
        });
    found.unwrap_or_else(|| panic!("no address of {cloud} {region} in {}", file.path.display()))
}

fn next(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(u32::from(v4).wrapping_add(1).into()),
        IpAddr::V6(v6) => IpAddr::V6(u128::from(v6).wrapping_add(1).into()),
    }
}

fn explain(config: &Path, client: IpAddr, path: &str) -> serde_json::Value {
    let output = Command::new(BIN)
        .args(["explain", "--format", "json", "--config"])
        .arg(config)
        .args(["--client", &client.to_string(), "GET", path])
        .output()
        .unwrap();
    assert_success(&output);
    serde_json::from_slice(&output.stdout).unwrap()
}

fn assert_success(output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn published_files_route_by_region() {
    let Some(data) = data_dir("published_files_route_by_region") else {
        return;
    };
    let (dir, config_path) = write_config(&data, "route");
    let config = Config::load(&config_path).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let manifest = "/v2/pause/manifests/3.10";

    let aws = address_in(&config, "aws", "eu-west-1");
    let decision = explain(&config_path, aws, manifest);
    assert_eq!(decision["decision"], "redirect", "{aws}: {decision}");
    assert_eq!(decision["rule"], "aws", "{aws}");
    assert_eq!(decision["cloud"], "aws", "{aws}");
    assert_eq!(decision["region"], "eu-west-1", "{aws}");
    assert_eq!(
        decision["location"],
        format!("https://eu-west-1.aws-mirror.example{manifest}"),
        "{aws}"
    );

    let blob = format!("/v2/pause/blobs/{DIGEST}");
    let decision = explain(&config_path, aws, &blob);
    assert_eq!(decision["decision"], "candidates", "{aws}: {decision}");
    assert_eq!(decision["rule"], "aws-blobs", "{aws}");
    let candidates = decision["candidates"].as_array().unwrap();
    let regions: Vec<&str> = candidates
        .iter()
        .map(|candidate| candidate["region"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(regions, ["eu-west-1", "us-east-1", "-"], "{decision}");
    assert_eq!(
        candidates[0]["location"],
        format!("https://blobs.eu-west-1.aws-mirror.example/containers/images/{DIGEST}")
    );
    assert_eq!(candidates[0]["verify"], true);
    assert_eq!(candidates[2]["upstream"], "k8s");

    let gcp = address_in(&config, "gcp", "europe-west4");
    let decision = explain(&config_path, gcp, manifest);
    assert_eq!(decision["rule"], "gcp", "{gcp}: {decision}");
    assert_eq!(decision["cloud"], "gcp", "{gcp}");
    assert_eq!(decision["region"], "europe-west4", "{gcp}");
    assert_eq!(
        decision["location"],
        format!("https://europe-west4.gcp-mirror.example{manifest}"),
        "{gcp}"
    );

    // 192.0.2.1 is a documentation address that no cloud publishes.
    let elsewhere: IpAddr = "192.0.2.1".parse().unwrap();
    assert!(config.policy.client_label(elsewhere).is_none());
    let decision = explain(&config_path, elsewhere, manifest);
    assert_eq!(decision["rule"], serde_json::Value::Null, "{decision}");
    assert_eq!(decision["upstream"], "k8s");
    assert_eq!(decision["cloud"], serde_json::Value::Null);
    assert_eq!(
        decision["location"],
        format!("https://registry.k8s.io{manifest}")
    );

    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_counts_published_prefixes() {
    let Some(data) = data_dir("check_counts_published_prefixes") else {
        return;
    };
    let (dir, config_path) = write_config(&data, "check");
    let output = Command::new(BIN)
        .arg("check")
        .arg(&config_path)
        .output()
        .unwrap();
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);

    let config = Config::load(&config_path).unwrap();
    let ranges = &config.client_ranges;
    assert!(ranges.files[0].prefixes > 1000, "{:?}", ranges.files[0]);
    assert!(ranges.files[1].prefixes > 100, "{:?}", ranges.files[1]);
    assert!(ranges.prefixes <= ranges.files[0].prefixes + ranges.files[1].prefixes);

    assert!(
        text.contains(&format!(
            "client ranges: {} prefixes, {} labels (cloud and region pairs)\n",
            ranges.prefixes, ranges.labels
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  client_ranges[0] aws {}: {} prefixes, ",
            data.join("aws-ip-ranges.json").display(),
            ranges.files[0].prefixes
        )),
        "{text}"
    );

    let _ = std::fs::remove_dir_all(dir);
}
