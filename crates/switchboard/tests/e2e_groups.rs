//! Groups and user groups through both REST surfaces, with the official client: membership,
//! group sends, auto-join, TTL expiry, ttl=0, the 100-group cap, listings and closes. Each test
//! runs on both engines: one all-in-one node (Raft), and two gateways on one Redis with the
//! clients on one and the REST calls on the other.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const V: &str = "api-version=2022-06-01";

async fn group_send(
    server: &Server,
    group: &str,
    excluded: &[&str],
    text: &str,
) -> anyhow::Result<()> {
    let mut q = String::new();
    for e in excluded {
        q.push_str(&format!("excluded={e}&"));
    }
    let r = server
        .rest(
            "POST",
            &format!("/api/hubs/chat/groups/{group}/:send?{q}{V}"),
            Some(body("message", json!([text]))),
        )
        .await?;
    assert_status(&r, 202);
    Ok(())
}

async fn connections_join_and_leave_groups_on_both_surfaces(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    let a = js.connect_simple("a", clients, "chat", None).await?;
    let b = js
        .connect(
            "b",
            clients,
            ConnectOptions {
                protocol: "messagepack",
                ..Default::default()
            },
        )
        .await?;
    let c = js.connect_simple("c", clients, "chat", None).await?;

    let r = server
        .rest("HEAD", &format!("/api/hubs/chat/groups/room?{V}"), None)
        .await?;
    assert_error(&r, 404, Some("Warning.Group.NotExisted"));
    expect_status(
        server,
        "PUT",
        &format!("/api/v1/hubs/chat/groups/room/connections/{a}"),
        200,
    )
    .await?;
    expect_status(
        server,
        "PUT",
        &format!("/api/hubs/chat/groups/room/connections/{b}?{V}"),
        200,
    )
    .await?;
    // The alias path /connections/{c}/groups/{g} works too.
    expect_status(
        server,
        "PUT",
        &format!("/api/hubs/chat/connections/{c}/groups/room?{V}"),
        200,
    )
    .await?;
    expect_status(
        server,
        "HEAD",
        &format!("/api/hubs/chat/groups/room?{V}"),
        200,
    )
    .await?;
    expect_status(server, "GET", "/api/v1/hubs/chat/groups/room", 200).await?;

    group_send(server, "room", &[&c], "hello room").await?;
    send_ok(server, "/api/v1/hubs/chat/groups/room", json!(["v1 room"])).await?;
    for name in ["a", "b"] {
        assert_eq!(
            js.next_message(name).await?.args,
            vec![json!("hello room")],
            "{name}"
        );
        assert_eq!(
            js.next_message(name).await?.args,
            vec![json!("v1 room")],
            "{name}"
        );
    }
    assert_eq!(
        js.next_message("c").await?.args,
        vec![json!("v1 room")],
        "excluded only from the first send"
    );

    expect_status(
        server,
        "DELETE",
        &format!("/api/v1/hubs/chat/groups/room/connections/{a}"),
        200,
    )
    .await?;
    expect_status(
        server,
        "DELETE",
        &format!("/api/hubs/chat/connections/{c}/groups?{V}"),
        200,
    )
    .await?;
    group_send(server, "room", &[], "only b").await?;
    assert_eq!(js.next_message("b").await?.args, vec![json!("only b")]);
    js.expect_silence("a", SHORT).await?;
    js.expect_silence("c", SHORT).await?;

    // Operations on connections that do not exist.
    let r = server
        .rest(
            "PUT",
            &format!("/api/hubs/chat/groups/room/connections/ghost?{V}"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Error.Connection.NotExisted"));
    let r = server
        .rest(
            "DELETE",
            &format!("/api/hubs/chat/groups/room/connections/ghost?{V}"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Warning.Connection.NotExisted"));

    // Membership ends with the connection.
    js.stop("b").await?;
    eventually(
        Duration::from_secs(5),
        "group empty after disconnect",
        || {
            let s = &server;
            async move {
                let r = s
                    .rest("HEAD", &format!("/api/hubs/chat/groups/room?{V}"), None)
                    .await
                    .ok()?;
                (r.status == 404).then_some(())
            }
        },
    )
    .await?;
    Ok(())
}

async fn user_groups_auto_join_new_connections_and_removal_removes_them(
    engine: Engine,
) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    js.connect_simple("u1", clients, "chat", Some("u")).await?;

    // v1: PUT/DELETE answer 202; versioned: 200 and 204.
    expect_status(server, "PUT", "/api/v1/hubs/chat/groups/g1/users/u", 202).await?;
    expect_status(
        server,
        "PUT",
        &format!("/api/hubs/chat/users/u/groups/g2?{V}"),
        200,
    )
    .await?;
    // The current connection joined both.
    group_send(server, "g1", &[], "g1").await?;
    assert_eq!(js.next_message("u1").await?.args, vec![json!("g1")]);

    // A new connection of the user joins every live group of the user.
    js.connect(
        "u2",
        clients,
        ConnectOptions {
            user: Some("u"),
            protocol: "messagepack",
            ..Default::default()
        },
    )
    .await?;
    group_send(server, "g2", &[], "g2").await?;
    assert_eq!(js.next_message("u1").await?.args, vec![json!("g2")]);
    assert_eq!(js.next_message("u2").await?.args, vec![json!("g2")]);

    // user-in-group: HEAD and GET (the .NET SDK uses GET), both path forms.
    expect_status(
        server,
        "HEAD",
        &format!("/api/hubs/chat/users/u/groups/g1?{V}"),
        200,
    )
    .await?;
    expect_status(
        server,
        "GET",
        &format!("/api/hubs/chat/users/u/groups/g1?{V}"),
        200,
    )
    .await?;
    expect_status(server, "GET", "/api/v1/hubs/chat/groups/g2/users/u", 200).await?;
    let r = server
        .rest(
            "GET",
            &format!("/api/hubs/chat/users/u/groups/nope?{V}"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Info.User.NotInGroup"));

    // Removing the user from a group removes the current connections from it.
    expect_status(
        server,
        "DELETE",
        &format!("/api/hubs/chat/users/u/groups/g1?{V}"),
        204,
    )
    .await?;
    group_send(server, "g1", &[], "after removal").await?;
    js.expect_silence("u1", SHORT).await?;
    let r = server
        .rest(
            "HEAD",
            &format!("/api/hubs/chat/users/u/groups/g1?{V}"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Info.User.NotInGroup"));

    // Remove from all groups: v1 answers 200, versioned 204.
    expect_status(server, "DELETE", "/api/v1/hubs/chat/users/u/groups", 200).await?;
    group_send(server, "g2", &[], "after all").await?;
    js.expect_silence("u1", SHORT).await?;
    js.expect_silence("u2", SHORT).await?;
    expect_status(server, "PUT", "/api/v1/hubs/chat/groups/g3/users/u", 202).await?;
    expect_status(
        server,
        "DELETE",
        &format!("/api/hubs/chat/users/u/groups?{V}"),
        204,
    )
    .await?;
    expect_status(server, "DELETE", "/api/v1/hubs/chat/groups/g3/users/u", 202).await?;
    Ok(())
}

async fn user_group_ttl_expires_without_traffic(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    js.connect_simple("early", clients, "chat", Some("t"))
        .await?;
    expect_status(
        server,
        "PUT",
        &format!("/api/hubs/chat/users/t/groups/brief?ttl=2&{V}"),
        200,
    )
    .await?;
    expect_status(
        server,
        "HEAD",
        &format!("/api/hubs/chat/users/t/groups/brief?{V}"),
        200,
    )
    .await?;
    js.connect_simple("before-expiry", clients, "chat", Some("t"))
        .await?;
    group_send(server, "brief", &[], "in time").await?;
    assert_eq!(js.next_message("early").await?.args, vec![json!("in time")]);
    assert_eq!(
        js.next_message("before-expiry").await?.args,
        vec![json!("in time")]
    );

    // Expiry: a new connection no longer auto-joins; connections that joined stay in the group.
    js.stop("early").await?;
    js.stop("before-expiry").await?;
    eventually(Duration::from_secs(10), "user-group entry expired", || {
        let s = &server;
        async move {
            let r = s
                .rest(
                    "HEAD",
                    &format!("/api/hubs/chat/users/t/groups/brief?{V}"),
                    None,
                )
                .await
                .ok()?;
            (r.status == 404).then_some(())
        }
    })
    .await?;
    js.connect_simple("late", clients, "chat", Some("t"))
        .await?;
    group_send(server, "brief", &[], "too late").await?;
    js.expect_silence("late", SHORT).await?;
    Ok(())
}

async fn ttl_zero_adds_only_current_connections(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    js.connect_simple("now", clients, "chat", Some("z")).await?;
    expect_status(
        server,
        "PUT",
        &format!("/api/hubs/chat/users/z/groups/once?ttl=0&{V}"),
        200,
    )
    .await?;
    group_send(server, "once", &[], "current").await?;
    assert_eq!(js.next_message("now").await?.args, vec![json!("current")]);
    // Its connection is in the group, but nothing is stored: the user is not in it (the stored
    // entry alone answers, as in Azure's emulator).
    let r = server
        .rest(
            "GET",
            &format!("/api/hubs/chat/users/z/groups/once?{V}"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Info.User.NotInGroup"));
    js.stop("now").await?;
    js.connect_simple("later", clients, "chat", Some("z"))
        .await?;
    group_send(server, "once", &[], "not stored").await?;
    js.expect_silence("later", SHORT).await?;
    let r = server
        .rest(
            "HEAD",
            &format!("/api/hubs/chat/users/z/groups/once?{V}"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Info.User.NotInGroup"));
    Ok(())
}

async fn only_the_latest_100_groups_without_ttl_are_kept(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    for i in 0..100 {
        expect_status(
            server,
            "PUT",
            &format!("/api/hubs/chat/users/capped/groups/g{i}?{V}"),
            200,
        )
        .await?;
    }
    // A TTL group does not count toward the cap.
    expect_status(
        server,
        "PUT",
        &format!("/api/hubs/chat/users/capped/groups/timed?ttl=3600&{V}"),
        200,
    )
    .await?;
    // Refreshing g0 makes g1 the least recently updated.
    expect_status(
        server,
        "PUT",
        &format!("/api/hubs/chat/users/capped/groups/g0?{V}"),
        200,
    )
    .await?;
    expect_status(
        server,
        "PUT",
        &format!("/api/hubs/chat/users/capped/groups/g100?{V}"),
        200,
    )
    .await?;
    let r = server
        .rest(
            "HEAD",
            &format!("/api/hubs/chat/users/capped/groups/g1?{V}"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Info.User.NotInGroup"));
    for g in ["g0", "g2", "g99", "g100", "timed"] {
        expect_status(
            server,
            "HEAD",
            &format!("/api/hubs/chat/users/capped/groups/{g}?{V}"),
            200,
        )
        .await?;
    }
    // A new connection joins exactly the 100 kept groups plus the TTL one.
    let mut js = JsClients::start().await?;
    js.connect_simple("c", clients, "chat", Some("capped"))
        .await?;
    group_send(server, "g1", &[], "evicted").await?;
    group_send(server, "g100", &[], "kept").await?;
    assert_eq!(js.next_message("c").await?.args, vec![json!("kept")]);
    Ok(())
}

async fn close_group_connections_and_list_them_in_pages(engine: Engine) -> anyhow::Result<()> {
    let d = Deployment::start(engine).await?;
    let (server, clients) = (d.rest(), d.clients());
    let mut js = JsClients::start().await?;
    let mut ids = Vec::new();
    for i in 0..5 {
        let name = format!("m{i}");
        let id = js
            .connect_simple(&name, clients, "chat", Some(&format!("user{i}")))
            .await?;
        expect_status(
            server,
            "PUT",
            &format!("/api/hubs/chat/groups/big/connections/{id}?{V}"),
            200,
        )
        .await?;
        ids.push(id);
    }
    // Page through with maxpagesize=2, following nextLink.
    let mut seen = Vec::new();
    let mut path =
        "/api/hubs/chat/groups/big/connections?maxpagesize=2&api-version=2024-12-01".to_owned();
    loop {
        let r = server.rest("GET", &path, None).await?;
        assert_status(&r, 200);
        let page = r.json()?;
        let values = page["value"].as_array().cloned().unwrap_or_default();
        assert!(values.len() <= 2, "{page}");
        for v in values {
            let id = v["connectionId"].as_str().unwrap_or_default().to_owned();
            let idx = ids.iter().position(|x| *x == id).expect("a member");
            assert_eq!(v["userId"], json!(format!("user{idx}")));
            seen.push(id);
        }
        match page["nextLink"].as_str() {
            Some(link) => {
                let url = reqwest::Url::parse(link)?;
                path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
            }
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.sort();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    // `top` caps the total across pages.
    let r = server
        .rest(
            "GET",
            "/api/hubs/chat/groups/big/connections?top=3&maxpagesize=2&api-version=2024-12-01",
            None,
        )
        .await?;
    let page = r.json()?;
    assert_eq!(page["value"].as_array().map(Vec::len), Some(2));
    let link = page["nextLink"].as_str().expect("a next page").to_owned();
    let url = reqwest::Url::parse(&link)?;
    let r = server
        .rest(
            "GET",
            &format!("{}?{}", url.path(), url.query().unwrap_or_default()),
            None,
        )
        .await?;
    let page = r.json()?;
    assert_eq!(page["value"].as_array().map(Vec::len), Some(1));
    assert!(page.get("nextLink").is_none(), "{page}");

    // Close the group's connections except one.
    let r = server
        .rest(
            "POST",
            &format!(
                "/api/hubs/chat/groups/big/:closeConnections?excluded={}&reason=room+closed&{V}",
                ids[0]
            ),
            None,
        )
        .await?;
    assert_status(&r, 204);
    for i in 1..5 {
        let error = js.wait_closed(&format!("m{i}")).await?.unwrap_or_default();
        assert!(error.contains("room closed"), "{error}");
    }
    assert_eq!(js.state("m0").await?.0, "Connected");
    Ok(())
}

on_every_engine!(
    connections_join_and_leave_groups_on_both_surfaces,
    user_groups_auto_join_new_connections_and_removal_removes_them,
    user_group_ttl_expires_without_traffic,
    ttl_zero_adds_only_current_connections,
    only_the_latest_100_groups_without_ttl_are_kept,
    close_group_connections_and_list_them_in_pages,
);
