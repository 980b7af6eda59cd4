//! The HTTP transports: Server-Sent Events and Long Polling, as ASP.NET Core serves them.
//!
//! The connection task does not know which transport it runs on: it reads and writes a
//! `Stream + Sink` of WebSocket messages. For the HTTP transports that is a [`PipeTransport`],
//! one side of a [`Pipe`]; the other side is whichever HTTP requests the client makes:
//!
//! - **SSE**: `GET /client/?hub=…&id=…` with `Accept: text/event-stream` starts the connection;
//!   its response body is the [`SseBody`], which writes whatever the task queued as one
//!   `data:` event per batch (every line of it a `data:` line). Sends are `POST`s to the same
//!   URL. Dropping the response (the client went away) ends the connection.
//! - **Long Polling**: the first `GET` starts the connection and is answered 200 at once (the
//!   client waits for it before it sends the handshake). Every later `GET` is a poll: answered
//!   with everything queued (200), or 200 and empty after [`POLL_TIMEOUT`], or 204 once the
//!   connection has ended. A new poll supersedes a pending one (answered 200 and empty). Sends
//!   are `POST`s; `DELETE` ends the connection (202). A client that has not polled for the
//!   client timeout is gone.
//!
//! Requests after the first find their connection by the `id` they present (the connection
//! token, or the version-0 connection id), exactly as verified when the connection opened; the
//! table holds only open HTTP-transport connections of this gateway.
//!
//! Bounds: a send body is at most [`MAX_SEND_BYTES`] (1 MiB, Azure's limit for these
//! transports); at most [`MAX_INBOUND_BYTES`] of sends wait for the task (a further send waits
//! for room, then gives up with 429); the task's writes wait while [`MAX_OUTBOUND_BYTES`] are
//! queued for the client and no poll takes them (its outbound queue then overflows as for a
//! slow WebSocket).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use bytes::{Bytes, BytesMut};
use futures::task::AtomicWaker;
use futures::{Sink, Stream};
use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};

/// The answers the local handlers and relayed requests share.
pub(crate) const IN_USE: &str =
    "This connection token is already used by an open connection; negotiate again.";
pub(crate) const NOT_FOUND: &str = "No Connection with that ID.";
pub(crate) const NOT_LONG_POLLING: &str =
    "Cannot terminate this connection using the DELETE endpoint.";

/// How long a poll waits for something to send (ASP.NET Core's `PollTimeout`).
pub(crate) const POLL_TIMEOUT: Duration = Duration::from_secs(90);
/// The largest send body.
pub(crate) const MAX_SEND_BYTES: usize = 1024 * 1024;
/// The answer to a send over [`MAX_SEND_BYTES`].
pub(crate) const SEND_TOO_LARGE: &str = "A send may carry at most 1048576 bytes.";
/// The answer to a send the connection does not take in time (its queue stays full).
pub(crate) const NOT_READING: &str = "The connection is not reading its sends; try again.";
/// Sends waiting for the connection task, in bytes.
pub(crate) const MAX_INBOUND_BYTES: usize = 2 * MAX_SEND_BYTES;
/// Frames waiting for the client, in bytes, before the task's writes wait.
pub(crate) const MAX_OUTBOUND_BYTES: usize = 1024 * 1024;

/// Which HTTP transport a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ServerSentEvents,
    LongPolling,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::ServerSentEvents => "sse",
            Kind::LongPolling => "longpolling",
        }
    }
}

/// The open HTTP-transport connections of this gateway, by the `id` their client presents.
#[derive(Default)]
pub(crate) struct Pipes {
    map: Mutex<HashMap<Box<str>, Arc<Pipe>>>,
}

impl Pipes {
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Pipe>> {
        self.map.lock().get(id).cloned()
    }

    /// Opens a pipe under `id`; `None` if one is open under it already.
    pub(crate) fn open(
        self: &Arc<Self>,
        id: &str,
        kind: Kind,
        hub: &str,
        user: Option<&str>,
        client_timeout: Duration,
    ) -> Option<PipeTransport> {
        let mut map = self.map.lock();
        if map.contains_key(id) {
            return None;
        }
        let pipe = Arc::new(Pipe {
            kind,
            needs_token: switchboard_auth::is_v0_connection_id(id),
            hub: hub.into(),
            user: user.map(Into::into),
            state: Mutex::new(State {
                inbound: VecDeque::new(),
                inbound_bytes: 0,
                outbound: BytesMut::new(),
                client_closed: false,
                server_closed: false,
                polling: false,
                poll_generation: 0,
                last_poll: Instant::now(),
            }),
            task: AtomicWaker::new(),
            reader: AtomicWaker::new(),
            room: tokio::sync::Notify::new(),
        });
        map.insert(id.into(), pipe.clone());
        Some(PipeTransport {
            pipe,
            pipes: self.clone(),
            id: id.into(),
            client_timeout,
            no_poll: None,
        })
    }
}

