//! Changing who votes: adding a node (as a learner that catches up, then as a voter),
//! removing a voter, and the cluster as a voter sees it.
//!
//! Only the leader changes the membership; every other voter answers with
//! [`StoreError::NotLeader`] (and where the leader is), as writes do. Changes are made one at a
//! time on the leader, each as a delta (add these voters, remove these), never as a whole voter
//! set read before a wait, so concurrent joins cannot undo each other. A node is added as a
//! learner first and promoted once openraft's blocking `add_learner` says it has caught up
//! (within openraft's replication lag threshold), so a new voter joins the quorum holding the
//! log.
//! Removing the leader itself works: it commits the membership without itself, steps down, and
//! the remaining voters elect a leader among them. A removed node is refused on the Raft plane
//! (`grpc::raft_service` admits only voters of the current membership), so one that comes back
//! with its old data is not re-admitted unless an operator adds it again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::BasicNode;
use parking_lot::Mutex;

use crate::error::StoreError;
use crate::raft_store::RaftStore;

/// How long adding a node may wait for it to catch up.
const ADD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// A leader reports itself as such only when a quorum confirmed it this recently.
const LEADERSHIP_FRESH: std::time::Duration = std::time::Duration::from_secs(3);

/// An address other nodes can dial: HOST:PORT with a port, not an unspecified host.
fn valid_address(address: &str) -> Result<(), StoreError> {
    let bad = || {
        StoreError::Rejected(format!(
            "{address:?} is not a HOST:PORT other nodes can dial"
        ))
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    if matches!(host, "0.0.0.0" | "[::]" | "::") {
        return Err(bad());
    }
    Ok(())
}

/// When each peer last answered this node's Raft calls (kept by the Raft network).
#[derive(Debug, Clone, Default)]
pub struct Contacts(Arc<Mutex<BTreeMap<u64, Instant>>>);

impl Contacts {
    /// Records an answer from `node` now.
    pub fn answered(&self, node: u64) {
        self.0.lock().insert(node, Instant::now());
    }

    fn since_ms(&self, node: u64) -> Option<u64> {
        self.0
            .lock()
            .get(&node)
            .map(|t| t.elapsed().as_millis() as u64)
    }
}

/// The cluster as one voter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub leader_address: Option<String>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub nodes: Vec<NodeView>,
    /// The cluster's id as this node applied it.
    pub cluster_id: Option<String>,
    /// Whether this node's disk is failing now.
    pub disk_failing: bool,
}

/// One member (voter or learner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub node_id: u64,
    pub address: String,
    pub voter: bool,
    /// Known to the leader only: the last log index the node is known to hold, and how many
    /// entries it is behind the leader's log.
    pub matched_index: Option<u64>,
    pub lag: Option<u64>,
    /// Known to the leader only: milliseconds since the node last answered it.
    pub last_contact_ms: Option<u64>,
}

