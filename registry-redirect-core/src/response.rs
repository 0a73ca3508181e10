//! Turning a [`Decision`] into an [`http::Response`].
//!
//! Every response to a `/v2` request carries
//! `Docker-Distribution-Api-Version: registry/2.0`, as registries send it.
//!
//! - A redirect has `Location`, `Cache-Control: private` (the redirect depends
//!   on the client, so shared caches must not keep it), and for `GET` a short
//!   HTML body that links the location, as Go's `http.Redirect` writes one.
//! - The API version check gets 200 with an empty JSON object, as the
//!   reference registry does.
//! - A resolve-mode request ([`Outcome::Resolve`]) needs a server that
//!   fetches from the upstream. Here it gets 503 with an `UNSUPPORTED`
//!   OCI error that names the missing resolver.
//! - A rejection gets an OCI error body
//!   (`{"errors":[{"code":"NAME_INVALID","message":"...","detail":null}]}`),
//!   and 405 adds `Allow: GET, HEAD`.
//!
//! `HEAD` responses carry the same headers and no body.
//!
//! ```
//! use http::{HeaderMap, Method, Version};
//! use registry_redirect_core::{decide, Policy, PolicySpec, RequestView, UpstreamSpec};
//!
//! let mut spec = PolicySpec::new("k8s");
//! spec.upstreams.insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
//! let policy = Policy::compile(&spec).unwrap();
//! let headers = HeaderMap::new();
//! let view = RequestView {
//!     method: &Method::GET,
//!     path: "/v2/_catalog",
//!     query: None,
//!     host: None,
//!     peer: None,
//!     headers: &headers,
//!     version: Version::HTTP_11,
//! };
//! let response = decide(&policy, &view).into_response().unwrap();
//! assert_eq!(response.status(), 404);
//! assert!(response.body().starts_with(r#"{"errors":[{"code":"UNSUPPORTED""#));
//! ```

use std::sync::LazyLock;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE,
    LOCATION,
};
use http::{Response, StatusCode};

use crate::decision::{Decision, Outcome, Rejection};

/// `Docker-Distribution-Api-Version`, which clients read to recognize a registry.
pub static API_VERSION_HEADER: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
/// The value of [`API_VERSION_HEADER`].
pub static API_VERSION: HeaderValue = HeaderValue::from_static("registry/2.0");

static PRIVATE: HeaderValue = HeaderValue::from_static("private");
static HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
static JSON: HeaderValue = HeaderValue::from_static("application/json");
static GET_HEAD: HeaderValue = HeaderValue::from_static("GET, HEAD");

/// The headers of a redirect, with an empty `Location` that each redirect
/// replaces. Cloning the map and replacing one value costs about 400
/// fewer instructions than inserting four headers into an empty map.
static REDIRECT_HEADERS: LazyLock<HeaderMap> = LazyLock::new(|| {
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(LOCATION, HeaderValue::from_static(""));
    headers.insert(CACHE_CONTROL, PRIVATE.clone());
    headers.insert(CONTENT_TYPE, HTML.clone());
    headers.insert(API_VERSION_HEADER.clone(), API_VERSION.clone());
    headers
});

impl Decision<'_> {
    /// Builds the response for this decision, or `None` for a request that is
    /// not a registry request (the adapter passes it on or responds to it itself).
    ///
    /// For [`Outcome::Candidates`] it redirects to the first candidate; a
    /// server that checked the candidates uses
    /// [`Decision::into_response_for_candidate`] instead.
    pub fn into_response(self) -> Option<Response<String>> {
        self.into_response_for_candidate(0)
    }

    /// Builds the response for this decision, redirecting to the candidate at
    /// `index` (or to the last one when `index` is past the end) when the
    /// outcome has candidates.
    pub fn into_response_for_candidate(self, index: usize) -> Option<Response<String>> {
        let is_head = self.is_head;
        let mut response = match self.outcome {
            Outcome::Redirect {
                status, location, ..
            } => return Some(redirect_response(status, location, is_head)),
            Outcome::Candidates {
                status,
                mut candidates,
                ..
            } => {
                let index = index.min(candidates.len().saturating_sub(1));
                let location = if index < candidates.len() {
                    candidates.swap_remove(index).location
                } else {
                    String::new()
                };
                return Some(redirect_response(status, location, is_head));
            }
            Outcome::AnswerApiVersion { .. } => {
                let mut response = Response::new(body_unless_head("{}", is_head));
                response.headers_mut().insert(CONTENT_TYPE, JSON.clone());
                if is_head {
                    set_head_length(&mut response, 2);
                }
                response
            }
            Outcome::Reject(rejection) => rejection_response(&rejection, is_head),
            Outcome::Resolve { .. } => rejection_response(&RESOLVE_WITHOUT_CLIENT, is_head),
            Outcome::NotRegistry => return None,
        };
        response
            .headers_mut()
            .insert(API_VERSION_HEADER.clone(), API_VERSION.clone());
        Some(response)
    }
}

