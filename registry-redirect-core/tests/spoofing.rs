//! Forwarding headers against `decide`. A peer that is not a trusted proxy
//! cannot change a decision with `Forwarded`, `X-Forwarded-For` or
//! `X-Real-IP`, whichever header the policy reads. A client behind a
//! trusted proxy cannot get around it through a header the proxy does not
//! write. A trusted proxy's chains are read as `docs/request-handling.md`
//! ("Client address") describes, including garbage entries, very long
//! chains, ports, IPv6 zone ids and IPv4 forms other than four decimal
//! octets.
//!
//! The PROXY protocol is not implemented, so nothing here covers it.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use registry_redirect_core::client::{resolve_client, ClientNote};
use registry_redirect_core::{
    decide, ClientSource, Decision, ForwardedHeader, Policy, PolicySpec, RequestView, RuleSpec,
    UpstreamSpec,
};

const TRUSTED_PROXY: &str = "10.0.0.1";

const HEADERS: [ForwardedHeader; 3] = [
    ForwardedHeader::XForwardedFor,
    ForwardedHeader::Forwarded,
    ForwardedHeader::XRealIp,
];

/// Builds a policy whose trusted proxies, 10.0.0.0/8 and fd00::/8, write
/// `header`.
fn policy_reading(header: ForwardedHeader) -> Policy {
    let mut spec = PolicySpec::new("k8s");
    spec.trusted_proxies = vec!["10.0.0.0/8".into(), "fd00::/8".into()];
    spec.forwarded_header = header;
    spec.upstreams
        .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
    spec.upstreams
        .insert("lab".into(), UpstreamSpec::new("https://lab.example"));
    spec.upstreams
        .insert("v6".into(), UpstreamSpec::new("https://v6.example"));
    spec.rules.push(RuleSpec {
        clients: vec!["192.168.0.0/24".into(), "127.0.0.0/8".into()],
        ..RuleSpec::new("lab", "lab")
    });
    spec.rules.push(RuleSpec {
        clients: vec!["fe80::/10".into(), "2001:db8::/32".into()],
        ..RuleSpec::new("v6", "v6")
    });
    Policy::compile(&spec).expect("the test policy compiles")
}

fn header_map(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for &(name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            HeaderValue::from_bytes(value).expect("a valid header value"),
        );
    }
    headers
}

fn decide_from<'p>(policy: &'p Policy, peer: &str, headers: &HeaderMap) -> Decision<'p> {
    let view = RequestView {
        method: &Method::GET,
        path: "/v2/app/manifests/1.0",
        query: None,
        host: Some("registry.example.test"),
        peer: Some(peer.parse().expect("a valid peer address")),
        headers,
        version: http::Version::HTTP_11,
    };
    decide(policy, &view)
}

/// Returns the parts of a decision that a forwarding header could change.
fn summary(
    decision: &Decision<'_>,
) -> (Option<String>, Option<String>, Option<IpAddr>, ClientSource) {
    let rule = decision
        .route()
        .and_then(|route| route.rule)
        .map(|rule| rule.name().to_owned());
    (
        decision.location().map(str::to_owned),
        rule,
        decision.client.addr,
        decision.client.source,
    )
}

/// Header sets a client might send to claim an address in a rule's range.
fn spoofing_header_sets() -> Vec<Vec<(&'static str, Vec<u8>)>> {
    let long_chain = vec!["192.168.0.20"; 5000].join(", ");
    vec![
        vec![("x-forwarded-for", b"192.168.0.20".to_vec())],
        vec![("x-forwarded-for", b"192.168.0.20, 10.0.0.1".to_vec())],
        vec![("x-forwarded-for", b"2001:db8::1".to_vec())],
        vec![("x-forwarded-for", b"[2001:db8::1]:443".to_vec())],
        vec![("x-forwarded-for", long_chain.into_bytes())],
        vec![
            ("x-forwarded-for", b"192.168.0.20".to_vec()),
            ("x-forwarded-for", b"10.0.0.2".to_vec()),
        ],
        vec![("forwarded", b"for=192.168.0.20".to_vec())],
        vec![(
            "forwarded",
            b"for=\"[2001:db8::1]:4711\";proto=https".to_vec(),
        )],
        vec![("forwarded", b"for=192.168.0.20, for=10.0.0.1".to_vec())],
        vec![("x-real-ip", b"192.168.0.20".to_vec())],
        vec![("x-real-ip", b"::ffff:192.168.0.20".to_vec())],
        vec![
            ("forwarded", b"for=192.168.0.20".to_vec()),
            ("x-forwarded-for", b"192.168.0.21".to_vec()),
            ("x-real-ip", b"192.168.0.22".to_vec()),
        ],
        vec![("x-forwarded-for", b"192.168.0.20\xff".to_vec())],
        vec![("x-forwarded-for", b"garbage, 192.168.0.20".to_vec())],
    ]
}

