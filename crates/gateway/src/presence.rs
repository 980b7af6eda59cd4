//! This gateway's lease in the store, and the fan-out's peers.
//!
//! The gateway holds a lease (`NodeHeartbeat`, renewed every third of the lease). The lease is
//! what makes its connections visible: other gateways ask (and send to) only the gateways the
//! store lists. If the store ever answers a renewal with a fresh registration, the lease had
//! lapsed and the cluster stopped seeing this gateway's connections, and user-group changes made
//! meanwhile did not reach them: the gateway closes them (clients reconnect and join their
//! groups afresh).

use std::sync::Arc;
use std::time::Duration;

use switchboard_membership::{Command, Outcome};
use tokio_util::sync::CancellationToken;

use crate::metrics::CloseReason;
use crate::Shared;

const RETRY_EVERY: Duration = Duration::from_millis(500);
const PEER_SYNC_EVERY: Duration = Duration::from_millis(500);
/// Between two pulls of every gateway's hubs (`interest`).
const PULL_EVERY: Duration = Duration::from_secs(5);

/// Runs heartbeats and the peer table until `cancel`.
pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let heartbeat = heartbeat(shared.clone(), cancel.clone());
    let peers = sync_peers(shared, cancel);
    tokio::join!(heartbeat, peers);
}

/// Keeps the fan-out's peer table in step with the gateways the store lists, and the table of
/// the hubs they serve (pulled every few seconds; withdrawn hubs swept here).
async fn sync_peers(shared: Arc<Shared>, cancel: CancellationToken) {
    let Some(fanout) = shared.transport.clone() else {
        return;
    };
    let view = shared.store.view();
    let interest = pull_interest(shared.clone(), cancel.clone());
    let links = async {
        loop {
            let listed = crate::peers::listed_peers(&view.read());
            fanout.set_peers(&listed);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(PEER_SYNC_EVERY) => {}
            }
        }
    };
    tokio::join!(links, interest);
}

/// Pulls every gateway's hubs and withdraws this one's idle hubs, every [`PULL_EVERY`].
async fn pull_interest(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = crate::scatter::pull_hubs(&shared) => {}
        }
        let local = shared.local.clone();
        shared.interest.sweep(std::time::Instant::now(), |hub| {
            local.read().hub_nodes(hub).next().is_some()
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PULL_EVERY) => {}
        }
    }
}

async fn heartbeat(shared: Arc<Shared>, cancel: CancellationToken) {
    let config = &shared.config;
    let renew_every = config.lease / 3;
    let mut registered_before = false;
    let mut failures = 0u32;
    let mut refusals = 0u32;
    loop {
        let command = Command::NodeHeartbeat {
            node: config.node_id,
            incarnation: config.incarnation,
            address: config.advertise.clone(),
            lease_ms: config.lease.as_millis() as u64,
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = shared.write(command) => r,
        };
        let wait = match result {
            Ok(Outcome::Renewed) => {
                shared.set_registered(true);
                failures = 0;
                refusals = 0;
                renew_every
            }
            Ok(Outcome::Registered) => {
                if registered_before {
                    tracing::warn!(
                        "lease had lapsed: the store dropped this node's connections; closing them"
                    );
                    shared.close_all(
                        CloseReason::Store,
                        "The server lost its registration; reconnect.",
                    );
                } else {
                    tracing::info!(
                        node = config.node_id,
                        incarnation = config.incarnation,
                        "registered with the store"
                    );
                }
                registered_before = true;
                shared.set_registered(true);
                failures = 0;
                refusals = 0;
                renew_every
            }
            Ok(other) => {
                refusals += 1;
                if refusals == 1 || refusals % 30 == 0 {
                    tracing::error!(outcome = ?other, node = config.node_id, refusals, "the store refused this node: is another process using the same --node-id?");
                }
                shared.set_registered(false);
                shared.close_all(
                    CloseReason::Store,
                    "The server lost its registration; reconnect.",
                );
                RETRY_EVERY * 4
            }
            Err(error) => {
                failures += 1;
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(%error, failures, "heartbeat failed");
                }
                shared.set_registered(false);
                RETRY_EVERY
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
