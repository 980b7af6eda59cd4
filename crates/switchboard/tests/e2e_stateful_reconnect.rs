//! Stateful reconnect with the official client (`withStatefulReconnect()`) through a cuttable TCP
//! proxy: messages sent while the socket is down arrive once, in order, on the same connection;
//! the reconnect window and the queue bound still end a connection that cannot come back.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

use switchboard_testkit::upstream::answer;

const API: &str = "api-version=2022-06-01";

async fn proxied(server: &Server) -> anyhow::Result<Proxy> {
    Proxy::start("127.0.0.1:0".parse()?, server.addr).await
}

async fn send(server: &Server, id: &str, i: usize) -> anyhow::Result<()> {
    let r = server
        .rest(
            "POST",
            &format!("/api/hubs/chat/connections/{id}/:send?{API}"),
            Some(json!({"target": "message", "arguments": [i]})),
        )
        .await?;
    assert_status(&r, 202);
    Ok(())
}

async fn exists(server: &Server, id: &str) -> anyhow::Result<u16> {
    Ok(server
        .rest(
            "HEAD",
            &format!("/api/hubs/chat/connections/{id}?{API}"),
            None,
        )
        .await?
        .status)
}

fn options(proxy: &Proxy) -> ConnectOptions<'static> {
    ConnectOptions {
        stateful_reconnect: true,
        endpoint: Some(format!("http://{}", proxy.addr)),
        ..Default::default()
    }
}

