//! A one-screen summary of a loaded policy, printed by `check` and at the
//! start of `serve`.
//!
//! ```
//! use registry_redirect_cli::config::Config;
//! use registry_redirect_cli::summary::Summary;
//!
//! let config = Config::builtin().unwrap();
//! let text = Summary::new(&config).to_string();
//! assert!(text.contains("  k8s  https://registry.k8s.io\n"));
//! assert!(text.contains("  rules[0] lan-to-docker-hub -> hub: clients 192.168.0.0/24\n"));
//! assert!(text.contains("default upstream: k8s\n"));
//! ```

use std::fmt;

use registry_redirect_core::client::canonical_network;
use registry_redirect_core::policy::{parse_network, UpstreamKind};
use registry_redirect_core::{ApiVersionCheck, RuleSpec, Upstream};

use crate::config::{ClientRanges, Config};

/// Rules listed before the rest is only counted, so that the summary fits
/// on a screen.
const MAX_RULES_SHOWN: usize = 20;

/// Values listed per criterion before the rest is only counted.
const MAX_VALUES_SHOWN: usize = 4;

/// Displays the upstreams with their URLs and options, the rules in order
/// with their criteria, the default upstream, the redirect status, the
/// trusted proxies and, when range files are configured, their prefix and
/// label counts.
#[derive(Debug, Clone, Copy)]
pub struct Summary<'a> {
    config: &'a Config,
}

impl<'a> Summary<'a> {
    /// Creates a summary of `config`.
    pub fn new(config: &'a Config) -> Self {
        Summary { config }
    }
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = &self.config.policy;

        writeln!(f, "upstreams:")?;
        let width = policy
            .upstreams()
            .iter()
            .map(|upstream| upstream.name().len())
            .max()
            .unwrap_or(0);
        for upstream in policy.upstreams() {
            write_upstream(f, upstream, width)?;
        }

        let rules = &self.config.spec.rules;
        if rules.is_empty() {
            writeln!(f, "rules: none")?;
        } else {
            writeln!(f, "rules (the first match wins):")?;
        }
        for (index, rule) in rules.iter().enumerate().take(MAX_RULES_SHOWN) {
            write!(f, "  rules[{index}] {} -> {}: ", rule.name, rule.upstream)?;
            write_criteria(f, rule)?;
            writeln!(f)?;
        }
        if rules.len() > MAX_RULES_SHOWN {
            writeln!(f, "  ... and {} more rules", rules.len() - MAX_RULES_SHOWN)?;
        }

        writeln!(f, "default upstream: {}", policy.default_upstream().name())?;
        writeln!(f, "redirect status: {}", policy.redirect_status().as_u16())?;
        let proxies = policy.trusted_proxies().networks();
        write!(f, "trusted proxies: ")?;
        if proxies.is_empty() {
            writeln!(f, "none (forwarding headers are ignored)")?;
        } else {
            write_list(f, proxies.iter())?;
            writeln!(
                f,
                " (header {})",
                policy.trusted_proxies().header().as_str()
            )?;
        }

        write_client_ranges(f, &self.config.client_ranges)
    }
}

/// Writes the totals of the loaded range files, then one line per file.
/// Writes nothing when no range file is configured.
fn write_client_ranges(f: &mut fmt::Formatter<'_>, ranges: &ClientRanges) -> fmt::Result {
    if !ranges.is_configured() {
        return Ok(());
    }
    writeln!(
        f,
        "client ranges: {}, {} (cloud and region pairs)",
        counted(ranges.prefixes, "prefix", "prefixes"),
        counted(ranges.labels, "label", "labels")
    )?;
    for (index, file) in ranges.files.iter().enumerate() {
        write!(
            f,
            "  client_ranges[{index}] {} {}",
            file.format,
            file.path.display()
        )?;
        let mut options = Vec::new();
        if let Some(cloud) = &file.cloud {
            options.push(format!("cloud {cloud}"));
        }
        if !file.services.is_empty() {
            options.push(format!("services {}", file.services.join(", ")));
        }
        if !options.is_empty() {
            write!(f, " ({})", options.join("; "))?;
        }
        writeln!(
            f,
            ": {}, {}",
            counted(file.prefixes, "prefix", "prefixes"),
            counted(file.labels, "label", "labels")
        )?;
    }
    Ok(())
}

fn counted(count: usize, singular: &str, plural: &str) -> String {
    let noun = if count == 1 { singular } else { plural };
    format!("{count} {noun}")
}

