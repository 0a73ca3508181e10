//! The OCI distribution path grammar: which endpoint a request path names.
//!
//! [`classify`] turns a request path into a [`RegistryPath`]: the endpoint
//! (manifest, blob, tag list, referrers, the API version check) with its
//! repository name and reference. It applies the grammar of the OCI
//! distribution specification (v1.1, "Pulling manifests", "Pulling blobs",
//! "Listing tags", "Listing referrers"):
//!
//! - a repository name is one or more components separated by `/`, each
//!   component matching `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, at most 255
//!   characters in all;
//! - a tag matches `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`;
//! - a digest is `algorithm:encoded`, the algorithm matching
//!   `[a-z0-9]+([+._-][a-z0-9]+)*` and the encoded part `[a-zA-Z0-9=_-]+`;
//!   `sha256` and `sha512` digests must be lowercase hex of 64 and 128
//!   characters.
//!
//! The path is checked as it arrives, without percent-decoding. No character
//! that could change where a redirect leads (`%`, `\`, control bytes, empty
//! or dot segments) is part of the grammar, so such paths are rejected rather
//! than normalized.
//!
//! ```
//! use registry_redirect_core::path::{classify, RegistryPath};
//!
//! let path = classify("/v2/library/nginx/manifests/1.27").unwrap();
//! assert_eq!(
//!     path,
//!     RegistryPath::Manifest { name: "library/nginx", reference: "1.27" }
//! );
//! assert!(classify("/v2/library%2Fnginx/manifests/1.27").is_err());
//! assert_eq!(classify("/index.html").unwrap(), RegistryPath::NotRegistry);
//! ```

use std::fmt;

/// Maximum length of a repository name, as enforced by the reference registry.
pub const MAX_NAME_LEN: usize = 255;
/// Maximum length of a tag, from the tag grammar.
pub const MAX_TAG_LEN: usize = 128;
/// Maximum length accepted for a digest. The longest registered algorithm
/// (`sha512`) needs 135 characters; the bound keeps unregistered algorithms
/// from carrying arbitrary amounts of text into a `Location`.
pub const MAX_DIGEST_LEN: usize = 256;

/// The endpoint a request path names, borrowing from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryPath<'a> {
    /// `/v2/` or `/v2`: the API version check clients send first.
    ApiVersionCheck,
    /// `/v2/_catalog`: the repository listing, which a redirector does not serve.
    Catalog,
    /// `/v2/<name>/manifests/<reference>`, where the reference is a tag or a digest.
    Manifest {
        /// The repository name.
        name: &'a str,
        /// A tag or a digest.
        reference: &'a str,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// The repository name.
        name: &'a str,
        /// The blob's digest.
        digest: &'a str,
    },
    /// `/v2/<name>/tags/list`.
    TagsList {
        /// The repository name.
        name: &'a str,
    },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers {
        /// The repository name.
        name: &'a str,
        /// The digest of the manifest whose referrers are listed.
        digest: &'a str,
    },
    /// `/v2/<name>/blobs/uploads/...`: the push endpoints, which a read-only
    /// redirector does not serve.
    BlobUpload {
        /// The repository name.
        name: &'a str,
    },
    /// A path outside `/v2`: not a registry request at all.
    NotRegistry,
}

impl<'a> RegistryPath<'a> {
    /// Returns the request kind that rules match on, for the endpoints a redirect serves.
    pub fn kind(&self) -> Option<RequestKind> {
        match self {
            RegistryPath::ApiVersionCheck => Some(RequestKind::ApiVersionCheck),
            RegistryPath::Manifest { .. } => Some(RequestKind::Manifest),
            RegistryPath::Blob { .. } => Some(RequestKind::Blob),
            RegistryPath::TagsList { .. } => Some(RequestKind::TagsList),
            RegistryPath::Referrers { .. } => Some(RequestKind::Referrers),
            RegistryPath::Catalog | RegistryPath::BlobUpload { .. } | RegistryPath::NotRegistry => {
                None
            }
        }
    }

    /// Returns the repository name, for the endpoints that have one.
    pub fn name(&self) -> Option<&'a str> {
        match *self {
            RegistryPath::Manifest { name, .. }
            | RegistryPath::Blob { name, .. }
            | RegistryPath::TagsList { name }
            | RegistryPath::Referrers { name, .. }
            | RegistryPath::BlobUpload { name } => Some(name),
            RegistryPath::ApiVersionCheck | RegistryPath::Catalog | RegistryPath::NotRegistry => {
                None
            }
        }
    }
}

