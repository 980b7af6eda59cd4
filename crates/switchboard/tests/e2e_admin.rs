//! The admin page (`--admin`): off by default; its API refuses every caller without an admin
//! token (no token, a REST token for another path, a client token, a token of another key);
//! in headless Chromium a viewer is refused with a bad token, logs in with one minted by
//! `switchboard token --admin`, sees a connection appear when a client connects, its group,
//! the user's stored groups, and a REST broadcast in the live trace.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchboard_testkit::browser::BrowserDriver;

const V: &str = "api-version=2022-06-01";

/// An admin token for `server`, minted by the command line as an operator would.
async fn admin_token(server: &Server) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(bin())
        .args(["token", "--admin", "--only", "token", "--connection-string"])
        .arg(server.connection_string())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

#[tokio::test]
async fn the_admin_page_is_off_by_default_and_refuses_callers_without_an_admin_token(
) -> anyhow::Result<()> {
    let off = server().await?;
    let r = reqwest::get(off.url("/admin/")).await?;
    assert_eq!(r.status(), 404);
    let token = admin_token(&off).await?;
    let r = reqwest::Client::new()
        .get(off.url("/admin/api/overview"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(r.status(), 404, "no admin API without --admin");

    let on = server_with(&["--admin"]).await?;
    let token = admin_token(&on).await?;
    let http = reqwest::Client::new();
    // The page itself carries no data and needs no token.
    let r = http.get(on.url("/admin/")).send().await?;
    assert_eq!(r.status(), 200);
    assert!(r.text().await?.contains("Log in"));
    let other_key = switchboard_auth::mint_rest_token(
        "another key entirely",
        &on.url("/admin/"),
        None,
        now_secs(),
        600,
    );
    let refused = [
        None,
        Some(on.rest_token("/api/hubs/chat/connections")),
        Some(on.rest_token("/admin/api/overview")),
        Some(on.client_token("chat", Some("ann"))),
        Some(other_key),
    ];
    for path in [
        "/admin/api/overview",
        "/admin/api/hubs/chat/connections",
        "/admin/api/hubs/chat/groups",
        "/admin/api/hubs/chat/users/ann",
        "/admin/api/hubs/chat/connections/x",
        "/admin/api/trace",
    ] {
        for auth in &refused {
            let mut request = http.get(on.url(path));
            if let Some(t) = auth {
                request = request.bearer_auth(t);
            }
            let r = request.send().await?;
            assert_eq!(r.status(), 401, "{path} with {auth:?}");
            let detail: Value = r.json().await?;
            assert!(detail["code"].is_string() && detail["message"].is_string());
        }
    }
    // The admin token opens the API (and proves the refusals above were not vacuous).
    let r = http
        .get(on.url("/admin/api/overview"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let overview: Value = r.json().await?;
    assert_eq!(overview["store"]["isLeader"], json!(true), "{overview}");
    // An admin token is not a REST token.
    let r = http
        .get(on.url("/api/hubs/chat/connections?api-version=2024-12-01"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    Ok(())
}

/// The admin page in headless Chromium.
struct AdminPage(BrowserDriver);

impl AdminPage {
    async fn step(&self, cmd: &str, mut args: Value) -> anyhow::Result<Value> {
        args["cmd"] = json!(cmd);
        args["name"] = json!("admin");
        self.0.call(args).await
    }

    async fn fill(&self, selector: &str, value: impl Into<Value>) -> anyhow::Result<()> {
        self.step(
            "fill",
            json!({ "selector": selector, "value": value.into() }),
        )
        .await
        .map(drop)
    }

    async fn click(&self, selector: &str) -> anyhow::Result<()> {
        self.step("click", json!({ "selector": selector }))
            .await
            .map(drop)
    }

    /// Waits until the element's text holds `text`.
    async fn wait_text(&self, selector: &str, text: impl Into<Value>) -> anyhow::Result<()> {
        self.step(
            "waitText",
            json!({ "selector": selector, "text": text.into() }),
        )
        .await
        .map(drop)
    }
}

#[tokio::test]
async fn headless_chromium_logs_in_and_sees_connections_groups_and_the_live_trace(
) -> anyhow::Result<()> {
    let server = server_with(&["--admin"]).await?;
    let token = admin_token(&server).await?;
    let page = AdminPage(BrowserDriver::start(Duration::from_secs(30)).await?);
    let opened = page
        .step("goto", json!({ "url": server.url("/admin/") }))
        .await?;
    assert_eq!(opened["status"], json!(200));

    // A bad token is refused and the viewer stays on the login form.
    page.fill("#token", "not-a-token").await?;
    page.click("#login-button").await?;
    page.wait_text("#login-error", "Refused").await?;

    // The admin token logs in.
    page.fill("#token", token.as_str()).await?;
    page.click("#login-button").await?;
    page.wait_text("#overview", "connections on this gateway")
        .await?;
    page.wait_text("#trace-state", "live").await?;

    // A client connects: it appears in the list and in the trace.
    let mut js = JsClients::start().await?;
    let id = js.connect_simple("a", &server, "chat", Some("ann")).await?;
    page.wait_text("#connections", id.as_str()).await?;
    page.wait_text("#trace", format!("connected chat {id} (ann)"))
        .await?;
    // Names are the clients' to choose: the page shows them as text, never as markup.
    let hostile = "<img src=x onerror=document.title='pwned'>";
    js.connect_simple("h", &server, "chat", Some(hostile))
        .await?;
    page.wait_text("#connections", hostile).await?;

    // Its group, and the user's stored group, show up.
    expect_status(
        &server,
        "PUT",
        &format!("/api/hubs/chat/groups/room/connections/{id}?{V}"),
        200,
    )
    .await?;
    expect_status(
        &server,
        "PUT",
        &format!("/api/hubs/chat/users/ann/groups/vip?{V}"),
        200,
    )
    .await?;
    page.wait_text("#groups", "room").await?;
    page.fill("#user-input", "ann").await?;
    page.click("#user-button").await?;
    page.wait_text("#user-result", "group vip until").await?;

    // A REST broadcast reaches the client and the live trace.
    send_ok(
        &server,
        &format!("/api/hubs/chat/:send?{V}"),
        json!(["hello from rest"]),
    )
    .await?;
    assert_eq!(
        js.next_message("a").await?.args,
        vec![json!("hello from rest")]
    );
    page.wait_text("#trace", "message chat → hub: message")
        .await?;
    page.wait_text("#trace", "POST /api/hubs/{hub}/:send → 202")
        .await?;
    Ok(())
}

/// Reads Server-Sent Events from `response` until one satisfies `wanted`, for at most `within`.
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
    within: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> anyhow::Result<Option<Value>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let event: Value = serde_json::from_str(data.trim())?;
                    if wanted(&event) {
                        return Ok(Some(event));
                    }
                }
            }
        }
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => return Ok(None),
            Ok(chunk) => match chunk? {
                Some(bytes) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => anyhow::bail!("the trace stream ended"),
            },
        }
    }
}

