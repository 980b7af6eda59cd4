//! Multi-process clusters on 127.0.0.x: voters (all-in-one `serve` nodes or `store` voters) and
//! stateless gateways, started, killed and restarted as real processes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::proxy::Proxy;
use crate::redis::RedisServer;
use crate::server::{Role, Server, ServerOptions};

/// A free TCP port on `ip` (bound, then released: good enough for tests).
pub fn free_addr(ip: Ipv4Addr) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(SocketAddr::from((ip, 0)))?;
    Ok(listener.local_addr()?)
}

/// A cluster of real processes.
pub struct Cluster {
    bin: PathBuf,
    /// Store voters: `serve` nodes (gateway + voter) or `store` nodes.
    pub voters: Vec<Server>,
    /// Stateless gateways.
    pub gateways: Vec<Server>,
    /// The voters' cluster addresses, by node id (1-based, in `voters` order).
    pub cluster_addrs: Vec<SocketAddr>,
    /// For partition tests: `(from, to)` voter indexes → the proxy `from` dials `to` through.
    proxies: Vec<((usize, usize), Proxy)>,
    /// The voters' role (`Serve` voters also take clients).
    role: Role,
    /// The Redis of a cluster on the Redis engine (gateways only, no voters).
    redis: Option<RedisServer>,
}

/// Which engine holds a cluster's durable membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Raft store voters.
    Raft,
    /// One Redis, gateways only.
    Redis,
}

impl Cluster {
    /// `n` all-in-one nodes (gateway + voter), node i on 127.0.0.i.
    pub async fn serve(bin: impl AsRef<Path>, n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::voters(bin, n, Role::Serve, extra, false).await
    }

    /// Like [`Cluster::serve`], but every voter reaches every other through its own proxy, so a
    /// test can cut a voter off ([`Cluster::isolate`]) while its process keeps running.
    pub async fn serve_partitionable(
        bin: impl AsRef<Path>,
        n: usize,
        extra: &[&str],
    ) -> anyhow::Result<Cluster> {
        Cluster::voters(bin, n, Role::Serve, extra, true).await
    }

    /// `n` voter-only nodes on 127.0.0.i; add gateways with [`Cluster::add_gateway`].
    pub async fn stores(
        bin: impl AsRef<Path>,
        n: usize,
        extra: &[&str],
    ) -> anyhow::Result<Cluster> {
        Cluster::voters(bin, n, Role::Store, extra, false).await
    }

    async fn voters(
        bin: impl AsRef<Path>,
        n: usize,
        role: Role,
        extra: &[&str],
        proxied: bool,
    ) -> anyhow::Result<Cluster> {
        let ips: Vec<Ipv4Addr> = (1..=n).map(|i| Ipv4Addr::new(127, 0, 0, i as u8)).collect();
        let cluster_addrs = ips
            .iter()
            .map(|ip| free_addr(*ip))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut proxies = Vec::new();
        if proxied {
            for (from, ip) in ips.iter().enumerate() {
                for (to, target) in cluster_addrs
                    .iter()
                    .enumerate()
                    .filter(|(to, _)| *to != from)
                {
                    let proxy = Proxy::start(SocketAddr::from((*ip, 0)), *target).await?;
                    proxies.push(((from, to), proxy));
                }
            }
        }
        let mut voters = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            // Each voter's --peers: itself at its real address, the others through its proxies.
            let peers = (0..n)
                .map(|j| {
                    let addr = proxies
                        .iter()
                        .find(|((from, to), _)| *from == i && *to == j)
                        .map_or(cluster_addrs[j], |(_, p)| p.addr);
                    format!("{}={addr}", j + 1)
                })
                .collect::<Vec<_>>()
                .join(",");
            let mut args: Vec<String> = vec![
                "--node-id".into(),
                (i + 1).to_string(),
                "--cluster-listen".into(),
                cluster_addrs[i].to_string(),
                "--advertise".into(),
                cluster_addrs[i].to_string(),
                "--peers".into(),
                peers,
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let listen = free_addr(*ip)?;
            let options = ServerOptions {
                role,
                listen: Some(listen),
                args,
                ..Default::default()
            };
            voters.push(Server::launch(bin.as_ref(), options).await?);
        }
        let cluster = Cluster {
            bin: bin.as_ref().to_path_buf(),
            voters,
            gateways: Vec::new(),
            cluster_addrs,
            proxies,
            role,
            redis: None,
        };
        for v in &cluster.voters {
            v.wait_ready_within(Duration::from_secs(60)).await?;
        }
        Ok(cluster)
    }

