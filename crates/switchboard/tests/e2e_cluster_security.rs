//! The cluster plane under attack: real clusters of processes on 127.0.0.x, and a gRPC client
//! generated from `proto/` playing an outsider on the network — with no credentials, with a
//! wrong key, and with the right key but claiming another node — plus a vote storm, an
//! oversized message, silent sockets, a node with a wrong key, and mutual TLS. Every attempt is
//! refused, the cluster stays healthy and loses no acknowledged write.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, LogId, Vote};
use serde_json::json;
use switchboard_membership::Command;
use switchboard_proto::v1::fanout_client::FanoutClient;
use switchboard_proto::v1::presence_client::PresenceClient;
use switchboard_proto::v1::raft_client::RaftClient;
use switchboard_proto::v1::store_client::StoreClient;
use switchboard_proto::v1::{
    peer_frame, Hello, PeerFrame, RaftRequest, StatusRequest, WatchRequest, WriteRequest,
};
use tonic::transport::Channel;
use tonic::Code;

const V: &str = "api-version=2022-06-01";

fn raft_payload<T: serde::Serialize>(request: &T) -> RaftRequest {
    RaftRequest {
        payload: rmp_serde::to_vec(request).expect("encode"),
        cluster_id: String::new(),
    }
}

fn vote_request(term: u64, candidate: u64) -> RaftRequest {
    raft_payload(&VoteRequest::new(
        Vote::new(term, candidate),
        Some(LogId::new(
            CommittedLeaderId::new(term.min(1 << 40), candidate),
            1 << 40,
        )),
    ))
}

fn append_request(term: u64, leader: u64) -> RaftRequest {
    raft_payload(&AppendEntriesRequest::<switchboard_store::TypeConfig> {
        vote: Vote::new_committed(term, leader),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    })
}

fn write_request(commands: &[Command]) -> WriteRequest {
    WriteRequest {
        commands: rmp_serde::to_vec(commands).expect("encode"),
    }
}

fn poison_commands() -> Vec<Command> {
    vec![
        Command::NodeHeartbeat {
            node: 1,
            incarnation: 1 << 63,
            address: "10.66.66.66:1".into(),
            lease_ms: 3_600_000,
        },
        Command::NodeLeft {
            node: 2,
            incarnation: 1 << 62,
        },
    ]
}

/// Every kind of call the cluster plane serves, made with `credentials` against `addr`;
/// returns the status code each one got (`Ok` if it succeeded).
async fn probe(
    addr: SocketAddr,
    credentials: &Credentials,
    claim: u64,
) -> Vec<(&'static str, Code)> {
    let channel = channel(addr).await;
    let mut store = StoreClient::new(channel.clone());
    let mut raft = RaftClient::new(channel.clone());
    let mut presence = PresenceClient::new(channel.clone());
    let mut fanout = FanoutClient::new(channel);
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    let mut results = Vec::new();
    results.push((
        "Store.Status",
        code(
            store
                .status(credentials.request(StatusRequest {}))
                .await
                .map(drop),
        ),
    ));
    let watch = match store.watch(credentials.request(WatchRequest {})).await {
        // Reading even one event is a leak.
        Ok(mut stream) => match stream.get_mut().message().await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(tonic::Status::unknown("empty")),
            Err(status) => Err(status),
        },
        Err(status) => Err(status),
    };
    results.push(("Store.Watch", code(watch)));
    results.push((
        "Store.Write",
        code(
            store
                .write(credentials.request(write_request(&poison_commands())))
                .await
                .map(drop),
        ),
    ));
    let hello = PeerFrame {
        frame: Some(peer_frame::Frame::Hello(Hello {
            node_id: claim,
            incarnation: 1 << 62,
            target_node_id: 0,
        })),
    };
    let link = fanout
        .link(credentials.request(futures::stream::iter(vec![hello])))
        .await;
    let link = match link {
        Ok(mut stream) => match stream.get_mut().message().await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(tonic::Status::unknown("empty")),
            Err(status) => Err(status),
        },
        Err(status) => Err(status),
    };
    results.push(("Fanout.Link", code(link)));
    let query = switchboard_proto::v1::PresenceQuery {
        hub: "chat".into(),
        what: Some(switchboard_proto::v1::presence_query::What::User(
            "alice".into(),
        )),
    };
    results.push((
        "Presence.Query",
        code(presence.query(credentials.request(query)).await.map(drop)),
    ));
    results.push((
        "Raft.Vote",
        code(
            raft.vote(credentials.request(vote_request(u64::MAX, claim)))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "Raft.AppendEntries",
        code(
            raft.append_entries(credentials.request(append_request(u64::MAX - 1, claim)))
                .await
                .map(drop),
        ),
    ));
    results
}

