//! The cluster listener's cap: a flood of connections that never authenticate cannot lock real
//! peers out — the oldest unauthenticated one makes room for a newcomer.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use switchboard_net::{ClusterIdentity, ClusterKeys, ClusterSecurity, ListenerLimits};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_oldest_unauthenticated_connection_makes_room() {
    let security = ClusterSecurity::new(
        ClusterKeys::new(&["k"]).unwrap(),
        ClusterIdentity {
            node: 1,
            incarnation: 1,
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ListenerLimits {
        max_connections: 2,
        ..ListenerLimits::default()
    };
    let stop = CancellationToken::new();
    let mut incoming = Box::pin(switchboard_net::incoming(
        listener,
        &security,
        limits,
        stop.clone(),
    ));
    // Each accepted connection is read by a task, the way the server would.
    let mut readers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(TcpStream::connect(addr).await.unwrap());
        let mut conn = incoming.next().await.unwrap().unwrap();
        readers.push(tokio::spawn(async move {
            let mut buf = [0u8; 16];
            conn.read(&mut buf).await.map_err(|e| e.kind())
        }));
    }
    // Full. A third connection is accepted: the first one is closed for it.
    clients.push(TcpStream::connect(addr).await.unwrap());
    let third = tokio::time::timeout(Duration::from_secs(5), incoming.next()).await;
    assert!(matches!(third, Ok(Some(Ok(_)))), "the newcomer got a place");
    let first = tokio::time::timeout(Duration::from_secs(5), readers.remove(0))
        .await
        .expect("the oldest connection ends")
        .unwrap();
    assert_eq!(first, Err(std::io::ErrorKind::ConnectionAborted));
    assert!(!readers[0].is_finished(), "the second one is untouched");
    stop.cancel();
}
