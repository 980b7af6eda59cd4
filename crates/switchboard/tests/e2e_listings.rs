//! The membership queries Switchboard adds to the REST API (beyond Azure, in the shape of the
//! 2024-12-01 group listing): a hub's connections, a user's connections, a connection's groups
//! and a user's stored groups. Each runs on both engines with three gateways: the connections
//! are held by two of them and the questions go to the third, so every answer is the union of
//! other gateways' answers.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const V: &str = "api-version=2024-12-01";

/// Every item of a listing, following `nextLink` from `path` (each page at most `page` items).
async fn all_pages(server: &Server, path: &str, page: usize) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut path = path.to_owned();
    for _ in 0..100 {
        let r = server.rest("GET", &path, None).await?;
        assert_status(&r, 200);
        let body = r.json()?;
        let values = body["value"].as_array().cloned().unwrap_or_default();
        assert!(values.len() <= page, "page over {page}: {body}");
        items.extend(values);
        match body["nextLink"].as_str() {
            Some(link) => {
                let url = reqwest::Url::parse(link)?;
                assert!(
                    url.query()
                        .is_some_and(|q| q.contains("api-version=2024-12-01")),
                    "{link}"
                );
                path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
            }
            None => return Ok(items),
        }
    }
    anyhow::bail!("more than 100 pages from {path}")
}

fn field<'a>(items: &'a [Value], name: &str) -> Vec<&'a str> {
    items.iter().filter_map(|v| v[name].as_str()).collect()
}

