//! A real `switchboard` process on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::Method;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::{eventually, now_secs};

/// Which `switchboard` subcommand a process runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    Serve,
    Gateway,
    Store,
}

impl Role {
    fn command(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Gateway => "gateway",
            Role::Store => "store",
        }
    }
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub role: Role,
    /// The HTTP listener; default `127.0.0.1:0` (the port is then read from the printed
    /// connection string; a `store` needs an explicit port).
    pub listen: Option<SocketAddr>,
    /// Access keys (`--access-key`); empty means one fixed test key.
    pub access_keys: Vec<String>,
    /// Extra command-line arguments after the subcommand.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// The open-file limit of the process (`ulimit -n`), if it should differ from the test's.
    pub nofile: Option<u64>,
}

/// A REST response, read fully.
#[derive(Debug)]
pub struct RestResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl RestResponse {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("body is not JSON: {:?}", self.body))
    }

    /// The `x-ms-error-code` header, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.headers
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
    }
}

/// A running (or stopped) `switchboard` process; see the crate docs.
pub struct Server {
    bin: PathBuf,
    options: ServerOptions,
    child: Option<Child>,
    pub addr: SocketAddr,
    pub keys: Vec<String>,
    data_dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

/// The access key test servers use unless told otherwise.
pub const TEST_KEY: &str = "switchboard-test-access-key-0123456789ABCDEFGH";

impl Server {
    /// Starts `bin serve` (or the role in `options`) with a fresh data dir and waits until it is
    /// ready.
    pub async fn start(bin: impl AsRef<Path>, options: ServerOptions) -> anyhow::Result<Server> {
        let server = Server::launch(bin, options).await?;
        server.wait_ready().await?;
        Ok(server)
    }

