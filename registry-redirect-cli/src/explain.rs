//! `explain`: decides one request offline and shows the decision with its
//! reasons, as text (the core's explanation) or as JSON.
//!
//! ```
//! use http::Method;
//! use registry_redirect_cli::config::Config;
//! use registry_redirect_cli::explain::{Explanation, RequestSpec};
//!
//! let config = Config::builtin().unwrap();
//! let request = RequestSpec::new(Method::GET, "/v2/nginx/manifests/latest", "192.168.0.7".parse().unwrap());
//! let explanation = Explanation::of(&config.policy, &request);
//! assert_eq!(explanation.decision, "resolve");
//! assert_eq!(
//!     explanation.upstream_url.as_deref(),
//!     Some("https://registry-1.docker.io/v2/library/nginx/manifests/latest")
//! );
//! assert_eq!(explanation.rule.as_deref(), Some("lan-to-docker-hub"));
//! ```

use std::net::IpAddr;

use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use registry_redirect_core::{decide, Decision, Outcome, Policy, RequestView};
use serde::Serialize;

/// The output format of `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lines of 'key: value', as the core explains a decision.
    #[default]
    Text,
    /// One JSON object with the fields decision, status, location,
    /// upstream_url, upstream, rule, rule_index, canary, candidates, kind, client,
    /// client_source, peer, cloud, region, error_code, message and note
    /// (null where they do not apply).
    Json,
}

/// A request to decide, as given on the command line.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// The request method.
    pub method: Method,
    /// The path, with `?query` when there is one.
    pub target: String,
    /// The address of the TCP peer. With trusted proxies and forwarding
    /// headers, the client address may differ.
    pub peer: IpAddr,
    /// The request headers.
    pub headers: HeaderMap,
    /// The host the client asked for. When `None`, the `Host` header is used.
    pub host: Option<String>,
}

impl RequestSpec {
    /// Creates a request with no headers and no host.
    pub fn new(method: Method, target: impl Into<String>, peer: IpAddr) -> Self {
        RequestSpec {
            method,
            target: target.into(),
            peer,
            headers: HeaderMap::new(),
            host: None,
        }
    }

    /// Builds the view the core decides on.
    pub fn view(&self) -> RequestView<'_> {
        let (path, query) = match self.target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (self.target.as_str(), None),
        };
        let host = self
            .host
            .as_deref()
            .or_else(|| self.headers.get(HOST).and_then(|value| value.to_str().ok()));
        RequestView {
            method: &self.method,
            path,
            query,
            host,
            peer: Some(self.peer),
            headers: &self.headers,
            version: http::Version::HTTP_11,
        }
    }
}

/// A decision as `explain --format json` prints it. Fields that do not
/// apply to the decision are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// `redirect`, `candidates`, `resolve`, `answer`, `reject` or
    /// `not_registry`.
    pub decision: &'static str,
    /// The response status; `null` for `not_registry`, and for `resolve`,
    /// whose status comes from the upstream.
    pub status: Option<u16>,
    /// The `Location` of a redirect, or of the first candidate.
    pub location: Option<String>,
    /// The URL that a `resolve` decision fetches from, with a token.
    pub upstream_url: Option<String>,
    /// The upstream chosen.
    pub upstream: Option<String>,
    /// The rule that chose the upstream; `null` when the default upstream
    /// serves or no upstream was chosen.
    pub rule: Option<String>,
    /// The rule's position in the policy, from 0.
    pub rule_index: Option<usize>,
    /// Whether the client is in the rule's canary share, so that
    /// `upstream` is the canary upstream.
    pub canary: bool,
    /// The places a server tries in order, for a `candidates` decision.
    pub candidates: Option<Vec<CandidateReport>>,
    /// The request kind, such as `manifest` or `blob`.
    pub kind: Option<&'static str>,
    /// The client address the rules were matched against.
    pub client: Option<IpAddr>,
    /// The source of the client address: `peer`, `forwarded`,
    /// `x-forwarded-for`, `x-real-ip` or `unknown`.
    pub client_source: &'static str,
    /// The TCP peer address given with `--client`.
    pub peer: IpAddr,
    /// The cloud of the client's address range, from loaded range files.
    pub cloud: Option<String>,
    /// The region of the client's address range, from loaded range files.
    pub region: Option<String>,
    /// The OCI error code of a rejection, such as `NAME_INVALID`.
    pub error_code: Option<&'static str>,
    /// The message of a rejection.
    pub message: Option<&'static str>,
    /// A remark on how the client address was found, such as a malformed
    /// forwarding header.
    pub note: Option<String>,
}