async fn membership_queries_answer_for_the_whole_cluster(engine: Engine) -> anyhow::Result<()> {
    let cluster = match engine {
        Engine::Raft => Cluster::serve(bin(), 3, &[]).await?,
        Engine::Redis => Cluster::on_redis(bin(), 3, &[]).await?,
    };
    let nodes = cluster.entry_points();
    let (g0, g1, rest) = (nodes[0], nodes[1], nodes[2]);
    let mut js = JsClients::start().await?;
    let a = js.connect_simple("a", g0, "chat", Some("ann")).await?;
    let b = js.connect_simple("b", g1, "chat", Some("ann")).await?;
    let c = js.connect_simple("c", g1, "chat", Some("ben")).await?;
    let d = js.connect_simple("d", g0, "chat", None).await?;
    let other = js.connect_simple("o", g0, "other", Some("ann")).await?;

    // A hub's connections, in id order, paged, from both gateways.
    let mut expected = vec![a.clone(), b.clone(), c.clone(), d.clone()];
    expected.sort();
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/connections?maxpagesize=3&{V}"),
        3,
    )
    .await?;
    assert_eq!(field(&listed, "connectionId"), expected);
    for item in &listed {
        let id = item["connectionId"].as_str().unwrap_or_default();
        let user = if id == a || id == b {
            Some("ann")
        } else if id == c {
            Some("ben")
        } else {
            None
        };
        assert_eq!(item["userId"].as_str(), user, "{item}");
    }
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/connections?maxpagesize=1&{V}"),
        1,
    )
    .await?;
    assert_eq!(field(&listed, "connectionId"), expected);
    // `top` caps the whole listing.
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/connections?top=3&maxpagesize=2&{V}"),
        2,
    )
    .await?;
    assert_eq!(field(&listed, "connectionId"), expected[..3].to_vec());
    // `application` names another hub.
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/connections?application=app&{V}"),
        200,
    )
    .await?;
    assert!(listed.is_empty(), "{listed:?}");
    let listed = all_pages(rest, &format!("/api/hubs/other/connections?{V}"), 200).await?;
    assert_eq!(field(&listed, "connectionId"), vec![other.as_str()]);

    // A user's connections on every gateway; a user with none has an empty listing.
    let mut anns = vec![a.clone(), b.clone()];
    anns.sort();
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/users/ann/connections?maxpagesize=1&{V}"),
        1,
    )
    .await?;
    assert_eq!(field(&listed, "connectionId"), anns);
    assert_eq!(field(&listed, "userId"), vec!["ann", "ann"]);
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/users/nobody/connections?{V}"),
        200,
    )
    .await?;
    assert!(listed.is_empty());

    // A connection's groups: joined directly, and through its user's stored groups.
    for group in ["g2", "g1"] {
        expect_status(
            rest,
            "PUT",
            &format!("/api/hubs/chat/groups/{group}/connections/{b}?{V}"),
            200,
        )
        .await?;
    }
    expect_status(
        rest,
        "PUT",
        &format!("/api/hubs/chat/users/ann/groups/stored?ttl=3600&{V}"),
        200,
    )
    .await?;
    expect_status(
        rest,
        "PUT",
        &format!("/api/hubs/chat/users/ann/groups/forever?{V}"),
        200,
    )
    .await?;
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/connections/{b}/groups?maxpagesize=3&{V}"),
        3,
    )
    .await?;
    assert_eq!(
        field(&listed, "group"),
        vec!["forever", "g1", "g2", "stored"]
    );
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/connections/{a}/groups?{V}"),
        200,
    )
    .await?;
    assert_eq!(field(&listed, "group"), vec!["forever", "stored"]);
    // A connection in no group lists none; one that does not exist is a 404.
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/connections/{d}/groups?{V}"),
        200,
    )
    .await?;
    assert!(listed.is_empty());
    let r = rest
        .rest(
            "GET",
            &format!("/api/hubs/chat/connections/nope/groups?{V}"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Warning.Connection.NotExisted"));

    // A user's stored groups with their expiry (a year without a TTL), from the store, whether
    // or not the user is connected.
    let before = common::now_ms();
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/users/ann/groups?maxpagesize=1&{V}"),
        1,
    )
    .await?;
    assert_eq!(field(&listed, "group"), vec!["forever", "stored"]);
    let rfc3339 = |ms: u64| {
        switchboard_protocol::value::rfc3339_utc((ms / 1000) as i64, 0).unwrap_or_default()
    };
    let stored = listed[1]["expiresAt"].as_str().unwrap_or_default();
    let (low, high) = (rfc3339(before + 3_590_000), rfc3339(before + 3_610_000));
    assert!(
        low.as_str() < stored && stored < high.as_str(),
        "{low} < {stored} < {high}"
    );
    assert_eq!(listed[1]["countsTowardLimit"], json!(false));
    let forever = listed[0]["expiresAt"].as_str().unwrap_or_default();
    let year = 365 * 24 * 3_600_000;
    let (low, high) = (
        rfc3339(before + year - 60_000),
        rfc3339(before + year + 60_000),
    );
    assert!(
        low.as_str() < forever && forever < high.as_str(),
        "{low} < {forever} < {high}"
    );
    assert_eq!(listed[0]["countsTowardLimit"], json!(true));
    let listed = all_pages(rest, &format!("/api/hubs/chat/users/ben/groups?{V}"), 200).await?;
    assert!(listed.is_empty());

    // A closed connection leaves every listing.
    js.stop("b").await?;
    eventually(Duration::from_secs(10), "b leaves the listings", || async {
        let listed = all_pages(rest, &format!("/api/hubs/chat/connections?{V}"), 200)
            .await
            .ok()?;
        (!field(&listed, "connectionId").contains(&b.as_str())).then_some(())
    })
    .await?;
    let listed = all_pages(
        rest,
        &format!("/api/hubs/chat/users/ann/connections?{V}"),
        200,
    )
    .await?;
    assert_eq!(field(&listed, "connectionId"), vec![a.as_str()]);
    let r = rest
        .rest(
            "GET",
            &format!("/api/hubs/chat/connections/{b}/groups?{V}"),
            None,
        )
        .await?;
    assert_error(&r, 404, Some("Warning.Connection.NotExisted"));
    Ok(())
}

on_every_engine!(membership_queries_answer_for_the_whole_cluster);

