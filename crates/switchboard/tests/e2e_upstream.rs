//! Serverless upstream, end to end: official clients (JSON and MessagePack) on one side, a real
//! HTTP upstream started by the test on the other, and `switchboard` in between.
//!
//! The upstream checks signatures the way the Azure Functions extension does and records every
//! request, so each test asserts what an unchanged Azure-style app would see: the headers, the
//! bodies, the order, and what reaches the client for every kind of answer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchboard_protocol::{self as protocol, CompletionResult, HubMessage, Protocol};
use switchboard_testkit::upstream::{answer, closed_port, signature_valid, Handler};

const KEY1: &str = "upstream-test-key-one-0123456789abcdefghij";
const KEY2: &str = "upstream-test-key-two-0123456789abcdefghij";
const WAIT: Duration = Duration::from_secs(20);

async fn server_for(upstream_args: &[String], keys: &[&str]) -> anyhow::Result<Server> {
    Server::start(
        bin(),
        ServerOptions {
            access_keys: keys.iter().map(|k| k.to_string()).collect(),
            args: upstream_args.to_vec(),
            ..Default::default()
        },
    )
    .await
}

fn flag(url: String) -> Vec<String> {
    vec!["--upstream".into(), url]
}

/// The protocol a recorded invocation was sent in, from its content type.
fn protocol_of(r: &Recorded) -> Protocol {
    if r.header("content-type") == Some("application/x-msgpack") {
        Protocol::MessagePack
    } else {
        Protocol::Json
    }
}

/// The invocation id and arguments of a recorded invocation, in either protocol.
fn invocation(r: &Recorded) -> (Option<String>, Vec<protocol::Value>) {
    match protocol::decode(protocol_of(r), &r.body) {
        Ok(HubMessage::Invocation {
            invocation_id,
            arguments,
            ..
        }) => (invocation_id, arguments),
        other => panic!("not an invocation: {other:?}"),
    }
}

/// A framed completion in the recorded invocation's protocol.
fn completion(r: &Recorded, result: CompletionResult) -> Reply {
    let (id, _) = invocation(r);
    let message = HubMessage::Completion {
        invocation_id: id.unwrap_or_default(),
        result,
        headers: Vec::new(),
    };
    Reply::ok(protocol::encode(protocol_of(r), &message).unwrap_or_default())
}

/// The answers of the test app: by event name.
fn app(r: &Recorded) -> Reply {
    if !signature_valid(
        r.header("x-asrs-signature").unwrap_or_default(),
        r.connection_id(),
        &[KEY2, TEST_KEY],
    ) {
        return Reply::status(401);
    }
    match r.event() {
        "echo" => {
            let (_, args) = invocation(r);
            completion(r, CompletionResult::Value(protocol::Value::Array(args)))
        }
        "empty" => Reply::ok(Vec::new()),
        "boom" => Reply::status(500),
        "garbage" => Reply::ok("this is not a hub message"),
        _ => Reply::no_content(),
    }
}