fn body_unless_head(body: &str, is_head: bool) -> String {
    if is_head {
        String::new()
    } else {
        body.to_owned()
    }
}

/// Builds a redirect response to `location`, with the headers of every
/// `/v2` response, and no body for `HEAD`.
pub fn redirect_response(status: StatusCode, location: String, is_head: bool) -> Response<String> {
    let body = if is_head {
        String::new()
    } else {
        redirect_html(status, &location)
    };
    let Ok(location) = HeaderValue::try_from(location) else {
        // The core builds locations from validated parts and percent-encodes
        // the query, so this branch is not expected. Return an error
        // response rather than panic.
        let mut response = rejection_response(&INVALID_LOCATION, is_head);
        response
            .headers_mut()
            .insert(API_VERSION_HEADER.clone(), API_VERSION.clone());
        return response;
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let mut headers = REDIRECT_HEADERS.clone();
    headers.insert(LOCATION, location);
    *response.headers_mut() = headers;
    if is_head {
        let length = redirect_html_len(status, response.headers()[LOCATION].as_bytes());
        set_head_length(&mut response, length);
    }
    response
}

/// Sets the `Content-Length` of a `HEAD` response to the length of the body
/// that `GET` would get, as RFC 9110 (section 9.3.2) requires; the response
/// itself has no body.
fn set_head_length(response: &mut Response<String>, length: usize) {
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
}

/// The length of a redirect's HTML body without its location and text.
const REDIRECT_HTML_FRAME_LEN: usize = "<a href=\"".len() + "\">".len() + "</a>.\n".len();

/// Returns the length of [`redirect_html`]'s body without building it.
fn redirect_html_len(status: StatusCode, location: &[u8]) -> usize {
    let text = status.canonical_reason().unwrap_or("Redirect");
    let escaped: usize = location
        .iter()
        .map(|byte| match byte {
            b'&' | b'"' | b'\'' => 5,
            b'<' | b'>' => 4,
            _ => 1,
        })
        .sum();
    REDIRECT_HTML_FRAME_LEN + escaped + text.len()
}

const RESOLVE_WITHOUT_CLIENT: Rejection = Rejection {
    status: StatusCode::SERVICE_UNAVAILABLE,
    code: crate::decision::ErrorCode::Unsupported,
    message: "the upstream chosen for this request has auth = \"resolve\", which needs a server with an HTTP client to fetch from it; give the layer a resolver or set auth = \"none\"",
};

const INVALID_LOCATION: Rejection = Rejection {
    status: StatusCode::INTERNAL_SERVER_ERROR,
    code: crate::decision::ErrorCode::Unsupported,
    message: "the redirect location could not be written as a header",
};

/// Builds the HTML body of a redirect: a link to the location.
pub fn redirect_html(status: StatusCode, location: &str) -> String {
    let text = status.canonical_reason().unwrap_or("Redirect");
    // The exact length of a body without escapes. Turning a `String`
    // whose capacity is larger into `Bytes`, as the tower layer does,
    // allocates a second time.
    let capacity = REDIRECT_HTML_FRAME_LEN + location.len() + text.len();
    let mut body = String::with_capacity(capacity);
    body.push_str("<a href=\"");
    push_html_escaped(&mut body, location);
    body.push_str("\">");
    body.push_str(text);
    body.push_str("</a>.\n");
    body
}

/// Appends `text` with the five HTML special characters escaped. This runs
/// for every redirect, so text without them, the usual case, is copied
/// whole after a check that does not stop early (which the compiler
/// vectorizes), and other text in runs between the special characters.
fn push_html_escaped(out: &mut String, text: &str) {
    let is_special = |byte: u8| matches!(byte, b'&' | b'<' | b'>' | b'"' | b'\'');
    let has_special = text
        .bytes()
        .fold(false, |found, byte| found | is_special(byte));
    if !has_special {
        out.push_str(text);
        return;
    }

    let mut copied = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&#34;",
            b'\'' => "&#39;",
            _ => continue,
        };
        // The special characters are ASCII, so `index` is a char boundary.
        out.push_str(&text[copied..index]);
        out.push_str(escaped);
        copied = index + 1;
    }
    out.push_str(&text[copied..]);
}

fn rejection_response(rejection: &Rejection, is_head: bool) -> Response<String> {
    let body = if is_head {
        String::new()
    } else {
        oci_error_body(rejection.code.as_str(), rejection.message)
    };
    let mut response = Response::new(body);
    *response.status_mut() = rejection.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, JSON.clone());
    if rejection.status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, GET_HEAD.clone());
    }
    if is_head {
        let length = oci_error_body(rejection.code.as_str(), rejection.message).len();
        set_head_length(&mut response, length);
    }
    response
}

