//! No sticky sessions for SSE and Long Polling: requests relayed to the gateway that holds the
//! connection.
//!
//! A Long Polling client polls and sends with separate requests, and an SSE client sends with
//! requests beside its stream; behind a load balancer any of them may reach any gateway. The
//! gateway that receives one for a connection it does not hold finds the holder (the gateway
//! that last answered for that token, else the one that issued it — named in the connection id
//! inside the token — else each other gateway in turn) and relays the request over the cluster plane (`Relay` in
//! `proto/`), authenticated like every cluster call. The holder answers exactly as it answers
//! its own clients, including the access-token check, and the relaying gateway passes the
//! answer on. A relayed poll is held as long as a local one.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use switchboard_auth::is_v0_connection_id;
use switchboard_cluster::proto::relay_client::RelayClient;
use switchboard_cluster::proto::relay_server::{Relay, RelayServer};
use switchboard_cluster::proto::{RelayReply, RelaySend, RelayTarget};
use switchboard_core::{Error, ErrorCode};
use tonic::{Request, Status};

use super::http::{self, Polled, Sent, NOT_FOUND};
use super::negotiate::{pipe_request_allowed, resume_allowed};
use super::socket::{from_frame, to_frame, ClientSocket, RelayedSocket};
use crate::error::{ApiError, ApiResult};
use crate::Shared;
use switchboard_cluster::proto::resume_frame::Frame;
use switchboard_cluster::proto::ResumeFrame;

/// What is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Send,
    Poll,
    Close,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Send => "send",
            Kind::Poll => "poll",
            Kind::Close => "close",
        }
    }
}

/// The cluster addresses of the gateways that may hold the connection `id` names, most likely
/// first, when it is not here: the one that last answered for it; the gateway that issued the
/// id; then every other gateway. Empty when there is no cluster, or `id` is not
/// a connection token (or version-0 id, checked against `v0_user`) this service signed for the
/// hub: nothing is asked about made-up ids.
pub(crate) fn holders(
    shared: &Shared,
    hub: &str,
    id: &str,
    v0_user: Option<Option<String>>,
) -> Holders {
    let none = Holders {
        connection: String::new(),
        addresses: Vec::new(),
    };
    if shared.config.cluster.is_none() {
        return none;
    }
    let Some(connection) = connection_id(shared, hub, id, v0_user) else {
        return none;
    };
    let known = shared.relay_holders.get(&connection);
    let hint = switchboard_core::node_of_connection_id(&connection);
    // Every gateway, not only those serving the hub: an HTTP-transport connection has its pipe
    // (and takes relayed requests) before its handshake registers it and announces its hub.
    let mut peers = crate::scatter::peers(shared);
    peers.sort_by_key(|p| (Some(&p.address) != known.as_ref(), Some(p.node) != hint));
    Holders {
        connection,
        addresses: peers.into_iter().map(|p| p.address).collect(),
    }
}

/// The gateways a relayed request tries in turn, for one connection.
pub(crate) struct Holders {
    connection: String,
    addresses: Vec<String>,
}

impl Holders {
    pub(crate) fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }
}

/// The gateway holding the stateful connection `id` names, when it is another one (asked of
/// every gateway serving the hub: a reconnect happens once per lost socket; a first connect
/// with a token this gateway issued asks nobody).
pub(crate) async fn stateful_holder(shared: &Shared, hub: &str, id: &str) -> Option<String> {
    shared.config.cluster.as_ref()?;
    // Only tokens of connections that negotiated stateful reconnect are resumed; any other
    // token of an open connection is refused as in use, as before.
    let ticket = shared.keys.verify_ticket(id, 0).ok()?;
    if ticket.hub != hub || !ticket.stateful_reconnect {
        return None;
    }
    // A token this gateway issued that never opened a connection is a first connect, not a
    // reconnect: no gateway holds it.
    let issuer = switchboard_core::node_of_connection_id(&ticket.connection_id);
    if issuer == Some(shared.config.node_id)
        && crate::scatter::issued_by_this_process(shared, ticket.expires_at)
        && ticket.expires_at + switchboard_auth::TICKET_LEEWAY_SECS >= crate::now_secs()
        && !shared
            .claims
            .is_claimed(&ticket.connection_id, crate::now_secs())
    {
        return None;
    }
    crate::scatter::holder(shared, hub, &ticket.connection_id)
        .await
        .map(|p| p.address)
}

