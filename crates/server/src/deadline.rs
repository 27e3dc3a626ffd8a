//! Deadlines on an HTTP connection, counted from accept (§3.1).
//!
//! hyper bounds only the time between the first byte of a request head and
//! its end, and hyper-util's version sniffing reads before that clock
//! starts, so a connection that sends nothing, or a request whose body never
//! comes, would hold a connection slot forever. Here every phase of an HTTP
//! connection has a deadline:
//!
//! | phase | ends when | deadline |
//! |---|---|---|
//! | new connection, silent | first byte | `first_byte_timeout` after accept |
//! | reading the first head | head parsed | `header_read_timeout` after accept |
//! | reading a body | body read or dropped | `body_timeout` after its head |
//! | handler running | response body ends | none: handlers bound themselves |
//! | kept alive, idle | first byte | `keepalive_timeout` after the response |
//! | reading a later head | head parsed | `header_read_timeout` after its first byte |
//! | upgraded (WebSocket) | never | none: §6.2 and §12.1 timers apply |
//!
//! A write that makes no progress for `write_stall` (a client that never
//! reads its responses) ends the connection too, except after an upgrade,
//! where slow readers are the outbound queue's business (§12.4).
//!
//! [`Phase`] is the pure state machine (time passed in); [`DeadlineIo`]
//! enforces it on the socket, failing a read or write with
//! `ErrorKind::TimedOut` so hyper drops the connection; [`PhaseBody`] tells
//! it where requests and responses begin and end.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// The configured deadlines of an HTTP connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From accept to the first byte.
    pub first_byte: Duration,
    /// From accept (first request) or its first byte (later ones) to the end of a request head.
    pub head: Duration,
    /// From the end of a request head to the end of its body.
    pub body: Duration,
    /// From the end of a response to the first byte of the next request.
    pub keep_alive: Duration,
    /// Longest time a write may make no progress.
    pub write_stall: Duration,
}

/// When the head being waited for must be complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadBy {
    /// A fixed instant (the first request: counted from accept).
    At(Instant),
    /// This long after its first byte (requests on a kept-alive connection).
    AfterFirstByte(Duration),
}

/// Where an HTTP connection is, and so which read deadline applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No byte of the next request yet.
    AwaitingFirstByte {
        /// Close if nothing arrives by then.
        by: Instant,
        /// The head deadline once bytes arrive.
        head_by: HeadBy,
    },
    /// Part of a request head has arrived.
    ReadingHead {
        /// The whole head must be in by then.
        by: Instant,
    },
    /// A request body is being received.
    ReadingBody {
        /// The whole body must be in by then.
        by: Instant,
    },
    /// A handler is working on a request, or its response is being sent.
    Handling,
    /// The connection became a WebSocket; these deadlines no longer apply.
    Upgraded,
}

impl Phase {
    /// A connection accepted at `now`.
    pub fn accepted(timeouts: &Timeouts, now: Instant) -> Self {
        let head_by = now + timeouts.head;
        Phase::AwaitingFirstByte {
            by: (now + timeouts.first_byte).min(head_by),
            head_by: HeadBy::At(head_by),
        }
    }

    /// Bytes arrived at `now`.
    pub fn on_bytes(self, now: Instant) -> Self {
        match self {
            Phase::AwaitingFirstByte { head_by, .. } => Phase::ReadingHead {
                by: match head_by {
                    HeadBy::At(at) => at,
                    HeadBy::AfterFirstByte(timeout) => now + timeout,
                },
            },
            other => other,
        }
    }

    /// A request head was parsed at `now`; `has_body` unless it declared none.
    pub fn on_request(self, timeouts: &Timeouts, now: Instant, has_body: bool) -> Self {
        match self {
            Phase::Upgraded => Phase::Upgraded,
            _ if has_body => Phase::ReadingBody {
                by: now + timeouts.body,
            },
            _ => Phase::Handling,
        }
    }

    /// The request body was read to its end, or dropped unread.
    pub fn on_body_done(self) -> Self {
        match self {
            Phase::ReadingBody { .. } => Phase::Handling,
            other => other,
        }
    }

    /// The response ended at `now`; the connection waits for the next request.
    pub fn on_response_done(self, timeouts: &Timeouts, now: Instant) -> Self {
        match self {
            Phase::Upgraded => Phase::Upgraded,
            // A pipelined request may already be in: its own events moved
            // the phase on, and the old response must not reset it.
            Phase::ReadingHead { .. } | Phase::ReadingBody { .. } => self,
            Phase::AwaitingFirstByte { .. } | Phase::Handling => Phase::AwaitingFirstByte {
                by: now + timeouts.keep_alive,
                head_by: HeadBy::AfterFirstByte(timeouts.head),
            },
        }
    }

