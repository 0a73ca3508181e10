//! Resolve mode: the settings of an upstream whose requests a server sends
//! itself, with a bearer token, instead of redirecting the client.
//!
//! Docker Hub and most private registries require a token even for
//! anonymous pulls. Clients built on Go's HTTP client (skopeo, podman,
//! cri-o) drop `Authorization` when a redirect leads to another host, so a
//! plain redirect to such an upstream fails for them. With
//! `auth = "resolve"` a server responds to `GET /v2/` itself, fetches manifests,
//! tag lists and referrers from the upstream with a token it gets itself,
//! and sends blob requests to the storage URL that the upstream redirects
//! to. The core only carries these settings: the tower crate does the
//! fetching.

use std::fmt;
use std::time::Duration;

use super::spec::{
    ApiVersionCheck, FieldPath, PolicyError, PolicyErrorKind, UpstreamKind, UpstreamSpec,
};

/// How long a server caches documents fetched by tag when the policy names
/// no `tag_ttl_seconds`.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(30);

/// The access mode of an upstream: redirects, or fetches with a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum UpstreamAuth {
    /// Redirect the client, which authenticates at the upstream itself if
    /// it must.
    #[default]
    None,
    /// Fetch documents and blob locations from the upstream with a bearer
    /// token that the server gets, and respond to the client from them.
    Resolve,
}

impl UpstreamAuth {
    /// Returns the name used in configuration files: `none` or `resolve`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamAuth::None => "none",
            UpstreamAuth::Resolve => "resolve",
        }
    }
}

/// A password, whose `Debug` and `Display` forms hide the value so that it
/// cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }

    /// Returns the password itself, for the `Authorization` header of a
    /// token request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The credentials of a resolve-mode upstream as the user wrote them:
/// a user name and where the password is. A configuration loader reads
/// the password from `password_file` or `password_env` and stores it in
/// `password` before the policy is compiled; the core reads no files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct CredentialsSpec {
    /// The user name sent to the token endpoint with HTTP Basic
    /// authentication.
    pub username: String,
    /// A file whose contents, without a trailing newline, are the password.
    #[cfg_attr(feature = "serde", serde(default))]
    pub password_file: Option<String>,
    /// An environment variable whose value is the password.
    #[cfg_attr(feature = "serde", serde(default))]
    pub password_env: Option<String>,
    /// The password, once loaded from `password_file` or `password_env`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub password: Option<Password>,
}

/// The user name and password a server sends to a resolve-mode upstream's
/// token endpoint. `Debug` hides the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Password,
}

/// The compiled resolve-mode settings of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveSettings {
    /// Whether a server streams blobs that the upstream serves itself
    /// (status 200) through to the client, instead of rejecting them.
    pub blob_proxy: bool,
    /// How long documents fetched by tag stay cached; zero turns caching
    /// of them off. Documents fetched by digest stay cached until evicted.
    pub tag_ttl: Duration,
    /// The credentials for the token endpoint, or `None` for anonymous
    /// tokens.
    pub credentials: Option<Credentials>,
}

/// The largest `tag_ttl_seconds`: one day. Tags move, so a longer time
/// would serve stale manifests for longer than any registry expects.
pub const MAX_TAG_TTL_SECONDS: u64 = 86_400;

