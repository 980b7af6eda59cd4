//! Server-Sent Events and Long Polling with the official client forced to each transport: every
//! REST target type, invocations (without and with an upstream), REST close with a reason,
//! existence checks, MessagePack over Long Polling, the client's fallback when WebSockets are
//! blocked, and a client stopping.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard_testkit::upstream::answer;

const API: &str = "api-version=2022-06-01";

/// The transports and protocols to try (SSE carries text only), each on its own hub.
const CASES: [(&str, &str, &str, &str); 3] = [
    ("sse", "json", "ServerSentEventsTransport", "sse_json"),
    ("longpolling", "json", "LongPollingTransport", "lp_json"),
    (
        "longpolling",
        "messagepack",
        "LongPollingTransport",
        "lp_msgpack",
    ),
];

async fn exists(server: &Server, path: &str) -> anyhow::Result<u16> {
    Ok(server
        .rest("HEAD", &format!("{path}?{API}"), None)
        .await?
        .status)
}

#[tokio::test]
async fn every_rest_target_reaches_sse_and_long_polling_clients() -> anyhow::Result<()> {
    let server = server().await?;
    let mut js = JsClients::start().await?;
    for (transport, protocol, class, hub) in CASES {
        let name = format!("{transport}-{protocol}");
        let user = format!("user-{name}");
        let id = js
            .connect(
                &name,
                &server,
                ConnectOptions {
                    hub,
                    user: Some(&user),
                    protocol,
                    transport: Some(transport),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(js.transport(&name).await?, class, "{name}");
        assert_eq!(
            exists(&server, &format!("/api/hubs/{hub}/connections/{id}")).await?,
            200
        );
        assert_eq!(
            exists(&server, &format!("/api/hubs/{hub}/users/{user}")).await?,
            200
        );

        let group = format!("room-{name}");
        let r = server
            .rest(
                "PUT",
                &format!("/api/hubs/{hub}/groups/{group}/connections/{id}?{API}"),
                None,
            )
            .await?;
        assert_status(&r, 200);
        let sends = [
            format!("/api/hubs/{hub}/:send?{API}"),
            format!("/api/hubs/{hub}/users/{user}/:send?{API}"),
            format!("/api/hubs/{hub}/connections/{id}/:send?{API}"),
            format!("/api/hubs/{hub}/groups/{group}/:send?{API}"),
        ];
        for (i, path) in sends.iter().enumerate() {
            let r = server
                .rest(
                    "POST",
                    path,
                    Some(json!({"target": "message", "arguments": [i, "payload\nwith a newline"]})),
                )
                .await?;
            assert_status(&r, 202);
        }
        for i in 0..sends.len() {
            let m = js.next_message(&name).await?;
            assert_eq!(m.target, "message");
            assert_eq!(
                m.args,
                vec![json!(i), json!("payload\nwith a newline")],
                "{name}"
            );
        }
        let error = js
            .invoke(&name, "echo", json!([1]))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("upstream"), "{name}: {error}");
    }
    Ok(())
}

#[tokio::test]
async fn closing_an_sse_or_long_polling_connection_tells_the_client_why() -> anyhow::Result<()> {
    let server = server().await?;
    let mut js = JsClients::start().await?;
    for (transport, protocol, _, hub) in CASES {
        let name = format!("{transport}-{protocol}");
        let id = js
            .connect(
                &name,
                &server,
                ConnectOptions {
                    hub,
                    protocol,
                    transport: Some(transport),
                    ..Default::default()
                },
            )
            .await?;
        let r = server
            .rest(
                "DELETE",
                &format!("/api/hubs/{hub}/connections/{id}?reason=kicked+over+{transport}&{API}"),
                None,
            )
            .await?;
        assert_status(&r, 200);
        let error = js.wait_closed(&name).await?.unwrap_or_default();
        assert!(
            error.contains(&format!("kicked over {transport}")),
            "{name}: {error:?}"
        );
        eventually(
            Duration::from_secs(10),
            "the connection is gone",
            || async {
                match exists(&server, &format!("/api/hubs/{hub}/connections/{id}")).await {
                    Ok(404) => Some(()),
                    _ => None,
                }
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_leaves_at_once() -> anyhow::Result<()> {
    let server = server().await?;
    let mut js = JsClients::start().await?;
    for (transport, protocol, _, hub) in CASES {
        let name = format!("{transport}-{protocol}");
        let id = js
            .connect(
                &name,
                &server,
                ConnectOptions {
                    hub,
                    protocol,
                    transport: Some(transport),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(
            exists(&server, &format!("/api/hubs/{hub}/connections/{id}")).await?,
            200
        );
        js.stop(&name).await?;
        // Long Polling sends DELETE; SSE closes its stream: either way the server notices
        // without waiting for a timeout.
        eventually(
            Duration::from_secs(10),
            "the connection is gone",
            || async {
                match exists(&server, &format!("/api/hubs/{hub}/connections/{id}")).await {
                    Ok(404) => Some(()),
                    _ => None,
                }
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn with_websockets_blocked_the_client_falls_back_to_sse() -> anyhow::Result<()> {
    let server = server().await?;
    let mut js = JsClients::start().await?;
    js.connect(
        "fallback",
        &server,
        ConnectOptions {
            transport: Some("any"),
            block_websockets: true,
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(js.transport("fallback").await?, "ServerSentEventsTransport");
    let r = server
        .rest(
            "POST",
            &format!("/api/hubs/chat/:send?{API}"),
            Some(json!({"target": "message", "arguments": ["via fallback"]})),
        )
        .await?;
    assert_status(&r, 202);
    assert_eq!(
        js.next_message("fallback").await?.args,
        vec![json!("via fallback")]
    );

    // Unblocked, "any" picks WebSockets first.
    js.connect(
        "direct",
        &server,
        ConnectOptions {
            transport: Some("any"),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(js.transport("direct").await?, "WebSocketTransport");
    Ok(())
}

#[tokio::test]
async fn invocations_over_sse_and_long_polling_reach_the_upstream() -> anyhow::Result<()> {
    let upstream = Upstream::start(answer(|r| {
        if r.event() == "echo" {
            // A framed completion of the invocation in the client's protocol.
            let json = r.header("content-type") != Some("application/x-msgpack");
            let message = switchboard_protocol::decode(
                if json {
                    switchboard_protocol::Protocol::Json
                } else {
                    switchboard_protocol::Protocol::MessagePack
                },
                &r.body,
            );
            if let Ok(switchboard_protocol::HubMessage::Invocation {
                invocation_id: Some(id),
                arguments,
                ..
            }) = message
            {
                let completion = switchboard_protocol::HubMessage::Completion {
                    invocation_id: id,
                    result: switchboard_protocol::CompletionResult::Value(
                        arguments
                            .into_iter()
                            .next()
                            .unwrap_or(switchboard_protocol::Value::Nil),
                    ),
                    headers: Vec::new(),
                };
                let protocol = if json {
                    switchboard_protocol::Protocol::Json
                } else {
                    switchboard_protocol::Protocol::MessagePack
                };
                return Reply::ok(
                    switchboard_protocol::encode(protocol, &completion).unwrap_or_default(),
                );
            }
        }
        Reply::status(204)
    }))
    .await?;
    let server =
        server_with(&["--upstream", &upstream.url("/api/{hub}/{category}/{event}")]).await?;
    let mut js = JsClients::start().await?;
    for (transport, protocol, _, hub) in CASES {
        let name = format!("{transport}-{protocol}");
        let id = js
            .connect(
                &name,
                &server,
                ConnectOptions {
                    hub,
                    protocol,
                    transport: Some(transport),
                    ..Default::default()
                },
            )
            .await?;
        let result = js
            .invoke(&name, "echo", json!([format!("hi over {name}")]))
            .await?;
        assert_eq!(result, json!(format!("hi over {name}")));
        upstream.wait_connection_event(&id, "connected").await?;
        js.stop(&name).await?;
        upstream.wait_connection_event(&id, "disconnected").await?;
    }
    Ok(())
}
