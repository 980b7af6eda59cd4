//! [`RemoteStore`]: the membership store as a stateless gateway sees it, over gRPC.
//!
//! A gateway without a Raft voter still needs the applied membership state at memory speed
//! (every message routes through it) and read-your-writes for its own changes. So it keeps a
//! replica: a [`View`] fed by one voter's `Watch` stream — first the whole state, then every
//! applied batch, which it applies with the same deterministic `Membership::apply`, so the
//! replica equals the voters' state at every index.
//!
//! Following the watch:
//! - the stream's snapshot replaces the replica only if it is at least as new; an older one (a
//!   lagging voter) is kept out, and the batches up to the replica's index are skipped, so the
//!   applied index never goes backwards;
//! - a voter ends a stream it cannot keep exact (the watcher lagged behind its feed, or a
//!   snapshot replaced its state); the stream also counts as dead when nothing arrived for
//!   `heartbeat_timeout`, when its voter has known no leader for that long (a voter cut off
//!   from the others), and when batch indexes go backwards. Each time the watcher starts
//!   over with backoff, on the leader when it is known (it is never behind), else on the next
//!   voter.
//!
//! Writes are batched like the store's own batcher (bounded queue, one or two RPCs in flight)
//! and sent to the leader when known, else to any voter (which forwards). `UNAVAILABLE` and
//! transport failures move on to another voter until the write timeout; a write whose outcome
//! was lost on the wire may therefore be applied twice, which membership commands tolerate
//! (joining twice, a renewed heartbeat). A write returns once the replica has applied the
//! write's log index. [`MembershipStore::status`] reports a leader only while the stream is up
//! and a heartbeat arrived recently, which is what a gateway's readiness needs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use switchboard_core::NodeId;
use switchboard_membership::{Batch, Command, Outcome};
use switchboard_proto::v1::store_client::StoreClient;
use switchboard_proto::v1::watch_event::Event;
use switchboard_proto::v1::{
    StateSnapshot, StatusReply, StatusRequest, WatchRequest, WriteRequest,
};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{MembershipStore, StoreStatus, View};
use crate::barrier::ReadBarrier;
use crate::batcher::{distribute, fail, Request, Submitter};
use crate::codec;
use crate::error::StoreError;
use crate::forward::Applied;
use crate::grpc::{error_from_status, ChannelSettings, Channels, ClusterChannel};
use crate::raft_store::DEFAULT_MAX_BATCH_BYTES;

/// Settings of a [`RemoteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStoreConfig {
    /// This gateway's node id (reported in [`StoreStatus::node_id`]).
    pub node_id: NodeId,
    /// How long a write may take, retries and waiting for the replica included.
    pub write_timeout: Duration,
    /// A watch stream with no event for this long is dead, and the leader is reported unknown.
    /// Must exceed the voters' watch heartbeat interval (one second).
    pub heartbeat_timeout: Duration,
    /// How long opening a watch and receiving its first state may take.
    pub snapshot_timeout: Duration,
    /// First pause before watching again after a failure; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest pause between two watch attempts.
    pub reconnect_max: Duration,
    /// Most commands in one write RPC.
    pub max_batch_commands: usize,
    /// Bound on the encoded commands of one write RPC (keep it well below the cluster's
    /// message size).
    pub max_batch_bytes: usize,
    /// Most write RPCs in flight at once.
    pub max_in_flight: usize,
    /// Capacity of the write queue, in write calls; senders wait when it is full.
    pub queue_capacity: usize,
    /// How channels to the voters dial.
    pub channel: ChannelSettings,
    /// The largest membership state accepted from a voter, encoded.
    pub max_state_bytes: u64,
}

impl RemoteStoreConfig {
    /// Defaults for gateway `node_id`.
    pub fn new(node_id: NodeId) -> RemoteStoreConfig {
        RemoteStoreConfig {
            node_id,
            write_timeout: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(3),
            snapshot_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            max_batch_commands: 1024,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_in_flight: 2,
            queue_capacity: 4096,
            channel: ChannelSettings::default(),
            max_state_bytes: 1 << 30,
        }
    }
}

