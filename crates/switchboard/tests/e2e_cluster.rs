//! Real multi-process clusters on 127.0.0.x: three Raft voters (all-in-one nodes or voter-only
//! stores) and stateless gateways. Every message type crosses nodes over the fan-out streams;
//! leaders, voters and gateways are killed with SIGKILL and the cluster carries on.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const V: &str = "api-version=2022-06-01";

async fn exists(server: &Server, path: &str) -> bool {
    server
        .rest("HEAD", path, None)
        .await
        .map(|r| r.status == 200)
        .unwrap_or(false)
}

/// Four nodes that take clients, on either engine: three `serve` voters and a gateway started
/// with `last` (Raft), or four gateways on one Redis, the last started with `last` (Redis).
async fn four_nodes(engine: Engine, last: &[&str]) -> anyhow::Result<Cluster> {
    let mut cluster = match engine {
        Engine::Raft => Cluster::serve(bin(), 3, &[]).await?,
        Engine::Redis => Cluster::on_redis(bin(), 3, &[]).await?,
    };
    cluster.add_gateway(last).await?;
    Ok(cluster)
}

async fn every_target_type_crosses_nodes(engine: Engine) -> anyhow::Result<()> {
    let cluster = four_nodes(engine, &[]).await?;
    let nodes = cluster.entry_points();
    let (n1, n2, n3, gw) = (nodes[0], nodes[1], nodes[2], nodes[3]);
    let mut js = JsClients::start().await?;
    let c1 = js
        .connect(
            "c1",
            n1,
            ConnectOptions {
                user: Some("alice"),
                ..Default::default()
            },
        )
        .await?;
    let c2 = js
        .connect(
            "c2",
            n2,
            ConnectOptions {
                user: Some("bob"),
                protocol: "messagepack",
                ..Default::default()
            },
        )
        .await?;
    let c3 = js
        .connect(
            "c3",
            gw,
            ConnectOptions {
                user: Some("alice"),
                ..Default::default()
            },
        )
        .await?;

    // Existence checks answer for connections held anywhere.
    for node in [n1, n2, n3, gw] {
        for c in [&c1, &c2, &c3] {
            let path = format!("/api/hubs/chat/connections/{c}?{V}");
            let found = eventually(Duration::from_secs(5), "connection visible", || async {
                exists(node, &path).await.then_some(())
            })
            .await;
            assert!(found.is_ok(), "{c} not visible from {}", node.addr);
        }
    }

    // Hub broadcast from a node holding none of the clients.
    send_ok(n3, &format!("/api/hubs/chat/:send?{V}"), json!(["all"])).await?;
    for name in ["c1", "c2", "c3"] {
        assert_eq!(
            js.next_message(name).await?.args,
            vec![json!("all")],
            "{name}"
        );
    }
    // User: both of alice's connections, on two different nodes.
    send_ok(
        n3,
        &format!("/api/hubs/chat/users/alice/:send?{V}"),
        json!(["alice"]),
    )
    .await?;
    assert_eq!(js.next_message("c1").await?.args, vec![json!("alice")]);
    assert_eq!(js.next_message("c3").await?.args, vec![json!("alice")]);
    // Connection: straight to its node.
    send_ok(
        gw,
        &format!("/api/hubs/chat/connections/{c2}/:send?{V}"),
        json!(["c2 only"]),
    )
    .await?;
    assert_eq!(js.next_message("c2").await?.args, vec![json!("c2 only")]);
    // Group: joined through one node, sent through another.
    expect_status(
        n2,
        "PUT",
        &format!("/api/hubs/chat/groups/g/connections/{c1}?{V}"),
        200,
    )
    .await?;
    expect_status(
        n3,
        "PUT",
        &format!("/api/hubs/chat/groups/g/connections/{c3}?{V}"),
        200,
    )
    .await?;
    send_ok(
        gw,
        &format!("/api/hubs/chat/groups/g/:send?{V}"),
        json!(["group"]),
    )
    .await?;
    assert_eq!(js.next_message("c1").await?.args, vec![json!("group")]);
    assert_eq!(js.next_message("c3").await?.args, vec![json!("group")]);
    // User group: bob added through the gateway, message through node 1.
    expect_status(
        gw,
        "PUT",
        &format!("/api/hubs/chat/users/bob/groups/ug?{V}"),
        200,
    )
    .await?;
    send_ok(
        n1,
        &format!("/api/hubs/chat/groups/ug/:send?{V}"),
        json!(["user group"]),
    )
    .await?;
    assert_eq!(js.next_message("c2").await?.args, vec![json!("user group")]);
    js.expect_silence("c1", SHORT).await?;
    js.expect_silence("c3", SHORT).await?;

    // Closing a connection held by another node.
    expect_status(
        n1,
        "DELETE",
        &format!("/api/hubs/chat/connections/{c3}?reason=remote+close&{V}"),
        200,
    )
    .await?;
    assert!(js
        .wait_closed("c3")
        .await?
        .unwrap_or_default()
        .contains("remote close"));
    // ... and every connection of a user, across nodes.
    expect_status(
        n2,
        "POST",
        &format!("/api/hubs/chat/users/alice/:closeConnections?{V}"),
        204,
    )
    .await?;
    js.wait_closed("c1").await?;
    assert_eq!(js.state("c2").await?.0, "Connected");
    if engine == Engine::Redis {
        // The messages crossed gateways over Redis pub/sub, not over gRPC links.
        let mut published = 0.0;
        for node in &nodes {
            published += node
                .metric("switchboard_redis_fanout_published_total")
                .await
                .unwrap_or(0.0);
            let linked = node.metric("switchboard_cluster_peers").await;
            assert!(
                matches!(linked, None | Some(0.0)),
                "a gRPC link is up: {linked:?}"
            );
        }
        assert!(published > 0.0, "nothing was published over pub/sub");
    }
    Ok(())
}

