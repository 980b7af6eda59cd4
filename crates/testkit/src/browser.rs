//! Headless Chromium for end-to-end tests: the system's browser driven by playwright-core
//! through `tests/browser/transports.mjs`, one JSON command per line (see that script for the
//! commands), one JSON reply per line.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use crate::repo_root;

/// A running browser driver.
pub struct BrowserDriver {
    _child: Child,
    io: Mutex<(ChildStdin, Lines<BufReader<ChildStdout>>, u64)>,
    wait: Duration,
}

impl BrowserDriver {
    /// Starts Chromium; `wait` bounds how long a page may take to settle (the driver's
    /// `WAIT_MS`), and twice it how long a reply may take.
    pub async fn start(wait: Duration) -> anyhow::Result<BrowserDriver> {
        let dir = repo_root().join("tests/browser");
        if !dir.join("node_modules/playwright-core").exists() {
            bail!("playwright-core is not installed: run `npm ci --prefix tests/browser` (./test.sh does it)");
        }
        let mut child = Command::new("node")
            .arg("transports.mjs")
            .current_dir(&dir)
            .env("WAIT_MS", wait.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (is Node.js installed?)")?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let ready = tokio::time::timeout(Duration::from_secs(150), lines.next_line())
            .await
            .context("Chromium did not start")??
            .context("the browser driver exited")?;
        let ready: Value = serde_json::from_str(&ready)?;
        if ready["ready"] != json!(true) {
            bail!("Chromium did not start: {}", ready["error"]);
        }
        Ok(BrowserDriver {
            _child: child,
            io: Mutex::new((stdin, lines, 1)),
            wait,
        })
    }

    /// Sends one command and waits for its reply (`ok: true`, else an error with the driver's).
    pub async fn call(&self, mut command: Value) -> anyhow::Result<Value> {
        let mut io = self.io.lock().await;
        let (stdin, lines, next_id) = &mut *io;
        let id = *next_id;
        *next_id += 1;
        command["id"] = json!(id);
        stdin.write_all(format!("{command}\n").as_bytes()).await?;
        stdin.flush().await?;
        loop {
            let line = tokio::time::timeout(self.wait * 2, lines.next_line())
                .await
                .with_context(|| format!("no reply from the browser driver to {command}"))??
                .context("the browser driver exited")?;
            let reply: Value = serde_json::from_str(&line)
                .with_context(|| format!("the browser driver printed {line:?}"))?;
            if reply["id"] != json!(id) {
                continue;
            }
            if reply["ok"] != json!(true) {
                bail!("{command}: {}", reply["error"]);
            }
            return Ok(reply);
        }
    }
}
