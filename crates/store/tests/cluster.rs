//! Three `RaftStore` voters in one process, wired by an in-memory network and forwarder: checks
//! that the store is ready for a multi-voter network — writes on a follower are forwarded and
//! visible there at once, and a voter that missed purged entries catches up from a snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use parking_lot::RwLock;
use switchboard_membership::{Command, Name, Outcome};
use switchboard_store::{
    Applied, Forwarder, MembershipStore, Raft, RaftStore, StoreConfig, StoreError, TypeConfig,
};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Cluster {
    rafts: RwLock<HashMap<u64, Raft>>,
    stores: RwLock<HashMap<u64, Weak<RaftStore>>>,
    isolated: RwLock<HashSet<u64>>,
}

#[derive(thiserror::Error, Debug)]
#[error("node {0} is unreachable")]
struct Down(u64);

/// The network of one node: delivers RPCs by calling the target's `Raft` directly.
#[derive(Clone)]
struct Network {
    cluster: Arc<Cluster>,
    me: u64,
}

struct Connection {
    network: Network,
    target: u64,
}

impl Connection {
    fn target<E: std::error::Error>(&self) -> Result<Raft, RPCError<u64, BasicNode, E>> {
        let isolated = self.network.cluster.isolated.read();
        if isolated.contains(&self.network.me) || isolated.contains(&self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&Down(self.target))));
        }
        self.network
            .cluster
            .rafts
            .read()
            .get(&self.target)
            .cloned()
            .ok_or_else(|| RPCError::Unreachable(Unreachable::new(&Down(self.target))))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Connection {
        Connection {
            network: self.clone(),
            target,
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.target()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let raft = self.target()?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.target()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Forwards a follower's batch to the leader's `RaftStore::propose`.
struct LocalForwarder {
    cluster: Arc<Cluster>,
}

#[async_trait]
impl Forwarder for LocalForwarder {
    async fn forward(
        &self,
        leader: u64,
        _leader_node: Option<BasicNode>,
        commands: Vec<Command>,
    ) -> Result<Applied, StoreError> {
        let store = self
            .cluster
            .stores
            .read()
            .get(&leader)
            .and_then(Weak::upgrade);
        match store {
            Some(store) => store.propose(commands).await,
            None => Err(StoreError::Unavailable(format!("node {leader} is gone"))),
        }
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(cluster: &Arc<Cluster>, dirs: &[TempDir]) -> Vec<Arc<RaftStore>> {
    let mut stores = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let id = i as u64 + 1;
        let mut config = StoreConfig::new(id, dir.path());
        config.advertise_addr = format!("node-{id}");
        config.heartbeat_ms = 50;
        config.election_timeout_min_ms = 200;
        config.election_timeout_max_ms = 400;
        config.snapshot_every = 1_000_000;
        config.keep_logs_after_snapshot = 0;
        let network = Network {
            cluster: cluster.clone(),
            me: id,
        };
        let forwarder = Arc::new(LocalForwarder {
            cluster: cluster.clone(),
        });
        let store = RaftStore::open_with_forwarder(config, network, forwarder)
            .await
            .unwrap();
        cluster.rafts.write().insert(id, store.raft().clone());
        cluster.stores.write().insert(id, Arc::downgrade(&store));
        stores.push(store);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=dirs.len() as u64)
        .map(|id| (id, BasicNode::new(format!("node-{id}"))))
        .collect();
    stores[0].raft().initialize(members).await.unwrap();
    stores
}

fn join(connection: &str, group: &str) -> Command {
    Command::AddConnectionToGroup {
        hub: Name::from("h"),
        group: Name::from(group),
        connection: Name::from(connection),
    }
}

/// Retries a write across a leader change.
async fn write(store: &RaftStore, command: Command) -> Outcome {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match store.write(command.clone()).await {
            Ok(outcome) => return outcome,
            Err(e) if e.retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_writes_and_catch_up_from_a_snapshot() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let cluster = Arc::new(Cluster::default());
    let stores = start(&cluster, &dirs).await;
    wait_until("a leader known everywhere", || {
        let leaders: HashSet<_> = stores.iter().map(|s| s.status().leader_id).collect();
        leaders.len() == 1 && !leaders.contains(&None)
    })
    .await;
    let leader_id = stores[0].status().leader_id.unwrap();
    let leader = &stores[leader_id as usize - 1];
    let follower = stores.iter().find(|s| s.node_id() != leader_id).unwrap();

    // A write on a follower is forwarded, and the follower sees it as soon as it is answered.
    let opened = Command::ConnectionOpened {
        hub: Name::from("h"),
        connection: Name::from("c1"),
        user: None,
        node: 9,
        incarnation: 1,
    };
    let heartbeat = Command::NodeHeartbeat {
        node: 9,
        incarnation: 1,
        address: "n9".into(),
        lease_ms: 3_600_000,
    };
    assert_eq!(
        follower.write_all(vec![heartbeat, opened]).await.unwrap(),
        vec![Outcome::Registered, Outcome::Ok]
    );
    assert_eq!(follower.write(join("c1", "g1")).await.unwrap(), Outcome::Ok);
    assert!(follower.view().read().group_has_connections("h", "g1"));

    // A voter misses entries that the others then purge behind a snapshot.
    let lagging = stores.iter().find(|s| s.node_id() != leader_id).unwrap();
    cluster.isolated.write().insert(lagging.node_id());
    let online: Vec<_> = stores
        .iter()
        .filter(|s| s.node_id() != lagging.node_id())
        .collect();
    for i in 0..30 {
        assert_eq!(
            write(online[i % 2], join("c1", &format!("late-{i}"))).await,
            Outcome::Ok
        );
    }
    let current = online
        .iter()
        .find(|s| s.status().is_leader)
        .copied()
        .unwrap_or(leader);
    current.trigger_snapshot().await.unwrap();
    let snapshot_index = current.status().snapshot_index.unwrap();
    wait_until("the leader's log is purged", || {
        current.status().purged_index == Some(snapshot_index)
    })
    .await;
    assert!(!lagging.view().read().group_has_connections("h", "late-29"));

    cluster.isolated.write().clear();
    wait_until("the lagging voter catches up", || {
        let applied = online
            .iter()
            .map(|s| s.status().applied_index)
            .max()
            .flatten();
        lagging.status().applied_index >= applied && lagging.status().snapshot_index.is_some()
    })
    .await;
    assert!(lagging.view().read().group_has_connections("h", "late-29"));
    let expected = current.view().read().clone();
    wait_until("identical states", || *lagging.view().read() == expected).await;

    for store in &stores {
        store.shutdown().await;
    }
}
