use std::collections::BTreeMap;
use std::time::Duration;

use registry_redirect_core::sources::SourceFormat;
use registry_redirect_tower::CheckSettings;

use crate::admin::AdminListen;
use crate::fetch::FetchSource;

use super::*;

const VALID: &str = r#"listen = "0.0.0.0:5000"
default_upstream = "k8s"

[upstreams.k8s]
url = "https://registry.k8s.io"

[upstreams.hub]
url = "https://registry-1.docker.io"
library_prefix = true
api_version_check = "redirect"

[[rules]]
name = "lab"
clients = ["192.168.0.0/24"]
kinds = ["manifest", "blob"]
upstream = "hub"
"#;

/// Parses `text` and returns its errors as `LINE:COLUMN: MESSAGE` lines.
fn errors_of(text: &str) -> Vec<String> {
    let errors = Config::parse("config.toml", text).expect_err("the text is invalid");
    errors
        .0
        .iter()
        .map(|error| {
            assert_eq!(error.file, "config.toml");
            format!(
                "{}:{}: {}",
                error.position.line, error.position.column, error.message
            )
        })
        .collect()
}

#[test]
fn valid_config_loads_every_key() {
    let config = Config::parse("config.toml", VALID).unwrap();
    assert_eq!(config.listen, "0.0.0.0:5000".parse().unwrap());
    assert_eq!(config.spec.default_upstream, "k8s");
    assert_eq!(config.policy.default_upstream().name(), "k8s");
    assert_eq!(config.policy.upstreams().len(), 2);
    let hub = config.policy.upstream("hub").unwrap();
    assert!(hub.library_prefix());
    assert_eq!(
        hub.api_version_check(),
        registry_redirect_core::ApiVersionCheck::Redirect
    );
    assert_eq!(config.spec.rules[0].kinds.len(), 2);
}

#[test]
fn listen_defaults_to_loopback() {
    let text = VALID.replace("listen = \"0.0.0.0:5000\"\n", "");
    let config = Config::parse("config.toml", &text).unwrap();
    assert_eq!(config.listen, DEFAULT_LISTEN);
    assert_eq!(DEFAULT_LISTEN.to_string(), "127.0.0.1:5000");
}

#[test]
fn errors_point_at_line_and_column() {
    // Each case changes one line of VALID. The first error must start with
    // the expected text, which names the line and column of the offending
    // text.
    let cases = [
        (
            "syntax error",
            ("name = \"lab\"", "name = \"lab"),
            "13:12: invalid TOML: invalid basic string, expected `\"`",
        ),
        (
            "unknown top-level key",
            ("listen = \"0.0.0.0:5000\"", "listen_on = \"0.0.0.0:5000\""),
            "1:1: unknown key \"listen_on\" (expected one of: listen, admin_listen, redirect_status, \
             trusted_proxies, forwarded_header, default_upstream, upstreams, rules, client_ranges, \
             blob_checks, ranges_fetch, tls, proxy_protocol, limits, resolve)",
        ),
        (
            "unknown upstream key",
            ("library_prefix = true", "library = true"),
            // The list of expected keys grows with the core's UpstreamSpec.
            "9:1: upstreams.hub.library: unknown field `library`, expected one of `url`, ",
        ),
        (
            "wrong type",
            ("library_prefix = true", "library_prefix = \"yes\""),
            "9:18: upstreams.hub.library_prefix: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "wrong type in array",
            (
                "clients = [\"192.168.0.0/24\"]",
                "clients = [\"192.168.0.0/24\", 7]",
            ),
            "14:30: rules[0].clients[1]: invalid type: integer `7`, expected a string",
        ),
        (
            "unknown enum value",
            (
                "api_version_check = \"redirect\"",
                "api_version_check = \"proxy\"",
            ),
            "10:21: upstreams.hub.api_version_check: unknown variant `proxy`, expected \
             `answer` or `redirect`",
        ),
        (
            "unknown request kind",
            (
                "kinds = [\"manifest\", \"blob\"]",
                "kinds = [\"manifest\", \"blobs\"]",
            ),
            "15:22: rules[0].kinds[1]: unknown variant `blobs`, expected one of \
             `api_version_check`, `manifest`, `blob`, `tags_list`, `referrers`",
        ),
        (
            "bad CIDR",
            (
                "clients = [\"192.168.0.0/24\"]",
                "clients = [\"192.168.0.0/33\"]",
            ),
            "14:12: rules[0].clients[0]: \"192.168.0.0/33\" is not a CIDR or IP address \
             (expected a form like 192.0.2.0/24 or 2001:db8::/32, with no leading zeros in IPv4 numbers or prefix lengths)",
        ),
        (
            "CIDR with a leading zero",
            (
                "clients = [\"192.168.0.0/24\"]",
                "clients = [\"192.168.010.0/24\"]",
            ),
            "14:12: rules[0].clients[0]: \"192.168.010.0/24\" is not a CIDR or IP address \
             (expected a form like 192.0.2.0/24 or 2001:db8::/32, with no leading zeros in IPv4 numbers or prefix lengths)",
        ),
        (
            "undefined upstream",
            ("upstream = \"hub\"", "upstream = \"hub2\""),
            "16:12: rules[0].upstream: rule \"lab\" names upstream \"hub2\", which is not \
             defined (defined: hub, k8s)",
        ),
        (
            "invalid listen address",
            ("listen = \"0.0.0.0:5000\"", "listen = \"localhost\""),
            "1:10: listen: \"localhost\" is not a socket address (expected IP:PORT such as \
             127.0.0.1:5000 or [::]:5000)",
        ),
    ];
    for (case, (from, to), expected) in cases {
        assert!(VALID.contains(from), "{case}: {from:?} is not in VALID");
        let text = VALID.replacen(from, to, 1);
        let errors = errors_of(&text);
        let first = errors.first().map_or("", String::as_str);
        assert!(first.starts_with(expected), "{case}: {errors:#?}");
    }
}

