//! Prometheus metrics of the store, through the `metrics` facade.
//!
//! Raft gauges follow openraft's metrics channel (a task watches it and also logs elections and
//! snapshots); the commit index comes from the log store, which is where openraft 0.9 reports
//! it. Write metrics are recorded by the batcher and by each write call.
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `switchboard_raft_term` | gauge | current term |
//! | `switchboard_raft_leader_id` | gauge | leader's node id (-1: none known) |
//! | `switchboard_raft_is_leader` | gauge | 1 on the leader |
//! | `switchboard_raft_last_log_index` | gauge | last index in the local log |
//! | `switchboard_raft_applied_index` | gauge | last index applied to the local state |
//! | `switchboard_raft_commit_index` | gauge | last committed index saved locally |
//! | `switchboard_store_write_batch_size` | histogram | commands per proposed log entry |
//! | `switchboard_store_write_seconds` | histogram | latency of one `write`/`write_all` call |
//! | `switchboard_store_writes_total{result}` | counter | write calls by result (also counted by a gateway's remote store) |
//! | `switchboard_store_watchers_lagged_total` | counter | watch streams a voter ended because the watcher fell behind |
//! | `switchboard_store_watch_connected` | gauge | 1 while a gateway's remote store follows a voter's watch stream |
//! | `switchboard_store_watch_resyncs_total` | counter | times a gateway's remote store started its watch over |
//! | `switchboard_store_disk_errors_total{op}` | counter | failed attempts at a disk operation (each is retried) |
//! | `switchboard_store_disk_failing` | gauge | 1 while a disk operation is failing (the node is not ready) |

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::StoreError;
use crate::RaftMetrics;

pub(crate) const RAFT_TERM: &str = "switchboard_raft_term";
pub(crate) const RAFT_LEADER_ID: &str = "switchboard_raft_leader_id";
pub(crate) const RAFT_IS_LEADER: &str = "switchboard_raft_is_leader";
pub(crate) const RAFT_LAST_LOG_INDEX: &str = "switchboard_raft_last_log_index";
pub(crate) const RAFT_APPLIED_INDEX: &str = "switchboard_raft_applied_index";
pub(crate) const RAFT_COMMIT_INDEX: &str = "switchboard_raft_commit_index";
pub(crate) const WRITE_BATCH_SIZE: &str = "switchboard_store_write_batch_size";
pub(crate) const WRITE_SECONDS: &str = "switchboard_store_write_seconds";
pub(crate) const WRITES_TOTAL: &str = "switchboard_store_writes_total";
pub(crate) const WATCHERS_LAGGED: &str = "switchboard_store_watchers_lagged_total";
pub(crate) const WATCH_CONNECTED: &str = "switchboard_store_watch_connected";
pub(crate) const WATCH_RESYNCS: &str = "switchboard_store_watch_resyncs_total";
pub(crate) const RAFT_RPCS_REFUSED: &str = "switchboard_raft_rpcs_refused_total";
pub(crate) const WRITES_REFUSED: &str = "switchboard_store_writes_refused_total";
pub(crate) const DISK_ERRORS: &str = "switchboard_store_disk_errors_total";
pub(crate) const DISK_FAILING: &str = "switchboard_store_disk_failing";

/// Registers help text for every store metric (call once the recorder is installed).
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(RAFT_TERM, "Current Raft term of this voter.");
    describe_gauge!(
        RAFT_LEADER_ID,
        "Node id of the Raft leader this voter knows (-1: none)."
    );
    describe_gauge!(
        RAFT_IS_LEADER,
        "1 while this voter is the Raft leader, else 0."
    );
    describe_gauge!(
        RAFT_LAST_LOG_INDEX,
        "Index of the last entry in this voter's Raft log."
    );
    describe_gauge!(
        RAFT_APPLIED_INDEX,
        "Index of the last Raft entry applied to this voter's membership state."
    );
    describe_gauge!(
        RAFT_COMMIT_INDEX,
        "Index of the last committed Raft entry this voter has saved."
    );
    describe_histogram!(
        WRITE_BATCH_SIZE,
        "Membership commands carried by one proposed log entry."
    );
    describe_histogram!(
        WRITE_SECONDS,
        Unit::Seconds,
        "Time a membership write took, from call to applied."
    );
    describe_counter!(WRITES_TOTAL, "Membership write calls by result.");
    describe_counter!(
        DISK_ERRORS,
        "Failed attempts at a disk operation of the store, by operation (each is retried)."
    );
    describe_gauge!(
        DISK_FAILING,
        "1 while a disk operation of the store is failing and retried (the node is not ready)."
    );
    describe_counter!(
        WATCHERS_LAGGED,
        "Watch streams a voter ended because the watcher fell behind."
    );
    describe_gauge!(
        WATCH_CONNECTED,
        "1 while this gateway's replica follows a voter's watch stream."
    );
    describe_counter!(
        WATCH_RESYNCS,
        "Times this gateway's replica started its watch over."
    );
    describe_counter!(
        RAFT_RPCS_REFUSED,
        "Raft RPCs from authenticated peers refused before Raft saw them: implausible terms or indexes (reason implausible), or a vote while a leader is alive (reason leader_alive)."
    );
    describe_counter!(
        WRITES_REFUSED,
        "Store writes refused because a command acts for another node than the caller."
    );
}

