//! This gateway's presence in the store, and keeping its local connections and the store in step.
//!
//! The gateway holds a lease (`NodeHeartbeat`, renewed every third of the lease). If the store
//! ever answers a renewal with a fresh registration, the lease had lapsed and the store already
//! dropped this node's connections: the gateway closes them (clients reconnect and re-register).
//! The reconciler repairs the other direction: connections the store still lists for this node
//! but that are gone locally (their disconnect could not be recorded) are removed from the store,
//! and local connections the store no longer knows are closed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use switchboard_membership::{Command, Name, Outcome};
use tokio_util::sync::CancellationToken;

use crate::metrics::CloseReason;
use crate::outbound::CloseRequest;
use crate::Shared;

const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// Connections closed per reconciliation write.
const RECONCILE_CHUNK: usize = 256;
const RETRY_EVERY: Duration = Duration::from_millis(500);
const PEER_SYNC_EVERY: Duration = Duration::from_millis(500);

/// Runs heartbeats and reconciliation until `cancel`.
pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let heartbeat = heartbeat(shared.clone(), cancel.clone());
    let reconcile = reconcile_loop(shared.clone(), cancel.clone());
    let peers = sync_peers(shared, cancel);
    tokio::join!(heartbeat, reconcile, peers);
}

/// Keeps the fan-out's peer table in step with the gateways the store lists.
async fn sync_peers(shared: Arc<Shared>, cancel: CancellationToken) {
    let Some(fanout) = shared.fanout.clone() else {
        return;
    };
    let view = shared.store.view();
    loop {
        let listed = crate::peers::listed_peers(&view.read());
        fanout.set_peers(&listed);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PEER_SYNC_EVERY) => {}
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

async fn reconcile_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
        reconcile(&shared).await;
    }
}

/// One pass of reconciliation; see the module docs.
pub async fn reconcile(shared: &Shared) {
    let node = shared.config.node_id;
    // Local handles first, the view second: a handle is marked registered only after the store
    // applied its connection, so every handle seen here is in any view read afterwards unless
    // the store really dropped it. (The other order races with connections opening meanwhile.)
    let mut registered = Vec::new();
    shared.registry.for_each(|h| {
        if h.is_registered() {
            registered.push(h.clone());
        }
    });
    let (stale, known): (Vec<(Name, Name)>, HashSet<Name>) = {
        let view = shared.store.view();
        let view = view.read();
        let mut stale = Vec::new();
        let mut known = HashSet::new();
        for (hub, connection) in view.connections_on_node(node) {
            if !shared.registry.contains(hub, connection) {
                stale.push((hub.clone(), connection.clone()));
            }
            known.insert(connection.clone());
        }
        (stale, known)
    };
    let orphans: Vec<_> = registered
        .into_iter()
        .filter(|h| !known.contains(&h.id))
        .collect();
    for handle in orphans {
        tracing::info!(connection_id = %handle.id, "closing a connection the store no longer knows");
        handle.close(CloseRequest {
            reason: CloseReason::Store,
            error: Some("The server lost this connection's registration; reconnect.".into()),
            allow_reconnect: true,
        });
    }
    if stale.is_empty() {
        return;
    }
    tracing::debug!(
        count = stale.len(),
        "removing connections that ended locally from the store"
    );
    let commands: Vec<Command> = stale
        .into_iter()
        .map(|(hub, connection)| Command::ConnectionClosed { hub, connection })
        .collect();
    // In entries of bounded size: these need no atomicity, and one entry must stay small.
    for chunk in commands.chunks(RECONCILE_CHUNK) {
        if let Err(error) = shared.store.write_all(chunk.to_vec()).await {
            tracing::debug!(%error, "reconciliation write failed; will retry");
            return;
        }
    }
}