#[test]
fn every_error_is_reported_in_file_order() {
    let text = r#"default_upstream = "nowhere"
redirect_status = 200

[upstreams.k8s]
url = "ftp://registry.k8s.io"

[upstreams.hub]
url = 5

[[rules]]
name = "a"
upstream = "k8s"
colour = "blue"

[[rules]]
name = "b"
upstream = "k8s"
clients = [true]
"#;
    // Type errors in one upstream and two rules: all three are reported,
    // and the policy checks do not run.
    let errors = errors_of(text);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with("8:7: upstreams.hub.url: invalid type"),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with("13:1: rules[0].colour: unknown field `colour`"),
        "{errors:#?}"
    );
    assert!(
        errors[2].starts_with("18:12: rules[1].clients[0]: invalid type"),
        "{errors:#?}"
    );

    // With the types fixed, every policy error is reported.
    let text = text
        .replace("url = 5", "url = \"https://registry-1.docker.io\"")
        .replace("colour = \"blue\"\n", "")
        .replace("[true]", "[\"10.0.0.0/8\", \"10.0.0.300\"]");
    let errors = errors_of(&text);
    assert_eq!(
        errors,
        [
            "1:20: default_upstream: default_upstream \"nowhere\" is not defined (defined: hub, k8s)",
            "2:19: redirect_status: redirect_status 200 is not allowed (expected 301, 302, 303, 307 or 308)",
            "5:7: upstreams.k8s.url: upstream \"k8s\" has an invalid url \"ftp://registry.k8s.io\": the scheme must be http or https",
            "17:26: rules[1].clients[1]: \"10.0.0.300\" is not a CIDR or IP address (expected a form like 192.0.2.0/24 or 2001:db8::/32, with no leading zeros in IPv4 numbers or prefix lengths)",
        ]
    );
}

#[test]
fn wrong_shapes_of_sections_are_reported() {
    let text = "default_upstream = \"k8s\"\nupstreams = [\"k8s\"]\nrules = 5\n";
    assert_eq!(
        errors_of(text),
        [
            "2:13: upstreams: expected a table of upstreams such as [upstreams.hub], found array",
            "3:9: rules: expected an array of tables written as [[rules]], found integer",
        ]
    );
}

#[test]
fn syntax_errors_are_all_reported() {
    let text = "default_upstream = \"k8s\"\nx = \n[upstreams.k8s\nurl = \"a\"\n";
    let errors = errors_of(text);
    assert!(errors.len() >= 2, "{errors:#?}");
    assert!(errors[0].starts_with("2:5: invalid TOML: "), "{errors:#?}");
    assert!(
        errors[1].starts_with("3:15: invalid TOML: unclosed table"),
        "{errors:#?}"
    );
}

#[test]
fn missing_default_upstream_is_reported() {
    let text = VALID.replace("default_upstream = \"k8s\"\n", "");
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("1:1: default_upstream: missing key"),
        "{errors:#?}"
    );
}

#[test]
fn invalid_upstream_name_points_at_key() {
    let text = VALID
        .replace("[upstreams.hub]", "[upstreams.\"docker hub\"]")
        .replace("upstream = \"hub\"", "upstream = \"k8s\"");
    let errors = errors_of(&text);
    assert_eq!(
        errors,
        ["7:12: upstreams.docker hub: upstream name \"docker hub\" is invalid (expected letters, digits, '_', '.' or '-')"]
    );
}

#[test]
fn empty_file_needs_default_upstream() {
    let errors = errors_of("");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("1:1: default_upstream: missing key"));
}

