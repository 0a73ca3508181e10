//! An oracle for redirect locations: given a compiled policy, it rebuilds
//! the `Location` that each upstream would give a request and checks that
//! a decision's `Location` is one of them.
//!
//! It depends on the core and `std` only, so the tower and CLI tests and
//! the fuzz targets include this file with `#[path]`. It reads the policy
//! through its public accessors and rebuilds the path by the rules in
//! `docs/request-handling.md`. A registry `Location` is the upstream base,
//! `/v2/`, `path_prefix`, `library/` for one-component names when
//! `library_prefix` is set, the name and the endpoint. The query follows,
//! with every byte outside RFC 3986's query characters percent-encoded.

// Each test crate that includes this file uses a different part of it.
#![allow(dead_code)]

use registry_redirect_core::path::RegistryPath;
use registry_redirect_core::policy::UpstreamKind;
use registry_redirect_core::Policy;

/// One start of a `Location`: an upstream's region-less base or one of its
/// regional bases.
#[derive(Debug, Clone)]
pub struct Base {
    /// `scheme://authority/base-path/v2/` for a registry,
    /// `scheme://authority/base-path` for a blob store.
    pub text: String,
    /// The upstream's name.
    pub upstream: String,
    /// What the upstream serves.
    pub kind: UpstreamKind,
    /// The upstream's `path_prefix` with a trailing `/`, or empty.
    pub path_prefix: String,
    /// Whether one-component names get `library/` in front.
    pub library_prefix: bool,
}

/// Every base of every upstream of a policy.
#[derive(Debug, Clone)]
pub struct LocationOracle {
    bases: Vec<Base>,
}

impl LocationOracle {
    /// Collects the bases of every upstream of `policy`.
    pub fn new(policy: &Policy) -> Self {
        let mut bases = Vec::new();
        for upstream in policy.upstreams() {
            let mut texts: Vec<String> = upstream.base().map(str::to_owned).into_iter().collect();
            for region in upstream.regions() {
                if let Some(base) = upstream.regional_base(region) {
                    texts.push(base.to_owned());
                }
            }
            for text in texts {
                bases.push(Base {
                    text,
                    upstream: upstream.name().to_owned(),
                    kind: upstream.kind(),
                    path_prefix: upstream.path_prefix().to_owned(),
                    library_prefix: upstream.library_prefix(),
                });
            }
        }
        LocationOracle { bases }
    }

    /// Returns every base, in upstream name order.
    pub fn bases(&self) -> &[Base] {
        &self.bases
    }

    /// Checks that `location` is where some upstream of the policy sends
    /// the request for `path` with `query`. Returns the base it starts
    /// with, or what is wrong.
    pub fn check(
        &self,
        location: &str,
        path: &RegistryPath<'_>,
        query: Option<&str>,
    ) -> Result<&Base, String> {
        let mut mismatches = Vec::new();
        for base in &self.bases {
            if !location.starts_with(&base.text) {
                continue;
            }
            match check_against_base(base, location, path, query) {
                Ok(()) => return Ok(base),
                Err(reason) => mismatches.push(format!("upstream {}: {reason}", base.upstream)),
            }
        }
        if mismatches.is_empty() {
            let known: Vec<&str> = self.bases.iter().map(|base| base.text.as_str()).collect();
            return Err(format!(
                "Location {location:?} starts with no upstream base (bases: {known:?})"
            ));
        }
        Err(format!(
            "Location {location:?} for {path:?}: {}",
            mismatches.join("; ")
        ))
    }
}

fn check_against_base(
    base: &Base,
    location: &str,
    path: &RegistryPath<'_>,
    query: Option<&str>,
) -> Result<(), String> {
    let (location_path, location_query) = match location.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (location, None),
    };
    match base.kind {
        UpstreamKind::Registry => {
            let rest = registry_rest(base, path)?;
            check_path_characters(&rest)?;
            let expected = format!("{}{rest}", base.text);
            if location_path != expected {
                return Err(format!("expected path {expected:?}"));
            }
            check_query(location_query, query)
        }
        UpstreamKind::BlobStore => {
            let RegistryPath::Blob { digest, .. } = *path else {
                return Err("a blob store got a request that is not a blob".to_owned());
            };
            let rest = &location_path[base.text.len()..];
            if location_query.is_some() {
                return Err("a blob store Location carries a query".to_owned());
            }
            if !rest.starts_with('/') || !rest.contains(digest) {
                return Err(format!("expected /...{digest}... after the base"));
            }
            if !rest.bytes().all(is_blob_path_byte) || rest.contains("//") {
                return Err(format!(
                    "blob path {rest:?} has characters outside the blob_path set"
                ));
            }
            Ok(())
        }
    }
}