#[test]
fn untrusted_peer_headers_change_nothing() {
    for header in HEADERS {
        let policy = policy_reading(header);
        for peer in [
            "203.0.113.9",
            "2001:db9::7",
            "::ffff:203.0.113.9",
            "172.16.0.1",
        ] {
            let plain = decide_from(&policy, peer, &HeaderMap::new());
            assert_eq!(plain.client.source, ClientSource::Peer);
            for set in spoofing_header_sets() {
                let pairs: Vec<(&str, &[u8])> = set
                    .iter()
                    .map(|(name, value)| (*name, value.as_slice()))
                    .collect();
                let spoofed = decide_from(&policy, peer, &header_map(&pairs));
                let context = format!("reading {header:?}, peer {peer}, headers {set:?}");
                assert_eq!(summary(&spoofed), summary(&plain), "{context}");
                assert_eq!(spoofed.client.note, None, "{context}");
            }
        }
    }
}

#[test]
fn untrusted_peer_in_rule_range_keeps_rule() {
    // A client inside a rule's range cannot talk itself out of it either.
    for header in HEADERS {
        let policy = policy_reading(header);
        let plain = decide_from(&policy, "192.168.0.20", &HeaderMap::new());
        assert_eq!(summary(&plain).1.as_deref(), Some("lab"));
        for set in [
            vec![("x-forwarded-for", &b"203.0.113.9"[..])],
            vec![("forwarded", &b"for=203.0.113.9"[..])],
            vec![("x-real-ip", &b"203.0.113.9"[..])],
        ] {
            let spoofed = decide_from(&policy, "192.168.0.20", &header_map(&set));
            assert_eq!(
                summary(&spoofed),
                summary(&plain),
                "reading {header:?}, headers {set:?}"
            );
        }
    }
}

#[test]
fn unconfigured_headers_are_ignored() {
    // A proxy passes on the headers it does not write, so a client behind a
    // trusted proxy must not reach the decision through them.
    let claims = [
        ("x-forwarded-for", &b"192.168.0.20"[..]),
        ("forwarded", &b"for=192.168.0.20"[..]),
        ("x-real-ip", &b"192.168.0.20"[..]),
    ];
    for header in HEADERS {
        let policy = policy_reading(header);
        let plain = decide_from(&policy, TRUSTED_PROXY, &HeaderMap::new());
        for (name, value) in claims {
            if name == header.as_str() {
                continue;
            }
            let spoofed = decide_from(&policy, TRUSTED_PROXY, &header_map(&[(name, value)]));
            let context = format!("reading {header:?}, client sent {name}");
            assert_eq!(summary(&spoofed), summary(&plain), "{context}");
            assert_eq!(spoofed.client.note, None, "{context}");
        }
    }
}

#[test]
fn proxy_header_wins_over_client_headers() {
    // nginx with `proxy_add_x_forwarded_for`: the client's address is the
    // last X-Forwarded-For entry, and Forwarded came from the client.
    let policy = policy_reading(ForwardedHeader::XForwardedFor);
    let headers = header_map(&[
        ("forwarded", b"for=192.168.0.20"),
        ("x-forwarded-for", b"203.0.113.9"),
    ]);
    let decision = decide_from(&policy, TRUSTED_PROXY, &headers);
    assert_eq!(decision.client.addr, Some("203.0.113.9".parse().unwrap()));
    assert_eq!(summary(&decision).1, None);

    // nginx with `proxy_set_header X-Real-IP $remote_addr` only: the
    // client's X-Forwarded-For is passed on.
    let policy = policy_reading(ForwardedHeader::XRealIp);
    let headers = header_map(&[
        ("x-forwarded-for", b"192.168.0.20"),
        ("x-real-ip", b"203.0.113.9"),
    ]);
    let decision = decide_from(&policy, TRUSTED_PROXY, &headers);
    assert_eq!(decision.client.addr, Some("203.0.113.9".parse().unwrap()));
    assert_eq!(summary(&decision).1, None);
}

