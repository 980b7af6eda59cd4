//! The official browser client (`@microsoft/signalr`'s `dist/browser/signalr.js`) in headless
//! Chromium, on a page this test serves from another origin than Switchboard's (another port on
//! 127.0.0.1), so every request the client makes is cross-origin: forced to WebSockets,
//! Server-Sent Events and Long Polling in turn, it connects with a token the test minted and
//! receives REST broadcasts; with `--cors-allowed-origins` a listed origin connects on every
//! transport and an unlisted one is refused at negotiate by the browser itself.
//!
//! Chromium runs under playwright-core (`tests/browser/transports.mjs`, one command per line).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::http::header::CONTENT_TYPE;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use common::*;
use serde_json::{json, Value};

const API: &str = "api-version=2022-06-01";
const HUB: &str = "chat";

/// How long a page may take to settle, or a message to arrive.
const WAIT: Duration = Duration::from_secs(30);

/// The page: loads the official browser client and connects as its query says (`url`, `token`,
/// `transport` a member of `signalR.HttpTransportType`, `protocol` json or messagepack). What
/// happened is in `window.report`: `state` (connecting, connected, failed), the transport's
/// class, the error of a failed start, and every "message" the hub sent (its arguments).
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>transports</title><link rel="icon" href="data:,"></head>
<body>
<script src="/signalr.js"></script>
<script src="/signalr-protocol-msgpack.js"></script>
<script>
window.report = { state: "connecting", messages: [] };
(async () => {
  const q = new URLSearchParams(location.search);
  try {
    const transport = signalR.HttpTransportType[q.get("transport")];
    if (transport === undefined) throw new Error(`unknown transport ${q.get("transport")}`);
    const builder = new signalR.HubConnectionBuilder()
      .withUrl(q.get("url"), { accessTokenFactory: () => q.get("token"), transport })
      .configureLogging(signalR.LogLevel.Warning);
    if (q.get("protocol") === "messagepack") {
      builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
    }
    const connection = builder.build();
    connection.on("message", (...args) => report.messages.push(args));
    connection.onclose((e) => { report.closed = e ? String(e.message ?? e) : "stopped"; });
    await connection.start();
    report.transport = connection.connection.transport.constructor.name;
    report.connectionId = connection.connectionId;
    report.state = "connected";
  } catch (e) {
    report.error = String(e.message ?? e);
    report.state = "failed";
  }
})();
</script>
</body>
</html>
"#;

/// A tiny HTTP server for the page and the official client's browser bundles, on its own port:
/// a different origin than any Switchboard's.
struct PageServer {
    origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PageServer {
    async fn start() -> anyhow::Result<PageServer> {
        let js = repo_root().join("tests/js/node_modules/@microsoft");
        let read = |path: &str| {
            let path = js.join(path);
            std::fs::read(&path).with_context(|| {
                format!(
                    "reading {} (run `npm ci --prefix tests/js`; ./test.sh does it)",
                    path.display()
                )
            })
        };
        let signalr = read("signalr/dist/browser/signalr.js")?;
        let msgpack = read("signalr-protocol-msgpack/dist/browser/signalr-protocol-msgpack.js")?;
        let script = |body: Vec<u8>| {
            get(move || {
                let body = body.clone();
                async move { ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], body) }
            })
        };
        let router = Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/signalr.js", script(signalr))
            .route("/signalr-protocol-msgpack.js", script(msgpack));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let origin = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(PageServer { origin, task })
    }

    /// The page, told to connect to `server`'s hub with a valid token for `user`.
    fn url(&self, server: &Server, user: &str, transport: &str, protocol: &str) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("url", &server.client_url(HUB))
            .append_pair("token", &server.client_token(HUB, Some(user)))
            .append_pair("transport", transport)
            .append_pair("protocol", protocol)
            .finish();
        format!("{}/?{query}", self.origin)
    }
}

/// A page as the browser driver last saw it.
#[derive(Debug)]
struct Seen {
    report: Value,
    console: Vec<String>,
}

impl Seen {
    fn state(&self) -> &str {
        self.report["state"].as_str().unwrap_or_default()
    }