/// Where the leader is, as far as this gateway knows (for routing writes and watches).
#[derive(Debug, Clone, Default)]
struct LeaderHint {
    id: Option<NodeId>,
    addr: Option<String>,
}

/// The state of the watch stream (for readiness).
#[derive(Debug, Default)]
struct WatchHealth {
    connected: bool,
    /// The voter the stream comes from, while connected.
    voter: Option<String>,
    last_heartbeat: Option<Instant>,
    leader_id: Option<NodeId>,
    term: u64,
}

/// What the tasks and the handle share.
struct Shared {
    config: RemoteStoreConfig,
    voters: Vec<String>,
    channels: Channels,
    view: View,
    leader: Mutex<LeaderHint>,
    health: Mutex<WatchHealth>,
    /// Bumped to make the watch task start over (a write saw the replica fall behind).
    resync: watch::Sender<u64>,
    next_voter: AtomicUsize,
}

impl Shared {
    fn client(&self, addr: &str) -> Result<StoreClient<ClusterChannel>, StoreError> {
        let channel = self
            .channels
            .get(addr)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(StoreClient::new(channel)
            .max_decoding_message_size(self.channels.max_message_bytes())
            .max_encoding_message_size(self.channels.max_message_bytes()))
    }

    /// The next voter in turn.
    fn rotate(&self) -> Option<String> {
        if self.voters.is_empty() {
            return None;
        }
        let i = self.next_voter.fetch_add(1, Ordering::Relaxed) % self.voters.len();
        self.voters.get(i).cloned()
    }

    /// The leader if known (and not `avoid`), else the next voter.
    fn target(&self, avoid: Option<&str>) -> Option<String> {
        let hinted = self.leader.lock().addr.clone();
        match hinted {
            Some(addr) if Some(addr.as_str()) != avoid => Some(addr),
            _ => {
                let next = self.rotate()?;
                if Some(next.as_str()) == avoid && self.voters.len() > 1 {
                    self.rotate()
                } else {
                    Some(next)
                }
            }
        }
    }

    fn learn_leader(&self, id: Option<NodeId>, addr: Option<String>) {
        let mut hint = self.leader.lock();
        match addr.filter(|a| !a.is_empty()) {
            Some(addr) => {
                hint.id = id;
                hint.addr = Some(addr);
            }
            None if id.is_some() && id == hint.id => {}
            None => *hint = LeaderHint { id, addr: None },
        }
    }

    /// Drops the leader hint if it points at `addr` (which just failed).
    fn forget_leader(&self, addr: &str) {
        let mut hint = self.leader.lock();
        if hint.addr.as_deref() == Some(addr) {
            *hint = LeaderHint::default();
        }
    }

    fn heartbeat(&self, status: &StatusReply) {
        let leader_id = (status.leader_id != 0).then_some(status.leader_id);
        {
            let mut health = self.health.lock();
            health.last_heartbeat = Some(Instant::now());
            health.leader_id = leader_id;
            health.term = status.term;
        }
        if leader_id.is_some() {
            self.learn_leader(leader_id, Some(status.leader_addr.clone()));
        }
    }

    /// Records that the stream from `voter` is up, or (`None`) that no stream is.
    fn set_connected(&self, voter: Option<&str>) {
        let connected = voter.is_some();
        let mut health = self.health.lock();
        if health.connected != connected {
            crate::metrics::watch_connected(connected);
        }
        health.connected = connected;
        health.voter = voter.map(str::to_owned);
        if !connected {
            health.last_heartbeat = None;
            health.leader_id = None;
        }
    }
}