#[tokio::test]
async fn every_event_carries_the_headers_and_a_signature_for_each_key() -> anyhow::Result<()> {
    // The app knows only the second key, as during a key rotation.
    let upstream = Upstream::start(answer(app)).await?;
    let server = server_for(
        &flag(upstream.url("/api/{hub}/{category}/{event}?code=s3cr3t")),
        &[KEY1, KEY2],
    )
    .await?;
    let mut js = JsClients::start().await?;
    let mut claims = serde_json::Map::new();
    claims.insert("role".into(), json!(["admin", "ops"]));
    claims.insert("tenant".into(), json!("contoso"));
    let token = switchboard_auth::mint_client_token(
        KEY1,
        &format!("http://{}", server.addr),
        "chat",
        Some("alice"),
        &claims,
        now_secs(),
        600,
    );
    let id = js
        .connect(
            "a",
            &server,
            ConnectOptions {
                token: Some(token),
                query: Some("room=lobby&lang=en"),
                ..Default::default()
            },
        )
        .await?;

    let connected = upstream.wait_connection_event(&id, "connected").await?;
    assert_eq!(
        connected.path,
        "/api/chat/connections/connected?code=s3cr3t"
    );
    assert_eq!(connected.header("x-asrs-hub"), Some("chat"));
    assert_eq!(connected.header("x-asrs-category"), Some("connections"));
    assert_eq!(connected.header("x-asrs-user-id"), Some("alice"));
    assert_eq!(connected.header("content-type"), Some("application/json"));
    assert_eq!(connected.json(), json!({"type": 10}));
    let claims = connected.header("x-asrs-user-claims").unwrap_or_default();
    for claim in [
        "asrs.s.uid: alice",
        "role: admin",
        "role: ops",
        "tenant: contoso",
    ] {
        assert!(
            claims.split(", ").any(|c| c == claim),
            "{claim} in {claims:?}"
        );
    }
    let query = connected.header("x-asrs-client-query").unwrap_or_default();
    assert!(query.starts_with('?'), "{query}");
    for part in ["hub=chat", "room=lobby", "lang=en"] {
        assert!(query.contains(part), "{part} in {query}");
    }
    let signature = connected.header("x-asrs-signature").unwrap_or_default();
    assert_eq!(signature.split(',').count(), 2, "{signature}");
    assert!(signature_valid(signature, &id, &[KEY1]));
    assert!(signature_valid(signature, &id, &[KEY2]));
    assert!(!signature_valid(signature, &id, &["another-key"]));
    assert!(!signature_valid(
        signature,
        "another-connection",
        &[KEY1, KEY2]
    ));

    assert_eq!(
        js.invoke("a", "echo", json!([1, "two"])).await?,
        json!([1, "two"])
    );
    let call = upstream
        .wait_for(WAIT, "echo", |r| r.event() == "echo")
        .await?;
    assert_eq!(call.path, "/api/chat/messages/echo?code=s3cr3t");
    assert_eq!(call.header("x-asrs-category"), Some("messages"));
    assert_eq!(call.header("x-asrs-connection-id"), Some(id.as_str()));
    assert!(!call.body.contains(&0x1e), "sent without framing");
    let body = call.json();
    assert_eq!(body["type"], 1);
    assert_eq!(body["target"], "echo");
    assert_eq!(body["arguments"], json!([1, "two"]));
    assert!(body["invocationId"].is_string());
    for r in upstream.requests().await {
        assert!(
            signature_valid(
                r.header("x-asrs-signature").unwrap_or_default(),
                r.connection_id(),
                &[KEY2]
            ),
            "every request is signed: {r:?}"
        );
    }

    js.stop("a").await?;
    let gone = upstream.wait_connection_event(&id, "disconnected").await?;
    assert_eq!(
        gone.json(),
        json!({"type": 11}),
        "a clean close has no error"
    );
    assert_eq!(
        upstream.matching(|r| r.event() == "connected").await.len(),
        1,
        "connected is sent once"
    );
    Ok(())
}

