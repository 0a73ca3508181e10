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
            "1:1: unknown key \"listen_on\" (expected one of: listen, redirect_status, \
             trusted_proxies, default_upstream, upstreams, rules)",
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
             (expected a form like 192.0.2.0/24 or 2001:db8::/32)",
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
            "17:26: rules[1].clients[1]: \"10.0.0.300\" is not a CIDR or IP address (expected a form like 192.0.2.0/24 or 2001:db8::/32)",
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
fn cloud_and_region_rules_warn() {
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
             cloud, but no range files are loaded, so the rule never matches",
            "config.toml:16:11: warning: rules[0].regions: rule \"lab\" matches on the client's \
             region, but no range files are loaded, so the rule never matches",
        ]
    );
    assert!(Config::parse("config.toml", VALID)
        .unwrap()
        .warnings
        .is_empty());
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
        hub.api_version_check(),
        registry_redirect_core::ApiVersionCheck::Redirect
    );
    let rules = config.policy.rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].clients(), ["192.168.0.0/24".parse().unwrap()]);
    assert_eq!(config.policy.rule_upstream(&rules[0]).name(), "hub");
}

#[test]
fn example_config_compiles() {
    let text = include_str!("../../examples/registry-redirect.toml");
    let config = Config::parse("registry-redirect.toml", text).unwrap();
    assert!(!config.policy.rules().is_empty());
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