    /// The first argument of every "message" the page received, in order.
    fn messages(&self) -> Vec<String> {
        self.report["messages"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|args| args[0].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn page_errors(&self) -> Vec<&String> {
        self.console
            .iter()
            .filter(|l| l.starts_with("page error:"))
            .collect()
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; console:\n{}", self.report, self.console.join("\n"))
    }
}

/// Headless Chromium with any number of named pages, through `tests/browser/transports.mjs`.
struct Browser(switchboard_testkit::browser::BrowserDriver);

impl Browser {
    async fn start() -> anyhow::Result<Browser> {
        Ok(Browser(
            switchboard_testkit::browser::BrowserDriver::start(WAIT).await?,
        ))
    }

    async fn call(&self, command: Value) -> anyhow::Result<Value> {
        self.0.call(command).await
    }

    fn seen(reply: Value) -> Seen {
        Seen {
            report: reply["report"].clone(),
            console: reply["console"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .map(|l| l.as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Opens the page `url` as `name` and waits until it connected or failed to.
    async fn open(&self, name: &str, url: &str) -> anyhow::Result<Seen> {
        match self
            .call(json!({ "cmd": "open", "name": name, "url": url }))
            .await
        {
            Ok(reply) => Ok(Browser::seen(reply)),
            Err(e) => match self.report(name).await {
                Ok(seen) => bail!("{e}; page {name}: {seen}"),
                Err(_) => Err(e),
            },
        }
    }

    /// The page `name` now.
    async fn report(&self, name: &str) -> anyhow::Result<Seen> {
        let reply = self.call(json!({ "cmd": "report", "name": name })).await?;
        Ok(Browser::seen(reply))
    }

    /// Opens a page that must connect, with `transport` (the client's class name `class`).
    async fn connected(
        &self,
        name: &str,
        url: &str,
        class: &str,
        server: &Server,
    ) -> anyhow::Result<Seen> {
        let seen = self.open(name, url).await?;
        if seen.state() != "connected" {
            bail!(
                "page {name} did not connect: {seen}\nserver logs:\n{}",
                server.logs().await
            );
        }
        assert_eq!(
            seen.report["transport"],
            json!(class),
            "page {name}: {seen}"
        );
        eprintln!(
            "{name}: connected over {} as {}",
            seen.report["transport"], seen.report["connectionId"]
        );
        Ok(seen)
    }

    /// Waits until the page `name` received `text`.
    async fn wait_message(&self, name: &str, text: &str) -> anyhow::Result<Seen> {
        let got = eventually(WAIT, &format!("page {name} receives {text:?}"), || async {
            let seen = self.report(name).await.ok()?;
            seen.messages().iter().any(|m| m == text).then_some(seen)
        })
        .await;
        match got {
            Ok(seen) => Ok(seen),
            Err(e) => bail!("{e}; page {name}: {}", self.report(name).await?),
        }
    }
}

/// Broadcasts a "message" with `text` to the hub.
async fn broadcast(server: &Server, text: &str) -> anyhow::Result<()> {
    send_ok(
        server,
        &format!("/api/hubs/{HUB}/:send?{API}"),
        json!([text]),
    )
    .await
}

/// The transports to force (`signalR.HttpTransportType` members), the client's class for each,
/// and the protocols to try on it (Server-Sent Events carries text only).
const TRANSPORTS: [(&str, &str, &[&str]); 3] = [
    ("WebSockets", "WebSocketTransport", &["json", "messagepack"]),
    ("ServerSentEvents", "ServerSentEventsTransport", &["json"]),
    (
        "LongPolling",
        "LongPollingTransport",
        &["json", "messagepack"],
    ),
];

/// Connects a page from `page` to `server` with every transport in turn (and `protocols`, where
/// the transport carries them), each after the last, and checks that a broadcast sent after it
/// connected reaches it; at the end, every page received exactly the broadcasts sent since it
/// connected, in order.
async fn every_transport_receives(
    browser: &Browser,
    page: &PageServer,
    server: &Server,
    prefix: &str,
    all_protocols: bool,
) -> anyhow::Result<()> {
    let mut pages: Vec<(String, usize)> = Vec::new();
    let mut sent: Vec<String> = Vec::new();
    for (transport, class, protocols) in TRANSPORTS {
        let protocols: &[&str] = if all_protocols { protocols } else { &["json"] };
        for protocol in protocols {
            let name = format!("{prefix}-{transport}-{protocol}");
            let url = page.url(server, &name, transport, protocol);
            browser.connected(&name, &url, class, server).await?;
            let user = format!("/api/hubs/{HUB}/users/{name}?{API}");
            assert_eq!(
                server.rest("HEAD", &user, None).await?.status,
                200,
                "{name}"
            );
            pages.push((name.clone(), sent.len()));
            let text = format!("to every page, after {name} connected");
            broadcast(server, &text).await?;
            sent.push(text.clone());
            browser.wait_message(&name, &text).await?;
        }
    }
    let last = sent.last().context("no broadcast")?.clone();
    for (name, first) in &pages {
        let seen = browser.wait_message(name, &last).await?;
        assert_eq!(seen.messages(), sent[*first..], "page {name}: {seen}");
        assert!(seen.page_errors().is_empty(), "page {name}: {seen}");
        assert_eq!(seen.report["closed"], Value::Null, "page {name}: {seen}");
    }
    Ok(())
}

#[tokio::test]
async fn every_transport_of_the_browser_client_works_from_another_origin() -> anyhow::Result<()> {
    let page = PageServer::start().await?;
    let browser = Browser::start().await?;
    // The default, `*`: every origin gets CORS headers, with credentials.
    let server = server().await?;
    assert_ne!(page.origin, format!("http://{}", server.addr));
    every_transport_receives(&browser, &page, &server, "any", true).await
}

#[tokio::test]
async fn a_listed_origin_connects_with_every_transport() -> anyhow::Result<()> {
    let page = PageServer::start().await?;
    let browser = Browser::start().await?;
    let server = server_with(&["--cors-allowed-origins", &page.origin]).await?;
    every_transport_receives(&browser, &page, &server, "listed", false).await
}

/// The `Access-Control-Allow-Origin` `server` answers a preflight of negotiate from `origin`
/// with, if any.
async fn preflight(server: &Server, origin: &str) -> anyhow::Result<Option<String>> {
    let r = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            server.url(&format!("/client/negotiate?hub={HUB}&negotiateVersion=1")),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,x-requested-with,x-signalr-user-agent",
        )
        .send()
        .await?;
    Ok(r.headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned))
}

#[tokio::test]
async fn an_unlisted_origin_is_refused_at_negotiate() -> anyhow::Result<()> {
    let listed = PageServer::start().await?;
    let unlisted = PageServer::start().await?;
    let browser = Browser::start().await?;
    let server = server_with(&["--cors-allowed-origins", &listed.origin]).await?;

    // The same server, browser and page work from the listed origin, on every transport.
    every_transport_receives(&browser, &listed, &server, "listed", false).await?;
    assert_eq!(
        preflight(&server, &listed.origin).await?.as_deref(),
        Some(listed.origin.as_str())
    );

    // From the other origin the preflight gets no CORS headers, so the browser never sends
    // negotiate and the client fails to start, whatever the transport.
    assert_eq!(preflight(&server, &unlisted.origin).await?, None);
    for (transport, _, _) in TRANSPORTS {
        let name = format!("unlisted-{transport}");
        let url = unlisted.url(&server, &name, transport, "json");
        let seen = browser.open(&name, &url).await?;
        assert_eq!(seen.state(), "failed", "page {name}: {seen}");
        let error = seen.report["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("Failed to complete negotiation"),
            "page {name}: {seen}"
        );
        assert!(
            seen.console
                .iter()
                .any(|l| l.contains("blocked by CORS policy")),
            "the browser blamed CORS on page {name}: {seen}"
        );
        eprintln!("{name}: refused: {error}");
        let r = server
            .rest("HEAD", &format!("/api/hubs/{HUB}/users/{name}?{API}"), None)
            .await?;
        assert_eq!(r.status, 404, "{name} has no connection");
    }

    // The listed pages are still connected and still receive.
    broadcast(&server, "after the refusals").await?;
    for (transport, _, _) in TRANSPORTS {
        browser
            .wait_message(&format!("listed-{transport}-json"), "after the refusals")
            .await?;
    }
    Ok(())
}
