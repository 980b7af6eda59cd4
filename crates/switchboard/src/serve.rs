//! The long-running roles: `serve` (gateway + voter), `gateway` (stateless) and `store` (voter).
//!
//! Each one validates its flags before binding anything (exit code 64 on a bad configuration),
//! binds its listeners and hands them to `switchboard_node::Node`, which serves and, on
//! SIGTERM/Ctrl-C, shuts down in order: the gateway drains its clients first, the cluster
//! listener and the store stop last.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_auth::KeySet;
use switchboard_gateway::cors::CorsOrigins;
use switchboard_gateway::upstream::UpstreamConfig;
use switchboard_gateway::GatewayConfig;
use switchboard_net::ClusterIdentity;
use switchboard_node::{GatewaySpec, Listeners, Node, NodeConfig, StoreSpec};
use switchboard_redis::RedisConfig;
use switchboard_store::grpc::Channels;
use switchboard_store::remote::RemoteStoreConfig;
use switchboard_store::StoreConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{CommonFlags, GatewayArgs, GatewayFlags, HttpFlags, ServeArgs, StoreArgs};
use crate::security::{self, Secrets};
use crate::{keys, telemetry};
use switchboard_edge::conn::Timeouts;
use switchboard_edge::EdgeConfig;

/// Exit code for invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// How often certificate files are checked for changes.
const TLS_RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The message for a cluster without a shared key.
const NO_CLUSTER_KEY: &str = "a cluster needs the same --access-key (or --cluster-key) on every node: the nodes prove it to each other";

