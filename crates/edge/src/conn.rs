//! One accepted connection as the HTTP server sees it: the socket behind the request scanner,
//! with the connection's deadlines.
//!
//! [`Conn`] sits between the socket (plain or TLS) and hyper. Reads go through the
//! [`Scanner`]: hyper sees only validated heads and the bytes that follow them. A bad head is
//! replaced by a minimal synthetic request after which the connection ends, and the rejection
//! waits in [`ConnState`] for the service to answer it (with an `ErrorDetail` and
//! `Connection: close`) in its turn, after any request pipelined before it.
//!
//! Deadlines, all enforced here:
//! - **head**: a request head must arrive within the header timeout of its first byte (408);
//!   a new connection must send its first byte within the header timeout (else closed);
//! - **idle**: between requests — no request being read, no response being sent — a connection
//!   is closed after the idle timeout;
//! - **body**: after a grace of one header timeout, a request body must keep arriving at
//!   [`MIN_BODY_RATE`] bytes a second on average (a slow-drip upload is cut off).
//!
//! An upgraded connection (a WebSocket) is no longer HTTP: reads pass straight through, no
//! deadline applies (the WebSocket has its own keep-alive and client timeout), and it is never
//! evicted. Writes always pass straight through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::head::{Limits, Phase, Rejection, Scanner};

/// The slowest average a request body may arrive at, after the grace period.
pub const MIN_BODY_RATE: u64 = 1024;

/// What stands in for a refused head: a request the service recognises by its sequence number.
const SYNTHETIC: &[u8] = b"GET / HTTP/1.1\r\nhost: rejected\r\nconnection: close\r\n\r\n";

/// The deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// What a connection shares with its service and with the connection table.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Responses being produced or sent.
    pub(crate) in_flight: AtomicUsize,
    /// The connection switched protocols (a WebSocket).
    pub(crate) upgraded: AtomicBool,
    /// When the connection last completed something (accepted, a response finished), in ms
    /// since the table's epoch: how long it has been useless, for eviction.
    pub(crate) last_progress_ms: AtomicU64,
    /// Set by the table to close the connection (it is idle and the table is full).
    pub(crate) evicted: AtomicBool,
    /// The reader to wake when the state above changes.
    pub(crate) waker: AtomicWaker,
    /// A refused head: its sequence number (1-based) and why.
    pub(crate) rejection: Mutex<Option<(u64, Rejection)>>,
}

impl ConnState {
    pub(crate) fn new(now_ms: u64) -> ConnState {
        ConnState {
            in_flight: AtomicUsize::new(0),
            upgraded: AtomicBool::new(false),
            last_progress_ms: AtomicU64::new(now_ms),
            evicted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            rejection: Mutex::new(None),
        }
    }

    /// Whether the table may close this connection to make room.
    pub(crate) fn evictable(&self) -> bool {
        !self.upgraded.load(Ordering::Acquire) && self.in_flight.load(Ordering::Acquire) == 0
    }

    pub(crate) fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Takes the rejection if it is for request `seq`.
    pub(crate) fn take_rejection(&self, seq: u64) -> Option<Rejection> {
        let mut slot = self.rejection.lock();
        if slot.as_ref().is_some_and(|(s, _)| *s == seq) {
            slot.take().map(|(_, r)| r)
        } else {
            None
        }
    }
}

/// Why a connection ended early, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Malformed,
    HeadTimeout,
    SilentTimeout,
    IdleTimeout,
    BodyTimeout,
    Evicted,
}

/// What the connection is waiting for, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Nothing: the server is working on a response, or the connection is upgraded.
    None,
    /// The first byte of the connection.
    First(Instant),
    /// The rest of a head started at this instant.
    Head(Instant),
    /// The next request, since this instant.
    Idle(Instant),
    /// A body started at this instant, `received` bytes so far.
    Body(Instant, u64),
}

/// A connection with its scanner and deadlines (see the module docs).
pub(crate) struct Conn<IO> {
    io: IO,
    scanner: Scanner,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    /// Validated bytes not yet handed to hyper, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// After the synthetic request: nothing more is read.
    eof_after_out: bool,
    wait: Wait,
    timer: Option<Pin<Box<Sleep>>>,
    on_end: Option<Box<dyn FnOnce(Ending) + Send>>,
    /// The connection's place under the socket cap, held for as long as the socket lives.
    _slot: crate::Slot,
}

impl<IO> Conn<IO> {
    pub(crate) fn new(
        io: IO,
        limits: Limits,
        timeouts: Timeouts,
        state: Arc<ConnState>,
        on_end: Box<dyn FnOnce(Ending) + Send>,
        slot: crate::Slot,
    ) -> Conn<IO> {
        Conn {
            io,
            scanner: Scanner::new(limits),
            state,
            timeouts,
            out: Vec::new(),
            out_pos: 0,
            eof_after_out: false,
            wait: Wait::First(Instant::now()),
            timer: None,
            on_end: Some(on_end),
            _slot: slot,
        }
    }

