//! The server's own HTTP/1.1 loop for simple requests: `GET` and `HEAD`
//! without a body, which is what registry clients send.
//!
//! [`serve_simple_requests`] reads a request head and parses it with
//! httparse, the parser inside hyper. It calls the [`ConnectionService`]
//! as hyper would, and writes the response itself by hyper's rules: the
//! same status line, the headers in the service's order, `content-length`
//! from the body, and a `date` formatted once a second.
//!
//! Every other request goes to hyper: another method, HTTP/1.0, a request
//! with `Content-Length`, `Transfer-Encoding`, `Connection`, `Upgrade` or
//! `Expect`, a head that httparse rejects, has more than 100 headers, is
//! 8 KiB or larger, or arrives in many pieces. The loop then returns the
//! connection with the bytes it has read, and hyper serves the rest of the
//! connection from that request on, with its own responses to malformed
//! requests.
//!
//! A connection's task runs the loop first, and hyper after a hand-off:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use registry_redirect_cli::activity::Activity;
//! use registry_redirect_cli::app::{app, ConnectionService};
//! use registry_redirect_cli::config::Config;
//! use registry_redirect_cli::simple_http1::{serve_simple_requests, Outcome};
//! use registry_redirect_tower::RegistryRedirectLayer;
//!
//! # async fn example(stream: tokio::net::TcpStream) {
//! let config = Config::builtin().unwrap();
//! let app = app(RegistryRedirectLayer::new(config.policy));
//! let client = stream.peer_addr().unwrap().ip();
//! let header_read_timeout = Duration::from_secs(30);
//! let idle_timeout = Duration::from_secs(60);
//! let activity = Activity::new(
//!     tokio::time::Instant::now(),
//!     header_read_timeout,
//!     idle_timeout,
//!     true,
//! );
//! let service = ConnectionService::new(app, client, activity.clone());
//! let (_stop_sender, stop) = tokio::sync::watch::channel(false);
//!
//! let io = activity.track(stream);
//! match serve_simple_requests(io, &service, 32 * 1024, &activity, &stop).await {
//!     // Serve the rest with hyper's HTTP/1 connection, from `io`.
//!     Outcome::HandOff(io) => drop(io),
//!     Outcome::Closed | Outcome::Expired(_) => {}
//! }
//! # }
//! ```
//!
//! The loop exists for speed. It does less per request than hyper's
//! general connection state machine: a blob redirect costs about 10,900
//! user-space instructions with it and 11,670 through hyper
//! (`benches/instructions.sh`). docs/performance.md has the load figures.

use std::cell::RefCell;
use std::fmt::Display;
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::pin;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Body;
use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::activity::{Activity, Expiry, TrackedIo};
use crate::app::ConnectionService;

/// The maximum number of request headers the loop parses, as many as
/// hyper accepts by default. A request with more goes to hyper.
const MAX_HEADERS: usize = 100;

/// The reads after which a head that is still incomplete goes to hyper.
/// httparse parses the whole head again after each read, so a client that
/// sends its head a few bytes at a time would otherwise cost time
/// quadratic in the head's size.
const MAX_PARTIAL_READS: usize = 4;

/// The request headers that make a request one for hyper: they announce a
/// body, ask for 100-continue or an upgrade, or set the connection's fate.
const HEADERS_FOR_HYPER: [HeaderName; 5] = [
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    CONNECTION,
    UPGRADE,
    EXPECT,
];

/// The read buffer's initial size and the least free space for a read,
/// as in hyper (1.13). An incomplete head this large goes to hyper, which
/// reads the rest and applies the header size limit as it always has.
const READ_BUFFER_BYTES: usize = 8192;

/// The largest body that is copied behind the response head, so that a
/// small response leaves in one write.
const COALESCED_BODY_BYTES: usize = 16 * 1024;

/// The result of [`serve_simple_requests`].
#[derive(Debug)]
pub enum Outcome<IO> {
    /// The connection is finished: the client closed it, a read or write
    /// failed, a response asked for `connection: close`, or the server is
    /// stopping. Except after a failed read or write, the stream has been
    /// shut down.
    Closed,
    /// No request arrived before the header read timeout or the idle
    /// timeout passed.
    Expired(Expiry),
    /// The next request is not a simple one. hyper is to serve the
    /// connection from here: the stream's next reads return the bytes
    /// already read.
    HandOff(TrackedIo<IO>),
}

