//! No sticky sessions for SSE and Long Polling: with two gateways, a connection opened on one
//! keeps working when its polls, sends and DELETE reach the other, which relays them to the
//! holder over the cluster plane. Driven with raw HTTP so every request's gateway is chosen.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const API: &str = "api-version=2022-06-01";
const WAIT: Duration = Duration::from_secs(20);

/// Negotiates at `gateway`; the connection token and id.
async fn negotiate(gateway: &Server, token: &str) -> anyhow::Result<(String, String)> {
    let body: serde_json::Value = reqwest::Client::new()
        .post(gateway.url("/client/negotiate?hub=chat&negotiateVersion=1"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    let ticket = body["connectionToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let id = body["connectionId"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(!ticket.is_empty(), "negotiate: {body}");
    Ok((ticket, id))
}

fn client_url(gateway: &Server, ticket: &str) -> String {
    let id: String = form_urlencoded::byte_serialize(ticket.as_bytes()).collect();
    gateway.url(&format!("/client/?hub=chat&id={id}"))
}

/// Polls at `gateway` until a poll carries something; its body.
async fn poll_until_data(
    http: &reqwest::Client,
    gateway: &Server,
    ticket: &str,
    token: &str,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let resp = http
            .get(client_url(gateway, ticket))
            .bearer_auth(token)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "poll answered {}", resp.status());
        let body = resp.text().await?;
        if !body.is_empty() {
            return Ok(body);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no data");
    }
}

#[tokio::test]
async fn long_polling_works_whichever_gateway_each_request_reaches() -> anyhow::Result<()> {
    let mut cluster = Cluster::stores(bin(), 1, &[]).await?;
    cluster.add_gateway(&[]).await?;
    cluster.add_gateway(&[]).await?;
    let (g1, g2) = (&cluster.gateways[0], &cluster.gateways[1]);
    let http = reqwest::Client::new();
    let token = g1.client_token("chat", Some("lp-user"));

    let (ticket, id) = negotiate(g1, &token).await?;
    // The first GET opens the connection on g1 and is answered at once.
    let first = http
        .get(client_url(g1, &ticket))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(first.status(), 200);
    // The handshake goes to g2, which relays it; so does the poll that returns the answer.
    let sent = http
        .post(client_url(g2, &ticket))
        .bearer_auth(&token)
        .body("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .send()
        .await?;
    assert_eq!(sent.status(), 200, "{}", sent.text().await?);
    assert_eq!(
        poll_until_data(&http, g2, &ticket, &token).await?,
        "{}\u{1e}"
    );

    // A REST send (through g2's REST API) reaches the connection; polled at g1 and at g2.
    for (i, poller) in [g1, g2].into_iter().enumerate() {
        let r = g2
            .rest(
                "POST",
                &format!("/api/hubs/chat/connections/{id}/:send?{API}"),
                Some(json!({"target": "message", "arguments": [i]})),
            )
            .await?;
        assert_status(&r, 202);
        let body = poll_until_data(&http, poller, &ticket, &token).await?;
        assert!(
            body.contains("\"target\":\"message\"") && body.contains(&format!("[{i}]")),
            "{body}"
        );
    }

    // Another user's access token is refused where the connection is, also when relayed.
    let eve = g1.client_token("chat", Some("eve"));
    let refused = http
        .get(client_url(g2, &ticket))
        .bearer_auth(&eve)
        .send()
        .await?;
    assert_eq!(refused.status(), 401);

    // A DELETE at g2 ends the connection on g1.
    let deleted = http
        .delete(client_url(g2, &ticket))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(deleted.status(), 202);
    eventually(WAIT, "the connection is gone", || async {
        let r = g1
            .rest(
                "HEAD",
                &format!("/api/hubs/chat/connections/{id}?{API}"),
                None,
            )
            .await
            .ok()?;
        (r.status == 404).then_some(())
    })
    .await?;
    let relayed = g2
        .metric("switchboard_relayed_requests_total{kind=\"poll\"}")
        .await;
    assert!(relayed >= Some(1.0), "{relayed:?}");
    Ok(())
}

#[tokio::test]
async fn sse_sends_reach_the_gateway_holding_the_stream() -> anyhow::Result<()> {
    let mut cluster = Cluster::stores(bin(), 1, &[]).await?;
    cluster.add_gateway(&[]).await?;
    cluster.add_gateway(&[]).await?;
    let (g1, g2) = (&cluster.gateways[0], &cluster.gateways[1]);
    let http = reqwest::Client::new();
    let token = g1.client_token("chat", Some("sse-user"));
    let (ticket, _id) = negotiate(g2, &token).await?;

    let mut stream = http
        .get(client_url(g1, &ticket))
        .header("accept", "text/event-stream")
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    let mut read_until =
        async |stream: &mut reqwest::Response, needle: &str| -> anyhow::Result<()> {
            let deadline = tokio::time::Instant::now() + WAIT;
            while !seen.contains(needle) {
                let chunk = tokio::time::timeout_at(deadline, stream.chunk())
                    .await
                    .map_err(|_| anyhow::anyhow!("no {needle:?} in {seen:?}"))??
                    .ok_or_else(|| anyhow::anyhow!("the stream ended: {seen:?}"))?;
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
            Ok(())
        };
    // The handshake and a ping are sent to g2, which relays them to g1.
    for body in [
        "{\"protocol\":\"json\",\"version\":1}\u{1e}",
        "{\"type\":6}\u{1e}",
    ] {
        let sent = http
            .post(client_url(g2, &ticket))
            .bearer_auth(&token)
            .body(body)
            .send()
            .await?;
        assert_eq!(sent.status(), 200);
    }
    read_until(&mut stream, "data: {}\u{1e}").await?;
    let r = g2
        .rest(
            "POST",
            &format!("/api/hubs/chat/users/sse-user/:send?{API}"),
            Some(json!({"target": "message", "arguments": ["across"]})),
        )
        .await?;
    assert_status(&r, 202);
    read_until(&mut stream, "\"arguments\":[\"across\"]").await?;
    // A second stream for the same connection, at the other gateway, is refused.
    let second = http
        .get(client_url(g2, &ticket))
        .header("accept", "text/event-stream")
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(second.status(), 409);
    Ok(())
}

#[tokio::test]
async fn official_clients_behind_a_round_robin_balancer() -> anyhow::Result<()> {
    let mut cluster = Cluster::stores(bin(), 1, &[]).await?;
    cluster.add_gateway(&[]).await?;
    cluster.add_gateway(&[]).await?;
    let (g1, g2) = (&cluster.gateways[0], &cluster.gateways[1]);
    let balancer = RoundRobin::start("127.0.0.1:0".parse()?, vec![g1.addr, g2.addr]).await?;
    let mut js = JsClients::start().await?;
    for (transport, protocol) in [
        ("longpolling", "json"),
        ("longpolling", "messagepack"),
        ("sse", "json"),
    ] {
        let name = format!("{transport}-{protocol}");
        let user = format!("rr-{name}");
        js.connect(
            &name,
            g1,
            ConnectOptions {
                user: Some(&user),
                protocol,
                transport: Some(transport),
                endpoint: Some(format!("http://{}", balancer.addr)),
                ..Default::default()
            },
        )
        .await?;
        for i in 0..5 {
            let r = g2
                .rest(
                    "POST",
                    &format!("/api/hubs/chat/users/{user}/:send?{API}"),
                    Some(json!({"target": "message", "arguments": [i]})),
                )
                .await?;
            assert_status(&r, 202);
            assert_eq!(js.next_message(&name).await?.args, vec![json!(i)], "{name}");
        }
        let error = js
            .invoke(&name, "echo", json!([1]))
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            error.unwrap_or_default().contains("upstream"),
            "{name}: sends arrive"
        );
        js.stop(&name).await?;
    }
    let mut relayed = 0.0;
    for gateway in [g1, g2] {
        for kind in ["send", "poll", "close"] {
            relayed += gateway
                .metric(&format!(
                    "switchboard_relayed_requests_total{{kind=\"{kind}\"}}"
                ))
                .await
                .unwrap_or(0.0);
        }
    }
    assert!(relayed > 0.0, "requests crossed gateways");
    Ok(())
}