/// A Raft RPC was refused before openraft saw it.
pub(crate) fn raft_rpc_refused(reason: &'static str) {
    metrics::counter!(RAFT_RPCS_REFUSED, "reason" => reason).increment(1);
}

/// A store write was refused: it acts for another node.
pub(crate) fn write_refused() {
    metrics::counter!(WRITES_REFUSED).increment(1);
}

/// A voter ended a watch stream whose watcher fell behind the feed.
pub(crate) fn watcher_lagged() {
    metrics::counter!(WATCHERS_LAGGED).increment(1);
}

/// A remote store's watch stream is up (or down).
pub(crate) fn watch_connected(connected: bool) {
    metrics::gauge!(WATCH_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

/// A remote store starts its watch over.
pub(crate) fn watch_resync() {
    metrics::counter!(WATCH_RESYNCS).increment(1);
}

/// The commit index saved by the log store.
pub(crate) fn commit_index(index: u64) {
    metrics::gauge!(RAFT_COMMIT_INDEX).set(index as f64);
}

/// One proposed log entry carrying `commands` commands.
pub(crate) fn write_batch(commands: usize) {
    metrics::histogram!(WRITE_BATCH_SIZE).record(commands as f64);
}

/// The `result` label of a finished write call.
pub(crate) fn result_label(result: &Result<(), &StoreError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(StoreError::NotLeader { .. }) => "not_leader",
        Err(StoreError::Unavailable(_)) => "unavailable",
        Err(StoreError::Timeout(_)) => "timeout",
        Err(_) => "error",
    }
}

/// One finished `write`/`write_all` call.
pub(crate) fn write_done(result: &'static str, elapsed: Duration) {
    metrics::counter!(WRITES_TOTAL, "result" => result).increment(1);
    metrics::histogram!(WRITE_SECONDS).record(elapsed.as_secs_f64());
}

fn set_gauges(m: &RaftMetrics) {
    metrics::gauge!(RAFT_TERM).set(m.current_term as f64);
    metrics::gauge!(RAFT_LEADER_ID).set(m.current_leader.map_or(-1.0, |id| id as f64));
    metrics::gauge!(RAFT_IS_LEADER).set(if m.current_leader == Some(m.id) {
        1.0
    } else {
        0.0
    });
    if let Some(index) = m.last_log_index {
        metrics::gauge!(RAFT_LAST_LOG_INDEX).set(index as f64);
    }
    if let Some(applied) = m.last_applied {
        metrics::gauge!(RAFT_APPLIED_INDEX).set(applied.index as f64);
    }
}

/// Follows openraft's metrics until cancelled: updates gauges, logs leader and snapshot changes.
pub(crate) async fn watch_raft(mut rx: watch::Receiver<RaftMetrics>, cancel: CancellationToken) {
    let mut previous: Option<RaftMetrics> = None;
    loop {
        let current = rx.borrow_and_update().clone();
        set_gauges(&current);
        log_changes(previous.as_ref(), &current);
        previous = Some(current);
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

fn log_changes(previous: Option<&RaftMetrics>, m: &RaftMetrics) {
    let (leader, term, snapshot, state_ok) = match previous {
        Some(p) => (
            p.current_leader,
            p.current_term,
            p.snapshot,
            p.running_state.is_ok(),
        ),
        None => (None, 0, None, true),
    };
    if m.current_leader != leader || m.current_term != term {
        match m.current_leader {
            Some(l) => tracing::info!(
                node_id = m.id,
                term = m.current_term,
                leader_id = l,
                is_leader = l == m.id,
                "raft leader elected"
            ),
            None => tracing::info!(node_id = m.id, term = m.current_term, "raft leader unknown"),
        }
    }
    if m.snapshot != snapshot {
        if let Some(s) = m.snapshot {
            tracing::info!(
                node_id = m.id,
                snapshot_index = s.index,
                purged_index = m.purged.map(|p| p.index),
                "raft snapshot updated"
            );
        }
    }
    if let Err(fatal) = &m.running_state {
        if state_ok {
            tracing::error!(node_id = m.id, error = %fatal, "raft stopped");
        }
    }
}