/// One candidate of a `candidates` decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CandidateReport {
    /// The upstream.
    pub upstream: String,
    /// The region of the upstream's mirror, or `null` for its base URL.
    pub region: Option<String>,
    /// The redirect target.
    pub location: String,
    /// Whether a server checks with `HEAD` that the blob exists there.
    pub verify: bool,
    /// Whether a server skips the upstream while its health probes fail.
    pub health_checked: bool,
}

impl Explanation {
    /// Decides `request` under `policy` and describes the decision.
    pub fn of(policy: &Policy, request: &RequestSpec) -> Self {
        let decision = decide(policy, &request.view());
        Explanation::from_decision(&decision, request.peer)
    }

    fn from_decision(decision: &Decision<'_>, peer: IpAddr) -> Self {
        let route = decision.route();
        let rule = route.and_then(|route| route.rule);
        let rejection = match &decision.outcome {
            Outcome::Reject(rejection) => Some(rejection),
            _ => None,
        };
        let candidates = matches!(decision.outcome, Outcome::Candidates { .. }).then(|| {
            decision
                .candidates()
                .iter()
                .map(|candidate| CandidateReport {
                    upstream: candidate.upstream.name().to_owned(),
                    region: candidate.region.map(str::to_owned),
                    location: candidate.location.clone(),
                    verify: candidate.verify,
                    health_checked: candidate.health_checked,
                })
                .collect()
        });
        Explanation {
            decision: decision.outcome_name(),
            status: decision.status().map(|status| status.as_u16()),
            location: decision.location().map(str::to_owned),
            upstream_url: decision.upstream_url().map(str::to_owned),
            upstream: route.map(|route| route.upstream.name().to_owned()),
            rule: rule.map(|rule| rule.name().to_owned()),
            rule_index: rule.map(|rule| rule.index()),
            canary: route.is_some_and(|route| route.canary),
            candidates,
            kind: decision.kind.map(|kind| kind.as_str()),
            client: decision.client.addr,
            client_source: decision.client.source.as_str(),
            peer,
            cloud: decision
                .label
                .and_then(|label| label.cloud())
                .map(str::to_owned),
            region: decision
                .label
                .and_then(|label| label.region())
                .map(str::to_owned),
            error_code: rejection.map(|rejection| rejection.code.as_str()),
            message: rejection.map(|rejection| rejection.message),
            note: decision.client.note.map(|note| note.to_string()),
        }
    }
}

/// Decides `request` under `policy` and renders the decision in `format`,
/// ending with a newline.
pub fn render(policy: &Policy, request: &RequestSpec, format: OutputFormat) -> String {
    let decision = decide(policy, &request.view());
    match format {
        OutputFormat::Text => format!("{decision}\n"),
        OutputFormat::Json => {
            let explanation = Explanation::from_decision(&decision, request.peer);
            // serde_json fails only on maps with non-string keys and on failing
            // Serialize impls, and this struct has neither.
            let mut json = serde_json::to_string_pretty(&explanation).unwrap_or_default();
            json.push('\n');
            json
        }
    }
}

/// A `--header` argument that is not `Name: value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderArgError {
    /// There is no `:`.
    #[error("\"{0}\" has no ':' (expected 'Name: value', such as 'X-Forwarded-For: 203.0.113.9')")]
    MissingColon(String),
    /// The name is not a valid HTTP header name.
    #[error("\"{0}\" is not a valid header name (expected a token such as X-Forwarded-For)")]
    InvalidName(String),
    /// The value has characters a header value cannot have.
    #[error("the value of header \"{0}\" has characters not allowed in a header value, such as a line break")]
    InvalidValue(String),
}