/// What a trusted proxy's header should yield: the address (`None` for
/// the peer) and whether the header counts as malformed. The policy reads
/// the case's header.
struct Case {
    header: &'static str,
    value: String,
    client: Option<&'static str>,
    malformed: bool,
}

fn case(header: &'static str, value: &str, client: Option<&'static str>, malformed: bool) -> Case {
    Case {
        header,
        value: value.to_owned(),
        client,
        malformed,
    }
}

fn check_cases(cases: &[Case]) {
    let peer: IpAddr = TRUSTED_PROXY.parse().unwrap();
    for case in cases {
        let header = HEADERS
            .into_iter()
            .find(|header| header.as_str() == case.header)
            .expect("a forwarding header name");
        let policy = policy_reading(header);
        let headers = header_map(&[(case.header, case.value.as_bytes())]);
        let client = resolve_client(Some(peer), &headers, policy.trusted_proxies());
        let expected: IpAddr = case.client.unwrap_or(TRUSTED_PROXY).parse().unwrap();
        let printable = if case.value.len() > 80 {
            format!("{}... ({} bytes)", &case.value[..80], case.value.len())
        } else {
            case.value.clone()
        };
        assert_eq!(client.addr, Some(expected), "{}: {printable}", case.header);
        let malformed = matches!(client.note, Some(ClientNote::MalformedHeader(_)));
        assert_eq!(
            malformed, case.malformed,
            "{}: {printable}: note {:?}",
            case.header, client.note
        );
    }
}

#[test]
fn trusted_chain_with_garbage_entries() {
    check_cases(&[
        case(
            "x-forwarded-for",
            "203.0.113.5, garbage, 10.0.0.9",
            Some("10.0.0.9"),
            true,
        ),
        case(
            "x-forwarded-for",
            "203.0.113.5, , 10.0.0.9",
            Some("10.0.0.9"),
            true,
        ),
        case("x-forwarded-for", "203.0.113.5,,", None, true),
        case(
            "x-forwarded-for",
            "garbage, 203.0.113.5",
            Some("203.0.113.5"),
            false,
        ),
        case("x-forwarded-for", "203.0.113.5 10.0.0.9", None, true),
        case("x-forwarded-for", "\"203.0.113.5\"", None, true),
        case("x-forwarded-for", "203.0.113.5;10.0.0.9", None, true),
        case("x-forwarded-for", "unknown", None, true),
        case(
            "x-forwarded-for",
            " \t203.0.113.5\t ",
            Some("203.0.113.5"),
            false,
        ),
        case(
            "forwarded",
            "for=203.0.113.5, for=garbage, for=10.0.0.9",
            Some("10.0.0.9"),
            true,
        ),
        case(
            "forwarded",
            "for=203.0.113.5;by=10.0.0.1, proto=https",
            None,
            true,
        ),
        case("forwarded", "for", None, true),
        case("forwarded", "for=\"203.0.113.5", None, true),
        case("forwarded", "for=203.0.113.5 x", None, true),
        case("forwarded", "FOR=203.0.113.5", Some("203.0.113.5"), false),
        case("x-real-ip", "203.0.113.5, 10.0.0.9", None, true),
        case("x-real-ip", "", None, true),
    ]);
}

#[test]
fn trusted_chain_with_thousands_of_entries() {
    let mut untrusted_first = vec!["203.0.113.1"; 10_000].join(",");
    untrusted_first.push_str(", 198.51.100.4");
    let mut trusted_hops = String::from("198.51.100.4");
    for hop in 0..10_000u32 {
        trusted_hops.push_str(&format!(
            ", 10.{}.{}.{}",
            hop >> 16 & 255,
            hop >> 8 & 255,
            hop & 255
        ));
    }
    let forwarded = vec!["for=10.0.0.7"; 5000].join(", ");
    let mut garbage_far = vec!["nonsense"; 5000].join(",");
    garbage_far.push_str(",198.51.100.4");
    check_cases(&[
        case(
            "x-forwarded-for",
            &untrusted_first,
            Some("198.51.100.4"),
            false,
        ),
        case(
            "x-forwarded-for",
            &trusted_hops,
            Some("198.51.100.4"),
            false,
        ),
        case("forwarded", &forwarded, Some("10.0.0.7"), false),
        case("x-forwarded-for", &garbage_far, Some("198.51.100.4"), false),
    ]);
}