/// The membership store of a stateless gateway: a replica fed by a voter's watch stream, and
/// writes sent to the voters over gRPC.
pub struct RemoteStore {
    shared: Arc<Shared>,
    barrier: ReadBarrier,
    submitter: Submitter,
    cancel: CancellationToken,
    tasks: TaskTracker,
    stopped: AtomicBool,
}

impl RemoteStore {
    /// Starts following the store whose voters are reachable at `voters` (their cluster
    /// addresses, `host:port`). Returns at once: the watch connects in the background, and
    /// [`MembershipStore::status`] reports no leader until it is up. Must be called inside a
    /// Tokio runtime.
    ///
    /// Every call carries this gateway's cluster credentials (`security`); a voter that refuses
    /// them is reported in the log as the configuration error it is, and the store stays
    /// unavailable (the gateway never becomes ready).
    pub fn connect(
        voters: Vec<String>,
        config: RemoteStoreConfig,
        security: switchboard_net::ClusterSecurity,
    ) -> Arc<RemoteStore> {
        crate::metrics::describe();
        let voters: Vec<String> = voters
            .into_iter()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        if voters.is_empty() {
            tracing::error!("the remote store has no voter addresses; every write will fail");
        }
        let start = if voters.is_empty() {
            0
        } else {
            usize::try_from(config.node_id).unwrap_or(0) % voters.len()
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            channels: Channels::with_settings(security, config.channel.clone()),
            voters,
            view: View::new(switchboard_membership::Membership::new()),
            leader: Mutex::default(),
            health: Mutex::default(),
            resync: watch::Sender::new(0),
            next_voter: AtomicUsize::new(start),
            config,
        });
        crate::metrics::watch_connected(false);
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(run_watch(shared.clone(), cancel.child_token()));
        tasks.spawn(run_writes(shared.clone(), rx, cancel.child_token()));
        tasks.close();
        let submitter = Submitter::new(tx, shared.config.write_timeout);
        Arc::new(RemoteStore {
            barrier: ReadBarrier::default(),
            shared,
            submitter,
            cancel,
            tasks,
            stopped: AtomicBool::new(false),
        })
    }

    /// The voter whose watch stream the replica follows, if the stream is up.
    pub fn watched_voter(&self) -> Option<String> {
        self.shared.health.lock().voter.clone()
    }

    /// Stops the watch and the writer (queued writes fail as unavailable). Idempotent.
    pub async fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        self.cancel.cancel();
        self.tasks.wait().await;
        self.shared.set_connected(None);
    }
}