impl RaftStore {
    /// The cluster as this voter sees it; `contacts` says when peers last answered.
    pub fn cluster_view(&self, contacts: &Contacts) -> ClusterView {
        let raft = self.raft();
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let last_log_index = m.last_log_index.unwrap_or(0);
        let leading = m.current_leader == Some(m.id) && voters.contains(&m.id);
        let nodes = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .map(|log_id| log_id.map_or(0, |l| l.index));
                let (matched, contact) = if *id == m.id {
                    (leading.then_some(last_log_index), leading.then_some(0))
                } else {
                    (matched, leading.then(|| contacts.since_ms(*id)).flatten())
                };
                NodeView {
                    node_id: *id,
                    address: node.addr.clone(),
                    voter: voters.contains(id),
                    matched_index: matched,
                    lag: matched.map(|i| last_log_index.saturating_sub(i)),
                    last_contact_ms: contact,
                }
            })
            .collect();
        // A leader that removed itself believes it leads until it hears of the next term, and
        // one cut off from its quorum until it notices: neither is reported as the leader.
        let leader_id = m.current_leader.filter(|l| {
            voters.contains(l) && (*l != m.id || self.leadership_confirmed_within(LEADERSHIP_FRESH))
        });
        let leader_address = leader_id
            .and_then(|l| membership.get_node(&l))
            .map(|n| n.addr.clone());
        ClusterView {
            node_id: m.id,
            leader_id,
            leader_address,
            term: m.current_term,
            last_log_index,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            nodes,
            cluster_id: self.cluster_name().get(),
            disk_failing: self.disk().failing(),
        }
    }

    fn leading(&self) -> Result<BTreeSet<u64>, StoreError> {
        let m = self.raft().metrics().borrow().clone();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == m.id);
        if m.current_leader != Some(m.id) || !voter {
            let leader_addr = m
                .current_leader
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
                .map(|n| n.addr);
            return Err(StoreError::NotLeader {
                leader_id: m.current_leader,
                leader_addr,
            });
        }
        Ok(m.membership_config.membership().voter_ids().collect())
    }

    /// Adds `node` at `address`: as a learner, caught up, then as a voter (see the module
    /// docs). A node that votes already is left as it is.
    pub async fn add_voter(&self, node: u64, address: String) -> Result<(), StoreError> {
        valid_address(&address)?;
        let _one_change = self.admin_lock.lock().await;
        if self.leading()?.contains(&node) {
            return Ok(());
        }
        tracing::info!(
            node,
            address,
            "adding a learner; it becomes a voter once caught up"
        );
        let raft = self.raft();
        let added = tokio::time::timeout(
            ADD_TIMEOUT,
            raft.add_learner(node, BasicNode::new(address), true),
        )
        .await;
        match added {
            Ok(result) => {
                result.map_err(change_error)?;
            }
            Err(_) => {
                return Err(StoreError::Timeout(format!(
                    "node {node} did not catch up within {} s; it stays a learner (remove it with remove-voter)",
                    ADD_TIMEOUT.as_secs()
                )))
            }
        }
        raft.change_membership(
            openraft::ChangeMembers::AddVoterIds(BTreeSet::from([node])),
            false,
        )
        .await
        .map_err(change_error)?;
        tracing::info!(node, "the node votes");
        Ok(())
    }

    /// Removes voter (or learner) `node`, this leader included. At least one voter must remain.
    pub async fn remove_voter(&self, node: u64) -> Result<(), StoreError> {
        let _one_change = self.admin_lock.lock().await;
        let voters = self.leading()?;
        let learner = {
            let m = self.raft().metrics().borrow().clone();
            let membership = m.membership_config.membership();
            membership.get_node(&node).is_some() && !voters.contains(&node)
        };
        let change = if learner {
            tracing::info!(node, "removing a learner");
            openraft::ChangeMembers::RemoveNodes(BTreeSet::from([node]))
        } else if voters.contains(&node) {
            if voters.len() == 1 {
                return Err(StoreError::Rejected(
                    "the last voter cannot be removed".to_owned(),
                ));
            }
            tracing::info!(node, "removing a voter");
            openraft::ChangeMembers::RemoveVoters(BTreeSet::from([node]))
        } else {
            return Err(StoreError::Rejected(format!(
                "node {node} is neither a voter nor a learner"
            )));
        };
        self.raft()
            .change_membership(change, false)
            .await
            .map_err(change_error)?;
        Ok(())
    }
}

/// How long a leadership transfer waits for the writes in flight and for the target to hold the
/// whole log.
const TRANSFER_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);
/// How long it waits for the target to win once asked to stand.
const TRANSFER_ELECTION: std::time::Duration = std::time::Duration::from_secs(3);