fn write_upstream(f: &mut fmt::Formatter<'_>, upstream: &Upstream, width: usize) -> fmt::Result {
    // An upstream whose mirrors are all listed by region has no single URL.
    let url = match upstream.url().trim_end_matches('/') {
        "" => "(regional mirrors only)",
        url => url,
    };
    write!(f, "  {:width$}  {url}", upstream.name())?;
    let mut options = Vec::new();
    if upstream.kind() == UpstreamKind::BlobStore {
        options.push("blob store".to_owned());
    }
    let region_count = upstream.regions().count();
    if region_count > 0 {
        options.push(format!("{region_count} regional mirrors"));
    }
    if !upstream.path_prefix().is_empty() {
        options.push(format!("path_prefix {}", upstream.path_prefix()));
    }
    if upstream.library_prefix() {
        options.push("library_prefix".to_owned());
    }
    if upstream.api_version_check() != ApiVersionCheck::Answer {
        options.push(format!(
            "api_version_check {}",
            upstream.api_version_check().as_str()
        ));
    }
    if upstream.verify_blobs() {
        options.push("verify_blobs".to_owned());
    }
    if let Some(health_check) = upstream.health_check() {
        options.push(format!(
            "health check every {} s",
            health_check.interval_seconds
        ));
    }
    if let Some(resolve) = upstream.resolve() {
        options.push("auth resolve".to_owned());
        if resolve.blob_proxy {
            options.push("blob_proxy".to_owned());
        }
        options.push(format!("tag_ttl {} s", resolve.tag_ttl.as_secs()));
        // The user name only: the password is never shown.
        if let Some(credentials) = &resolve.credentials {
            options.push(format!("credentials of {}", credentials.username));
        }
    }
    if !options.is_empty() {
        write!(f, "  ({})", options.join(", "))?;
    }
    writeln!(f)
}

fn write_criteria(f: &mut fmt::Formatter<'_>, rule: &RuleSpec) -> fmt::Result {
    let kinds: Vec<&str> = rule.kinds.iter().map(|kind| kind.as_str()).collect();
    let clients: Vec<String> = rule
        .clients
        .iter()
        .map(|value| network_as_read(value))
        .collect();
    let hosts: Vec<String> = rule.hosts.iter().map(|host| host_as_read(host)).collect();
    let criteria = [
        (
            "clients",
            clients.iter().map(String::as_str).collect::<Vec<_>>(),
        ),
        ("kinds", kinds),
        (
            "repositories",
            rule.repositories.iter().map(String::as_str).collect(),
        ),
        ("hosts", hosts.iter().map(String::as_str).collect()),
        ("clouds", rule.clouds.iter().map(String::as_str).collect()),
        ("regions", rule.regions.iter().map(String::as_str).collect()),
    ];
    let mut written = false;
    for (name, values) in criteria.iter().filter(|(_, values)| !values.is_empty()) {
        if written {
            f.write_str("; ")?;
        }
        write!(f, "{name} ")?;
        write_list(f, values.iter())?;
        written = true;
    }
    if !written {
        f.write_str("every request")?;
    }
    if let Some(canary) = &rule.canary {
        write!(f, "; canary {}% -> {}", canary.percent, canary.upstream)?;
    }
    Ok(())
}

/// Returns a rule's client network as the server reads it: without host
/// bits, and an IPv4-mapped IPv6 network as IPv4 (`10.1.2.3/16` is
/// `10.1.0.0/16`). Text that is not a network is returned as written.
fn network_as_read(value: &str) -> String {
    match parse_network(value) {
        Some(network) => canonical_network(network).to_string(),
        None => value.to_owned(),
    }
}

/// Returns a rule's host as the server compares it: lowercase, without a
/// final dot (`Docker.IO.` is `docker.io`).
fn host_as_read(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    lower.strip_suffix('.').unwrap_or(&lower).to_owned()
}