/// Builds an OCI error body with one error: `{"errors":[{"code":...,"message":...,"detail":null}]}`.
pub fn oci_error_body(code: &str, message: &str) -> String {
    let mut body = String::with_capacity(code.len() + message.len() + 48);
    body.push_str("{\"errors\":[{\"code\":");
    push_json_string(&mut body, code);
    body.push_str(",\"message\":");
    push_json_string(&mut body, message);
    body.push_str(",\"detail\":null}]}");
    body
}

/// Appends `text` as a JSON string literal, quotes included.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{decide, RequestView};
    use crate::policy::{Policy, PolicySpec, UpstreamSpec};
    use http::{HeaderMap, Method, Version};

    fn respond(method: Method, path: &str, query: Option<&str>) -> Response<String> {
        let mut spec = PolicySpec::new("k8s");
        spec.upstreams
            .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
        let policy = Policy::compile(&spec).unwrap();
        let headers = HeaderMap::new();
        let view = RequestView {
            method: &method,
            path,
            query,
            host: None,
            peer: None,
            headers: &headers,
            version: Version::HTTP_11,
        };
        decide(&policy, &view).into_response().unwrap()
    }

    #[test]
    fn redirect_get_has_html_body() {
        let response = respond(Method::GET, "/v2/a/manifests/1", Some("ns=x&y=1"));
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        let location = "https://registry.k8s.io/v2/a/manifests/1?ns=x&y=1";
        assert_eq!(response.headers()[LOCATION], location);
        assert_eq!(response.headers()[CACHE_CONTROL], "private");
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(
            response.headers()["docker-distribution-api-version"],
            "registry/2.0"
        );
        assert_eq!(
            response.body(),
            "<a href=\"https://registry.k8s.io/v2/a/manifests/1?ns=x&amp;y=1\">Temporary Redirect</a>.\n"
        );
        // One value of each, the empty `Location` of the shared headers replaced.
        assert_eq!(response.headers().len(), 4);
        assert_eq!(response.headers().keys_len(), 4);
    }

    #[test]
    fn redirect_head_has_no_body() {
        let response = respond(Method::HEAD, "/v2/a/manifests/1", None);
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert!(response.body().is_empty());
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let get = respond(Method::GET, "/v2/a/manifests/1", None);
        assert_eq!(
            response.headers()[CONTENT_LENGTH],
            get.body().len().to_string().as_str()
        );
        assert_eq!(
            response.headers()[LOCATION],
            "https://registry.k8s.io/v2/a/manifests/1"
        );
    }

    #[test]
    fn api_version_answer() {
        let response = respond(Method::GET, "/v2/", None);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["docker-distribution-api-version"],
            "registry/2.0"
        );
        assert_eq!(response.body(), "{}");
        let response = respond(Method::HEAD, "/v2/", None);
        assert!(response.body().is_empty());
    }

    #[test]
    fn method_not_allowed_has_allow_and_error_body() {
        let response = respond(Method::POST, "/v2/a/blobs/uploads/", None);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
    }

    #[test]
    fn invalid_name_error_body_is_json() {
        let response = respond(Method::GET, "/v2/a%2Fb/manifests/1", None);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["errors"][0]["code"], "NAME_INVALID");
        assert!(body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("[a-z0-9]+"));
    }

    #[test]
    fn not_registry_has_no_response() {
        let mut spec = PolicySpec::new("k8s");
        spec.upstreams
            .insert("k8s".into(), UpstreamSpec::new("https://registry.k8s.io"));
        let policy = Policy::compile(&spec).unwrap();
        let headers = HeaderMap::new();
        let view = RequestView {
            method: &Method::GET,
            path: "/",
            query: None,
            host: None,
            peer: None,
            headers: &headers,
            version: Version::HTTP_11,
        };
        assert!(decide(&policy, &view).into_response().is_none());
    }

    #[test]
    fn redirect_html_capacity_is_exact() {
        // A larger capacity makes `Bytes::from` allocate again.
        let location = "https://registry.k8s.io/v2/pause/manifests/3.10";
        for status in [StatusCode::TEMPORARY_REDIRECT, StatusCode::FOUND] {
            let body = redirect_html(status, location);
            assert_eq!(body.capacity(), body.len(), "{status}");
            assert_eq!(
                body.len(),
                redirect_html_len(status, location.as_bytes()),
                "{status}"
            );
        }
    }

    #[test]
    fn html_escapes_special_characters() {
        let mut out = String::new();
        push_html_escaped(&mut out, "a&b<c>d\"e'f\u{e9}&");
        assert_eq!(out, "a&amp;b&lt;c&gt;d&#34;e&#39;f\u{e9}&amp;");
        let mut out = String::new();
        push_html_escaped(&mut out, "plain");
        assert_eq!(out, "plain");
    }

    #[test]
    fn json_string_escapes_controls() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\n\u{1}");
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