/// The kind of a registry request that can be redirected. Rules match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum RequestKind {
    /// `/v2/`: the API version check.
    ApiVersionCheck,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest,
    /// `/v2/<name>/blobs/<digest>`.
    Blob,
    /// `/v2/<name>/tags/list`.
    TagsList,
    /// `/v2/<name>/referrers/<digest>`.
    Referrers,
}

impl RequestKind {
    /// Every kind, in declaration order.
    pub const ALL: [RequestKind; 5] = [
        RequestKind::ApiVersionCheck,
        RequestKind::Manifest,
        RequestKind::Blob,
        RequestKind::TagsList,
        RequestKind::Referrers,
    ];

    /// Returns the name used in configuration files and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::ApiVersionCheck => "api_version_check",
            RequestKind::Manifest => "manifest",
            RequestKind::Blob => "blob",
            RequestKind::TagsList => "tags_list",
            RequestKind::Referrers => "referrers",
        }
    }

    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RequestKind {
    type Err = UnknownRequestKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownRequestKind(s.to_owned()))
    }
}

/// Error for a request kind name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown request kind \"{0}\" (expected one of: api_version_check, manifest, blob, tags_list, referrers)")]
pub struct UnknownRequestKind(pub String);

/// The reason a `/v2` path is not a valid distribution API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The repository name breaks the name grammar.
    NameInvalid,
    /// The manifest reference is neither a valid tag nor a valid digest.
    ReferenceInvalid,
    /// The digest breaks the digest grammar.
    DigestInvalid,
    /// The path is under `/v2` but names no endpoint of the distribution API.
    UnknownEndpoint,
}

impl PathError {
    /// Returns what is wrong and what is expected, for error bodies and logs.
    pub fn message(self) -> &'static str {
        match self {
            PathError::NameInvalid => "invalid repository name: each component must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*, separated by single slashes, with no percent-encoding, at most 255 characters in all",
            PathError::ReferenceInvalid => "invalid manifest reference: expected a tag matching [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127} or a digest",
            PathError::DigestInvalid => "invalid digest: expected algorithm:encoded, such as sha256: followed by 64 lowercase hex characters",
            PathError::UnknownEndpoint => "not an endpoint of the OCI distribution API (expected /v2/<name>/manifests/<reference>, /v2/<name>/blobs/<digest>, /v2/<name>/tags/list or /v2/<name>/referrers/<digest>)",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PathError {}

/// Classifies a request path (without its query) by the distribution API grammar.
///
/// Returns [`RegistryPath::NotRegistry`] for paths outside `/v2`, and an error
/// for a `/v2` path whose name, reference or digest breaks the grammar.
pub fn classify(path: &str) -> Result<RegistryPath<'_>, PathError> {
    let rest = match path.strip_prefix("/v2") {
        Some(rest) => rest,
        None => return Ok(RegistryPath::NotRegistry),
    };
    if rest.is_empty() || rest == "/" {
        return Ok(RegistryPath::ApiVersionCheck);
    }
    let rest = match rest.strip_prefix('/') {
        Some(rest) => rest,
        // `/v2foo` is some other path, not the API.
        None => return Ok(RegistryPath::NotRegistry),
    };
    if rest == "_catalog" {
        return Ok(RegistryPath::Catalog);
    }

    // The endpoint is found from the right, because a repository name may
    // itself contain components such as `manifests` or `blobs`. Most
    // requests end in a sha256 digest, which is recognized by its shape
    // and checked once, without searching its 71 bytes for a `/`.
    let (head, last, last_is_digest) = match split_sha256_digest(rest) {
        Some((head, digest)) => (head, digest, true),
        None => {
            let (head, last) = split_at_last_slash(rest).ok_or(PathError::UnknownEndpoint)?;
            (head, last, false)
        }
    };
    let (name, endpoint) = split_at_last_slash(head).ok_or(PathError::UnknownEndpoint)?;
    match endpoint {
        "manifests" => {
            validate_name(name)?;
            if !last_is_digest {
                validate_reference(last)?;
            }
            Ok(RegistryPath::Manifest {
                name,
                reference: last,
            })
        }
        "blobs" => {
            validate_name(name)?;
            if last == "uploads" {
                return Ok(RegistryPath::BlobUpload { name });
            }
            if !last_is_digest {
                validate_digest(last)?;
            }
            Ok(RegistryPath::Blob { name, digest: last })
        }
        "tags" if last == "list" => {
            validate_name(name)?;
            Ok(RegistryPath::TagsList { name })
        }
        "referrers" => {
            validate_name(name)?;
            if !last_is_digest {
                validate_digest(last)?;
            }
            Ok(RegistryPath::Referrers { name, digest: last })
        }
        "uploads" => classify_upload_session(name),
        _ => Err(PathError::UnknownEndpoint),
    }
}

/// Classifies `/v2/<name>/blobs/uploads/<session>`, given everything before `/uploads`.
fn classify_upload_session(head: &str) -> Result<RegistryPath<'_>, PathError> {
    match split_at_last_slash(head) {
        Some((name, "blobs")) => {
            validate_name(name)?;
            Ok(RegistryPath::BlobUpload { name })
        }
        _ => Err(PathError::UnknownEndpoint),
    }
}

