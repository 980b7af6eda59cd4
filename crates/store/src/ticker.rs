//! Expiry without traffic.
//!
//! The state machine reads no clock: a user-group TTL or a gateway lease ends only when an entry
//! stamped at or after its deadline is applied. When nobody writes, the leader proposes
//! `Command::Tick` itself, as soon as the state's next deadline has passed. It looks about every
//! `interval` (250 ms by default) and has at most one tick in flight. A tick that expired entries
//! but left due ones behind (one batch expires at most `MAX_EXPIRED_PER_BATCH`) is followed by
//! the next at once; a deadline that a tick does not clear never turns into a tight loop.

use std::time::Duration;

use switchboard_membership::Command;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::api::View;
use crate::batcher::{now_ms, Submitter};
use crate::error::StoreError;
use crate::RaftMetrics;

/// Runs until cancelled.
pub(crate) async fn run(
    node_id: u64,
    view: View,
    submitter: Submitter,
    metrics: watch::Receiver<RaftMetrics>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A tick that left due entries behind (a batch expires a bounded number) is followed by
    // the next at once.
    let mut due_again = false;
    loop {
        if !due_again {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = timer.tick() => {}
            }
        }
        due_again = false;
        if metrics.borrow().current_leader != Some(node_id) {
            continue;
        }
        let (next, entries) = {
            let state = view.read();
            (state.next_deadline(), state.stats().user_group_entries)
        };
        let Some(deadline) = next else {
            continue;
        };
        if deadline > now_ms() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            result = submitter.submit(vec![Command::Tick]) => match result {
                Ok(applied) => {
                    tracing::debug!(deadline_ms = deadline, log_index = applied.log_index, "proposed tick");
                    let state = view.read();
                    due_again = state.next_deadline().is_some_and(|d| d <= now_ms())
                        && state.stats().user_group_entries < entries;
                }
                Err(error @ (StoreError::Unavailable(_) | StoreError::Timeout(_) | StoreError::NotLeader { .. })) => {
                    tracing::debug!(deadline_ms = deadline, error = %error, "tick not applied");
                }
                Err(error) => tracing::warn!(deadline_ms = deadline, error = %error, "tick failed"),
            },
        }
    }
}
