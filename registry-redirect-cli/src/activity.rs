//! The header read and idle timeouts of one connection, enforced outside
//! hyper.
//!
//! hyper (1.13) starts its HTTP/1 header read timer as soon as it waits for
//! a request, so with it alone an idle keep-alive connection closes after
//! the header read timeout. Here the connection is in one of three phases,
//! each with its own clock:
//!
//! - waiting for a request: from the start of the connection, or from the
//!   first byte after an idle period, until a request reaches the service.
//!   It ends after the header read timeout.
//! - in flight: at least one request is in the service. No timeout applies.
//! - idle: no request in flight and no byte received since the last
//!   response. It ends after the idle timeout.
//!
//! [`Activity`] stores the phase. [`TrackedIo`] marks bytes read, a
//! [`RequestGuard`] marks a request's span, and [`Activity::expired`]
//! completes when the current phase has run out of time.
//!
//! The phase lives in two atomics, so a read and the start and end of a
//! request take no lock and wake no task. [`Activity::expired`] is never
//! woken by a change of phase. Instead its timer fires no later than the
//! shorter of the two timeouts after it was set. A phase that starts after
//! the timer was set ends no earlier than that, so the timer is never late
//! for it. When the timer fires before the current deadline, it is set
//! again. So a stream of keep-alive requests costs a few atomic operations
//! and two clock reads per request, and a connection with a request in
//! flight wakes once per shorter timeout.

use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The timeout that ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The client started no request, or did not finish its headers,
    /// within the header read timeout.
    HeaderRead,
    /// The connection had no request and no bytes for the idle timeout.
    Idle,
}

/// The value of [`Shared::phase`] from the start of a request until the
/// last request in flight ends. The other values carry one of the kinds
/// below in their low two bits, and above them the nanoseconds from
/// [`Shared::started`] to the start of the phase.
const IN_FLIGHT: u64 = 0;
const WAITING_FOR_REQUEST: u64 = 1;
const IDLE: u64 = 2;
const KIND_BITS: u32 = 2;
const KIND_MASK: u64 = (1 << KIND_BITS) - 1;

#[derive(Debug)]
struct Shared {
    started: Instant,
    /// The requests in flight.
    requests: AtomicUsize,
    /// The current phase, encoded as [`IN_FLIGHT`] describes. Idle phases
    /// compare by their start, so `fetch_max` keeps the latest one when
    /// two HTTP/2 streams end at the same time.
    phase: AtomicU64,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// False for HTTP/2, whose PING, SETTINGS and WINDOW_UPDATE frames
    /// arrive without a request. There, only requests end an idle period.
    reads_end_idle: bool,
}

impl Shared {
    /// Encodes a phase of `kind` that starts at `since`.
    fn phase_since(&self, kind: u64, since: Instant) -> u64 {
        // Shifted by two bits, u64 nanoseconds still cover 146 years.
        let nanos = since.saturating_duration_since(self.started).as_nanos() as u64;
        (nanos << KIND_BITS) | kind
    }

    /// Returns the deadline of the current phase, or `None` while a
    /// request is in flight.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        // A request that ends sets the idle phase after it lowers the
        // count, so a zero count with the phase still `IN_FLIGHT` is that
        // moment, and has no deadline either.
        if self.requests.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let phase = self.phase.load(Ordering::SeqCst);
        let since = self.started + Duration::from_nanos(phase >> KIND_BITS);
        match phase & KIND_MASK {
            WAITING_FOR_REQUEST => Some((since + self.header_read_timeout, Expiry::HeaderRead)),
            IDLE => Some((since + self.idle_timeout, Expiry::Idle)),
            _ => None,
        }
    }
}

/// The phase of one connection, shared by its I/O, its requests and its
/// timer.
#[derive(Debug, Clone)]
pub struct Activity {
    shared: Arc<Shared>,
}

impl Activity {
    /// Starts in the waiting phase, counted from `started`.
    pub fn new(
        started: Instant,
        header_read_timeout: Duration,
        idle_timeout: Duration,
        reads_end_idle: bool,
    ) -> Self {
        Activity {
            shared: Arc::new(Shared {
                started,
                requests: AtomicUsize::new(0),
                phase: AtomicU64::new(WAITING_FOR_REQUEST),
                header_read_timeout,
                idle_timeout,
                reads_end_idle,
            }),
        }
    }

