//! The proto `Store` service: writes, the watch stream and status, served by every voter.
//!
//! `Write` goes through [`RaftStore::propose`], so a follower forwards it to the leader (once:
//! a write that arrives already forwarded is only proposed if this node leads). A write acts
//! only for its caller: a command that only one node may send (its lease, its leaving, a
//! connection opening on it; [`Command::acts_for`]) must name the caller's proven node id and
//! incarnation, and a forwarded write must come from a voter, which checked its own caller.
//! `Watch` sends the applied state (in chunks below the message size limit), then every batch
//! applied after it in log order, plus a heartbeat with the
//! leader about every second; when the watcher cannot be kept exact — it fell behind the feed,
//! or a snapshot replaced this voter's state — the stream ends with an error and the watcher
//! starts over. A lagging watcher never slows the voter down: the feed is a bounded broadcast.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use switchboard_membership::Command;
use switchboard_net::{peer_identity, refuse_identity};
use switchboard_proto::v1::store_server::{Store as StoreRpc, StoreServer};
use switchboard_proto::v1::watch_event::Event;
use switchboard_proto::v1::{
    AppliedBatch, StateChunk, StatusReply, StatusRequest, WatchEvent, WatchRequest, WriteReply,
    WriteRequest,
};
use tokio::sync::broadcast;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{status_from_error, FORWARDED_KEY};
use crate::api::MembershipStore;
use crate::codec;
use crate::raft_store::RaftStore;
use crate::state_machine::FeedEvent;

/// How often a watch stream carries a heartbeat by default.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Serves the store API of one voter.
#[derive(Clone)]
pub struct StoreGrpcService {
    store: Arc<RaftStore>,
    shutdown: CancellationToken,
    /// The largest piece of a watch state in one message.
    chunk_bytes: usize,
}

/// Room left in a message for everything but a state chunk's data.
const CHUNK_OVERHEAD: usize = 1024;

fn chunk_bytes(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_sub(CHUNK_OVERHEAD)
        .max(CHUNK_OVERHEAD)
}

impl StoreGrpcService {
    /// The service for `store`; its watch streams end when the store shuts down.
    pub fn new(store: Arc<RaftStore>) -> StoreGrpcService {
        StoreGrpcService {
            store,
            shutdown: CancellationToken::new(),
            chunk_bytes: chunk_bytes(switchboard_net::DEFAULT_MAX_MESSAGE_BYTES),
        }
    }

    /// Also ends watch streams when `token` is cancelled (stop them before a graceful server
    /// shutdown, which waits for open streams).
    pub fn with_shutdown(mut self, token: CancellationToken) -> StoreGrpcService {
        self.shutdown = token;
        self
    }

    /// The tonic server for this service, accepting and sending messages up to
    /// `max_message_bytes` (watch states go in chunks below it).
    pub fn into_server(mut self, max_message_bytes: usize) -> StoreServer<StoreGrpcService> {
        self.chunk_bytes = chunk_bytes(max_message_bytes);
        StoreServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

impl std::fmt::Debug for StoreGrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreGrpcService")
            .field("node_id", &self.store.node_id())
            .finish_non_exhaustive()
    }
}

/// Who leads and how far this voter is, as the proto says it.
fn status_reply(store: &RaftStore) -> StatusReply {
    // `status()` withholds a leadership no quorum confirmed lately: never advertise a cut-off
    // ex-leader to gateways.
    let status = store.status();
    let (leader_id, leader_addr) = match (status.leader_id, store.leader()) {
        (Some(id), Some((known, node))) if id == known => {
            (id, node.map(|n| n.addr).unwrap_or_default())
        }
        (Some(id), _) => (id, String::new()),
        (None, _) => (0, String::new()),
    };
    StatusReply {
        node_id: store.node_id(),
        leader_id,
        leader_addr,
        term: status.term,
        applied_index: store.view().applied_index(),
        read_index: 0,
    }
}

/// A watch stream in progress.
struct WatchState {
    store: Arc<RaftStore>,
    /// The encoded state still to send, from `sent` on, at `log_index`.
    start: Option<(u64, bytes::Bytes)>,
    total_bytes: u64,
    chunk_bytes: usize,
    updates: broadcast::Receiver<FeedEvent>,
    heartbeat: Interval,
    shutdown: CancellationToken,
    store_stopped: CancellationToken,
    done: bool,
}

