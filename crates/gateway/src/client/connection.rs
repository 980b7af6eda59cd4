//! One client connection: handshake, registration in this gateway's presence, then a single task that reads
//! client frames, drains the outbound queue into the socket, sends keep-alive pings and enforces
//! the client timeout.
//!
//! The loop is generic over any `Stream + Sink` of WebSocket messages so tests can drive it with
//! in-memory channels. There is exactly one task per connection and no per-message spawn.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use futures::{Sink, SinkExt, Stream, StreamExt};
use switchboard_auth::ConnectionTicket;
use switchboard_protocol::stateful::{Incoming, Receiver, SendBuffer};
use switchboard_protocol::{self as protocol, FrameReader, HubMessage, Protocol};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use super::resume::Slot;
use super::socket::ClientSocket;
use crate::dispatch::to_message;
use crate::metrics::CloseReason;
use crate::outbound::CloseRequest;
use crate::registry::ConnectionHandle;
use crate::upstream::{Job, Link};
use crate::Shared;

/// How long the final Close frames may take to write before the socket is dropped.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs a client connection to completion.
///
/// Deliberately not an `async fn`: an async fn keeps its arguments in its state next to the
/// future they are moved into, and this future lives as long as the connection, once per
/// connection. `_token` keeps the gateway's task tracker counting the connection.
pub(crate) fn run<S, E>(
    socket: S,
    shared: Arc<Shared>,
    opening: Opening,
    peer: SocketAddr,
    token: TaskTrackerToken,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> impl std::future::Future<Output = ()> + Send
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin + Send + Resume,
    E: std::fmt::Display + Send,
{
    let span = tracing::debug_span!(
        "connection",
        connection_id = %opening.ticket.connection_id,
        hub = %opening.ticket.hub,
        peer = %peer,
    );
    Connection {
        socket,
        shared,
        upstream: None,
        stateful: None,
        _token: token,
        _slot: slot,
    }
    .run(Box::new(opening))
    .instrument(span)
}

/// What a connection needs only until it is open.
pub(crate) struct Opening {
    pub(crate) ticket: ConnectionTicket,
    /// The query string the client connected with (kept only when an upstream is configured).
    pub(crate) query: String,
    /// The `id` the client connected with (a stateful connection is resumed by it).
    pub(crate) token_id: String,
}

/// A transport a reconnecting client's WebSocket can replace (stateful reconnect). Only
/// WebSockets: the official clients reconnect statefully over WebSockets only.
pub(crate) trait Resume: Sized {
    const SUPPORTED: bool;
    fn resume(socket: ClientSocket) -> Option<Self>;
}

impl Resume for ClientSocket {
    const SUPPORTED: bool = true;
    fn resume(socket: ClientSocket) -> Option<Self> {
        Some(socket)
    }
}

impl Resume for super::http::PipeTransport {
    const SUPPORTED: bool = false;
    fn resume(_: ClientSocket) -> Option<Self> {
        None
    }
}

/// Stateful-reconnect work the main loop found (see `Connection::stateful_step`).
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The transport failed.
    Lost,
    /// The client left a new socket.
    Resume,
    /// Frames were read: acknowledge, and send what acks made room for.
    AfterRead,
}

/// What a stateful-reconnect connection keeps (allocated only for those).
struct Stateful {
    /// Sent and not yet acknowledged by the client.
    send: SendBuffer<Message>,
    /// Which client messages to process; what to acknowledge.
    recv: Receiver,
    /// Taken from the outbound queue but not sent: the send buffer is full until an ack.
    held: VecDeque<Message>,
    slot: Arc<Slot>,
    token_id: Box<str>,
    protocol: Protocol,
}