/// Runs one role to completion with logging, a runtime and configuration errors handled.
/// `validate` checks the flags and reads the secrets they name, before anything is bound.
pub fn main<F, Fut>(
    common: &CommonFlags,
    validate: impl FnOnce() -> anyhow::Result<Secrets>,
    run: F,
) -> ExitCode
where
    F: FnOnce(Secrets, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    telemetry::init_logging(common.log_format);
    let secrets = match validate() {
        Ok(secrets) => secrets,
        Err(e) => {
            eprintln!("switchboard: invalid configuration: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone());
        let materials = secrets.tls_materials();
        if !materials.is_empty() {
            tokio::spawn(switchboard_net::tls::watch(
                materials,
                TLS_RELOAD_EVERY,
                shutdown.clone(),
            ));
        }
        run(secrets, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "switchboard stopped with an error"
            );
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn validate_gateway(flags: &GatewayFlags) -> anyhow::Result<()> {
    if flags.keep_alive_interval == 0 || flags.client_timeout == 0 || flags.handshake_timeout == 0 {
        anyhow::bail!("--keep-alive-interval, --client-timeout and --handshake-timeout must be at least 1 second");
    }
    if flags.max_queued_messages == 0 || flags.max_queued_bytes == 0 {
        anyhow::bail!("--max-queued-messages and --max-queued-bytes must be positive");
    }
    if flags.lease < 3 {
        anyhow::bail!("--lease must be at least 3 seconds");
    }
    if let Some(endpoint) = &flags.public_endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            anyhow::bail!("--public-endpoint must start with http:// or https://");
        }
    }
    if flags.max_connections == Some(0) {
        anyhow::bail!("--max-connections must be at least 1");
    }
    if flags.connection_token_lifetime == 0 {
        anyhow::bail!("--connection-token-lifetime must be at least 1 second");
    }
    if flags.upstream_timeout == 0 {
        anyhow::bail!("--upstream-timeout must be at least 1 second");
    }
    CorsOrigins::parse(&flags.cors_allowed_origins).map_err(anyhow::Error::msg)?;
    if flags.stateful_reconnect_buffer == 0 {
        anyhow::bail!("--stateful-reconnect-buffer must be positive");
    }
    Ok(())
}

pub fn validate_serve(args: &ServeArgs) -> anyhow::Result<Secrets> {
    validate_gateway(&args.gateway)?;
    let node = args.node_id.resolve().map_err(anyhow::Error::msg)?;
    if args.snapshot_every == 0 {
        anyhow::bail!("--snapshot-every must be at least 1");
    }
    if let Some(peers) = &args.peers {
        if !peers.0.contains_key(&node) && args.join.is_none() {
            anyhow::bail!("--peers must list this node ({node}), or --join must say where to join");
        }
        if args.cluster_listen.is_none() {
            anyhow::bail!(
                "--peers needs --cluster-listen (where the other voters reach this node)"
            );
        }
    }
    if args.join.is_some() && args.cluster_listen.is_none() {
        anyhow::bail!("--join needs --cluster-listen (where the other voters reach this node)");
    }
    let mut secrets = security::read(
        &args.gateway.keys,
        Some(&args.cluster),
        Some(&args.gateway.http),
    )?;
    if args.join.is_some() && !secrets.has_cluster_key() {
        anyhow::bail!("--join needs the cluster's key (--access-key or --cluster-key): a key generated here would not be the cluster's");
    }
    secrets.upstream = security::upstream(
        args.gateway.upstream_config.as_deref(),
        &args.gateway.upstreams,
    )?;
    if args.cluster_listen.is_some() && !secrets.has_cluster_key() {
        anyhow::bail!(NO_CLUSTER_KEY);
    }
    Ok(secrets)
}

pub fn validate_store(args: &StoreArgs) -> anyhow::Result<Secrets> {
    let node = args.node_id.resolve().map_err(anyhow::Error::msg)?;
    if args.snapshot_every == 0 {
        anyhow::bail!("--snapshot-every must be at least 1");
    }
    if let Some(peers) = &args.peers {
        if !peers.0.contains_key(&node) && args.join.is_none() {
            anyhow::bail!("--peers must list this node ({node}), or --join must say where to join");
        }
    }
    let secrets = security::read(&args.keys, Some(&args.cluster), Some(&args.http))?;
    if !secrets.has_cluster_key() {
        anyhow::bail!(NO_CLUSTER_KEY);
    }
    Ok(secrets)
}

pub fn validate_gateway_role(args: &GatewayArgs) -> anyhow::Result<Secrets> {
    validate_gateway(&args.gateway)?;
    if let Some(id) = args.node_id {
        id.resolve().map_err(anyhow::Error::msg)?;
    }
    let mut secrets = security::read(
        &args.gateway.keys,
        Some(&args.cluster),
        Some(&args.gateway.http),
    )?;
    secrets.upstream = security::upstream(
        args.gateway.upstream_config.as_deref(),
        &args.gateway.upstreams,
    )?;
    if secrets.access_keys.is_empty() {
        anyhow::bail!("a gateway needs --access-key or --access-key-file (the same keys as the rest of the cluster)");
    }
    Ok(secrets)
}

/// The endpoint clients and app servers use, for the printed connection string.
fn public_endpoint(flags: &GatewayFlags, bound: SocketAddr, https: bool) -> String {
    if let Some(e) = &flags.public_endpoint {
        return e.trim_end_matches('/').to_owned();
    }
    let host = if bound.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        bound.ip().to_string()
    };
    let host = if bound.is_ipv6() && !bound.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}:{}", bound.port())
}

/// How the public listener treats connections: the flags' timeouts, TLS, and room for
/// `max_sockets` at once.
fn edge_config(flags: &HttpFlags, secrets: &Secrets, max_sockets: usize) -> EdgeConfig {
    let mut edge = EdgeConfig::new(max_sockets, Arc::new(switchboard_gateway::error::reject));
    edge.timeouts = Timeouts {
        header: Duration::from_secs(flags.http_header_timeout),
        idle: Duration::from_secs(flags.http_idle_timeout),
    };
    edge.tls = secrets.public_tls.as_ref().map(|t| t.server_config());
    edge
}

