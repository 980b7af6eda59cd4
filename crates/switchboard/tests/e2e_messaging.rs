//! Messages from the REST API reach official JS clients (JSON and MessagePack), on both REST
//! surfaces, for every target type; closing connections through the API. Each test runs on both
//! engines: one all-in-one node (Raft), and two gateways on one Redis with the clients on one and
//! the REST calls on the other.

#[macro_use]
mod common;

use common::*;
use serde_json::json;

async fn broadcast_reaches_json_and_messagepack_clients_on_both_surfaces(
    engine: Engine,
) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    js.connect("json", clients, ConnectOptions::default())
        .await?;
    js.connect(
        "mp",
        clients,
        ConnectOptions {
            protocol: "messagepack",
            ..Default::default()
        },
    )
    .await?;
    js.connect(
        "other-hub",
        clients,
        ConnectOptions {
            hub: "news",
            ..Default::default()
        },
    )
    .await?;

    let args = json!(["hello", 42, 1.5, true, null, {"nested": [1, "two"]}]);
    let r = server
        .rest(
            "POST",
            "/api/v1/hubs/chat",
            Some(body("message", args.clone())),
        )
        .await?;
    assert_status(&r, 202);
    let r = server
        .rest(
            "POST",
            "/api/hubs/Chat/:send?api-version=2022-06-01",
            Some(json!({"target": "message", "arguments": ["second"]})),
        )
        .await?;
    assert_status(&r, 202);

    for name in ["json", "mp"] {
        let m = js.next_message(name).await?;
        assert_eq!(m.target, "message");
        assert_eq!(serde_json::Value::Array(m.args), args, "client {name}");
        let m = js.next_message(name).await?;
        assert_eq!(m.args, vec![json!("second")], "client {name}");
    }
    js.expect_silence("other-hub", SHORT).await?;
    Ok(())
}

async fn broadcast_skips_excluded_connections(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    let a = js.connect_simple("a", clients, "chat", None).await?;
    let b = js.connect_simple("b", clients, "chat", None).await?;
    js.connect_simple("c", clients, "chat", None).await?;
    let r = server
        .rest(
            "POST",
            &format!("/api/hubs/chat/:send?excluded={a}&excluded={b}&api-version=2024-12-01"),
            Some(body("message", json!([1]))),
        )
        .await?;
    assert_status(&r, 202);
    assert_eq!(js.next_message("c").await?.args, vec![json!(1)]);
    js.expect_silence("a", SHORT).await?;
    js.expect_silence("b", SHORT).await?;
    Ok(())
}

async fn send_to_user_reaches_every_connection_of_that_user_only(
    engine: Engine,
) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    js.connect_simple("alice1", clients, "chat", Some("alice"))
        .await?;
    js.connect(
        "alice2",
        clients,
        ConnectOptions {
            user: Some("alice"),
            protocol: "messagepack",
            ..Default::default()
        },
    )
    .await?;
    js.connect_simple("bob", clients, "chat", Some("bob"))
        .await?;

    let r = server
        .rest(
            "POST",
            "/api/v1/hubs/chat/users/alice",
            Some(body("message", json!(["v1"]))),
        )
        .await?;
    assert_status(&r, 202);
    let r = server
        .rest(
            "POST",
            "/api/hubs/chat/users/alice/:send?api-version=2022-06-01",
            Some(body("message", json!(["new"]))),
        )
        .await?;
    assert_status(&r, 202);
    for name in ["alice1", "alice2"] {
        assert_eq!(js.next_message(name).await?.args, vec![json!("v1")]);
        assert_eq!(js.next_message(name).await?.args, vec![json!("new")]);
    }
    js.expect_silence("bob", SHORT).await?;

    // Existence follows the user's connections.
    expect_status(
        server,
        "HEAD",
        "/api/hubs/chat/users/alice?api-version=2022-06-01",
        200,
    )
    .await?;
    expect_status(server, "GET", "/api/v1/hubs/chat/users/alice", 200).await?;
    let r = server
        .rest(
            "HEAD",
            "/api/hubs/chat/users/carol?api-version=2022-06-01",
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Warning.User.NotExisted"));
    js.stop("bob").await?;
    // The server notices the disconnect asynchronously.
    let r = eventually(std::time::Duration::from_secs(5), "bob gone", || async {
        let r = server
            .rest("GET", "/api/v1/hubs/chat/users/bob", None)
            .await
            .ok()?;
        (r.status == 404).then_some(r)
    })
    .await?;
    assert_error(&r, 404, Some("Warning.User.NotExisted"));
    Ok(())
}

