//! Whole clusters in one process, from bound listeners: three voters and two stateless gateways
//! start on free ports, a membership change written through one gateway is read through the
//! other, and every node stops in order when the shutdown token is cancelled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard_auth::KeySet;
use switchboard_core::throttle::now_ms;
use switchboard_edge::EdgeConfig;
use switchboard_gateway::GatewayConfig;
use switchboard_membership::Command;
use switchboard_net::{ClusterIdentity, ClusterKeys, ClusterSecurity};
use switchboard_node::{GatewaySpec, Listeners, Node, NodeConfig, StoreSpec};
use switchboard_store::grpc::Channels;
use switchboard_store::remote::RemoteStoreConfig;
use switchboard_store::StoreConfig;
use switchboard_testkit::eventually;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const KEY: &str = "node-test-access-key-0123456789ABCDEFGHIJKLMN";
const WAIT: Duration = Duration::from_secs(30);

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn security(node: u64) -> ClusterSecurity {
    ClusterSecurity::new(
        ClusterKeys::new(&[KEY]).unwrap(),
        ClusterIdentity {
            node,
            incarnation: 1,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_and_two_gateways_in_one_process() {
    let shutdown = CancellationToken::new();
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let mut cluster_listeners = Vec::new();
    for _ in 0..3 {
        cluster_listeners.push(listener().await);
    }
    let peers: BTreeMap<u64, String> = cluster_listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap().to_string()))
        .collect();
    let starting =
        cluster_listeners
            .into_iter()
            .zip(&dirs)
            .enumerate()
            .map(|(i, (cluster, dir))| {
                let id = i as u64 + 1;
                let mut config = StoreConfig::new(id, dir.path().to_path_buf());
                config.advertise_addr = peers[&id].clone();
                Node::start(
                    Listeners {
                        public: None,
                        cluster: Some(cluster),
                    },
                    NodeConfig {
                        store: StoreSpec::Voter {
                            config,
                            peers: Some(peers.clone()),
                        },
                        gateway: None,
                        security: Some(security(id)),
                        health_edge: None,
                        prometheus: None,
                    },
                    shutdown.clone(),
                )
            });
    let voters = futures::future::try_join_all(starting).await.unwrap();
    assert!(voters
        .iter()
        .all(|v| v.voter().is_some() && v.gateway().is_none()));

    let mut gateways = Vec::new();
    for id in [11u64, 12] {
        let (public, cluster) = (listener().await, listener().await);
        let mut config = GatewayConfig::new(id, cluster.local_addr().unwrap().to_string());
        config.cluster = Some(Channels::new(security(id)));
        let node = Node::start(
            Listeners {
                public: Some(public),
                cluster: Some(cluster),
            },
            NodeConfig {
                store: StoreSpec::Remote {
                    voters: peers.values().cloned().collect(),
                    config: RemoteStoreConfig::new(id),
                },
                gateway: Some(GatewaySpec {
                    config,
                    keys: KeySet::new(vec![KEY.to_owned()]).unwrap(),
                    edge: EdgeConfig::new(1024, Arc::new(switchboard_gateway::error::reject)),
                }),
                security: Some(security(id)),
                health_edge: None,
                prometheus: None,
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        gateways.push(node);
    }
    let a = gateways[0].gateway().unwrap().clone();
    let b = gateways[1].gateway().unwrap().clone();

    // Once a leader is elected, a write through A is acknowledged ...
    let add = Command::AddUserToGroup {
        hub: "chat".into(),
        user: "u".into(),
        group: "g".into(),
        ttl_secs: None,
    };
    eventually(WAIT, "a write through gateway A", || {
        let (a, add) = (a.clone(), add.clone());
        async move { a.write(add).await.ok() }
    })
    .await
    .unwrap();
    // ... and read through B after its read barrier.
    eventually(WAIT, "the entry seen through gateway B", || {
        let b = b.clone();
        async move {
            b.sync_view().await;
            b.store
                .view()
                .read()
                .user_in_group("chat", "u", "g", now_ms())
                .then_some(())
        }
    })
    .await
    .unwrap();

    // Everything stops, gateways first, then the voters.
    shutdown.cancel();
    for node in gateways.into_iter().chain(voters) {
        tokio::time::timeout(WAIT, node.wait())
            .await
            .expect("the node stops")
            .unwrap();
    }
}