#[tokio::test]
async fn every_answer_completes_the_invocation_clearly() -> anyhow::Result<()> {
    let down = closed_port()?;
    let upstream = Upstream::start(Arc::new(
        |r: Recorded| -> futures::future::BoxFuture<'static, Reply> {
            Box::pin(async move {
                if r.event() == "slow" {
                    // Never answers: only --upstream-timeout ends the call.
                    std::future::pending::<()>().await;
                }
                app(&r)
            })
        },
    ) as Handler)
    .await?;
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(
        config.path(),
        json!({"templates": [
            {"urlTemplate": format!("http://127.0.0.1:{down}/gone"), "eventPattern": "down"},
            {"urlTemplate": upstream.url("/api/{hub}/{event}"), "hubPattern": "chat"},
        ]})
        .to_string(),
    )?;
    let args = vec![
        "--upstream-config".into(),
        config.path().display().to_string(),
        "--upstream-timeout".into(),
        "1".into(),
    ];
    let server = server_for(&args, &[KEY2]).await?;
    let mut js = JsClients::start().await?;
    for protocol in ["json", "messagepack"] {
        let name = protocol;
        js.connect(
            name,
            &server,
            ConnectOptions {
                protocol,
                ..Default::default()
            },
        )
        .await?;
        assert_eq!(
            js.invoke(name, "echo", json!(["x", 2])).await?,
            json!(["x", 2]),
            "{protocol}"
        );
        assert_eq!(
            js.invoke(name, "void", json!([])).await?,
            Value::Null,
            "204: {protocol}"
        );
        assert_eq!(
            js.invoke(name, "empty", json!([])).await?,
            Value::Null,
            "200 empty: {protocol}"
        );
        let failed = |e: anyhow::Error| e.to_string();
        let err = js
            .invoke(name, "boom", json!([]))
            .await
            .map_err(failed)
            .expect_err("500");
        assert!(
            err.contains("Invocation failed, status code 500"),
            "{protocol}: {err}"
        );
        let err = js
            .invoke(name, "slow", json!([]))
            .await
            .map_err(failed)
            .expect_err("slow");
        assert!(err.contains("timed out"), "{protocol}: {err}");
        let err = js
            .invoke(name, "down", json!([]))
            .await
            .map_err(failed)
            .expect_err("down");
        assert!(err.contains("unreachable"), "{protocol}: {err}");
        let err = js
            .invoke(name, "garbage", json!([]))
            .await
            .map_err(failed)
            .expect_err("garbage");
        assert!(err.contains("not a framed"), "{protocol}: {err}");
        let (items, err) = js.stream(name, "ticks", json!([])).await?;
        assert!(items.is_empty());
        assert!(
            err.is_some_and(|e| e.contains("not supported in serverless mode")),
            "{protocol}"
        );
        let err = js.upload(name, "consume").await?;
        assert!(
            err.is_some_and(|e| e.contains("client-to-server streams are not supported")),
            "{protocol}"
        );
        // Still open and working after every failure.
        assert_eq!(
            js.invoke(name, "echo", json!([3])).await?,
            json!([3]),
            "{protocol}"
        );
        assert_eq!(js.state(name).await?.0, "Connected");
    }

    // A send is POSTed and its answer ignored; it has no invocation id.
    js.send("json", "boom", json!(["fire", "and forget"]))
        .await?;
    let sent = upstream
        .wait_for(WAIT, "the send", |r| {
            r.event() == "boom" && r.json()["arguments"][0] == "fire"
        })
        .await?;
    assert!(
        sent.json().get("invocationId").is_none(),
        "{:?}",
        sent.json()
    );
    assert_eq!(
        js.invoke("json", "echo", json!([4])).await?,
        json!([4]),
        "the failed send left no trace"
    );

    // No template matches hub "other": invocations fail saying so; the connection is fine.
    js.connect_simple("other", &server, "other", None).await?;
    let err = js
        .invoke("other", "echo", json!([]))
        .await
        .expect_err("no match")
        .to_string();
    assert!(
        err.contains("no upstream matches hub 'other' event 'echo'"),
        "{err}"
    );
    assert_eq!(js.state("other").await?.0, "Connected");
    assert!(upstream
        .matching(|r| r.header("x-asrs-hub") == Some("other"))
        .await
        .is_empty());

    let failures = server
        .metric("switchboard_upstream_failures_total")
        .await
        .unwrap_or(0.0);
    assert!(failures >= 10.0, "failures counted: {failures}");
    Ok(())
}