impl WatchState {
    async fn next(&mut self) -> Option<Result<WatchEvent, Status>> {
        if self.done {
            return None;
        }
        if let Some((log_index, state)) = self.start.take() {
            let (data, rest) = if state.len() > self.chunk_bytes {
                let mut state = state;
                let rest = state.split_off(self.chunk_bytes);
                (state, Some(rest))
            } else {
                (state, None)
            };
            let last = rest.is_none();
            if let Some(rest) = rest {
                self.start = Some((log_index, rest));
            }
            return Some(Ok(event(Event::Chunk(StateChunk {
                log_index,
                total_bytes: self.total_bytes,
                data,
                last,
            }))));
        }
        let result = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(Status::unavailable("the store is shutting down")),
            _ = self.store_stopped.cancelled() => Err(Status::unavailable("the store is shutting down")),
            update = self.updates.recv() => match update {
                Ok(FeedEvent::Batch { log_index, batch }) => codec::encode(&*batch)
                    .map(|batch| event(Event::Applied(AppliedBatch { log_index, batch })))
                    .map_err(|e| Status::internal(format!("cannot encode batch {log_index}: {e}"))),
                // An empty batch moves only the watcher's applied index.
                Ok(FeedEvent::Index { log_index }) => {
                    Ok(event(Event::Applied(AppliedBatch { log_index, batch: Vec::new() })))
                }
                Ok(FeedEvent::Reset) => Err(Status::aborted(
                    "this voter installed a snapshot; watch again from the new state",
                )),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    crate::metrics::watcher_lagged();
                    Err(Status::aborted(format!(
                        "the watcher fell {missed} batches behind; watch again"
                    )))
                }
                Err(broadcast::error::RecvError::Closed) => {
                    Err(Status::unavailable("the store stopped"))
                }
            },
            _ = self.heartbeat.tick() => Ok(event(Event::Heartbeat(status_reply(&self.store)))),
        };
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

fn event(event: Event) -> WatchEvent {
    WatchEvent { event: Some(event) }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl StoreRpc for StoreGrpcService {
    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        let caller = peer_identity(&request)?;
        let forwarded = request.metadata().contains_key(FORWARDED_KEY);
        let commands: Vec<Command> = codec::decode(&request.into_inner().commands)
            .map_err(|e| Status::invalid_argument(format!("undecodable commands: {e}")))?;
        if commands.is_empty() {
            return Err(Status::invalid_argument(
                "a write needs at least one command",
            ));
        }
        if !commands.iter().all(Command::is_durable) {
            crate::metrics::write_refused();
            return Err(Status::invalid_argument(
                "connection commands are a gateway's own state, not the store's",
            ));
        }
        if commands
            .iter()
            .any(|c| matches!(c, Command::SetClusterId { .. }))
        {
            // Only a leader names its cluster, for itself (see `raft_store::name_cluster`).
            crate::metrics::write_refused();
            return Err(Status::invalid_argument(
                "the cluster id is set by the cluster's own leader",
            ));
        }
        if forwarded {
            // Only a voter forwards, and it checked the commands' caller itself.
            if !self.store.is_voter(caller.node) {
                crate::metrics::write_refused();
                return Err(refuse_identity(
                    "store",
                    caller,
                    "forward writes: it is not a voter",
                ));
            }
        } else if let Some((node, incarnation)) = commands
            .iter()
            .filter_map(Command::acts_for)
            .find(|&(node, incarnation)| (node, incarnation) != (caller.node, caller.incarnation))
        {
            crate::metrics::write_refused();
            return Err(refuse_identity(
                "store",
                caller,
                &format!("write for node {node} (incarnation {incarnation})"),
            ));
        }
        let started = std::time::Instant::now();
        let applied = if forwarded {
            self.store.propose_leader_only(commands).await
        } else {
            self.store.propose(commands).await
        };
        // Writes arriving over gRPC count too (a `store` voter serves only these).
        crate::metrics::write_done(
            crate::metrics::result_label(&applied.as_ref().map(|_| ())),
            started.elapsed(),
        );
        let applied = applied.map_err(|e| status_from_error(&e))?;
        let outcomes = codec::encode(&applied.outcomes)
            .map_err(|e| Status::internal(format!("cannot encode outcomes: {e}")))?;
        Ok(Response::new(WriteReply {
            log_index: applied.log_index,
            outcomes,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Encoding the whole state is CPU work: keep it off the runtime's worker threads.
        let store = self.store.clone();
        let start = tokio::task::spawn_blocking(move || store.watch())
            .await
            .map_err(|e| Status::internal(format!("watch task failed: {e}")))?
            .map_err(|e| status_from_error(&e))?;
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let state = WatchState {
            store: self.store.clone(),
            total_bytes: start.state.len() as u64,
            start: Some((start.log_index, bytes::Bytes::from(start.state))),
            chunk_bytes: self.chunk_bytes,
            updates: start.updates,
            heartbeat,
            shutdown: self.shutdown.clone(),
            store_stopped: self.store.shutdown_token(),
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            state.next().await.map(|item| (item, state))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let mut reply = status_reply(&self.store);
        if reply.leader_id == reply.node_id {
            reply.read_index = self.store.read_index().await.unwrap_or(0);
        }
        Ok(Response::new(reply))
    }
}
