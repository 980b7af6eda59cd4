//! `upstream-server`: the minimal serverless upstream the `invoke` benchmark calls (see
//! `switchboard_loadgen::upstream`). Prints `listening on http://ADDR` once bound and serves
//! until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use switchboard_loadgen::upstream::{self, Counts};
use tokio_util::sync::CancellationToken;

/// Answers every invocation with a completion, everything else with 204.
#[derive(Debug, Parser)]
#[command(name = "upstream-server", version)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    builder.enable_all().build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => return,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop.cancel();
        });
        let counts = Arc::new(Counts::default());
        upstream::serve(listener, counts.clone(), shutdown).await;
        eprintln!(
            "upstream-server: {} invocations, {} other requests",
            counts
                .invocations
                .load(std::sync::atomic::Ordering::Relaxed),
            counts.other.load(std::sync::atomic::Ordering::Relaxed)
        );
        Ok(())
    })
}