/// The length of a sha256 digest: `sha256:` and 64 hex characters.
const SHA256_DIGEST_LEN: usize = "sha256:".len() + 64;

/// Splits `text` before a valid sha256 digest that ends it after a `/`,
/// or returns `None` (for any other last part, or an invalid digest).
fn split_sha256_digest(text: &str) -> Option<(&str, &str)> {
    let slash = text.len().checked_sub(SHA256_DIGEST_LEN + 1)?;
    if text.as_bytes()[slash] != b'/' {
        return None;
    }
    let digest = text.get(slash + 1..)?;
    let encoded = digest.strip_prefix("sha256:")?;
    // Hex has no `/`, so this `/` is the last one.
    match is_lower_hex(encoded, 64) {
        true => Some((text.get(..slash)?, digest)),
        false => None,
    }
}

/// Splits `text` around its last `/`, as `rsplit_once('/')` does, with a
/// byte loop that costs less than `rsplit_once`'s searcher on the short
/// parts it is given.
fn split_at_last_slash(text: &str) -> Option<(&str, &str)> {
    let index = text.bytes().rposition(|byte| byte == b'/')?;
    // `/` is ASCII, so both sides start and end at character boundaries.
    Some((text.get(..index)?, text.get(index + 1..)?))
}

/// Checks a repository name against the distribution name grammar.
pub fn validate_name(name: &str) -> Result<(), PathError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(PathError::NameInvalid);
    }
    if is_simple_name(name.as_bytes()) {
        return Ok(());
    }
    for component in name.as_bytes().split(|&byte| byte == b'/') {
        if !is_name_component(component) {
            return Err(PathError::NameInvalid);
        }
    }
    Ok(())
}

/// The class of a byte in a repository name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameByte {
    Invalid,
    /// `[a-z0-9]`.
    Alphanumeric,
    /// `.`, `_`, `-` or `/`.
    Separator,
}

static NAME_BYTES: [NameByte; 256] = {
    let mut table = [NameByte::Invalid; 256];
    let mut index = 0;
    while index < table.len() {
        let byte = index as u8;
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() {
            table[index] = NameByte::Alphanumeric;
        } else if matches!(byte, b'.' | b'_' | b'-' | b'/') {
            table[index] = NameByte::Separator;
        }
        index += 1;
    }
    table
};

/// Returns whether `name` is lowercase letters and digits with single
/// separators (`.`, `_`, `-`, `/`) between them, which most names are.
/// Every such name matches the grammar. A `false` means that the full
/// check must decide. One table look-up per byte, without stopping early,
/// costs less than walking the components.
fn is_simple_name(name: &[u8]) -> bool {
    // Starting as if after a separator rejects a leading one.
    let (valid, after_separator) =
        name.iter()
            .fold((true, true), |(valid, after_separator), &byte| {
                let class = NAME_BYTES[usize::from(byte)];
                let separator = class == NameByte::Separator;
                let valid = valid & (class != NameByte::Invalid) & !(separator & after_separator);
                (valid, separator)
            });
    valid & !after_separator
}

/// Returns whether `component` matches `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_name_component(component: &[u8]) -> bool {
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // One run of `[a-z0-9]+`.
        let run_start = i;
        while i < component.len() && is_alnum(component[i]) {
            i += 1;
        }
        if i == run_start {
            return false;
        }
        if i == component.len() {
            return true;
        }

        // One separator: `.`, `_`, `__`, or `-+`.
        match component[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if component.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while component.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Checks a manifest reference: a tag, or a digest when it contains `:`.
pub fn validate_reference(reference: &str) -> Result<(), PathError> {
    if reference.contains(':') {
        return validate_digest(reference);
    }
    validate_tag(reference)
}

/// Checks a tag against `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), PathError> {
    let bytes = tag.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_');
    let rest_ok = bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if first_ok && rest_ok && bytes.len() <= MAX_TAG_LEN {
        Ok(())
    } else {
        Err(PathError::ReferenceInvalid)
    }
}

