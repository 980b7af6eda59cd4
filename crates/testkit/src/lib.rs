//! Test support for Switchboard's end-to-end tests.
//!
//! Tests run the real `switchboard` binary as child processes on ephemeral loopback ports
//! ([`Server`]), talk REST to it with real signed JWTs, and connect the official
//! `@microsoft/signalr` JavaScript client to it through a small Node driver ([`JsClients`],
//! `tests/js/driver.mjs`), so the peers on the other end of every socket are code nobody here wrote.
//! Faults are real too: processes are killed with SIGKILL or stopped with SIGTERM.
//! Waiting is always "until a condition holds or a deadline passes" ([`eventually`]), never a
//! fixed sleep followed by an assertion.

pub mod browser;
mod cluster;
mod js;
pub mod mount;
pub mod pki;
mod proxy;
mod rawws;
pub mod redis;
mod server;
pub mod upstream;

pub use cluster::{free_addr, Cluster, Engine};
pub use js::{ConnectOptions, JsClients, Message};
pub use proxy::{Proxy, RoundRobin};
pub use rawws::{Negotiated, RawClient, Refused};
pub use server::{RestResponse, Role, Server, ServerOptions, TEST_KEY};
pub use upstream::{Gate, Recorded, Reply, Upstream};

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// The repository root (where `tests/js` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