#[tokio::test]
async fn every_way_a_connection_ends_sends_disconnected() -> anyhow::Result<()> {
    let upstream = Upstream::start(answer(app)).await?;
    let mut args = flag(upstream.url("/up"));
    args.extend([
        "--client-timeout".into(),
        "2".into(),
        "--keep-alive-interval".into(),
        "1".into(),
    ]);
    let mut server = server_for(&args, &[KEY2]).await?;
    let mut js = JsClients::start().await?;
    let quick = ConnectOptions {
        keep_alive_ms: Some(500),
        ..Default::default()
    };

    // The client closes.
    let id = js.connect("stop", &server, quick.clone()).await?;
    upstream.wait_connection_event(&id, "connected").await?;
    js.stop("stop").await?;
    let r = upstream.wait_connection_event(&id, "disconnected").await?;
    assert_eq!(r.json(), json!({"type": 11}));

    // The REST API closes it, with a reason.
    let id = js.connect("rest", &server, quick.clone()).await?;
    upstream.wait_connection_event(&id, "connected").await?;
    let r = server
        .rest(
            "DELETE",
            &format!("/api/hubs/chat/connections/{id}?reason=kicked&api-version=2022-06-01"),
            None,
        )
        .await?;
    assert_status(&r, 200);
    let r = upstream.wait_connection_event(&id, "disconnected").await?;
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("kicked")),
        "{:?}",
        r.json()
    );

    // The client goes silent: the server times it out.
    let mut silent = RawClient::connect_json(&server, "chat", Some("silent")).await?;
    let r = upstream
        .wait_connection_event(&silent.connection_id, "disconnected")
        .await?;
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("Server timeout")),
        "{:?}",
        r.json()
    );
    let _ = silent.read_until_closed(WAIT).await;

    // The client breaks the protocol.
    let mut bad = RawClient::connect_json(&server, "chat", None).await?;
    upstream
        .wait_connection_event(&bad.connection_id, "connected")
        .await?;
    bad.send_text("{\"type\":1,\"target\":5}\u{1e}").await?;
    let r = upstream
        .wait_connection_event(&bad.connection_id, "disconnected")
        .await?;
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("Connection closed with an error")),
        "{:?}",
        r.json()
    );

    // The client vanishes without a close handshake.
    let gone = RawClient::connect_json(&server, "chat", None).await?;
    let gone_id = gone.connection_id.clone();
    upstream
        .wait_connection_event(&gone_id, "connected")
        .await?;
    drop(gone);
    upstream
        .wait_connection_event(&gone_id, "disconnected")
        .await?;

    // The server drains on SIGTERM: every connection's disconnected is sent before it exits.
    let mut ids = Vec::new();
    for i in 0..3 {
        let name = format!("drain{i}");
        let id = js.connect(&name, &server, quick.clone()).await?;
        upstream.wait_connection_event(&id, "connected").await?;
        ids.push(id);
    }
    server.terminate().await?;
    for id in &ids {
        let found = upstream
            .matching(|r| r.event() == "disconnected" && r.connection_id() == id)
            .await;
        assert_eq!(
            found.len(),
            1,
            "disconnected of {id} before the process exited"
        );
        let error = found[0].json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains("shutting down"), "{error}");
    }

    // Exactly one connected and one disconnected per connection.
    let all = upstream.requests().await;
    for event in ["connected", "disconnected"] {
        let mut seen: Vec<&str> = all
            .iter()
            .filter(|r| r.event() == event)
            .map(Recorded::connection_id)
            .collect();
        let total = seen.len();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), total, "one {event} per connection");
        assert_eq!(total, 8, "{event}s");
    }
    Ok(())
}