/// Checks a digest against the digest grammar, with the exact lengths and
/// lowercase hex that the registered `sha256` and `sha512` algorithms require.
pub fn validate_digest(digest: &str) -> Result<(), PathError> {
    // The registered algorithms first: almost every digest is sha256.
    if let Some(encoded) = digest.strip_prefix("sha256:") {
        return ok_if(is_lower_hex(encoded, 64), PathError::DigestInvalid);
    }
    if let Some(encoded) = digest.strip_prefix("sha512:") {
        return ok_if(is_lower_hex(encoded, 128), PathError::DigestInvalid);
    }

    if digest.len() > MAX_DIGEST_LEN {
        return Err(PathError::DigestInvalid);
    }
    let (algorithm, encoded) = digest.split_once(':').ok_or(PathError::DigestInvalid)?;
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    ok_if(
        is_digest_algorithm(algorithm.as_bytes()) && encoded_ok,
        PathError::DigestInvalid,
    )
}

fn ok_if(valid: bool, error: PathError) -> Result<(), PathError> {
    if valid {
        Ok(())
    } else {
        Err(error)
    }
}

/// Returns whether `algorithm` matches `[a-z0-9]+([+._-][a-z0-9]+)*`.
fn is_digest_algorithm(algorithm: &[u8]) -> bool {
    let is_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    algorithm
        .split(|b| matches!(b, b'+' | b'.' | b'_' | b'-'))
        .all(|part| !part.is_empty() && part.iter().all(is_alnum))
}