/// Returns what follows `/v2/` for a registry upstream.
fn registry_rest(base: &Base, path: &RegistryPath<'_>) -> Result<String, String> {
    let name = |name: &str| {
        let library = if base.library_prefix && !name.contains('/') {
            "library/"
        } else {
            ""
        };
        format!("{}{library}{name}", base.path_prefix)
    };
    Ok(match *path {
        RegistryPath::ApiVersionCheck => String::new(),
        RegistryPath::Manifest {
            name: repository,
            reference,
        } => format!("{}/manifests/{reference}", name(repository)),
        RegistryPath::Blob {
            name: repository,
            digest,
        } => format!("{}/blobs/{digest}", name(repository)),
        RegistryPath::TagsList { name: repository } => format!("{}/tags/list", name(repository)),
        RegistryPath::Referrers {
            name: repository,
            digest,
        } => format!("{}/referrers/{digest}", name(repository)),
        other => return Err(format!("{other:?} must never be redirected")),
    })
}

/// Checks what follows `/v2/` without trusting the core's path grammar: only
/// the characters that names, tags and digests use, and no empty, `.` or
/// `..` segment, so no encoding, backslash or dot segment can reach a
/// `Location`.
fn check_path_characters(rest: &str) -> Result<(), String> {
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || b"._-:=+/".contains(&byte);
    if let Some(byte) = rest.bytes().find(|&byte| !allowed(byte)) {
        return Err(format!(
            "path {rest:?} has byte {byte:#04x}, which no name, tag or digest contains"
        ));
    }
    if !rest.is_empty()
        && rest
            .split('/')
            .any(|segment| matches!(segment, "" | "." | ".."))
    {
        return Err(format!("path {rest:?} has an empty, . or .. segment"));
    }
    Ok(())
}

fn check_query(location_query: Option<&str>, query: Option<&str>) -> Result<(), String> {
    let query = query.filter(|query| !query.is_empty());
    match (location_query, query) {
        (None, None) => Ok(()),
        (Some(written), Some(requested)) => {
            let bytes = written.as_bytes();
            for (at, &byte) in bytes.iter().enumerate() {
                let escape = byte == b'%'
                    && bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit);
                if !escape && !is_query_byte(byte) {
                    return Err(format!(
                        "query {written:?} has byte {byte:#04x}, which RFC 3986 does not allow there"
                    ));
                }
            }
            if percent_decode(written.as_bytes()) != percent_decode(requested.as_bytes()) {
                return Err(format!(
                    "query {written:?} does not decode to the request's {requested:?}"
                ));
            }
            Ok(())
        }
        (Some(written), None) => Err(format!("query {written:?} appeared from nowhere")),
        (None, Some(requested)) => Err(format!("query {requested:?} was dropped")),
    }
}

/// Returns whether a byte may appear unescaped in an RFC 3986 query.
pub fn is_query_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&byte)
}

/// Returns whether a byte may come from a blob path (`[A-Za-z0-9/._~:@-]`)
/// or a digest (`[A-Za-z0-9:+._=-]`).
fn is_blob_path_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"/-._~:@=+".contains(&byte)
}

/// Decodes every valid `%HH` escape and keeps every other byte, a lone `%`
/// included.
pub fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |byte: u8| (byte as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escape = match (bytes.get(at + 1), bytes.get(at + 2)) {
            (Some(&high), Some(&low)) if bytes[at] == b'%' => {
                hex(high).zip(hex(low)).map(|(h, l)| (h * 16 + l) as u8)
            }
            _ => None,
        };
        match escape {
            Some(byte) => {
                out.push(byte);
                at += 3;
            }
            None => {
                out.push(bytes[at]);
                at += 1;
            }
        }
    }
    out
}