#[test]
fn trusted_chain_with_ports() {
    check_cases(&[
        case(
            "x-forwarded-for",
            "203.0.113.5:4711",
            Some("203.0.113.5"),
            false,
        ),
        case(
            "x-forwarded-for",
            "[2001:db8::1]:4711",
            Some("2001:db8::1"),
            false,
        ),
        case(
            "x-forwarded-for",
            "[2001:db8::1]",
            Some("2001:db8::1"),
            false,
        ),
        case("x-forwarded-for", "203.0.113.5:", None, true),
        case("x-forwarded-for", "203.0.113.5:99999", None, true),
        case("x-forwarded-for", "[203.0.113.5]:80", None, true),
        case(
            "forwarded",
            "for=\"203.0.113.5:4711\"",
            Some("203.0.113.5"),
            false,
        ),
        case(
            "forwarded",
            "for=\"[2001:db8::17]:4711\"",
            Some("2001:db8::17"),
            false,
        ),
        case(
            "forwarded",
            "for=\"[2001:db8::17]\"",
            Some("2001:db8::17"),
            false,
        ),
        case("forwarded", "for=\"203.0.113.5:_port\"", None, true),
    ]);
}

#[test]
fn trusted_chain_with_ipv6_zone_ids() {
    check_cases(&[
        case("x-forwarded-for", "fe80::1%eth0", None, true),
        case("x-forwarded-for", "fe80::1%2", None, true),
        case("x-forwarded-for", "[fe80::1%eth0]:4711", None, true),
        case("x-forwarded-for", "[fe80::1%25eth0]", None, true),
        case("forwarded", "for=\"[fe80::1%25eth0]\"", None, true),
        case("forwarded", "for=\"[fe80::1%eth0]:4711\"", None, true),
        case("x-real-ip", "fe80::1%eth0", None, true),
        // Rust's `SocketAddr` parser accepts a numeric zone in brackets
        // with a port; the zone must not be dropped silently.
        case("x-forwarded-for", "[fe80::1%2]:4711", None, true),
        case("forwarded", "for=\"[fe80::1%2]:4711\"", None, true),
    ]);
}

#[test]
fn trusted_chain_with_obfuscated_ipv4() {
    let mut cases = Vec::new();
    for value in [
        "127.1",
        "0x7f.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "127.0.0.01",
        "127.000.000.001",
        "127.0.1",
        "1.2.3.4.5",
        "256.0.0.1",
        "127.0.0.1.",
        "\u{ff11}27.0.0.1",
    ] {
        cases.push(case("x-forwarded-for", value, None, true));
        cases.push(case("x-real-ip", value, None, true));
        cases.push(case("forwarded", &format!("for={value}"), None, true));
    }
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|case| HeaderValue::from_bytes(case.value.as_bytes()).is_ok())
        .collect();
    check_cases(&cases);
}

#[test]
fn trusted_chain_with_mapped_ipv6() {
    let policy = policy_reading(ForwardedHeader::XForwardedFor);
    let headers = header_map(&[("x-forwarded-for", b"::ffff:192.168.0.20")]);
    let decision = decide_from(&policy, TRUSTED_PROXY, &headers);
    assert_eq!(decision.client.addr, Some("192.168.0.20".parse().unwrap()));
    assert_eq!(summary(&decision).1.as_deref(), Some("lab"));
}

#[test]
fn repeated_x_real_ip_is_malformed() {
    // A proxy writes one X-Real-IP line, so a second one came from the
    // client, and neither can be believed.
    let policy = policy_reading(ForwardedHeader::XRealIp);
    let headers = header_map(&[
        ("x-real-ip", b"192.168.0.20"),
        ("x-real-ip", b"203.0.113.9"),
    ]);
    let client = resolve_client(
        Some(TRUSTED_PROXY.parse().unwrap()),
        &headers,
        policy.trusted_proxies(),
    );
    assert_eq!(client.addr, Some(TRUSTED_PROXY.parse().unwrap()));
    assert!(matches!(client.note, Some(ClientNote::MalformedHeader(_))));
}