#[tokio::test]
async fn a_slow_upstream_call_delays_only_its_own_connection() -> anyhow::Result<()> {
    let gate = Gate::new();
    let g = gate.clone();
    let upstream = Upstream::start(Arc::new(
        move |r: Recorded| -> futures::future::BoxFuture<'static, Reply> {
            let g = g.clone();
            Box::pin(async move {
                if r.event() == "slow" {
                    g.wait().await;
                }
                app(&r)
            })
        },
    ) as Handler)
    .await?;
    let server = server_for(&flag(upstream.url("/up")), &[KEY2]).await?;
    let mut js = JsClients::start().await?;
    let a = js.connect_simple("a", &server, "chat", None).await?;
    js.connect_simple("b", &server, "chat", None).await?;

    js.invoke_async("a", "slow", "slow", json!([1])).await?;
    upstream
        .wait_for(WAIT, "the slow call", |r| r.event() == "slow")
        .await?;
    // Behind it on the same connection: sent only once the slow call is answered.
    js.invoke_async("a", "after", "echo", json!(["after"]))
        .await?;

    // Another connection is not held up.
    assert_eq!(js.invoke("b", "echo", json!(["b"])).await?, json!(["b"]));
    assert_eq!(
        upstream
            .matching(|r| r.connection_id() == a && r.event() == "echo")
            .await
            .len(),
        0,
        "a's next call waits for its slow one (the upstream answered b's meanwhile)"
    );

    gate.open();
    assert_eq!(js.wait_result("a", "slow", WAIT).await?, Ok(Value::Null));
    assert_eq!(
        js.wait_result("a", "after", WAIT).await?,
        Ok(json!(["after"]))
    );
    let order: Vec<String> = upstream
        .matching(|r| r.connection_id() == a && r.category() == "messages")
        .await
        .iter()
        .map(|r| r.event().to_owned())
        .collect();
    assert_eq!(
        order,
        ["slow", "echo"],
        "the upstream sees a's calls in the order a made them"
    );
    Ok(())
}

#[tokio::test]
async fn a_flood_of_invocations_is_throttled_and_answered_in_order() -> anyhow::Result<()> {
    let gate = Gate::new();
    let g = gate.clone();
    let upstream = Upstream::start(Arc::new(
        move |r: Recorded| -> futures::future::BoxFuture<'static, Reply> {
            let g = g.clone();
            Box::pin(async move {
                if r.category() == "messages" {
                    g.wait().await;
                }
                app(&r)
            })
        },
    ) as Handler)
    .await?;
    let server = server_for(&flag(upstream.url("/up")), &[KEY2]).await?;
    let mut raw = RawClient::connect_json(&server, "chat", None).await?;
    upstream
        .wait_connection_event(&raw.connection_id, "connected")
        .await?;

    // More invocations in one frame than the outbound queue holds (2048).
    const N: usize = 3000;
    let mut frame = String::new();
    for i in 0..N {
        frame.push_str(&format!(
            "{{\"type\":1,\"invocationId\":\"{i}\",\"target\":\"echo\",\"arguments\":[{i}]}}\u{1e}"
        ));
    }
    raw.send_text(&frame).await?;
    upstream
        .wait_for(WAIT, "the first invocation", |r| r.event() == "echo")
        .await?;
    // The connection stops reading while the upstream holds the first call.
    eventually(WAIT, "the connection to be throttled", || async {
        let throttled = server
            .metric("switchboard_upstream_throttled_total")
            .await?;
        (throttled >= 1.0).then_some(())
    })
    .await?;
    assert_eq!(
        upstream.matching(|r| r.event() == "echo").await.len(),
        1,
        "one call at a time per connection"
    );
    gate.open();

    let mut next = 0usize;
    while next < N {
        let text = raw.recv_text(WAIT).await?;
        for record in text.split('\u{1e}').filter(|r| !r.is_empty()) {
            let message: Value = serde_json::from_str(record)?;
            if message["type"] != 3 {
                continue;
            }
            assert_eq!(
                message["invocationId"],
                next.to_string(),
                "answers in order"
            );
            assert_eq!(message["result"], json!([next]));
            next += 1;
        }
    }
    assert_eq!(
        upstream.matching(|r| r.event() == "echo").await.len(),
        N,
        "nothing dropped"
    );
    // Still open: a ping is answered by nothing, but an invocation is.
    raw.send_text(
        "{\"type\":1,\"invocationId\":\"last\",\"target\":\"echo\",\"arguments\":[\"last\"]}\u{1e}",
    )
    .await?;
    let text = raw.recv_text(WAIT).await?;
    assert!(text.contains("\"last\""), "{text}");

    // The official client's many concurrent invocations complete too, in order.
    let mut js = JsClients::start().await?;
    js.connect_simple("c", &server, "chat", None).await?;
    let outcomes = js.invoke_many("c", "echo", 300).await?;
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome, &Ok(json!([i])));
    }
    Ok(())
}