fn gateway_config(
    node_id: u64,
    incarnation: u64,
    advertise: String,
    flags: &GatewayFlags,
    cluster: Option<Channels>,
    max_sockets: usize,
    upstream: Option<&switchboard_upstream::Settings>,
) -> GatewayConfig {
    let mut config = GatewayConfig::new(node_id, advertise);
    config.incarnation = incarnation;
    // Below the socket cap, so REST and health keep a share of sockets at the limit.
    config.max_connections = flags.max_connections.unwrap_or(max_sockets / 10 * 9);
    config.connection_token_lifetime = Duration::from_secs(flags.connection_token_lifetime);
    config.shutdown_grace = Duration::from_secs(flags.shutdown_grace);
    config.keep_alive_interval = Duration::from_secs(flags.keep_alive_interval);
    config.client_timeout = Duration::from_secs(flags.client_timeout);
    config.handshake_timeout = Duration::from_secs(flags.handshake_timeout);
    config.queue_limits.max_frames = flags.max_queued_messages;
    config.queue_limits.max_bytes = flags.max_queued_bytes;
    config.lease = Duration::from_secs(flags.lease);
    config.stateful_reconnect_window = Duration::from_secs(flags.stateful_reconnect_window);
    config.stateful_reconnect_buffer = flags.stateful_reconnect_buffer;
    config.admin = flags.admin;
    config.cluster = cluster;
    // Checked by `validate_gateway` before anything starts; were it not, no origin would pass.
    config.cors = CorsOrigins::parse(&flags.cors_allowed_origins)
        .unwrap_or_else(|_| CorsOrigins::Listed(Vec::new()));
    config.upstream = upstream.map(|settings| {
        let mut upstream = UpstreamConfig::new(settings.clone());
        upstream.client.timeout = Duration::from_secs(flags.upstream_timeout);
        upstream
    });
    config
}

/// The address other nodes dial: --advertise, else this node's --peers entry, else the
/// cluster listener (with a usable host).
fn advertise(
    explicit: Option<&String>,
    peers: Option<&BTreeMap<u64, String>>,
    node: u64,
    listen: SocketAddr,
) -> String {
    if let Some(a) = explicit {
        return a.clone();
    }
    if let Some(a) = peers.and_then(|p| p.get(&node)) {
        return a.clone();
    }
    if listen.ip().is_unspecified() {
        tracing::warn!(%listen, "--cluster-listen is unspecified and no --advertise given: other nodes will dial 127.0.0.1");
        return format!("127.0.0.1:{}", listen.port());
    }
    listen.to_string()
}

/// An incarnation for this process: milliseconds since the epoch at start (a restart of the
/// same node id announces a higher one).
fn incarnation() -> u64 {
    switchboard_core::throttle::now_ms()
}

/// Pending connections the kernel may queue per listener (capped by `net.core.somaxconn`): a
/// burst of reconnecting clients must not overflow it.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .with_context(|| format!("creating a socket for {what}"))?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {what} {addr}"))?;
    socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("listening on {what} {addr}"))
}