/// Serves the simple requests of one HTTP/1.1 connection until it ends or
/// a request needs hyper.
///
/// While the loop waits for a request, `activity`'s timeouts and `stop`
/// end the connection. A request whose first bytes have arrived is in
/// flight, as in hyper: it finishes, and then the connection closes when
/// `stop` has turned true meanwhile.
pub async fn serve_simple_requests<IO>(
    mut io: TrackedIo<IO>,
    service: &ConnectionService,
    max_header_bytes: usize,
    activity: &Activity,
    stop: &watch::Receiver<bool>,
) -> Outcome<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut stop_signal = stop.clone();
    let mut stopped = pin!(stop_signal.wait_for(|stop| *stop));
    let mut expired = pin!(activity.expired());
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut output = Vec::with_capacity(512);

    loop {
        let mut partial_reads = 0;
        let (request, head_only) = loop {
            if !buffer.is_empty() {
                match parse_request(&mut buffer, max_header_bytes) {
                    Parsed::Simple(request) => {
                        let head_only = request.method() == Method::HEAD;
                        break (request, head_only);
                    }
                    Parsed::Partial if partial_reads < MAX_PARTIAL_READS => {
                        partial_reads += 1;
                    }
                    Parsed::Partial | Parsed::Other => {
                        io.unread(buffer.freeze());
                        return Outcome::HandOff(io);
                    }
                }
            }
            if buffer.capacity() - buffer.len() < READ_BUFFER_BYTES {
                buffer.reserve(READ_BUFFER_BYTES);
            }
            let woken = tokio::select! {
                biased;
                read = io.read_buf(&mut buffer) => Woken::Read(read),
                expiry = &mut expired => Woken::Expired(expiry),
                // A request that has started is in flight: it finishes.
                _ = &mut stopped, if buffer.is_empty() => Woken::Stopped,
            };
            let read = match woken {
                Woken::Read(read) => read,
                // As hyper does, close an idle connection cleanly, and drop
                // one whose client did not finish its head.
                Woken::Expired(Expiry::Idle) => {
                    shut_down(&mut io).await;
                    return Outcome::Expired(Expiry::Idle);
                }
                Woken::Expired(expiry) => return Outcome::Expired(expiry),
                Woken::Stopped => return close(io).await,
            };
            match read {
                Ok(0) => return close(io).await,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "failed to read a request; closing connection");
                    return Outcome::Closed;
                }
            }
        };

        let Ok(response) = service.call(request).await;
        let closing = *stop.borrow();
        match write_response(&mut io, &mut output, response, head_only, closing).await {
            Ok(true) => {}
            Ok(false) => return close(io).await,
            Err(error) => {
                tracing::debug!(%error, "failed to write a response; closing connection");
                return Outcome::Closed;
            }
        }
    }
}

/// The event that ended the wait for more of a request.
enum Woken {
    Read(io::Result<usize>),
    Expired(Expiry),
    Stopped,
}

/// Shuts `io` down and returns [`Outcome::Closed`].
async fn close<IO: AsyncWrite + Unpin>(mut io: TrackedIo<IO>) -> Outcome<IO> {
    shut_down(&mut io).await;
    Outcome::Closed
}

/// Shuts `io` down before it is dropped. Without a FIN, or a TLS
/// close_notify, the close looks like a failure to the client.
async fn shut_down<IO: AsyncWrite + Unpin>(io: &mut TrackedIo<IO>) {
    if let Err(error) = io.shutdown().await {
        tracing::debug!(%error, "failed to shut the connection down");
    }
}

/// The result of parsing the start of the read buffer.
// Boxing the request would cost an allocation per request, to save a copy
// of about 200 bytes.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A simple request, whose head has been taken off the buffer.
    Simple(Request<Empty<Bytes>>),
    /// The head is not complete yet, and shorter than
    /// [`READ_BUFFER_BYTES`].
    Partial,
    /// Anything else, for hyper. The buffer is unchanged.
    Other,
}