/// Parses a `Name: value` argument. Spaces around the value are removed.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), HeaderArgError> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| HeaderArgError::MissingColon(text.to_owned()))?;
    let name = name.trim();
    let header_name =
        HeaderName::try_from(name).map_err(|_| HeaderArgError::InvalidName(name.to_owned()))?;
    let header_value = HeaderValue::try_from(value.trim())
        .map_err(|_| HeaderArgError::InvalidValue(name.to_owned()))?;
    Ok((header_name, header_value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn explain(method: Method, target: &str, peer: &str) -> Explanation {
        let config = Config::builtin().unwrap();
        let request = RequestSpec::new(method, target, peer.parse().unwrap());
        Explanation::of(&config.policy, &request)
    }

    #[test]
    fn default_upstream_has_no_rule() {
        let explanation = explain(
            Method::GET,
            &format!("/v2/pause/blobs/{DIGEST}"),
            "203.0.113.5",
        );
        assert_eq!(explanation.decision, "redirect");
        assert_eq!(explanation.status, Some(307));
        assert_eq!(
            explanation.location.as_deref(),
            Some(format!("https://registry.k8s.io/v2/pause/blobs/{DIGEST}").as_str())
        );
        assert_eq!(explanation.upstream.as_deref(), Some("k8s"));
        assert_eq!(explanation.rule, None);
        assert_eq!(explanation.kind, Some("blob"));
        assert_eq!(explanation.client, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(explanation.client_source, "peer");
        assert_eq!(explanation.error_code, None);
    }

    #[test]
    fn query_is_kept_in_location() {
        let explanation = explain(
            Method::GET,
            "/v2/pause/manifests/3.10?ns=registry.k8s.io",
            "203.0.113.5",
        );
        assert_eq!(
            explanation.location.as_deref(),
            Some("https://registry.k8s.io/v2/pause/manifests/3.10?ns=registry.k8s.io")
        );
    }

    #[test]
    fn rejection_has_code_and_message() {
        let explanation = explain(Method::POST, "/v2/x/blobs/uploads/", "203.0.113.5");
        assert_eq!(explanation.decision, "reject");
        assert_eq!(explanation.status, Some(405));
        assert_eq!(explanation.error_code, Some("UNSUPPORTED"));
        assert!(explanation.message.unwrap().contains("read-only"));
        assert_eq!(explanation.upstream, None);
    }

    #[test]
    fn paths_outside_v2_are_not_registry() {
        let explanation = explain(Method::GET, "/healthz", "203.0.113.5");
        assert_eq!(explanation.decision, "not_registry");
        assert_eq!(explanation.status, None);
        assert_eq!(explanation.kind, None);
    }

    #[test]
    fn host_header_is_used_without_host_flag() {
        let text = "default_upstream = \"a\"\n\
                    [upstreams.a]\nurl = \"https://a.example\"\n\
                    [upstreams.b]\nurl = \"https://b.example\"\n\
                    [[rules]]\nname = \"docker\"\nhosts = [\"docker.io\"]\nupstream = \"b\"\n";
        let config = Config::parse("config.toml", text).unwrap();
        let mut request = RequestSpec::new(
            Method::GET,
            "/v2/x/tags/list",
            "203.0.113.5".parse().unwrap(),
        );
        let (name, value) = parse_header("Host: docker.io:443").unwrap();
        request.headers.insert(name, value);
        assert_eq!(
            Explanation::of(&config.policy, &request).rule.as_deref(),
            Some("docker")
        );

        request.host = Some("quay.io".to_owned());
        assert_eq!(Explanation::of(&config.policy, &request).rule, None);
    }

    #[test]
    fn candidates_are_listed_in_order() {
        let text = "default_upstream = \"k8s\"\n\
                    [upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n\
                    [upstreams.blobs]\nkind = \"blob_store\"\nurl = \"https://blobs.example\"\n\
                    verify_blobs = true\n\
                    [[rules]]\nname = \"blobs\"\nkinds = [\"blob\"]\nupstream = \"blobs\"\n";
        let config = Config::parse("config.toml", text).unwrap();
        let target = format!("/v2/pause/blobs/{DIGEST}");
        let request = RequestSpec::new(Method::GET, target, "203.0.113.5".parse().unwrap());
        let explanation = Explanation::of(&config.policy, &request);
        assert_eq!(explanation.decision, "candidates");
        let candidates = explanation.candidates.unwrap();
        assert_eq!(candidates.len(), 2);
        assert_eq!(candidates[0].upstream, "blobs");
        assert!(candidates[0].verify);
        assert_eq!(
            candidates[0].location,
            format!("https://blobs.example/containers/images/{DIGEST}")
        );
        assert_eq!(candidates[1].upstream, "k8s");
        assert!(!candidates[1].verify);
        assert_eq!(
            explanation.location.as_deref(),
            Some(candidates[0].location.as_str())
        );
    }

    #[test]
    fn resolve_shows_upstream_url() {
        let text = "default_upstream = \"k8s\"\n\
                    [upstreams.k8s]\nurl = \"https://registry.k8s.io\"\n\
                    [upstreams.hub]\nurl = \"https://registry-1.docker.io\"\n\
                    library_prefix = true\nauth = \"resolve\"\n\
                    [[rules]]\nname = \"lab\"\nclients = [\"192.168.0.0/24\"]\nupstream = \"hub\"\n";
        let config = Config::parse("config.toml", text).unwrap();
        let target = format!("/v2/nginx/manifests/{DIGEST}");
        let request = RequestSpec::new(Method::HEAD, target, "192.168.0.9".parse().unwrap());
        let explanation = Explanation::of(&config.policy, &request);
        assert_eq!(explanation.decision, "resolve");
        assert_eq!(explanation.status, None);
        assert_eq!(explanation.location, None);
        assert_eq!(
            explanation.upstream_url.as_deref(),
            Some(
                format!("https://registry-1.docker.io/v2/library/nginx/manifests/{DIGEST}")
                    .as_str()
            )
        );
        assert_eq!(explanation.upstream.as_deref(), Some("hub"));
    }

    #[test]
    fn json_has_every_field() {
        let config = Config::builtin().unwrap();
        let request = RequestSpec::new(Method::GET, "/v2/", "192.168.0.9".parse().unwrap());
        let json = render(&config.policy, &request, OutputFormat::Json);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        for field in [
            "decision",
            "status",
            "location",
            "upstream_url",
            "upstream",
            "rule",
            "rule_index",
            "canary",
            "candidates",
            "kind",
            "client",
            "client_source",
            "peer",
            "cloud",
            "region",
            "error_code",
            "message",
            "note",
        ] {
            assert!(value.get(field).is_some(), "{field} is missing from {json}");
        }
        assert_eq!(value["decision"], "answer");
        assert_eq!(value["upstream"], "hub");
        assert_eq!(value["rule_index"], 0);
        assert_eq!(value["error_code"], serde_json::Value::Null);
    }

    #[test]
    fn header_arguments_parse_or_say_why() {
        let (name, value) = parse_header("X-Forwarded-For:  203.0.113.9 ").unwrap();
        assert_eq!(name, "x-forwarded-for");
        assert_eq!(value, "203.0.113.9");
        let (_, value) = parse_header("Forwarded: for=\"[2001:db8::1]:443\"").unwrap();
        assert_eq!(value, "for=\"[2001:db8::1]:443\"");

        assert_eq!(
            parse_header("no colon"),
            Err(HeaderArgError::MissingColon("no colon".into()))
        );
        assert_eq!(
            parse_header("bad name: x"),
            Err(HeaderArgError::InvalidName("bad name".into()))
        );
        assert_eq!(
            parse_header("X-A: a\nb"),
            Err(HeaderArgError::InvalidValue("X-A".into()))
        );
    }
}
