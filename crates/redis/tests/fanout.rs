//! The Redis pub/sub fan-out against a real `redis-server`: envelopes from one gateway reach
//! another in the order they were sent, a restarted gateway's older incarnation is not heard
//! any more, and a peer's queue is bounded (it drops, never blocks) while Redis is gone.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_cluster::proto::Envelope;
use switchboard_cluster::{Inbound, PeerInfo, PeerTransport};
use switchboard_redis::{FanoutSettings, RedisFanout};
use switchboard_testkit::eventually;
use switchboard_testkit::redis::RedisServer;
use tokio::sync::Mutex;

#[derive(Default)]
struct Received(Mutex<Vec<(u64, String)>>);

#[async_trait]
impl Inbound for Received {
    async fn deliver(&self, from: u64, envelope: Envelope) {
        self.0.lock().await.push((from, envelope.hub));
    }
}

fn envelope(hub: String) -> Envelope {
    Envelope {
        hub,
        ..Default::default()
    }
}

fn peer(node: u64) -> PeerInfo {
    PeerInfo {
        node,
        incarnation: 1,
        address: String::new(),
    }
}

async fn fanout(
    redis: &RedisServer,
    node: u64,
    incarnation: u64,
    tune: impl FnOnce(&mut FanoutSettings),
) -> RedisFanout {
    let mut settings = FanoutSettings::new(redis.url(), node, incarnation);
    tune(&mut settings);
    RedisFanout::connect(settings).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_arrive_in_order_and_an_older_incarnation_is_not_heard() {
    let redis = RedisServer::start().await.unwrap();
    let a = fanout(&redis, 1, 10, |_| {}).await;
    let b = fanout(&redis, 2, 1, |_| {}).await;
    let at_b = Arc::new(Received::default());
    a.bind(Arc::new(Received::default()));
    b.bind(at_b.clone());
    a.set_peers(&[peer(1), peer(2)]);
    for i in 0..2000 {
        assert!(a.send(&peer(2), envelope(format!("m{i}"))));
    }
    eventually(Duration::from_secs(20), "every envelope at b", || async {
        (at_b.0.lock().await.len() == 2000).then_some(())
    })
    .await
    .unwrap();
    let got: Vec<String> = at_b.0.lock().await.iter().map(|(_, h)| h.clone()).collect();
    let sent: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
    assert_eq!(got, sent);
    assert!(at_b.0.lock().await.iter().all(|(from, _)| *from == 1));

    // Node 1 restarted (a higher incarnation spoke); its old process is not heard any more.
    let restarted = fanout(&redis, 1, 11, |_| {}).await;
    restarted.bind(Arc::new(Received::default()));
    assert!(restarted.send(&peer(2), envelope("from the new one".into())));
    eventually(
        Duration::from_secs(10),
        "the new incarnation heard",
        || async {
            at_b.0
                .lock()
                .await
                .iter()
                .any(|(_, h)| h == "from the new one")
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(a.send(&peer(2), envelope("from the old one".into())));
    // Prove the channel still works after the stale frame: the new incarnation is heard again.
    assert!(restarted.send(&peer(2), envelope("again".into())));
    eventually(
        Duration::from_secs(10),
        "the new incarnation heard again",
        || async {
            at_b.0
                .lock()
                .await
                .iter()
                .any(|(_, h)| h == "again")
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(!at_b
        .0
        .lock()
        .await
        .iter()
        .any(|(_, h)| h == "from the old one"));
    a.shutdown().await;
    b.shutdown().await;
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_peer_queue_fills_and_drops_instead_of_blocking() {
    let mut redis = RedisServer::start().await.unwrap();
    let a = fanout(&redis, 1, 1, |s| s.queue_capacity = 16).await;
    a.bind(Arc::new(Received::default()));
    redis.kill().await.unwrap();
    let accepted = (0..100)
        .filter(|i| a.send(&peer(2), envelope(format!("m{i}"))))
        .count();
    assert!(accepted < 100, "nothing was dropped");
    assert!(
        accepted >= 16,
        "the queue took fewer than its capacity: {accepted}"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_envelopes_travel_over_sharded_pubsub_in_order() {
    let cluster = switchboard_testkit::redis::RedisCluster::start(3)
        .await
        .unwrap();
    let connect = |node: u64| {
        let url = cluster.url();
        async move {
            RedisFanout::connect(FanoutSettings::new(url, node, 1))
                .await
                .unwrap()
        }
    };
    // Gateways whose channels hash to different slots (the node id is the hash tag).
    let (a, b) = (connect(1).await, connect(7).await);
    let at_b = Arc::new(Received::default());
    a.bind(Arc::new(Received::default()));
    b.bind(at_b.clone());
    for i in 0..500 {
        assert!(a.send(&peer(7), envelope(format!("m{i}"))));
    }
    eventually(Duration::from_secs(20), "every envelope at b", || async {
        (at_b.0.lock().await.len() == 500).then_some(())
    })
    .await
    .unwrap();
    let got: Vec<String> = at_b.0.lock().await.iter().map(|(_, h)| h.clone()).collect();
    assert_eq!(got, (0..500).map(|i| format!("m{i}")).collect::<Vec<_>>());
    a.shutdown().await;
    b.shutdown().await;
}