struct Connection<S> {
    socket: S,
    shared: Arc<Shared>,
    /// This connection's queue of upstream events, when an upstream is configured.
    upstream: Option<Arc<Link>>,
    /// Stateful reconnect, when negotiated.
    stateful: Option<Box<Stateful>>,
    _token: TaskTrackerToken,
    /// This connection's place under `max_connections`, given back when it ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// Why the main loop ended and what the client should be told.
struct Ending {
    reason: CloseReason,
    /// Send a hub protocol Close message with this error (None: no message, the peer is gone).
    close: Option<CloseRequest>,
    /// The error the client closed with, if it sent one (for the upstream's `disconnected`).
    client_error: Option<String>,
}

impl Ending {
    fn new(reason: CloseReason, close: Option<CloseRequest>) -> Ending {
        Ending {
            reason,
            close,
            client_error: None,
        }
    }

    /// The error `disconnected` reports: none for a client that closed cleanly.
    fn upstream_error(&self) -> Option<String> {
        match self.reason {
            CloseReason::Client => self.client_error.clone(),
            CloseReason::TransportError if self.close.is_none() => {
                Some("The connection was lost.".into())
            }
            reason => Some(
                self.close
                    .as_ref()
                    .and_then(|c| c.error.clone())
                    .unwrap_or_else(|| format!("Connection closed ({}).", reason.as_str())),
            ),
        }
    }
}

/// How the main loop stopped handling buffered frames.
enum Drained {
    /// Every complete frame was handled.
    Empty,
    /// The upstream queue is full: stop reading until it drains.
    Paused,
}

impl<S, E> Connection<S>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin + Resume,
    E: std::fmt::Display + Send,
{
    /// The whole life of the connection. The set-up and the wind-down run boxed: they are
    /// transient, and keeping their state out of this future keeps every idle connection's task
    /// small (only the `serve` loop's state stays allocated for the connection's lifetime).
    // Not an `async fn` either: an async fn's state holds its `self` argument twice (the
    // argument and the local it is moved into), a whole `Connection` per connection wasted. The
    // block captures `self` once and uses it in place.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self, opening: Box<Opening>) -> impl std::future::Future<Output = ()> {
        async move {
            let Some((handle, protocol, leftover)) = Box::pin(self.open(opening)).await else {
                return;
            };
            let ending = self.serve(&handle, protocol, leftover).await;
            Box::pin(self.finish(&handle, protocol, ending)).await;
        }
    }

    /// Handshake, registration in this gateway's presence, handshake reply. `None` if the
    /// connection ended.
    async fn open(
        &mut self,
        opening: Box<Opening>,
    ) -> Option<(Arc<ConnectionHandle>, Protocol, Vec<u8>)> {
        let Opening {
            ticket,
            query,
            token_id,
        } = *opening;
        let metrics = self.shared.metrics.clone();
        let (protocol, version, leftover) =
            match timeout(self.shared.config.handshake_timeout, self.handshake()).await {
                Ok(Ok(done)) => done,
                Ok(Err(error)) => {
                    metrics.handshake_failures.increment(1);
                    tracing::debug!(%error, "handshake failed");
                    self.reply_handshake(Protocol::Json, Some(&error)).await;
                    self.close_socket().await;
                    return None;
                }
                Err(_) => {
                    metrics.handshake_failures.increment(1);
                    tracing::debug!("handshake timed out");
                    self.reply_handshake(
                        Protocol::Json,
                        Some("Handshake was canceled: no handshake request in time."),
                    )
                    .await;
                    self.close_socket().await;
                    return None;
                }
            };

        let handle = Arc::new(ConnectionHandle::new(
            ticket.connection_id.as_str().into(),
            ticket.hub.as_str().into(),
            ticket.user_id.as_deref().map(Into::into),
            protocol,
        ));
        // What the upstream needs of the ticket, computed once; the rest is freed now.
        let upstream = self.shared.upstream.as_ref().map(|upstream| {
            switchboard_upstream::Connection::new(
                &ticket.connection_id,
                &handle.hub,
                ticket.user_id.as_deref(),
                &ticket.claims,
                &query,
                upstream.keys(),
                protocol,
            )
        });
        let ticket_stateful = ticket.stateful_reconnect;
        drop(ticket);
        drop(query);
        if let Err(error) = self.register(&handle).await {
            metrics.handshake_failures.increment(1);
            tracing::warn!(%error, "connection could not be registered");
            self.reply_handshake(protocol, Some(&error)).await;
            self.close_socket().await;
            return None;
        }
        if !self.reply_handshake(protocol, None).await {
            self.unregister(&handle, CloseReason::TransportError).await;
            return None;
        }
        metrics.connections_opened.increment(1);
        metrics.connections.increment(1.0);
        if let (Some(upstream), Some(connection)) = (&self.shared.upstream, upstream) {
            self.upstream = Some(upstream.open(
                handle.clone(),
                connection,
                self.shared.config.queue_limits,
                metrics.clone(),
            ));
        }
        // Stateful reconnect needs it negotiated, hub protocol version 2 and a WebSocket.
        let window = self.shared.config.stateful_reconnect_window;
        if ticket_stateful && version >= 2 && !window.is_zero() && S::SUPPORTED {
            let slot = self.shared.resumable.insert(&token_id, handle.clone());
            self.stateful = Some(Box::new(Stateful {
                send: SendBuffer::new(self.shared.config.stateful_reconnect_buffer),
                recv: Receiver::new(),
                held: VecDeque::new(),
                slot,
                token_id: token_id.into(),
                protocol,
            }));
        }
        tracing::debug!(user = ?handle.user, protocol = protocol.name(), stateful = self.stateful.is_some(), "connected");
        if self.shared.is_draining() {
            handle.close(CloseRequest {
                reason: CloseReason::Shutdown,
                error: Some(SHUTDOWN_MESSAGE.into()),
                allow_reconnect: true,
            });
        }
        Some((handle, protocol, leftover))
    }

