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
//!   [`MIN_BODY_RATE`] bytes a second on average (a slow-drip upload is cut off);
//! - **write**: a response that makes no progress for the idle timeout (a client that stopped
//!   reading) fails the connection.
//!
//! An upgraded connection (a WebSocket) is no longer HTTP: reads pass straight through, no
//! deadline applies (the WebSocket has its own keep-alive and client timeout), and it is never
//! evicted. Writes always pass straight through.
//!
//! A request the scanner detaches (a long-lived client request, see `detach`) ends the HTTP
//! server's turn: once every request before it has been answered, hyper reads end of stream,
//! flushes, and "shuts down" — which leaves the socket open — and the edge takes the socket
//! back with [`Conn::into_detached`].

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

use crate::head::{Detached, Limits, Phase, Rejection, Scanner};

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
    /// Responses done (sent or dropped), ever.
    pub(crate) done: AtomicU64,
    /// The connection switched protocols (a WebSocket).
    pub(crate) upgraded: AtomicBool,
    /// When the connection last completed something (accepted, a response finished), in ms
    /// since the table's epoch: how long it has been useless, for eviction.
    pub(crate) last_progress_ms: AtomicU64,
    /// The connection has answered a request: a client that uses it, unlike a silent socket.
    pub(crate) served: AtomicBool,
    /// Set by the table to close the connection (it is idle and the table is full).
    pub(crate) evicted: AtomicBool,
    /// The reader to wake when the state above changes.
    pub(crate) waker: AtomicWaker,
    /// A refused head: its sequence number (1-based) and why.
    pub(crate) rejection: Mutex<Option<Box<(u64, Rejection)>>>,
}