#[tokio::test]
async fn the_live_trace_follows_every_gateway_of_the_cluster() -> anyhow::Result<()> {
    let cluster = Cluster::serve(bin(), 3, &["--admin"]).await?;
    let nodes = cluster.entry_points();
    let (viewer, other) = (nodes[0], nodes[1]);
    let token = admin_token(viewer).await?;
    let mut trace = reqwest::Client::new()
        .get(viewer.url("/admin/api/trace"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(trace.status(), 200);
    let mut buffer = String::new();
    // A broadcast through another gateway shows in this gateway's trace, named by its node
    // (sent again until the other gateway's stream is open: one sent before would be missed).
    let from_other = |e: &Value| {
        e["type"] == json!("rest")
            && e["route"] == json!("/api/hubs/{hub}/:send")
            && e["node"] == json!(2)
    };
    let mut seen = None;
    for _ in 0..50 {
        send_ok(other, &format!("/api/hubs/chat/:send?{V}"), json!(["x"])).await?;
        seen = next_event(
            &mut trace,
            &mut buffer,
            Duration::from_millis(300),
            from_other,
        )
        .await?;
        if seen.is_some() {
            break;
        }
    }
    let seen = seen.ok_or_else(|| anyhow::anyhow!("no REST call of node 2 in node 1's trace"))?;
    assert_eq!(seen["status"], json!(202));
    // And the viewer's own events are there too.
    send_ok(viewer, &format!("/api/hubs/chat/:send?{V}"), json!(["y"])).await?;
    let mine = next_event(&mut trace, &mut buffer, Duration::from_secs(10), |e| {
        e["type"] == json!("message") && e["node"] == json!(1)
    })
    .await?;
    assert!(mine.is_some(), "the viewer's own broadcast is traced");
    Ok(())
}