    /// Tells the client why it is closed (when it still listens), then leaves this gateway's
    /// presence.
    async fn finish(&mut self, handle: &Arc<ConnectionHandle>, protocol: Protocol, ending: Ending) {
        if let Some(close) = &ending.close {
            let frame =
                protocol::close_frame(protocol, close.error.as_deref(), close.allow_reconnect);
            let socket = &mut self.socket;
            // One deadline for both writes: a stalled peer must not hold the connection open.
            let _ = timeout(CLOSE_WRITE_TIMEOUT, async move {
                if let Some(message) = to_message(protocol, frame) {
                    socket.send(message).await?;
                }
                socket.close().await
            })
            .await;
        } else if ending.reason == CloseReason::Client {
            // Answer the client's close handshake (RFC 6455 §5.5.1) instead of just dropping TCP.
            let _ = timeout(CLOSE_WRITE_TIMEOUT, self.socket.close()).await;
        }
        if let Some(stateful) = self.stateful.take() {
            // Its token stays refused as long as it could open a connection (plus the leeway
            // between gateways' clocks).
            let remember = self.shared.config.connection_token_lifetime
                + Duration::from_secs(switchboard_auth::TICKET_LEEWAY_SECS + 1);
            self.shared
                .resumable
                .remove(&stateful.token_id, &stateful.slot, remember);
        }
        self.shared.metrics.connections.decrement(1.0);
        tracing::debug!(reason = ending.reason.as_str(), "disconnected");
        if let Some(link) = self.upstream.take() {
            link.close(ending.upstream_error());
        }
        self.unregister(handle, ending.reason).await;
    }

