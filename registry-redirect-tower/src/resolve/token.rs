//! Bearer tokens from a registry's token endpoint (the "Token
//! Authentication Specification" of the Docker distribution project),
//! cached per upstream and scope.
//!
//! A token request is `GET REALM?service=SERVICE&scope=SCOPE`, with HTTP
//! Basic credentials when the upstream has them. The response is JSON with
//! `token` (or `access_token`), `expires_in` in seconds (60 when absent, the
//! specification's default) and an optional `issued_at`. A token is cached
//! until shortly before it expires, and concurrent requests for the same
//! scope share one token request.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use moka::future::Cache;
use moka::Expiry;
use registry_redirect_core::policy::Credentials;
use serde::Deserialize;

use super::challenge::BearerChallenge;
use super::ResolveError;
use crate::client::{build_request, HttpClient};

/// The lifetime of a token whose response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// The largest token response read. Registry tokens are a few kilobytes.
const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

/// The cache key of a token: the same scope at the same token endpoint,
/// for the same upstream (whose credentials may differ from another's),
/// fetched with the same credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub(crate) upstream: String,
    pub(crate) realm: String,
    pub(crate) service: Option<String>,
    pub(crate) scope: String,
    /// The [`TokenCache::credentials_id`] of the credentials sent to the
    /// realm, so that a reload with other credentials fetches new tokens
    /// instead of using those the old ones got.
    pub(crate) credentials: Option<u64>,
}

/// A token and how long it may be cached.
#[derive(Clone)]
pub(crate) struct Token {
    /// `Bearer TOKEN`, ready for the `Authorization` header.
    pub(crate) authorization: HeaderValue,
    cache_for: Duration,
}

/// Keeps each token for its own `cache_for`.
struct TokenExpiry;

impl Expiry<TokenKey, Token> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        token: &Token,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(token.cache_for)
    }
}

/// The body of a token response.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    /// Any JSON value: a lifetime that is not a whole number of seconds
    /// in `u64` (negative, fractional, a string) counts as absent, as
    /// clients of the token specification treat it.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    // `issued_at` is accepted but not read: the lifetime counts from when
    // the response arrives, because this host's clock and the token
    // server's may differ. The early refresh covers the transfer time.
}

/// Returns how long a token with `lifetime` stays cached: until 10% of its
/// lifetime, at least 5 s but at most half of it, is left.
pub(crate) fn cache_time(lifetime: Duration) -> Duration {
    let margin = (lifetime / 10)
        .max(Duration::from_secs(5))
        .min(lifetime / 2);
    lifetime.saturating_sub(margin)
}

/// Parses a token response body into the `Authorization` value and the
/// token's lifetime.
pub(crate) fn parse_token_response(body: &[u8]) -> Result<(HeaderValue, Duration), String> {
    let response: TokenResponse =
        serde_json::from_slice(body).map_err(|error| format!("invalid JSON: {error}"))?;
    let token = response
        .token
        .filter(|token| !token.is_empty())
        .or(response.access_token.filter(|token| !token.is_empty()))
        .ok_or("neither token nor access_token is set")?;
    let authorization = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "the token has characters that a header cannot carry".to_owned())?;
    let lifetime = response
        .expires_in
        .and_then(|value| value.as_u64())
        .map_or(DEFAULT_LIFETIME, Duration::from_secs);
    Ok((authorization, lifetime))
}

/// Tokens by [`TokenKey`], with the requests that fetch them.
pub(crate) struct TokenCache {
    cache: Cache<TokenKey, Token>,
    fetched: AtomicU64,
    /// A SipHash with a random key of this process, for `credentials_id`.
    credentials_hasher: RandomState,
}

impl TokenCache {
    pub(crate) fn new() -> Self {
        TokenCache {
            // Tokens are small; the bound only guards against unbounded
            // numbers of repositories.
            cache: Cache::builder()
                .max_capacity(10_000)
                .expire_after(TokenExpiry)
                .build(),
            fetched: AtomicU64::new(0),
            credentials_hasher: RandomState::new(),
        }
    }

    /// Returns an id of the user name and password for token cache keys.
    /// It is a keyed hash, so a key in memory or in `Debug` output shows
    /// nothing of the password.
    pub(crate) fn credentials_id(&self, credentials: &Credentials) -> u64 {
        self.credentials_hasher
            .hash_one((&credentials.username, credentials.password.expose()))
    }