async fn per_sender_order_holds_across_nodes(engine: Engine) -> anyhow::Result<()> {
    let cluster = four_nodes(engine, &[]).await?;
    let nodes = cluster.entry_points();
    let mut js = JsClients::start().await?;
    js.connect(
        "a",
        nodes[0],
        ConnectOptions {
            user: Some("u"),
            ..Default::default()
        },
    )
    .await?;
    js.connect(
        "b",
        nodes[3],
        ConnectOptions {
            user: Some("u"),
            protocol: "messagepack",
            ..Default::default()
        },
    )
    .await?;
    let sender = nodes[2];
    for i in 0..150 {
        let path = match i % 3 {
            0 => format!("/api/hubs/chat/:send?{V}"),
            1 => format!("/api/hubs/chat/users/u/:send?{V}"),
            _ => "/api/v1/hubs/chat".to_owned(),
        };
        assert_status(
            &sender
                .rest("POST", &path, Some(body("message", json!([i]))))
                .await?,
            202,
        );
    }
    for name in ["a", "b"] {
        for i in 0..150 {
            assert_eq!(
                js.next_message(name).await?.args,
                vec![json!(i)],
                "client {name}"
            );
        }
    }
    Ok(())
}

async fn add_members(server: &Server, from: usize, to: usize) -> anyhow::Result<()> {
    for i in from..to {
        let r = server
            .rest(
                "PUT",
                &format!("/api/hubs/chat/users/user{i}/groups/g{}?{V}", i % 5),
                None,
            )
            .await?;
        assert_status(&r, 200);
    }
    Ok(())
}