    /// Reads until a complete handshake request; returns the protocol and any bytes after it.
    async fn handshake(&mut self) -> Result<(Protocol, u32, Vec<u8>), String> {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(t))) => buf.extend_from_slice(t.as_bytes()),
                Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
                Some(Ok(Message::Close(_))) | None => {
                    return Err("connection closed during handshake".into())
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("transport error during handshake: {e}")),
            }
            if buf.len() > MAX_HANDSHAKE_BYTES {
                return Err("Handshake request is too large.".into());
            }
            match protocol::decode_handshake(&buf) {
                Ok(Some((request, used))) => {
                    let protocol = protocol::negotiate_protocol(&request)?;
                    return Ok((protocol, request.version, buf.split_off(used)));
                }
                Ok(None) => continue,
                Err(e) => return Err(format!("Invalid handshake request: {e}")),
            }
        }
    }

    /// Sends the handshake response; returns whether it was written.
    async fn reply_handshake(&mut self, protocol: Protocol, error: Option<&str>) -> bool {
        let bytes = protocol::encode_handshake_response(error);
        let Some(message) = to_message(protocol, bytes) else {
            return false;
        };
        matches!(
            timeout(CLOSE_WRITE_TIMEOUT, self.socket.send(message)).await,
            Ok(Ok(()))
        )
    }

    async fn close_socket(&mut self) {
        let _ = timeout(CLOSE_WRITE_TIMEOUT, self.socket.close()).await;
    }

    /// Makes the connection routable: in the local registry and this gateway's presence,
    /// joined to its user's live groups (read from the store's view). Nothing is written to the
    /// store: other gateways ask this one (`scatter`).
    async fn register(&mut self, handle: &Arc<ConnectionHandle>) -> Result<(), String> {
        const IN_USE: &str = "This connection token is already in use; negotiate again.";
        if !self.shared.registry.insert(handle.clone()) {
            // Not ours to remove: the first connection with this id keeps it.
            return Err(IN_USE.into());
        }
        let view = self.shared.store.view();
        let opened = crate::scatter::open(
            &self.shared,
            &handle.hub,
            &handle.id,
            handle.user.as_ref(),
            || match &handle.user {
                Some(user) => {
                    let state = view.read();
                    let index = view.applied_index();
                    let groups = state
                        .user_groups(&handle.hub, user, crate::now_ms())
                        .into_iter()
                        .map(|g| g.group)
                        .collect();
                    (groups, index)
                }
                None => (Vec::new(), 0),
            },
        )
        .await;
        if !opened {
            self.shared.registry.remove(handle);
            return Err(IN_USE.into());
        }
        handle.mark_registered();
        self.shared.trace.emit(|| {
            serde_json::json!({
                "type": "connected",
                "hub": handle.hub.as_ref(),
                "connection": handle.id.as_ref(),
                "user": handle.user.as_deref(),
            })
        });
        Ok(())
    }

    async fn unregister(&mut self, handle: &Arc<ConnectionHandle>, reason: CloseReason) {
        self.shared.registry.remove(handle);
        self.shared.metrics.closed(reason);
        if handle.is_registered() {
            self.shared.local.close(&handle.hub, &handle.id);
            self.shared.trace.emit(|| {
                serde_json::json!({
                    "type": "disconnected",
                    "hub": handle.hub.as_ref(),
                    "connection": handle.id.as_ref(),
                    "reason": reason.as_str(),
                })
            });
        }
    }

    /// The main loop. Returns why it ended.
    async fn serve(
        &mut self,
        handle: &Arc<ConnectionHandle>,
        protocol: Protocol,
        leftover: Vec<u8>,
    ) -> Ending {
        let shared = self.shared.clone();
        let config = &shared.config;
        let metrics = shared.metrics.clone();
        let mut reader = FrameReader::new(protocol, config.max_message_size);
        // How long a write may make no progress before the client counts as gone.
        let stall = config.client_timeout;
        let mut last_received = Instant::now();
        let mut last_sent = Instant::now();
        // Not reading from the socket until the upstream queue drains (see `upstream`).
        let mut paused = false;
        // Stateful-reconnect work found inside the loop, done at its top: one boxed await for all
        // of it keeps every connection's task small.
        let mut step: Option<Step> = None;
        // The transport failed: a stateful connection waits for its client to reconnect (and
        // goes on with a fresh reader), any other ends.
        macro_rules! transport_lost {
            () => {{
                step = Some(Step::Lost);
                continue;
            }};
        }
        if !leftover.is_empty() {
            reader.push(&leftover);
            match self.process_frames(&mut reader, handle, protocol) {
                Ok(drained) => paused = matches!(drained, Drained::Paused),
                Err(ending) => return ending,
            }
        }
        loop {
            if let Some(work) = step.take() {
                match Box::pin(self.stateful_step(work, handle, protocol)).await {
                    Ok(true) => {
                        // A new socket: nothing of the old one's partial frames is kept.
                        reader = FrameReader::new(protocol, config.max_message_size);
                        last_received = Instant::now();
                        last_sent = Instant::now();
                    }
                    Ok(false) => {}
                    Err(ending) => return ending,
                }
            }
            // While paused the client cannot be heard, so its silence does not count.
            let deadline = if paused {
                last_sent + config.keep_alive_interval
            } else {
                (last_sent + config.keep_alive_interval).min(last_received + config.client_timeout)
            };
            tokio::select! {
                _ = handle.outbound.ready() => {
                    // A reconnecting client's new socket (perhaps before the old one failed).
                    if self.stateful.as_ref().is_some_and(|s| s.slot.has_socket()) {
                        step = Some(Step::Resume);
                        continue;
                    }
                    // While the stateful send buffer is full, frames stay queued.
                    let (mut pending, close) = if self.stateful.as_ref().is_some_and(|s| !s.held.is_empty()) {
                        (VecDeque::new(), handle.outbound.close_request())
                    } else {
                        handle.outbound.take()
                    };
                    if !pending.is_empty() {
                        // A stalled socket must not keep us from noticing a close request
                        // (the queue overflowing while we wait is exactly the slow-consumer
                        // case), nor hold the task forever once one was made.
                        let written = match close {
                            None => tokio::select! {
                                written = self.write_all(&mut pending) => Some(written),
                                _ = handle.outbound.closing() => None,
                            },
                            // Boxed: this rare path must not grow every connection's future.
                            Some(_) => Box::pin(tokio::time::timeout(stall, self.write_all(&mut pending)))
                                .await
                                .ok(),
                        };
                        let Some(written) = written else {
                            let close = handle.outbound.take().1.or(close);
                            let reason = close.as_ref().map_or(CloseReason::TransportError, |c| c.reason);
                            return Ending::new(reason, close);
                        };
                        match written {
                            Ok((frames, bytes)) => {
                                metrics.messages_sent.increment(frames);
                                metrics.bytes_sent.increment(bytes);
                                last_sent = Instant::now();
                            }
                            Err(error) => {
                                tracing::debug!(%error, "write failed");
                                transport_lost!();
                            }
                        }
                    }
                    if let Some(close) = close {
                        return Ending::new(close.reason, Some(close));
                    }
                    // The upstream worker wakes a paused connection this way too.
                    if paused {
                        match self.process_frames(&mut reader, handle, protocol) {
                            Ok(drained) => paused = matches!(drained, Drained::Paused),
                            Err(ending) => return ending,
                        }
                        if !paused {
                            last_received = Instant::now();
                        }
                    }
                }
                incoming = self.socket.next(), if !paused => {
                    let data = match incoming {
                        Some(Ok(Message::Text(t))) => t.into(),
                        Some(Ok(Message::Binary(b))) => b,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            last_received = Instant::now();
                            continue;
                        }
                        Some(Ok(Message::Close(_))) => {
                            return Ending::new(CloseReason::Client, None);
                        }
                        None if self.stateful.is_none() => {
                            return Ending::new(CloseReason::Client, None);
                        }
                        None => transport_lost!(),
                        Some(Err(error)) => {
                            tracing::debug!(%error, "read failed");
                            transport_lost!();
                        }
                    };
                    last_received = Instant::now();
                    metrics.bytes_received.increment(data.len() as u64);
                    reader.push(&data);
                    match self.process_frames(&mut reader, handle, protocol) {
                        Ok(drained) => paused = matches!(drained, Drained::Paused),
                        Err(ending) => return ending,
                    }
                    // Acknowledge what arrived; send what the client's acks made room for.
                    if self.stateful.is_some() {
                        step = Some(Step::AfterRead);
                    }
                }
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    if !paused && now >= last_received + config.client_timeout {
                        return Ending::new(
                            CloseReason::Timeout,
                            Some(CloseRequest {
                                reason: CloseReason::Timeout,
                                error: Some(format!(
                                    "Server timeout ({} s) elapsed without receiving a message from the client.",
                                    config.client_timeout.as_secs()
                                )),
                                allow_reconnect: true,
                            }),
                        );
                    }
                    if now >= last_sent + config.keep_alive_interval {
                        if let Some(ping) = to_message(protocol, protocol::ping_frame(protocol)) {
                            // A client that has not read for the whole client timeout is gone.
                            // The timer boxed, for the same reason.
                            let sent = tokio::select! {
                                sent = self.socket.send(ping) => sent.is_ok(),
                                _ = handle.outbound.closing() => true,
                                _ = Box::pin(tokio::time::sleep(stall)) => false,
                            };
                            if !sent {
                                transport_lost!();
                            }
                        }
                        last_sent = Instant::now();
                    }
                }
            }
        }
    }

    /// Writes every pending frame and flushes once.
    async fn write_all(&mut self, pending: &mut VecDeque<Message>) -> Result<(u64, u64), E> {
        if let Some(stateful) = self.stateful.as_mut() {
            stateful.held.append(pending);
            return self.write_held().await;
        }
        let (mut frames, mut bytes) = (0u64, 0u64);
        while let Some(message) = pending.pop_front() {
            bytes += crate::outbound::frame_len(&message) as u64;
            frames += 1;
            self.socket.feed(message).await?;
        }
        self.socket.flush().await?;
        Ok((frames, bytes))
    }

    /// Stateful: sends the held frames the send buffer has room for, numbering each (a frame
    /// counts as sent, and is kept for a replay, before it is written: if the write fails, the
    /// replay sends it).
    async fn write_held(&mut self) -> Result<(u64, u64), E> {
        let (mut frames, mut bytes) = (0u64, 0u64);
        let Connection {
            socket, stateful, ..
        } = self;
        let Some(stateful) = stateful.as_mut() else {
            return Ok((0, 0));
        };
        while let Some(front) = stateful.held.front() {
            let len = crate::outbound::frame_len(front);
            if !stateful.send.has_room(len) {
                break;
            }
            let Some(message) = stateful.held.pop_front() else {
                break;
            };
            // Numbered by the messages the frame holds, as the client counts them; a frame with
            // none (a pre-serialized ping) is sent but never replayed.
            let bytes_of = match &message {
                Message::Text(text) => text.as_bytes(),
                Message::Binary(binary) => binary.as_ref(),
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) => &[],
            };
            let count =
                switchboard_protocol::stateful::trackable_messages(stateful.protocol, bytes_of);
            stateful.send.push_frame(count, len, message.clone());
            bytes += len as u64;
            frames += 1;
            socket.feed(message).await?;
        }
        socket.flush().await?;
        Ok((frames, bytes))
    }

    /// Stateful, after frames were read: acknowledges what arrived, writes what acks made room
    /// for, and, once nothing is held, lets the outbound queue be taken again.
    async fn after_read(&mut self, handle: &ConnectionHandle, protocol: Protocol) -> Result<(), E> {
        let Some(stateful) = self.stateful.as_mut() else {
            return Ok(());
        };
        if let Some(sequence_id) = stateful.recv.ack_due() {
            let ack = protocol::encode(protocol, &HubMessage::Ack { sequence_id })
                .ok()
                .and_then(|b| to_message(protocol, b));
            if let Some(ack) = ack {
                self.socket.feed(ack).await?;
            }
        }
        let held = self.stateful.as_ref().is_some_and(|s| !s.held.is_empty());
        if held {
            let (frames, bytes) = self.write_held().await?;
            self.shared.metrics.messages_sent.increment(frames);
            self.shared.metrics.bytes_sent.increment(bytes);
            if self.stateful.as_ref().is_some_and(|s| s.held.is_empty()) {
                // Frames queued meanwhile did not signal (the queue was not empty).
                handle.outbound.wake();
            }
        } else {
            self.socket.flush().await?;
        }
        Ok(())
    }

    /// Stateful-reconnect work of the main loop; `Ok(true)` when a new socket took over.
    async fn stateful_step(
        &mut self,
        step: Step,
        handle: &ConnectionHandle,
        protocol: Protocol,
    ) -> Result<bool, Ending> {
        let failed = match step {
            Step::Lost => true,
            Step::Resume => match self.stateful.as_ref().and_then(|s| s.slot.take()) {
                Some(socket) => match self.resume(socket, protocol).await {
                    Ok(()) => return Ok(true),
                    Err(error) => {
                        tracing::debug!(%error, "the reconnected socket failed");
                        true
                    }
                },
                None => false,
            },
            Step::AfterRead => match self.after_read(handle, protocol).await {
                Ok(()) => false,
                Err(error) => {
                    tracing::debug!(%error, "write failed");
                    true
                }
            },
        };
        if !failed {
            return Ok(false);
        }
        self.lost(handle, protocol).await.map(|()| true)
    }

    /// The transport failed. A stateful connection waits for the client's new socket, up to the
    /// reconnect window (REST sends meanwhile stay queued, bounded as always); any other ends.
    async fn lost(&mut self, handle: &ConnectionHandle, protocol: Protocol) -> Result<(), Ending> {
        if self.stateful.is_none() {
            return Err(Ending::new(CloseReason::TransportError, None));
        }
        Box::pin(self.await_resume(handle, protocol)).await
    }

    async fn await_resume(
        &mut self,
        handle: &ConnectionHandle,
        protocol: Protocol,
    ) -> Result<(), Ending> {
        let window = self.shared.config.stateful_reconnect_window;
        let deadline = Instant::now() + window;
        tracing::debug!(
            window_secs = window.as_secs(),
            "transport lost; waiting for the client to reconnect"
        );
        loop {
            if let Some(socket) = self.stateful.as_ref().and_then(|s| s.slot.take()) {
                match self.resume(socket, protocol).await {
                    Ok(()) => return Ok(()),
                    // The new socket failed at once: keep waiting.
                    Err(error) => tracing::debug!(%error, "the reconnected socket failed"),
                }
            }
            if let Some(close) = handle.outbound.close_request() {
                return Err(Ending::new(close.reason, Some(close)));
            }
            tokio::select! {
                _ = handle.outbound.ready() => {}
                _ = sleep_until(deadline) => {
                    self.shared.metrics.stateful_expired.increment(1);
                    tracing::debug!("the client did not reconnect within the window");
                    return Err(Ending::new(CloseReason::TransportError, None));
                }
            }
        }
    }

    /// Swaps in a reconnected client's socket: `Sequence`, then every unacknowledged frame,
    /// then what was held back.
    async fn resume(&mut self, socket: ClientSocket, protocol: Protocol) -> Result<(), E> {
        let Some(socket) = S::resume(socket) else {
            return Ok(());
        };
        // The old socket (if it still looked alive) is dropped, which closes it.
        self.socket = socket;
        let Connection {
            socket,
            stateful,
            shared,
            ..
        } = self;
        let Some(stateful) = stateful.as_mut() else {
            return Ok(());
        };
        stateful.recv.reconnected();
        let (first, frames) = stateful.send.replay();
        let sequence = protocol::encode(protocol, &HubMessage::Sequence { sequence_id: first })
            .ok()
            .and_then(|b| to_message(protocol, b));
        if let Some(sequence) = sequence {
            socket.feed(sequence).await?;
        }
        let mut replayed = 0u64;
        for frame in frames {
            socket.feed(frame.clone()).await?;
            replayed += 1;
        }
        socket.flush().await?;
        shared.metrics.stateful_resumed.increment(1);
        shared.metrics.replayed.increment(replayed);
        tracing::debug!(replayed, first, "resumed after a reconnect");
        // Frames queued while the client was away did not signal (the queue was not empty).
        stateful.slot.wake();
        let (frames, bytes) = self.write_held().await?;
        self.shared.metrics.messages_sent.increment(frames);
        self.shared.metrics.bytes_sent.increment(bytes);
        Ok(())
    }

    /// Handles the complete frames buffered in `reader`: all of them, or until the upstream
    /// queue is full.
    fn process_frames(
        &mut self,
        reader: &mut FrameReader,
        handle: &ConnectionHandle,
        protocol: Protocol,
    ) -> Result<Drained, Ending> {
        loop {
            if self
                .upstream
                .as_ref()
                .is_some_and(|link| link.pause_if_full())
            {
                return Ok(Drained::Paused);
            }
            let payload = match reader.next_frame() {
                Ok(Some(payload)) => payload,
                Ok(None) => return Ok(Drained::Empty),
                Err(error) => return Err(protocol_error(&error.to_string())),
            };
            self.shared.metrics.messages_received.increment(1);
            let message = match protocol::decode(protocol, &payload) {
                Ok(message) => message,
                Err(error) => return Err(protocol_error(&error.to_string())),
            };
            if let Some(stateful) = self.stateful.as_mut() {
                let sequence = match &message {
                    HubMessage::Sequence { sequence_id } => Some(*sequence_id),
                    _ => None,
                };
                match stateful.recv.on_message(message.is_trackable(), sequence) {
                    Ok(Incoming::Process) => {}
                    Ok(Incoming::Skip) => continue,
                    Err(error) => return Err(protocol_error(&error.to_string())),
                }
                if let HubMessage::Ack { sequence_id } = message {
                    if let Err(error) = stateful.send.ack(sequence_id) {
                        return Err(protocol_error(&error.to_string()));
                    }
                    continue;
                }
            }
            match (message, &self.upstream) {
                (HubMessage::Close { error, .. }, _) => {
                    return Err(Ending {
                        reason: CloseReason::Client,
                        close: None,
                        client_error: error,
                    })
                }
                (
                    HubMessage::Invocation {
                        invocation_id,
                        target,
                        stream_ids,
                        ..
                    },
                    Some(link),
                ) => {
                    let job = match (invocation_id, stream_ids.is_empty()) {
                        (id, true) => Job::Invoke {
                            id,
                            target,
                            body: payload,
                        },
                        (Some(id), false) => Job::Refuse {
                            id,
                            error: format!("Invocation of '{target}' failed: client-to-server streams are not supported in serverless mode."),
                        },
                        (None, false) => {
                            tracing::debug!(%target, "dropped a non-blocking invocation with client-to-server streams");
                            continue;
                        }
                    };
                    link.submit(job);
                }
                (
                    HubMessage::StreamInvocation {
                        invocation_id,
                        target,
                        ..
                    },
                    Some(link),
                ) => link.submit(Job::Refuse {
                    id: invocation_id,
                    error: format!("Stream invocation of '{target}' failed: streaming hub methods are not supported in serverless mode."),
                }),
                (
                    HubMessage::Invocation {
                        invocation_id: Some(id),
                        target,
                        ..
                    }
                    | HubMessage::StreamInvocation {
                        invocation_id: id,
                        target,
                        ..
                    },
                    None,
                ) => {
                    // No upstream is configured: fail the invocation instead of leaving the caller waiting.
                    let completion = HubMessage::Completion {
                        invocation_id: id,
                        result: protocol::CompletionResult::Error(format!(
                            "Invocation of '{target}' failed: no upstream is configured for hub '{}'.",
                            handle.hub
                        )),
                        headers: Vec::new(),
                    };
                    if let Some(frame) = protocol::encode(protocol, &completion)
                        .ok()
                        .and_then(|b| to_message(protocol, b))
                    {
                        if handle.outbound.push(frame, self.shared.config.queue_limits)
                            == crate::outbound::Push::Overflow
                        {
                            self.shared.metrics.slow_consumer_closes.increment(1);
                            self.shared.metrics.queue_dropped.increment(1);
                        }
                    }
                }
                // Accepted and ignored: pings, fire-and-forget invocations without an upstream,
                // stream items, completions, cancellations, acks.
                _ => {}
            }
        }
    }
}

const MAX_HANDSHAKE_BYTES: usize = 4096;
pub(crate) const SHUTDOWN_MESSAGE: &str = "Server is shutting down; reconnect.";

fn protocol_error(detail: &str) -> Ending {
    tracing::debug!(error = %detail, "closing connection: invalid frame");
    Ending::new(
        CloseReason::ProtocolError,
        Some(CloseRequest {
            reason: CloseReason::ProtocolError,
            error: Some(format!("Connection closed with an error: {detail}")),
            allow_reconnect: false,
        }),
    )
}