/// Checks the resolve-mode keys of an upstream and compiles them: `None`
/// for `auth = "none"` or when an error was pushed.
pub(crate) fn compile_resolve(
    name: &str,
    spec: &UpstreamSpec,
    location: &FieldPath,
    errors: &mut Vec<PolicyError>,
) -> Option<ResolveSettings> {
    let error_count = errors.len();
    let mut reject = |field: &'static str, reason: String| {
        errors.push(PolicyError {
            location: field
                .split('.')
                .fold(location.clone(), |path, key| path.key(key)),
            kind: PolicyErrorKind::InvalidResolveUpstream {
                upstream: name.to_owned(),
                field,
                reason,
            },
        });
    };

    if spec.auth == UpstreamAuth::None {
        let only_resolve =
            "applies only to auth = \"resolve\"; remove it or set auth = \"resolve\"";
        if spec.blob_proxy {
            reject("blob_proxy", only_resolve.to_owned());
        }
        if spec.tag_ttl_seconds.is_some() {
            reject("tag_ttl_seconds", only_resolve.to_owned());
        }
        if spec.credentials.is_some() {
            reject("credentials", only_resolve.to_owned());
        }
        return None;
    }

    if spec.kind == UpstreamKind::BlobStore {
        reject(
            "auth",
            "auth = \"resolve\" applies only to kind = \"registry\", because a blob store \
             has no token authentication"
                .to_owned(),
        );
    }
    if spec.url.contains("{region}") || !spec.region_urls.is_empty() {
        reject(
            "auth",
            "regional mirrors ({region} in url, region_urls) are not supported with auth = \
             \"resolve\"; define each mirror as its own upstream and choose it with a rule"
                .to_owned(),
        );
    }
    if spec.verify_blobs {
        reject(
            "verify_blobs",
            "does not apply with auth = \"resolve\", because the server asks the upstream for \
             every blob itself; remove it"
                .to_owned(),
        );
    }
    if spec.api_version_check == ApiVersionCheck::Redirect {
        reject(
            "api_version_check",
            "with auth = \"resolve\" the server answers GET /v2/ itself, so \"redirect\" \
             cannot apply; remove it"
                .to_owned(),
        );
    }
    let tag_ttl_seconds = spec.tag_ttl_seconds.unwrap_or(DEFAULT_TAG_TTL.as_secs());
    if tag_ttl_seconds > MAX_TAG_TTL_SECONDS {
        reject(
            "tag_ttl_seconds",
            format!("{tag_ttl_seconds} is too large (expected 0 to {MAX_TAG_TTL_SECONDS})"),
        );
    }
    let credentials = match &spec.credentials {
        None => None,
        Some(credentials) => {
            if credentials.username.is_empty() {
                reject(
                    "credentials.username",
                    "the user name is empty (expected the account name for the token endpoint)"
                        .to_owned(),
                );
            }
            match &credentials.password {
                Some(password) => Some(Credentials {
                    username: credentials.username.clone(),
                    password: password.clone(),
                }),
                None => {
                    reject(
                        "credentials",
                        "no password is loaded (the configuration loader reads password_file \
                         or password_env into the password before the policy is compiled)"
                            .to_owned(),
                    );
                    None
                }
            }
        }
    };

    if errors.len() > error_count {
        return None;
    }
    Some(ResolveSettings {
        blob_proxy: spec.blob_proxy,
        tag_ttl: Duration::from_secs(tag_ttl_seconds),
        credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_spec() -> UpstreamSpec {
        UpstreamSpec {
            auth: UpstreamAuth::Resolve,
            ..UpstreamSpec::new("https://registry-1.docker.io")
        }
    }

    fn compile(spec: &UpstreamSpec) -> (Option<ResolveSettings>, Vec<String>) {
        let mut errors = Vec::new();
        let settings = compile_resolve(
            "hub",
            spec,
            &FieldPath::root("upstreams").key("hub"),
            &mut errors,
        );
        let locations = errors
            .iter()
            .map(|error| error.location.to_string())
            .collect();
        (settings, locations)
    }

    #[test]
    fn resolve_defaults() {
        let (settings, errors) = compile(&resolve_spec());
        assert_eq!(errors, Vec::<String>::new());
        let settings = settings.unwrap();
        assert_eq!(settings.tag_ttl, DEFAULT_TAG_TTL);
        assert!(!settings.blob_proxy);
        assert_eq!(settings.credentials, None);
    }

    #[test]
    fn resolve_keys_without_resolve_rejected() {
        let spec = UpstreamSpec {
            blob_proxy: true,
            tag_ttl_seconds: Some(5),
            credentials: Some(CredentialsSpec {
                username: "puller".into(),
                password_file: None,
                password_env: Some("HUB_PASSWORD".into()),
                password: Some(Password::new("secret")),
            }),
            ..UpstreamSpec::new("https://registry-1.docker.io")
        };
        let (settings, errors) = compile(&spec);
        assert_eq!(settings, None);
        assert_eq!(
            errors,
            [
                "upstreams.hub.blob_proxy",
                "upstreams.hub.tag_ttl_seconds",
                "upstreams.hub.credentials"
            ]
        );
    }

    #[test]
    fn conflicting_settings_rejected() {
        let cases = [
            (
                UpstreamSpec {
                    kind: UpstreamKind::BlobStore,
                    ..resolve_spec()
                },
                "upstreams.hub.auth",
            ),
            (
                UpstreamSpec {
                    url: "https://{region}.mirror.example".into(),
                    ..resolve_spec()
                },
                "upstreams.hub.auth",
            ),
            (
                UpstreamSpec {
                    verify_blobs: true,
                    ..resolve_spec()
                },
                "upstreams.hub.verify_blobs",
            ),
            (
                UpstreamSpec {
                    api_version_check: ApiVersionCheck::Redirect,
                    ..resolve_spec()
                },
                "upstreams.hub.api_version_check",
            ),
            (
                UpstreamSpec {
                    tag_ttl_seconds: Some(MAX_TAG_TTL_SECONDS + 1),
                    ..resolve_spec()
                },
                "upstreams.hub.tag_ttl_seconds",
            ),
        ];
        for (spec, location) in cases {
            let (settings, errors) = compile(&spec);
            assert_eq!(settings, None, "{location}");
            assert_eq!(errors, [location]);
        }
    }

    #[test]
    fn credentials_need_loaded_password() {
        let mut credentials = CredentialsSpec {
            username: "puller".into(),
            password_file: Some("/run/secrets/hub".into()),
            password_env: None,
            password: None,
        };
        let spec = UpstreamSpec {
            credentials: Some(credentials.clone()),
            ..resolve_spec()
        };
        assert_eq!(compile(&spec).1, ["upstreams.hub.credentials"]);

        credentials.password = Some(Password::new("secret"));
        let spec = UpstreamSpec {
            credentials: Some(credentials),
            ..resolve_spec()
        };
        let settings = compile(&spec).0.unwrap();
        assert_eq!(settings.credentials.unwrap().password.expose(), "secret");
    }

    #[test]
    fn password_debug_is_redacted() {
        let credentials = Credentials {
            username: "puller".into(),
            password: Password::new("hunter2"),
        };
        let text = format!("{credentials:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("puller"), "{text}");
    }

    #[test]
    fn credentials_spec_debug_is_redacted() {
        let spec = CredentialsSpec {
            username: "puller".into(),
            password_file: None,
            password_env: Some("HUB_PASSWORD".into()),
            password: Some(Password::new("hunter2")),
        };
        assert!(!format!("{spec:?}").contains("hunter2"));
    }
}