/// Returns whether `text` is `len` lowercase hex characters. It checks
/// every byte without stopping early, which lets the compiler vectorize the
/// loop: about ten times faster on a 64-character digest than an early exit.
fn is_lower_hex(text: &str, len: usize) -> bool {
    let all_hex = text.bytes().fold(true, |valid, b| {
        valid & (b.is_ascii_digit() | (b'a'..=b'f').contains(&b))
    });
    text.len() == len && all_hex
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn api_version_check_paths() {
        assert_eq!(classify("/v2/"), Ok(RegistryPath::ApiVersionCheck));
        assert_eq!(classify("/v2"), Ok(RegistryPath::ApiVersionCheck));
    }

    #[test]
    fn paths_outside_v2_are_not_registry() {
        for path in ["/", "/index.html", "/v2foo", "/v1/_ping", "", "/V2/"] {
            assert_eq!(classify(path), Ok(RegistryPath::NotRegistry), "{path:?}");
        }
    }

    #[test]
    fn catalog_path() {
        assert_eq!(classify("/v2/_catalog"), Ok(RegistryPath::Catalog));
    }

    #[test]
    fn endpoints_with_names_of_any_depth() {
        assert_eq!(
            classify("/v2/nginx/manifests/latest"),
            Ok(RegistryPath::Manifest {
                name: "nginx",
                reference: "latest"
            })
        );
        assert_eq!(
            classify("/v2/a/b/c/d/manifests/v1.0"),
            Ok(RegistryPath::Manifest {
                name: "a/b/c/d",
                reference: "v1.0"
            })
        );
        assert_eq!(
            classify(&format!("/v2/library/nginx/blobs/{SHA}")),
            Ok(RegistryPath::Blob {
                name: "library/nginx",
                digest: SHA
            })
        );
        assert_eq!(
            classify("/v2/k8s/pause/tags/list"),
            Ok(RegistryPath::TagsList { name: "k8s/pause" })
        );
        assert_eq!(
            classify(&format!("/v2/app/referrers/{SHA}")),
            Ok(RegistryPath::Referrers {
                name: "app",
                digest: SHA
            })
        );
    }

    #[test]
    fn manifest_by_digest() {
        assert_eq!(
            classify(&format!("/v2/app/manifests/{SHA}")),
            Ok(RegistryPath::Manifest {
                name: "app",
                reference: SHA
            })
        );
    }

    #[test]
    fn endpoint_words_inside_names() {
        assert_eq!(
            classify("/v2/blobs/manifests/manifests/latest"),
            Ok(RegistryPath::Manifest {
                name: "blobs/manifests",
                reference: "latest"
            })
        );
        assert_eq!(
            classify("/v2/tags/tags/list"),
            Ok(RegistryPath::TagsList { name: "tags" })
        );
    }

    #[test]
    fn upload_paths() {
        assert_eq!(
            classify("/v2/app/blobs/uploads/"),
            Ok(RegistryPath::BlobUpload { name: "app" })
        );
        assert_eq!(
            classify("/v2/app/blobs/uploads"),
            Ok(RegistryPath::BlobUpload { name: "app" })
        );
        assert_eq!(
            classify("/v2/a/b/blobs/uploads/3f2a-77"),
            Ok(RegistryPath::BlobUpload { name: "a/b" })
        );
    }

    #[test]
    fn name_grammar_separators() {
        for name in [
            "a",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a0.b1_c2__d3-e4",
            "9",
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name:?}");
        }
        for name in [
            "", "A", "a..b", "a___b", ".a", "a.", "-a", "a-", "_a", "a_", "a/", "/a", "a//b",
            "a/./b", "a/../b", "..", ".", "a%2Fb", "a\\b", "a b", "a\0b", "a\nb", "ä",
        ] {
            assert_eq!(validate_name(name), Err(PathError::NameInvalid), "{name:?}");
        }
    }

    /// Every name of up to five bytes, from an alphabet of letters, digits,
    /// separators and invalid bytes, that the simple check accepts also
    /// matches the components' grammar.
    #[test]
    fn simple_names_match_the_grammar() {
        let alphabet = [b'a', b'0', b'.', b'_', b'-', b'/', b'A', b'%'];
        let mut names: Vec<Vec<u8>> = vec![Vec::new()];
        let mut checked = 0;
        for _ in 0..5 {
            let longer: Vec<Vec<u8>> = names
                .iter()
                .flat_map(|name| {
                    alphabet.iter().map(move |&byte| {
                        let mut name = name.clone();
                        name.push(byte);
                        name
                    })
                })
                .collect();
            for name in &longer {
                let grammar = name.split(|&byte| byte == b'/').all(is_name_component);
                if is_simple_name(name) {
                    assert!(grammar, "{:?}", String::from_utf8_lossy(name));
                    checked += 1;
                }
            }
            names = longer;
        }
        assert!(checked > 400, "only {checked} simple names");
    }

    #[test]
    fn name_length_limit() {
        let ok = "a".repeat(MAX_NAME_LEN);
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(validate_name(&ok), Ok(()));
        assert_eq!(validate_name(&long), Err(PathError::NameInvalid));
    }

    #[test]
    fn tag_grammar() {
        for tag in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert_eq!(validate_reference(tag), Ok(()), "{tag:?}");
        }
        for tag in ["", ".x", "-x", "a/b", "a%2e", "a+b", &"t".repeat(129)] {
            assert_eq!(
                validate_reference(tag),
                Err(PathError::ReferenceInvalid),
                "{tag:?}"
            );
        }
    }

    #[test]
    fn digest_grammar() {
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        for digest in [
            SHA,
            &sha512,
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
            "b3:a-b_c=",
        ] {
            assert_eq!(validate_digest(digest), Ok(()), "{digest:?}");
        }
        let upper = SHA.to_uppercase().replace("SHA256", "sha256");
        let short = &SHA[..SHA.len() - 1];
        for digest in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            &upper,
            short,
            "SHA256:abc",
            "sha256:../../x",
            "sha256:%2e",
            "a..b:x",
            "a:b/c",
        ] {
            assert_eq!(
                validate_digest(digest),
                Err(PathError::DigestInvalid),
                "{digest:?}"
            );
        }
    }

    #[test]
    fn hostile_paths_are_rejected() {
        for path in [
            "/v2//evil.example/manifests/latest",
            "/v2/%2e%2e/manifests/latest",
            "/v2/a%2Fb/manifests/latest",
            "/v2/a/../b/manifests/latest",
            "/v2/a/./b/manifests/latest",
            "/v2/\\evil/manifests/latest",
            "/v2/a/manifests/latest%0d%0aX:1",
            "/v2/a/manifests/../../x",
            "/v2/a/manifests/",
            "/v2/a/blobs/",
            "/v2/a/tags/other",
            "/v2/a",
            "/v2/a/",
            "/v2/_catalog/x",
            "/v2/a/unknown/x",
        ] {
            assert!(classify(path).is_err(), "{path:?}");
        }
    }

    #[test]
    fn split_at_last_slash_matches_rsplit_once() {
        let long = format!("a/{}", "b".repeat(40));
        let cases = [
            "",
            "/",
            "a",
            "a/b",
            "a/b/",
            "/a",
            "0123456789abcdef/0123456789abcdef",
            "0123456789abcde/0123456789abcdef",
            "0123456789abcdef0123456789abcdef",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}/\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            long.as_str(),
        ];
        for text in cases {
            assert_eq!(split_at_last_slash(text), text.rsplit_once('/'), "{text:?}");
        }
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in RequestKind::ALL {
            assert_eq!(kind.as_str().parse::<RequestKind>(), Ok(kind));
        }
        assert!("manifests".parse::<RequestKind>().is_err());
    }
}