/// Parses the request head at the start of `buffer`. A simple request's
/// head is split off the buffer, and its header values and target share
/// those bytes.
fn parse_request(buffer: &mut BytesMut, max_header_bytes: usize) -> Parsed {
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let head_length = match parsed.parse_with_uninit_headers(buffer, &mut headers) {
        Ok(httparse::Status::Complete(length)) if length <= max_header_bytes => length,
        Ok(httparse::Status::Partial) if buffer.len() < READ_BUFFER_BYTES => {
            return Parsed::Partial
        }
        _ => return Parsed::Other,
    };
    let method = match parsed.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    if parsed.version != Some(1) {
        return Parsed::Other;
    }
    let Some(target) = parsed.path else {
        return Parsed::Other;
    };

    // The target's and the header values' places in the buffer, so that
    // they can be taken from the head once it is split off.
    let base = buffer.as_ptr() as usize;
    let span = |bytes: &[u8]| (bytes.as_ptr() as usize - base, bytes.len());
    let target = span(target.as_bytes());
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(header.name.as_bytes()) else {
            return Parsed::Other;
        };
        if HEADERS_FOR_HYPER.contains(&name) {
            return Parsed::Other;
        }
        fields.push((name, span(header.value)));
    }

    let head = buffer.split_to(head_length).freeze();
    let slice = |(start, length): (usize, usize)| head.slice(start..start + length);
    let uri = Uri::from_maybe_shared(slice(target));
    let mut header_map = HeaderMap::with_capacity(fields.len());
    let mut valid = uri.is_ok();
    for (name, value) in fields {
        match HeaderValue::from_maybe_shared(slice(value)) {
            Ok(value) => {
                header_map.append(name, value);
            }
            Err(_) => valid = false,
        }
    }
    let (Ok(uri), true) = (uri, valid) else {
        // Put the head back for hyper, which rejects it.
        let mut restored = BytesMut::from(&head[..]);
        restored.extend_from_slice(buffer);
        *buffer = restored;
        return Parsed::Other;
    };

    let mut request = Request::new(Empty::new());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = header_map;
    Parsed::Simple(request)
}

/// The framing of a response body on the wire.
enum Framing {
    /// No body bytes follow the head.
    None,
    /// `content-length` bytes follow.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Writes `response` to `io`, using `output` as the buffer for its head,
/// with `connection: close` when `closing`. Returns whether the
/// connection may stay open.
///
/// The head is framed as hyper (1.13) frames it: the service's
/// `content-length` stays in place when the body is not empty, and
/// otherwise the length or `transfer-encoding: chunked` follows the
/// service's headers. Unlike hyper, a `content-length` that differs from
/// the body's exact length is replaced by that length.
async fn write_response<IO, B>(
    io: &mut IO,
    output: &mut Vec<u8>,
    response: Response<B>,
    head_only: bool,
    closing: bool,
) -> io::Result<bool>
where
    IO: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let (parts, body) = response.into_parts();
    let status = parts.status;
    output.clear();
    output.extend_from_slice(b"HTTP/1.1 ");
    output.extend_from_slice(status.as_str().as_bytes());
    output.push(b' ');
    // As hyper does, write a reason phrase even for an unknown status.
    output.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    output.extend_from_slice(b"\r\n");

    // RFC 9110, sections 8.6 and 15: 1xx, 204 and 304 responses have no
    // content, and 1xx and 204 responses no Content-Length.
    let may_have_length = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let may_have_body = may_have_length && !head_only;
    let end_stream = body.is_end_stream();
    let exact_length = body.size_hint().exact();

    let mut keep_alive = !closing;
    let mut has_date = false;
    // The body length that the service's content-length header states,
    // once that header is written.
    let mut stated_length = None;
    for (name, value) in &parts.headers {
        if *name == CONTENT_LENGTH {
            let parsed = value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<u64>().ok());
            // A HEAD response states the length of the GET response. A
            // body's first valid length stays, unless the body's own exact
            // length differs, which the framing below then writes.
            let valid = parsed.is_some() && (exact_length.is_none() || exact_length == parsed);
            let keep = head_only || (stated_length.is_none() && !end_stream && valid);
            if !keep {
                continue;
            }
            stated_length = parsed.or(Some(0));
        } else if *name == TRANSFER_ENCODING || (*name == CONNECTION && closing) {
            // The framing is chosen below, and a closing connection gets
            // its `connection: close` below.
            continue;
        } else if *name == CONNECTION {
            keep_alive &= !has_close_token(value);
        } else if *name == DATE {
            has_date = true;
        }
        output.extend_from_slice(name.as_str().as_bytes());
        output.extend_from_slice(b": ");
        output.extend_from_slice(value.as_bytes());
        output.extend_from_slice(b"\r\n");
    }
    if closing {
        output.extend_from_slice(b"connection: close\r\n");
    }

    let framing = if !may_have_body {
        // hyper states a HEAD response's length only when the service
        // set the header or gave a body of known, non-zero length.
        let length = exact_length.unwrap_or(0);
        if may_have_length && stated_length.is_none() && !end_stream && length > 0 {
            write_length(output, length);
        }
        Framing::None
    } else if end_stream {
        write_length(output, 0);
        Framing::None
    } else if let Some(length) = stated_length.or(exact_length) {
        if stated_length.is_none() {
            write_length(output, length);
        }
        Framing::Length(length)
    } else {
        output.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if !has_date {
        output.extend_from_slice(b"date: ");
        extend_with_date(output);
        output.extend_from_slice(b"\r\n");
    }
    output.extend_from_slice(b"\r\n");

    let complete = match framing {
        Framing::None => {
            io.write_all(output).await?;
            true
        }
        Framing::Length(length) => write_length_body(io, output, body, length).await?,
        Framing::Chunked => write_chunked_body(io, output, body).await?,
    };
    io.flush().await?;
    Ok(keep_alive && complete)
}

