//! `switchboard serve`: one process with the gateway and a Raft store voter.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_auth::KeySet;
use switchboard_gateway::{Gateway, GatewayConfig};
use switchboard_store::{MembershipStore, RaftStore, StoreConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::{keys, telemetry};

/// Which processes a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
}

/// Exit code for invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

pub fn main(role: Role, args: ServeArgs) -> ExitCode {
    telemetry::init_logging(args.log_format);
    if let Err(e) = validate(&args) {
        eprintln!("switchboard: invalid configuration: {e:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
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
    match runtime.block_on(run(role, args)) {
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

fn validate(args: &ServeArgs) -> anyhow::Result<()> {
    if args.node_id == 0 {
        anyhow::bail!("--node-id must be 1 or more");
    }
    if args.keep_alive_interval == 0 || args.client_timeout == 0 || args.handshake_timeout == 0 {
        anyhow::bail!("--keep-alive-interval, --client-timeout and --handshake-timeout must be at least 1 second");
    }
    if args.snapshot_every == 0 {
        anyhow::bail!("--snapshot-every must be at least 1");
    }
    if args.max_queued_messages == 0 || args.max_queued_bytes == 0 {
        anyhow::bail!("--max-queued-messages and --max-queued-bytes must be positive");
    }
    if let Some(endpoint) = &args.public_endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            anyhow::bail!("--public-endpoint must start with http:// or https://");
        }
    }
    Ok(())
}

/// The endpoint clients and app servers use, for the printed connection string.
fn public_endpoint(args: &ServeArgs, bound: SocketAddr) -> String {
    if let Some(e) = &args.public_endpoint {
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
    format!("http://{host}:{}", bound.port())
}

async fn run(role: Role, args: ServeArgs) -> anyhow::Result<()> {
    let Role::Serve = role;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let prometheus = telemetry::init_metrics()?;

    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let keys = keys::load_or_generate(&args.access_keys, &args.data_dir)?;
    let keyset = KeySet::new(keys.clone()).context("access keys")?;

    let mut store_config = StoreConfig::new(args.node_id, args.data_dir.clone());
    store_config.snapshot_every = args.snapshot_every;
    let store = RaftStore::open(store_config, switchboard_store::network::SingleNodeNetwork)
        .await
        .context("opening the store")?;
    store
        .initialize_single()
        .await
        .context("initializing the store")?;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let bound = listener.local_addr()?;
    let endpoint = public_endpoint(&args, bound);

    let mut config = GatewayConfig::new(args.node_id, bound.to_string());
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace);
    config.keep_alive_interval = Duration::from_secs(args.keep_alive_interval);
    config.client_timeout = Duration::from_secs(args.client_timeout);
    config.handshake_timeout = Duration::from_secs(args.handshake_timeout);
    config.queue_limits.max_frames = args.max_queued_messages;
    config.queue_limits.max_bytes = args.max_queued_bytes;
    let gateway = Gateway::new(
        config,
        keyset,
        store.clone() as Arc<dyn MembershipStore>,
        Some(prometheus),
    );

    tracing::info!(listen = %bound, data_dir = %args.data_dir.display(), node_id = args.node_id, "switchboard is serving");
    // The connection string app servers use; scripts look for the line starting with `Endpoint=`.
    let connection_string = format!("Endpoint={endpoint};AccessKey={};Version=1.0;", keys[0]);
    println!("{connection_string}");
    keys::write_private(&args.data_dir.join("connection-string"), &connection_string)?;

    gateway.run(listener, shutdown).await.context("serving")?;
    store.shutdown().await;
    tracing::info!("stopped");
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