    fn bytes_read(&self) {
        let shared = &*self.shared;
        if !shared.reads_end_idle {
            return;
        }
        let phase = shared.phase.load(Ordering::SeqCst);
        if phase & KIND_MASK == IDLE {
            let waiting = shared.phase_since(WAITING_FOR_REQUEST, Instant::now());
            // Fails only if a request started meanwhile, which ends the
            // idle phase too.
            let _ =
                shared
                    .phase
                    .compare_exchange(phase, waiting, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// Marks a request as in flight until the returned guard is dropped.
    pub fn request_started(&self) -> RequestGuard {
        self.shared.requests.fetch_add(1, Ordering::SeqCst);
        self.shared.phase.store(IN_FLIGHT, Ordering::SeqCst);
        RequestGuard {
            activity: self.clone(),
        }
    }

    fn request_finished(&self) {
        let shared = &*self.shared;
        if shared.requests.fetch_sub(1, Ordering::SeqCst) == 1 {
            let idle = shared.phase_since(IDLE, Instant::now());
            shared.phase.fetch_max(idle, Ordering::SeqCst);
        }
    }

    /// Completes when the current phase runs past its timeout, and returns
    /// which timeout it was. When the timer fires and the phase has a
    /// later deadline by then, it waits again until that one.
    pub async fn expired(&self) -> Expiry {
        let shared = &*self.shared;
        // At least 1 ms, the timer's resolution, so that a zero timeout
        // cannot spin this loop while a request is in flight.
        let shorter = shared
            .header_read_timeout
            .min(shared.idle_timeout)
            .max(Duration::from_millis(1));
        let mut sleep = pin!(tokio::time::sleep_until(shared.started));
        loop {
            // Read the clock before the phase. A phase that starts after
            // the read then ends no earlier than `now + shorter`. The
            // timer's 1 ms resolution covers the gap between a change's
            // own clock read and its store.
            let now = Instant::now();
            let wake_at = match shared.deadline() {
                Some((deadline, expiry)) if deadline <= now => return expiry,
                Some((deadline, _)) => deadline.min(now + shorter),
                None => now + shorter,
            };
            sleep.as_mut().reset(wake_at);
            sleep.as_mut().await;
        }
    }

    /// Wraps `io` so that the bytes it reads end an idle period.
    pub fn track<T>(&self, io: T) -> TrackedIo<T> {
        TrackedIo {
            io,
            activity: self.clone(),
            unread: Bytes::new(),
        }
    }

    /// Sets the idle phase's clock from outside a request, for tests.
    #[cfg(test)]
    fn set_idle(&self, since: Instant) {
        let idle = self.shared.phase_since(IDLE, since);
        self.shared.phase.store(idle, Ordering::SeqCst);
    }
}

/// A request in flight; dropping it ends the request's span.
#[derive(Debug)]
pub struct RequestGuard {
    activity: Activity,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.activity.request_finished();
    }
}

/// An I/O stream whose reads end the idle phase of an [`Activity`].
#[derive(Debug)]
pub struct TrackedIo<T> {
    io: T,
    activity: Activity,
    /// Bytes read before and given back by [`TrackedIo::unread`], which
    /// reads return first.
    unread: Bytes,
}

impl<T> TrackedIo<T> {
    /// Gives `bytes`, read from this stream earlier, back to it: the next
    /// reads return them before any new bytes, and do not count them as
    /// read again.
    pub fn unread(&mut self, bytes: Bytes) {
        if self.unread.is_empty() {
            self.unread = bytes;
        } else {
            let mut joined = BytesMut::from(&bytes[..]);
            joined.extend_from_slice(&self.unread);
            self.unread = joined.freeze();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let count = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..count]);
            self.unread.advance(count);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
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
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn silent_connection_expires_after_header_timeout() {
        let activity = Activity::new(Instant::now(), HEADER, IDLE, true);
        let started = Instant::now();
        assert_eq!(activity.expired().await, Expiry::HeaderRead);
        assert_eq!(started.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_expires_after_idle_timeout() {
        let activity = Activity::new(Instant::now(), HEADER, IDLE, true);
        drop(activity.request_started());
        let finished = Instant::now();
        assert_eq!(activity.expired().await, Expiry::Idle);
        assert_eq!(finished.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn request_in_flight_never_expires() {
        let activity = Activity::new(Instant::now(), HEADER, IDLE, true);
        let guard = activity.request_started();
        let waited = tokio::time::timeout(IDLE * 10, activity.expired()).await;
        assert!(waited.is_err(), "expired with a request in flight");
        drop(guard);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_starts_after_last_request() {
        // Two overlapping HTTP/2 streams: the first ends at 1 s, the
        // second at 100 s, past both timeouts.
        let activity = Activity::new(Instant::now(), HEADER, IDLE, false);
        let waiter = activity.clone();
        let expired = tokio::spawn(async move { waiter.expired().await });
        let first = activity.request_started();
        let second = activity.request_started();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(99)).await;
        assert!(!expired.is_finished(), "expired with a request in flight");
        drop(second);
        let finished = Instant::now();
        assert_eq!(expired.await.unwrap(), Expiry::Idle);
        assert_eq!(finished.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn shorter_idle_timeout_wakes_timer() {
        // The timer is set for the header read deadline at 10 s, and the
        // request that ends at 1 s moves the deadline to 3 s.
        let started = Instant::now();
        let activity = Activity::new(started, HEADER, Duration::from_secs(2), true);
        let waiter = activity.clone();
        let expired = tokio::spawn(async move { waiter.expired().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(activity.request_started());
        assert_eq!(expired.await.unwrap(), Expiry::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_requests_postpone_expiry() {
        // A request every 5 s, for longer than the header read timeout.
        let activity = Activity::new(Instant::now(), HEADER, IDLE, true);
        let waiter = activity.clone();
        let expired = tokio::spawn(async move { waiter.expired().await });
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            activity.bytes_read();
            drop(activity.request_started());
        }
        let last = Instant::now();
        assert_eq!(expired.await.unwrap(), Expiry::Idle);
        assert_eq!(last.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_after_idle_start_header_clock() {
        let activity = Activity::new(Instant::now(), HEADER, IDLE, true);
        activity.set_idle(Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read();
        let read_at = Instant::now();
        assert_eq!(activity.expired().await, Expiry::HeaderRead);
        assert_eq!(read_at.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_keep_idle_clock() {
        let activity = Activity::new(Instant::now(), HEADER, IDLE, false);
        activity.set_idle(Instant::now());
        let idle_at = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read();
        assert_eq!(activity.expired().await, Expiry::Idle);
        assert_eq!(idle_at.elapsed(), IDLE);
    }
}
