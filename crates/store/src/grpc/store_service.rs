//! The proto `Store` service: writes, the watch stream and status, served by every voter.
//!
//! `Write` goes through [`RaftStore::propose`], so a follower forwards it to the leader (once:
//! a write that arrives already forwarded is only proposed if this node leads). `Watch` sends
//! the applied state, then every batch applied after it in log order, plus a heartbeat with the
//! leader about every second; when the watcher cannot be kept exact — it fell behind the feed,
//! or a snapshot replaced this voter's state — the stream ends with an error and the watcher
//! starts over. A lagging watcher never slows the voter down: the feed is a bounded broadcast.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use switchboard_membership::Command;
use switchboard_proto::v1::store_server::{Store as StoreRpc, StoreServer};
use switchboard_proto::v1::watch_event::Event;
use switchboard_proto::v1::{
    AppliedBatch, StateSnapshot, StatusReply, StatusRequest, WatchEvent, WatchRequest, WriteReply,
    WriteRequest,
};
use tokio::sync::broadcast;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{status_from_error, FORWARDED_KEY, MAX_MESSAGE_BYTES};
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
}

impl StoreGrpcService {
    /// The service for `store`; its watch streams end when the store shuts down.
    pub fn new(store: Arc<RaftStore>) -> StoreGrpcService {
        StoreGrpcService {
            store,
            shutdown: CancellationToken::new(),
        }
    }

    /// Also ends watch streams when `token` is cancelled (stop them before a graceful server
    /// shutdown, which waits for open streams).
    pub fn with_shutdown(mut self, token: CancellationToken) -> StoreGrpcService {
        self.shutdown = token;
        self
    }

    /// The tonic server for this service, with the store's message size limits.
    pub fn into_server(self) -> StoreServer<StoreGrpcService> {
        StoreServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
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
    start: Option<StateSnapshot>,
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
        if let Some(snapshot) = self.start.take() {
            return Some(Ok(event(Event::Snapshot(snapshot))));
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
        let forwarded = request.metadata().contains_key(FORWARDED_KEY);
        let commands: Vec<Command> = codec::decode(&request.into_inner().commands)
            .map_err(|e| Status::invalid_argument(format!("undecodable commands: {e}")))?;
        if commands.is_empty() {
            return Err(Status::invalid_argument(
                "a write needs at least one command",
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
            start: Some(StateSnapshot {
                log_index: start.log_index,
                state: start.state,
            }),
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