struct State {
    /// Sends not yet read by the task.
    inbound: VecDeque<Bytes>,
    inbound_bytes: usize,
    /// Frames for the client, concatenated.
    outbound: BytesMut,
    /// The client is gone (DELETE, or the SSE response was dropped).
    client_closed: bool,
    /// The connection task is done with the transport.
    server_closed: bool,
    /// Long Polling: a poll is waiting, and which one (a newer poll supersedes it).
    polling: bool,
    poll_generation: u64,
    /// Long Polling: when the last poll ended (or the connection started).
    last_poll: Instant,
}

/// One HTTP-transport connection's buffers, shared by its task and its requests.
pub(crate) struct Pipe {
    pub(crate) kind: Kind,
    /// Its `id` is a version-0 connection id, which is not secret (the app and the REST API see
    /// it): every request must then prove the user with an access token.
    pub(crate) needs_token: bool,
    pub(crate) hub: Box<str>,
    pub(crate) user: Option<Box<str>>,
    state: Mutex<State>,
    /// The connection task: something arrived, the client left, room for writes, a poll began
    /// or ended.
    task: AtomicWaker,
    /// The SSE body or the pending poll: something to send, or the connection ended.
    reader: AtomicWaker,
    /// Sends waiting for room.
    room: tokio::sync::Notify,
}

/// What a send found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Queued,
    /// The connection has ended.
    Closed,
    /// No room within the wait.
    Busy,
}

/// What a poll found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Polled {
    Data(Bytes),
    /// Nothing within the poll timeout, or a newer poll took over.
    Empty,
    /// The connection has ended.
    Closed,
}

impl Pipe {
    /// Queues a send body for the task, waiting up to `wait` for room.
    pub(crate) async fn send(&self, body: Bytes, wait: Duration) -> Sent {
        let deadline = Instant::now() + wait;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut state = self.state.lock();
                if state.client_closed || state.server_closed {
                    return Sent::Closed;
                }
                if state.inbound_bytes == 0 || state.inbound_bytes + body.len() <= MAX_INBOUND_BYTES
                {
                    state.inbound_bytes += body.len();
                    if !body.is_empty() {
                        state.inbound.push_back(body);
                    }
                    drop(state);
                    self.task.wake();
                    return Sent::Queued;
                }
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Sent::Busy;
            }
        }
    }

    /// The client ends the connection (Long Polling's DELETE).
    pub(crate) fn close_by_client(&self) {
        self.state.lock().client_closed = true;
        self.task.wake();
        self.reader.wake();
        self.room.notify_waiters();
    }

    /// A Long Polling poll: waits up to `timeout` for frames to send.
    pub(crate) async fn poll(self: &Arc<Self>, timeout: Duration) -> Polled {
        let generation = {
            let mut state = self.state.lock();
            state.poll_generation += 1;
            state.polling = true;
            state.poll_generation
        };
        // Wake a superseded poll (and the task: its no-poll timer stops).
        self.reader.wake();
        self.task.wake();
        let _end = PollEnd {
            pipe: self.clone(),
            generation,
        };
        let wait = futures::future::poll_fn(|cx| {
            // A superseded poll must not register: it would take the newer poll's wake-up.
            if self.state.lock().poll_generation != generation {
                return Poll::Ready(Polled::Empty);
            }
            self.reader.register(cx.waker());
            let mut state = self.state.lock();
            if state.poll_generation != generation {
                drop(state);
                // Give the wake-up back to the poll that now waits.
                self.reader.wake();
                return Poll::Ready(Polled::Empty);
            }
            if !state.outbound.is_empty() {
                let data = state.outbound.split().freeze();
                drop(state);
                self.task.wake();
                return Poll::Ready(Polled::Data(data));
            }
            if state.server_closed || state.client_closed {
                return Poll::Ready(Polled::Closed);
            }
            Poll::Pending
        });
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Polled::Empty)
    }

    /// Takes what is queued for an SSE response, formatted as one event.
    fn poll_sse(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.reader.register(cx.waker());
        let mut state = self.state.lock();
        if !state.outbound.is_empty() {
            let data = state.outbound.split();
            drop(state);
            self.task.wake();
            return Poll::Ready(Some(sse_event(&data)));
        }
        if state.server_closed || state.client_closed {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// Ends a poll: unless a newer one took over, the connection has no poll from now on.
struct PollEnd {
    pipe: Arc<Pipe>,
    generation: u64,
}

impl Drop for PollEnd {
    fn drop(&mut self) {
        let mut state = self.pipe.state.lock();
        if state.poll_generation == self.generation {
            state.polling = false;
            state.last_poll = Instant::now();
        }
        drop(state);
        self.pipe.task.wake();
    }
}

/// `data` as one SSE event: every line a `data:` line, then a blank line. The client joins the
/// lines with `\n` again; JSON frames never need more than one, but a REST payload may carry
/// raw newlines.
pub(crate) fn sse_event(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    out.extend_from_slice(b"data: ");
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            // CR LF, a lone CR and a lone LF all end a line for an EventSource.
            b'\r' | b'\n' => {
                if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                out.extend_from_slice(b"\r\ndata: ");
            }
            byte => out.extend_from_slice(&[byte]),
        }
        i += 1;
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.freeze()
}

/// The response body of an SSE connection.
pub(crate) struct SseBody {
    pipe: Arc<Pipe>,
    /// The first bytes: a comment, so that every browser fires `open` at once.
    preamble: bool,
}

impl SseBody {
    pub(crate) fn new(pipe: Arc<Pipe>) -> SseBody {
        SseBody {
            pipe,
            preamble: true,
        }
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if std::mem::take(&mut self.preamble) {
            return Poll::Ready(Some(Ok(Bytes::from_static(b":\r\n"))));
        }
        self.pipe.poll_sse(cx).map(|data| data.map(Ok))
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        // The client went away (or the connection ended and the response is complete).
        self.pipe.close_by_client();
    }
}

/// The connection task's side of a pipe.
pub(crate) struct PipeTransport {
    pipe: Arc<Pipe>,
    pipes: Arc<Pipes>,
    id: Box<str>,
    client_timeout: Duration,
    /// Long Polling: fires when the client has not polled for the client timeout.
    no_poll: Option<Pin<Box<Sleep>>>,
}

impl PipeTransport {
    pub(crate) fn pipe(&self) -> &Arc<Pipe> {
        &self.pipe
    }
}

fn gone(why: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why)
}

