//! [`RaftStore`]: the membership store running in this process as a Raft node.
//!
//! It owns the openraft [`Raft`] handle, the redb log, the state machine and three tasks: the
//! batcher (group commit), the ticker (expiry without traffic) and the metrics watcher. Data
//! lives under `{data_dir}/raft/` (log, vote, committed index) and `{data_dir}/snapshots/`.
//!
//! Shutdown is ordered: cancel the tasks (the batcher answers what is still queued), wait for
//! them, then stop Raft. Dropping the store without [`RaftStore::shutdown`] is safe too: nothing
//! acknowledged is lost, because nothing is acknowledged before it is on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, RaftNetworkFactory, SnapshotPolicy};
use switchboard_membership::{Command, Outcome};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{MembershipStore, StoreStatus, View};
use crate::barrier::ReadBarrier;
use crate::batcher::{Batcher, BatcherConfig, Submitter};
use crate::disk::DiskHealth;
use crate::error::StoreError;
use crate::forward::{Applied, Forwarder, NoForwarding};
use crate::log_store::LogStore;
use crate::state_machine::{FeedEvent, StateMachineStore};
use crate::{Raft, RaftMetrics, TypeConfig};

/// How long [`RaftStore::trigger_snapshot`] waits for the snapshot to be written.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

/// The default bound on one log entry's commands: 128 KiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 128 * 1024;
/// Most log entries in one append: with entries of at most [`DEFAULT_MAX_BATCH_BYTES`], an
/// append stays near 2 MiB.
pub const MAX_PAYLOAD_ENTRIES: u64 = 16;
/// Largest piece of a snapshot in one install RPC.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 2 * 1024 * 1024;

/// Settings of a [`RaftStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// This node's Raft id; bound to the data directory on first open.
    pub node_id: u64,
    /// Where the log (`raft/`) and snapshots (`snapshots/`) live.
    pub data_dir: PathBuf,
    /// The address other voters reach this node at (recorded in the Raft membership).
    pub advertise_addr: String,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot when the log is purged (for followers that lag a
    /// little, so they need entries rather than the whole snapshot). 0 purges everything.
    pub keep_logs_after_snapshot: u64,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// How long a write may take (queueing, leader election, commit and apply) before it
    /// fails as unavailable.
    pub write_timeout: Duration,
    /// Most commands carried by one log entry.
    pub max_batch_commands: usize,
    /// Bound on the encoded commands of one log entry. With [`MAX_PAYLOAD_ENTRIES`] entries per
    /// append, it keeps every Raft message well below the cluster's message size.
    pub max_batch_bytes: usize,
    /// Most log entries proposed and not yet applied at once. 1 (the default) makes every
    /// write that arrives during a commit wait for the next, larger entry; on two cores that
    /// measured faster than overlapping commits with smaller entries.
    pub max_in_flight: usize,
    /// Capacity of the write queue, in write calls; senders wait when it is full.
    pub queue_capacity: usize,
    /// How often the leader checks whether an expiry is due.
    pub tick_interval: Duration,
}

impl StoreConfig {
    /// Defaults for `node_id` storing under `data_dir`.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            node_id,
            data_dir: data_dir.into(),
            advertise_addr: String::new(),
            snapshot_every: 10_000,
            keep_logs_after_snapshot: 1_000,
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            write_timeout: Duration::from_secs(5),
            max_batch_commands: 1024,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_in_flight: 1,
            queue_capacity: 4096,
            tick_interval: Duration::from_millis(250),
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        let fail = |m: &str| Err(StoreError::Config(m.to_owned()));
        if self.snapshot_every == 0 {
            return fail("snapshot_every must be at least 1");
        }
        if self.max_batch_commands == 0 || self.max_in_flight == 0 || self.queue_capacity == 0 {
            return fail("max_batch_commands, max_in_flight and queue_capacity must be at least 1");
        }
        if self.write_timeout.is_zero() || self.tick_interval.is_zero() {
            return fail("write_timeout and tick_interval must be positive");
        }
        Ok(())
    }

    fn raft_config(&self) -> Result<openraft::Config, StoreError> {
        let config = openraft::Config {
            cluster_name: "switchboard".to_owned(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs_after_snapshot,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| StoreError::Config(e.to_string()))
    }
}

/// A node's cluster id, shared by its store (which learns it) and its Raft network and service
/// (which stamp and check it). Empty until known.
#[derive(Clone, Default, Debug)]
pub struct ClusterName(Arc<parking_lot::RwLock<Option<String>>>);

