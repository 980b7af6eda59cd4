//! Two and three fan-out nodes over real gRPC on loopback: one link per pair carries messages
//! both ways, in order; links come back after a peer restarts.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use switchboard_cluster::proto::{envelope, payload, Envelope, JsonInvocation, Payload};
use switchboard_cluster::{Fanout, FanoutConfig, Inbound, PeerInfo};
use switchboard_net::{Channels, ClusterIdentity, ClusterKeys, ClusterSecurity};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Collect {
    got: Mutex<Vec<(u64, String)>>,
}

#[async_trait]
impl Inbound for Collect {
    async fn deliver(&self, from: u64, envelope: Envelope) {
        self.got.lock().push((from, envelope.hub));
    }
}

struct Node {
    fanout: Fanout,
    inbox: Arc<Collect>,
    info: PeerInfo,
    stop: CancellationToken,
}

async fn node(id: u64, incarnation: u64, listener: Option<TcpListener>) -> Node {
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let address = listener.local_addr().unwrap().to_string();
    let inbox = Arc::new(Collect::default());
    let security = ClusterSecurity::new(
        ClusterKeys::new(&["test-cluster-key"]).unwrap(),
        ClusterIdentity {
            node: id,
            incarnation,
        },
    );
    let fanout = Fanout::new(
        FanoutConfig::new(id, incarnation),
        inbox.clone(),
        Channels::new(security.clone()),
    );
    let stop = CancellationToken::new();
    let service = fanout.service();
    let token = stop.clone();
    tokio::spawn(async move {
        switchboard_net::server_builder()
            .layer(security.server_layer())
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                token.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    Node {
        fanout,
        inbox,
        info: PeerInfo {
            node: id,
            incarnation,
            address,
        },
        stop,
    }
}

fn message(hub: String) -> Envelope {
    Envelope {
        hub,
        recipients: None,
        body: Some(envelope::Body::Message(Payload {
            source: Some(payload::Source::Json(JsonInvocation {
                target: "t".into(),
                arguments_json: "[]".into(),
            })),
        })),
        min_applied_index: 0,
        sent_at_micros: 0,
    }
}

async fn wait_for(inbox: &Collect, count: usize) -> Vec<(u64, String)> {
    for _ in 0..200 {
        if inbox.got.lock().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    inbox.got.lock().clone()
}

#[tokio::test]
async fn one_link_carries_ordered_messages_both_ways() {
    let a = node(1, 10, None).await;
    let b = node(2, 20, None).await;
    a.fanout.set_peers(&[a.info.clone(), b.info.clone()]);
    b.fanout.set_peers(&[a.info.clone(), b.info.clone()]);
    for i in 0..500 {
        assert!(a.fanout.send(&b.info, message(format!("a{i}"))));
        assert!(b.fanout.send(&a.info, message(format!("b{i}"))));
    }
    let at_b = wait_for(&b.inbox, 500).await;
    let at_a = wait_for(&a.inbox, 500).await;
    assert_eq!(
        at_b,
        (0..500).map(|i| (1, format!("a{i}"))).collect::<Vec<_>>()
    );
    assert_eq!(
        at_a,
        (0..500).map(|i| (2, format!("b{i}"))).collect::<Vec<_>>()
    );
    assert!(a.fanout.is_connected(2) && b.fanout.is_connected(1));
}

#[tokio::test]
async fn messages_queued_before_the_link_is_up_are_delivered() {
    let b = node(2, 20, None).await;
    let a = node(1, 10, None).await;
    // b (the higher id) sends first: the queue waits until a dials.
    for i in 0..10 {
        b.fanout.send(&a.info, message(format!("early{i}")));
    }
    a.fanout.set_peers(std::slice::from_ref(&b.info));
    let got = wait_for(&a.inbox, 10).await;
    assert_eq!(got.len(), 10, "{got:?}");
}

#[tokio::test]
async fn the_link_comes_back_after_the_peer_restarts() {
    let a = node(1, 10, None).await;
    let b = node(2, 20, None).await;
    a.fanout.set_peers(std::slice::from_ref(&b.info));
    a.fanout.send(&b.info, message("before".into()));
    assert_eq!(wait_for(&b.inbox, 1).await.len(), 1);

    // Restart b on the same address with a new incarnation.
    let address = b.info.address.clone();
    b.stop.cancel();
    b.fanout.shutdown().await;
    drop(b);
    let mut listener = None;
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(&address).await {
            listener = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b2 = node(2, 21, Some(listener.expect("rebind"))).await;
    a.fanout.set_peers(std::slice::from_ref(&b2.info));
    let mut delivered = false;
    for _ in 0..200 {
        a.fanout.send(&b2.info, message("after".into()));
        if !b2.inbox.got.lock().is_empty() {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(delivered, "no message reached the restarted peer");
}

#[tokio::test]
async fn a_stale_incarnation_is_refused() {
    let b = node(2, 20, None).await;
    // b knows node 1 at incarnation 11; a process claiming incarnation 10 is stale.
    b.fanout.set_peers(&[PeerInfo {
        node: 1,
        incarnation: 11,
        address: String::new(),
    }]);
    let stale = node(1, 10, None).await;
    stale.fanout.set_peers(std::slice::from_ref(&b.info));
    stale.fanout.send(&b.info, message("stale".into()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.inbox.got.lock().is_empty());
    assert!(!stale.fanout.is_connected(2));
}

#[tokio::test]
async fn a_link_to_an_address_that_changed_hands_delivers_nothing_there() {
    let a = node(1, 10, None).await;
    let c = node(3, 30, None).await;
    // a still believes node 2 lives at the address node 3 now has.
    let stale = PeerInfo {
        node: 2,
        incarnation: 20,
        address: c.info.address.clone(),
    };
    a.fanout.set_peers(&[stale.clone(), c.info.clone()]);
    for i in 0..20 {
        a.fanout.send(&stale, message(format!("for-2-{i}")));
    }
    // The real node 3 gets what is meant for it (the path works).
    a.fanout.send(&c.info, message("for-3".into()));
    assert_eq!(wait_for(&c.inbox, 1).await, vec![(1, "for-3".to_string())]);
    // Give a's dialer time for several attempts at the stale address.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !a.fanout.is_connected(2),
        "a link to the wrong node came up"
    );
    // Node 3 never saw node 2's messages, and its own link from a still works.
    a.fanout.send(&c.info, message("for-3-again".into()));
    let got = wait_for(&c.inbox, 2).await;
    assert_eq!(
        got,
        vec![(1, "for-3".to_string()), (1, "for-3-again".to_string())]
    );
}