impl PipeTransport {
    /// Long Polling: `Err` once the client has not polled for the client timeout (arming the
    /// timer otherwise). Checked by reads and by writes waiting for room, so a client that left
    /// without a DELETE is noticed whichever the task is doing.
    fn check_polled(&mut self, cx: &mut Context<'_>) -> Result<(), std::io::Error> {
        if self.pipe.kind != Kind::LongPolling {
            return Ok(());
        }
        let (deadline, polling) = {
            let state = self.pipe.state.lock();
            (state.last_poll + self.client_timeout, state.polling)
        };
        if polling {
            self.no_poll = None;
            return Ok(());
        }
        let timer = self
            .no_poll
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Err(gone("the client has not polled for the client timeout"));
        }
        Ok(())
    }
}

impl Stream for PipeTransport {
    type Item = Result<Message, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.pipe.task.register(cx.waker());
        let (deadline, polling) = {
            let mut state = this.pipe.state.lock();
            if let Some(body) = state.inbound.pop_front() {
                state.inbound_bytes -= body.len();
                drop(state);
                this.pipe.room.notify_waiters();
                return Poll::Ready(Some(Ok(Message::Binary(body))));
            }
            if state.inbound_bytes > 0 {
                // Only empty sends were queued.
                state.inbound_bytes = 0;
            }
            if state.client_closed {
                return Poll::Ready(None);
            }
            (state.last_poll + this.client_timeout, state.polling)
        };
        if this.pipe.kind == Kind::LongPolling {
            if polling {
                this.no_poll = None;
            } else {
                let timer = this
                    .no_poll
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(gone(
                        "the client has not polled for the client timeout",
                    ))));
                }
            }
        }
        Poll::Pending
    }
}