/// Carries a reconnected client's WebSocket to the gateway holding its connection, both ways,
/// until either side closes.
pub(crate) async fn pump_resume(
    shared: Arc<Shared>,
    address: String,
    target: RelayTarget,
    mut ws: axum::extract::ws::WebSocket,
) {
    use futures::{SinkExt, StreamExt};
    let Some(channels) = shared.config.cluster.as_ref() else {
        return;
    };
    let channel = match channels.get(&address) {
        Ok(channel) => channel,
        Err(error) => {
            shared.metrics.relay_failed("resume");
            tracing::debug!(%error, address, "relay target has a bad address; closing the reconnect");
            let _ = ws.close().await;
            return;
        }
    };
    let max = channels.max_message_bytes();
    let mut client = RelayClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    shared.metrics.relayed("resume");
    let (tx, rx) = tokio::sync::mpsc::channel::<ResumeFrame>(RESUME_QUEUE);
    let first = ResumeFrame {
        frame: Some(Frame::Target(target)),
    };
    if tx.send(first).await.is_err() {
        return;
    }
    let mut inbound = match client
        .resume(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            shared.metrics.relay_failed("resume");
            tracing::debug!(%status, address, "relaying a reconnect failed");
            let _ = ws.close().await;
            return;
        }
    };
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(message)) => {
                    let closing = matches!(message, axum::extract::ws::Message::Close(_));
                    if let Some(frame) = to_frame(message) {
                        if tx.send(frame).await.is_err() {
                            break;
                        }
                    }
                    if closing {
                        break;
                    }
                }
                // The client's socket failed: dropping the stream tells the holder its transport
                // is lost (it waits for the client again); only a Close frame closes.
                Some(Err(_)) | None => break,
            },
            frame = inbound.message() => match frame {
                Ok(Some(frame)) => match from_frame(frame) {
                    Ok(Some(message)) => {
                        if ws.send(message).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(why) => {
                        tracing::debug!(why, "the holder closed the relayed reconnect");
                        break;
                    }
                },
                Ok(None) | Err(_) => break,
            },
        }
    }
    let _ = ws.close().await;
}

/// Frames of a relayed reconnect in flight each way.
const RESUME_QUEUE: usize = 64;

/// The connection id a token names, when this service signed it for the hub. A version-0 id
/// is checked against `v0_user` (the user of the request's access token, which its MAC
/// covers), ignoring its expiry.
fn connection_id(
    shared: &Shared,
    hub: &str,
    id: &str,
    v0_user: Option<Option<String>>,
) -> Option<String> {
    if is_v0_connection_id(id) {
        let user = v0_user?;
        shared
            .keys
            .verify_v0_connection_id(id, hub, user.as_deref(), 0)
            .ok()?;
        return Some(id.to_owned());
    }
    // Only the connection id is wanted: a token past its connect lifetime still names its
    // connection (the holder decides whether the request is allowed).
    let ticket = shared.keys.verify_ticket(id, 0).ok()?;
    (ticket.hub == hub).then_some(ticket.connection_id)
}

/// Whether a relay's error says no gateway holds the connection.
pub(crate) fn nobody_holds(error: &ApiError) -> bool {
    error.0.code == ErrorCode::RouteNotFound && error.0.message == NOT_FOUND
}

/// Relays to each of `addresses` in turn until one holds the connection.
pub(crate) async fn relay_any(
    shared: &Shared,
    holders: &Holders,
    kind: Kind,
    target: RelayTarget,
    body: Bytes,
) -> ApiResult<Response> {
    let mut last = Err(ApiError::new(ErrorCode::RouteNotFound, NOT_FOUND));
    let addresses = &holders.addresses;
    let connection = holders.connection.as_str();
    for address in addresses {
        last = relay(shared, address, kind, target.clone(), body.clone()).await;
        match &last {
            Err(error) if nobody_holds(error) => shared.relay_holders.forget(connection, address),
            // Probing several: an unreachable one is skipped.
            Err(error) if addresses.len() > 1 && error.0.code == ErrorCode::Unavailable => {
                shared.relay_holders.forget(connection, address);
                last = Err(ApiError::new(ErrorCode::RouteNotFound, NOT_FOUND));
            }
            Err(error) if error.0.code == ErrorCode::Unavailable => {
                shared.relay_holders.forget(connection, address);
                return last;
            }
            // The holder answered (its answer may be a refusal of the request).
            _ => {
                shared.relay_holders.remember(connection, address);
                return last;
            }
        }
    }
    last
}

