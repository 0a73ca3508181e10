//! Every target of `tests/data/hostile-targets.txt` through `decide`, as a
//! server would see it and as raw text.
//!
//! A server hands the core the path and query of an `http::Uri`, so each
//! target is parsed with `http::Uri` first, as hyper does. A target that
//! `http::Uri` rejects never reaches the core behind hyper, which answers
//! 400 itself; for those the test asserts the rejection. Every target that
//! is UTF-8 also goes to the core as raw text, split at the first `?`,
//! because the core must be safe for any `&str`, not only for what hyper
//! lets through.
//!
//! Each outcome must be a 400, 404 or 405 with an OCI error body, the 200 of the
//! API version check, "not a registry request", or a redirect whose
//! `Location` is an upstream's URL for the same repository, as
//! `common::verdict` checks it.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::{HeaderMap, Method, Request, Uri};
use registry_redirect_core::policy::{ClientLabel, UpstreamKind};
use registry_redirect_core::{
    decide, Decision, Policy, PolicySpec, RequestView, RuleSpec, UpstreamSpec,
};

use common::corpus::{targets, Target};
use common::verdict::{Judge, Verdict};

/// Peers that lead to different upstreams: no rule, the `lab` rule (Docker
/// Hub with `library/`), the blob store rule for a cloud region, and a
/// trusted proxy forwarding for no one.
const PEERS: [&str; 4] = ["203.0.113.9", "192.168.0.20", "198.51.100.7", "10.0.0.1"];

fn policy() -> Policy {
    let mut spec = PolicySpec::new("k8s");
    spec.trusted_proxies = vec!["10.0.0.0/8".into()];
    spec.upstreams
        .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
    spec.upstreams.insert(
        "hub".into(),
        UpstreamSpec {
            library_prefix: true,
            ..UpstreamSpec::new("https://registry-1.docker.io")
        },
    );
    spec.upstreams.insert(
        "prod".into(),
        UpstreamSpec {
            path_prefix: Some("k8s-artifacts-prod/images".into()),
            ..UpstreamSpec::new("https://mirror.example:8443/base")
        },
    );
    spec.upstreams.insert(
        "v6".into(),
        UpstreamSpec::new("http://[2001:db8::5]:5000/registry"),
    );
    spec.upstreams.insert(
        "buckets".into(),
        UpstreamSpec {
            kind: UpstreamKind::BlobStore,
            verify_blobs: true,
            ..UpstreamSpec::new("https://bucket-{region}.example")
        },
    );
    spec.rules.push(RuleSpec {
        clients: vec!["192.168.0.0/24".into()],
        ..RuleSpec::new("lab", "hub")
    });
    spec.rules.push(RuleSpec {
        clouds: vec!["aws".into()],
        ..RuleSpec::new("aws-blobs", "buckets")
    });
    spec.rules.push(RuleSpec {
        hosts: vec!["docker.io".into(), "*.docker.io".into()],
        ..RuleSpec::new("docker-hub", "hub")
    });
    spec.rules.push(RuleSpec {
        repositories: vec!["pause".into(), "kube*".into()],
        ..RuleSpec::new("prod-images", "prod")
    });
    spec.rules.push(RuleSpec {
        repositories: vec!["a".into()],
        ..RuleSpec::new("v6-images", "v6")
    });
    let labels = vec![ClientLabel::new(Some("aws"), Some("eu-west-1"))];
    let prefixes = [("198.51.100.0/24".parse().unwrap(), 0)];
    Policy::compile_with_labels(&spec, labels, &prefixes).expect("the test policy compiles")
}

struct Harness {
    policy: Policy,
    judge: Judge,
}

impl Harness {
    fn new() -> Self {
        let policy = policy();
        let judge = Judge::new(&policy);
        Harness { policy, judge }
    }

    /// Checks a decision, and parses a rejection's body as JSON on top of
    /// the shared structural check.
    fn judge(
        &self,
        decision: Decision<'_>,
        path: &str,
        query: Option<&str>,
    ) -> Result<Verdict, String> {
        let verdict = self.judge.judge(&decision, path, query)?;
        if verdict == Verdict::Rejected && !decision.is_head {
            let response = decision
                .into_response()
                .ok_or("a rejection without a response")?;
            let body: serde_json::Value = serde_json::from_str(response.body())
                .map_err(|error| format!("error body is not JSON: {error}"))?;
            if !body["errors"][0]["code"].is_string() {
                return Err(format!("no errors[0].code in {}", response.body()));
            }
        }
        Ok(verdict)
    }