    /// Returns the number of token requests sent.
    pub(crate) fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// Returns the cached token for `key`, or fetches one from the realm
    /// of `challenge`. Concurrent calls for one key share one request.
    pub(crate) async fn token(
        &self,
        client: &HttpClient,
        timeout: Duration,
        key: TokenKey,
        challenge: &BearerChallenge,
        credentials: Option<&Credentials>,
    ) -> Result<HeaderValue, ResolveError> {
        let scope = key.scope.clone();
        let fetch = self.fetch(client, timeout, challenge, &scope, credentials);
        match self.cache.try_get_with(key, fetch).await {
            Ok(token) => Ok(token.authorization),
            Err(error) => Err((*error).clone()),
        }
    }

    /// Drops the cached token for `key`, after the upstream rejected it.
    pub(crate) async fn invalidate(&self, key: &TokenKey) {
        self.cache.invalidate(key).await;
    }

    async fn fetch(
        &self,
        client: &HttpClient,
        timeout: Duration,
        challenge: &BearerChallenge,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Token, ResolveError> {
        let url = token_url(challenge, scope)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(credentials) = credentials {
            headers.insert(AUTHORIZATION, basic_authorization(credentials)?);
        }
        let request = build_request(Method::GET, &url, headers)?;
        self.fetched.fetch_add(1, Ordering::Relaxed);
        let response = client.send_request(request, timeout).await?;

        let status = response.status();
        if status != StatusCode::OK {
            return Err(ResolveError::TokenStatus {
                realm: challenge.realm.clone(),
                status,
            });
        }
        let body = read_limited(response.into_body(), MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(|reason| ResolveError::InvalidToken {
                realm: challenge.realm.clone(),
                reason,
            })?;

        let (authorization, lifetime) =
            parse_token_response(&body).map_err(|reason| ResolveError::InvalidToken {
                realm: challenge.realm.clone(),
                reason,
            })?;
        Ok(Token {
            authorization,
            cache_for: cache_time(lifetime),
        })
    }
}

/// Rejects a token realm over plain `http` for an upstream reached over
/// `https`, before the upstream's credentials are sent to it. The
/// upstream chose the realm, and a downgrade would show the password to
/// anyone on the path. An upstream configured with an `http` URL already
/// travels in the clear, so its realm may use `http` too.
pub(crate) fn check_realm_transport(base: &str, realm: &str) -> Result<(), ResolveError> {
    // The realm is read as `token_url` reads it, because the URL parser
    // takes spellings such as `http:host/token` and ` http://host` for
    // `http://host/token`. A realm it cannot parse fails there.
    let is_http = |url: &str| url::Url::parse(url).is_ok_and(|url| url.scheme() == "http");
    if is_http(realm) && !is_http(base) {
        return Err(ResolveError::InvalidRealm {
            realm: realm.to_owned(),
            reason: "it uses http while the upstream uses https, and the upstream's credentials are sent to a token endpoint only over https".to_owned(),
        });
    }
    Ok(())
}

/// Builds the token request URL: the realm with `service` and `scope`
/// added to its query. Only `http` and `https` realms are accepted.
pub(crate) fn token_url(challenge: &BearerChallenge, scope: &str) -> Result<String, ResolveError> {
    let invalid = |reason: &str| ResolveError::InvalidRealm {
        realm: challenge.realm.clone(),
        reason: reason.to_owned(),
    };
    let mut url = url::Url::parse(&challenge.realm).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("a host is required"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the realm URL are not accepted"));
    }
    url.set_fragment(None);
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = &challenge.service {
            query.append_pair("service", service);
        }
        query.append_pair("scope", scope);
    }
    Ok(url.into())
}

fn basic_authorization(credentials: &Credentials) -> Result<HeaderValue, ResolveError> {
    let pair = format!("{}:{}", credentials.username, credentials.password.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .map_err(|_| ResolveError::InvalidCredentials)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Reads a body of at most `limit` bytes.
pub(crate) async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, String>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(format!("the body is larger than {limit} bytes"))
        }
        Err(error) => Err(format!("reading the body failed: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_time_leaves_margin() {
        let cases = [
            (60, 54_000),
            (300, 270_000),
            (20, 15_000),
            (2, 1_000),
            (0, 0),
        ];
        for (lifetime, expected_millis) in cases {
            let cached = cache_time(Duration::from_secs(lifetime));
            assert_eq!(cached.as_millis(), expected_millis, "lifetime {lifetime} s");
        }
    }

    #[test]
    fn token_responses_parse() {
        let cases = [
            (r#"{"token":"abc","expires_in":300}"#, "Bearer abc", 300),
            (r#"{"access_token":"xyz"}"#, "Bearer xyz", 60),
            (
                r#"{"token":"","access_token":"xyz","issued_at":"2026-01-01T00:00:00Z"}"#,
                "Bearer xyz",
                60,
            ),
            (
                r#"{"token":"t","access_token":"a","expires_in":5}"#,
                "Bearer t",
                5,
            ),
            (r#"{"token":"a","expires_in":-5}"#, "Bearer a", 60),
            (r#"{"token":"a","expires_in":1e30}"#, "Bearer a", 60),
            (r#"{"token":"a","expires_in":"300"}"#, "Bearer a", 60),
            (
                r#"{"token":"a","expires_in":18446744073709551616}"#,
                "Bearer a",
                60,
            ),
        ];
        for (body, authorization, lifetime) in cases {
            let (value, parsed) = parse_token_response(body.as_bytes()).unwrap();
            assert_eq!(value, authorization, "{body}");
            assert_eq!(parsed, Duration::from_secs(lifetime), "{body}");
        }
    }

    #[test]
    fn invalid_token_responses_rejected() {
        for body in [
            "",
            "not json",
            "{}",
            r#"{"token":""}"#,
            r#"{"token":"a\nb"}"#,
        ] {
            assert!(parse_token_response(body.as_bytes()).is_err(), "{body:?}");
        }
    }

    #[test]
    fn token_url_adds_service_and_scope() {
        let challenge = BearerChallenge {
            realm: "https://auth.example/token?client=x#frag".into(),
            service: Some("registry example".into()),
            scope: None,
        };
        assert_eq!(
            token_url(&challenge, "repository:library/nginx:pull").unwrap(),
            "https://auth.example/token?client=x&service=registry+example&scope=repository%3Alibrary%2Fnginx%3Apull"
        );
    }

    #[test]
    fn non_http_realms_rejected() {
        for realm in [
            "file:///etc/passwd",
            "ftp://auth.example/token",
            "/token",
            "https://user:pass@auth.example/token",
        ] {
            let challenge = BearerChallenge {
                realm: realm.into(),
                service: None,
                scope: None,
            };
            let error = token_url(&challenge, "repository:a:pull").unwrap_err();
            assert!(
                matches!(error, ResolveError::InvalidRealm { .. }),
                "{realm}: {error}"
            );
        }
    }

    #[test]
    fn credentials_not_sent_over_http_realm() {
        let realm = "http://auth.example/token";
        let error = check_realm_transport("https://registry.example", realm).unwrap_err();
        assert!(
            matches!(&error, ResolveError::InvalidRealm { realm: named, .. } if named == realm),
            "{error}"
        );
        assert!(error.to_string().contains("only over https"), "{error}");
        // Spellings that the URL parser reads as http.
        for realm in [
            "HTTP://auth.example/token",
            "http:auth.example/token",
            "http:/auth.example/token",
            " http://auth.example/token",
            "http:\\\\auth.example/token",
            "ht\ttp://auth.example/token",
        ] {
            let parsed = url::Url::parse(realm).expect("the URL parser reads it");
            assert_eq!(parsed.scheme(), "http", "{realm:?}");
            let checked = check_realm_transport("https://registry.example", realm);
            assert!(checked.is_err(), "{realm:?}");
        }

        for (base, realm) in [
            ("https://registry.example", "https://auth.example/token"),
            ("http://127.0.0.1:5000", "http://127.0.0.1:5001/token"),
            ("http://registry.lab", "https://auth.example/token"),
        ] {
            assert!(check_realm_transport(base, realm).is_ok(), "{base} {realm}");
        }
    }

    #[test]
    fn basic_authorization_encodes_pair() {
        let credentials = Credentials {
            username: "puller".into(),
            password: registry_redirect_core::policy::Password::new("secret"),
        };
        let value = basic_authorization(&credentials).unwrap();
        assert_eq!(value, "Basic cHVsbGVyOnNlY3JldA==");
        assert!(value.is_sensitive());
    }
}