    /// When a read that is still waiting fails, if ever.
    pub fn read_deadline(&self) -> Option<Instant> {
        match self {
            Phase::AwaitingFirstByte { by, .. }
            | Phase::ReadingHead { by }
            | Phase::ReadingBody { by } => Some(*by),
            Phase::Handling | Phase::Upgraded => None,
        }
    }
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// The connection's task, woken when a phase change sets a deadline
    /// that a pending read is not yet waiting on.
    read_waker: Option<Waker>,
    /// A body read timed out; the response becomes a 408.
    body_timed_out: bool,
}

/// The phase of one connection, shared by its socket wrapper and the
/// bodies of its requests and responses (all on the connection's task).
#[derive(Debug, Clone)]
pub struct ConnectionPhase {
    timeouts: Timeouts,
    state: Arc<Mutex<State>>,
    /// Set once and read on every socket operation of a WebSocket: an
    /// atomic keeps those from taking the lock.
    upgraded: Arc<AtomicBool>,
}

impl ConnectionPhase {
    /// A connection accepted now.
    pub fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            state: Arc::new(Mutex::new(State {
                phase: Phase::accepted(&timeouts, Instant::now()),
                read_waker: None,
                body_timed_out: false,
            })),
            upgraded: Arc::new(AtomicBool::new(false)),
        }
    }

    fn update(&self, change: impl FnOnce(Phase, &Timeouts, Instant) -> Phase) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.phase.read_deadline();
        state.phase = change(state.phase, &self.timeouts, Instant::now());
        let after = state.phase.read_deadline();
        if after.is_some()
            && after != before
            && let Some(waker) = state.read_waker.take()
        {
            waker.wake();
        }
    }

    /// A request head was parsed.
    pub fn request_started(&self, has_body: bool) {
        self.update(|phase, timeouts, now| phase.on_request(timeouts, now, has_body));
    }

    /// The request body ended or was dropped.
    pub fn body_done(&self) {
        self.update(|phase, _, _| phase.on_body_done());
    }

    /// The response body ended or was dropped.
    pub fn response_done(&self) {
        self.update(|phase, timeouts, now| phase.on_response_done(timeouts, now));
    }

    /// The connection was upgraded: no deadline applies any more.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
        self.update(|_, _, _| Phase::Upgraded);
    }

    /// Whether a body read of the current request timed out.
    pub fn body_timed_out(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .body_timed_out
    }

    fn is_upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Acquire)
    }
}

/// An accepted socket with the deadlines of its [`ConnectionPhase`].
#[derive(Debug)]
pub struct DeadlineIo<S> {
    inner: S,
    phase: ConnectionPhase,
    /// Made on the first read that waits, the write timer on the first
    /// write that stalls; both dropped once upgraded, when no deadline
    /// applies: a WebSocket keeps this wrapper for its life, and two
    /// idle timers were 224 bytes of every open socket (BENCHMARKS.md, idle).
    read_timer: Option<Pin<Box<Sleep>>>,
    read_timer_at: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
    write_stalled: bool,
    /// Counts connections a deadline closed.
    metrics: Arc<Metrics>,
}

