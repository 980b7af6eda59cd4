//! The store over real gRPC on 127.0.0.1: three voters with `GrpcNetwork` and `GrpcForwarder`
//! behind tonic servers, and `RemoteStore` replicas as a stateless gateway uses them. Covers
//! concurrent bootstrap, forwarding, the watch replica, leader failover, a restarted voter
//! catching up from its log and from a snapshot sent over gRPC, and a replica that loses the
//! voter it watches. Plus `RaftStore::watch` on its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchboard_membership::{Command, Membership, Name, Outcome};
use switchboard_net::{ClusterIdentity, ClusterKeys, ClusterSecurity};
use switchboard_proto::v1::store_client::StoreClient;
use switchboard_proto::v1::StatusRequest;
use switchboard_store::grpc::{
    Channels, GrpcForwarder, GrpcNetwork, RaftGrpcService, StoreGrpcService,
};
use switchboard_store::network::SingleNodeNetwork;
use switchboard_store::{
    decode_state, FeedEvent, MembershipStore, RaftStore, RemoteStore, RemoteStoreConfig,
    StoreConfig, StoreError,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

/// The cluster credentials of test node `node`.
fn security(node: u64) -> ClusterSecurity {
    ClusterSecurity::new(
        ClusterKeys::new(&["test-cluster-key"]).unwrap(),
        ClusterIdentity {
            node,
            incarnation: 1,
        },
    )
}

const WAIT: Duration = Duration::from_secs(30);
/// Generous bound on how long writes may fail after the leader is lost.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);

/// Three clusters at once would share two cores; one at a time keeps elections calm.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One voter: its store and the tonic server in front of it.
struct Node {
    id: u64,
    addr: String,
    store: Arc<RaftStore>,
    stop: CancellationToken,
    server: JoinHandle<()>,
}

impl Node {
    /// Opens the store in `dir` and serves Raft and Store on `listener`.
    async fn start(
        id: u64,
        listener: TcpListener,
        dir: &Path,
        tune: &(dyn Fn(&mut StoreConfig) + Sync),
    ) -> Node {
        let addr = listener.local_addr().unwrap().to_string();
        let mut config = StoreConfig::new(id, dir);
        config.advertise_addr = addr.clone();
        tune(&mut config);
        let security = security(id);
        let channels = Channels::new(security.clone());
        let store = RaftStore::open_with_forwarder(
            config,
            GrpcNetwork::new(id, channels.clone()),
            Arc::new(GrpcForwarder::new(channels)),
        )
        .await
        .unwrap();
        let stop = CancellationToken::new();
        let max = security.max_message_bytes();
        let server = switchboard_net::server_builder()
            .layer(security.server_layer())
            .add_service(RaftGrpcService::new(store.clone()).into_server(max))
            .add_service(
                StoreGrpcService::new(store.clone())
                    .with_shutdown(stop.clone())
                    .into_server(max),
            )
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        let server = tokio::spawn(async move { server.await.unwrap() });
        Node {
            id,
            addr,
            store,
            stop,
            server,
        }
    }

    /// Stops the server (watch streams end) and the store, and waits until the port is free.
    async fn kill(self) -> (u64, String) {
        self.stop.cancel();
        self.store.shutdown().await;
        tokio::time::timeout(WAIT, self.server)
            .await
            .expect("the server stops")
            .unwrap();
        (self.id, self.addr)
    }
}

struct Cluster {
    dirs: Vec<TempDir>,
    nodes: Vec<Option<Node>>,
    voters: BTreeMap<u64, String>,
    tune: Box<dyn Fn(&mut StoreConfig) + Sync>,
}

impl Cluster {
    /// Three voters, each calling `initialize_cluster` at the same time.
    async fn start(tune: impl Fn(&mut StoreConfig) + Sync + 'static) -> Cluster {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let voters: BTreeMap<u64, String> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap().to_string()))
            .collect();
        let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            nodes.push(Some(
                Node::start(i as u64 + 1, listener, dirs[i].path(), &tune).await,
            ));
        }
        let cluster = Cluster {
            dirs,
            nodes,
            voters,
            tune: Box::new(tune),
        };
        let inits = cluster.live().map(|node| {
            let store = node.store.clone();
            let voters = cluster.voters.clone();
            tokio::spawn(async move { store.initialize_cluster(voters).await })
        });
        for init in futures::future::join_all(inits).await {
            init.unwrap().unwrap();
        }
        cluster.wait_for_one_leader().await;
        cluster
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes[id as usize - 1].as_ref().expect("node is up")
    }

    fn addrs(&self) -> Vec<String> {
        self.voters.values().cloned().collect()
    }

    /// Waits until every live voter knows the same leader, and returns it.
    async fn wait_for_one_leader(&self) -> u64 {
        wait_until("one leader known by every live voter", || {
            let leaders: HashSet<_> = self.live().map(|n| n.store.status().leader_id).collect();
            leaders.len() == 1
                && leaders
                    .iter()
                    .next()
                    .copied()
                    .flatten()
                    .is_some_and(|l| self.nodes[l as usize - 1].is_some())
        })
        .await;
        self.live()
            .next()
            .and_then(|n| n.store.status().leader_id)
            .unwrap()
    }

    fn follower(&self, leader: u64) -> u64 {
        self.live().map(|n| n.id).find(|&id| id != leader).unwrap()
    }

    async fn kill(&mut self, id: u64) {
        let node = self.nodes[id as usize - 1].take().expect("node is up");
        node.kill().await;
    }

    /// Starts voter `id` again from its data directory on its old address.
    async fn restart(&mut self, id: u64) {
        let addr: SocketAddr = self.voters[&id].parse().unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        let node = Node::start(id, listener, self.dirs[id as usize - 1].path(), &*self.tune).await;
        // A restarted voter is initialized already: this is the rejoin path.
        node.store
            .initialize_cluster(self.voters.clone())
            .await
            .unwrap();
        self.nodes[id as usize - 1] = Some(node);
    }

    /// Waits until every live voter (and `remote`, if given) applied the same index and holds
    /// the same state; returns that state.
    async fn wait_converged(&self, remote: Option<&RemoteStore>) -> Membership {
        let mut state = None;
        wait_until("identical states everywhere", || {
            let mut views: Vec<_> = self.live().map(|n| n.store.view()).collect();
            views.extend(remote.map(|r| r.view()));
            let index = views[0].applied_index();
            if views.iter().any(|v| v.applied_index() != index) {
                return false;
            }
            let first = views[0].read().clone();
            if views.iter().all(|v| *v.read() == first) {
                state = Some(first);
                true
            } else {
                false
            }
        })
        .await;
        state.unwrap()
    }

    async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if let Some(node) = self.nodes[i].take() {
                node.kill().await;
            }
        }
    }
}