#[test]
fn cloud_rules_warn_without_ranges() {
    let text = VALID.replace(
        "kinds = [\"manifest\", \"blob\"]",
        "clouds = [\"aws\"]\nregions = [\"eu-*\"]",
    );
    let config = Config::parse("config.toml", &text).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "config.toml:15:10: warning: rules[0].clouds: rule \"lab\" matches on the client's \
             cloud, but no range files are loaded, so the rule never matches (add \
             [[client_ranges]] entries)",
            "config.toml:16:11: warning: rules[0].regions: rule \"lab\" matches on the client's \
             region, but no range files are loaded, so the rule never matches (add \
             [[client_ranges]] entries)",
        ]
    );
    assert!(Config::parse("config.toml", VALID)
        .unwrap()
        .warnings
        .is_empty());
}

#[test]
fn networks_with_host_bits_warn() {
    let text = VALID
        .replace(
            "clients = [\"192.168.0.0/24\"]",
            "clients = [\"192.168.0.0/24\", \"192.168.1.7/24\", \"10.0.0.9\"]",
        )
        .replace(
            "default_upstream = \"k8s\"",
            "default_upstream = \"k8s\"\n\
             trusted_proxies = [\"2001:db8::1/64\", \"10.0.0.0/8\", \"::ffff:192.0.2.5/120\"]",
        );
    let config = Config::parse("config.toml", &text).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "config.toml:3:20: warning: trusted_proxies[0]: \"2001:db8::1/64\" has host bits \
             set, so it is read as 2001:db8::/64 (write \"2001:db8::/64\", or \"2001:db8::1/128\" \
             for the one address)",
            "config.toml:3:52: warning: trusted_proxies[2]: \"::ffff:192.0.2.5/120\" has host \
             bits set, so it is read as 192.0.2.0/24 (write \"192.0.2.0/24\", or \
             \"192.0.2.5/32\" for the one address)",
            "config.toml:15:30: warning: rules[0].clients[1]: \"192.168.1.7/24\" has host bits \
             set, so it is read as 192.168.1.0/24 (write \"192.168.1.0/24\", or \
             \"192.168.1.7/32\" for the one address)",
        ]
    );
}

#[test]
fn builtin_policy_compiles() {
    let config = Config::builtin().unwrap();
    assert_eq!(config.listen, DEFAULT_LISTEN);
    assert_eq!(config.policy.default_upstream().name(), "k8s");
    let k8s_url = config.policy.default_upstream().url().to_string();
    assert_eq!(k8s_url.trim_end_matches('/'), "https://registry.k8s.io");
    let hub = config.policy.upstream("hub").unwrap();
    let hub_url = hub.url().to_string();
    assert_eq!(
        hub_url.trim_end_matches('/'),
        "https://registry-1.docker.io"
    );
    assert!(hub.library_prefix());
    assert_eq!(
        hub.auth(),
        registry_redirect_core::policy::UpstreamAuth::Resolve
    );
    let rules = config.policy.rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].clients(), ["192.168.0.0/24".parse().unwrap()]);
    assert_eq!(config.policy.rule_upstream(&rules[0]).name(), "hub");
}

#[test]
fn example_config_compiles() {
    let text = include_str!("../../examples/registry-redirect.toml");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let config = Config::parse_in("registry-redirect.toml", text, &dir).unwrap();
    assert!(!config.policy.rules().is_empty());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.client_ranges.prefixes, 4);
}

#[test]
fn load_reports_unreadable_file() {
    let path = Path::new("/nonexistent/registry-redirect.toml");
    let error = Config::load(path).unwrap_err();
    assert!(matches!(error, LoadError::Read { .. }));
    assert!(
        error
            .to_string()
            .starts_with("failed to read config file /nonexistent/registry-redirect.toml: "),
        "{error}"
    );
}

/// A fresh temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "registry-redirect-config-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("ranges")).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CLOUD_POLICY: &str = r#"default_upstream = "k8s"

[upstreams.k8s]
url = "https://registry.k8s.io"

[upstreams.mirror]
url = "https://{region}.mirror.example"

[[rules]]
name = "cloud"
clouds = ["example"]
upstream = "mirror"
"#;

const PLAIN_RANGES: &str = "\
192.0.2.0/24     example eu-1
198.51.100.0/24  example us-1
2001:db8::/32    example eu-1
";

const AWS_RANGES: &str = r#"{"prefixes": [
    {"ip_prefix": "203.0.113.0/24", "region": "eu-west-1", "service": "EC2"},
    {"ip_prefix": "203.0.113.0/24", "region": "eu-west-1", "service": "AMAZON"},
    {"ip_prefix": "192.0.2.0/25", "region": "us-east-1", "service": "S3"}
]}"#;

fn client_label(config: &Config, address: &str) -> (Option<String>, Option<String>) {
    let label = config.policy.client_label(address.parse().unwrap());
    (
        label.and_then(|label| label.cloud()).map(str::to_owned),
        label.and_then(|label| label.region()).map(str::to_owned),
    )
}