impl Drop for RemoteStore {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("voters", &self.shared.voters)
            .field("node_id", &self.shared.config.node_id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MembershipStore for RemoteStore {
    async fn write_all(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, StoreError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        self.submitter.write_all(commands).await
    }

    async fn write_indexed(&self, command: Command) -> Result<(Outcome, u64), StoreError> {
        self.submitter.write_indexed(vec![command]).await?.single()
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let index = self
            .barrier
            .leader_index(move || async move {
                leader_read_index(&shared).await.map_err(|e| e.to_string())
            })
            .await
            .map_err(StoreError::Unavailable)?;
        if self.shared.view.wait_applied(index, SYNC_WAIT).await {
            Ok(())
        } else {
            // The voter this replica follows is behind: start over on the leader.
            self.shared.resync.send_modify(|n| *n = n.wrapping_add(1));
            Err(StoreError::Unavailable(format!(
                "this gateway's replica has not applied index {index} yet"
            )))
        }
    }

    fn view(&self) -> View {
        self.shared.view.clone()
    }

    fn status(&self) -> StoreStatus {
        let (leader_id, term) = {
            let health = self.shared.health.lock();
            let fresh = health.connected
                && health
                    .last_heartbeat
                    .is_some_and(|at| at.elapsed() < self.shared.config.heartbeat_timeout);
            (health.leader_id.filter(|_| fresh), health.term)
        };
        let applied = self.shared.view.applied_index();
        StoreStatus {
            node_id: self.shared.config.node_id,
            leader_id,
            is_leader: false,
            term,
            last_log_index: None,
            applied_index: (applied > 0).then_some(applied),
            committed_index: None,
            snapshot_index: None,
            purged_index: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The watch.

static REFUSED_LOG: switchboard_core::Throttle = switchboard_core::Throttle::new(10_000);

/// Follows voters' watch streams until cancelled, starting over after every failure.
async fn run_watch(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut pause = shared.config.reconnect_min;
    let mut failed: Option<String> = None;
    loop {
        let Some(addr) = shared.target(failed.as_deref()) else {
            return;
        };
        let mut resync = shared.resync.subscribe();
        resync.mark_unchanged();
        let mut synced = false;
        let result = tokio::select! {
            _ = cancel.cancelled() => Ok(()),
            result = watch_once(&shared, &addr, &mut resync, &mut synced) => result,
        };
        shared.set_connected(None);
        if cancel.is_cancelled() {
            return;
        }
        crate::metrics::watch_resync();
        match &result {
            Ok(()) => tracing::info!(voter = %addr, "store watch ended; watching again"),
            Err(StoreError::Refused(why)) => {
                if let Some(suppressed) = REFUSED_LOG.allow(switchboard_core::throttle::now_ms()) {
                    tracing::error!(voter = %addr, error = %why, suppressed, "the store refused this gateway's cluster credentials: every node needs the same --cluster-key (or --access-key); this gateway stays not ready");
                }
            }
            Err(error) => {
                tracing::warn!(voter = %addr, error = %error, "store watch failed; watching again")
            }
        }
        failed = Some(addr.clone());
        if result.is_err() {
            shared.forget_leader(&addr);
        }
        if synced {
            pause = shared.config.reconnect_min;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        if !synced {
            pause = (pause * 2).min(shared.config.reconnect_max);
        }
    }
}

/// One watch stream on `addr`, until it fails, ends, or a resync is asked for.
async fn watch_once(
    shared: &Shared,
    addr: &str,
    resync: &mut watch::Receiver<u64>,
    synced: &mut bool,
) -> Result<(), StoreError> {
    let mut client = shared.client(addr)?;
    let max_state = shared.config.max_state_bytes;
    let opening = async {
        let mut stream = client
            .watch(WatchRequest {})
            .await
            .map_err(|s| error_from_status(&s))?
            .into_inner();
        let mut state = StateAssembly::default();
        loop {
            let event = stream.message().await.map_err(|s| error_from_status(&s))?;
            match event.and_then(|e| e.event) {
                // From a voter of an older version: the state in one message.
                Some(Event::Snapshot(snapshot)) if state.is_empty() => {
                    return Ok::<_, StoreError>((stream, snapshot))
                }
                Some(Event::Chunk(chunk)) => {
                    if let Some(snapshot) = state.add(chunk, max_state).map_err(|why| {
                        StoreError::Internal(format!("the watch on {addr} sent a bad state: {why}"))
                    })? {
                        return Ok((stream, snapshot));
                    }
                }
                _ => {
                    return Err(StoreError::Internal(format!(
                        "the watch on {addr} did not start with the state"
                    )))
                }
            }
        }
    };
    let (mut stream, snapshot) = tokio::time::timeout(shared.config.snapshot_timeout, opening)
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "no state from {addr} within {} ms",
                shared.config.snapshot_timeout.as_millis()
            ))
        })??;
    let mut position = snapshot.log_index;
    let mut leaderless_since: Option<Instant> = None;
    install_snapshot(&shared.view, snapshot).await?;
    *synced = true;
    shared.set_connected(Some(addr));
    tracing::info!(voter = %addr, applied_index = shared.view.applied_index(), "store watch connected");
    loop {
        let message = tokio::select! {
            changed = resync.changed() => {
                return match changed {
                    Ok(()) => Err(StoreError::Unavailable("the replica fell behind a write".to_owned())),
                    Err(_) => Ok(()),
                };
            }
            message = tokio::time::timeout(shared.config.heartbeat_timeout, stream.message()) => message,
        };
        let event = match message {
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "nothing from {addr} for {} ms",
                    shared.config.heartbeat_timeout.as_millis()
                )))
            }
            Ok(Err(status)) => return Err(error_from_status(&status)),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(event))) => event,
        };
        match event.event {
            Some(Event::Applied(applied)) => {
                if applied.log_index <= position {
                    return Err(StoreError::Internal(format!(
                        "the watch on {addr} went back from index {position} to {}",
                        applied.log_index
                    )));
                }
                position = applied.log_index;
                if applied.log_index > shared.view.applied_index() {
                    apply_batch(&shared.view, applied.log_index, applied.batch).await?;
                }
            }
            Some(Event::Heartbeat(status)) => {
                shared.heartbeat(&status);
                // A voter cut off from the others knows no leader and applies nothing: move on.
                if status.leader_id != 0 {
                    leaderless_since = None;
                } else if leaderless_since.get_or_insert_with(Instant::now).elapsed()
                    >= shared.config.heartbeat_timeout
                {
                    return Err(StoreError::Unavailable(format!(
                        "{addr} has known no leader for {} ms",
                        shared.config.heartbeat_timeout.as_millis()
                    )));
                }
            }
            Some(Event::Snapshot(_) | Event::Chunk(_)) => {
                return Err(StoreError::Internal(format!(
                    "the watch on {addr} sent a second state"
                )))
            }
            None => {}
        }
    }
}

