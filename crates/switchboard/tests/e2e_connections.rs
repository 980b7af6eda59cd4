//! Client connections: negotiate and connect rules, the handshake, bad frames, slow consumers,
//! keep-alive and timeouts, and graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn negotiate(
    server: &Server,
    query: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut req = reqwest::Client::new().post(server.url(&format!("/client/negotiate?{query}")));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

#[tokio::test]
async fn negotiate_returns_a_ticket_for_websockets() -> anyhow::Result<()> {
    let server = server().await?;
    let token = server.client_token("chat", Some("u"));
    let (status, body) = negotiate(&server, "hub=chat&negotiateVersion=1", Some(&token)).await?;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["negotiateVersion"], 1);
    assert!(body["connectionId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(body["connectionToken"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(body["availableTransports"][0]["transport"], "WebSockets");

    assert_eq!(negotiate(&server, "hub=chat", None).await?.0, 401);
    assert_eq!(
        negotiate(&server, "hub=news", Some(&token)).await?.0,
        401,
        "token for another hub"
    );
    let rest = server.rest_token("/api/hubs/chat/:send");
    assert_eq!(
        negotiate(&server, "hub=chat", Some(&rest)).await?.0,
        401,
        "REST token on negotiate"
    );
    assert_eq!(
        negotiate(&server, "hub=chat&hub=chat", Some(&token))
            .await?
            .0,
        400,
        "two hub parameters"
    );
    assert_eq!(
        negotiate(&server, "hub=bad-hub", Some(&token)).await?.0,
        400
    );
    Ok(())
}

#[tokio::test]
async fn connecting_needs_a_valid_ticket_for_the_same_hub() -> anyhow::Result<()> {
    let server = server().await?;
    let token = server.client_token("chat", None);
    let (_, body) = negotiate(&server, "hub=chat&negotiateVersion=1", Some(&token)).await?;
    let ticket = serde_json::from_str::<serde_json::Value>(&body)?["connectionToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let try_connect = |query: String| {
        let url = format!("ws://{}/client/?{query}", server.addr);
        async move {
            match tokio_tungstenite::connect_async(url).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
                Err(e) => panic!("unexpected: {e}"),
            }
        }
    };
    assert_eq!(
        try_connect("hub=chat".into()).await,
        404,
        "no ticket: negotiate first"
    );
    assert_eq!(try_connect("hub=chat&id=forged".into()).await, 404);
    assert_eq!(
        try_connect(format!("hub=news&id={ticket}")).await,
        404,
        "ticket for another hub"
    );
    assert_eq!(
        try_connect(format!("hub=chat&id={ticket}&access_token=bad")).await,
        401
    );
    assert_eq!(try_connect(format!("hub=chat&id={ticket}")).await, 101);
    Ok(())
}

#[tokio::test]
async fn a_bad_handshake_is_answered_with_an_error() -> anyhow::Result<()> {
    let server = server().await?;
    let mut raw = RawClient::open(&server, "chat", None).await?;
    raw.send_text("{\"protocol\":\"blazorpack\",\"version\":1}\u{1e}")
        .await?;
    let reply = raw.recv_text(Duration::from_secs(5)).await?;
    assert!(reply.starts_with("{\"error\":"), "{reply}");
    Ok(())
}

#[tokio::test]
async fn a_malformed_frame_closes_only_its_connection() -> anyhow::Result<()> {
    let server = server().await?;
    let mut js = JsClients::start().await?;
    js.connect_simple("good", &server, "chat", None).await?;
    let mut bad = RawClient::connect_json(&server, "chat", None).await?;
    bad.send_text("{this is not json}\u{1e}").await?;
    let seen = bad.read_until_closed(Duration::from_secs(5)).await?;
    assert!(
        seen.iter()
            .any(|m| m.contains("\"type\":7") && m.contains("error")),
        "close message, got {seen:?}"
    );

    let mut binary_garbage = RawClient::connect_json(&server, "chat", None).await?;
    binary_garbage.send_binary(vec![0xff, 0xfe, 0x1e]).await?;
    binary_garbage
        .read_until_closed(Duration::from_secs(5))
        .await?;

    send_ok(&server, "/api/v1/hubs/chat", json!(["still here"])).await?;
    assert_eq!(
        js.next_message("good").await?.args,
        vec![json!("still here")]
    );
    Ok(())
}