fn owned(cloud: &str, region: &str) -> (Option<String>, Option<String>) {
    (Some(cloud.to_owned()), Some(region.to_owned()))
}

#[test]
fn client_ranges_load_and_merge_in_order() {
    let dir = TempDir::new("merge");
    dir.write("ranges/plain.txt", PLAIN_RANGES);
    dir.write("ranges/aws.json", AWS_RANGES);
    let text = format!(
        "{CLOUD_POLICY}
[[client_ranges]]
format = \"plain\"
path = \"ranges/plain.txt\"

[[client_ranges]]
format = \"aws\"
path = \"ranges/aws.json\"
"
    );
    let config = Config::parse_in("config.toml", &text, &dir.0).unwrap();

    let files = &config.client_ranges.files;
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].format, SourceFormat::Plain);
    assert_eq!(files[0].path, Path::new("ranges/plain.txt"));
    assert_eq!(files[0].resolved, dir.0.join("ranges/plain.txt"));
    assert_eq!((files[0].prefixes, files[0].labels), (3, 2));
    assert_eq!((files[1].prefixes, files[1].labels), (2, 2));
    assert_eq!(config.client_ranges.prefixes, 5);
    assert_eq!(config.client_ranges.labels, 4);
    assert_eq!(config.policy.labelled_prefix_count(), 5);

    assert_eq!(
        client_label(&config, "198.51.100.7"),
        owned("example", "us-1")
    );
    assert_eq!(
        client_label(&config, "203.0.113.9"),
        owned("aws", "eu-west-1")
    );
    // The AWS file lists 192.0.2.0/25 inside the plain file's /24: the
    // longer prefix wins.
    assert_eq!(
        client_label(&config, "192.0.2.1"),
        owned("aws", "us-east-1")
    );
    assert_eq!(
        client_label(&config, "192.0.2.200"),
        owned("example", "eu-1")
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn later_range_file_wins_same_prefix() {
    let dir = TempDir::new("later-wins");
    dir.write("a.txt", "192.0.2.0/24 first r-1\n");
    dir.write("b.txt", "192.0.2.0/24 second r-2\n");
    let entries = "[[client_ranges]]\nformat = \"plain\"\npath = \"a.txt\"\n\
                   [[client_ranges]]\nformat = \"plain\"\npath = \"b.txt\"\n";
    let text = format!("{}{entries}", VALID);
    let config = Config::parse_in("config.toml", &text, &dir.0).unwrap();
    assert_eq!(client_label(&config, "192.0.2.1"), owned("second", "r-2"));
    assert_eq!(config.client_ranges.prefixes, 1);
    assert_eq!(config.client_ranges.labels, 1);
}

#[test]
fn range_entry_cloud_and_services_apply() {
    let dir = TempDir::new("cloud-services");
    dir.write("aws.json", AWS_RANGES);
    dir.write("plain.txt", "192.0.2.0/24 r-1\n198.51.100.0/24 other r-2\n");
    let text = format!(
        "{VALID}
[[client_ranges]]
format = \"aws\"
path = \"aws.json\"
cloud = \"aws-gov\"
services = [\"ec2\"]

[[client_ranges]]
format = \"plain\"
path = \"plain.txt\"
cloud = \"lab\"
"
    );
    let config = Config::parse_in("config.toml", &text, &dir.0).unwrap();
    assert_eq!(config.client_ranges.files[0].prefixes, 1);
    assert_eq!(
        client_label(&config, "203.0.113.1"),
        owned("aws-gov", "eu-west-1")
    );
    // `cloud` names the lines without a cloud; a line's own cloud stays.
    assert_eq!(client_label(&config, "192.0.2.1"), owned("lab", "r-1"));
    assert_eq!(client_label(&config, "198.51.100.1"), owned("other", "r-2"));
}

#[test]
fn range_entry_errors_name_entry_and_file() {
    let dir = TempDir::new("errors");
    dir.write(
        "bad.json",
        r#"{"prefixes": [{"ip_prefix": "10.0.0.0/33", "region": "x"}]}"#,
    );
    dir.write("good.txt", PLAIN_RANGES);
    dir.write("aws.json", AWS_RANGES);
    let root = dir.0.display().to_string();
    // (the entry's lines, the expected error after `config.toml:`)
    let cases = [
        (
            "format = \"aws\"\npath = \"missing.json\"",
            format!(
                "19:8: client_ranges[0].path: failed to read range file missing.json (resolved \
                 to {root}/missing.json): No such file or directory (os error 2)"
            ),
        ),
        (
            "format = \"oracle\"\npath = \"good.txt\"",
            "18:10: client_ranges[0].format: unknown range file format \"oracle\" (expected \
             aws, gcp, azure or plain)"
                .to_owned(),
        ),
        (
            "format = \"aws\"\npath = \"bad.json\"",
            "19:8: client_ranges[0].path: bad.json: prefixes[0].ip_prefix is \"10.0.0.0/33\", \
             which is not an IPv4 prefix such as 192.0.2.0/24"
                .to_owned(),
        ),
        (
            "format = \"gcp\"\npath = \"good.txt\"",
            "19:8: client_ranges[0].path: good.txt: invalid JSON at line 1, column 5: invalid \
             type: floating point `192.0`, expected a GCP cloud.json object"
                .to_owned(),
        ),
        (
            "format = \"plain\"\npath = \"good.txt\"\nservices = [\"EC2\"]",
            "20:12: client_ranges[0].services: services filters only aws range files, and this \
             entry has format plain (remove services, or use format = \"aws\")"
                .to_owned(),
        ),
        (
            "format = \"aws\"\npath = \"aws.json\"\nservices = [\"LAMBDA\"]",
            "20:12: client_ranges[0].services: aws.json: no entry of the aws range file has \
             service LAMBDA (services in the file: AMAZON, EC2, S3)"
                .to_owned(),
        ),
        (
            "format = \"plain\"\npath = \"\"",
            "19:8: client_ranges[0].path: the path is empty (expected the path of a range file, \
             relative to the configuration file's directory or absolute)"
                .to_owned(),
        ),
        (
            "format = \"plain\"\npath = \"good.txt\"\ncloud = \"\"",
            "20:9: client_ranges[0].cloud: the cloud is empty (expected a name such as aws, or \
             no cloud key to use the format's cloud)"
                .to_owned(),
        ),
        (
            "path = \"good.txt\"",
            "17:1: client_ranges[0]: missing field `format`".to_owned(),
        ),
        (
            "format = \"plain\"\npath = \"good.txt\"\nservice = [\"EC2\"]",
            "20:1: client_ranges[0].service: unknown field `service`, expected one of `format`, \
             `path`, `cloud`, `services`"
                .to_owned(),
        ),
    ];
    for (entry, expected) in cases {
        // VALID has 16 lines, so the entry's header is line 17.
        let text = format!("{VALID}[[client_ranges]]\n{entry}\n");
        let errors = Config::parse_in("config.toml", &text, &dir.0)
            .expect_err(entry)
            .0
            .iter()
            .map(|error| {
                format!(
                    "{}:{}: {}",
                    error.position.line, error.position.column, error.message
                )
            })
            .collect::<Vec<_>>();
        assert_eq!(errors.len(), 1, "{entry}: {errors:#?}");
        assert!(errors[0].starts_with(&expected), "{entry}: {errors:#?}");
    }
}

#[test]
fn range_file_invalid_lines_each_get_an_error() {
    let dir = TempDir::new("invalid-lines");
    let mut lines = String::from("192.0.2.0/24 lab r-1\n");
    for index in 1..=12 {
        lines.push_str(&format!("bad{index}\n"));
    }
    dir.write("lines.txt", &lines);
    let text = format!("{VALID}[[client_ranges]]\nformat = \"plain\"\npath = \"lines.txt\"\n");
    let errors: Vec<String> = Config::parse_in("config.toml", &text, &dir.0)
        .expect_err("invalid lines")
        .0
        .iter()
        .map(|error| error.message.clone())
        .collect();

    // The first ten invalid lines, lines 2 to 11, each with its own error.
    assert_eq!(errors.len(), 10, "{errors:#?}");
    assert!(
        errors[0].starts_with("client_ranges[0].path: lines.txt: line 2 is \"bad1\""),
        "{errors:#?}"
    );
    assert!(
        errors[9].starts_with("client_ranges[0].path: lines.txt: line 11 is \"bad10\""),
        "{errors:#?}"
    );
    assert!(
        errors[9].ends_with("(and 2 more invalid lines)"),
        "{errors:#?}"
    );
}

/// Loads a configuration whose one plain range file `file` in `dir` has
/// `content`, and returns its warnings as text.
fn range_file_warnings(dir: &TempDir, file: &str, content: &str) -> Vec<String> {
    dir.write(file, content);
    let text = format!("{VALID}[[client_ranges]]\nformat = \"plain\"\npath = \"{file}\"\n");
    let config = Config::parse_in("config.toml", &text, &dir.0).unwrap();
    config.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn range_file_host_bits_warn_with_lines() {
    let dir = TempDir::new("host-bits");
    let warnings = range_file_warnings(
        &dir,
        "bits.txt",
        "10.0.0.0/8 lab east\n10.1.2.3/16 lab west\n192.0.2.9/24\n::ffff:10.9.9.9/112\n2001:db8::1/32\n",
    );
    assert_eq!(
        warnings,
        [
            "config.toml:19:8: warning: client_ranges[0].path: bits.txt: prefixes with host bits \
          set (line 2: 10.1.2.3/16 is read as 10.1.0.0/16; line 3: 192.0.2.9/24 is read as \
          192.0.2.0/24; line 4: ::ffff:10.9.9.9/112 is read as 10.9.0.0/16, and 1 more); write \
          the network, or the address alone for one address"
        ]
    );

    let warnings = range_file_warnings(&dir, "clean.txt", "10.0.0.0/8 lab east\n192.0.2.9\n");
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn range_file_repeated_prefixes_warn() {
    let dir = TempDir::new("repeated");
    let warnings = range_file_warnings(
        &dir,
        "repeated.txt",
        "10.0.0.0/8 lab east\n192.0.2.0/24 lab west\n10.0.0.0/8 lab east\n10.0.0.0/8 lab west\n",
    );
    assert_eq!(
        warnings,
        [
            "config.toml:19:8: warning: client_ranges[0].path: repeated.txt: prefixes listed \
             again with another label (line 4: 10.0.0.0/8, labelled differently on line 1); each prefix keeps \
             one label, a label with a region over one without, else the later line's"
        ]
    );
}

#[test]
fn loaded_ranges_warn_only_unknown_labels() {
    let dir = TempDir::new("warnings");
    dir.write("plain.txt", PLAIN_RANGES);
    let rules = "[[rules]]\nname = \"known\"\nclouds = [\"EXAMPLE\"]\nregions = [\"eu-*\", \"us-1\"]\nupstream = \"hub\"\n\
                 [[rules]]\nname = \"typos\"\nclouds = [\"example\", \"exmaple\"]\nregions = [\"ap-*\", \"eu-2\"]\nupstream = \"hub\"\n\
                 [[client_ranges]]\nformat = \"plain\"\npath = \"plain.txt\"\n";
    let text = format!("{VALID}{rules}");
    let config = Config::parse_in("config.toml", &text, &dir.0).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "config.toml:24:22: warning: rules[2].clouds[1]: rule \"typos\" matches cloud \
             \"exmaple\", but no loaded range has that cloud, so this value never matches \
             (loaded clouds: example)",
            "config.toml:25:12: warning: rules[2].regions[0]: rule \"typos\" matches region \
             \"ap-*\", but no loaded range has a matching region, so this value never matches",
            "config.toml:25:20: warning: rules[2].regions[1]: rule \"typos\" matches region \
             \"eu-2\", but no loaded range has a matching region, so this value never matches",
        ]
    );
}

#[test]
fn load_resolves_range_paths_from_config_dir() {
    let dir = TempDir::new("relative");
    dir.write("ranges/plain.txt", PLAIN_RANGES);
    let text = format!(
        "{CLOUD_POLICY}[[client_ranges]]\nformat = \"plain\"\npath = \"ranges/plain.txt\"\n"
    );
    dir.write("config.toml", &text);
    let config = Config::load(&dir.0.join("config.toml")).unwrap();
    assert_eq!(config.client_ranges.prefixes, 3);
    assert_eq!(
        client_label(&config, "2001:db8::1"),
        owned("example", "eu-1")
    );

    let absolute = dir.0.join("ranges/plain.txt");
    let text = format!(
        "{CLOUD_POLICY}[[client_ranges]]\nformat = \"plain\"\npath = \"{}\"\n",
        absolute.display()
    );
    let config = Config::parse_in("config.toml", &text, Path::new("/nonexistent")).unwrap();
    assert_eq!(config.client_ranges.files[0].resolved, absolute);
}

#[test]
fn client_ranges_must_be_array_of_tables() {
    assert_eq!(
        errors_of(&format!("client_ranges = \"ranges.txt\"\n{VALID}"))[0],
        "1:17: client_ranges: expected an array of tables written as [[client_ranges]], \
         found string"
    );
}

#[test]
fn ranges_fetch_urls_are_read_and_checked() {
    let text = format!(
        "{VALID}[ranges_fetch]\naws = \"http://127.0.0.1:8080/ip-ranges.json\"\ngcp = \"\"\n"
    );
    let config = Config::parse("config.toml", &text).unwrap();
    assert_eq!(
        config.ranges_fetch,
        BTreeMap::from([
            (
                FetchSource::Aws,
                "http://127.0.0.1:8080/ip-ranges.json".to_owned()
            ),
            (FetchSource::Gcp, String::new()),
        ])
    );

    let text = format!(
        "{VALID}[ranges_fetch]\noracle = \"https://example.com/a.json\"\nazure = \"ftp://example.com/tags.json\"\ngcp = 5\n"
    );
    assert_eq!(
        errors_of(&text),
        [
            "18:1: ranges_fetch: unknown key \"oracle\" (expected one of: aws, gcp, azure)",
            "19:9: ranges_fetch.azure: \"ftp://example.com/tags.json\" is not an absolute http \
             or https URL: the scheme is ftp, expected http or https",
            "20:7: ranges_fetch.gcp: invalid type: integer `5`, expected a string",
        ]
    );
}

#[test]
fn ranges_fetch_alone_ignores_rest_of_file() {
    // The range file does not exist yet, and the policy is incomplete:
    // neither matters to `ranges fetch`.
    let text = "[[client_ranges]]\nformat = \"aws\"\npath = \"ranges/aws-ip-ranges.json\"\n\
                [ranges_fetch]\nazure = \"https://download.example/ServiceTags_Public.json\"\n";
    assert_eq!(
        parse_ranges_fetch("config.toml", text).unwrap(),
        BTreeMap::from([(
            FetchSource::Azure,
            "https://download.example/ServiceTags_Public.json".to_owned()
        )])
    );
    assert!(parse_ranges_fetch("config.toml", "").unwrap().is_empty());

    let errors = parse_ranges_fetch("config.toml", "[ranges_fetch]\naws = true\n").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "config.toml:2:7: ranges_fetch.aws: invalid type: boolean `true`, expected a string"
    );
}

#[test]
fn blob_checks_table_sets_check_settings() {
    let verified = VALID.replace(
        "api_version_check = \"redirect\"\n",
        "api_version_check = \"redirect\"\nverify_blobs = true\n",
    );
    let text = format!(
        "{verified}[blob_checks]\ntimeout_ms = 300\nmissing_ttl_seconds = 5\n\
         cache_capacity = 1000\nfailing_mirror_skip_seconds = 20\nconnect_timeout_ms = 150\n"
    );
    let config = Config::parse("config.toml", &text).unwrap();
    let settings = &config.check_settings;
    assert_eq!(settings.timeout, Duration::from_millis(300));
    assert_eq!(settings.missing_ttl, Duration::from_secs(5));
    assert_eq!(settings.cache_capacity, 1000);
    assert_eq!(settings.failing_mirror_skip, Duration::from_secs(20));
    assert_eq!(settings.connect_timeout, Duration::from_millis(150));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let defaults = Config::parse("config.toml", &verified).unwrap();
    assert_eq!(defaults.check_settings, CheckSettings::default());
}

#[test]
fn blob_checks_errors_point_at_key() {
    let text = format!("{VALID}[blob_checks]\ntimeout_ms = 0\nretries = 3\n");
    assert_eq!(
        errors_of(&text),
        [
            "19:1: blob_checks.retries: unknown field `retries`, expected one of \
          `cache_capacity`, `missing_ttl_seconds`, `timeout_ms`, `failing_mirror_skip_seconds`, \
          `connect_timeout_ms`"
        ]
    );
    let text = format!("{VALID}[blob_checks]\ntimeout_ms = 0\n");
    assert_eq!(
        errors_of(&text),
        [
            "18:14: blob_checks.timeout_ms: 0 is not allowed (expected at least 1: the \
          milliseconds a HEAD check may take)"
        ]
    );
}

#[test]
fn unused_blob_checks_warn() {
    let text = format!("{VALID}[blob_checks]\ntimeout_ms = 300\n");
    let config = Config::parse("config.toml", &text).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "config.toml:17:2: warning: blob_checks: no upstream has verify_blobs = true or a \
          health_check, so these settings have no effect"
        ]
    );
}