/// `switchboard serve`.
pub async fn serve(
    args: ServeArgs,
    secrets: Secrets,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let prometheus = telemetry::init_metrics()?;
    let node_id = args.node_id.resolve().map_err(anyhow::Error::msg)?;
    let incarnation = incarnation();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let keys = keys::load_or_generate(&secrets.access_keys, &args.data_dir)?;
    let keyset = KeySet::new(keys.clone()).context("access keys")?;

    let listener = bind(args.listen, "--listen").await?;
    let cluster_listener = match args.cluster_listen {
        Some(addr) => Some(bind(addr, "--cluster-listen").await?),
        None => None,
    };
    let peers = args.peers.as_ref().map(|p| p.0.clone());
    let advertise = match (&cluster_listener, args.cluster_listen) {
        (Some(_), Some(addr)) => advertise(args.advertise.as_ref(), peers.as_ref(), node_id, addr),
        _ => listener.local_addr()?.to_string(),
    };
    let security = match &cluster_listener {
        Some(_) => Some(secrets.cluster_security(
            &keys,
            ClusterIdentity {
                node: node_id,
                incarnation,
            },
        )?),
        None => None,
    };
    let bound = listener.local_addr()?;
    let cluster = security.is_some();
    let max_sockets = switchboard_edge::socket_budget();
    let config = gateway_config(
        node_id,
        incarnation,
        advertise.clone(),
        &args.gateway,
        security.clone().map(Channels::new),
        max_sockets,
        secrets.upstream.as_ref(),
    );
    let edge = edge_config(&args.gateway.http, &secrets, max_sockets);
    let tls = edge.tls.is_some();
    let mut store = StoreConfig::new(node_id, args.data_dir.clone());
    (store.snapshot_every, store.keep_logs_after_snapshot) =
        (args.snapshot_every, args.snapshot_keep_logs);
    store.advertise_addr = advertise;
    let node = Node::start(
        Listeners {
            public: Some(listener),
            cluster: cluster_listener,
        },
        NodeConfig {
            store: store_spec(store, args.peers.as_ref(), args.join.as_ref(), node_id),
            gateway: Some(GatewaySpec {
                config,
                keys: keyset,
                edge,
            }),
            security,
            health_edge: None,
            prometheus: Some(prometheus),
        },
        shutdown,
    )
    .await
    .context("starting")?;
    log_serving(
        &node,
        "switchboard is serving",
        bound,
        cluster,
        &secrets,
        tls,
    );
    print_connection_string(&args.gateway, bound, &keys[0], Some(&args.data_dir), tls)?;
    node.wait().await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

/// The start-up line of a node with a gateway.
fn log_serving(
    node: &Node,
    what: &'static str,
    bound: SocketAddr,
    cluster: bool,
    secrets: &Secrets,
    tls: bool,
) {
    let Some(gateway) = node.gateway() else {
        return;
    };
    tracing::info!(
        listen = %bound,
        node_id = gateway.config.node_id,
        cluster,
        cluster_tls = secrets.cluster_tls.is_some(),
        tls,
        max_connections = gateway.config.max_connections,
        upstream_templates = gateway.upstream.as_ref().map_or(0, |u| u.templates()),
        "{what}"
    );
}

/// `switchboard gateway`.
pub async fn gateway(
    args: GatewayArgs,
    secrets: Secrets,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let prometheus = telemetry::init_metrics()?;
    let node_id = match args.node_id {
        Some(id) => id.resolve().map_err(anyhow::Error::msg)?,
        // Stateless gateways need only a unique id for their lifetime.
        None => rand_node_id(),
    };
    let incarnation = incarnation();
    let keys = secrets.access_keys.clone();
    let keyset = KeySet::new(keys.clone()).context("access keys")?;
    let security = secrets.cluster_security(
        &keys,
        ClusterIdentity {
            node: node_id,
            incarnation,
        },
    )?;
    let listener = bind(args.listen, "--listen").await?;
    let cluster_listener = bind(args.cluster_listen, "--cluster-listen").await?;
    let advertise = advertise(args.advertise.as_ref(), None, node_id, args.cluster_listen);
    let max_sockets = switchboard_edge::socket_budget();
    let config = gateway_config(
        node_id,
        incarnation,
        advertise,
        &args.gateway,
        Some(Channels::new(security.clone())),
        max_sockets,
        secrets.upstream.as_ref(),
    );
    let edge = edge_config(&args.gateway.http, &secrets, max_sockets);
    let tls = edge.tls.is_some();
    let bound = listener.local_addr()?;
    let store = match (&args.store, &args.redis) {
        (_, Some(url)) => {
            tracing::info!(redis = %switchboard_redis::redact(url), "on the Redis engine");
            let mut redis = RedisConfig::new(url.clone(), node_id);
            redis.prefix = args.redis_prefix.clone();
            StoreSpec::Redis(redis)
        }
        (Some(voters), None) => {
            tracing::info!(store = ?voters.0, "following the store");
            StoreSpec::Remote {
                voters: voters.0.clone(),
                config: RemoteStoreConfig::new(node_id),
            }
        }
        (None, None) => anyhow::bail!("a gateway needs --store or --redis"),
    };
    let node = Node::start(
        Listeners {
            public: Some(listener),
            cluster: Some(cluster_listener),
        },
        NodeConfig {
            store,
            gateway: Some(GatewaySpec {
                config,
                keys: keyset,
                edge,
            }),
            security: Some(security),
            health_edge: None,
            prometheus: Some(prometheus),
        },
        shutdown,
    )
    .await
    .context("starting")?;
    log_serving(
        &node,
        "switchboard gateway is serving",
        bound,
        true,
        &secrets,
        tls,
    );
    print_connection_string(&args.gateway, bound, &keys[0], None, tls)?;
    node.wait().await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

/// `switchboard store`.
pub async fn store(
    args: StoreArgs,
    secrets: Secrets,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let prometheus = telemetry::init_metrics()?;
    let node_id = args.node_id.resolve().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let security = secrets.cluster_security(
        &secrets.access_keys,
        ClusterIdentity {
            node: node_id,
            incarnation: incarnation(),
        },
    )?;
    let http = match args.listen {
        Some(addr) => Some(bind(addr, "--listen").await?),
        None => None,
    };
    let cluster_listener = bind(args.cluster_listen, "--cluster-listen").await?;
    let mut store = StoreConfig::new(node_id, args.data_dir.clone());
    (store.snapshot_every, store.keep_logs_after_snapshot) =
        (args.snapshot_every, args.snapshot_keep_logs);
    store.advertise_addr = advertise(
        args.advertise.as_ref(),
        args.peers.as_ref().map(|p| &p.0),
        node_id,
        args.cluster_listen,
    );
    let node = Node::start(
        Listeners {
            public: http,
            cluster: Some(cluster_listener),
        },
        NodeConfig {
            store: store_spec(store, args.peers.as_ref(), args.join.as_ref(), node_id),
            gateway: None,
            security: Some(security),
            // Health and metrics only: a small share of the process's sockets.
            health_edge: Some(edge_config(&args.http, &secrets, 256)),
            prometheus: Some(prometheus),
        },
        shutdown,
    )
    .await
    .context("starting")?;
    tracing::info!(node_id, cluster_listen = %args.cluster_listen, tls = secrets.cluster_tls.is_some(), "switchboard store voter is serving");
    node.wait().await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

/// A voter of the cluster `--peers` lists when it lists this node; else one that joins through
/// `--join`; else the single voter.
fn store_spec(
    config: StoreConfig,
    peers: Option<&crate::cli::Peers>,
    join: Option<&crate::cli::Voters>,
    node: u64,
) -> StoreSpec {
    match (peers, join) {
        (Some(peers), _) if peers.0.contains_key(&node) => StoreSpec::Voter {
            config,
            peers: Some(peers.0.clone()),
        },
        (_, Some(join)) => StoreSpec::Joining {
            config,
            join: join.0.clone(),
        },
        (peers, None) => StoreSpec::Voter {
            config,
            peers: peers.map(|p| p.0.clone()),
        },
    }
}

fn rand_node_id() -> u64 {
    // High ids keep clear of the small ids operators give voters.
    (1u64 << 32) + u64::from(rand::random::<u32>())
}

fn print_connection_string(
    flags: &GatewayFlags,
    bound: SocketAddr,
    key: &str,
    data_dir: Option<&std::path::Path>,
    https: bool,
) -> anyhow::Result<()> {
    let endpoint = public_endpoint(flags, bound, https);
    // The connection string app servers use; scripts look for the line starting with `Endpoint=`.
    let connection_string = format!("Endpoint={endpoint};AccessKey={key};Version=1.0;");
    if flags.print_connection_string {
        println!("{connection_string}");
    }
    if let Some(dir) = data_dir {
        keys::write_private(&dir.join("connection-string"), &connection_string)?;
    }
    Ok(())
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        shutdown.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown signal received");
        shutdown.cancel();
    });
}