impl ClusterName {
    /// The id, once known.
    pub fn get(&self) -> Option<String> {
        self.0.read().clone()
    }

    /// Records the id (the first one stays).
    pub fn set(&self, id: &str) {
        let mut name = self.0.write();
        if name.is_none() {
            *name = Some(id.to_owned());
        }
    }
}

/// The start of a watch: see [`RaftStore::watch`].
pub struct WatchStart {
    /// The last log index included in `state`.
    pub log_index: u64,
    /// The encoded `Membership` (the snapshot encoding; decode with [`crate::decode_state`]).
    pub state: Vec<u8>,
    /// Every batch applied after `log_index`, in order.
    pub updates: broadcast::Receiver<FeedEvent>,
}

/// The membership store as a Raft node in this process.
pub struct RaftStore {
    node_id: u64,
    advertise_addr: String,
    raft: Raft,
    view: View,
    feed: broadcast::Sender<FeedEvent>,
    submitter: Submitter,
    metrics: watch::Receiver<RaftMetrics>,
    log: LogStore,
    /// The health of this node's disk (log and snapshots; see `crate::disk`).
    disk: DiskHealth,
    /// This node's cluster id, as recorded with its log or learned from it.
    cluster_name: ClusterName,
    cancel: CancellationToken,
    tasks: TaskTracker,
    stopped: AtomicBool,
    ready_timeout: Duration,
    /// When a quorum last confirmed this node's leadership (ms since epoch; see `confirm_quorum`).
    quorum_confirmed_ms: Arc<AtomicU64>,
    /// False while this node, found empty though a cluster with it exists, has not caught up
    /// with what the cluster acknowledged: it must not vote (see `admin::recover`).
    votes_allowed: AtomicBool,
    /// Set while this leader hands its leadership over (see `admin::transfer_leader`): no
    /// quorum rounds, no read barriers, writes paused.
    pub(crate) transferring: Arc<AtomicBool>,
    /// The batcher's in-flight semaphore and its size (holding all of it pauses writes).
    pub(crate) write_gate: (Arc<tokio::sync::Semaphore>, u32),
    /// Membership changes one at a time (see `admin`).
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
    forwarder: Arc<dyn Forwarder>,
    barrier: ReadBarrier,
    /// Quorum rounds of this node as leader, shared by every concurrent `read_index` (local
    /// barriers, followers' and gateways' `Status` calls).
    leader_rounds: ReadBarrier,
}

/// How long a read-index request may wait for a quorum's confirmation.
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(1);

/// A leader whose leadership no quorum confirmed for this long reports no known leader.
const QUORUM_STALE_MS: u64 = 3_000;

/// On the leader, asks a quorum about once a second to confirm the leadership (a heartbeat
/// round) and records when it last succeeded; see [`MembershipStore::status`].
async fn confirm_quorum(
    raft: Raft,
    node_id: u64,
    confirmed: Arc<AtomicU64>,
    transferring: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
    let mut metrics = raft.metrics();
    let mut was_leading = false;
    loop {
        let leading = metrics.borrow_and_update().current_leader == Some(node_id);
        if leading && !was_leading {
            // Winning the election took a quorum's votes: that is a confirmation.
            confirmed.store(crate::batcher::now_ms(), Ordering::Release);
        }
        was_leading = leading;
        // A heartbeat round would renew the followers' leader lease that a transfer waits out.
        if leading
            && !transferring.load(Ordering::Acquire)
            && matches!(
                tokio::time::timeout(Duration::from_secs(1), raft.get_read_log_id()).await,
                Ok(Ok(_))
            )
        {
            confirmed.store(crate::batcher::now_ms(), Ordering::Release);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            changed = metrics.changed(), if !leading => if changed.is_err() { return },
        }
    }
}

