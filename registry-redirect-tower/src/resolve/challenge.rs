//! Parsing `WWW-Authenticate` (RFC 9110, section 11.6.1) for the bearer
//! challenge of a token-auth registry:
//! `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:app:pull"`.
//!
//! One header value may carry several challenges separated by commas, and
//! a response may carry several header values. The first `Bearer`
//! challenge wins. Parameter names and schemes are matched without regard
//! to case, quoted values may contain commas and backslash escapes, and
//! `token68` credentials of other schemes are skipped.

use http::header::WWW_AUTHENTICATE;
use http::HeaderMap;

/// The parameters of a `Bearer` challenge that a token request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    /// The URL of the token endpoint.
    pub realm: String,
    /// The `service` parameter to pass to the token endpoint.
    pub service: Option<String>,
    /// The scope the upstream requests, such as `repository:library/nginx:pull`.
    pub scope: Option<String>,
}

/// The reason a response carries no usable bearer challenge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// No `WWW-Authenticate` header at all.
    #[error("the response has no WWW-Authenticate header (expected a Bearer challenge)")]
    Missing,
    /// A header value does not follow the challenge grammar.
    #[error("invalid WWW-Authenticate header {header:?}: {reason}")]
    Malformed {
        /// The header value, lossily decoded.
        header: String,
        /// The problem, and its byte offset.
        reason: String,
    },
    /// Only other schemes, such as `Basic`, are offered.
    #[error("WWW-Authenticate offers only {schemes} (expected a Bearer challenge, which resolve mode needs)")]
    NotBearer {
        /// The schemes offered, comma-separated.
        schemes: String,
    },
    /// The `Bearer` challenge has no `realm`.
    #[error("the Bearer challenge has no realm (expected realm=\"https://...\" naming the token endpoint)")]
    MissingRealm,
}

/// One challenge: a scheme and its parameters, names in lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

/// Finds the first `Bearer` challenge in the `WWW-Authenticate` headers.
///
/// ```
/// use http::HeaderMap;
/// use registry_redirect_tower::resolve::challenge::bearer_challenge;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(
///     "www-authenticate",
///     r#"Bearer realm="https://auth.example/token",service="registry.example""#.parse().unwrap(),
/// );
/// let challenge = bearer_challenge(&headers).unwrap();
/// assert_eq!(challenge.realm, "https://auth.example/token");
/// assert_eq!(challenge.service.as_deref(), Some("registry.example"));
/// assert_eq!(challenge.scope, None);
/// ```
pub fn bearer_challenge(headers: &HeaderMap) -> Result<BearerChallenge, ChallengeError> {
    let mut schemes = Vec::new();
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let challenges = parse_challenges(&text).map_err(|reason| ChallengeError::Malformed {
            header: text.to_string(),
            reason,
        })?;
        for challenge in challenges {
            if !challenge.scheme.eq_ignore_ascii_case("bearer") {
                schemes.push(challenge.scheme);
                continue;
            }
            let param = |name: &str| {
                challenge
                    .params
                    .iter()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.clone())
            };
            let realm = param("realm").ok_or(ChallengeError::MissingRealm)?;
            return Ok(BearerChallenge {
                realm,
                service: param("service"),
                scope: param("scope"),
            });
        }
    }
    if schemes.is_empty() {
        return Err(ChallengeError::Missing);
    }
    Err(ChallengeError::NotBearer {
        schemes: schemes.join(", "),
    })
}

/// Returns whether `byte` is a `tchar` (RFC 9110, section 5.6.2).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// A cursor over the bytes of one header value.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn skip_spaces_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> &str {
        let start = self.at;
        while self.peek().is_some_and(is_token_byte) {
            self.at += 1;
        }
        self.text.get(start..self.at).unwrap_or_default()
    }

    /// Reads a quoted string after its opening quote, undoing escapes.
    fn quoted(&mut self) -> Result<String, String> {
        let start = self.at;
        let mut value = String::new();
        let mut chars = self.text.get(self.at..).unwrap_or_default().char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                '"' => {
                    self.at += offset + 1;
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => value.push(escaped),
                    None => break,
                },
                _ => value.push(c),
            }
        }
        Err(format!(
            "the quoted string at byte {} has no closing quote",
            start.saturating_sub(1)
        ))
    }

    /// Reads an unquoted value: everything up to a comma or a space.
    /// Registries quote their values; this accepts the ones that do not.
    fn bare_value(&mut self) -> &str {
        let start = self.at;
        while !matches!(self.peek(), None | Some(b',' | b' ' | b'\t')) {
            self.at += 1;
        }
        self.text.get(start..self.at).unwrap_or_default()
    }
}

