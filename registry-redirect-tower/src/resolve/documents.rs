//! Buffered upstream replies (manifests, tag lists, referrers, error
//! bodies and redirects) and their cache.
//!
//! A reply fetched by digest never changes, so it stays cached until the
//! byte bound evicts it. A reply fetched by tag stays for the upstream's
//! `tag_ttl`. Only `200 OK` replies to `GET` are cached, keyed by URL, the
//! client's repository name (see [`DocumentCache::key`]) and `Accept`,
//! because a registry picks the manifest format from `Accept`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LINK,
};
use http::{HeaderMap, StatusCode};
use moka::future::Cache;
use moka::Expiry;

/// The response headers of a document that a registry sends and clients
/// read, passed on from the upstream.
static DOCUMENT_HEADERS: [HeaderName; 5] = [
    CONTENT_TYPE,
    HeaderName::from_static("docker-content-digest"),
    HeaderName::from_static("docker-distribution-api-version"),
    // Tag list and referrers pagination, rewritten by `rewrite_pagination_links`.
    LINK,
    // Referrers filtered by artifact type.
    HeaderName::from_static("oci-filters-applied"),
];

/// The response headers of a blob passed on from the upstream.
static BLOB_HEADERS: [HeaderName; 6] = [
    CONTENT_TYPE,
    CONTENT_LENGTH,
    CONTENT_RANGE,
    ACCEPT_RANGES,
    ETAG,
    HeaderName::from_static("docker-content-digest"),
];

/// Copies the headers of a document reply from the upstream's response.
pub(crate) fn document_headers(upstream: &HeaderMap) -> HeaderMap {
    copy_headers(upstream, &DOCUMENT_HEADERS)
}

/// Rewrites the pagination links in `headers` so that the client's next
/// request comes back to this server for the repository it asked for.
///
/// A registry links the next page of a tag list or of referrers by its own
/// path: `</v2/REPOSITORY/tags/list?n=2&last=b>; rel="next"`. With a
/// `path_prefix` or `library/` added, REPOSITORY is not the client's name,
/// and an absolute link names the upstream's host. A link whose target is under `base`
/// (as a URL or as a path) and under `repository` is rewritten to the path
/// `/v2/NAME/...` on this server. Any other link is passed on unchanged.
pub(crate) fn rewrite_pagination_links(
    headers: &mut HeaderMap,
    base: &str,
    repository: &str,
    name: &str,
) {
    if !headers.contains_key(LINK) {
        return;
    }
    let links: Vec<HeaderValue> = headers
        .get_all(LINK)
        .iter()
        .map(|link| {
            rewrite_pagination_link(link, base, repository, name).unwrap_or_else(|| link.clone())
        })
        .collect();
    headers.remove(LINK);
    for link in links {
        headers.append(LINK, link);
    }
}

/// Returns a tag list body that names the client's `name` in place of the
/// upstream's `repository`, or `None` when the body is not a JSON object
/// whose `name` is `repository`.
///
/// Only the value of `name` changes, so the rest of the body stays byte
/// for byte as the upstream wrote it.
pub(crate) fn rename_tag_list(body: &[u8], repository: &str, name: &str) -> Option<Bytes> {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        name: std::borrow::Cow<'a, str>,
    }
    let named: Named<'_> = serde_json::from_slice(body).ok()?;
    if named.name != repository {
        return None;
    }
    let value = find_name_value(body)?;
    let quoted = serde_json::to_string(name).ok()?;
    let mut renamed = Vec::with_capacity(body.len() + quoted.len());
    renamed.extend_from_slice(&body[..value.start]);
    renamed.extend_from_slice(quoted.as_bytes());
    renamed.extend_from_slice(&body[value.end..]);
    Some(Bytes::from(renamed))
}

/// Returns the byte range of the string value, quotes included, of the
/// `name` member of the top-level object of `body`, or `None` when that
/// member is missing or its value is not a string.
fn find_name_value(body: &[u8]) -> Option<std::ops::Range<usize>> {
    let skip_space = |mut at: usize| {
        while body.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    let mut depth = 0usize;
    // The last byte outside strings that is not a space: `{` or `,`
    // before a string makes it a member's name.
    let mut previous = 0u8;
    let mut index = 0;
    while let Some(&byte) = body.get(index) {
        match byte {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let end = string_end(body, index)?;
                let is_member_name = depth == 1 && matches!(previous, b'{' | b',');
                if is_member_name && body.get(index + 1..end) == Some(b"name".as_slice()) {
                    let colon = skip_space(end + 1);
                    let quote = skip_space(colon + 1);
                    if body.get(colon) != Some(&b':') || body.get(quote) != Some(&b'"') {
                        return None;
                    }
                    return Some(quote..string_end(body, quote)? + 1);
                }
                previous = b'"';
                index = end + 1;
                continue;
            }
            _ => {}
        }
        if !byte.is_ascii_whitespace() {
            previous = byte;
        }
        index += 1;
    }
    None
}