#[tokio::test]
async fn listings_need_a_rest_token_for_their_path_and_refuse_bad_paging() -> anyhow::Result<()> {
    let server = server().await?;
    let mut js = JsClients::start().await?;
    let id = js.connect_simple("a", &server, "chat", Some("ann")).await?;
    let paths = [
        "/api/hubs/chat/connections".to_owned(),
        "/api/hubs/chat/users/ann/connections".to_owned(),
        format!("/api/hubs/chat/connections/{id}/groups"),
        "/api/hubs/chat/users/ann/groups".to_owned(),
    ];
    for path in &paths {
        let url = server.url(&format!("{path}?{V}"));
        let http = reqwest::Client::new();
        // No token, a token for another path, a client token: 401 with an ErrorDetail.
        let other = server.rest_token("/api/hubs/chat/groups/g/connections");
        let client = server.client_token("chat", Some("ann"));
        for auth in [None, Some(other), Some(client)] {
            let mut request = http.get(&url);
            if let Some(token) = auth {
                request = request.bearer_auth(token);
            }
            let r = request.send().await?;
            assert_eq!(r.status(), 401, "{path}");
            let detail: Value = r.json().await?;
            assert!(
                detail["code"].is_string() && detail["message"].is_string(),
                "{detail}"
            );
        }
        // The legacy surface answers too.
        let legacy = path.replacen("/api/", "/api/v1/", 1);
        let r = server.rest("GET", &legacy, None).await?;
        assert_status(&r, 200);
        // Bad paging: 400 naming the parameter.
        for (query, target) in [
            ("maxpagesize=0", "maxpagesize"),
            ("maxpagesize=201", "maxpagesize"),
            ("top=0", "top"),
            ("top=x", "top"),
            ("continuationToken=%25%25", "continuationToken"),
        ] {
            let r = server
                .rest("GET", &format!("{path}?{query}&{V}"), None)
                .await?;
            assert_error(&r, 400, None);
            assert_eq!(r.json()?["target"], json!(target), "{path}?{query}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token_and_lists_the_extensions(
) -> anyhow::Result<()> {
    let server = server().await?;
    let r = reqwest::get(server.url("/api/openapi.json")).await?;
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json")));
    let doc: Value = r.json().await?;
    assert_eq!(doc["openapi"], json!("3.1.0"));
    for (path, verb) in [
        ("/api/hubs/{hub}/connections", "get"),
        ("/api/hubs/{hub}/users/{user}/connections", "get"),
        ("/api/hubs/{hub}/connections/{connectionId}/groups", "get"),
        ("/api/hubs/{hub}/users/{user}/groups", "get"),
        ("/api/v1/hubs/{hub}/groups/{group}/connections", "get"),
        ("/api/hubs/{hub}/:send", "post"),
    ] {
        let op = &doc["paths"][path][verb];
        assert!(op.is_object(), "{verb} {path} is documented");
        assert!(
            op["responses"]["401"].is_object(),
            "{verb} {path} documents 401"
        );
    }
    Ok(())
}

/// A gateway that holds part of a hub and does not answer makes a listing 503 (a page without
/// its part would look complete, and the next page would skip it for good), until it answers
/// again or its lease ends.
#[tokio::test]
async fn a_listing_is_unavailable_while_a_gateway_of_the_hub_does_not_answer() -> anyhow::Result<()>
{
    let cluster = Cluster::serve(bin(), 3, &[]).await?;
    let nodes = cluster.entry_points();
    let (asked, silent) = (nodes[0], nodes[1]);
    let mut js = JsClients::start().await?;
    let id = js.connect_simple("a", silent, "chat", Some("ann")).await?;
    // First the listing works and shows the connection held by the other gateway.
    let listed = all_pages(asked, &format!("/api/hubs/chat/connections?{V}"), 200).await?;
    assert_eq!(field(&listed, "connectionId"), vec![id.as_str()]);
    cluster.voters[1].pause().await?;
    let r = asked
        .rest("GET", &format!("/api/hubs/chat/connections?{V}"), None)
        .await?;
    let answered = r.status;
    let r2 = asked
        .rest(
            "GET",
            &format!("/api/hubs/chat/connections/{id}/groups?{V}"),
            None,
        )
        .await?;
    cluster.voters[1].resume()?;
    assert_error(&r, 503, None);
    assert_eq!(answered, 503);
    assert_error(&r2, 503, None);
    eventually(
        Duration::from_secs(10),
        "the listing answers again",
        || async {
            let r = asked
                .rest("GET", &format!("/api/hubs/chat/connections?{V}"), None)
                .await
                .ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await?;
    Ok(())
}