/// Names the cluster: while the applied state has no cluster id, the leader proposes a random
/// one (`Command::SetClusterId`; the first applied wins, so two leaders racing is harmless).
/// Voters stamp it on their Raft calls and refuse calls from another cluster (`grpc`).
async fn name_cluster(
    raft: Raft,
    node_id: u64,
    view: View,
    submitter: Submitter,
    name: ClusterName,
    log: LogStore,
    cancel: CancellationToken,
) {
    let mut metrics = raft.metrics();
    loop {
        let applied = view.read().cluster_id().map(str::to_owned);
        if let Some(id) = applied {
            match name.get() {
                Some(recorded) if recorded != id => tracing::error!(
                    recorded = %recorded,
                    applied = %id,
                    "the data directory records another cluster id than its log holds"
                ),
                Some(_) => {}
                None => {
                    name.set(&id);
                    let record = id.clone();
                    let saved =
                        tokio::task::spawn_blocking(move || log.save_cluster_id(&record)).await;
                    if !matches!(saved, Ok(Ok(()))) {
                        tracing::warn!(cluster_id = %id, "could not record the cluster id with the log");
                    }
                }
            }
            tracing::debug!(cluster_id = %id, "cluster id known");
            return;
        }
        let leading = metrics.borrow_and_update().current_leader == Some(node_id);
        if leading {
            let id = format!("{:032x}", rand::random::<u128>());
            match submitter
                .submit_leader_only(vec![Command::SetClusterId { id }])
                .await
            {
                Ok(_) => {
                    if let Some(id) = view.read().cluster_id() {
                        tracing::info!(cluster_id = id, "the cluster is named");
                    }
                    continue;
                }
                Err(error) => tracing::debug!(%error, "naming the cluster failed; trying again"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            changed = metrics.changed(), if !leading => if changed.is_err() { return },
        }
    }
}

impl RaftStore {
    /// Opens the store in `config.data_dir` (loading the latest snapshot; Raft replays the
    /// committed log behind it) and starts its tasks. Writes on a follower fail with
    /// [`StoreError::NotLeader`].
    pub async fn open<N: RaftNetworkFactory<TypeConfig>>(
        config: StoreConfig,
        network: N,
    ) -> Result<Arc<RaftStore>, StoreError> {
        RaftStore::open_with_forwarder(config, network, Arc::new(NoForwarding)).await
    }

    /// Like [`RaftStore::open`], with writes on a follower handed to `forwarder`.
    pub async fn open_with_forwarder<N: RaftNetworkFactory<TypeConfig>>(
        config: StoreConfig,
        network: N,
        forwarder: Arc<dyn Forwarder>,
    ) -> Result<Arc<RaftStore>, StoreError> {
        config.validate()?;
        crate::metrics::describe();
        metrics::gauge!(crate::metrics::DISK_FAILING).set(0.0);
        let raft_config = Arc::new(config.raft_config()?);
        let node_id = config.node_id;
        let raft_dir = config.data_dir.join("raft");
        let snapshot_dir = config.data_dir.join("snapshots");
        let disk = DiskHealth::new();
        let disk_for_open = disk.clone();
        let (log, sm, recorded) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let log = LogStore::open_with(&raft_dir, disk_for_open.clone())?;
            log.check_node_id(node_id)?;
            let recorded = log.cluster_id()?;
            let sm = StateMachineStore::open_with(&snapshot_dir, disk_for_open)?;
            Ok((log, sm, recorded))
        })
        .await
        .map_err(|e| StoreError::Internal(format!("open task failed: {e}")))??;
        let view = sm.view();
        let feed = sm.feed();
        let cluster_name = ClusterName::default();
        if let Some(id) = recorded {
            cluster_name.set(&id);
        }
        let raft = Raft::new(node_id, raft_config, network, log.clone(), sm)
            .await
            .map_err(|e| StoreError::Storage(format!("start raft: {e}")))?;

        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let forwarder_for_reads = forwarder.clone();
        let (batcher, submitter) = Batcher::new(
            BatcherConfig {
                node_id,
                max_batch_commands: config.max_batch_commands,
                max_batch_bytes: config.max_batch_bytes,
                max_in_flight: config.max_in_flight,
                queue_capacity: config.queue_capacity,
                write_timeout: config.write_timeout,
            },
            raft.clone(),
            forwarder,
            view.clone(),
            disk.clone(),
            cancel.child_token(),
        );
        let write_gate = batcher.gate();
        tasks.spawn(batcher.run());
        tasks.spawn(crate::ticker::run(
            node_id,
            view.clone(),
            submitter.clone(),
            raft.metrics(),
            config.tick_interval,
            cancel.child_token(),
        ));
        let quorum_confirmed_ms = Arc::new(AtomicU64::new(0));
        let transferring = Arc::new(AtomicBool::new(false));
        tasks.spawn(confirm_quorum(
            raft.clone(),
            node_id,
            quorum_confirmed_ms.clone(),
            transferring.clone(),
            cancel.child_token(),
        ));
        tasks.spawn(name_cluster(
            raft.clone(),
            node_id,
            view.clone(),
            submitter.clone(),
            cluster_name.clone(),
            log.clone(),
            cancel.child_token(),
        ));
        tasks.spawn(crate::metrics::watch_raft(
            raft.metrics(),
            cancel.child_token(),
        ));
        tracing::info!(node_id, data_dir = %config.data_dir.display(), "store opened");
        Ok(Arc::new(RaftStore {
            node_id,
            advertise_addr: config.advertise_addr,
            metrics: raft.metrics(),
            raft,
            view,
            feed,
            submitter,
            log,
            disk,
            cluster_name,
            cancel,
            tasks,
            stopped: AtomicBool::new(false),
            ready_timeout: config.write_timeout,
            quorum_confirmed_ms,
            transferring,
            write_gate,
            votes_allowed: AtomicBool::new(true),
            admin_lock: tokio::sync::Mutex::new(()),
            forwarder: forwarder_for_reads,
            barrier: ReadBarrier::default(),
            leader_rounds: ReadBarrier::default(),
        }))
    }

    /// Makes this node the single voter if the cluster was never initialized; harmless on an
    /// initialized one.
    ///
    /// When this node is the only voter, it also waits (at most the write timeout) until the node
    /// leads and has applied its whole log. After a crash the committed index on disk may trail
    /// the log (it is saved without its own fsync), so this is the point from which the view
    /// holds every write acknowledged before the restart.
    pub async fn initialize_single(&self) -> Result<(), StoreError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|f| StoreError::stopped(&f))?;
        if initialized {
            let node_id = self.node_id;
            let single = self
                .raft
                .with_raft_state(move |state| {
                    let mut voters = state.membership_state.effective().voter_ids();
                    voters.next() == Some(node_id) && voters.next().is_none()
                })
                .await
                .map_err(|f| StoreError::stopped(&f))?;
            if single {
                self.wait_caught_up().await?;
            }
            return Ok(());
        }
        let nodes = BTreeMap::from([(self.node_id, BasicNode::new(&self.advertise_addr))]);
        match self.raft.initialize(nodes).await {
            Ok(()) => {
                tracing::info!(
                    node_id = self.node_id,
                    "initialized raft cluster with this node as the single voter"
                );
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(RaftError::APIError(e)) => return Err(StoreError::Internal(e.to_string())),
            Err(RaftError::Fatal(f)) => return Err(StoreError::stopped(&f)),
        }
        self.wait_caught_up().await
    }

    /// Forms a cluster of `voters` (node id -> the address other voters reach it at, its
    /// `--cluster-listen` address), or rejoins it when this node was initialized before.
    ///
    /// Every voter of a fresh cluster may call this at the same time with the same map: openraft
    /// 0.9 writes the same first log entry (the membership, at log id 0) on each node that
    /// initializes, and a node that already voted or received entries refuses quietly
    /// (`NotAllowed`), which this treats as success. The map must be identical everywhere (a
    /// different membership on different nodes could elect two leaders). A node restarted with
    /// its data directory is already initialized and just rejoins; if its stored membership
    /// differs from `voters`, the stored one wins and a warning is logged.
    ///
    /// Returns once the membership entry is written, before any election.
    pub async fn initialize_cluster(
        &self,
        voters: BTreeMap<u64, String>,
    ) -> Result<(), StoreError> {
        if !voters.contains_key(&self.node_id) {
            return Err(StoreError::Config(format!(
                "the voter list does not contain this node ({})",
                self.node_id
            )));
        }
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|f| StoreError::stopped(&f))?;
        if initialized {
            let wanted: Vec<u64> = voters.keys().copied().collect();
            let stored: Vec<u64> = self
                .raft
                .with_raft_state(|state| state.membership_state.effective().voter_ids().collect())
                .await
                .map_err(|f| StoreError::stopped(&f))?;
            if stored != wanted {
                tracing::warn!(
                    node_id = self.node_id,
                    ?stored,
                    configured = ?wanted,
                    "the stored raft membership differs from the configured voters; keeping the stored one"
                );
            } else {
                tracing::info!(node_id = self.node_id, "rejoining the raft cluster");
            }
            return Ok(());
        }
        let nodes: BTreeMap<u64, BasicNode> = voters
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => {
                tracing::info!(node_id = self.node_id, "initialized the raft cluster");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::info!(
                    node_id = self.node_id,
                    "raft cluster already initialized by another voter"
                );
                Ok(())
            }
            Err(RaftError::APIError(e)) => Err(StoreError::Config(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(StoreError::stopped(&f)),
        }
    }

    /// The leader this node knows of, with the address recorded for it in the membership.
    pub fn leader(&self) -> Option<(u64, Option<BasicNode>)> {
        let m = self.metrics.borrow();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader).cloned();
        Some((leader, node))
    }

    /// Waits until this node leads and has applied every entry of its log.
    async fn wait_caught_up(&self) -> Result<(), StoreError> {
        let mut metrics = self.metrics.clone();
        let node_id = self.node_id;
        let caught_up = async {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    let applied = m.last_applied.map(|id| id.index);
                    if m.current_leader == Some(node_id) && applied >= m.last_log_index {
                        return true;
                    }
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        };
        match tokio::time::timeout(self.ready_timeout, caught_up).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Unavailable(
                "raft stopped during startup".to_owned(),
            )),
            Err(_) => Err(StoreError::Unavailable(format!(
                "this single voter did not lead and apply its log within {} ms",
                self.ready_timeout.as_millis()
            ))),
        }
    }

    /// The applied state now (encoded as in snapshots) and every change after it: what a remote
    /// replica needs to follow this node. Taken under the view's read lock, so the receiver
    /// misses nothing applied after the returned index.
    pub fn watch(&self) -> Result<WatchStart, StoreError> {
        let state = self.view.read();
        let updates = self.feed.subscribe();
        let log_index = self.view.applied_index();
        let encoded = crate::encode_state(&state)?;
        drop(state);
        Ok(WatchStart {
            log_index,
            state: encoded,
            updates,
        })
    }

    /// A token cancelled when this store shuts down (watch streams end with it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// On the leader: confirms the leadership with a quorum (one heartbeat round) and returns
    /// the commit point, at or above every write acknowledged before the call. Concurrent
    /// callers share rounds (a round that started after the caller arrived), so a thousand
    /// barriers a second cost about one heartbeat round per round trip, not a thousand.
    pub async fn read_index(&self) -> Result<u64, StoreError> {
        if self.transferring.load(Ordering::Acquire) {
            // A quorum round would renew the lease the transfer waits out; callers retry.
            return Err(StoreError::Unavailable(
                "the leadership is moving to another voter".to_owned(),
            ));
        }
        let raft = self.raft.clone();
        self.leader_rounds
            .leader_index(move || async move {
                match tokio::time::timeout(READ_INDEX_TIMEOUT, raft.get_read_log_id()).await {
                    Ok(Ok((read, _applied))) => Ok(read.map_or(0, |id| id.index)),
                    Ok(Err(e)) => Err(format!("not a confirmed leader: {e}")),
                    Err(_) => Err("no quorum confirmed the leadership in time".to_owned()),
                }
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    /// The openraft handle, for the cluster's gRPC layer.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Whether `node` is a voter of this node's current membership.
    pub fn is_voter(&self, node: u64) -> bool {
        self.metrics
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == node)
    }

    /// The cluster id this node belongs to, once known (recorded with the log at start, or
    /// applied from it); stamped on and checked against every Raft call.
    pub fn cluster_name(&self) -> ClusterName {
        self.cluster_name.clone()
    }

    /// The health of this node's disk.
    pub fn disk(&self) -> &DiskHealth {
        &self.disk
    }

    /// Whether this node may grant votes (see `admin::recover`).
    pub fn may_vote(&self) -> bool {
        self.votes_allowed.load(Ordering::Acquire)
    }

    /// Stops or resumes granting votes and standing for election (see `admin::recover`).
    pub fn set_may_vote(&self, allowed: bool) {
        self.votes_allowed.store(allowed, Ordering::Release);
        self.raft.runtime_config().elect(allowed);
    }

    /// Whether this node's log holds a membership (it was part of a cluster; false for an
    /// empty data dir).
    pub async fn is_initialized(&self) -> Result<bool, StoreError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|f| StoreError::stopped(&f))
    }

    /// Whether this node leads and a quorum confirmed it within `within`.
    pub fn leadership_confirmed_within(&self, within: Duration) -> bool {
        if self.metrics.borrow().current_leader != Some(self.node_id) {
            return false;
        }
        let confirmed = self.quorum_confirmed_ms.load(Ordering::Acquire);
        crate::batcher::now_ms().saturating_sub(confirmed) <= within.as_millis() as u64
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Proposes `commands` as one unit and returns the log index they were applied at with
    /// their outcomes (the leader side of forwarding uses this).
    pub async fn propose(&self, commands: Vec<Command>) -> Result<Applied, StoreError> {
        self.submitter.submit(commands).await
    }

    /// Like [`RaftStore::propose`], but never forwards: on a node that does not lead it fails
    /// with [`StoreError::NotLeader`]. For writes another node already forwarded here.
    pub async fn propose_leader_only(&self, commands: Vec<Command>) -> Result<Applied, StoreError> {
        self.submitter.submit_leader_only(commands).await
    }

    /// Builds a snapshot of everything applied so far and waits until it is on disk (the log
    /// behind it is then purged as configured).
    pub async fn trigger_snapshot(&self) -> Result<(), StoreError> {
        let target = self.metrics.borrow().last_applied.map(|id| id.index);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|f| StoreError::Unavailable(format!("raft stopped: {f}")))?;
        let Some(target) = target else {
            return Ok(());
        };
        let mut metrics = self.metrics.clone();
        let done = async {
            loop {
                if metrics
                    .borrow_and_update()
                    .snapshot
                    .is_some_and(|id| id.index >= target)
                {
                    return true;
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        };
        match tokio::time::timeout(SNAPSHOT_WAIT, done).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Unavailable(
                "raft stopped while building the snapshot".to_owned(),
            )),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the snapshot up to index {target} was not written within {} s",
                SNAPSHOT_WAIT.as_secs()
            ))),
        }
    }

    /// Stops the tasks (queued writes fail as unavailable), then Raft. Idempotent.
    pub async fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!(node_id = self.node_id, "store shutting down");
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        // A disk operation still retrying gives up, so Raft can stop.
        self.disk.stop();
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(node_id = self.node_id, error = %error, "raft did not stop cleanly");
        }
        tracing::info!(node_id = self.node_id, "store stopped");
    }
}

