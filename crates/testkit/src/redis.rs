//! A real `redis-server` for tests, on a free loopback port, in its own directory.
//!
//! Debian's `redis-server` (installed by `.ci/run`). Without persistence by default; with
//! [`RedisServer::start_persistent`] it keeps an append-only file fsynced on every write, so a
//! restart (even after SIGKILL) keeps every acknowledged write.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::{eventually, free_addr};

/// A running `redis-server`; killed when dropped.
pub struct RedisServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    persistent: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one without persistence.
    pub async fn start() -> anyhow::Result<RedisServer> {
        RedisServer::launch(false).await
    }

    /// Starts one that fsyncs an append-only file on every write.
    pub async fn start_persistent() -> anyhow::Result<RedisServer> {
        RedisServer::launch(true).await
    }

    async fn launch(persistent: bool) -> anyhow::Result<RedisServer> {
        let mut server = RedisServer {
            addr: free_addr(Ipv4Addr::LOCALHOST)?,
            dir: tempfile::tempdir()?,
            persistent,
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.addr.port().to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        self.child = Some(child);
        let addr = self.addr;
        eventually(
            Duration::from_secs(10),
            "redis-server answering PING",
            || async move { ping(addr).await.then_some(()) },
        )
        .await
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its working directory (the append-only file, when persistent).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Kills it if running, then starts it again on the same port and directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn().await
    }

    /// Runs one command with `redis-cli` and returns its output.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(args)
            .output()
            .await
            .context("running redis-cli")?;
        if !out.status.success() {
            bail!(
                "redis-cli {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

async fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply)).await,
        Ok(Ok(_))
    ) && &reply == b"+PONG\r\n"
}

/// A Redis Cluster of `masters` masters (no replicas) on loopback, each its own `redis-server
/// --cluster-enabled yes`, joined with `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<(SocketAddr, Child)>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start(masters: usize) -> anyhow::Result<RedisCluster> {
        let dir = tempfile::tempdir()?;
        let mut nodes = Vec::new();
        for i in 0..masters {
            let addr = free_addr(Ipv4Addr::LOCALHOST)?;
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let child = Command::new("redis-server")
                .arg("--port")
                .arg(addr.port().to_string())
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting redis-server (apt-get install redis-server)")?;
            eventually(
                Duration::from_secs(10),
                "redis-server answering PING",
                || async move { ping(addr).await.then_some(()) },
            )
            .await?;
            nodes.push((addr, child));
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for (addr, _) in &nodes {
            create.arg(addr.to_string());
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cluster = RedisCluster { nodes, _dir: dir };
        let expected_nodes = format!("cluster_known_nodes:{masters}");
        for addr in cluster.addrs() {
            // Every node must know every other and every slot before a client asks any of them.
            let expected = expected_nodes.clone();
            eventually(
                Duration::from_secs(30),
                "every node's cluster state ok",
                || {
                    let expected = expected.clone();
                    async move {
                        let port = addr.port().to_string();
                        let out = Command::new("redis-cli")
                            .args(["-h", "127.0.0.1", "-p", &port, "cluster", "info"])
                            .output()
                            .await
                            .ok()?;
                        let info = String::from_utf8_lossy(&out.stdout).to_string();
                        (info.contains("cluster_state:ok")
                            && info.contains("cluster_slots_ok:16384")
                            && info.contains(&expected))
                        .then_some(())
                    }
                },
            )
            .await?;
        }
        Ok(cluster)
    }

    /// `redis-cluster://HOST:PORT?node=HOST:PORT&...` (fred's form), every master listed.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://{}", self.nodes[0].0);
        for (i, (addr, _)) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node={addr}"));
        }
        url
    }

    /// The masters' addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|(a, _)| *a).collect()
    }
}