const RESOLVE: &str = r#"default_upstream = "hub"

[upstreams.hub]
url = "http://127.0.0.1:5999"
auth = "resolve"
[upstreams.hub.credentials]
username = "puller"
"#;

/// Parses `text` with `HUB_PASSWORD` set to `env_value` (unset for `None`),
/// and password files in `dir`.
fn parse_resolve(text: &str, dir: &Path, env_value: Option<&str>) -> Result<Config, Vec<String>> {
    let env = |name: &str| {
        (name == "HUB_PASSWORD")
            .then(|| env_value.map(str::to_owned))
            .flatten()
    };
    Config::parse_with_env("config.toml", text, dir, &env).map_err(|errors| {
        errors
            .0
            .iter()
            .map(|error| {
                format!(
                    "{}:{}: {}",
                    error.position.line, error.position.column, error.message
                )
            })
            .collect()
    })
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "registry-redirect-credentials-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn resolve_keys_load() {
    let text = RESOLVE.replace(
        "auth = \"resolve\"",
        "auth = \"resolve\"\nblob_proxy = true\ntag_ttl_seconds = 0",
    ) + "password_env = \"HUB_PASSWORD\"\n";
    let config = parse_resolve(&text, Path::new(""), Some("secret")).unwrap();
    let hub = config.policy.upstream("hub").unwrap();
    let settings = hub.resolve().expect("resolve settings");
    assert!(settings.blob_proxy);
    assert_eq!(settings.tag_ttl, Duration::ZERO);
    let credentials = settings.credentials.as_ref().unwrap();
    assert_eq!(credentials.username, "puller");
    assert_eq!(credentials.password.expose(), "secret");
    assert!(!format!("{config:?}").contains("secret"));
}