/// The chunks of a watch's state, put back together.
#[derive(Default)]
struct StateAssembly {
    log_index: u64,
    total: u64,
    data: Vec<u8>,
    chunks: usize,
}

impl StateAssembly {
    fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    /// Adds one chunk; the whole state once the last one arrived. Refuses a state larger than
    /// `max` bytes before buffering it, and chunks that disagree with each other.
    fn add(
        &mut self,
        chunk: switchboard_proto::v1::StateChunk,
        max: u64,
    ) -> Result<Option<StateSnapshot>, String> {
        if self.chunks == 0 {
            if chunk.total_bytes > max {
                return Err(format!(
                    "{} bytes, more than the {max} bytes a replica accepts",
                    chunk.total_bytes
                ));
            }
            self.log_index = chunk.log_index;
            self.total = chunk.total_bytes;
            // Grown as data arrives: an announcement alone reserves little.
            let announced = usize::try_from(chunk.total_bytes).unwrap_or(usize::MAX);
            self.data.reserve(announced.min(64 << 20));
        } else if chunk.log_index != self.log_index || chunk.total_bytes != self.total {
            return Err("chunks of different states".into());
        }
        self.chunks += 1;
        if self.data.len() as u64 + chunk.data.len() as u64 > self.total {
            return Err("more data than announced".into());
        }
        self.data.extend_from_slice(&chunk.data);
        if !chunk.last {
            return Ok(None);
        }
        if self.data.len() as u64 != self.total {
            return Err("less data than announced".into());
        }
        Ok(Some(StateSnapshot {
            log_index: self.log_index,
            state: std::mem::take(&mut self.data),
        }))
    }
}

/// Replaces the replica with the stream's state, unless the replica is already newer.
async fn install_snapshot(view: &View, snapshot: StateSnapshot) -> Result<(), StoreError> {
    if snapshot.log_index < view.applied_index() {
        tracing::info!(
            voter_index = snapshot.log_index,
            replica_index = view.applied_index(),
            "the watched voter is behind this replica; skipping what the replica has"
        );
        return Ok(());
    }
    let view = view.clone();
    tokio::task::spawn_blocking(move || {
        let state = crate::decode_state(&snapshot.state)?;
        let mut current = view.write();
        if snapshot.log_index >= view.applied_index() {
            *current = state;
            view.set_applied(snapshot.log_index);
        }
        Ok(())
    })
    .await
    .map_err(|e| StoreError::Internal(format!("snapshot task failed: {e}")))?
}