#[tokio::test]
async fn a_chat_round_trip_goes_client_upstream_rest_clients() -> anyhow::Result<()> {
    // The app broadcasts what a client invokes, through the REST API, like a Functions app.
    let rest: Arc<tokio::sync::OnceCell<(String, String)>> = Arc::new(tokio::sync::OnceCell::new());
    let r2 = rest.clone();
    let upstream = Upstream::start(Arc::new(move |r: Recorded| -> futures::future::BoxFuture<'static, Reply> {
        let rest = r2.clone();
        Box::pin(async move {
            if r.event() != "broadcast" {
                return app(&r);
            }
            let Some((base, key)) = rest.get() else {
                return Reply::status(503);
            };
            let (_, args) = invocation(&r);
            let text = match args.first() {
                Some(protocol::Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            let url = format!("{base}/api/hubs/chat/:send?api-version=2022-06-01");
            let token = switchboard_auth::mint_rest_token(key, &url, None, now_secs(), 60);
            let sent = reqwest::Client::new()
                .post(&url)
                .bearer_auth(token)
                .json(&json!({"target": "newMessage", "arguments": [r.header("x-asrs-user-id"), text]}))
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().as_u16() == 202 => {
                    completion(&r, CompletionResult::Value(protocol::Value::Bool(true)))
                }
                _ => Reply::status(502),
            }
        })
    }) as Handler)
    .await?;
    let server = server_for(&flag(upstream.url("/api/signalr")), &[KEY2]).await?;
    let _ = rest.set((format!("http://{}", server.addr), KEY2.to_owned()));
    let mut js = JsClients::start().await?;
    for (name, protocol) in [("alice", "json"), ("bob", "messagepack")] {
        js.connect(
            name,
            &server,
            ConnectOptions {
                user: Some(name),
                protocol,
                targets: &["newMessage"],
                ..Default::default()
            },
        )
        .await?;
    }
    assert_eq!(
        js.invoke("alice", "broadcast", json!(["hello"])).await?,
        json!(true)
    );
    for name in ["alice", "bob"] {
        let m = js.next_message(name).await?;
        assert_eq!(m.target, "newMessage");
        assert_eq!(m.args, vec![json!("alice"), json!("hello")], "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn templates_match_in_order_and_escape_odd_names() -> anyhow::Result<()> {
    let upstream = Upstream::start(answer(app)).await?;
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(
        config.path(),
        json!({"templates": [
            {"urlTemplate": upstream.url("/first/{event}"), "hubPattern": "chat", "categoryPattern": "messages", "eventPattern": "a, b"},
            {"urlTemplate": upstream.url("/conn/{hub}"), "categoryPattern": "connections"},
        ]})
        .to_string(),
    )?;
    let mut args = vec![
        "--upstream-config".into(),
        config.path().display().to_string(),
    ];
    args.extend(flag(
        upstream.url("/all/{hub}/{category}/{event}?code=k%2F1"),
    ));
    let server = server_for(&args, &[KEY2]).await?;
    let mut js = JsClients::start().await?;

    let chat = js.connect_simple("chat", &server, "chat", None).await?;
    js.invoke("chat", "a", json!([])).await?;
    js.invoke("chat", "B", json!([])).await?;
    js.invoke("chat", "c", json!([])).await?;
    let odd_hub = "odd`h,b.[1]_x";
    let odd = js.connect_simple("odd", &server, odd_hub, None).await?;
    js.invoke("odd", "we ird/é?#", json!([])).await?;

    let paths = |id: String| {
        let upstream = &upstream;
        async move {
            upstream
                .matching(|r| r.connection_id() == id && r.category() == "messages")
                .await
                .into_iter()
                .map(|r| r.path)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        paths(chat.clone()).await,
        ["/first/a", "/first/B", "/all/chat/messages/c?code=k%2F1"],
        "the file's templates first, patterns ignore case, then the flag's"
    );
    assert_eq!(
        paths(odd.clone()).await,
        ["/all/odd%60h%2Cb.%5B1%5D_x/messages/we%20ird%2F%C3%A9%3F%23?code=k%2F1"]
    );
    let connected = upstream.wait_connection_event(&odd, "connected").await?;
    assert_eq!(connected.path, "/conn/odd%60h%2Cb.%5B1%5D_x");
    assert_eq!(connected.header("x-asrs-hub"), Some(odd_hub));
    assert_eq!(connected.header("x-asrs-event"), Some("connected"));
    let call = upstream
        .wait_for(WAIT, "odd event", |r| {
            r.connection_id() == odd && r.category() == "messages"
        })
        .await?;
    assert_eq!(call.header("x-asrs-event"), Some("we ird/é?#"));
    Ok(())
}

#[tokio::test]
async fn a_bad_upstream_configuration_stops_the_start_with_exit_64() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bad_json = dir.path().join("bad.json");
    std::fs::write(
        &bad_json,
        "{\"templates\":[{\"urlTemplate\":\"http://a/\",\"hubPatern\":\"x\"}]}",
    )?;
    let not_json = dir.path().join("not.json");
    std::fs::write(&not_json, "templates: []")?;
    let data = dir.path().join("data");
    let data = data.display().to_string();
    let bad_json = bad_json.display().to_string();
    let not_json = not_json.display().to_string();
    for (args, says) in [
        (vec!["--upstream", "localhost:7071/api"], "--upstream #1"),
        (vec!["--upstream", "http://a/{user}"], "unknown placeholder"),
        (
            vec!["--upstream-config", "/nonexistent/upstream.json"],
            "--upstream-config",
        ),
        (
            vec!["--upstream-config", bad_json.as_str()],
            "unknown setting \"hubPatern\"",
        ),
        (
            vec!["--upstream-config", not_json.as_str()],
            "not valid JSON",
        ),
        (
            vec!["--upstream", "http://a/", "--upstream-timeout", "0"],
            "--upstream-timeout",
        ),
    ] {
        let out = tokio::time::timeout(
            WAIT,
            tokio::process::Command::new(bin())
                .arg("serve")
                .args(["--listen", "127.0.0.1:0", "--data-dir", &data])
                .args(&args)
                .output(),
        )
        .await??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn in_a_cluster_each_gateway_sends_its_own_connections_events_once() -> anyhow::Result<()> {
    let upstream = Upstream::start(answer(app)).await?;
    let mut cluster = Cluster::stores(bin(), 1, &[]).await?;
    for g in ["g1", "g2"] {
        let url = upstream.url(&format!("/{g}/{{category}}/{{event}}"));
        cluster.add_gateway(&["--upstream", &url]).await?;
    }
    let mut js = JsClients::start().await?;
    let mut ids = Vec::new();
    for (i, gateway) in cluster.gateways.iter().enumerate() {
        let name = format!("c{i}");
        ids.push(js.connect_simple(&name, gateway, "chat", None).await?);
        assert_eq!(js.invoke(&name, "echo", json!([i])).await?, json!([i]));
        js.stop(&name).await?;
    }
    for id in &ids {
        upstream.wait_connection_event(id, "disconnected").await?;
    }
    for (i, id) in ids.iter().enumerate() {
        let mine = format!("/g{}/", i + 1);
        let seen = upstream.matching(|r| r.connection_id() == id).await;
        let events: Vec<&str> = seen.iter().map(Recorded::event).collect();
        assert_eq!(
            events,
            ["connected", "echo", "disconnected"],
            "{id}: exactly once each"
        );
        for r in &seen {
            assert!(
                r.path.starts_with(&mine),
                "{id} sent by the gateway holding it: {}",
                r.path
            );
        }
    }
    Ok(())
}