    /// Starts the process and learns its address, without waiting until it is ready (members
    /// of a new cluster become ready only together).
    pub async fn launch(bin: impl AsRef<Path>, options: ServerOptions) -> anyhow::Result<Server> {
        let keys = if options.access_keys.is_empty() {
            vec![TEST_KEY.to_owned()]
        } else {
            options.access_keys.clone()
        };
        let addr = options
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut server = Server {
            bin: bin.as_ref().to_path_buf(),
            options,
            child: None,
            addr,
            keys,
            data_dir: tempfile::tempdir()?,
            logs: Arc::new(Mutex::new(Vec::new())),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(4)
                .build()?,
        };
        server.spawn().await?;
        Ok(server)
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn role(&self) -> Role {
        self.options.role
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let role = self.options.role;
        let mut cmd = match self.options.nofile {
            None => Command::new(&self.bin),
            Some(limit) => {
                // The shell lowers the limit, then becomes the server (same pid).
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(&self.bin);
                sh
            }
        };
        cmd.arg(role.command())
            .arg("--listen")
            .arg(self.addr.to_string());
        if role != Role::Gateway {
            cmd.arg("--data-dir").arg(self.data_dir.path());
        }
        for key in &self.keys {
            cmd.arg("--access-key").arg(key);
        }
        cmd.args(&self.options.args);
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        if std::env::var_os("SWITCHBOARD_LOG").is_none() {
            cmd.env("SWITCHBOARD_LOG", "info,openraft=warn");
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let (endpoint_tx, endpoint_rx) = tokio::sync::oneshot::channel::<String>();
        let logs = self.logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut tx = Some(endpoint_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("Endpoint=") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line.clone());
                    }
                }
                logs.lock().await.push(line);
            }
        });
        let logs = self.logs.clone();
        let echo = std::env::var_os("SWITCHBOARD_TEST_ECHO").is_some();
        let tag = format!("{}@{}", role.command(), self.addr);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("[{tag}] {line}");
                }
                logs.lock().await.push(line);
            }
        });
        self.child = Some(child);
        if role == Role::Store {
            return Ok(());
        }
        let line = match tokio::time::timeout(Duration::from_secs(60), endpoint_rx).await {
            Ok(Ok(line)) => line,
            _ => bail!(
                "server did not print its connection string; logs:\n{}",
                self.logs().await
            ),
        };
        let endpoint = line
            .trim_start_matches("Endpoint=")
            .split(';')
            .next()
            .unwrap_or_default();
        let endpoint = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .unwrap_or(endpoint)
            .to_owned();
        self.addr = endpoint
            .parse()
            .with_context(|| format!("parsing endpoint in {line:?}"))?;
        Ok(())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        self.wait_ready_within(Duration::from_secs(30)).await
    }

    pub async fn wait_ready_within(&self, within: Duration) -> anyhow::Result<()> {
        let url = self.url("/readyz");
        let http = self.http.clone();
        let ready = eventually(within, "server ready", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => Some(()),
                    _ => None,
                }
            }
        })
        .await;
        if let Err(e) = ready {
            bail!(
                "{} at {}: {e}; logs:\n{}",
                self.options.role.command(),
                self.addr,
                self.logs().await
            );
        }
        Ok(())
    }

    /// Everything the process printed so far.
    pub async fn logs(&self) -> String {
        self.logs.lock().await.join("\n")
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// The connection string, as app servers would be given it.
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint=http://{};AccessKey={};Version=1.0;",
            self.addr, self.keys[0]
        )
    }

    /// A REST token for `path_and_query`, shaped like the .NET SDK's (audience without the port).
    pub fn rest_token(&self, path_and_query: &str) -> String {
        let url = format!("http://{}{}", self.addr.ip(), path_and_query);
        switchboard_auth::mint_rest_token(&self.keys[0], &url, None, now_secs(), 600)
    }

    /// A client access token for `hub` (and `user`), shaped like the server SDK's.
    pub fn client_token(&self, hub: &str, user: Option<&str>) -> String {
        let base = format!("http://{}", self.addr);
        switchboard_auth::mint_client_token(
            &self.keys[0],
            &base,
            hub,
            user,
            &Default::default(),
            now_secs(),
            600,
        )
    }

    /// The client URL for `hub` (what negotiate redirects clients to).
    pub fn client_url(&self, hub: &str) -> String {
        self.url(&format!("/client/?hub={hub}"))
    }

    /// Sends a REST request with a valid token for its path.
    pub async fn rest(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<RestResponse> {
        let token = self.rest_token(path_and_query);
        self.rest_with(
            method,
            path_and_query,
            Some(&token),
            body.map(|b| ("application/json", b.to_string().into_bytes())),
        )
        .await
    }

    /// Sends a REST request with an explicit token (or none) and raw body.
    pub async fn rest_with(
        &self,
        method: &str,
        path_and_query: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<RestResponse> {
        let method = Method::from_bytes(method.as_bytes())?;
        let mut req = self
            .http
            .request(method, self.url(path_and_query))
            .timeout(Duration::from_secs(30));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("REST {path_and_query}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        Ok(RestResponse {
            status,
            headers,
            body,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process with SIGKILL (no shutdown at all) and waits for it to exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit code.
    pub async fn terminate(&mut self) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Some(pid) = child.id() {
            signal(pid, "-TERM")?;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .context("exit after SIGTERM")??;
        Ok(status.code())
    }

    /// Freezes the process (SIGSTOP): alive but silent, like a hung node. Returns once every
    /// thread of it is stopped (a signal is delivered to a busy process a moment later).
    pub async fn pause(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("not running")?;
        signal(pid, "-STOP")?;
        crate::eventually(
            Duration::from_secs(5),
            "every thread stopped",
            || async move { all_threads_stopped(pid).then_some(()) },
        )
        .await
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        signal(self.pid().context("not running")?, "-CONT")
    }

    /// Starts the process again on the same port with the same data dir and waits until it is
    /// ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.relaunch().await?;
        self.wait_ready().await
    }

    /// Starts the process again on the same port with the same data dir, without waiting.
    pub async fn relaunch(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.kill().await?;
        }
        self.spawn().await
    }

    /// A Prometheus sample of this process, summed over its label sets (None if absent).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let body = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let mut total = None;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            total = Some(total.unwrap_or(0.0) + value);
        }
        total
    }
}

/// Whether every thread of `pid` is in the stopped state (`T` in /proc).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            // The state follows the command name, which is in parentheses.
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    })
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill {sig} {pid} failed");
    }
    Ok(())
}
