//! The official `@microsoft/signalr` client, driven through `tests/js/driver.mjs`.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, Notify};

use crate::{repo_root, Server};

/// A message a client received: the hub method and its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub target: String,
    pub args: Vec<Value>,
}

/// How to connect one client.
#[derive(Debug, Clone)]
pub struct ConnectOptions<'a> {
    pub hub: &'a str,
    pub user: Option<&'a str>,
    /// "json" or "messagepack".
    pub protocol: &'a str,
    /// Hub methods to listen for.
    pub targets: &'a [&'a str],
    pub reconnect: bool,
    /// Use this access token instead of a valid one.
    pub token: Option<String>,
    /// The client's keep-alive ping interval (the official client's default is 15 s).
    pub keep_alive_ms: Option<u64>,
    /// Extra query parameters for the client URL (`a=1&b=2`).
    pub query: Option<&'a str>,
    /// "websockets" (the default), "sse", "longpolling", or "any" (the client's fallback order).
    pub transport: Option<&'a str>,
    /// Every WebSocket the client opens fails (a proxy that blocks them).
    pub block_websockets: bool,
    /// `withStatefulReconnect()`.
    pub stateful_reconnect: bool,
    /// Connect through this base URL (e.g. a proxy's `http://127.0.0.1:port`) instead of the
    /// server's own.
    pub endpoint: Option<String>,
}

impl Default for ConnectOptions<'_> {
    fn default() -> Self {
        ConnectOptions {
            hub: "chat",
            user: None,
            protocol: "json",
            targets: &["message"],
            reconnect: false,
            token: None,
            keep_alive_ms: None,
            query: None,
            transport: None,
            block_websockets: false,
            stateful_reconnect: false,
            endpoint: None,
        }
    }
}

#[derive(Default)]
struct Inbox {
    replies: HashMap<u64, Value>,
    events: HashMap<String, VecDeque<Value>>,
    exited: bool,
}