/// Splits one header value into challenges.
fn parse_challenges(text: &str) -> Result<Vec<Challenge>, String> {
    let mut cursor = Cursor { text, at: 0 };
    let mut challenges = Vec::new();
    // `challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`; a
    // comma separates both parameters and challenges, and a token that is
    // not followed by `=` starts the next challenge.
    cursor.skip_spaces_and_commas();
    while cursor.peek().is_some() {
        let scheme = cursor.token().to_owned();
        if scheme.is_empty() {
            return Err(format!(
                "expected an auth scheme at byte {}, found {:?}",
                cursor.at,
                char::from(cursor.peek().unwrap_or(b' '))
            ));
        }
        let mut challenge = Challenge {
            scheme,
            params: Vec::new(),
        };
        loop {
            cursor.skip_spaces_and_commas();
            let start = cursor.at;
            let name = cursor.token().to_ascii_lowercase();
            if name.is_empty() {
                if cursor.peek().is_none() {
                    break;
                }
                // A token68 credential, such as base64 with `/` in it.
                cursor.bare_value();
                continue;
            }
            cursor.skip_spaces();
            if cursor.peek() != Some(b'=') {
                // The next challenge's scheme.
                cursor.at = start;
                break;
            }
            cursor.at += 1;
            if matches!(cursor.peek(), None | Some(b'=' | b',')) {
                // token68 padding such as `abc==`: not a parameter.
                while cursor.peek() == Some(b'=') {
                    cursor.at += 1;
                }
                continue;
            }
            cursor.skip_spaces();
            let value = if cursor.peek() == Some(b'"') {
                cursor.at += 1;
                cursor.quoted()?
            } else {
                cursor.bare_value().to_owned()
            };
            challenge.params.push((name, value));
        }
        challenges.push(challenge);
        cursor.skip_spaces_and_commas();
    }
    Ok(challenges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(WWW_AUTHENTICATE, value.parse().unwrap());
        }
        headers
    }

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> BearerChallenge {
        BearerChallenge {
            realm: realm.to_owned(),
            service: service.map(str::to_owned),
            scope: scope.map(str::to_owned),
        }
    }

    #[test]
    fn bearer_challenges_parse() {
        let cases = [
            (
                vec![
                    r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
                ],
                bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/nginx:pull"),
                ),
            ),
            (
                vec![r#"bearer REALM="http://127.0.0.1:1/t" , Service = "svc""#],
                bearer("http://127.0.0.1:1/t", Some("svc"), None),
            ),
            (
                vec![
                    r#"Bearer realm="https://a/t",scope="repository:a:pull,push repository:b:pull""#,
                ],
                bearer(
                    "https://a/t",
                    None,
                    Some("repository:a:pull,push repository:b:pull"),
                ),
            ),
            (
                vec![r#"Bearer realm="https://a/t?x=\"y\"",service="s\\1""#],
                bearer(r#"https://a/t?x="y""#, Some(r"s\1"), None),
            ),
            (
                vec![r#"Basic realm="registry", Bearer realm="https://a/t",service="s""#],
                bearer("https://a/t", Some("s"), None),
            ),
            (
                vec![r#"Basic realm="registry""#, r#"Bearer realm="https://b/t""#],
                bearer("https://b/t", None, None),
            ),
            (
                vec![r#"Negotiate abc/def==, Bearer realm=https://c/t,service=s"#],
                bearer("https://c/t", Some("s"), None),
            ),
        ];
        for (values, expected) in cases {
            assert_eq!(
                bearer_challenge(&headers(&values)),
                Ok(expected),
                "{values:?}"
            );
        }
    }

    #[test]
    fn unusable_challenges_rejected() {
        assert_eq!(
            bearer_challenge(&headers(&[])),
            Err(ChallengeError::Missing)
        );
        assert_eq!(
            bearer_challenge(&headers(&[r#"Basic realm="registry""#])),
            Err(ChallengeError::NotBearer {
                schemes: "Basic".into()
            })
        );
        assert_eq!(
            bearer_challenge(&headers(&[r#"Bearer service="s",scope="x""#])),
            Err(ChallengeError::MissingRealm)
        );
        assert!(matches!(
            bearer_challenge(&headers(&[r#"Bearer realm="https://a/t"#])),
            Err(ChallengeError::Malformed { .. })
        ));
        assert!(matches!(
            bearer_challenge(&headers(&[r#"=Bearer realm="x""#])),
            Err(ChallengeError::Malformed { .. })
        ));
    }

    #[test]
    fn missing_realm_message_says_what_to_expect() {
        assert_eq!(
            ChallengeError::MissingRealm.to_string(),
            "the Bearer challenge has no realm (expected realm=\"https://...\" naming the token endpoint)"
        );
    }
}