fn assert_all(results: &[(&str, Code)], allowed: &[Code], what: &str) {
    for (call, code) in results {
        assert!(allowed.contains(code), "{what}: {call} answered {code:?}");
    }
}

async fn current_term(addr: SocketAddr) -> u64 {
    let mut store = StoreClient::new(channel(addr).await);
    store
        .status(Credentials::key(TEST_KEY, 99, 1).request(StatusRequest {}))
        .await
        .expect("status with the right key")
        .into_inner()
        .term
}

#[tokio::test]
async fn an_outsider_can_neither_read_nor_change_the_cluster() -> anyhow::Result<()> {
    let mut cluster = Cluster::serve(bin(), 3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let follower = (leader + 1) % 3;
    // An acknowledged write and a connected client, to check afterwards.
    expect_status(
        &cluster.voters[follower],
        "PUT",
        &format!("/api/hubs/chat/users/alice/groups/before?{V}"),
        200,
    )
    .await?;
    let mut js = JsClients::start().await?;
    js.connect_simple("alice", &cluster.voters[follower], "chat", Some("alice"))
        .await?;

    // The right key, for the positive control of the probe itself.
    let insider = probe(
        cluster.cluster_addrs[follower],
        &Credentials::key(TEST_KEY, 99, 1),
        99,
    )
    .await;
    assert_eq!(insider[0], ("Store.Status", Code::Ok), "{insider:?}");

    for addr in cluster.cluster_addrs.clone() {
        assert_all(
            &probe(addr, &Credentials::None, 2).await,
            &[Code::Unauthenticated],
            "no credentials",
        );
        assert_all(
            &probe(addr, &Credentials::key("not-the-cluster-key", 2, 1), 2).await,
            &[Code::Unauthenticated],
            "a wrong key",
        );
        // The right key, but a node that is no voter acting for voters 1 and 2.
        let impostor = probe(addr, &Credentials::key(TEST_KEY, 77, 1), 2).await;
        for (call, code) in &impostor {
            let expected = match *call {
                // Reading is what a gateway with the key does.
                "Store.Status" | "Store.Watch" | "Presence.Query" => Code::Ok,
                _ => Code::PermissionDenied,
            };
            assert_eq!(
                *code, expected,
                "{call} from a key holder acting for others: {impostor:?}"
            );
        }
        // A key holder claiming voter 2, with terms that cannot be real.
        let voter = Credentials::key(TEST_KEY, 2, 1);
        let mut raft = RaftClient::new(channel(addr).await);
        for (call, result) in [
            (
                "vote",
                raft.vote(voter.request(vote_request(u64::MAX, 2)))
                    .await
                    .map(drop),
            ),
            (
                "append",
                raft.append_entries(voter.request(append_request(u64::MAX - 1, 2)))
                    .await
                    .map(drop),
            ),
        ] {
            let code = result.err().map(|s| s.code());
            // Node 2 refuses itself as a peer only through the same checks.
            assert!(
                matches!(code, Some(Code::InvalidArgument | Code::PermissionDenied)),
                "{call} with term 2^64-1 at {addr}: {code:?}"
            );
        }
        // One message far over the bound.
        let mut store = StoreClient::new(channel(addr).await);
        let huge = WriteRequest {
            commands: vec![0u8; 12 * 1024 * 1024],
        };
        let result = store.write(voter.request(huge)).await;
        assert!(result.is_err(), "a 12 MB write was accepted by {addr}");
    }
    for node in &cluster.voters {
        let refused = node
            .metric("switchboard_cluster_auth_refusals_total")
            .await
            .unwrap_or(0.0);
        assert!(
            refused >= 12.0,
            "refusals counted on {}: {refused}",
            node.addr
        );
    }

    // The poisoned vote never landed: killing and restarting the leader elects a new one.
    let term = current_term(cluster.cluster_addrs[follower]).await;
    assert!(term < 1 << 32, "term {term}");
    cluster.voters[leader].kill().await?;
    let new_leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    assert_ne!(new_leader, leader);
    cluster.voters[leader].restart().await?;
    cluster.check_ready().await?;
    assert!(current_term(cluster.cluster_addrs[follower]).await < 1 << 32);

    // Nothing changed: the acknowledged write is there, the client was never dropped, and the
    // cluster takes new writes.
    for node in cluster.front_doors() {
        until_status(
            node,
            "HEAD",
            &format!("/api/hubs/chat/users/alice/groups/before?{V}"),
            200,
            Duration::from_secs(10),
            "the acknowledged write",
        )
        .await?;
    }
    send_ok(
        &cluster.voters[new_leader],
        &format!("/api/hubs/chat/users/alice/:send?{V}"),
        json!(["still here"]),
    )
    .await?;
    let message = js.next_message("alice").await?;
    assert_eq!(message.args, vec![json!("still here")]);
    Ok(())
}

#[tokio::test]
async fn a_vote_storm_from_a_key_holder_does_not_stop_writes() -> anyhow::Result<()> {
    let cluster = Cluster::serve(bin(), 3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let target = &cluster.voters[(leader + 1) % 3];
    let stop = tokio_util::sync::CancellationToken::new();
    // Voter 3's identity and key, voting for itself at the next terms, 40 times a second at
    // every voter.
    let storm = {
        let stop = stop.clone();
        let addrs = cluster.cluster_addrs.clone();
        tokio::spawn(async move {
            let voter = Credentials::key(TEST_KEY, 3, 1);
            let mut clients = Vec::new();
            for addr in &addrs {
                clients.push(RaftClient::new(channel(*addr).await));
            }
            let mut sent = 0u64;
            let mut term = current_term(addrs[0]).await;
            while !stop.is_cancelled() {
                term += 1;
                for client in &mut clients {
                    let _ = client.vote(voter.request(vote_request(term, 3))).await;
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            sent
        })
    };
    // Writes keep being acknowledged all through the storm.
    let started = std::time::Instant::now();
    let mut writes = 0;
    while started.elapsed() < Duration::from_secs(6) {
        expect_status(
            target,
            "PUT",
            &format!("/api/hubs/chat/users/u{writes}/groups/storm?{V}"),
            200,
        )
        .await?;
        writes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let sent = storm.await?;
    assert!(sent > 300, "the storm sent {sent} votes");
    assert!(writes > 30, "{writes} writes");
    assert_eq!(
        cluster.leader().await,
        Some(leader),
        "the leader was never deposed"
    );
    let refused = cluster.voters[leader]
        .metric("switchboard_raft_rpcs_refused_total")
        .await
        .unwrap_or(0.0);
    assert!(refused > 50.0, "votes refused by the leader: {refused}");
    Ok(())
}

#[tokio::test]
async fn silent_connections_to_the_cluster_port_are_closed() -> anyhow::Result<()> {
    let cluster = Cluster::serve(bin(), 1, &[]).await?;
    let addr = cluster.cluster_addrs[0];
    let mut silent = tokio::net::TcpStream::connect(addr).await?;
    // Positive control: the port answers an authenticated call on another connection.
    current_term(addr).await;
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 64];
        loop {
            match tokio::io::AsyncReadExt::read(&mut silent, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a silent connection stayed open");
    let refused = cluster.voters[0]
        .metric("switchboard_cluster_connections_refused_total")
        .await
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "{refused}");
    Ok(())
}

#[tokio::test]
async fn a_gateway_with_a_wrong_key_never_becomes_ready_and_says_why() -> anyhow::Result<()> {
    let mut cluster = Cluster::stores(bin(), 3, &[]).await?;
    let ip = std::net::Ipv4Addr::new(127, 0, 1, 9);
    let wrong = Server::launch(
        bin(),
        ServerOptions {
            role: Role::Gateway,
            listen: Some(free_addr(ip)?),
            args: vec![
                "--cluster-listen".into(),
                free_addr(ip)?.to_string(),
                "--store".into(),
                cluster.store_list(),
                "--cluster-key".into(),
                "a-key-the-cluster-does-not-know".into(),
            ],
            ..Default::default()
        },
    )
    .await?;
    let logged = eventually(Duration::from_secs(20), "the refusal logged", || async {
        wrong
            .logs()
            .await
            .contains("refused this gateway's cluster credentials")
            .then_some(())
    })
    .await;
    assert!(logged.is_ok(), "{}", wrong.logs().await);
    assert!(
        wrong
            .wait_ready_within(Duration::from_secs(3))
            .await
            .is_err(),
        "a gateway with a wrong key became ready"
    );
    assert!(!wrong
        .logs()
        .await
        .contains("a-key-the-cluster-does-not-know"));
    // The same gateway with the cluster's key is ready (the check above is not vacuous).
    cluster.add_gateway(&[]).await?;
    Ok(())
}

#[tokio::test]
async fn mutual_tls_admits_only_the_cluster_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = pki::Ca::new(dir.path(), "cluster")?;
    let other = pki::Ca::new(dir.path(), "other")?;
    let node = ca.leaf(dir.path(), "node")?;
    let ca_pem = ca.pem.to_string_lossy().to_string();
    let (cert, key) = (
        node.cert.to_string_lossy().to_string(),
        node.key.to_string_lossy().to_string(),
    );
    let tls = [
        "--cluster-tls-cert",
        cert.as_str(),
        "--cluster-tls-key",
        key.as_str(),
        "--cluster-tls-ca",
        ca_pem.as_str(),
    ];
    let mut cluster = Cluster::serve(bin(), 3, &tls).await?;
    cluster.add_gateway(&tls).await?;

    // Delivery across nodes works over mutual TLS.
    let mut js = JsClients::start().await?;
    js.connect_simple("bob", &cluster.voters[0], "chat", Some("bob"))
        .await?;
    send_ok(
        &cluster.gateways[0],
        &format!("/api/hubs/chat/users/bob/:send?{V}"),
        json!(["over tls"]),
    )
    .await?;
    assert_eq!(js.next_message("bob").await?.args, vec![json!("over tls")]);

    let addr = cluster.cluster_addrs[1];
    let with_key = Credentials::key(TEST_KEY, 99, 1);
    let status = |channel: Channel| {
        let with_key = with_key.clone();
        async move {
            StoreClient::new(channel)
                .status(with_key.request(StatusRequest {}))
                .await
                .map(drop)
        }
    };
    // Plain h2c, even with the key: no TLS, no answer.
    assert!(status(channel(addr).await).await.is_err());
    // TLS without a client certificate.
    let no_cert = tls_channel(addr, &ca, None).await;
    assert!(
        status(no_cert).await.is_err(),
        "a peer without a certificate was let in"
    );
    // A certificate from another CA.
    let stranger = other.leaf(dir.path(), "stranger")?;
    let foreign = tls_channel(addr, &ca, Some(&stranger)).await;
    assert!(
        status(foreign).await.is_err(),
        "a certificate from another CA was let in"
    );
    // The cluster CA's certificate with the key: answered (the probes above are not vacuous).
    let member = ca.leaf(dir.path(), "member")?;
    status(tls_channel(addr, &ca, Some(&member)).await).await?;
    Ok(())
}

/// A TLS channel to `addr` that trusts `ca` and presents `leaf` (or no certificate).
async fn tls_channel(addr: SocketAddr, ca: &pki::Ca, leaf: Option<&pki::Leaf>) -> Channel {
    use rustls_pki_types::pem::PemObject;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(&ca.pem).expect("ca") {
        roots.add(cert.expect("pem")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match leaf {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                rustls_pki_types::CertificateDer::pem_file_iter(&leaf.cert)
                    .expect("cert")
                    .map(|c| c.expect("pem"))
                    .collect(),
                rustls_pki_types::PrivateKeyDer::from_pem_file(&leaf.key).expect("key"),
            )
            .expect("client auth"),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let config = std::sync::Arc::new(config);
    let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Channel::from_static("http://localhost").connect_with_connector_lazy(connector)
}