    /// Runs a target as hyper would hand it over, from one peer.
    fn through_uri(&self, target: &Target, peer: IpAddr) -> Result<Verdict, String> {
        let Ok(uri) = Uri::try_from(target.bytes.as_slice()) else {
            return Ok(Verdict::UriRejected);
        };
        if target.has_raw_forbidden_byte() {
            return Err("http::Uri accepted a raw control byte, space or invalid UTF-8".to_owned());
        }
        let method = Method::from_bytes(target.method.as_bytes()).map_err(|e| e.to_string())?;
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "registry.example.test")
            .body(())
            .map_err(|error| format!("request does not build: {error}"))?;
        let view = RequestView::from_request(&request, Some(peer));
        let decision = decide(&self.policy, &view);
        self.judge(decision, view.path, view.query)
    }

    /// Runs a target's raw text, split at the first `?`, from one peer.
    fn raw(&self, target: &Target, peer: IpAddr) -> Result<Option<Verdict>, String> {
        let Ok(text) = std::str::from_utf8(&target.bytes) else {
            return Ok(None);
        };
        let method = Method::from_bytes(target.method.as_bytes()).map_err(|e| e.to_string())?;
        let (path, query) = match text.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (text, None),
        };
        let headers = HeaderMap::new();
        let view = RequestView {
            method: &method,
            path,
            query,
            host: Some("registry.example.test"),
            peer: Some(peer),
            headers: &headers,
            version: http::Version::HTTP_11,
        };
        let decision = decide(&self.policy, &view);
        self.judge(decision, path, query).map(Some)
    }
}

#[test]
fn corpus_has_every_class() {
    let targets = targets();
    assert!(targets.len() >= 200, "only {} targets", targets.len());
    let mut per_class: BTreeMap<&str, usize> = BTreeMap::new();
    for target in &targets {
        *per_class.entry(target.class.as_str()).or_default() += 1;
    }
    for class in [
        "baseline",
        "encoded-separators",
        "authority-injection",
        "dot-segments",
        "control-bytes-raw",
        "control-bytes-encoded",
        "invalid-utf8",
        "unicode-lookalikes",
        "absolute-form",
        "query-tricks",
        "header-injection",
        "methods",
        "grammar-edges",
        "long-targets",
    ] {
        assert!(
            per_class.get(class).is_some_and(|&count| count > 0),
            "no targets in class {class}"
        );
    }
    assert!(
        !per_class.contains_key("unclassified"),
        "targets before the first ## class line"
    );
}

#[test]
fn corpus_long_targets_are_long() {
    let longest = targets()
        .iter()
        .map(|target| target.bytes.len())
        .max()
        .unwrap_or(0);
    assert!(
        longest >= 64 * 1024,
        "the longest target has {longest} bytes"
    );
}

#[test]
fn raw_control_bytes_rejected_by_uri() {
    for target in targets() {
        if target.has_raw_forbidden_byte() {
            assert!(
                Uri::try_from(target.bytes.as_slice()).is_err(),
                "http::Uri accepts {}",
                target.display()
            );
        }
    }
}

#[test]
fn hostile_targets_through_uri() {
    let harness = Harness::new();
    let mut counts: BTreeMap<(String, Verdict), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for target in targets() {
        for peer in PEERS {
            match harness.through_uri(&target, peer.parse().unwrap()) {
                Ok(verdict) => *counts.entry((target.class.clone(), verdict)).or_default() += 1,
                Err(error) => failures.push(format!("{} from {peer}: {error}", target.display())),
            }
        }
    }
    print_counts("through http::Uri", &counts);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_targets_as_raw_text() {
    let harness = Harness::new();
    let mut counts: BTreeMap<(String, Verdict), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for target in targets() {
        for peer in PEERS {
            match harness.raw(&target, peer.parse().unwrap()) {
                Ok(Some(verdict)) => {
                    *counts.entry((target.class.clone(), verdict)).or_default() += 1
                }
                Ok(None) => {}
                Err(error) => failures.push(format!("{} from {peer}: {error}", target.display())),
            }
        }
    }
    print_counts("as raw text", &counts);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn baseline_targets_are_redirected() {
    let harness = Harness::new();
    for target in targets().iter().filter(|target| target.class == "baseline") {
        let verdict = harness.through_uri(target, PEERS[0].parse().unwrap());
        assert!(
            matches!(verdict, Ok(Verdict::Redirected | Verdict::Answered)),
            "{}: {verdict:?}",
            target.display()
        );
    }
}

/// Prints the verdicts per class; `cargo test -- --nocapture` shows them.
fn print_counts(title: &str, counts: &BTreeMap<(String, Verdict), usize>) {
    println!("hostile corpus {title} (targets x {} peers):", PEERS.len());
    let mut class = "";
    for ((name, verdict), count) in counts {
        if name != class {
            println!("  {name}");
            class = name;
        }
        println!("    {verdict:?}: {count}");
    }
}