/// Returns the index of the quote that ends the JSON string starting at
/// `start`, skipping escaped characters, or `None` when it does not end.
fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut index = start + 1;
    while let Some(&byte) = body.get(index) {
        match byte {
            b'\\' => index += 2,
            b'"' => return Some(index),
            _ => index += 1,
        }
    }
    None
}

/// Returns `link` with each target in it rewritten as
/// [`rewrite_pagination_links`] describes, or `None` when no target is
/// under `base` and `repository`. One value may hold several links, such
/// as `<https://docs.example/>; rel="help", </v2/...>; rel="next"`.
fn rewrite_pagination_link(
    link: &HeaderValue,
    base: &str,
    repository: &str,
    name: &str,
) -> Option<HeaderValue> {
    let text = link.to_str().ok()?;
    // The base's path, for a target written as a path: `/v2/` in `https://host/v2/`.
    let base_path = base
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|slash| &rest[slash..]))?;
    let mut rewritten = String::with_capacity(text.len() + name.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(open) = find_target_start(rest) {
        let Some(close) = rest[open..].find('>').map(|offset| open + offset) else {
            break;
        };
        let target = &rest[open + 1..close];
        rewritten.push_str(&rest[..=open]);
        let below_repository = target
            .strip_prefix(base)
            .or_else(|| target.strip_prefix(base_path))
            .and_then(|below_base| below_base.strip_prefix(repository))
            .and_then(|below| below.strip_prefix('/'));
        match below_repository {
            Some(below_repository) => {
                rewritten.push_str("/v2/");
                rewritten.push_str(name);
                rewritten.push('/');
                rewritten.push_str(below_repository);
                changed = true;
            }
            None => rewritten.push_str(target),
        }
        rest = &rest[close..];
    }
    rewritten.push_str(rest);
    if !changed {
        return None;
    }
    HeaderValue::from_str(&rewritten).ok()
}

/// Returns the position of the next `<` that starts a link target in
/// `text`, skipping quoted parameter values such as `title="a<b"` (RFC
/// 8288), where a `<` is only text.
fn find_target_start(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (index, byte) in text.bytes().enumerate() {
        match (quoted, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => quoted = false,
            (false, _, b'"') => quoted = true,
            (false, _, b'<') => return Some(index),
            _ => {}
        }
    }
    None
}

/// Copies the headers of a blob reply from the upstream's response.
pub(crate) fn blob_headers(upstream: &HeaderMap) -> HeaderMap {
    copy_headers(upstream, &BLOB_HEADERS)
}

fn copy_headers(upstream: &HeaderMap, names: &[HeaderName]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in names {
        for value in upstream.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// A complete reply from the upstream, as it is passed to the client.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// The headers passed on, without `Content-Length` for `GET` (the
    /// length of `body` sets it) and with the upstream's for `HEAD`.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// Returns the `Content-Length` a `HEAD` for this reply carries: the
    /// body's length, or for a reply to `HEAD`, the upstream's value.
    pub(crate) fn content_length(&self) -> Option<HeaderValue> {
        if self.body.is_empty() {
            if let Some(length) = self.headers.get(CONTENT_LENGTH) {
                return Some(length.clone());
            }
        }
        Some(HeaderValue::from(self.body.len()))
    }
}

/// A cached reply and how long it stays.
struct CachedReply {
    reply: Reply,
    /// `None` until evicted (fetched by digest).
    ttl: Option<Duration>,
}

struct ReplyExpiry;

impl Expiry<String, Arc<CachedReply>> for ReplyExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        cached: &Arc<CachedReply>,
        _created_at: Instant,
    ) -> Option<Duration> {
        cached.ttl
    }
}

/// Why a fetched reply was not cached: not a `200 OK`, or the fetch failed.
pub(crate) enum NotCached<E> {
    Reply(Reply),
    Failed(E),
}

/// Replies by URL and `Accept`, bounded by their size in bytes.
pub(crate) struct DocumentCache {
    cache: Cache<String, Arc<CachedReply>>,
}