/// Which gateway last answered a relayed request for a connection (by its id, which this
/// service signed), so the next request goes there first. Bounded: when full it starts over (a
/// miss costs a few probes, not a wrong answer).
#[derive(Default)]
pub(crate) struct HolderCache {
    inner: parking_lot::Mutex<std::collections::HashMap<Box<str>, Arc<str>>>,
}

/// Tokens remembered at most.
const HOLDER_CACHE: usize = 1 << 16;

impl HolderCache {
    fn get(&self, id: &str) -> Option<String> {
        self.inner.lock().get(id).map(|a| a.to_string())
    }

    fn remember(&self, id: &str, address: &str) {
        let mut map = self.inner.lock();
        if map.get(id).is_some_and(|a| &**a == address) {
            return;
        }
        if map.len() >= HOLDER_CACHE {
            map.clear();
        }
        map.insert(id.into(), address.into());
    }

    fn forget(&self, id: &str, address: &str) {
        let mut map = self.inner.lock();
        if map.get(id).is_some_and(|a| &**a == address) {
            map.remove(id);
        }
    }
}

/// Relays a request to the holder at `address`; the answer is the client's.
pub(crate) async fn relay(
    shared: &Shared,
    address: &str,
    kind: Kind,
    target: RelayTarget,
    body: Bytes,
) -> ApiResult<Response> {
    let unavailable = |what: &str| {
        ApiError(Error::unavailable(format!(
            "The gateway holding this connection could not be reached ({what}); try again."
        )))
    };
    let Some(channels) = shared.config.cluster.as_ref() else {
        return Err(unavailable("no cluster"));
    };
    let channel = channels.get(address).map_err(|e| {
        shared.metrics.relay_failed(kind.as_str());
        tracing::debug!(error = %e, address, "relay target has a bad address");
        unavailable(&e.to_string())
    })?;
    let max = channels.max_message_bytes();
    let mut client = RelayClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    shared.metrics.relayed(kind.as_str());
    let reply = match kind {
        Kind::Send => {
            client
                .send(timed(
                    RelaySend {
                        target: Some(target),
                        body,
                    },
                    shared.config.client_timeout + Duration::from_secs(5),
                ))
                .await
        }
        Kind::Poll => {
            client
                .poll(timed(target, http::POLL_TIMEOUT + Duration::from_secs(10)))
                .await
        }
        Kind::Close => client.close(timed(target, Duration::from_secs(10))).await,
    };
    let reply = match reply {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            shared.metrics.relay_failed(kind.as_str());
            tracing::debug!(%status, address, "relay failed");
            return Err(unavailable(status.message()));
        }
    };
    answer(reply)
}

