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

#[derive(Debug)]
struct Shared {
    phase: Mutex<Phase>,
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
                phase: Mutex::new(Phase::WaitingForRequest { since: started }),
                changed: Notify::new(),
                header_read_timeout,
                idle_timeout,
                reads_end_idle,
            }),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // The lock guards plain data that every update leaves whole, so a
        // panic elsewhere while holding it leaves nothing half written.
        self.shared
            .phase
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bytes_read(&self) {
        if !self.shared.reads_end_idle {
            return;
        }
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::WaitingForRequest {
                since: Instant::now(),
            };
            drop(phase);
            self.shared.changed.notify_one();
        }
    }

    /// Marks a request as in flight until the returned guard is dropped.
    pub fn request_started(&self) -> RequestGuard {
        let mut phase = self.phase();
        let requests = match *phase {
            Phase::InFlight { requests } => requests + 1,
            Phase::WaitingForRequest { .. } | Phase::Idle { .. } => 1,
        };
        *phase = Phase::InFlight { requests };
        drop(phase);
        self.shared.changed.notify_one();
        RequestGuard {
            activity: self.clone(),
        }
    }

    fn request_finished(&self) {
        let mut phase = self.phase();
        let next = match *phase {
            Phase::InFlight { requests } if requests > 1 => Phase::InFlight {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        };
        *phase = next;
        drop(phase);
        self.shared.changed.notify_one();
    }

    /// The deadline of the current phase, or `None` while a request is in
    /// flight.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        match *self.phase() {
            Phase::WaitingForRequest { since } => {
                Some((since + self.shared.header_read_timeout, Expiry::HeaderRead))
            }
            Phase::Idle { since } => Some((since + self.shared.idle_timeout, Expiry::Idle)),
            Phase::InFlight { .. } => None,
        }
    }

    /// Completes when the current phase runs past its timeout, and returns
    /// which timeout it was. Every change of phase restarts the wait.
    pub async fn expired(&self) -> Expiry {
        loop {
            let changed = self.shared.changed.notified();
            match self.deadline() {
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
        *self.phase() = Phase::Idle { since };
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
