//! `baseline-server`: the bare SignalR broadcast server the generator measures Switchboard
//! against (see `switchboard_loadgen::baseline`). Prints `listening on http://ADDR` once bound
//! and serves until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use switchboard_loadgen::baseline::{self, Config};
use tokio_util::sync::CancellationToken;

/// A bare tokio WebSocket server that speaks just enough SignalR to broadcast.
#[derive(Debug, Parser)]
#[command(name = "baseline-server", version)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Frames a connection may have queued before it is dropped as a slow consumer.
    #[arg(long, default_value_t = 2048)]
    queue: usize,
    /// WebSocket read buffer per connection, bytes.
    #[arg(long, default_value_t = 4096)]
    read_buffer: usize,
    /// WebSocket write buffer per connection, bytes (0: one write per frame, as Switchboard).
    #[arg(long, default_value_t = 4096)]
    write_buffer: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    let config = Config {
        queue: args.queue,
        read_buffer: args.read_buffer,
        write_buffer: args.write_buffer,
    };
    baseline::serve(listener, config, shutdown).await;
    Ok(())
}