#[tokio::test]
async fn client_invocations_without_upstream_fail_fast_and_do_not_disconnect() -> anyhow::Result<()>
{
    let server = server().await?;
    let mut js = JsClients::start().await?;
    js.connect_simple("a", &server, "chat", None).await?;
    let err = js
        .invoke("a", "doSomething", json!([1]))
        .await
        .expect_err("no upstream");
    assert!(err.to_string().contains("no upstream"), "{err}");
    js.send("a", "fireAndForget", json!([1])).await?;
    assert_eq!(js.state("a").await?.0, "Connected");
    Ok(())
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_never_stalls_the_others() -> anyhow::Result<()> {
    // Default limits (2048 frames / 8 MiB per connection). The silent reader's kernel buffers and
    // queue hold roughly 12 MiB, so 25 MiB of broadcasts must overflow it.
    let server = server().await?;
    let mut js = JsClients::start().await?;
    js.connect_simple("fast", &server, "chat", None).await?;
    let slow = RawClient::connect_json(&server, "chat", None).await?;
    let slow_id = slow.connection_id.clone();

    let chunk = "x".repeat(64 * 1024);
    // 400 messages of 64 KiB, in rounds of 20 that the reading client takes in before the next
    // round: it never lags by more than ~1.3 MiB, while the silent one falls 25 MiB behind.
    let (rounds, per_round) = (20, 20);
    for round in 0..rounds {
        for k in 0..per_round {
            let i = round * per_round + k;
            let r = server
                .rest(
                    "POST",
                    "/api/v1/hubs/chat",
                    Some(body("message", json!([i, chunk]))),
                )
                .await?;
            assert_status(&r, 202);
        }
        for k in 0..per_round {
            let m = js.next_message("fast").await?;
            assert_eq!(m.args[0], json!(round * per_round + k));
        }
    }
    // The reader that never reads was closed as a slow consumer, counted, and forgotten.
    let metrics = server.rest_with("GET", "/metrics", None, None).await?.body;
    let closes = metrics
        .lines()
        .find(|l| l.starts_with("switchboard_slow_consumer_closes_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert_eq!(closes, 1.0, "{metrics}");
    eventually(Duration::from_secs(15), "slow connection removed", || {
        let (s, id) = (&server, slow_id.clone());
        async move {
            let r = s
                .rest(
                    "HEAD",
                    &format!("/api/hubs/chat/connections/{id}?api-version=2022-06-01"),
                    None,
                )
                .await
                .ok()?;
            (r.status == 404).then_some(())
        }
    })
    .await?;
    drop(slow);
    Ok(())
}

#[tokio::test]
async fn idle_clients_get_pings_and_silent_clients_time_out() -> anyhow::Result<()> {
    let server = server_with(&["--keep-alive-interval", "1", "--client-timeout", "3"]).await?;
    let mut raw = RawClient::connect_json(&server, "chat", None).await?;
    let ping = raw.recv_text(Duration::from_secs(5)).await?;
    assert_eq!(ping, "{\"type\":6}\u{1e}");
    let rest = raw.read_until_closed(Duration::from_secs(10)).await?;
    assert!(
        rest.iter()
            .any(|m| m.contains("\"type\":7") && m.contains("timeout")),
        "timeout close, got {rest:?}"
    );

    // The official client pings on its own and stays connected past the timeout.
    let mut js = JsClients::start().await?;
    js.connect(
        "a",
        &server,
        ConnectOptions {
            keep_alive_ms: Some(500),
            ..Default::default()
        },
    )
    .await?;
    let stays = tokio::time::timeout(Duration::from_secs(4), js.wait_closed("a")).await;
    assert!(
        stays.is_err(),
        "the official client was disconnected: {stays:?}"
    );
    Ok(())
}

#[tokio::test]
async fn handshake_must_arrive_in_time() -> anyhow::Result<()> {
    let server = server_with(&["--handshake-timeout", "1"]).await?;
    let mut raw = RawClient::open(&server, "chat", None).await?;
    let seen = raw.read_until_closed(Duration::from_secs(5)).await?;
    assert!(
        seen.iter().any(|m| m.contains("error")),
        "handshake error, got {seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_closes_clients_with_reconnect_allowed_and_exits_cleanly() -> anyhow::Result<()> {
    let mut server = server().await?;
    let mut js = JsClients::start().await?;
    js.connect_simple("a", &server, "chat", None).await?;
    js.connect(
        "b",
        &server,
        ConnectOptions {
            protocol: "messagepack",
            reconnect: true,
            ..Default::default()
        },
    )
    .await?;
    let code = server.terminate().await?;
    assert_eq!(code, Some(0));
    let error = js.wait_closed("a").await?.unwrap_or_default();
    assert!(error.contains("shutting down"), "{error}");
    // allowReconnect: the reconnecting client starts reconnecting instead of giving up.
    js.wait_event("b", "reconnecting", Duration::from_secs(10))
        .await?;
    Ok(())
}