impl RaftStore {
    /// Hands this leader's leadership to the voter `target` (openraft 0.9 has no transfer of its
    /// own). Writes pause and drain, the target is brought up to the whole log, heartbeats
    /// stop until the followers' leader lease (the maximum election timeout) has run out, then
    /// the target is asked to stand (`Admin.Campaign`): with the longest log and no live leader
    /// in sight, it wins. Writes resume either way, through the new leader. Costs writes about
    /// one election timeout; answers once another node leads.
    pub async fn transfer_leader(
        &self,
        target: u64,
        channels: &crate::grpc::Channels,
    ) -> Result<(), StoreError> {
        let _one_change = self.admin_lock.lock().await;
        let voters = self.leading()?;
        if target == self.node_id() {
            return Ok(());
        }
        if !voters.contains(&target) {
            return Err(StoreError::Rejected(format!(
                "node {target} is not a voter"
            )));
        }
        let address = self
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&target)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        tracing::info!(target, %address, "handing the leadership over");
        self.transferring
            .store(true, std::sync::atomic::Ordering::Release);
        let result = self.hand_over(target, &address, channels).await;
        self.raft().runtime_config().heartbeat(true);
        self.transferring
            .store(false, std::sync::atomic::Ordering::Release);
        match &result {
            Ok(()) => tracing::info!(target, "the leadership moved"),
            Err(error) => tracing::warn!(target, %error, "the leadership did not move"),
        }
        result
    }

    async fn hand_over(
        &self,
        target: u64,
        address: &str,
        channels: &crate::grpc::Channels,
    ) -> Result<(), StoreError> {
        let raft = self.raft();
        let (gate, permits) = &self.write_gate;
        let _paused =
            tokio::time::timeout(TRANSFER_CATCH_UP, gate.clone().acquire_many_owned(*permits))
                .await
                .map_err(|_| {
                    StoreError::Unavailable(
                        "the writes in flight did not finish in time".to_owned(),
                    )
                })?
                .map_err(|_| StoreError::Unavailable("the store is shutting down".to_owned()))?;
        let mut metrics = raft.metrics();
        let me = self.node_id();
        watch_metrics(
            &mut metrics,
            TRANSFER_CATCH_UP,
            || {
                StoreError::Unavailable(format!(
                    "node {target} did not catch up with the log in time"
                ))
            },
            |m| {
                if m.current_leader != Some(me) {
                    return Some(Err(StoreError::NotLeader {
                        leader_id: m.current_leader,
                        leader_addr: None,
                    }));
                }
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&target).copied())
                    .flatten()
                    .map(|id| id.index);
                (matched.is_some() && matched == m.last_log_index).then_some(Ok(()))
            },
        )
        .await?;
        raft.runtime_config().heartbeat(false);
        let config = raft.config();
        // Followers refuse votes while a leader was heard from within this (openraft's leader
        // lease, and the stickiness of `grpc::raft_service`, which is shorter).
        tokio::time::sleep(std::time::Duration::from_millis(
            config.election_timeout_max + config.heartbeat_interval,
        ))
        .await;
        campaign(channels, address).await?;
        watch_metrics(
            &mut metrics,
            TRANSFER_ELECTION,
            || {
                StoreError::Unavailable(format!(
                    "node {target} did not win the election in time; this node still leads"
                ))
            },
            |m| match m.current_leader {
                Some(leader) if leader == target => Some(Ok(())),
                Some(leader) if leader != me => Some(Err(StoreError::Unavailable(format!(
                    "node {leader} was elected instead of node {target}"
                )))),
                _ => None,
            },
        )
        .await
    }

    /// On the voter a leader hands over to: stands for election now. Only the leader this node
    /// knows may ask, and only a voter that may vote stands.
    pub async fn stand_for_election(&self, caller: u64) -> Result<(), StoreError> {
        let (leader, voter) = {
            let m = self.raft().metrics().borrow().clone();
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == m.id);
            (m.current_leader, voter)
        };
        if leader != Some(caller) {
            return Err(StoreError::Rejected(format!(
                "only the leader may hand its leadership over (node {caller} is not the leader this node follows)"
            )));
        }
        if !voter || !self.may_vote() {
            return Err(StoreError::Rejected(
                "this node is not a voter that may stand for election".to_owned(),
            ));
        }
        self.raft()
            .trigger()
            .elect()
            .await
            .map_err(|f| StoreError::stopped(&f))
    }

    /// The voter (other than this one) with the most of the log, to hand the leadership to.
    pub fn best_successor(&self) -> Option<u64> {
        let m = self.raft().metrics().borrow().clone();
        let replication = m.replication.as_ref()?;
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != m.id)
            .max_by_key(|v| replication.get(v).copied().flatten().map(|id| id.index))
    }
}