impl ConnState {
    pub(crate) fn new(now_ms: u64) -> ConnState {
        ConnState {
            in_flight: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            last_progress_ms: AtomicU64::new(now_ms),
            served: AtomicBool::new(false),
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
        if slot.as_ref().is_some_and(|b| b.0 == seq) {
            slot.take().map(|b| b.1)
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
    WriteTimeout,
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
    /// The server's turn ended at a detached request: shutting down leaves the socket open.
    detached: bool,
    /// Everything HTTP/1 needs; dropped once the connection is upgraded, so a WebSocket keeps
    /// only the socket, the shared state and its slot.
    http: Option<Box<Http>>,
    /// The connection's place under the socket cap, held for as long as the socket lives.
    slot: crate::Slot,
}

/// The HTTP/1 side of a connection: the scanner, what it validated, and the deadlines.
struct Http {
    state: Arc<ConnState>,
    scanner: Scanner,
    timeouts: Timeouts,
    /// Validated bytes not yet handed to hyper, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// After the synthetic request: nothing more is read.
    eof_after_out: bool,
    wait: Wait,
    /// `scanner.heads()` when `wait` was last brought up to date.
    wait_heads: u64,
    timer: Option<Pin<Box<Sleep>>>,
    /// Armed while a write makes no progress.
    write_timer: Option<Pin<Box<Sleep>>>,
    on_end: Option<fn(Ending)>,
    /// `state.done` when this connection's turn began: its own answers are the ones after.
    base_done: u64,
    /// Bytes read before this turn began (after a detached request), scanned first.
    pending_input: Vec<u8>,
}

impl<IO> Conn<IO> {
    #[cfg(test)]
    pub(crate) fn new(
        io: IO,
        limits: Limits,
        timeouts: Timeouts,
        state: Arc<ConnState>,
        on_end: fn(Ending),
        slot: crate::Slot,
    ) -> Conn<IO> {
        Conn::resume(
            io,
            limits,
            Arc::from([]),
            timeouts,
            state,
            on_end,
            slot,
            None,
        )
    }

    /// A connection for the HTTP server's next turn: detaching GETs to `detach`, scanning
    /// `after` (what followed a detached request) first. `after` is `None` for a new
    /// connection, whose first byte must come within the header timeout.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn resume(
        io: IO,
        limits: Limits,
        detach: Arc<[String]>,
        timeouts: Timeouts,
        state: Arc<ConnState>,
        on_end: fn(Ending),
        slot: crate::Slot,
        after: Option<Vec<u8>>,
    ) -> Conn<IO> {
        let now = Instant::now();
        let (wait, pending_input) = match after {
            None => (Wait::First(now), Vec::new()),
            Some(after) => (Wait::Idle(now), after),
        };
        let base_done = state.done.load(Ordering::Acquire);
        Conn {
            io,
            detached: false,
            http: Some(Box::new(Http {
                state,
                scanner: Scanner::detaching(limits, detach),
                timeouts,
                out: Vec::new(),
                out_pos: 0,
                eof_after_out: false,
                wait,
                wait_heads: 0,
                timer: None,
                write_timer: None,
                on_end: Some(on_end),
                base_done,
                pending_input,
            })),
            slot,
        }
    }

    /// The socket and the detached request, if this turn ended at one.
    pub(crate) fn into_detached(self) -> Option<(IO, Detached, crate::Slot)> {
        if !self.detached {
            return None;
        }
        let detached = self.http?.scanner.take_detached()?;
        Some((self.io, detached, self.slot))
    }
}

impl Http {
    fn end(&mut self, why: Ending) {
        if let Some(on_end) = self.on_end.take() {
            on_end(why);
        }
    }

    /// Brings `wait` up to date with the scanner and the server.
    fn refresh_wait(&mut self, now: Instant) {
        let state = &self.state;
        let busy =
            state.in_flight.load(Ordering::Acquire) > 0 || state.upgraded.load(Ordering::Acquire);
        // A head completed since the wait began: whatever follows is a new wait.
        let heads = self.scanner.heads();
        let fresh = heads != self.wait_heads;
        self.wait_heads = heads;
        self.wait = match (self.scanner.phase(), self.wait) {
            (Phase::Passthrough | Phase::Failed | Phase::Detached, _) => Wait::None,
            (Phase::Head, Wait::Head(since)) if !fresh => Wait::Head(since),
            (Phase::Head, Wait::First(since)) if heads == 0 => Wait::Head(since),
            (Phase::Head, _) => Wait::Head(now),
            (Phase::Body, Wait::Body(since, n)) if !fresh => Wait::Body(since, n),
            (Phase::Body, _) => Wait::Body(now, 0),
            (Phase::Idle, Wait::First(since)) if heads == 0 => Wait::First(since),
            (Phase::Idle, _) if busy => Wait::None,
            (Phase::Idle, Wait::Idle(since)) if !fresh => Wait::Idle(since),
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
        *self.state.rejection.lock() = Some(Box::new((self.scanner.heads() + 1, rejection)));
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
        let Conn {
            io,
            http: slot,
            detached,
            ..
        } = self.get_mut();
        loop {
            let Some(http) = slot.as_mut() else {
                // An upgraded connection: straight through, no deadlines, nothing kept.
                return Pin::new(io).poll_read(cx, buf);
            };
            if http.drain_out(buf) {
                return Poll::Ready(Ok(()));
            }
            if http.eof_after_out {
                // Nothing more from this client: the answer to the synthetic request closes the
                // connection. (End of stream here would abort that answer.)
                http.state.waker.register(cx.waker());
                if http.state.evicted.load(Ordering::Acquire) {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
            if http.scanner.phase() == Phase::Passthrough {
                if http.state.upgraded.load(Ordering::Acquire) {
                    // Upgraded: the HTTP state goes, the socket stays.
                    *slot = None;
                    continue;
                }
                // An upgrade was asked for and not (yet) granted: nothing is scanned any more,
                // but the connection can still be evicted (a refusal closes it anyway).
                http.state.waker.register(cx.waker());
                if http.state.evicted.load(Ordering::Acquire) {
                    http.end(Ending::Evicted);
                    return Poll::Ready(Ok(()));
                }
                return Pin::new(&mut *io).poll_read(cx, buf);
            }
            http.state.waker.register(cx.waker());
            if http.state.evicted.load(Ordering::Acquire) {
                http.end(Ending::Evicted);
                return Poll::Ready(Ok(()));
            }
            if http.scanner.phase() == Phase::Detached {
                // Every request before the detached one answered: the server's turn is over.
                let done = http.state.done.load(Ordering::Acquire) - http.base_done;
                if done >= http.scanner.heads() {
                    *detached = true;
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
            http.refresh_wait(Instant::now());
            if let Some(ending) = http.poll_deadline(cx) {
                http.end(ending);
                if ending == Ending::HeadTimeout {
                    http.reject(Rejection::Timeout(
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
            let pending_input = std::mem::take(&mut http.pending_input);
            let input = if pending_input.is_empty() {
                let mut read = ReadBuf::new(&mut chunk);
                match Pin::new(&mut *io).poll_read(cx, &mut read) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                let n = read.filled().len();
                &chunk[..n]
            } else {
                &pending_input[..]
            };
            if input.is_empty() {
                // End of stream; a partial head is dropped with it.
                return Poll::Ready(Ok(()));
            }
            if let Wait::Body(since, received) = http.wait {
                http.wait = Wait::Body(since, received + input.len() as u64);
            }
            match http.scanner.feed(input, &mut http.out) {
                Ok(()) => {}
                Err(Rejection::MalformedBody(why)) => {
                    // The head is with the server already: end the stream under it.
                    http.end(Ending::Malformed);
                    http.out.clear();
                    http.out_pos = 0;
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
                Err(rejection) => {
                    http.end(Ending::Malformed);
                    http.reject(rejection);
                }
            }
        }
    }
}

impl<IO> Conn<IO> {
    /// Wraps a write: an HTTP connection whose writes make no progress for the idle timeout
    /// (a client that stopped reading its response) fails instead of holding its socket forever.
    /// Upgraded connections have their own stall handling.
    fn guard_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some(http) = self.http.as_mut() else {
            return result;
        };
        if result.is_ready() {
            http.write_timer = None;
            return result;
        }
        let idle = http.timeouts.idle;
        let timer = http
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if timer.as_mut().poll(cx).is_ready() {
            http.end(Ending::WriteTimeout);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read its response for the idle timeout",
            )));
        }
        Poll::Pending
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, data);
        this.guard_write(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.guard_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.guard_write(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.detached {
            // The socket outlives this turn of the HTTP server.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn make_conn(io: tokio::io::DuplexStream) -> (Conn<tokio::io::DuplexStream>, Arc<ConnState>) {
        let state = Arc::new(ConnState::new(0));
        let table = crate::tests::table(8);
        let (slot, _) = table.admit().unwrap_or_else(|| unreachable!());
        let conn = Conn::new(
            io,
            Limits::default(),
            Timeouts {
                header: Duration::from_secs(10),
                idle: Duration::from_secs(120),
            },
            state.clone(),
            |_| {},
            slot,
        );
        (conn, state)
    }

    /// Reads what the server side would see until it is pending for `within`; `None` at end of
    /// stream.
    async fn read_some(
        conn: &mut Conn<tokio::io::DuplexStream>,
        within: Duration,
    ) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 8192];
        match tokio::time::timeout(within, conn.read(&mut buf)).await {
            Ok(Ok(0)) => None,
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            Ok(Err(_)) => None,
            Err(_) => Some(Vec::new()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_connection_is_idle_only_after_its_requests() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (mut conn, state) = make_conn(server);
        // A whole request in one write, then the server works on it.
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap_or_default();
        assert!(read_some(&mut conn, Duration::from_millis(1))
            .await
            .is_some_and(|b| !b.is_empty()));
        state.in_flight.store(1, Ordering::Release);
        // Long past the header timeout while the response is being produced: still open.
        assert_eq!(
            read_some(&mut conn, Duration::from_secs(30)).await,
            Some(Vec::new())
        );
        state.in_flight.store(0, Ordering::Release);
        // Idle now: open for the idle timeout (well past the header timeout of the start)...
        assert_eq!(
            read_some(&mut conn, Duration::from_secs(100)).await,
            Some(Vec::new())
        );
        // ... a second request is welcome, and restarts the idle period once answered ...
        client
            .write_all(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap_or_default();
        assert!(read_some(&mut conn, Duration::from_millis(1))
            .await
            .is_some_and(|b| !b.is_empty()));
        assert_eq!(
            read_some(&mut conn, Duration::from_secs(100)).await,
            Some(Vec::new())
        );
        // ... and then the idle timeout closes it.
        assert_eq!(read_some(&mut conn, Duration::from_secs(30)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_detached_request_ends_the_servers_turn_once_it_has_answered() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let state = Arc::new(ConnState::new(0));
        let table = crate::tests::table(8);
        let (slot, _) = table.admit().unwrap_or_else(|| unreachable!());
        let timeouts = Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        };
        let paths: Arc<[String]> = Arc::from(vec!["/client".to_owned()]);
        let mut conn = Conn::resume(
            server,
            Limits::default(),
            paths,
            timeouts,
            state.clone(),
            |_| {},
            slot,
            Some(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
        );
        client
            .write_all(b"GET /client?id=1 HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n")
            .await
            .unwrap_or_default();
        // What came before the turn began is served first; then the server's answer to it is
        // awaited, however long it takes ...
        let first = read_some(&mut conn, Duration::from_millis(1)).await;
        assert_eq!(
            first.as_deref(),
            Some(&b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"[..])
        );
        assert_eq!(
            read_some(&mut conn, Duration::from_secs(300)).await,
            Some(Vec::new())
        );
        // ... and once it is done, the server reads end of stream and its shutdown leaves the
        // socket open.
        state.done.fetch_add(1, Ordering::AcqRel);
        assert_eq!(read_some(&mut conn, Duration::from_millis(1)).await, None);
        conn.shutdown().await.unwrap_or_else(|_| unreachable!());
        let (mut io, detached, _slot) = conn.into_detached().unwrap_or_else(|| unreachable!());
        assert_eq!(
            detached.head,
            b"GET /client?id=1 HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        assert_eq!(detached.rest, b"GET /b HTTP/1.1\r\n");
        io.write_all(b"still open")
            .await
            .unwrap_or_else(|_| unreachable!());
        let mut back = [0u8; 10];
        client
            .read_exact(&mut back)
            .await
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(&back, b"still open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_its_response_is_cut_off() {
        let (_client, server) = tokio::io::duplex(64);
        let (mut conn, _) = make_conn(server);
        // The client reads nothing: the pipe fills, then the write waits.
        let big = vec![b'x'; 1024];
        let written = tokio::time::timeout(Duration::from_secs(1), conn.write_all(&big)).await;
        assert!(written.is_err(), "the write is stuck");
        let result = tokio::time::timeout(Duration::from_secs(200), conn.write_all(&big)).await;
        assert!(
            matches!(result, Ok(Err(ref e)) if e.kind() == io::ErrorKind::TimedOut),
            "{result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_or_slow_head_ends_the_connection() {
        let (_client, server) = tokio::io::duplex(1024);
        let (mut conn, _) = make_conn(server);
        assert_eq!(
            read_some(&mut conn, Duration::from_secs(9)).await,
            Some(Vec::new())
        );
        assert_eq!(
            read_some(&mut conn, Duration::from_secs(2)).await,
            None,
            "silent"
        );

        let (mut client, server) = tokio::io::duplex(1024);
        let (mut conn, state) = make_conn(server);
        client
            .write_all(b"GET / HTTP/1.1\r\nHo")
            .await
            .unwrap_or_default();
        assert_eq!(
            read_some(&mut conn, Duration::from_secs(9)).await,
            Some(Vec::new())
        );
        // The head timed out: the synthetic request stands in for it, and the rejection waits.
        let synthetic = read_some(&mut conn, Duration::from_secs(2))
            .await
            .unwrap_or_default();
        assert!(synthetic.starts_with(b"GET / HTTP/1.1"), "{synthetic:?}");
        assert!(matches!(
            state.take_rejection(1),
            Some(Rejection::Timeout(_))
        ));
    }
}
