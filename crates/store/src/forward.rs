//! Where writes go when this node is not the Raft leader.
//!
//! Only the leader may propose entries. A follower hands the commands of a whole batch to a
//! [`Forwarder`], which proposes them on the leader ([`crate::grpc::GrpcForwarder`] does it over
//! gRPC) and returns the log index they were applied at; the follower then waits until its own
//! state has applied that index before answering, so read-your-writes holds on every node. A
//! store without a cluster network uses [`NoForwarding`], which answers
//! [`StoreError::NotLeader`] with the leader's id and address.

use async_trait::async_trait;
use openraft::BasicNode;
use switchboard_core::NodeId;
use switchboard_membership::{Command, Outcome};

use crate::error::StoreError;

/// Commands applied by the leader: where, and with what outcomes (in command order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Index of the log entry that carried the commands.
    pub log_index: u64,
    /// One outcome per command, in order.
    pub outcomes: Vec<Outcome>,
}

impl Applied {
    /// The outcome of a one-command write, with the entry's index.
    pub(crate) fn single(self) -> Result<(Outcome, u64), crate::StoreError> {
        let outcome = self.outcomes.first().copied().ok_or_else(|| {
            crate::StoreError::Internal("the store returned no outcome".to_owned())
        })?;
        Ok((outcome, self.log_index))
    }
}

/// Proposes commands on the leader on behalf of a follower.
#[async_trait]
pub trait Forwarder: Send + Sync + 'static {
    /// Proposes `commands` as one entry on `leader` (reachable at `leader_node`, when known) and
    /// returns where and how they were applied.
    async fn forward(
        &self,
        leader: NodeId,
        leader_node: Option<BasicNode>,
        commands: Vec<Command>,
    ) -> Result<Applied, StoreError>;

    /// The commit point `leader` confirms with a quorum: every write acknowledged before the
    /// call is at or below it. A node that is not the leader, or cannot confirm it leads (a
    /// deposed leader cut off from the others), gives no index: its own applied index could miss
    /// writes the real leader acknowledged.
    async fn leader_read_index(
        &self,
        leader: NodeId,
        leader_node: Option<BasicNode>,
    ) -> Result<u64, StoreError> {
        Err(StoreError::NotLeader {
            leader_id: Some(leader),
            leader_addr: leader_node.map(|n| n.addr),
        })
    }
}

/// The forwarder of a store without a cluster network: refuses with the leader's whereabouts.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoForwarding;

#[async_trait]
impl Forwarder for NoForwarding {
    async fn forward(
        &self,
        leader: NodeId,
        leader_node: Option<BasicNode>,
        _commands: Vec<Command>,
    ) -> Result<Applied, StoreError> {
        Err(StoreError::NotLeader {
            leader_id: Some(leader),
            leader_addr: leader_node.map(|n| n.addr),
        })
    }
}