/// One Node process holding any number of named client connections.
pub struct JsClients {
    child: Child,
    stdin: ChildStdin,
    next_id: u64,
    inbox: Arc<Mutex<Inbox>>,
    notify: Arc<Notify>,
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl JsClients {
    pub async fn start() -> anyhow::Result<JsClients> {
        let dir = repo_root().join("tests/js");
        if !dir.join("node_modules/@microsoft/signalr").exists() {
            bail!("the JS clients are not installed: run `npm ci --prefix tests/js` (./test.sh does it)");
        }
        let mut child = Command::new("node")
            .arg("driver.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (is Node.js installed?)")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let notify = Arc::new(Notify::new());
        let (inbox2, notify2) = (inbox.clone(), notify.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let mut inbox = inbox2.lock().await;
                if let Some(id) = value.get("id").and_then(Value::as_u64) {
                    inbox.replies.insert(id, value);
                } else if let Some(name) = value.get("name").and_then(Value::as_str) {
                    inbox
                        .events
                        .entry(name.to_owned())
                        .or_default()
                        .push_back(value);
                }
                drop(inbox);
                notify2.notify_waiters();
            }
            inbox2.lock().await.exited = true;
            notify2.notify_waiters();
        });
        Ok(JsClients {
            child,
            stdin,
            next_id: 1,
            inbox,
            notify,
        })
    }

    async fn call(&mut self, mut command: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .context("writing to the JS driver")?;
        self.stdin.flush().await?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let notified = self.notify.notified();
            {
                let mut inbox = self.inbox.lock().await;
                if let Some(reply) = inbox.replies.remove(&id) {
                    if reply.get("ok").and_then(Value::as_bool) == Some(true) {
                        return Ok(reply);
                    }
                    bail!(
                        "{}",
                        reply
                            .get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("JS client call failed")
                    );
                }
                if inbox.exited {
                    bail!("the JS driver exited");
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("no reply from the JS driver to {command}");
            }
        }
    }

    /// Connects a client named `name` to `server`; returns its connection id.
    pub async fn connect(
        &mut self,
        name: &str,
        server: &Server,
        options: ConnectOptions<'_>,
    ) -> anyhow::Result<String> {
        let token = options
            .token
            .clone()
            .unwrap_or_else(|| server.client_token(options.hub, options.user));
        let base = match &options.endpoint {
            Some(endpoint) => format!("{endpoint}/client/?hub={}", options.hub),
            None => server.client_url(options.hub),
        };
        let url = match options.query {
            Some(query) => format!("{base}&{query}"),
            None => base,
        };
        let reply = self
            .call(json!({
                "cmd": "connect",
                "name": name,
                "url": url,
                "token": token,
                "protocol": options.protocol,
                "targets": options.targets,
                "reconnect": options.reconnect,
                "keepAliveMs": options.keep_alive_ms,
                "transport": options.transport,
                "blockWebSockets": options.block_websockets,
                "statefulReconnect": options.stateful_reconnect,
            }))
            .await?;
        Ok(reply
            .get("connectionId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// Connects with the defaults (JSON, hub "chat", listening for "message").
    pub async fn connect_simple(
        &mut self,
        name: &str,
        server: &Server,
        hub: &str,
        user: Option<&str>,
    ) -> anyhow::Result<String> {
        self.connect(
            name,
            server,
            ConnectOptions {
                hub,
                user,
                ..Default::default()
            },
        )
        .await
    }

    pub async fn invoke(&mut self, name: &str, target: &str, args: Value) -> anyhow::Result<Value> {
        let reply = self
            .call(json!({ "cmd": "invoke", "name": name, "target": target, "args": args }))
            .await?;
        Ok(reply.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Starts an invocation and returns at once; its outcome arrives as a `result` event with
    /// `tag` (see [`JsClients::wait_result`]).
    pub async fn invoke_async(
        &mut self,
        name: &str,
        tag: &str,
        target: &str,
        args: Value,
    ) -> anyhow::Result<()> {
        self.call(json!({ "cmd": "invokeAsync", "name": name, "tag": tag, "target": target, "args": args }))
            .await?;
        Ok(())
    }

    /// The outcome of an [`JsClients::invoke_async`]: the result, or the error text.
    pub async fn wait_result(
        &mut self,
        name: &str,
        tag: &str,
        within: Duration,
    ) -> anyhow::Result<Result<Value, String>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.notify.notified();
            {
                let mut inbox = self.inbox.lock().await;
                // Take this tag's result only; other events stay queued, in order.
                if let Some(events) = inbox.events.get_mut(name) {
                    let found = events.iter().position(|e| {
                        e.get("event").and_then(Value::as_str) == Some("result")
                            && e.get("tag").and_then(Value::as_str) == Some(tag)
                    });
                    if let Some(event) = found.and_then(|i| events.remove(i)) {
                        return Ok(outcome(&event));
                    }
                }
                if inbox.exited {
                    bail!("the JS driver exited");
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("client {name}: no result for {tag} within {within:?}");
            }
        }
    }

    /// Invokes `target(i)` for `i` in `0..count`, all at once; every outcome, in call order.
    pub async fn invoke_many(
        &mut self,
        name: &str,
        target: &str,
        count: usize,
    ) -> anyhow::Result<Vec<Result<Value, String>>> {
        let reply = self
            .call(json!({ "cmd": "invokeMany", "name": name, "target": target, "count": count }))
            .await?;
        Ok(reply
            .get("outcomes")
            .and_then(Value::as_array)
            .map(|all| all.iter().map(outcome).collect())
            .unwrap_or_default())
    }

    /// Calls a streaming hub method; its items and the error it ended with, if any.
    pub async fn stream(
        &mut self,
        name: &str,
        target: &str,
        args: Value,
    ) -> anyhow::Result<(Vec<Value>, Option<String>)> {
        let reply = self
            .call(json!({ "cmd": "stream", "name": name, "target": target, "args": args }))
            .await?;
        Ok((
            reply
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            reply
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ))
    }

    /// Invokes `target` with a client-to-server stream; the error it failed with, if any.
    pub async fn upload(&mut self, name: &str, target: &str) -> anyhow::Result<Option<String>> {
        let reply = self
            .call(json!({ "cmd": "upload", "name": name, "target": target }))
            .await?;
        Ok(reply
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    pub async fn send(&mut self, name: &str, target: &str, args: Value) -> anyhow::Result<()> {
        self.call(json!({ "cmd": "send", "name": name, "target": target, "args": args }))
            .await?;
        Ok(())
    }

    pub async fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        self.call(json!({ "cmd": "stop", "name": name })).await?;
        Ok(())
    }

    /// The transport the client uses, by the official client's class name
    /// (`WebSocketTransport`, `ServerSentEventsTransport`, `LongPollingTransport`).
    pub async fn transport(&mut self, name: &str) -> anyhow::Result<String> {
        let reply = self.call(json!({ "cmd": "state", "name": name })).await?;
        Ok(reply
            .get("transport")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// The connection's state as the client sees it ("Connected", "Disconnected", ...).
    pub async fn state(&mut self, name: &str) -> anyhow::Result<(String, Option<String>)> {
        let reply = self.call(json!({ "cmd": "state", "name": name })).await?;
        Ok((
            reply
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            reply
                .get("connectionId")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ))
    }

    /// The next event of client `name` (message, closed, reconnecting, reconnected).
    pub async fn next_event(&mut self, name: &str, within: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.notify.notified();
            {
                let mut inbox = self.inbox.lock().await;
                if let Some(event) = inbox.events.get_mut(name).and_then(VecDeque::pop_front) {
                    return Ok(event);
                }
                if inbox.exited {
                    bail!("the JS driver exited");
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("client {name}: no event within {within:?}");
            }
        }
    }

    /// The next message received by `name` (fails on any other event).
    pub async fn next_message(&mut self, name: &str) -> anyhow::Result<Message> {
        let event = self.next_event(name, Duration::from_secs(10)).await?;
        if event.get("event").and_then(Value::as_str) != Some("message") {
            bail!("client {name}: expected a message, got {event}");
        }
        Ok(Message {
            target: event
                .get("target")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            args: event
                .get("args")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// Checks that `name` receives nothing within `within` (use after a positive control).
    pub async fn expect_silence(&mut self, name: &str, within: Duration) -> anyhow::Result<()> {
        match self.next_event(name, within).await {
            Ok(event) => bail!("client {name}: expected nothing, got {event}"),
            Err(_) => Ok(()),
        }
    }

    /// Waits for `name` to be closed; returns the error it was closed with, if any.
    pub async fn wait_closed(&mut self, name: &str) -> anyhow::Result<Option<String>> {
        loop {
            let event = self.next_event(name, Duration::from_secs(20)).await?;
            if event.get("event").and_then(Value::as_str) == Some("closed") {
                return Ok(event
                    .get("error")
                    .and_then(Value::as_str)
                    .map(str::to_owned));
            }
        }
    }

    /// Waits for an event of kind `kind` for `name`, skipping others; returns it.
    pub async fn wait_event(
        &mut self,
        name: &str,
        kind: &str,
        within: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_event(name, left).await?;
            if event.get("event").and_then(Value::as_str) == Some(kind) {
                return Ok(event);
            }
        }
    }
}

impl Drop for JsClients {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `{ok, result | error}` as a `Result`.
fn outcome(value: &Value) -> Result<Value, String> {
    if value.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(value.get("result").cloned().unwrap_or(Value::Null))
    } else {
        Err(value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("failed")
            .to_owned())
    }
}