impl Drop for RaftStore {
    fn drop(&mut self) {
        // Stops the tasks; with them go the last Raft handles, which stops Raft too.
        self.cancel.cancel();
    }
}

#[async_trait]
impl MembershipStore for RaftStore {
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
        let Some((leader, node)) = self.leader() else {
            return Err(StoreError::Unavailable(
                "no raft leader is known".to_owned(),
            ));
        };
        if leader == self.node_id {
            // A new leader may not yet have applied what its predecessor acknowledged: wait for
            // the commit point it confirms with a quorum.
            let index = self.read_index().await?;
            return if self.view.wait_applied(index, self.ready_timeout).await {
                Ok(())
            } else {
                Err(StoreError::Unavailable(format!(
                    "this leader has not applied index {index} yet"
                )))
            };
        }
        let forwarder = self.forwarder.clone();
        let index = self
            .barrier
            .leader_index(move || async move {
                forwarder
                    .leader_read_index(leader, node)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(StoreError::Unavailable)?;
        if self.view.wait_applied(index, self.ready_timeout).await {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "this voter has not applied index {index} yet"
            )))
        }
    }

    fn voting(&self) -> bool {
        self.may_vote()
    }

    fn disk_failing(&self) -> bool {
        self.disk.failing()
    }

    fn view(&self) -> View {
        self.view.clone()
    }

    fn status(&self) -> StoreStatus {
        let m = self.metrics.borrow();
        let mut leader_id = m.current_leader;
        // A leader cut off from its followers keeps believing it leads (it cannot commit
        // anything): unless a quorum confirmed it recently, report no known leader.
        if leader_id == Some(self.node_id) {
            let confirmed = self.quorum_confirmed_ms.load(Ordering::Acquire);
            if crate::batcher::now_ms().saturating_sub(confirmed) > QUORUM_STALE_MS {
                leader_id = None;
            }
        }
        StoreStatus {
            node_id: self.node_id,
            leader_id,
            is_leader: leader_id == Some(self.node_id),
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|id| id.index),
            committed_index: self.log.committed_index(),
            snapshot_index: m.snapshot.map(|id| id.index),
            purged_index: m.purged.map(|id| id.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_refused() {
        let config = StoreConfig::new(1, "/tmp/x");
        config.validate().unwrap();
        config.raft_config().unwrap();
        let mut bad = config.clone();
        bad.snapshot_every = 0;
        assert!(matches!(bad.validate(), Err(StoreError::Config(_))));
        let mut bad = config.clone();
        bad.election_timeout_min_ms = bad.election_timeout_max_ms;
        assert!(matches!(bad.raft_config(), Err(StoreError::Config(_))));
        let mut bad = config;
        bad.max_batch_commands = 0;
        assert!(bad.validate().is_err());
    }
}