fn timed<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The holder's reply as the client's response.
fn answer(reply: RelayReply) -> ApiResult<Response> {
    let status = u16::try_from(reply.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    if status.is_success() {
        if reply.body.is_empty() {
            return Ok(status.into_response());
        }
        return Ok(Response::builder()
            .status(status)
            .header(axum::http::header::CACHE_CONTROL, "no-cache")
            .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
            .body(axum::body::Body::from(reply.body))
            .unwrap_or_default());
    }
    let code = ErrorCode::from_code_str(&reply.code).unwrap_or(ErrorCode::Unavailable);
    Err(ApiError::new(code, reply.error))
}

/// The holder's side: the `Relay` service on the cluster listener.
pub struct RelayService {
    shared: Arc<Shared>,
}

impl RelayService {
    pub(crate) fn server(shared: Arc<Shared>, max: usize) -> RelayServer<RelayService> {
        RelayServer::new(RelayService { shared })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// The pipe a relayed request names, checked as a local request would be.
    fn pipe(&self, target: &RelayTarget) -> Result<Arc<http::Pipe>, RelayReply> {
        let Some(pipe) = self.shared.pipes.get(&target.id) else {
            return Err(refusal(ErrorCode::RouteNotFound, NOT_FOUND));
        };
        let token = (!target.access_token.is_empty()).then_some(target.access_token.as_str());
        if let Err(error) = pipe_request_allowed(&self.shared, &target.hub, token, &pipe) {
            return Err(refusal(error.0.code, &error.0.message));
        }
        Ok(pipe)
    }
}

impl RelayService {
    /// [`RelayService::pipe`], which must be a Long Polling one (else refused with `code`).
    fn long_polling(
        &self,
        target: &RelayTarget,
        code: ErrorCode,
        error: &str,
    ) -> Result<Arc<http::Pipe>, RelayReply> {
        let pipe = self.pipe(target)?;
        if pipe.kind != http::Kind::LongPolling {
            return Err(refusal(code, error));
        }
        Ok(pipe)
    }
}

fn refusal(code: ErrorCode, error: &str) -> RelayReply {
    RelayReply {
        status: u32::from(code.http_status()),
        body: Bytes::new(),
        error: error.to_owned(),
        code: code.as_str().to_owned(),
    }
}

fn ok(status: u16, body: Bytes) -> RelayReply {
    RelayReply {
        status: u32::from(status),
        body,
        error: String::new(),
        code: String::new(),
    }
}

#[tonic::async_trait]
impl Relay for RelayService {
    type ResumeStream = tokio_stream::wrappers::ReceiverStream<Result<ResumeFrame, Status>>;

    async fn resume(
        &self,
        request: Request<tonic::Streaming<ResumeFrame>>,
    ) -> Result<tonic::Response<Self::ResumeStream>, Status> {
        let mut inbound = request.into_inner();
        let Some(ResumeFrame {
            frame: Some(Frame::Target(target)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument(
                "the first frame of a resume names the connection",
            ));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(RESUME_QUEUE);
        let refuse = |why: &str| ResumeFrame {
            frame: Some(Frame::Close(why.to_owned())),
        };
        let token = (!target.access_token.is_empty()).then_some(target.access_token.as_str());
        match self.shared.resumable.get(&target.id) {
            None => {
                let _ = tx.send(Ok(refuse(NOT_FOUND))).await;
            }
            Some(slot) => match resume_allowed(&self.shared, &target.hub, token, &slot) {
                Ok(()) => slot.deposit(ClientSocket::Relayed(Box::new(RelayedSocket::new(
                    inbound, tx,
                )))),
                Err(error) => {
                    let _ = tx.send(Ok(refuse(&error.0.message))).await;
                }
            },
        }
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }

    async fn send(
        &self,
        request: Request<RelaySend>,
    ) -> Result<tonic::Response<RelayReply>, Status> {
        let message = request.into_inner();
        let target = message.target.unwrap_or_default();
        let pipe = match self.pipe(&target) {
            Ok(pipe) => pipe,
            Err(refused) => return Ok(tonic::Response::new(refused)),
        };
        if message.body.len() > http::MAX_SEND_BYTES {
            return Ok(tonic::Response::new(refusal(
                ErrorCode::PayloadTooLarge,
                http::SEND_TOO_LARGE,
            )));
        }
        let answer = match pipe
            .send(message.body, self.shared.config.client_timeout)
            .await
        {
            Sent::Queued => ok(200, Bytes::new()),
            Sent::Closed => refusal(ErrorCode::RouteNotFound, NOT_FOUND),
            Sent::Busy => refusal(ErrorCode::Unavailable, http::NOT_READING),
        };
        Ok(tonic::Response::new(answer))
    }

    async fn poll(
        &self,
        request: Request<RelayTarget>,
    ) -> Result<tonic::Response<RelayReply>, Status> {
        let pipe = match self.long_polling(
            &request.into_inner(),
            ErrorCode::ConnectionInUse,
            http::IN_USE,
        ) {
            Ok(pipe) => pipe,
            Err(refused) => return Ok(tonic::Response::new(refused)),
        };
        let outcome = pipe.poll(http::POLL_TIMEOUT).await;
        self.shared.metrics.long_poll(&outcome);
        let answer = match outcome {
            Polled::Data(data) => ok(200, data),
            Polled::Empty => ok(200, Bytes::new()),
            Polled::Closed => ok(204, Bytes::new()),
        };
        Ok(tonic::Response::new(answer))
    }

    async fn close(
        &self,
        request: Request<RelayTarget>,
    ) -> Result<tonic::Response<RelayReply>, Status> {
        let pipe = match self.long_polling(
            &request.into_inner(),
            ErrorCode::InvalidArgument,
            http::NOT_LONG_POLLING,
        ) {
            Ok(pipe) => pipe,
            Err(refused) => return Ok(tonic::Response::new(refused)),
        };
        pipe.close_by_client();
        Ok(tonic::Response::new(ok(202, Bytes::new())))
    }
}