/// Applies one batch to the replica (decoding and applying off the runtime).
async fn apply_batch(view: &View, log_index: u64, bytes: Vec<u8>) -> Result<(), StoreError> {
    let view = view.clone();
    tokio::task::spawn_blocking(move || {
        // An empty batch is an entry without commands (blank, membership): only the index moves.
        let batch: Option<Batch> =
            if bytes.is_empty() {
                None
            } else {
                Some(codec::decode(&bytes).map_err(|e| {
                    StoreError::Internal(format!("undecodable batch {log_index}: {e}"))
                })?)
            };
        let mut state = view.write();
        if log_index > view.applied_index() {
            if let Some(batch) = &batch {
                state.apply(batch);
            }
            view.set_applied(log_index);
        }
        Ok(())
    })
    .await
    .map_err(|e| StoreError::Internal(format!("apply task failed: {e}")))?
}

// ---------------------------------------------------------------------------------------------
// Writes.

/// How long a read barrier may take in all (asking the leader, then waiting for the replica).
/// Short: callers fall back to the view they have, and a replica this far behind is resynced.
const SYNC_WAIT: Duration = Duration::from_millis(800);

/// Longest pause between two attempts of one write.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Turns queued write calls into write RPCs until cancelled.
async fn run_writes(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Request>,
    cancel: CancellationToken,
) {
    let limits = crate::batcher::BatchLimits {
        commands: shared.config.max_batch_commands.max(1),
        bytes: shared.config.max_batch_bytes.max(1),
    };
    let in_flight = Arc::new(Semaphore::new(shared.config.max_in_flight.max(1)));
    let tasks = TaskTracker::new();
    let mut carry: Option<Request> = None;
    loop {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let first = match carry.take() {
            Some(request) => request,
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                request = rx.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
            },
        };
        let (mut requests, rest) = crate::batcher::gather(first, &mut rx, limits);
        carry = rest;
        requests.retain(|r| !r.reply.is_closed());
        if requests.is_empty() {
            continue;
        }
        let shared = shared.clone();
        let cancel = cancel.clone();
        requests.iter().for_each(crate::batcher::Request::mark_sent);
        tasks.spawn(async move {
            let mut sizes = Vec::with_capacity(requests.len());
            let mut batch = Vec::with_capacity(requests.iter().map(|r| r.commands.len()).sum());
            for request in &mut requests {
                sizes.push(request.commands.len());
                batch.append(&mut request.commands);
            }
            let result = tokio::select! {
                _ = cancel.cancelled() => Err(StoreError::Unavailable("the store client is shutting down".to_owned())),
                result = write_batch(&shared, batch) => result,
            };
            distribute(requests, sizes, result);
            drop(permit);
        });
    }
    rx.close();
    let stopping = || StoreError::Unavailable("the store client is shutting down".to_owned());
    if let Some(request) = carry.take() {
        fail(vec![request], stopping());
    }
    let mut rest = Vec::new();
    while let Ok(request) = rx.try_recv() {
        rest.push(request);
    }
    fail(rest, stopping());
    tasks.close();
    tasks.wait().await;
}