#[test]
fn password_file_trailing_newline_trimmed() {
    let dir = scratch_dir("trim");
    for (contents, expected) in [
        ("secret\n", "secret"),
        ("secret\r\n", "secret"),
        ("secret", "secret"),
        ("two\nlines\n", "two\nlines"),
    ] {
        std::fs::write(dir.join("hub-password"), contents).unwrap();
        let text = format!("{RESOLVE}password_file = \"hub-password\"\n");
        let config = parse_resolve(&text, &dir, None).unwrap();
        let settings = config.policy.upstream("hub").unwrap().resolve().unwrap();
        let password = settings.credentials.as_ref().unwrap().password.expose();
        assert_eq!(password, expected, "{contents:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn credential_loading_errors_name_key() {
    let dir = scratch_dir("errors");
    std::fs::write(dir.join("empty"), "\n").unwrap();
    let missing = dir.join("missing");
    let cases = [
        (
            "password_env = \"HUB_PASSWORD\"\n".to_owned(),
            None,
            "8:16: upstreams.hub.credentials.password_env: environment variable HUB_PASSWORD \
             is not set or not valid UTF-8 (expected the password)"
                .to_owned(),
        ),
        (
            "password_env = \"HUB_PASSWORD\"\n".to_owned(),
            Some(""),
            "8:16: upstreams.hub.credentials.password_env: environment variable HUB_PASSWORD \
             is empty (expected the password)"
                .to_owned(),
        ),
        (
            "password_file = \"empty\"\n".to_owned(),
            None,
            format!(
                "8:17: upstreams.hub.credentials.password_file: \"{}\" is empty (expected the \
                 password, optionally followed by a newline)",
                dir.join("empty").display()
            ),
        ),
        (
            format!("password_file = \"{}\"\n", missing.display()),
            None,
            format!(
                "8:17: upstreams.hub.credentials.password_file: failed to read \"{}\": No such \
                 file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            "password_file = \"empty\"\npassword_env = \"HUB_PASSWORD\"\n".to_owned(),
            Some("secret"),
            "9:16: upstreams.hub.credentials.password_env: set exactly one of password_file \
             and password_env, not both"
                .to_owned(),
        ),
        (
            String::new(),
            Some("secret"),
            "6:16: upstreams.hub.credentials: missing password_file or password_env (set \
             exactly one, such as password_file = \"/run/secrets/hub-password\")"
                .to_owned(),
        ),
    ];
    for (keys, env_value, expected) in cases {
        let text = format!("{RESOLVE}{keys}");
        let errors = parse_resolve(&text, &dir, env_value).unwrap_err();
        assert_eq!(errors, [expected], "{keys}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resolve_conflicts_are_config_errors() {
    let text = RESOLVE.replace(
        "auth = \"resolve\"",
        "auth = \"resolve\"\nverify_blobs = true",
    ) + "password_env = \"HUB_PASSWORD\"\n";
    let errors = parse_resolve(&text, Path::new(""), Some("secret")).unwrap_err();
    assert_eq!(
        errors,
        [
            "6:16: upstreams.hub.verify_blobs: upstream \"hub\" has an invalid verify_blobs: \
          does not apply with auth = \"resolve\", because the server asks the upstream for \
          every blob itself; remove it"
        ]
    );
}

#[test]
fn admin_listen_reads_address_or_off() {
    let cases = [
        ("admin_listen = \"off\"\n", Some(AdminListen::Off)),
        (
            "admin_listen = \"[::]:9090\"\n",
            Some(AdminListen::On("[::]:9090".parse().unwrap())),
        ),
        ("", None),
    ];
    for (line, expected) in cases {
        let config = Config::parse("config.toml", &format!("{line}{VALID}")).unwrap();
        assert_eq!(config.admin_listen, expected, "{line}");
    }

    let errors = Config::parse("config.toml", &format!("admin_listen = \"9090\"\n{VALID}"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        errors,
        "config.toml:1:16: admin_listen: \"9090\" is not a socket address (expected IP:PORT \
         such as 127.0.0.1:9090 or [::]:9090, or off to turn the admin listener off)"
    );
}

#[test]
fn config_hash_is_text_sha256() {
    let config = Config::parse(
        "config.toml",
        "default_upstream = \"k8s\"\n[upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n",
    )
    .unwrap();
    // The output of `sha256sum` for the same text.
    assert_eq!(
        config.sha256,
        "6cfe6b0ae8de22c248c3c6e47f3cf70f69ecf131bfcf800b19e0bdbc567d91eb"
    );
    let other = Config::parse(
        "config.toml",
        "default_upstream = \"k8s\"\n[upstreams.k8s]\nurl = \"https://registry.k8s.io/\"\n",
    )
    .unwrap();
    assert_ne!(config.sha256, other.sha256);
}
