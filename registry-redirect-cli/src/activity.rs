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
//! A change of phase wakes [`Activity::expired`] only when it moves the
//! deadline before the one its timer is set for. Otherwise the timer fires
//! at the old deadline, finds a later one, and waits again. So a stream of
//! keep-alive requests sets no timer and wakes no task per request.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
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

#[derive(Debug, Clone, Copy)]
enum Phase {
    WaitingForRequest { since: Instant },
    InFlight { requests: usize },
    Idle { since: Instant },
}

impl Phase {
    /// Returns the deadline of this phase, or `None` while a request is in
    /// flight.
    fn deadline(self, shared: &Shared) -> Option<(Instant, Expiry)> {
        match self {
            Phase::WaitingForRequest { since } => {
                Some((since + shared.header_read_timeout, Expiry::HeaderRead))
            }
            Phase::Idle { since } => Some((since + shared.idle_timeout, Expiry::Idle)),
            Phase::InFlight { .. } => None,
        }
    }
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// The deadline that [`Activity::expired`] sleeps until, or `None`
    /// when it waits for a change only (or has not started waiting).
    armed: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes [`Activity::expired`] when the deadline moves before `armed`.
    changed: Notify,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// False for HTTP/2, whose PING, SETTINGS and WINDOW_UPDATE frames
    /// arrive without a request. There, only requests end an idle period.
    reads_end_idle: bool,
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
                state: Mutex::new(State {
                    phase: Phase::WaitingForRequest { since: started },
                    armed: None,
                }),
                changed: Notify::new(),
                header_read_timeout,
                idle_timeout,
                reads_end_idle,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The lock guards plain data that every update leaves whole, so a
        // panic elsewhere while holding it leaves nothing half written.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves to `next`, and wakes [`Activity::expired`] if its timer would
    /// fire after the new deadline.
    fn enter(&self, mut state: MutexGuard<'_, State>, next: Phase) {
        state.phase = next;
        let earlier = match (next.deadline(&self.shared), state.armed) {
            (Some((deadline, _)), Some(armed)) => deadline < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        drop(state);
        if earlier {
            self.shared.changed.notify_one();
        }
    }

    fn bytes_read(&self) {
        if !self.shared.reads_end_idle {
            return;
        }
        let state = self.state();
        if let Phase::Idle { .. } = state.phase {
            let since = Instant::now();
            self.enter(state, Phase::WaitingForRequest { since });
        }
    }

    /// Marks a request as in flight until the returned guard is dropped.
    pub fn request_started(&self) -> RequestGuard {
        let state = self.state();
        let requests = match state.phase {
            Phase::InFlight { requests } => requests + 1,
            Phase::WaitingForRequest { .. } | Phase::Idle { .. } => 1,
        };
        self.enter(state, Phase::InFlight { requests });
        RequestGuard {
            activity: self.clone(),
        }
    }

    fn request_finished(&self) {
        let state = self.state();
        let next = match state.phase {
            Phase::InFlight { requests } if requests > 1 => Phase::InFlight {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        };
        self.enter(state, next);
    }

    /// Returns the deadline of the current phase, or `None` while a request
    /// is in flight.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        self.state().phase.deadline(&self.shared)
    }

    /// Returns the deadline of the current phase, as [`Activity::deadline`]
    /// does, and records it as the one the timer is set for.
    fn arm(&self) -> Option<(Instant, Expiry)> {
        let mut state = self.state();
        let deadline = state.phase.deadline(&self.shared);
        state.armed = deadline.map(|(at, _)| at);
        deadline
    }

    /// Completes when the current phase runs past its timeout, and returns
    /// which timeout it was. When the timer fires and the phase has a
    /// later deadline by then, it waits again until that one.
    pub async fn expired(&self) -> Expiry {
        loop {
            let changed = self.shared.changed.notified();
            match self.arm() {
                Some((deadline, expiry)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {
                            if self.deadline() == Some((deadline, expiry)) {
                                return expiry;
                            }
                        }
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Wraps `io` so that the bytes it reads end an idle period.
    pub fn track<T>(&self, io: T) -> TrackedIo<T> {
        TrackedIo {
            io,
            activity: self.clone(),
        }
    }

    /// Sets the idle phase's clock from outside a request, for tests.
    #[cfg(test)]
    fn set_idle(&self, since: Instant) {
        self.state().phase = Phase::Idle { since };
        self.shared.changed.notify_one();
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
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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