/// Sends one batch until a voter applies it (or the write timeout), then waits until the
/// replica has applied it too.
async fn write_batch(shared: &Shared, commands: Vec<Command>) -> Result<Applied, StoreError> {
    let timeout = shared.config.write_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let encoded = codec::encode(&commands)
        .map_err(|e| StoreError::Internal(format!("encode commands: {e}")))?;
    let mut pause = Duration::from_millis(20);
    let mut failed: Option<String> = None;
    let (log_index, outcomes) = loop {
        let Some(addr) = shared.target(failed.as_deref()) else {
            return Err(StoreError::Config(
                "the remote store has no voter addresses".to_owned(),
            ));
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let error = match send_write(shared, &addr, encoded.clone(), remaining).await {
            Ok(reply) => break reply,
            Err(StoreError::NotLeader {
                leader_id,
                leader_addr,
            }) => {
                shared.forget_leader(&addr);
                shared.learn_leader(leader_id, leader_addr.clone());
                StoreError::NotLeader {
                    leader_id,
                    leader_addr,
                }
            }
            Err(error) if error.retryable() => {
                shared.forget_leader(&addr);
                error
            }
            Err(error) => return Err(error),
        };
        tracing::debug!(voter = %addr, error = %error, "store write attempt failed; retrying");
        failed = Some(addr);
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(StoreError::Timeout(format!(
                "no store voter applied the write within {} ms (last: {error}); it may still be applied",
                timeout.as_millis()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    };
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !shared.view.wait_applied(log_index, remaining).await {
        // The voter this replica follows is behind: start over on the leader.
        shared.resync.send_modify(|n| *n = n.wrapping_add(1));
        return Err(StoreError::Timeout(format!(
            "the write was applied at index {log_index}, but this gateway's replica has not caught up yet"
        )));
    }
    Ok(Applied {
        log_index,
        outcomes,
    })
}

/// The commit point the leader confirms with a quorum, asked of the leader itself (following
/// not-the-leader hints, since a follower's answer could be behind): the same rule as a
/// follower voter's barrier ([`crate::grpc::confirmed_read_index`]).
async fn leader_read_index(shared: &Shared) -> Result<u64, StoreError> {
    // One deadline for every hop.
    let deadline = tokio::time::Instant::now() + SYNC_WAIT;
    let mut addr = shared
        .target(None)
        .ok_or_else(|| StoreError::Config("the remote store has no voter addresses".to_owned()))?;
    for _ in 0..3 {
        let mut client = shared.client(&addr)?;
        let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(timeout);
        let reply = match tokio::time::timeout(timeout, client.status(request)).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => {
                shared.forget_leader(&addr);
                return Err(error_from_status(&status));
            }
            Err(_) => {
                shared.forget_leader(&addr);
                return Err(StoreError::Unavailable(format!(
                    "{addr} did not answer in time"
                )));
            }
        };
        match crate::grpc::confirmed_read_index(&reply) {
            Ok(index) => {
                shared.learn_leader(Some(reply.leader_id), Some(addr));
                return Ok(index);
            }
            Err(StoreError::NotLeader {
                leader_id,
                leader_addr: Some(next),
            }) => {
                shared.forget_leader(&addr);
                shared.learn_leader(leader_id, Some(next.clone()));
                addr = next;
            }
            Err(error) => {
                shared.forget_leader(&addr);
                return Err(error);
            }
        }
    }
    Err(StoreError::Unavailable(
        "no store leader is known".to_owned(),
    ))
}

/// One `Store.Write` call to `addr`, bounded by `timeout`.
async fn send_write(
    shared: &Shared,
    addr: &str,
    commands: Vec<u8>,
    timeout: Duration,
) -> Result<(u64, Vec<Outcome>), StoreError> {
    let mut client = shared.client(addr)?;
    let mut request = tonic::Request::new(WriteRequest { commands });
    request.set_timeout(timeout);
    let reply = match tokio::time::timeout(timeout, client.write(request)).await {
        Ok(Ok(reply)) => reply.into_inner(),
        Ok(Err(status)) => return Err(error_from_status(&status)),
        Err(_) => {
            return Err(StoreError::Unavailable(format!(
                "{addr} did not answer the write in time"
            )))
        }
    };
    let outcomes: Vec<Outcome> = codec::decode(&reply.outcomes)
        .map_err(|e| StoreError::Internal(format!("undecodable outcomes from {addr}: {e}")))?;
    Ok((reply.log_index, outcomes))
}

#[cfg(test)]
mod tests {
    use switchboard_membership::{Membership, Name};

    use super::*;

    fn shared(voters: &[&str]) -> Shared {
        Shared {
            config: RemoteStoreConfig::new(1),
            voters: voters.iter().map(|v| (*v).to_owned()).collect(),
            channels: crate::grpc::test_channels(),
            view: View::new(Membership::new()),
            leader: Mutex::default(),
            health: Mutex::default(),
            resync: watch::Sender::new(0),
            next_voter: AtomicUsize::new(0),
        }
    }

    #[test]
    fn targets_prefer_the_leader_and_avoid_a_failed_voter() {
        let s = shared(&["a:1", "b:1", "c:1"]);
        assert_eq!(s.target(None).as_deref(), Some("a:1"));
        assert_eq!(s.target(None).as_deref(), Some("b:1"));
        s.learn_leader(Some(3), Some("c:1".into()));
        assert_eq!(s.target(None).as_deref(), Some("c:1"));
        // The hinted leader just failed: go round the others.
        let next = s.target(Some("c:1")).unwrap();
        assert_ne!(next, "c:1");
        s.forget_leader("c:1");
        assert!(s.leader.lock().addr.is_none());
        // A hint with an id only keeps a known address for the same leader.
        s.learn_leader(Some(2), Some("b:1".into()));
        s.learn_leader(Some(2), None);
        assert_eq!(s.leader.lock().addr.as_deref(), Some("b:1"));
        s.learn_leader(Some(1), None);
        assert!(s.leader.lock().addr.is_none());
    }

    #[test]
    fn no_voters_no_target() {
        assert!(shared(&[]).target(None).is_none());
    }

    fn opened(connection: &str) -> Command {
        Command::ConnectionOpened {
            hub: Name::from("h"),
            connection: Name::from(connection),
            user: None,
            node: 1,
            incarnation: 1,
        }
    }

    #[tokio::test]
    async fn the_replica_never_goes_back() {
        let view = View::new(Membership::new());
        let batch = |c: &str| {
            codec::encode(&Batch {
                time_ms: 1,
                commands: vec![
                    Command::NodeHeartbeat {
                        node: 1,
                        incarnation: 1,
                        address: "n1".into(),
                        lease_ms: 3_600_000,
                    },
                    opened(c),
                ],
            })
            .unwrap()
        };
        apply_batch(&view, 5, batch("c5")).await.unwrap();
        apply_batch(&view, 5, batch("again")).await.unwrap();
        assert_eq!(view.applied_index(), 5);
        assert!(view.read().connection("h", "again").is_none());

        // An older state is not installed over a newer replica.
        let old = crate::encode_state(&Membership::new()).unwrap();
        install_snapshot(
            &view,
            StateSnapshot {
                log_index: 3,
                state: old.clone(),
            },
        )
        .await
        .unwrap();
        assert!(view.read().connection("h", "c5").is_some());
        assert_eq!(view.applied_index(), 5);

        // A newer one replaces it.
        install_snapshot(
            &view,
            StateSnapshot {
                log_index: 9,
                state: old,
            },
        )
        .await
        .unwrap();
        assert!(view.read().connection("h", "c5").is_none());
        assert_eq!(view.applied_index(), 9);

        // Garbage is an error, not a panic, and changes nothing.
        assert!(apply_batch(&view, 10, vec![0xc1]).await.is_err());
        assert_eq!(view.applied_index(), 9);
    }

    #[test]
    fn status_reports_a_leader_only_after_a_recent_heartbeat() {
        let s = shared(&["a:1"]);
        let reply = StatusReply {
            read_index: 0,
            node_id: 1,
            leader_id: 2,
            leader_addr: "b:1".into(),
            term: 4,
            applied_index: 0,
        };
        s.heartbeat(&reply);
        assert_eq!(s.leader.lock().addr.as_deref(), Some("b:1"));
        s.set_connected(Some("a:1"));
        s.heartbeat(&reply);
        assert_eq!(s.health.lock().leader_id, Some(2));
        s.set_connected(None);
        assert_eq!(s.health.lock().leader_id, None);
    }
}