impl Sink<Message> for PipeTransport {
    type Error = std::io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.pipe.task.register(cx.waker());
        let full = {
            let state = self.pipe.state.lock();
            if state.client_closed || state.server_closed {
                return Poll::Ready(Err(gone("the client is gone")));
            }
            state.outbound.len() >= MAX_OUTBOUND_BYTES
        };
        if !full {
            return Poll::Ready(Ok(()));
        }
        match self.check_polled(cx) {
            Ok(()) => Poll::Pending,
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Self::Error> {
        let mut state = self.pipe.state.lock();
        match message {
            Message::Text(text) => state.outbound.extend_from_slice(text.as_bytes()),
            Message::Binary(bytes) => state.outbound.extend_from_slice(&bytes),
            Message::Close(_) => state.server_closed = true,
            Message::Ping(_) | Message::Pong(_) => {}
        }
        drop(state);
        self.pipe.reader.wake();
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Written frames wait in the pipe for the client's poll or the SSE body.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.pipe.state.lock().server_closed = true;
        self.pipe.reader.wake();
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeTransport {
    fn drop(&mut self) {
        let pending = {
            let mut state = self.pipe.state.lock();
            state.server_closed = true;
            !state.outbound.is_empty() && !state.client_closed
        };
        self.pipe.reader.wake();
        self.pipe.room.notify_waiters();
        // A Long Polling client between polls has not yet fetched the last frames (the Close
        // message among them): its next poll must still find them, and then get 204. The entry
        // is forgotten once the client has had the client timeout to poll.
        if pending && self.pipe.kind == Kind::LongPolling {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (pipes, id, pipe) = (self.pipes.clone(), self.id.clone(), self.pipe.clone());
                let linger = self.client_timeout;
                runtime.spawn(async move {
                    tokio::time::sleep(linger).await;
                    pipes.forget(&id, &pipe);
                });
                return;
            }
        }
        self.pipes.forget(&self.id, &self.pipe);
    }
}

impl Pipes {
    /// Removes `id`'s entry if it is still `pipe`.
    fn forget(&self, id: &str, pipe: &Arc<Pipe>) {
        let mut map = self.map.lock();
        if map.get(id).is_some_and(|p| Arc::ptr_eq(p, pipe)) {
            map.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use proptest::prelude::*;

    fn open(kind: Kind) -> (Arc<Pipes>, PipeTransport) {
        let pipes = Arc::new(Pipes::default());
        let transport = pipes
            .open("t1", kind, "chat", None, Duration::from_secs(30))
            .expect("new");
        (pipes, transport)
    }

    #[tokio::test]
    async fn sends_reach_the_task_in_order_and_writes_reach_the_poll() {
        let (pipes, mut transport) = open(Kind::LongPolling);
        assert!(pipes
            .open(
                "t1",
                Kind::LongPolling,
                "chat",
                None,
                Duration::from_secs(1)
            )
            .is_none());
        let pipe = pipes.get("t1").expect("listed");
        for body in ["a", "b", "c"] {
            assert_eq!(
                pipe.send(Bytes::from(body), Duration::from_secs(1)).await,
                Sent::Queued
            );
        }
        for body in ["a", "b", "c"] {
            match transport.next().await {
                Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], body.as_bytes()),
                other => panic!("{other:?}"),
            }
        }
        transport
            .send(Message::Text("x\u{1e}".into()))
            .await
            .expect("sent");
        transport
            .send(Message::Text("y\u{1e}".into()))
            .await
            .expect("sent");
        assert_eq!(
            pipe.poll(POLL_TIMEOUT).await,
            Polled::Data(Bytes::from("x\u{1e}y\u{1e}"))
        );
        drop(transport);
        assert_eq!(pipe.poll(POLL_TIMEOUT).await, Polled::Closed);
        assert!(
            pipes.get("t1").is_none(),
            "the table forgets an ended connection"
        );
        assert_eq!(
            pipe.send(Bytes::from("late"), Duration::from_secs(1)).await,
            Sent::Closed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_poll_times_out_and_a_newer_poll_supersedes_it() {
        let (pipes, mut transport) = open(Kind::LongPolling);
        let pipe = pipes.get("t1").expect("listed");
        assert_eq!(pipe.poll(Duration::from_secs(90)).await, Polled::Empty);
        let first = tokio::spawn({
            let pipe = pipe.clone();
            async move { pipe.poll(POLL_TIMEOUT).await }
        });
        tokio::task::yield_now().await;
        let second = tokio::spawn({
            let pipe = pipe.clone();
            async move { pipe.poll(POLL_TIMEOUT).await }
        });
        assert_eq!(first.await.expect("joined"), Polled::Empty);
        transport
            .send(Message::Text("z".into()))
            .await
            .expect("sent");
        assert_eq!(
            second.await.expect("joined"),
            Polled::Data(Bytes::from("z"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_polling_client_that_stops_polling_is_gone_after_the_client_timeout() {
        let pipes = Arc::new(Pipes::default());
        let mut transport = pipes
            .open(
                "t1",
                Kind::LongPolling,
                "chat",
                None,
                Duration::from_secs(30),
            )
            .expect("new");
        let pipe = pipes.get("t1").expect("listed");
        // While a poll waits, the client is there however long it waits.
        let poll = tokio::spawn({
            let pipe = pipe.clone();
            async move { pipe.poll(Duration::from_secs(60)).await }
        });
        let quiet = tokio::time::timeout(Duration::from_secs(59), transport.next()).await;
        assert!(quiet.is_err(), "no timeout during a poll");
        assert_eq!(poll.await.expect("joined"), Polled::Empty);
        let started = Instant::now();
        match transport.next().await {
            Some(Err(e)) => assert!(e.to_string().contains("not polled"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test]
    async fn an_sse_body_streams_events_and_ends_with_the_connection() {
        let (pipes, mut transport) = open(Kind::ServerSentEvents);
        let pipe = pipes.get("t1").expect("listed");
        let mut body = SseBody::new(pipe.clone());
        assert_eq!(
            body.next().await.and_then(Result::ok),
            Some(Bytes::from(":\r\n"))
        );
        transport
            .send(Message::Text("{\"type\":6}\u{1e}".into()))
            .await
            .expect("sent");
        assert_eq!(
            body.next().await.and_then(Result::ok),
            Some(Bytes::from("data: {\"type\":6}\u{1e}\r\n\r\n"))
        );
        transport.close().await.expect("closed");
        assert!(body.next().await.is_none());
        // Dropping the body (the client left) ends the task's side too.
        drop(body);
        assert!(transport.next().await.is_none());
    }

    #[tokio::test]
    async fn a_dropped_sse_response_ends_the_connection() {
        let (pipes, mut transport) = open(Kind::ServerSentEvents);
        drop(SseBody::new(pipes.get("t1").expect("listed")));
        assert!(transport.next().await.is_none());
        assert!(transport.send(Message::Text("x".into())).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn sends_wait_for_room_and_give_up() {
        let (pipes, mut transport) = open(Kind::ServerSentEvents);
        let pipe = pipes.get("t1").expect("listed");
        let big = Bytes::from(vec![b'x'; MAX_SEND_BYTES]);
        assert_eq!(
            pipe.send(big.clone(), Duration::from_secs(1)).await,
            Sent::Queued
        );
        assert_eq!(
            pipe.send(big.clone(), Duration::from_secs(1)).await,
            Sent::Queued
        );
        assert_eq!(
            pipe.send(big.clone(), Duration::from_secs(1)).await,
            Sent::Busy
        );
        let waiting = tokio::spawn({
            let (pipe, big) = (pipe.clone(), big.clone());
            async move { pipe.send(big, Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        assert!(matches!(transport.next().await, Some(Ok(_))));
        assert_eq!(waiting.await.expect("joined"), Sent::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_for_a_poll_gives_up_after_the_client_timeout() {
        let (pipes, mut transport) = open(Kind::LongPolling);
        let _pipe = pipes.get("t1").expect("listed");
        let big = "x".repeat(MAX_OUTBOUND_BYTES);
        transport
            .send(Message::Text(big.into()))
            .await
            .expect("fits");
        // Full, and nobody polls: the next write waits, then fails once the client is gone.
        let started = Instant::now();
        let result = transport.send(Message::Text("more".into())).await;
        assert!(result.is_err(), "{result:?}");
        assert!(started.elapsed() >= Duration::from_secs(29));
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_long_polling_connection_still_hands_over_its_last_frames() {
        let (pipes, mut transport) = open(Kind::LongPolling);
        transport
            .send(Message::Text("close\u{1e}".into()))
            .await
            .expect("sent");
        drop(transport);
        let pipe = pipes.get("t1").expect("kept for the last poll");
        assert_eq!(
            pipe.poll(POLL_TIMEOUT).await,
            Polled::Data(Bytes::from("close\u{1e}"))
        );
        assert_eq!(pipe.poll(POLL_TIMEOUT).await, Polled::Closed);
        // Forgotten after the client timeout.
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(pipes.get("t1").is_none());
    }

    proptest! {
        #[test]
        fn sse_events_carry_the_data_back(data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(0x1e_u8), Just(b' ')], 0..64)) {
            // What an EventSource does: strip "data: " from each line, join with "\n".
            let event = sse_event(&data);
            let text = std::str::from_utf8(&event).expect("utf8");
            let body = text.strip_suffix("\r\n\r\n").expect("blank line ends the event");
            let lines: Vec<&str> = body.split("\r\n").map(|l| l.strip_prefix("data: ").expect("data line")).collect();
            let joined = lines.join("\n");
            // Line ends come back as LF (an EventSource's rule), everything else as it was.
            let expected = String::from_utf8(data.clone()).expect("ascii").replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(joined, expected);
        }
    }
}