async fn all_members_present(server: &Server, count: usize) -> bool {
    for i in 0..count {
        if !exists(
            server,
            &format!("/api/hubs/chat/users/user{i}/groups/g{}?{V}", i % 5),
        )
        .await
        {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn losing_the_leader_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::serve(bin(), 3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let other = (leader + 1) % 3;
    add_members(&cluster.voters[other], 0, 50).await?;
    add_members(&cluster.voters[leader], 50, 100).await?;

    cluster.voters[leader].kill().await?;
    let killed_at = Instant::now();
    // Writes through a surviving node resume once a new leader is elected.
    let survivor = &cluster.voters[other];
    until_status(
        survivor,
        "PUT",
        &format!("/api/hubs/chat/users/probe/groups/p?{V}"),
        200,
        Duration::from_secs(5),
        "writes resume after the leader died",
    )
    .await?;
    eprintln!(
        "writes resumed {:?} after the leader was killed",
        killed_at.elapsed()
    );
    add_members(survivor, 100, 120).await?;
    for v in cluster.voters.iter().filter(|v| v.is_running()) {
        assert!(
            all_members_present(v, 120).await,
            "a write acknowledged before the failover is missing on {}",
            v.addr
        );
    }

    // The old leader restarts from its data dir and catches up.
    cluster.voters[leader].restart().await?;
    let back = &cluster.voters[leader];
    eventually(
        Duration::from_secs(15),
        "restarted voter caught up",
        || async { all_members_present(back, 120).await.then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn each_voter_killed_in_turn_catches_up_by_log_or_snapshot() -> anyhow::Result<()> {
    // Small snapshots that purge the whole log: a voter that was away must install a snapshot.
    let mut cluster = Cluster::serve(
        bin(),
        3,
        &["--snapshot-every", "25", "--snapshot-keep-logs", "0"],
    )
    .await?;
    let mut written = 0;
    for victim in 0..3 {
        cluster.voters[victim].kill().await?;
        let writer = (victim + 1) % 3;
        eventually(
            Duration::from_secs(10),
            "writes accepted with one voter down",
            || async {
                let r = cluster.voters[writer]
                    .rest(
                        "PUT",
                        &format!("/api/hubs/chat/users/probe/groups/p?{V}"),
                        None,
                    )
                    .await
                    .ok()?;
                (r.status == 200).then_some(())
            },
        )
        .await?;
        add_members(&cluster.voters[writer], written, written + 60).await?;
        written += 60;
        cluster.voters[victim].restart().await?;
        let back = &cluster.voters[victim];
        eventually(
            Duration::from_secs(20),
            "restarted voter caught up",
            || async { all_members_present(back, written).await.then_some(()) },
        )
        .await?;
    }
    Ok(())
}

async fn a_killed_gateway_s_connections_vanish_within_its_lease(
    engine: Engine,
) -> anyhow::Result<()> {
    let mut cluster = four_nodes(engine, &["--lease", "3"]).await?;
    let doomed = cluster.gateways.len() - 1;
    let mut js = JsClients::start().await?;
    let id = js
        .connect(
            "doomed",
            &cluster.gateways[doomed],
            ConnectOptions {
                user: Some("ghost"),
                ..Default::default()
            },
        )
        .await?;
    let path = format!("/api/hubs/chat/connections/{id}?{V}");
    {
        let n1 = cluster.entry_points()[0];
        eventually(Duration::from_secs(5), "connection visible", || async {
            exists(n1, &path).await.then_some(())
        })
        .await?;
        expect_status(
            n1,
            "PUT",
            &format!("/api/hubs/chat/groups/room/connections/{id}?{V}"),
            200,
        )
        .await?;
    }

    cluster.gateways[doomed].kill().await?;
    let n1 = cluster.entry_points()[0];
    let killed_at = Instant::now();
    eventually(
        Duration::from_secs(10),
        "connection gone after the lease",
        || async { (!exists(n1, &path).await).then_some(()) },
    )
    .await?;
    eprintln!(
        "connection vanished {:?} after the gateway was killed (lease 3 s)",
        killed_at.elapsed()
    );
    assert!(!exists(n1, &format!("/api/hubs/chat/users/ghost?{V}")).await);
    assert!(!exists(n1, &format!("/api/hubs/chat/groups/room?{V}")).await);
    Ok(())
}

#[tokio::test]
async fn stateless_gateways_in_front_of_store_voters() -> anyhow::Result<()> {
    let mut cluster = Cluster::stores(bin(), 3, &[]).await?;
    cluster.add_gateway(&[]).await?;
    cluster.add_gateway(&[]).await?;
    let mut js = JsClients::start().await?;
    let a = js
        .connect(
            "a",
            &cluster.gateways[0],
            ConnectOptions {
                user: Some("ua"),
                ..Default::default()
            },
        )
        .await?;
    js.connect(
        "b",
        &cluster.gateways[1],
        ConnectOptions {
            user: Some("ub"),
            ..Default::default()
        },
    )
    .await?;
    let (g0, g1) = (&cluster.gateways[0], &cluster.gateways[1]);
    expect_status(
        g1,
        "PUT",
        &format!("/api/hubs/chat/groups/room/connections/{a}?{V}"),
        200,
    )
    .await?;
    send_ok(
        g1,
        &format!("/api/hubs/chat/groups/room/:send?{V}"),
        json!(["room"]),
    )
    .await?;
    assert_eq!(js.next_message("a").await?.args, vec![json!("room")]);
    send_ok(
        g0,
        &format!("/api/hubs/chat/users/ub/:send?{V}"),
        json!(["to b"]),
    )
    .await?;
    assert_eq!(js.next_message("b").await?.args, vec![json!("to b")]);

    // The leader voter dies: writes through the gateways resume.
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    cluster.voters[leader].kill().await?;
    until_status(
        g0,
        "PUT",
        &format!("/api/hubs/chat/users/ua/groups/after?{V}"),
        200,
        Duration::from_secs(5),
        "writes resume through a gateway",
    )
    .await?;
    send_ok(
        g1,
        &format!("/api/hubs/chat/groups/after/:send?{V}"),
        json!(["after failover"]),
    )
    .await?;
    assert_eq!(
        js.next_message("a").await?.args,
        vec![json!("after failover")]
    );
    Ok(())
}

async fn a_gateway_without_its_store_keeps_delivering_and_is_not_ready(
    engine: Engine,
) -> anyhow::Result<()> {
    let mut cluster = match engine {
        Engine::Raft => Cluster::stores(bin(), 3, &[]).await?,
        Engine::Redis => Cluster::on_redis(bin(), 0, &[]).await?,
    };
    cluster.add_gateway(&[]).await?;
    let mut js = JsClients::start().await?;
    js.connect("a", &cluster.gateways[0], ConnectOptions::default())
        .await?;
    for v in &cluster.voters {
        v.pause().await?;
    }
    if let Some(redis) = cluster.redis() {
        redis.kill().await?;
    }
    let gw = &cluster.gateways[0];
    until_status(
        gw,
        "GET",
        "/readyz",
        503,
        Duration::from_secs(10),
        "gateway reports not ready",
    )
    .await?;
    send_ok(
        gw,
        &format!("/api/hubs/chat/:send?{V}"),
        json!(["still delivering"]),
    )
    .await?;
    assert_eq!(
        js.next_message("a").await?.args,
        vec![json!("still delivering")]
    );
    for v in &cluster.voters {
        v.resume()?;
    }
    if let Some(redis) = cluster.redis() {
        redis.restart().await?;
    }
    cluster.gateways[0].wait_ready().await?;
    Ok(())
}

#[tokio::test]
async fn a_partitioned_minority_stops_acknowledging_writes() -> anyhow::Result<()> {
    let cluster = Cluster::serve_partitionable(bin(), 3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    add_members(&cluster.voters[leader], 0, 20).await?;

    // Cut the leader off from both followers: it is now a minority of one.
    cluster.isolate(leader);
    let minority = &cluster.voters[leader];
    let r = minority
        .rest(
            "PUT",
            &format!("/api/hubs/chat/users/minority/groups/m?{V}"),
            None,
        )
        .await?;
    assert!(
        r.status >= 500,
        "the minority acknowledged a write: {} {}",
        r.status,
        r.body
    );
    assert!(
        r.json().is_ok_and(|d| d["code"].is_string()),
        "error detail: {}",
        r.body
    );

    // It stops reporting itself ready: no quorum confirms its leadership any more.
    until_status(
        minority,
        "GET",
        "/readyz",
        503,
        Duration::from_secs(10),
        "the isolated node reports not ready",
    )
    .await?;

    // The majority elects a leader and goes on acknowledging writes.
    let majority = &cluster.voters[(leader + 1) % 3];
    until_status(
        majority,
        "PUT",
        &format!("/api/hubs/chat/users/probe/groups/p?{V}"),
        200,
        Duration::from_secs(10),
        "the majority accepts writes",
    )
    .await?;
    add_members(majority, 20, 40).await?;

    // Healed: the old leader follows again and has every acknowledged write, and not the one it
    // could never commit.
    cluster.heal();
    eventually(
        Duration::from_secs(20),
        "the old leader caught up",
        || async { all_members_present(minority, 40).await.then_some(()) },
    )
    .await?;
    assert!(
        !exists(
            minority,
            &format!("/api/hubs/chat/users/minority/groups/m?{V}")
        )
        .await
    );
    assert!(
        !exists(
            majority,
            &format!("/api/hubs/chat/users/minority/groups/m?{V}")
        )
        .await
    );
    Ok(())
}

/// The connection ids of a group listing, following `nextLink` page by page.
async fn listed_members(server: &Server, group: &str, page: usize) -> anyhow::Result<Vec<String>> {
    let mut path = format!(
        "/api/hubs/chat/groups/{group}/connections?maxpagesize={page}&api-version=2024-12-01"
    );
    let mut ids = Vec::new();
    loop {
        let response = server.rest("GET", &path, None).await?;
        assert_status(&response, 200);
        let body: serde_json::Value = serde_json::from_str(&response.body)?;
        let value = body["value"].as_array().cloned().unwrap_or_default();
        assert!(value.len() <= page, "a page longer than asked: {body}");
        ids.extend(
            value
                .iter()
                .filter_map(|m| m["connectionId"].as_str().map(str::to_owned)),
        );
        match body["nextLink"].as_str() {
            Some(link) => {
                let at = link.find("/api/").expect("a link to the API");
                path = link[at..].to_owned();
            }
            None => return Ok(ids),
        }
    }
}

#[tokio::test]
async fn connections_live_on_their_gateway_and_never_in_the_store() -> anyhow::Result<()> {
    let cluster = Cluster::serve(bin(), 3, &[]).await?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    let (n1, n2, n3) = (&cluster.voters[0], &cluster.voters[1], &cluster.voters[2]);
    // A durable entry first: alice joins "room" through node 1.
    expect_status(
        n1,
        "PUT",
        &format!("/api/hubs/chat/users/alice/groups/room?{V}"),
        200,
    )
    .await?;
    let mut js = JsClients::start().await?;
    let alice = js
        .connect(
            "alice",
            n2,
            ConnectOptions {
                user: Some("alice"),
                ..Default::default()
            },
        )
        .await?;
    let mut anonymous = Vec::new();
    for i in 0..3 {
        let name = format!("anon{i}");
        let id = js.connect(&name, n3, ConnectOptions::default()).await?;
        anonymous.push((name, id));
    }
    // Alice's new connection on node 2 joined "room" from the store's entry; it is visible,
    // with its user, from every node at once (no view to catch up).
    for node in [n1, n2, n3] {
        assert!(exists(node, &format!("/api/hubs/chat/connections/{alice}?{V}")).await);
        assert!(exists(node, &format!("/api/hubs/chat/users/alice?{V}")).await);
        assert!(exists(node, &format!("/api/hubs/chat/groups/room?{V}")).await);
    }
    // Connections on node 3 join "room" through node 1; the listing through node 2 merges the
    // gateways' members in id order, page by page.
    for (_, id) in &anonymous {
        expect_status(
            n1,
            "PUT",
            &format!("/api/hubs/chat/groups/room/connections/{id}?{V}"),
            200,
        )
        .await?;
    }
    let mut expected: Vec<String> = anonymous.iter().map(|(_, id)| id.clone()).collect();
    expected.push(alice.clone());
    expected.sort();
    assert_eq!(listed_members(n2, "room", 2).await?, expected);
    assert_eq!(listed_members(n1, "room", 200).await?, expected);

    // The store holds the entry and the gateways' leases, and not one connection.
    let state = store_state(cluster.cluster_addrs[0]).await?;
    let stats = state.stats();
    assert_eq!(stats.connections, 0, "{stats:?}");
    assert_eq!(stats.user_group_entries, 1, "{stats:?}");
    assert_eq!(stats.nodes, 3, "{stats:?}");

    // Removing alice from the group through node 3 takes her connection on node 2 out.
    expect_status(
        n3,
        "DELETE",
        &format!("/api/hubs/chat/users/alice/groups/room?{V}"),
        204,
    )
    .await?;
    send_ok(
        n1,
        &format!("/api/hubs/chat/groups/room/:send?{V}"),
        json!(["room"]),
    )
    .await?;
    send_ok(
        n1,
        &format!("/api/hubs/chat/users/alice/:send?{V}"),
        json!(["direct"]),
    )
    .await?;
    for (name, _) in &anonymous {
        assert_eq!(
            js.next_message(name).await?.args,
            vec![json!("room")],
            "{name}"
        );
    }
    // The same sender's later message arrives; the group message, sent first, did not.
    assert_eq!(js.next_message("alice").await?.args, vec![json!("direct")]);
    // Gone everywhere once closed.
    expect_status(
        n1,
        "DELETE",
        &format!("/api/hubs/chat/connections/{alice}?{V}"),
        200,
    )
    .await?;
    js.wait_closed("alice").await?;
    eventually(
        Duration::from_secs(5),
        "alice gone from every node",
        || async {
            let mut gone = true;
            for node in [n1, n2, n3] {
                gone &= !exists(node, &format!("/api/hubs/chat/users/alice?{V}")).await;
            }
            gone.then_some(())
        },
    )
    .await?;
    Ok(())
}

async fn received(server: &Server) -> f64 {
    server
        .metric("switchboard_cluster_received_messages_total")
        .await
        .unwrap_or(0.0)
}

#[tokio::test]
async fn messages_go_only_to_gateways_serving_their_hub() -> anyhow::Result<()> {
    let cluster = Cluster::serve(bin(), 3, &[]).await?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    let (n1, n2, n3) = (&cluster.voters[0], &cluster.voters[1], &cluster.voters[2]);
    let mut js = JsClients::start().await?;
    js.connect("first", n1, ConnectOptions::default()).await?;
    let other = ConnectOptions {
        hub: "other",
        ..Default::default()
    };
    js.connect("watcher", n3, other).await?;
    // A broadcast to chat through node 2, then one to other: node 3 holds only other's
    // watcher, and one link keeps node 2's order, so once the watcher has the second, node 3
    // has received the first too if it was sent there at all. Until node 2 pulled node 3's
    // hubs it is; afterwards never.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut round = 0;
    loop {
        round += 1;
        let before = received(n3).await;
        send_ok(n2, &format!("/api/hubs/chat/:send?{V}"), json!([round])).await?;
        send_ok(n2, &format!("/api/hubs/other/:send?{V}"), json!([round])).await?;
        assert_eq!(js.next_message("watcher").await?.args, vec![json!(round)]);
        assert_eq!(js.next_message("first").await?.args, vec![json!(round)]);
        let envelopes = received(n3).await - before;
        if envelopes == 1.0 {
            break;
        }
        assert_eq!(envelopes, 2.0, "round {round}");
        assert!(
            Instant::now() < deadline,
            "node 3 still gets chat's messages"
        );
    }
    // Node 3's first connection of chat is announced before its handshake is answered: a
    // broadcast right after reaches it.
    js.connect("late", n3, ConnectOptions::default()).await?;
    send_ok(n2, &format!("/api/hubs/chat/:send?{V}"), json!(["after"])).await?;
    assert_eq!(js.next_message("late").await?.args, vec![json!("after")]);
    assert_eq!(js.next_message("first").await?.args, vec![json!("after")]);
    Ok(())
}

#[tokio::test]
async fn a_gateway_that_stops_answering_holds_up_nothing_and_gets_its_changes_later(
) -> anyhow::Result<()> {
    // A lease long enough that the frozen gateway keeps it.
    let cluster = Cluster::serve(bin(), 3, &["--lease", "60"]).await?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    let (n1, n2, n3) = (&cluster.voters[0], &cluster.voters[1], &cluster.voters[2]);
    let mut js = JsClients::start().await?;
    let alice = ConnectOptions {
        user: Some("alice"),
        ..Default::default()
    };
    js.connect("alice", n3, alice).await?;
    let bob = js.connect("bob", n1, ConnectOptions::default()).await?;
    assert!(exists(n1, &format!("/api/hubs/chat/users/alice?{V}")).await);

    n3.pause().await?;
    // Questions are answered by the gateways that answer, within the call timeout.
    let asked = Instant::now();
    assert!(!exists(n1, &format!("/api/hubs/chat/users/alice?{V}")).await);
    assert!(exists(n1, &format!("/api/hubs/chat/connections/{bob}?{V}")).await);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    // A user-group change is written (two voters of three answer) and answered.
    expect_status(
        n1,
        "PUT",
        &format!("/api/hubs/chat/users/alice/groups/room?{V}"),
        200,
    )
    .await?;
    n3.resume()?;
    // The frozen gateway gets the change when it answers again: alice's connection joins.
    eventually(
        Duration::from_secs(15),
        "alice's connection in room",
        || async {
            exists(n2, &format!("/api/hubs/chat/groups/room?{V}"))
                .await
                .then_some(())
        },
    )
    .await?;
    send_ok(
        n2,
        &format!("/api/hubs/chat/groups/room/:send?{V}"),
        json!(["late"]),
    )
    .await?;
    assert_eq!(js.next_message("alice").await?.args, vec![json!("late")]);
    Ok(())
}

on_every_engine!(
    every_target_type_crosses_nodes,
    per_sender_order_holds_across_nodes,
    a_killed_gateway_s_connections_vanish_within_its_lease,
    a_gateway_without_its_store_keeps_delivering_and_is_not_ready,
);