impl DocumentCache {
    /// Creates a cache of about `max_bytes` of bodies and headers.
    pub(crate) fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, cached: &Arc<CachedReply>| {
                let headers: usize = cached
                    .reply
                    .headers
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len())
                    .sum();
                let weight = key.len() + headers + cached.reply.body.len();
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .expire_after(ReplyExpiry)
            .build();
        DocumentCache { cache }
    }

    /// Returns the key of a document: its URL, the repository name the
    /// client wrote and the `Accept` values. The name is part of the key
    /// because tag lists and pagination links are rewritten to it, and two
    /// names can share a URL (`nginx` and `library/nginx` with
    /// `library_prefix`).
    pub(crate) fn key(url: &str, name: &str, accept: &[&HeaderValue]) -> String {
        let mut key = format!("{url}\n{name}");
        for value in accept {
            key.push('\n');
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        key
    }

    pub(crate) async fn get(&self, key: &str) -> Option<Reply> {
        self.cache.get(key).await.map(|cached| cached.reply.clone())
    }

    /// Returns the cached reply for `key`, or runs `fetch` and caches its
    /// reply when it is `200 OK`. Concurrent calls for one key share one
    /// fetch.
    pub(crate) async fn get_or_fetch<E, F>(
        &self,
        key: String,
        ttl: Option<Duration>,
        fetch: F,
    ) -> Result<Reply, Arc<NotCached<E>>>
    where
        E: Send + Sync + 'static,
        F: std::future::Future<Output = Result<Reply, E>>,
    {
        let init = async move {
            match fetch.await {
                Ok(reply) if reply.status == StatusCode::OK => {
                    Ok(Arc::new(CachedReply { reply, ttl }))
                }
                Ok(reply) => Err(NotCached::Reply(reply)),
                Err(error) => Err(NotCached::Failed(error)),
            }
        };
        self.cache
            .try_get_with(key, init)
            .await
            .map(|cached| cached.reply.clone())
    }

    #[cfg(test)]
    pub(crate) async fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: StatusCode, body: &'static str) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn tag_list_names_client_repository() {
        let cases: [(&str, Option<&str>); 7] = [
            (
                "{\"name\":\"mirror/app\",\"tags\":[\"v1\"]}\n",
                Some("{\"name\":\"app\",\"tags\":[\"v1\"]}\n"),
            ),
            // Spacing and the order of members stay as the upstream wrote them.
            (
                "{ \"tags\": [\"name\", \"mirror/app\"] ,\n  \"name\" : \"mirror/app\" }",
                Some("{ \"tags\": [\"name\", \"mirror/app\"] ,\n  \"name\" : \"app\" }"),
            ),
            // Another repository's list, or no name, is left alone.
            ("{\"name\":\"other\",\"tags\":[]}", None),
            ("{\"tags\":[\"v1\"]}", None),
            // A name written with escapes is replaced whole.
            (
                "{\"name\":\"mirror\\/\\u0061pp\",\"tags\":[]}",
                Some("{\"name\":\"app\",\"tags\":[]}"),
            ),
            // Only the top-level name changes, not one in a nested object
            // or inside a string.
            (
                "{\"meta\":{\"name\":\"mirror/app\"},\"x\":\"\\\",\\\"name\\\":\",\"name\":\"mirror/app\"}",
                Some("{\"meta\":{\"name\":\"mirror/app\"},\"x\":\"\\\",\\\"name\\\":\",\"name\":\"app\"}"),
            ),
            ("not json", None),
        ];
        for (body, expected) in cases {
            let renamed = rename_tag_list(body.as_bytes(), "mirror/app", "app");
            assert_eq!(renamed.as_deref(), expected.map(str::as_bytes), "{body}");
        }
    }

    #[test]
    fn pagination_links_name_client_repository() {
        let base = "https://upstream.example/v2/";
        let next = "</v2/app/tags/list?last=b&n=2>; rel=\"next\"";
        for (upstream_link, expected) in [
            // A path under the prefix, and an absolute URL of the upstream.
            ("</v2/mirror/app/tags/list?last=b&n=2>; rel=\"next\"", next),
            (
                "<https://upstream.example/v2/mirror/app/tags/list?last=b&n=2>; rel=\"next\"",
                next,
            ),
            (
                "</v2/mirror/app/referrers/sha256:abc?n=1&last=x>; rel=\"next\"",
                "</v2/app/referrers/sha256:abc?n=1&last=x>; rel=\"next\"",
            ),
            // Another repository that starts with the same letters, another
            // host, and a value without a target stay as they are.
            (
                "</v2/mirror/apple/tags/list?n=2>; rel=\"next\"",
                "</v2/mirror/apple/tags/list?n=2>; rel=\"next\"",
            ),
            (
                "<https://other.example/v2/mirror/app/tags/list?n=2>; rel=\"next\"",
                "<https://other.example/v2/mirror/app/tags/list?n=2>; rel=\"next\"",
            ),
            ("rel=\"next\"", "rel=\"next\""),
            // Several links in one value: only the one under the repository changes.
            (
                "<https://docs.example/x>; rel=\"help\", </v2/mirror/app/tags/list?n=2&last=t2>; rel=\"next\"",
                "<https://docs.example/x>; rel=\"help\", </v2/app/tags/list?n=2&last=t2>; rel=\"next\"",
            ),
            // A `<` inside a quoted parameter is text, not the start of a link.
            (
                "<https://docs.example/>; title=\"a<b \\\"q\\\" </v2/mirror/app/x>\", </v2/mirror/app/tags/list?last=a>; rel=\"next\"",
                "<https://docs.example/>; title=\"a<b \\\"q\\\" </v2/mirror/app/x>\", </v2/app/tags/list?last=a>; rel=\"next\"",
            ),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(LINK, HeaderValue::from_static(upstream_link));
            rewrite_pagination_links(&mut headers, base, "mirror/app", "app");
            assert_eq!(headers[LINK], expected, "{upstream_link}");
        }

        // An upstream whose base has a path of its own.
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static("</sub/v2/mirror/app/tags/list?n=2>"),
        );
        headers.append(LINK, HeaderValue::from_static("</elsewhere>"));
        rewrite_pagination_links(
            &mut headers,
            "http://127.0.0.1:5000/sub/v2/",
            "mirror/app",
            "app",
        );
        let links: Vec<_> = headers.get_all(LINK).iter().collect();
        assert_eq!(links, ["</v2/app/tags/list?n=2>", "</elsewhere>"]);
    }

    #[tokio::test]
    async fn only_ok_replies_cached() {
        let cache = DocumentCache::new(1024 * 1024);
        let fetched = cache
            .get_or_fetch::<(), _>("a".into(), None, async {
                Ok(reply(StatusCode::NOT_FOUND, "{\"errors\":[]}"))
            })
            .await;
        let Err(not_cached) = fetched else {
            panic!("a 404 reply was cached");
        };
        assert!(matches!(*not_cached, NotCached::Reply(_)));
        assert!(cache.get("a").await.is_none());

        let fetched = cache
            .get_or_fetch::<(), _>("a".into(), None, async { Ok(reply(StatusCode::OK, "{}")) })
            .await;
        assert_eq!(fetched.ok().unwrap().body, "{}");
        assert_eq!(cache.get("a").await.unwrap().body, "{}");
    }

    #[tokio::test]
    async fn cache_bounded_by_bytes() {
        let cache = DocumentCache::new(1000);
        for index in 0..20 {
            let body = Bytes::from(vec![b'x'; 400]);
            let _ = cache
                .get_or_fetch::<(), _>(format!("key-{index}"), None, async move {
                    Ok(Reply {
                        status: StatusCode::OK,
                        headers: HeaderMap::new(),
                        body,
                    })
                })
                .await;
        }
        assert!(cache.entry_count().await <= 2);
    }

    #[tokio::test]
    async fn tag_replies_expire() {
        let cache = DocumentCache::new(1024);
        let _ = cache
            .get_or_fetch::<(), _>("tag".into(), Some(Duration::from_millis(50)), async {
                Ok(reply(StatusCode::OK, "{}"))
            })
            .await;
        assert!(cache.get("tag").await.is_some());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(cache.get("tag").await.is_none());
    }

    #[test]
    fn key_includes_accept() {
        let json = HeaderValue::from_static("application/json");
        let oci = HeaderValue::from_static("application/vnd.oci.image.index.v1+json");
        assert_ne!(
            DocumentCache::key("https://r/v2/a/manifests/1", "a", &[&json]),
            DocumentCache::key("https://r/v2/a/manifests/1", "a", &[&oci])
        );
    }

    #[test]
    fn key_includes_client_name() {
        let url = "https://r/v2/library/nginx/tags/list";
        assert_ne!(
            DocumentCache::key(url, "nginx", &[]),
            DocumentCache::key(url, "library/nginx", &[])
        );
    }

    #[test]
    fn only_registry_headers_copied() {
        let mut upstream = HeaderMap::new();
        upstream.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        upstream.insert(
            "docker-content-digest",
            HeaderValue::from_static("sha256:ab"),
        );
        upstream.insert(
            "www-authenticate",
            HeaderValue::from_static("Bearer realm=\"x\""),
        );
        upstream.insert("set-cookie", HeaderValue::from_static("a=b"));
        let copied = document_headers(&upstream);
        assert_eq!(copied.len(), 2);
        assert!(copied.contains_key(CONTENT_TYPE));
        assert!(copied.contains_key("docker-content-digest"));
    }
}