    /// `gateways` stateless gateways on one new `redis-server` (the Redis engine): no voters.
    pub async fn on_redis(
        bin: impl AsRef<Path>,
        gateways: usize,
        extra: &[&str],
    ) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster {
            bin: bin.as_ref().to_path_buf(),
            voters: Vec::new(),
            gateways: Vec::new(),
            cluster_addrs: Vec::new(),
            proxies: Vec::new(),
            role: Role::Store,
            redis: Some(RedisServer::start().await?),
        };
        for _ in 0..gateways {
            cluster.add_gateway(extra).await?;
        }
        Ok(cluster)
    }

    /// The nodes that take clients and REST calls, for tests that run on either engine:
    /// `serve` voters first, then the gateways.
    pub fn entry_points(&self) -> Vec<&Server> {
        let voters = self.voters.iter().filter(|_| self.role == Role::Serve);
        voters.chain(self.gateways.iter()).collect()
    }

    /// The Redis of a cluster on the Redis engine.
    pub fn redis(&mut self) -> Option<&mut RedisServer> {
        self.redis.as_mut()
    }

    /// Starts one more voter of `role` (on 127.0.0.(n+1), node id n+1) that joins the running
    /// cluster with `--join` (every current voter listed), and waits until it is ready; returns
    /// its index in `voters`.
    pub async fn join_voter(&mut self, role: Role, extra: &[&str]) -> anyhow::Result<usize> {
        let n = self.voters.len() + 1;
        let ip = Ipv4Addr::new(127, 0, 0, n as u8);
        let cluster_addr = free_addr(ip)?;
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            n.to_string(),
            "--cluster-listen".into(),
            cluster_addr.to_string(),
            "--advertise".into(),
            cluster_addr.to_string(),
            "--join".into(),
            self.store_list(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let options = ServerOptions {
            role,
            listen: Some(free_addr(ip)?),
            args,
            ..Default::default()
        };
        let voter = Server::launch(&self.bin, options).await?;
        voter.wait_ready_within(Duration::from_secs(60)).await?;
        self.voters.push(voter);
        self.cluster_addrs.push(cluster_addr);
        Ok(self.voters.len() - 1)
    }

    /// The `--store` list for gateways.
    pub fn store_list(&self) -> String {
        self.cluster_addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts a stateless gateway (on 127.0.1.k) and waits until it is ready; returns its index.
    pub async fn add_gateway(&mut self, extra: &[&str]) -> anyhow::Result<usize> {
        let k = self.gateways.len() + 1;
        let ip = Ipv4Addr::new(127, 0, 1, k as u8);
        // A port found free can be taken by a test running beside this one before the gateway
        // binds it: then start again on fresh ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut args: Vec<String> = vec!["--cluster-listen".into(), free_addr(ip)?.to_string()];
            match &self.redis {
                Some(redis) => args.extend(["--redis".into(), redis.url()]),
                None => args.extend(["--store".into(), self.store_list()]),
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            let options = ServerOptions {
                role: Role::Gateway,
                listen: Some(free_addr(ip)?),
                args,
                ..Default::default()
            };
            match Server::start(&self.bin, options).await {
                Ok(gateway) => {
                    self.gateways.push(gateway);
                    return Ok(self.gateways.len() - 1);
                }
                Err(error)
                    if attempt < 3 && error.to_string().contains("Address already in use") =>
                {
                    continue
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The index (in `voters`) of the voter that reports itself leader, if exactly one does.
    pub async fn leader(&self) -> Option<usize> {
        let mut leaders = Vec::new();
        for (i, v) in self.voters.iter().enumerate() {
            if v.is_running() && v.metric("switchboard_raft_is_leader").await == Some(1.0) {
                leaders.push(i);
            }
        }
        match leaders.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// Waits until a single leader is known; returns its index.
    pub async fn wait_leader(&self, within: Duration) -> anyhow::Result<usize> {
        crate::eventually(within, "a raft leader", || self.leader()).await
    }

    /// Cuts voter `index` off from every other voter (its process keeps running).
    pub fn isolate(&self, index: usize) {
        for ((from, to), proxy) in &self.proxies {
            if *from == index || *to == index {
                proxy.cut();
            }
        }
    }

    /// Restores every link cut by [`Cluster::isolate`].
    pub fn heal(&self) {
        for (_, proxy) in &self.proxies {
            proxy.heal();
        }
    }

    /// Every process that handles client traffic (serve nodes and gateways).
    pub fn front_doors(&self) -> Vec<&Server> {
        self.voters
            .iter()
            .filter(|v| v.role() == Role::Serve)
            .chain(self.gateways.iter())
            .collect()
    }

    /// Fails unless every running voter is ready.
    pub async fn check_ready(&self) -> anyhow::Result<()> {
        for v in self.voters.iter().filter(|v| v.is_running()) {
            v.wait_ready().await.context("voter not ready")?;
        }
        if self.voters.is_empty() {
            bail!("no voters");
        }
        Ok(())
    }
}
