//! The contract between the gateway and the store.
//!
//! The REST layer and the connection handlers only see [`MembershipStore`]: writes go in as
//! [`Command`]s and come back as [`Outcome`]s once applied, reads go to a [`View`] of the applied
//! state. The trait is object-safe (`Arc<dyn MembershipStore>`), so an in-process
//! [`crate::RaftStore`] and a remote store reached over gRPC are interchangeable.

use std::sync::Arc;

use async_trait::async_trait;
use std::time::Duration;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use switchboard_core::NodeId;
use switchboard_membership::{Command, Membership, Outcome};
use tokio::sync::watch;

use crate::error::StoreError;

/// The membership store as the gateway uses it.
#[async_trait]
pub trait MembershipStore: Send + Sync + 'static {
    /// Proposes one command; resolves when it is committed AND applied to `view()` of this
    /// process (read-your-writes), with its outcome.
    async fn write(&self, command: Command) -> Result<Outcome, StoreError> {
        self.write_all(vec![command])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Internal("the store returned no outcome".to_owned()))
    }

    /// Several commands applied atomically in one log entry, outcomes in order.
    async fn write_all(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, StoreError>;

    /// [`MembershipStore::write`], with the index of the log entry that carried the command
    /// (which orders it against every other write).
    async fn write_indexed(&self, command: Command) -> Result<(Outcome, u64), StoreError>;

    /// Waits until this process's view reflects every write acknowledged anywhere in the
    /// cluster before the call (a read barrier; see the `barrier` module). Call it before
    /// routing by membership or answering an existence check.
    async fn sync(&self) -> Result<(), StoreError>;

    /// The applied state (this process's copy). Cheap to clone; `read()` gives a guard.
    fn view(&self) -> View;

    /// Who leads and how far the log and the state machine are.
    fn status(&self) -> StoreStatus;

    /// Whether this process's voter (if it runs one) is a full voter: false while it catches up
    /// after losing its data (see `admin::recover`). A process without a voter answers true.
    fn voting(&self) -> bool {
        true
    }

    /// Whether this process's voter (if it runs one) cannot use its disk now: its disk
    /// operations are retried until the disk works again, and its writes are refused meanwhile
    /// (see `crate::disk`). A process without a voter answers false.
    fn disk_failing(&self) -> bool {
        false
    }
}

/// A shared handle on the applied membership state.
///
/// Readers take [`View::read`] for as long as one query needs and drop it: applying the next log
/// entry waits for readers to leave. The view also tracks the last log index applied to it, so a
/// caller can wait until a given write (or a write another node routed by) is visible here.
#[derive(Clone)]
pub struct View {
    state: Arc<RwLock<Membership>>,
    applied: Arc<watch::Sender<u64>>,
}

impl View {
    /// A view of a state that nothing replicates yet (applied index 0).
    pub fn new(state: Membership) -> View {
        View::from_shared(Arc::new(RwLock::new(state)))
    }

    /// A view of a shared state (the store's state machine writes into it).
    pub fn from_shared(state: Arc<RwLock<Membership>>) -> View {
        View {
            state,
            applied: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Read access to the state; hold it briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, Membership> {
        self.state.read()
    }

    /// Write access, for whoever applies entries to this view (the state machine, a replica).
    pub fn write(&self) -> RwLockWriteGuard<'_, Membership> {
        self.state.write()
    }

    /// The shared state itself.
    pub fn shared(&self) -> &Arc<RwLock<Membership>> {
        &self.state
    }

    /// The last log index applied to this view.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Records that everything up to `index` is applied (never moves backwards).
    pub fn set_applied(&self, index: u64) {
        self.applied.send_if_modified(|current| {
            if index > *current {
                *current = index;
                true
            } else {
                false
            }
        });
    }

    /// Waits until `index` is applied to this view, at most `timeout`; returns whether it was.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").finish_non_exhaustive()
    }
}

/// A point-in-time summary of the store on this node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// The current leader, if this node knows one.
    pub leader_id: Option<NodeId>,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// The current Raft term.
    pub term: u64,
    /// Index of the last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// Index of the last entry applied to this node's state.
    pub applied_index: Option<u64>,
    /// Index of the last committed entry this node knows of.
    pub committed_index: Option<u64>,
    /// Index covered by the latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Index up to which the log was purged.
    pub purged_index: Option<u64>,
}

impl StoreStatus {
    /// Whether a leader is known (writes can be served or forwarded).
    pub fn leader_known(&self) -> bool {
        self.leader_id.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trait_is_object_safe_and_views_share_state() {
        fn _takes(_: Arc<dyn MembershipStore>) {}
        let view = View::new(Membership::new());
        let other = view.clone();
        assert!(Arc::ptr_eq(view.shared(), other.shared()));
        drop(view.read());
        assert!(!StoreStatus::default().leader_known());
    }

    #[tokio::test]
    async fn waiting_for_an_applied_index() {
        let view = View::new(Membership::new());
        assert!(!view.wait_applied(3, Duration::from_millis(10)).await);
        let waiter = {
            let view = view.clone();
            tokio::spawn(async move { view.wait_applied(3, Duration::from_secs(10)).await })
        };
        view.set_applied(2);
        view.set_applied(3);
        assert!(waiter.await.unwrap());
        view.set_applied(1);
        assert_eq!(view.applied_index(), 3, "never moves backwards");
    }
}
