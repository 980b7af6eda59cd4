//! The serverless chat sample (`examples/serverless-chat`) against a real server: Switchboard
//! started with `--upstream` pointing at the sample's app server (a real Node process), and
//! clients that reach Switchboard only through the app's negotiate redirect. Once with the
//! official Node client, once with the sample's page in headless Chromium.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// How long a whole scenario script may run (it waits on conditions, each within 30 s); less
/// than nextest's 240 s, so a hung script still reports the logs.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// The sample's app server, a Node process on loopback.
struct App {
    _child: Child,
    url: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl App {
    /// Starts `examples/serverless-chat/server.mjs` on `port` for `server` and waits until it
    /// serves its page.
    async fn start(server: &Server, port: u16) -> anyhow::Result<App> {
        let mut child = Command::new("node")
            .arg(repo_root().join("examples/serverless-chat/server.mjs"))
            .current_dir(server.data_dir())
            .env("SWITCHBOARD_CONNECTION_STRING", server.connection_string())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (is Node.js installed?)")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().context("stdout")?, logs.clone());
        collect(child.stderr.take().context("stderr")?, logs.clone());
        let app = App {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            logs,
        };
        let http = reqwest::Client::new();
        let page = format!("{}/", app.url);
        let up = eventually(Duration::from_secs(60), "the sample app serves /", || {
            let (http, page) = (http.clone(), page.clone());
            async move {
                let r = http.get(&page).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
        if let Err(e) = up {
            bail!("{e}; app logs:\n{}", app.logs().await);
        }
        Ok(app)
    }

    async fn logs(&self) -> String {
        self.logs.lock().await.join("\n")
    }
}

fn collect(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            logs.lock().await.push(line);
        }
    });
}

/// Fails with what to run when an npm package the tests need is not installed.
fn require_installed(dir: &str, package: &str) -> anyhow::Result<PathBuf> {
    let dir = repo_root().join(dir);
    if !dir.join("node_modules").join(package).exists() {
        bail!(
            "{package} is not installed in {}: run `npm ci --prefix {}` (./test.sh does it)",
            dir.display(),
            dir.strip_prefix(repo_root()).unwrap_or(&dir).display()
        );
    }
    Ok(dir)
}

/// Switchboard with its upstream at the sample app, and the app.
async fn start_chat() -> anyhow::Result<(Server, App)> {
    let port = free_addr(Ipv4Addr::LOCALHOST)?.port();
    let upstream = format!("http://127.0.0.1:{port}/api/signalr");
    let server = server_with(&["--upstream", &upstream]).await?;
    let app = App::start(&server, port).await?;
    Ok((server, app))
}

/// Runs a scenario script to its end; returns the JSON object it printed last.
async fn run_script(dir: &Path, script: &str, server: &Server, app: &App) -> anyhow::Result<Value> {
    let child = Command::new("node")
        .arg(script)
        .arg(&app.url)
        .current_dir(dir)
        .env("SWITCHBOARD_CONNECTION_STRING", server.connection_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting node (is Node.js installed?)")?;
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output()).await;
    let context = || async {
        format!(
            "app logs:\n{}\nserver logs:\n{}",
            app.logs().await,
            server.logs().await
        )
    };
    let output = match output {
        Ok(output) => output?,
        Err(_) => bail!("{script} ran over {SCRIPT_TIMEOUT:?}; {}", context().await),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{script} failed ({}):\n{stderr}\n{stdout}\n{}",
            output.status,
            context().await
        );
    }
    eprintln!("{script} passed in {:.1?}", started.elapsed());
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("{script} printed {stdout:?}"))
}

#[tokio::test]
async fn official_node_clients_chat_through_the_sample_app() -> anyhow::Result<()> {
    let dir = require_installed("examples", "@microsoft/signalr")?;
    let (server, app) = start_chat().await?;

    // The app refuses an upstream request whose signature is not the service's.
    let forged = reqwest::Client::new()
        .post(format!("{}/api/signalr", app.url))
        .header("x-asrs-connection-id", "c1")
        .header("x-asrs-hub", "chat")
        .header("x-asrs-category", "connections")
        .header("x-asrs-event", "connected")
        .header("x-asrs-signature", format!("sha256={}", "0".repeat(64)))
        .header("content-type", "application/json")
        .body(r#"{"type":10}"#)
        .send()
        .await?;
    assert_eq!(forged.status().as_u16(), 401);

    let seen = run_script(
        &dir.join("serverless-chat/test"),
        "two-clients.mjs",
        &server,
        &app,
    )
    .await?;
    let system = |text: &str| json!({ "target": "system", "args": [text] });
    let hello = json!({
        "target": "newMessage",
        "args": [{ "user": "alice", "text": "hello from alice" }],
    });
    assert_eq!(
        seen["alice"],
        json!([
            system("alice joined"),
            system("zoë joined"),
            hello,
            system("zoë left")
        ]),
        "{seen}"
    );
    assert_eq!(seen["zoe"], json!([system("zoë joined"), hello]), "{seen}");
    assert_eq!(seen["result"], json!({ "delivered": true }), "{seen}");
    assert_eq!(
        seen["refused"],
        json!("a message is 1 to 2000 characters of text"),
        "the app's error completion reaches the caller: {seen}"
    );
    assert_eq!(
        seen["unknown"],
        json!("Invocation failed, status code 404"),
        "{seen}"
    );
    assert_eq!(
        seen["probes"],
        json!({ "unsigned": 401, "otherKey": 401, "otherConnection": 401, "rotated": 404 }),
        "{seen}"
    );
    Ok(())
}

#[tokio::test]
async fn headless_chromium_chats_through_the_sample_page() -> anyhow::Result<()> {
    require_installed("examples", "@microsoft/signalr")?;
    let dir = require_installed("tests/browser", "playwright-core")?;
    let (server, app) = start_chat().await?;

    let seen = run_script(&dir, "chat.mjs", &server, &app).await?;
    assert_eq!(
        seen["ann"],
        json!([
            "ann joined",
            "ben joined",
            "ann: hello from chromium",
            "ben left"
        ]),
        "{seen}"
    );
    assert_eq!(
        seen["ben"],
        json!(["ben joined", "ann: hello from chromium"]),
        "{seen}"
    );
    Ok(())
}