#[tokio::test]
async fn negotiate_offers_stateful_reconnect_when_asked() -> anyhow::Result<()> {
    let server = server().await?;
    let token = server.client_token("chat", None);
    let body: serde_json::Value = reqwest::Client::new()
        .post(server.url("/client/negotiate?hub=chat&negotiateVersion=1&useStatefulReconnect=true"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(body["useStatefulReconnect"], true, "{body}");
    let body: serde_json::Value = reqwest::Client::new()
        .post(server.url("/client/negotiate?hub=chat&negotiateVersion=1"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert!(body.get("useStatefulReconnect").is_none(), "{body}");
    let off = server_with(&["--stateful-reconnect-window", "0"]).await?;
    let body: serde_json::Value = reqwest::Client::new()
        .post(off.url("/client/negotiate?hub=chat&negotiateVersion=1&useStatefulReconnect=true"))
        .bearer_auth(off.client_token("chat", None))
        .send()
        .await?
        .json()
        .await?;
    assert!(
        body.get("useStatefulReconnect").is_none(),
        "turned off: {body}"
    );
    Ok(())
}

#[tokio::test]
async fn messages_sent_while_the_socket_is_down_arrive_once_in_order() -> anyhow::Result<()> {
    let server = &server().await?;

    let proxy = proxied(server).await?;
    let mut js = JsClients::start().await?;
    let id = js.connect("a", server, options(&proxy)).await?;

    // Before the cut: delivered (and, a second later, acknowledged by the client).
    for i in 0..5 {
        send(server, &id, i).await?;
    }
    for i in 0..5 {
        assert_eq!(js.next_message("a").await?.args, vec![json!(i)]);
    }

    proxy.cut_and_hold();
    for i in 5..25 {
        send(server, &id, i).await?;
    }
    // The connection still exists while its client is away.
    assert_eq!(exists(server, &id).await?, 200);
    proxy.heal();

    for i in 5..25 {
        let m = js.next_message("a").await?;
        assert_eq!(m.args, vec![json!(i)], "in order, none lost");
    }
    // Still the same connection, and it works both ways.
    let (state, connection_id) = js.state("a").await?;
    assert_eq!(state, "Connected");
    assert_eq!(connection_id.as_deref(), Some(id.as_str()));
    send(server, &id, 99).await?;
    assert_eq!(js.next_message("a").await?.args, vec![json!(99)]);
    // Nothing was delivered twice: the next message is the one sent next.
    send(server, &id, 100).await?;
    assert_eq!(js.next_message("a").await?.args, vec![json!(100)]);
    let resumed = server
        .metric("switchboard_stateful_reconnects_total{outcome=\"resumed\"}")
        .await;
    assert!(resumed >= Some(1.0), "{resumed:?}");

    // Twice more, with invocations from the client in between (acknowledged by the server,
    // or the client would stall on its own buffer).
    for round in 0..2 {
        proxy.cut_and_hold();
        send(server, &id, 200 + round).await?;
        proxy.heal();
        assert_eq!(js.next_message("a").await?.args, vec![json!(200 + round)]);
        for _ in 0..3 {
            let error = js
                .invoke("a", "echo", json!([round]))
                .await
                .err()
                .map(|e| e.to_string());
            assert!(error.unwrap_or_default().contains("upstream"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_client_that_does_not_come_back_in_the_window_is_closed_once() -> anyhow::Result<()> {
    let upstream = Upstream::start(answer(|_| Reply::status(204))).await?;
    let server = server_with(&[
        "--stateful-reconnect-window",
        "1",
        "--upstream",
        &upstream.url("/api/{hub}/{category}/{event}"),
    ])
    .await?;
    let proxy = proxied(&server).await?;
    let mut js = JsClients::start().await?;
    let id = js.connect("a", &server, options(&proxy)).await?;
    upstream.wait_connection_event(&id, "connected").await?;

    proxy.cut_and_hold();
    // The window passes: the connection ends, once, for the app too.
    eventually(
        Duration::from_secs(15),
        "the connection is gone",
        || async {
            match exists(&server, &id).await {
                Ok(404) => Some(()),
                _ => None,
            }
        },
    )
    .await?;
    upstream.wait_connection_event(&id, "disconnected").await?;
    proxy.heal();
    // The client's reconnect then fails (its token is no longer accepted), and it closes.
    js.wait_closed("a").await?;
    let disconnected = upstream
        .requests()
        .await
        .iter()
        .filter(|r| r.connection_id() == id && r.event() == "disconnected")
        .count();
    assert_eq!(disconnected, 1);
    let expired = server
        .metric("switchboard_stateful_reconnects_total{outcome=\"expired\"}")
        .await;
    assert_eq!(expired, Some(1.0));
    Ok(())
}

#[tokio::test]
async fn a_queue_that_overflows_while_the_client_is_away_closes_the_connection(
) -> anyhow::Result<()> {
    let server = server_with(&["--max-queued-messages", "10"]).await?;
    let proxy = proxied(&server).await?;
    let mut js = JsClients::start().await?;
    let id = js.connect("a", &server, options(&proxy)).await?;
    send(&server, &id, 0).await?;
    assert_eq!(
        js.next_message("a").await?.args,
        vec![json!(0)],
        "works first"
    );

    proxy.cut_and_hold();
    // Wait until the server noticed the socket is gone (it then queues instead of writing).
    eventually(
        Duration::from_secs(10),
        "the server waits for a reconnect",
        || async {
            let _ = send(&server, &id, 1).await;
            server
                .metric("switchboard_slow_consumer_closes_total")
                .await
                .filter(|n| *n >= 1.0)
        },
    )
    .await?;
    eventually(
        Duration::from_secs(10),
        "the connection is gone",
        || async {
            match exists(&server, &id).await {
                Ok(404) => Some(()),
                _ => None,
            }
        },
    )
    .await?;
    proxy.heal();
    js.wait_closed("a").await?;
    Ok(())
}

#[tokio::test]
async fn a_reconnect_that_lands_on_another_gateway_is_relayed_to_the_holder() -> anyhow::Result<()>
{
    let mut cluster = Cluster::stores(bin(), 1, &[]).await?;
    cluster.add_gateway(&[]).await?;
    cluster.add_gateway(&[]).await?;
    let (g1, g2) = (&cluster.gateways[0], &cluster.gateways[1]);
    let proxy = proxied(g1).await?;
    let mut js = JsClients::start().await?;
    let id = js.connect("a", g1, options(&proxy)).await?;
    send(g1, &id, 0).await?;
    assert_eq!(
        js.next_message("a").await?.args,
        vec![json!(0)],
        "works first"
    );

    // The socket drops; the client's reconnect reaches the other gateway.
    proxy.cut_and_hold();
    proxy.retarget(g2.addr);
    for i in 1..11 {
        send(g2, &id, i).await?;
    }
    proxy.heal();
    for i in 1..11 {
        assert_eq!(
            js.next_message("a").await?.args,
            vec![json!(i)],
            "in order, none lost"
        );
    }
    let (state, connection_id) = js.state("a").await?;
    assert_eq!(
        (state.as_str(), connection_id.as_deref()),
        ("Connected", Some(id.as_str()))
    );
    // Both ways through the relay: an invocation reaches the holder and its completion returns.
    let error = js
        .invoke("a", "echo", json!([1]))
        .await
        .err()
        .map(|e| e.to_string());
    assert!(error.unwrap_or_default().contains("upstream"));
    send(g1, &id, 11).await?;
    assert_eq!(js.next_message("a").await?.args, vec![json!(11)]);
    let relayed = g2
        .metric("switchboard_relayed_requests_total{kind=\"resume\"}")
        .await;
    assert_eq!(relayed, Some(1.0));
    // The connection still lives on g1.
    assert_eq!(exists(g2, &id).await?, 200);
    Ok(())
}