/// Writes a `content-length` header line.
fn write_length(output: &mut Vec<u8>, length: u64) {
    output.extend_from_slice(b"content-length: ");
    output.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    output.extend_from_slice(b"\r\n");
}

/// Writes the head in `output` and a body of `length` bytes. A small first
/// data frame goes out in the same write as the head. Returns false when
/// the body failed or did not have `length` bytes, after which the
/// connection must close, because the client cannot tell where the next
/// response starts.
async fn write_length_body<IO, B>(
    io: &mut IO,
    output: &mut Vec<u8>,
    mut body: B,
    length: u64,
) -> io::Result<bool>
where
    IO: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let mut written = 0u64;
    let mut head_pending = true;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                tracing::debug!(%error, "response body failed; closing connection");
                flush_head(io, output, head_pending).await?;
                return Ok(false);
            }
        };
        // Trailers are not sent with a content-length body.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        written += data.len() as u64;
        if written > length {
            tracing::debug!(
                length,
                "response body longer than its size hint; closing connection"
            );
            flush_head(io, output, head_pending).await?;
            return Ok(false);
        }
        if head_pending && data.len() <= COALESCED_BODY_BYTES {
            output.extend_from_slice(&data);
            io.write_all(output).await?;
        } else {
            flush_head(io, output, head_pending).await?;
            io.write_all(&data).await?;
        }
        head_pending = false;
    }
    flush_head(io, output, head_pending).await?;
    Ok(written == length)
}

/// Writes the head in `output` and the body in chunked transfer coding.
/// Returns false when the body failed, and the connection must close.
async fn write_chunked_body<IO, B>(
    io: &mut IO,
    output: &mut Vec<u8>,
    mut body: B,
) -> io::Result<bool>
where
    IO: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    io.write_all(output).await?;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                tracing::debug!(%error, "response body failed; closing connection");
                return Ok(false);
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        output.clear();
        // Upper-case hex digits, as hyper writes chunk sizes. Writing to a
        // Vec cannot fail.
        let _ = write!(output, "{:X}\r\n", data.len());
        output.extend_from_slice(&data);
        output.extend_from_slice(b"\r\n");
        io.write_all(output).await?;
    }
    io.write_all(b"0\r\n\r\n").await?;
    Ok(true)
}

/// Writes the head in `output` if it has not been written yet.
async fn flush_head<IO>(io: &mut IO, output: &[u8], head_pending: bool) -> io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    if head_pending {
        io.write_all(output).await?;
    }
    Ok(())
}

/// Checks whether a `Connection` header value lists the `close` option.
fn has_close_token(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .split(|&byte| byte == b',')
        .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"close"))
}