    fn end(&mut self, why: Ending) {
        if let Some(on_end) = self.on_end.take() {
            on_end(why);
        }
    }

    /// Brings `wait` up to date with the scanner and the server.
    fn refresh_wait(&mut self, now: Instant) {
        let busy = self.state.in_flight.load(Ordering::Acquire) > 0
            || self.state.upgraded.load(Ordering::Acquire);
        self.wait = match (self.scanner.phase(), self.wait) {
            (Phase::Passthrough | Phase::Failed, _) => Wait::None,
            (Phase::Head, Wait::Head(since)) => Wait::Head(since),
            (Phase::Head, Wait::First(since)) => Wait::Head(since),
            (Phase::Head, _) => Wait::Head(now),
            (Phase::Body, Wait::Body(since, n)) => Wait::Body(since, n),
            (Phase::Body, _) => Wait::Body(now, 0),
            (Phase::Idle, Wait::First(since)) => Wait::First(since),
            (Phase::Idle, _) if busy => Wait::None,
            (Phase::Idle, Wait::Idle(since)) => Wait::Idle(since),
            (Phase::Idle, _) => Wait::Idle(now),
        };
    }

    /// When the current wait runs out.
    fn deadline(&self) -> Option<Instant> {
        match self.wait {
            Wait::None => None,
            Wait::First(since) | Wait::Head(since) => Some(since + self.timeouts.header),
            Wait::Idle(since) => Some(since + self.timeouts.idle),
            Wait::Body(since, received) => {
                // Grace, then the time `received` bytes buy at the minimum rate.
                let bought = Duration::from_millis(received.saturating_mul(1000) / MIN_BODY_RATE);
                Some(since + self.timeouts.header + bought)
            }
        }
    }

    /// Polls the deadline; `Some` with the way the connection ends if it passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Option<Ending> {
        let Some(deadline) = self.deadline() else {
            self.timer = None;
            return None;
        };
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        if timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        Some(match self.wait {
            Wait::First(_) => Ending::SilentTimeout,
            Wait::Head(_) => Ending::HeadTimeout,
            Wait::Idle(_) => Ending::IdleTimeout,
            Wait::Body(..) => Ending::BodyTimeout,
            Wait::None => return None,
        })
    }

    /// Refuses the head being read: the synthetic request, then nothing more.
    fn reject(&mut self, rejection: Rejection) {
        *self.state.rejection.lock() = Some((self.scanner.heads() + 1, rejection));
        self.scanner.fail();
        self.out.extend_from_slice(SYNTHETIC);
        self.eof_after_out = true;
        self.wait = Wait::None;
        self.timer = None;
    }

    /// Copies pending validated bytes into `buf`; true if it copied any.
    fn drain_out(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let pending = &self.out[self.out_pos..];
        if pending.is_empty() {
            return false;
        }
        let n = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..n]);
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            // Idle connections keep no buffer.
            self.out = Vec::new();
            self.out_pos = 0;
        }
        true
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.drain_out(buf) {
                return Poll::Ready(Ok(()));
            }
            if this.eof_after_out {
                // Nothing more from this client: the answer to the synthetic request closes the
                // connection. (End of stream here would abort that answer.)
                this.state.waker.register(cx.waker());
                if this.state.evicted.load(Ordering::Acquire) {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
            if this.scanner.phase() == Phase::Passthrough {
                // An upgraded connection: straight through, no deadlines, nothing kept.
                this.timer = None;
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            this.state.waker.register(cx.waker());
            if this.state.evicted.load(Ordering::Acquire) {
                this.end(Ending::Evicted);
                return Poll::Ready(Ok(()));
            }
            this.refresh_wait(Instant::now());
            if let Some(ending) = this.poll_deadline(cx) {
                this.end(ending);
                if ending == Ending::HeadTimeout {
                    this.reject(Rejection::Timeout(
                        "the request head did not arrive in time".into(),
                    ));
                    continue;
                }
                if ending == Ending::BodyTimeout {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request body did not arrive in time",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 4096];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let input = read.filled();
            if input.is_empty() {
                // End of stream; a partial head is dropped with it.
                return Poll::Ready(Ok(()));
            }
            if let Wait::Body(since, received) = this.wait {
                this.wait = Wait::Body(since, received + input.len() as u64);
            }
            if let Err(rejection) = this.scanner.feed(input, &mut this.out) {
                this.end(Ending::Malformed);
                this.reject(rejection);
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