impl<S> DeadlineIo<S> {
    /// Wraps `inner`, accepted just now.
    pub fn new(inner: S, phase: ConnectionPhase, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            phase,
            read_timer: None,
            read_timer_at: None,
            write_timer: None,
            write_stalled: false,
            metrics,
        }
    }

    fn drop_timers(&mut self) {
        self.read_timer = None;
        self.read_timer_at = None;
        self.write_timer = None;
    }

    fn timed_out(&self, what: &str) -> io::Error {
        Metrics::inc(&self.metrics.deadline_closes);
        io::Error::new(io::ErrorKind::TimedOut, format!("client {what} too slowly"))
    }

    /// A read is pending: arm the phase's deadline and fail once it passes.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.phase.is_upgraded() {
            self.drop_timers();
            return Poll::Pending;
        }
        let deadline = {
            let mut state = self.phase.state.lock().unwrap_or_else(|e| e.into_inner());
            match &state.read_waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => state.read_waker = Some(cx.waker().clone()),
            }
            state.phase.read_deadline()
        };
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        let timer = self
            .read_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if self.read_timer_at != Some(deadline) {
            timer.as_mut().reset(deadline);
            self.read_timer_at = Some(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let mut state = self.phase.state.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(state.phase, Phase::ReadingBody { .. }) {
                    state.body_timed_out = true;
                }
                drop(state);
                Poll::Ready(Err(self.timed_out("sent its request")))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// A write is pending: fail once it has made no progress for `write_stall`.
    fn poll_write_deadline<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if self.phase.is_upgraded() {
            self.drop_timers();
            return Poll::Pending;
        }
        let stalled = std::mem::replace(&mut self.write_stalled, true);
        let timer = match &mut self.write_timer {
            Some(timer) if stalled => timer,
            Some(timer) => {
                timer
                    .as_mut()
                    .reset(Instant::now() + self.phase.timeouts.write_stall);
                timer
            }
            None => self.write_timer.insert(Box::pin(tokio::time::sleep_until(
                Instant::now() + self.phase.timeouts.write_stall,
            ))),
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.timed_out("read its response"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeadlineIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && !this.phase.is_upgraded() {
                    this.phase.update(|phase, _, now| phase.on_bytes(now));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_read_deadline(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.poll_write_deadline(cx),
            ready => {
                this.write_stalled = false;
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_write_deadline(cx),
            ready => {
                this.write_stalled = false;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_write_deadline(cx),
            ready => {
                this.write_stalled = false;
                ready
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.poll_write_deadline(cx),
            ready => ready,
        }
    }
}

/// Which end of an exchange a [`PhaseBody`] marks.
#[derive(Debug, Clone, Copy)]
enum Marks {
    RequestBody,
    ResponseBody,
}

/// A request or response body that reports its end (or drop) to the
/// connection's phase.
#[derive(Debug)]
pub struct PhaseBody<B> {
    inner: B,
    phase: ConnectionPhase,
    marks: Marks,
    done: bool,
}

impl<B> PhaseBody<B> {
    /// A request body: its end stops the body deadline.
    pub fn request(inner: B, phase: ConnectionPhase) -> Self {
        Self {
            inner,
            phase,
            marks: Marks::RequestBody,
            done: false,
        }
    }

    /// A response body: its end starts the keep-alive deadline.
    pub fn response(inner: B, phase: ConnectionPhase) -> Self {
        Self {
            inner,
            phase,
            marks: Marks::ResponseBody,
            done: false,
        }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            match self.marks {
                Marks::RequestBody => self.phase.body_done(),
                Marks::ResponseBody => self.phase.response_done(),
            }
        }
    }
}

impl<B> Drop for PhaseBody<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B> Body for PhaseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            this.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            first_byte: Duration::from_secs(5),
            head: Duration::from_secs(10),
            body: Duration::from_secs(7),
            keep_alive: Duration::from_secs(30),
            write_stall: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_first_request_is_timed_from_accept() {
        let t = timeouts();
        let accept = Instant::now();
        let phase = Phase::accepted(&t, accept);
        assert_eq!(phase.read_deadline(), Some(accept + t.first_byte));
        // The head deadline still counts from accept, not from the first byte.
        let phase = phase.on_bytes(accept + Duration::from_secs(4));
        assert_eq!(phase.read_deadline(), Some(accept + t.head));
        // More bytes do not move it.
        let phase = phase.on_bytes(accept + Duration::from_secs(9));
        assert_eq!(phase.read_deadline(), Some(accept + t.head));
    }

    #[test]
    fn a_first_byte_timeout_beyond_the_head_timeout_is_capped() {
        let mut t = timeouts();
        t.first_byte = Duration::from_secs(60);
        let accept = Instant::now();
        assert_eq!(
            Phase::accepted(&t, accept).read_deadline(),
            Some(accept + t.head)
        );
    }

    #[test]
    fn a_body_has_its_own_deadline_and_handlers_none() {
        let t = timeouts();
        let accept = Instant::now();
        let head = accept + Duration::from_secs(1);
        let phase = Phase::accepted(&t, accept)
            .on_bytes(accept)
            .on_request(&t, head, true);
        assert_eq!(phase.read_deadline(), Some(head + t.body));
        assert_eq!(phase.on_body_done().read_deadline(), None);
        let no_body = Phase::accepted(&t, accept).on_request(&t, head, false);
        assert_eq!(no_body, Phase::Handling);
    }

    #[test]
    fn kept_alive_connections_idle_out_then_get_a_fresh_head_deadline() {
        let t = timeouts();
        let accept = Instant::now();
        let done = accept + Duration::from_secs(2);
        let idle = Phase::accepted(&t, accept)
            .on_request(&t, accept, false)
            .on_response_done(&t, done);
        assert_eq!(idle.read_deadline(), Some(done + t.keep_alive));
        let next = done + Duration::from_secs(20);
        assert_eq!(idle.on_bytes(next).read_deadline(), Some(next + t.head));
    }

    #[test]
    fn a_pipelined_request_is_not_reset_by_the_previous_response() {
        let t = timeouts();
        let now = Instant::now();
        let reading = Phase::accepted(&t, now).on_request(&t, now, true);
        assert_eq!(reading.on_response_done(&t, now), reading);
    }

    #[test]
    fn an_upgrade_ends_every_deadline() {
        let t = timeouts();
        let now = Instant::now();
        let phase = Phase::Upgraded
            .on_bytes(now)
            .on_request(&t, now, true)
            .on_response_done(&t, now);
        assert_eq!(phase, Phase::Upgraded);
        assert_eq!(phase.read_deadline(), None);
    }
}