/// Waits at most `within` until `decide` answers for the Raft metrics as they change (`Some`
/// ends the wait with that result); `late()` is the answer when time runs out.
async fn watch_metrics(
    metrics: &mut tokio::sync::watch::Receiver<crate::RaftMetrics>,
    within: std::time::Duration,
    late: impl FnOnce() -> StoreError,
    mut decide: impl FnMut(&crate::RaftMetrics) -> Option<Result<(), StoreError>>,
) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(result) = decide(&metrics.borrow_and_update()) {
            return result;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Err(late()),
            changed = metrics.changed() => if changed.is_err() {
                return Err(StoreError::Unavailable("the store is shutting down".to_owned()));
            },
        }
    }
}

/// Asks the voter at `address` to stand for election (`Admin.Campaign`).
async fn campaign(channels: &crate::grpc::Channels, address: &str) -> Result<(), StoreError> {
    use switchboard_proto::v1::admin_client::AdminClient;
    let max = channels.max_message_bytes();
    let channel = channels
        .get(address)
        .map_err(|e| StoreError::Rejected(e.to_string()))?;
    let mut client = AdminClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let mut request = tonic::Request::new(switchboard_proto::v1::CampaignRequest {});
    request.set_timeout(PROBE_TIMEOUT);
    tokio::time::timeout(PROBE_TIMEOUT, client.campaign(request))
        .await
        .map_err(|_| StoreError::Unavailable(format!("node at {address} did not answer in time")))?
        .map(|_| ())
        .map_err(|status| crate::grpc::error_from_status(&status))
}

fn change_error(error: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> StoreError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => StoreError::NotLeader {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            e @ ChangeMembershipError::InProgress(_),
        )) => StoreError::Unavailable(e.to_string()),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            StoreError::Rejected(e.to_string())
        }
        RaftError::Fatal(f) => StoreError::stopped(&f),
    }
}