thread_local! {
    /// The `date` value of the current second, formatted once a second
    /// on each worker thread, as hyper does.
    static CURRENT_DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the current time as an HTTP date (RFC 9110, section 5.6.7).
fn extend_with_date(output: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CURRENT_DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != second {
            *date = (second, httpdate::fmt_http_date(now));
        }
        output.extend_from_slice(date.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use http_body_util::Full;
    use hyper::body::Frame;
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    use registry_redirect_tower::RegistryRedirectLayer;
    use tokio::io::{duplex, DuplexStream};
    use tokio::time::Instant;

    use super::*;
    use crate::app::{app, App};
    use crate::config::Config;
    use crate::limits::Limits;
    use crate::serve::serve_http;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    const BLOB: &str = "/v2/library/nginx/blobs/\
        sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn test_app() -> App {
        let config = Config::builtin().unwrap();
        app(RegistryRedirectLayer::new(config.policy).access_log(false))
    }

    fn test_activity() -> Activity {
        let limits = Limits::default();
        Activity::new(
            Instant::now(),
            limits.header_read_timeout,
            limits.idle_timeout,
            true,
        )
    }

    /// Serves a connection as the server does: simple requests here, the
    /// rest by hyper.
    async fn serve_by_server(io: DuplexStream) {
        let (_stop_sender, stop) = watch::channel(false);
        let client = SocketAddr::new(CLIENT, 40000);
        let limits = Limits::default();
        serve_http(io, false, client, test_app(), &limits, Instant::now(), stop).await;
    }

    /// Serves a connection by hyper alone, with the server's settings.
    async fn serve_by_hyper(io: DuplexStream) {
        let service = ConnectionService::new(test_app(), CLIENT, test_activity());
        let mut builder = http1::Builder::new();
        builder
            .writev(false)
            .max_buf_size(Limits::default().max_header_bytes);
        let _ = builder.serve_connection(TokioIo::new(io), service).await;
    }

    /// Sends `pieces` on a new in-memory connection served by `serve`, 5 ms
    /// apart, and returns what the server wrote until it closed or was
    /// silent for 100 ms, with "<closed>" at the end when it closed. Date
    /// values read as "<date>". Meant for tests with paused time.
    async fn exchange<F, Fut>(serve: F, pieces: &[&[u8]]) -> String
    where
        F: FnOnce(DuplexStream) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (mut client, server) = duplex(1 << 20);
        let server = tokio::spawn(serve(server));
        for piece in pieces {
            client.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut output = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = tokio::time::timeout(Duration::from_millis(100), client.read(&mut chunk));
            match read.await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    output.extend_from_slice(b"<closed>");
                    break;
                }
                Ok(Ok(count)) => output.extend_from_slice(&chunk[..count]),
                Err(_) => break,
            }
        }
        server.abort();
        mask_dates(&String::from_utf8_lossy(&output))
    }

    fn mask_dates(text: &str) -> String {
        text.split("\r\n")
            .map(|line| match line.strip_prefix("date: ") {
                Some(_) => "date: <date>",
                None => line,
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    /// Requests of every kind that the loop takes or leaves to hyper, each
    /// as the pieces in which the client sends it.
    fn requests() -> Vec<(&'static str, Vec<Vec<u8>>)> {
        let whole = |text: &str| vec![text.as_bytes().to_vec()];
        let mut cases = vec![
            ("blob", whole(&format!("GET {BLOB} HTTP/1.1\r\nHost: a\r\n\r\n"))),
            ("blob HEAD", whole(&format!("HEAD {BLOB} HTTP/1.1\r\nHost: a\r\n\r\n"))),
            ("root", whole("GET / HTTP/1.1\r\nHost: a\r\n\r\n")),
            ("root HEAD", whole("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")),
            ("base", whole("GET /v2/ HTTP/1.1\r\nHost: a\r\n\r\n")),
            ("no host", whole("GET /v2/ HTTP/1.1\r\n\r\n")),
            ("not found", whole("GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")),
            (
                "pipelined",
                whole("GET /v2/ HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ),
            (
                "tag list with query",
                whole("GET /v2/pause/tags/list?n=2&last=a HTTP/1.1\r\nHost: a\r\n\r\n"),
            ),
            (
                "absolute target",
                whole("GET http://registry.example/v2/pause/manifests/3.10 HTTP/1.1\r\nHost: b\r\n\r\n"),
            ),
            ("HTTP/1.0", whole("GET /v2/ HTTP/1.0\r\n\r\n")),
            (
                "connection close",
                whole("GET /v2/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            ),
            (
                "body then simple request",
                whole("GET /v2/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ),
            (
                "chunked body",
                whole("GET /v2/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ),
            ("expect", whole("GET /v2/ HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n")),
            ("upload", whole("POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")),
            ("delete", whole("DELETE /v2/x/manifests/a HTTP/1.1\r\nHost: a\r\n\r\n")),
            ("lowercase method", whole("get /v2/ HTTP/1.1\r\nHost: a\r\n\r\n")),
            ("OPTIONS *", whole("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")),
            ("control byte in value", whole("GET /v2/ HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n")),
            ("DEL in target", whole("GET /v2/\x7f HTTP/1.1\r\nHost: a\r\n\r\n")),
            ("space before colon", whole("GET /v2/ HTTP/1.1\r\nHost : a\r\n\r\n")),
            ("folded header", whole("GET /v2/ HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n")),
            ("HTTP/2.0 version", whole("GET /v2/ HTTP/2.0\r\nHost: a\r\n\r\n")),
            ("not HTTP", whole("HELLO\r\n\r\n")),
            ("bare line feeds", whole("GET /v2/ HTTP/1.1\nHost: a\n\n")),
            ("leading empty line", whole("\r\nGET /v2/ HTTP/1.1\r\nHost: a\r\n\r\n")),
            ("empty value", whole("GET /v2/ HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n")),
            ("two hosts", whole("GET /v2/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")),
            ("incomplete head", whole("GET /v2/ HTTP/1.1\r\nHost")),
            (
                "too many headers",
                whole(&format!(
                    "GET /v2/ HTTP/1.1\r\nHost: a\r\n{}\r\n",
                    (0..120).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
                )),
            ),
            (
                "large header",
                whole(&format!("GET /v2/ HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(15_000))),
            ),
            (
                "head over the limit",
                whole(&format!("GET /v2/ HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(40_000))),
            ),
            (
                "three pieces",
                ["GET /v2/ HT", "TP/1.1\r\nHo", "st: a\r\n\r\n"]
                    .map(|piece| piece.as_bytes().to_vec())
                    .to_vec(),
            ),
        ];
        let bytes = "GET /v2/ HTTP/1.1\r\nHost: a\r\n\r\n".bytes();
        cases.push(("one byte at a time", bytes.map(|byte| vec![byte]).collect()));
        cases
    }

    #[tokio::test(start_paused = true)]
    async fn responses_match_hyper() {
        for (name, pieces) in requests() {
            let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            let ours = exchange(serve_by_server, &pieces).await;
            let hyper = exchange(serve_by_hyper, &pieces).await;
            assert_eq!(ours, hyper, "{name}");
            if name != "incomplete head" {
                assert!(ours.starts_with("HTTP/1."), "{name}: {ours}");
            }
        }
    }

    /// The server's end of an in-memory connection, which records whether
    /// it was shut down.
    #[derive(Debug)]
    struct ServerEnd {
        io: DuplexStream,
        shut_down: Arc<AtomicBool>,
    }

    impl AsyncRead for ServerEnd {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for ServerEnd {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut_down.store(true, Ordering::SeqCst);
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// A connection served by [`serve_simple_requests`] in a task of its
    /// own, with the client's end, the stop signal, and whether the server
    /// shut its end down.
    struct Loop {
        client: DuplexStream,
        stop: watch::Sender<bool>,
        serving: tokio::task::JoinHandle<Outcome<ServerEnd>>,
        shut_down: Arc<AtomicBool>,
    }

    fn start_loop() -> Loop {
        let (client, server) = duplex(1 << 16);
        let shut_down = Arc::new(AtomicBool::new(false));
        let server = ServerEnd {
            io: server,
            shut_down: shut_down.clone(),
        };
        let (stop, stop_receiver) = watch::channel(false);
        let activity = test_activity();
        let service = ConnectionService::new(test_app(), CLIENT, activity.clone());
        let serving = tokio::spawn(async move {
            let io = activity.track(server);
            serve_simple_requests(io, &service, 16384, &activity, &stop_receiver).await
        });
        Loop {
            client,
            stop,
            serving,
            shut_down,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn simple_requests_stay_out_of_hyper() {
        // The loop serves both pipelined requests and ends without a
        // hand-off when the client closes.
        let Loop {
            mut client,
            serving,
            shut_down,
            ..
        } = start_loop();
        let request =
            format!("GET {BLOB} HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        client.shutdown().await.unwrap();
        let outcome = serving.await.unwrap();
        assert!(matches!(outcome, Outcome::Closed), "{outcome:?}");

        let mut output = String::new();
        client.read_to_string(&mut output).await.unwrap();
        assert!(
            output.starts_with("HTTP/1.1 307 Temporary Redirect\r\n"),
            "{output}"
        );
        assert_eq!(output.matches("HTTP/1.1 ").count(), 2, "{output}");
        assert!(output.contains("HTTP/1.1 200 OK\r\n"), "{output}");
        assert!(shut_down.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn hand_off_keeps_bytes_read() {
        let Loop {
            mut client,
            serving,
            ..
        } = start_loop();
        let request =
            b"POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab";
        client.write_all(request).await.unwrap();
        let outcome = serving.await.unwrap();
        let Outcome::HandOff(mut io) = outcome else {
            panic!("expected a hand-off, got {outcome:?}");
        };
        let mut handed_off = vec![0u8; request.len()];
        io.read_exact(&mut handed_off).await.unwrap();
        assert_eq!(handed_off, request);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_closes_after_response() {
        let Loop {
            mut client,
            stop,
            serving,
            shut_down,
        } = start_loop();
        client
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut chunk = [0u8; 4096];
        let count = client.read(&mut chunk).await.unwrap();
        assert!(chunk[..count].starts_with(b"HTTP/1.1 200 OK\r\n"));

        // Waiting for the next request, the connection closes on stop.
        stop.send(true).unwrap();
        let outcome = serving.await.unwrap();
        assert!(matches!(outcome, Outcome::Closed), "{outcome:?}");
        assert_eq!(client.read(&mut chunk).await.unwrap(), 0);
        assert!(shut_down.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_lets_started_request_finish() {
        let Loop {
            mut client,
            stop,
            serving,
            ..
        } = start_loop();
        client
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        stop.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        client.write_all(b"\r\n").await.unwrap();

        let mut output = String::new();
        client.read_to_string(&mut output).await.unwrap();
        assert!(output.starts_with("HTTP/1.1 200 OK\r\n"), "{output}");
        assert!(output.contains("\r\nconnection: close\r\n"), "{output}");
        let outcome = serving.await.unwrap();
        assert!(matches!(outcome, Outcome::Closed), "{outcome:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn connection_without_request_expires() {
        // The stop signal's sender stays alive: dropping it stops the loop.
        let Loop {
            client,
            stop,
            serving,
            shut_down,
        } = start_loop();
        let outcome = serving.await.unwrap();
        assert!(
            matches!(outcome, Outcome::Expired(Expiry::HeaderRead)),
            "{outcome:?}"
        );
        // As with hyper, a client that started no request gets no
        // clean close.
        assert!(!shut_down.load(Ordering::SeqCst));
        drop((client, stop));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_shuts_down() {
        let Loop {
            mut client,
            stop,
            serving,
            shut_down,
        } = start_loop();
        client
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let outcome = serving.await.unwrap();
        assert!(
            matches!(outcome, Outcome::Expired(Expiry::Idle)),
            "{outcome:?}"
        );
        assert!(shut_down.load(Ordering::SeqCst));
        drop(stop);
    }

    /// Writes `response` as the response to a GET, or a HEAD when
    /// `head_only`, and returns the bytes and whether the connection may
    /// stay open.
    async fn written<B>(response: Response<B>, head_only: bool) -> (String, bool)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Display,
    {
        let mut io = Vec::new();
        let mut output = Vec::new();
        let keep_alive = write_response(&mut io, &mut output, response, head_only, false)
            .await
            .unwrap();
        (mask_dates(&String::from_utf8(io).unwrap()), keep_alive)
    }

    /// A body of data frames whose size is unknown in advance, ending with
    /// an error when the last item is one.
    struct Streamed(std::collections::VecDeque<Result<&'static str, &'static str>>);

    impl Body for Streamed {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            let item = self.0.pop_front();
            Poll::Ready(
                item.map(|item| item.map(|data| Frame::data(Bytes::from_static(data.as_bytes())))),
            )
        }
    }

    fn streamed(items: &[Result<&'static str, &'static str>]) -> Streamed {
        Streamed(items.iter().copied().collect())
    }

    type TestBody = http_body_util::combinators::BoxBody<Bytes, &'static str>;

    /// Builds one test response, once for the loop and once for hyper.
    type MakeResponse = fn() -> Response<TestBody>;

    fn full(data: &'static str) -> TestBody {
        Full::new(Bytes::from_static(data.as_bytes()))
            .map_err(|never| match never {})
            .boxed()
    }

    /// Responses with bodies of known and unknown size, as resolve mode
    /// streams them from an upstream.
    fn body_responses() -> Vec<(&'static str, MakeResponse)> {
        fn with(status: u16, headers: &[(&str, &str)], body: TestBody) -> Response<TestBody> {
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            for (name, value) in headers {
                let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
                response
                    .headers_mut()
                    .append(name, HeaderValue::from_str(value).unwrap());
            }
            response
        }
        vec![
            ("length, known size", || {
                with(
                    200,
                    &[
                        ("content-type", "a/b"),
                        ("content-length", "5"),
                        ("etag", "x"),
                    ],
                    full("hello"),
                )
            }),
            ("length, unknown size", || {
                let body = streamed(&[Ok("he"), Ok("llo")]).boxed();
                with(
                    200,
                    &[
                        ("content-type", "a/b"),
                        ("content-length", "5"),
                        ("etag", "x"),
                    ],
                    body,
                )
            }),
            ("partial content", || {
                let body = streamed(&[Ok("abc")]).boxed();
                with(
                    206,
                    &[("content-length", "3"), ("content-range", "bytes 0-2/9")],
                    body,
                )
            }),
            ("unknown size", || {
                let body = streamed(&[Ok("ab"), Ok("cdefghijklmnop")]).boxed();
                with(200, &[("etag", "x")], body)
            }),
            ("empty with length", || {
                with(200, &[("content-length", "0")], full(""))
            }),
            ("no content", || with(204, &[("etag", "x")], full(""))),
            ("not modified", || {
                with(304, &[("content-length", "10"), ("etag", "x")], full(""))
            }),
        ]
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_match_hyper() {
        for method in ["GET", "HEAD"] {
            for (name, make) in body_responses() {
                let head_only = method == "HEAD";
                let (ours, keep_alive) = written(make(), head_only).await;
                assert!(keep_alive, "{method} {name}");

                let serve = move |io: DuplexStream| async move {
                    let service =
                        hyper::service::service_fn(
                            move |_| async move { Ok::<_, Infallible>(make()) },
                        );
                    let mut builder = http1::Builder::new();
                    builder.writev(false);
                    let _ = builder.serve_connection(TokioIo::new(io), service).await;
                };
                let request = format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n");
                let hyper = exchange(serve, &[request.as_bytes()]).await;
                assert_eq!(ours, hyper, "{method} {name}");
            }
        }
    }

    #[tokio::test]
    async fn unknown_length_is_chunked() {
        let response = Response::new(streamed(&[Ok("ab"), Ok(""), Ok("cde")]));
        let (bytes, keep_alive) = written(response, false).await;
        assert_eq!(
            bytes,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: <date>\r\n\r\n\
             2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        );
        assert!(keep_alive);
    }

    #[tokio::test]
    async fn failed_body_closes_connection() {
        let response = Response::new(streamed(&[Ok("ab"), Err("upstream reset")]));
        let (bytes, keep_alive) = written(response, false).await;
        assert!(bytes.ends_with("2\r\nab\r\n"), "{bytes}");
        assert!(!keep_alive);
    }

    #[tokio::test]
    async fn length_body_and_head() {
        let response = || {
            Response::builder()
                .status(StatusCode::OK)
                .header("content-length", "999")
                .header("transfer-encoding", "gzip")
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap()
        };
        let (bytes, keep_alive) = written(response(), false).await;
        assert_eq!(
            bytes,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: <date>\r\n\r\nhello"
        );
        assert!(keep_alive);

        // HEAD keeps the service's content-length and sends no body.
        let (bytes, _) = written(response(), true).await;
        assert_eq!(
            bytes,
            "HTTP/1.1 200 OK\r\ncontent-length: 999\r\ndate: <date>\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn no_content_has_no_length() {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let (bytes, _) = written(response, false).await;
        assert_eq!(bytes, "HTTP/1.1 204 No Content\r\ndate: <date>\r\n\r\n");

        let mut response = Response::new(Full::new(Bytes::new()));
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("keep-alive, Close"));
        let (bytes, keep_alive) = written(response, false).await;
        assert!(bytes.contains("connection: keep-alive, Close\r\ncontent-length: 0\r\n"));
        assert!(!keep_alive);
    }

    #[tokio::test]
    async fn body_shorter_than_hint_closes() {
        struct Short;
        impl Body for Short {
            type Data = Bytes;
            type Error = Infallible;
            fn poll_frame(
                self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
                Poll::Ready(None)
            }
            fn size_hint(&self) -> hyper::body::SizeHint {
                hyper::body::SizeHint::with_exact(4)
            }
        }
        let (bytes, keep_alive) = written(Response::new(Short), false).await;
        assert!(
            bytes.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n"),
            "{bytes}"
        );
        assert!(!keep_alive);
    }
}