fn remote_config(node_id: u64) -> RemoteStoreConfig {
    let mut config = RemoteStoreConfig::new(node_id);
    config.write_timeout = Duration::from_secs(5);
    config
}

/// Polls `condition` until it holds, failing after `WAIT`.
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

fn heartbeat(node: u64) -> Command {
    Command::NodeHeartbeat {
        node,
        incarnation: 1,
        address: format!("gw-{node}"),
        lease_ms: 3_600_000,
    }
}

/// A durable write: user `user` joins `group` (no TTL).
fn join(user: &str, group: &str) -> Command {
    Command::AddUserToGroup {
        hub: Name::from("h"),
        user: Name::from(user),
        group: Name::from(group),
        ttl_secs: None,
    }
}

/// Whether user `c1` is in `group` in the store's view.
fn in_group(store: &dyn MembershipStore, group: &str) -> bool {
    store.view().read().user_in_group("h", "c1", group, 0)
}

/// Registers gateway 9 through `store`, with user `c1` in group `base`.
async fn register(store: &dyn MembershipStore) {
    assert_eq!(
        store
            .write_all(vec![heartbeat(9), join("c1", "base")])
            .await
            .unwrap(),
        vec![Outcome::Registered, Outcome::Ok]
    );
}

async fn wait_ready(remote: &RemoteStore) {
    wait_until("the remote store sees a leader", || {
        remote.status().leader_known()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bootstrap_forwarding_and_a_remote_replica() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(|_| {}).await;
    let leader = cluster.wait_for_one_leader().await;
    let follower = cluster.node(cluster.follower(leader));

    // A write on a follower is forwarded and visible there as soon as it returns.
    register(&*follower.store).await;
    assert_eq!(
        follower.store.write(join("c1", "g1")).await.unwrap(),
        Outcome::Ok
    );
    assert!(in_group(&*follower.store, "g1"));

    // A write that was already forwarded is not forwarded again.
    match follower
        .store
        .propose_leader_only(vec![Command::Tick])
        .await
    {
        Err(StoreError::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(
                leader_addr.as_deref(),
                Some(cluster.voters[&leader].as_str())
            );
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // Status over gRPC names the leader.
    let mut client = StoreClient::new(Channels::new(security(50)).get(&follower.addr).unwrap());
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.node_id, follower.id);
    assert_eq!(status.leader_id, leader);
    assert_eq!(status.leader_addr, cluster.voters[&leader]);
    assert!(status.applied_index > 0);

    // A remote replica: its own writes are visible when they return.
    let remote = RemoteStore::connect(cluster.addrs(), remote_config(50), security(50));
    wait_ready(&remote).await;
    assert!(
        in_group(&*remote, "g1"),
        "the replica starts from the state"
    );
    assert_eq!(remote.write(join("c1", "g2")).await.unwrap(), Outcome::Ok);
    assert!(in_group(&*remote, "g2"));
    assert_eq!(
        remote
            .write_all(vec![join("nope", "g"), join("c1", "g3")])
            .await
            .unwrap(),
        vec![Outcome::Ok, Outcome::Ok]
    );
    // Connections are a gateway's own state: the store refuses to log them.
    let opened = Command::ConnectionOpened {
        hub: Name::from("h"),
        connection: Name::from("c9"),
        user: None,
        node: 50,
        incarnation: 1,
    };
    let refused = remote.write(opened).await;
    assert!(
        refused.is_err(),
        "a connection command was logged: {refused:?}"
    );
    assert!(in_group(&*remote, "g3"));

    // Concurrent writes share RPCs and all land.
    let writes = (0..100).map(|i| {
        let remote = remote.clone();
        tokio::spawn(async move { remote.write(join("c1", &format!("many-{i}"))).await })
    });
    for result in futures::future::join_all(writes).await {
        assert_eq!(result.unwrap().unwrap(), Outcome::Ok);
    }
    assert!((0..100).all(|i| in_group(&*remote, &format!("many-{i}"))));

    // Writes made on a voter reach the replica.
    let leader_node = cluster.node(leader);
    assert_eq!(
        leader_node
            .store
            .write(join("c1", "from-voter"))
            .await
            .unwrap(),
        Outcome::Ok
    );
    wait_until("the voter's write in the replica", || {
        in_group(&*remote, "from-voter")
    })
    .await;

    // And the replica equals the voters.
    let state = cluster.wait_converged(Some(&remote)).await;
    assert!(state.user_in_group("h", "c1", "many-99", 0));
    assert_eq!(remote.status().leader_id, Some(leader));
    assert!(!remote.status().is_leader);

    remote.shutdown().await;
    assert!(!remote.status().leader_known());
    assert!(matches!(
        remote.write(join("c1", "late")).await,
        Err(StoreError::Unavailable(_))
    ));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_loses_no_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(|_| {}).await;
    let remote = RemoteStore::connect(cluster.addrs(), remote_config(51), security(9));
    wait_ready(&remote).await;
    register(&*remote).await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let group = format!("before-{i}");
        assert_eq!(remote.write(join("c1", &group)).await.unwrap(), Outcome::Ok);
        acknowledged.push(group);
    }

    let old_leader = cluster.wait_for_one_leader().await;
    cluster.kill(old_leader).await;
    let killed = tokio::time::Instant::now();

    // Writes through the replica resume within the bound.
    loop {
        match remote.write(join("c1", "after-failover")).await {
            Ok(outcome) => {
                assert_eq!(outcome, Outcome::Ok);
                break;
            }
            Err(error) => {
                assert!(error.retryable(), "{error}");
                assert!(
                    killed.elapsed() < FAILOVER_BOUND,
                    "writes did not resume within {FAILOVER_BOUND:?}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    acknowledged.push("after-failover".to_owned());
    let new_leader = cluster.wait_for_one_leader().await;
    assert_ne!(new_leader, old_leader);
    for i in 0..10 {
        let group = format!("after-{i}");
        assert_eq!(remote.write(join("c1", &group)).await.unwrap(), Outcome::Ok);
        acknowledged.push(group);
    }
    for group in &acknowledged {
        assert!(in_group(&*remote, group), "{group} lost in the replica");
    }
    let state = cluster.wait_converged(Some(&remote)).await;
    for group in &acknowledged {
        assert!(state.user_in_group("h", "c1", group, 0), "{group} lost");
    }

    // The old leader comes back from its data directory and catches up.
    cluster.restart(old_leader).await;
    let state = cluster.wait_converged(Some(&remote)).await;
    for group in &acknowledged {
        assert!(state.user_in_group("h", "c1", group, 0), "{group} lost");
    }
    assert!(in_group(&*cluster.node(old_leader).store, "after-9"));

    remote.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_missed_purged_entries_installs_a_snapshot_over_grpc() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(|config| {
        config.snapshot_every = 20;
        config.keep_logs_after_snapshot = 0;
    })
    .await;
    let leader = cluster.wait_for_one_leader().await;
    register(&*cluster.node(leader).store).await;
    let lagging = cluster.follower(leader);
    cluster.kill(lagging).await;

    let online = cluster.follower(leader);
    for i in 0..60 {
        // Alternate between the leader and the other follower (which forwards).
        let id = if i % 2 == 0 { leader } else { online };
        assert_eq!(
            cluster
                .node(id)
                .store
                .write(join("c1", &format!("late-{i}")))
                .await
                .unwrap(),
            Outcome::Ok
        );
    }
    let leader_store = cluster.node(leader).store.clone();
    leader_store.trigger_snapshot().await.unwrap();
    let snapshot_index = leader_store.status().snapshot_index.unwrap();
    wait_until("the leader's log is purged", || {
        leader_store.status().purged_index == Some(snapshot_index)
    })
    .await;

    cluster.restart(lagging).await;
    let restarted = cluster.node(lagging).store.clone();
    wait_until("the restarted voter installs the leader's snapshot", || {
        restarted
            .status()
            .snapshot_index
            .is_some_and(|i| i >= snapshot_index)
    })
    .await;
    let state = cluster.wait_converged(None).await;
    assert!(state.user_in_group("h", "c1", "late-59", 0));
    assert!(in_group(&*restarted, "late-0"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_resyncs_when_its_voter_goes_away() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(|_| {}).await;
    let leader = cluster.wait_for_one_leader().await;
    let follower = cluster.follower(leader);
    register(&*cluster.node(leader).store).await;

    // With no leader known yet, gateway 3 starts on voter 3 % 3 = the first address: the
    // follower, normally.
    let mut voters = vec![cluster.voters[&follower].clone()];
    voters.extend(
        cluster
            .voters
            .iter()
            .filter(|(id, _)| **id != follower)
            .map(|(_, a)| a.clone()),
    );
    let remote = RemoteStore::connect(voters, remote_config(3), security(3));
    wait_ready(&remote).await;
    // Usually the follower; on a loaded machine the first attempt may have moved on to another
    // voter. Whichever it watches goes away (if that is the leader, a new one is elected).
    let watched = remote.watched_voter().expect("a watched voter");
    let victim = cluster
        .voters
        .iter()
        .find(|(_, addr)| **addr == watched)
        .map(|(id, _)| *id)
        .expect("the replica watches a voter");

    cluster.kill(victim).await;
    let gone = cluster.voters[&victim].clone();
    wait_until("the replica follows another voter", || {
        remote.watched_voter().is_some_and(|v| v != gone)
    })
    .await;
    let leader = cluster.wait_for_one_leader().await;
    assert_eq!(
        cluster
            .node(leader)
            .store
            .write(join("c1", "after-resync"))
            .await
            .unwrap(),
        Outcome::Ok
    );
    wait_until("a later write reaches the replica", || {
        in_group(&*remote, "after-resync")
    })
    .await;
    wait_ready(&remote).await;
    cluster.wait_converged(Some(&remote)).await;

    remote.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_reproduces_the_view_from_its_state_and_batches() {
    let dir = TempDir::new().unwrap();
    let mut config = StoreConfig::new(1, dir.path());
    config.heartbeat_ms = 50;
    config.election_timeout_min_ms = 150;
    config.election_timeout_max_ms = 300;
    let store = RaftStore::open(config, SingleNodeNetwork).await.unwrap();
    store.initialize_single().await.unwrap();
    register(&*store).await;
    store.write(join("c1", "early")).await.unwrap();

    let start = store.watch().unwrap();
    assert_eq!(start.log_index, store.view().applied_index());
    let mut replica = decode_state(&start.state).unwrap();
    assert_eq!(replica, *store.view().read());
    let mut updates = start.updates;

    // Concurrent writes end up in several entries.
    let writes = (0..50).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { store.propose(vec![join("c1", &format!("w-{i}"))]).await })
    });
    let mut last = 0;
    for result in futures::future::join_all(writes).await {
        last = last.max(result.unwrap().unwrap().log_index);
    }

    let mut position = start.log_index;
    let mut batches = 0;
    while position < last {
        let event = tokio::time::timeout(WAIT, updates.recv())
            .await
            .expect("a feed event")
            .unwrap();
        match event {
            FeedEvent::Batch { log_index, batch } => {
                assert!(log_index > position, "batches arrive in log order");
                position = log_index;
                replica.apply(&batch);
                batches += 1;
            }
            FeedEvent::Index { log_index } => {
                assert!(log_index > position, "entries arrive in log order");
                position = log_index;
            }
            FeedEvent::Reset => panic!("no snapshot was installed"),
        }
    }
    assert!(batches >= 1);
    assert_eq!(store.view().applied_index(), last);
    assert_eq!(replica, *store.view().read());
    assert!(replica.user_in_group("h", "c1", "w-49", 0));
    store.shutdown().await;
}