/// Writes up to [`MAX_VALUES_SHOWN`] values separated by commas, then the
/// count of the rest.
fn write_list<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    values: impl ExactSizeIterator<Item = T>,
) -> fmt::Result {
    let count = values.len();
    for (index, value) in values.take(MAX_VALUES_SHOWN).enumerate() {
        if index > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{value}")?;
    }
    if count > MAX_VALUES_SHOWN {
        write!(f, " and {} more", count - MAX_VALUES_SHOWN)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_builtin_policy() {
        let config = Config::builtin().unwrap();
        assert_eq!(
            Summary::new(&config).to_string(),
            "upstreams:\n\
             \x20 hub  https://registry-1.docker.io  (library_prefix, auth resolve, tag_ttl 30 s)\n\
             \x20 k8s  https://registry.k8s.io\n\
             rules (the first match wins):\n\
             \x20 rules[0] lan-to-docker-hub -> hub: clients 192.168.0.0/24\n\
             default upstream: k8s\n\
             redirect status: 307\n\
             trusted proxies: none (forwarding headers are ignored)\n"
        );
    }

    #[test]
    fn summary_lists_criteria_and_counts_the_rest() {
        let mut text = String::from(
            "default_upstream = \"a\"\n\
             redirect_status = 302\n\
             trusted_proxies = [\"10.0.0.1\"]\n\
             [upstreams.a]\n\
             url = \"http://127.0.0.1:5001/base\"\n\
             path_prefix = \"mirror/k8s\"\n\
             [upstreams.b]\n\
             kind = \"blob_store\"\n\
             url = \"https://{region}.blobs.example\"\n\
             regions = [\"eu-west-1\", \"us-east-1\"]\n\
             verify_blobs = true\n\
             health_check = { interval_seconds = 15, path = \"/\" }\n\
             [[rules]]\n\
             name = \"wide\"\n\
             clients = [\"10.1.0.0/16\", \"10.2.0.0/16\", \"10.3.0.0/16\", \"10.4.0.0/16\", \"10.5.0.0/16\", \"10.6.0.0/16\"]\n\
             kinds = [\"blob\"]\n\
             repositories = [\"pause\"]\n\
             hosts = [\"*.example.com\"]\n\
             upstream = \"a\"\n\
             [[rules]]\n\
             name = \"cloud\"\n\
             clouds = [\"aws\"]\n\
             regions = [\"eu-*\"]\n\
             upstream = \"a\"\n\
             canary = { upstream = \"b\", percent = 12.5 }\n",
        );
        for index in 0..MAX_RULES_SHOWN + 2 {
            text.push_str(&format!(
                "[[rules]]\nname = \"r{index}\"\nupstream = \"a\"\n"
            ));
        }
        let config = Config::parse("config.toml", &text).unwrap();
        let summary = Summary::new(&config).to_string();
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(
            lines[1],
            "  a  http://127.0.0.1:5001/base  (path_prefix mirror/k8s/)"
        );
        assert_eq!(
            lines[2],
            "  b  https://{region}.blobs.example  (blob store, 2 regional mirrors, verify_blobs, \
             health check every 15 s)"
        );
        assert_eq!(
            lines[4],
            "  rules[0] wide -> a: clients 10.1.0.0/16, 10.2.0.0/16, 10.3.0.0/16, 10.4.0.0/16 and 2 more; \
             kinds blob; repositories pause; hosts *.example.com"
        );
        assert_eq!(
            lines[5],
            "  rules[1] cloud -> a: clouds aws; regions eu-*; canary 12.5% -> b"
        );
        assert_eq!(lines[6], "  rules[2] r0 -> a: every request");
        assert_eq!(lines[4 + MAX_RULES_SHOWN], "  ... and 4 more rules");
        assert!(summary.ends_with(
            "default upstream: a\nredirect status: 302\n\
             trusted proxies: 10.0.0.1/32 (header x-forwarded-for)\n"
        ));
    }

    #[test]
    fn summary_shows_criteria_as_read() {
        let text = "default_upstream = \"a\"\n\
                    [upstreams.a]\nurl = \"https://registry.k8s.io\"\n\
                    [[rules]]\nname = \"lab\"\nupstream = \"a\"\n\
                    clients = [\"192.168.0.7/24\", \"::ffff:10.9.9.9/104\", \"2001:db8::1\"]\n\
                    hosts = [\"Docker.IO.\"]\n";
        let config = Config::parse("config.toml", text).unwrap();
        let summary = Summary::new(&config).to_string();
        assert!(
            summary.contains(
                "rules[0] lab -> a: clients 192.168.0.0/24, 10.0.0.0/8, 2001:db8::1/128; \
                 hosts docker.io\n"
            ),
            "{summary}"
        );
    }

    #[test]
    fn summary_counts_client_ranges() {
        let dir =
            std::env::temp_dir().join(format!("registry-redirect-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("lab.txt"),
            "192.0.2.0/24 r-1\n198.51.100.0/24 r-2\n203.0.113.0/24 r-1\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("aws.json"),
            r#"{"prefixes": [{"ip_prefix": "192.0.2.0/24", "region": "eu-west-1", "service": "EC2"}]}"#,
        )
        .unwrap();
        let text = "default_upstream = \"k8s\"\n\
                    [upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n\
                    [[client_ranges]]\nformat = \"plain\"\npath = \"lab.txt\"\ncloud = \"lab\"\n\
                    [[client_ranges]]\nformat = \"aws\"\npath = \"aws.json\"\nservices = [\"EC2\"]\n";
        let config = Config::parse_in("config.toml", text, &dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        let summary = Summary::new(&config).to_string();
        assert!(
            summary.ends_with(
                "client ranges: 3 prefixes, 3 labels (cloud and region pairs)\n\
                 \x20 client_ranges[0] plain lab.txt (cloud lab): 3 prefixes, 2 labels\n\
                 \x20 client_ranges[1] aws aws.json (services EC2): 1 prefix, 1 label\n"
            ),
            "{summary}"
        );
    }
}