async fn send_to_connection_and_connection_existence(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    let a = js.connect_simple("a", clients, "chat", None).await?;
    js.connect_simple("b", clients, "chat", None).await?;

    send_ok(
        server,
        &format!("/api/v1/hubs/chat/connections/{a}"),
        json!(["one"]),
    )
    .await?;
    send_ok(
        server,
        &format!("/api/hubs/chat/connections/{a}/:send?api-version=2022-06-01"),
        json!(["two"]),
    )
    .await?;
    assert_eq!(js.next_message("a").await?.args, vec![json!("one")]);
    assert_eq!(js.next_message("a").await?.args, vec![json!("two")]);
    js.expect_silence("b", SHORT).await?;

    expect_status(
        server,
        "HEAD",
        &format!("/api/hubs/chat/connections/{a}?api-version=2022-06-01"),
        200,
    )
    .await?;
    expect_status(
        server,
        "GET",
        &format!("/api/v1/hubs/chat/connections/{a}"),
        200,
    )
    .await?;
    // A connection exists only in its own hub.
    let r = server
        .rest(
            "HEAD",
            &format!("/api/hubs/news/connections/{a}?api-version=2022-06-01"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Warning.Connection.NotExisted"));
    let r = server
        .rest("GET", "/api/v1/hubs/chat/connections/nope", None)
        .await?;
    assert_error(&r, 404, Some("Warning.Connection.NotExisted"));
    Ok(())
}

async fn application_prefixes_the_hub(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    js.connect_simple("app", clients, "myapp_chat", None)
        .await?;
    js.connect_simple("plain", clients, "chat", None).await?;
    let r = server
        .rest(
            "POST",
            "/api/hubs/chat/:send?application=MyApp&api-version=2022-06-01",
            Some(body("message", json!(["app"]))),
        )
        .await?;
    assert_status(&r, 202);
    assert_eq!(js.next_message("app").await?.args, vec![json!("app")]);
    js.expect_silence("plain", SHORT).await?;
    Ok(())
}

async fn messagepack_and_preserialized_bodies(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    js.connect("json", clients, ConnectOptions::default())
        .await?;
    js.connect(
        "mp",
        clients,
        ConnectOptions {
            protocol: "messagepack",
            ..Default::default()
        },
    )
    .await?;

    // application/x-msgpack: the PayloadMessage as a MessagePack map.
    let payload = rmpv::Value::Map(vec![
        (rmpv::Value::from("target"), rmpv::Value::from("message")),
        (
            rmpv::Value::from("arguments"),
            rmpv::Value::Array(vec![rmpv::Value::from("packed"), rmpv::Value::from(7)]),
        ),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &payload)?;
    let path = "/api/hubs/chat/:send?api-version=2022-06-01";
    let r = server
        .rest_with(
            "POST",
            path,
            Some(&server.rest_token(path)),
            Some(("application/x-msgpack", bytes)),
        )
        .await?;
    assert_status(&r, 202);

    // application/octet-stream: frames serialized by the caller for each protocol, forwarded as is.
    let json_frame =
        b"{\"type\":1,\"target\":\"message\",\"arguments\":[\"from-json-frame\"]}\x1e".to_vec();
    let mp_frame =
        switchboard_protocol::msgpack_invocation_frame("message", &[json!("from-msgpack-frame")])?
            .to_vec();
    let map = rmpv::Value::Map(vec![
        (rmpv::Value::from("json"), rmpv::Value::Binary(json_frame)),
        (
            rmpv::Value::from("messagepack"),
            rmpv::Value::Binary(mp_frame),
        ),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &map)?;
    let r = server
        .rest_with(
            "POST",
            path,
            Some(&server.rest_token(path)),
            Some(("application/octet-stream", bytes)),
        )
        .await?;
    assert_status(&r, 202);

    for name in ["json", "mp"] {
        assert_eq!(
            js.next_message(name).await?.args,
            vec![json!("packed"), json!(7)],
            "{name}"
        );
    }
    assert_eq!(
        js.next_message("json").await?.args,
        vec![json!("from-json-frame")]
    );
    assert_eq!(
        js.next_message("mp").await?.args,
        vec![json!("from-msgpack-frame")]
    );
    Ok(())
}

async fn messages_from_one_sender_arrive_in_order(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    js.connect_simple("a", clients, "chat", Some("u")).await?;
    js.connect(
        "b",
        clients,
        ConnectOptions {
            protocol: "messagepack",
            user: Some("u"),
            ..Default::default()
        },
    )
    .await?;
    for i in 0..100 {
        let path = match i % 2 {
            0 => "/api/v1/hubs/chat".to_owned(),
            _ => "/api/hubs/chat/users/u/:send?api-version=2022-06-01".to_owned(),
        };
        assert_status(
            &server
                .rest("POST", &path, Some(body("message", json!([i]))))
                .await?,
            202,
        );
    }
    for name in ["a", "b"] {
        for i in 0..100 {
            assert_eq!(
                js.next_message(name).await?.args,
                vec![json!(i)],
                "client {name}"
            );
        }
    }
    Ok(())
}

async fn closing_a_connection_tells_the_client_why(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    let a = js.connect_simple("a", clients, "chat", None).await?;
    let b = js.connect_simple("b", clients, "chat", None).await?;

    let r = server
        .rest(
            "DELETE",
            &format!(
                "/api/hubs/chat/connections/{a}?reason=kicked+by+admin&api-version=2022-06-01"
            ),
            None,
        )
        .await?;
    assert_status(&r, 200);
    let error = js.wait_closed("a").await?.unwrap_or_default();
    assert!(
        error.contains("kicked by admin"),
        "close error was {error:?}"
    );
    eventually(std::time::Duration::from_secs(5), "connection gone", || {
        let s = &server;
        let a = a.clone();
        async move {
            let r = s
                .rest(
                    "HEAD",
                    &format!("/api/hubs/chat/connections/{a}?api-version=2022-06-01"),
                    None,
                )
                .await
                .ok()?;
            (r.status == 404).then_some(())
        }
    })
    .await?;
    // Closing it again: the versioned surface reports it gone; v1 accepts.
    let r = server
        .rest(
            "DELETE",
            &format!("/api/hubs/chat/connections/{a}?api-version=2022-06-01"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Warning.Connection.NotExisted"));
    expect_status(
        server,
        "DELETE",
        &format!("/api/v1/hubs/chat/connections/{b}?reason=v1"),
        202,
    )
    .await?;
    let error = js.wait_closed("b").await?.unwrap_or_default();
    assert!(error.contains("v1"), "close error was {error:?}");
    Ok(())
}

async fn close_connections_of_a_hub_and_of_a_user(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    js.connect_simple("u1", clients, "chat", Some("u")).await?;
    let keep = js.connect_simple("u2", clients, "chat", Some("u")).await?;
    js.connect_simple("other", clients, "chat", Some("v"))
        .await?;
    js.connect_simple("elsewhere", clients, "news", Some("u"))
        .await?;

    let r = server
        .rest("POST", &format!("/api/hubs/chat/users/u/:closeConnections?excluded={keep}&reason=bye-user&api-version=2022-06-01"), None)
        .await?;
    assert_status(&r, 204);
    assert!(js
        .wait_closed("u1")
        .await?
        .unwrap_or_default()
        .contains("bye-user"));
    js.expect_silence("u2", SHORT).await?;
    js.expect_silence("other", SHORT).await?;

    let r = server.rest("POST", &format!("/api/hubs/chat/:closeConnections?excluded={keep}&reason=bye-hub&api-version=2022-06-01"), None).await?;
    assert_status(&r, 204);
    assert!(js
        .wait_closed("other")
        .await?
        .unwrap_or_default()
        .contains("bye-hub"));
    js.expect_silence("u2", SHORT).await?;
    js.expect_silence("elsewhere", SHORT).await?;
    assert_eq!(js.state("u2").await?.0, "Connected");
    assert_eq!(js.state("elsewhere").await?.0, "Connected");
    Ok(())
}

async fn generated_client_tokens_connect(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let path = "/api/hubs/chat/:generateToken?userId=zoe&minutesToExpire=5&api-version=2022-11-01";
    let r = server.rest("POST", path, None).await?;
    assert_status(&r, 200);
    let token = r.json()?["token"].as_str().expect("token").to_owned();
    let mut js = JsClients::start().await?;
    js.connect(
        "zoe",
        clients,
        ConnectOptions {
            token: Some(token),
            ..Default::default()
        },
    )
    .await?;
    send_ok(server, "/api/v1/hubs/chat/users/zoe", json!(["hi zoe"])).await?;
    assert_eq!(js.next_message("zoe").await?.args, vec![json!("hi zoe")]);

    let bad = server
        .rest(
            "POST",
            "/api/hubs/chat/:generateToken?minutesToExpire=0&api-version=2022-11-01",
            None,
        )
        .await?;
    assert_error(&bad, 400, None);
    Ok(())
}

on_every_engine!(
    broadcast_reaches_json_and_messagepack_clients_on_both_surfaces,
    broadcast_skips_excluded_connections,
    send_to_user_reaches_every_connection_of_that_user_only,
    send_to_connection_and_connection_existence,
    application_prefixes_the_hub,
    messagepack_and_preserialized_bodies,
    messages_from_one_sender_arrive_in_order,
    closing_a_connection_tells_the_client_why,
    close_connections_of_a_hub_and_of_a_user,
    generated_client_tokens_connect,
);