/// How often a joining node asks again.
const JOIN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Asks the cluster that `seeds` (cluster addresses of any of its voters) belong to to add this
/// node (`node` at `address`) as a voter, until it is one or `cancel`: the status of the first
/// seed that answers names the leader, which adds it as a learner and promotes it once caught
/// up. Returns whether it joined.
pub async fn join(
    store: Arc<RaftStore>,
    channels: crate::grpc::Channels,
    node: u64,
    address: String,
    seeds: Vec<String>,
    data_dir: std::path::PathBuf,
    cancel: tokio_util::sync::CancellationToken,
) -> bool {
    use switchboard_proto::v1::admin_client::AdminClient;
    // A node restarted with its data joins again only if it was left a learner (its join was
    // cut short): a voter is one already, and a node removed since must be added by an operator.
    if store.is_initialized().await.unwrap_or(true) && !recovery_marker(&data_dir).exists() {
        let m = store.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.voter_ids().any(|v| v == node) {
            return true;
        }
        if membership.get_node(&node).is_none() {
            tracing::error!(
                node,
                "this node was removed from the cluster; add it again with `switchboard cluster add-voter`"
            );
            return false;
        }
    } else {
        // Empty: no vote and no election until it is a caught-up voter.
        store.set_may_vote(false);
    }
    use switchboard_proto::v1::{AddVoterRequest, AdminStatusRequest};
    let max = channels.max_message_bytes();
    let client = |addr: &str| {
        channels.get(addr).ok().map(|c| {
            AdminClient::new(c)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max)
        })
    };
    let mut attempts = 0u32;
    loop {
        for seed in &seeds {
            let Some(mut admin) = client(seed) else {
                continue;
            };
            let mut request = tonic::Request::new(AdminStatusRequest {});
            request.set_timeout(std::time::Duration::from_secs(5));
            let status = tokio::select! {
                _ = cancel.cancelled() => return false,
                status = admin.status(request) => status,
            };
            let Ok(status) = status.map(tonic::Response::into_inner) else {
                continue;
            };
            if status
                .nodes
                .iter()
                .any(|n| n.node_id == node && n.role == "voter")
            {
                if store.may_vote() {
                    tracing::info!(node, "this node is a voter of the cluster");
                    return true;
                }
                // Listed as a voter while this data dir is empty: it lost its disk.
                if let Err(error) = mark_recovering(&data_dir) {
                    tracing::error!(%error, "cannot record the recovery in the data dir");
                }
                recover(store, channels.clone(), seeds.clone(), data_dir, cancel).await;
                return true;
            }
            if status.leader_address.is_empty() {
                continue;
            }
            let Some(mut leader) = client(&status.leader_address) else {
                continue;
            };
            let mut request = tonic::Request::new(AddVoterRequest {
                node_id: node,
                address: address.clone(),
            });
            // Catching up from a snapshot may take a while.
            request.set_timeout(std::time::Duration::from_secs(600));
            tracing::info!(
                node,
                leader = status.leader_id,
                "asking the leader to add this node"
            );
            let added = tokio::select! {
                _ = cancel.cancelled() => return false,
                added = leader.add_voter(request) => added,
            };
            match added {
                Ok(_) => {
                    // Added once caught up: it may vote.
                    store.set_may_vote(true);
                    tracing::info!(node, "joined the cluster as a voter");
                    return true;
                }
                Err(status) => {
                    attempts += 1;
                    if attempts == 1 || attempts % 30 == 0 {
                        tracing::warn!(node, %status, attempts, "joining the cluster failed; retrying");
                    }
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(JOIN_RETRY) => {}
        }
    }
}

/// How long a probe of a peer's status may take.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a voter's data dir says recovery is under way (created before recovering, removed
/// once caught up), so a voter killed while recovering recovers again when it restarts.
pub fn recovery_marker(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("RECOVERING")
}

fn mark_recovering(data_dir: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::create(recovery_marker(data_dir))?;
    file.sync_all()?;
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Starts a voter of the cluster `peers` (node id → cluster address, this node included) once
/// its Raft service listens, without bootstrapping a second cluster or voting with a log that
/// lost acknowledged entries:
/// - a data dir with a log (and no recovery marker) rejoins as it is;
/// - a recovery marker (a recovery was cut short) recovers again;
/// - an empty data dir grants no vote and stands for no election while it asks the other
///   voters once: if one reports a log past the first membership entry (a leader's first entry
///   is 1), the cluster exists and this node lost its disk — it recovers ([`recover`]); if
///   none does, the cluster is forming and it bootstraps with the others. The question fails
///   open: when no peer that has a log answers (all of them down or still replaying), an empty
///   node bootstraps and votes as a fresh one would.
pub async fn start_voter(
    store: Arc<RaftStore>,
    channels: crate::grpc::Channels,
    peers: BTreeMap<u64, String>,
    data_dir: std::path::PathBuf,
    cancel: tokio_util::sync::CancellationToken,
) {
    let me = store.node_id();
    let others: Vec<String> = peers
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(_, addr)| addr.clone())
        .collect();
    let marked = recovery_marker(&data_dir).exists();
    let initialized = store.is_initialized().await.unwrap_or(true);
    if initialized && !marked {
        if let Err(error) = store.initialize_cluster(peers).await {
            tracing::error!(%error, "rejoining the raft cluster failed");
        }
        return;
    }
    store.set_may_vote(false);
    // One round of questions: peers that do not answer (still starting, or gone) count as
    // having no log, so a cluster forming in any start order bootstraps at once.
    let exists = marked
        || futures::future::join_all(others.iter().map(|p| probe(&channels, p)))
            .await
            .into_iter()
            .flatten()
            .any(|s| !s.nodes.is_empty() && s.last_log_index >= 1);
    if !exists {
        match store.initialize_cluster(peers).await {
            Ok(()) => store.set_may_vote(true),
            Err(error) => tracing::error!(%error, "bootstrapping the raft cluster failed"),
        }
        return;
    }
    if let Err(error) = mark_recovering(&data_dir) {
        tracing::error!(%error, "cannot record the recovery in the data dir");
    }
    recover(store, channels, others, data_dir, cancel).await;
}

async fn probe(
    channels: &crate::grpc::Channels,
    peer: &str,
) -> Option<switchboard_proto::v1::ClusterStatus> {
    use switchboard_proto::v1::admin_client::AdminClient;
    let max = channels.max_message_bytes();
    let mut client = AdminClient::new(channels.get(peer).ok()?)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let mut request = tonic::Request::new(switchboard_proto::v1::AdminStatusRequest {});
    request.set_timeout(PROBE_TIMEOUT);
    let call = client.status(request);
    tokio::time::timeout(PROBE_TIMEOUT, call)
        .await
        .ok()?
        .ok()
        .map(tonic::Response::into_inner)
}

/// Recovery of a voter that came back with an empty data dir under its old id, while its
/// cluster runs: it grants no vote until it holds everything the cluster acknowledged — the
/// log of a leader (which has every acknowledged entry) up to the index that leader reported
/// when asked — so it can never help elect a candidate that lacks an acknowledged entry. It
/// keeps asking `peers` until one answers as the leader, then waits until it has applied that
/// leader's last index (from the log or a snapshot), then votes again. Until then it is
/// effectively a learner; it is never a second cluster's first voter.
///
/// Votes stop when this is called (before the returned future first runs).
pub fn recover(
    store: Arc<RaftStore>,
    channels: crate::grpc::Channels,
    peers: Vec<String>,
    data_dir: std::path::PathBuf,
    cancel: tokio_util::sync::CancellationToken,
) -> impl std::future::Future<Output = ()> {
    store.set_may_vote(false);
    recovering(store, channels, peers, data_dir, cancel)
}

async fn recovering(
    store: Arc<RaftStore>,
    channels: crate::grpc::Channels,
    peers: Vec<String>,
    data_dir: std::path::PathBuf,
    cancel: tokio_util::sync::CancellationToken,
) {
    tracing::warn!(
        node = store.node_id(),
        "this voter's data dir is empty but its cluster exists: it lost its disk; it votes again only once it has caught up"
    );
    let target = loop {
        let statuses = futures::future::join_all(peers.iter().map(|p| probe(&channels, p))).await;
        // The leader of the highest term that answers as one (a leader reports itself only
        // while a quorum confirms it).
        let leader = statuses
            .into_iter()
            .flatten()
            .filter(|s| s.leader_id != 0 && s.leader_id == s.node_id)
            .max_by_key(|s| s.term);
        if let Some(leader) = leader {
            if !leader.nodes.iter().any(|n| n.node_id == store.node_id()) {
                tracing::error!(
                    node = store.node_id(),
                    "this node is not a member of the running cluster; add it with `switchboard cluster add-voter`"
                );
            }
            break leader.last_log_index;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(JOIN_RETRY) => {}
        }
    };
    tracing::info!(
        node = store.node_id(),
        target,
        "catching up with the leader's log"
    );
    let view = crate::api::MembershipStore::view(&*store);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            caught_up = view.wait_applied(target, std::time::Duration::from_secs(60)) => {
                if caught_up {
                    break;
                }
            }
        }
    }
    if let Err(error) = std::fs::remove_file(recovery_marker(&data_dir)) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::error!(%error, "cannot clear the recovery marker");
        }
    }
    store.set_may_vote(true);
    tracing::info!(
        node = store.node_id(),
        target,
        "caught up: this voter votes again"
    );
}
