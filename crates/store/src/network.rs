//! The Raft network for a single-voter deployment.
//!
//! [`crate::RaftStore::open`] takes any `RaftNetworkFactory<TypeConfig>`: a multi-voter cluster
//! uses [`crate::grpc::GrpcNetwork`]. A single voter has no one to talk to:
//! [`SingleNodeNetwork`] answers every RPC to another node with `Unreachable`,
//! which openraft treats as a peer that is down (it backs off and retries).

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use crate::TypeConfig;

/// Why an RPC could not be sent.
#[derive(thiserror::Error, Debug)]
#[error(
    "node {target} is unreachable: this store runs as a single voter without a cluster network"
)]
pub struct NoNetwork {
    /// The node the RPC was for.
    pub target: u64,
}

/// A network factory whose clients reach no one.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleNodeNetwork;

/// The client [`SingleNodeNetwork`] hands out: every call fails as `Unreachable`.
#[derive(Debug, Clone, Copy)]
pub struct UnreachablePeer {
    target: u64,
}

impl UnreachablePeer {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        RPCError::Unreachable(Unreachable::new(&NoNetwork {
            target: self.target,
        }))
    }
}

impl RaftNetworkFactory<TypeConfig> for SingleNodeNetwork {
    type Network = UnreachablePeer;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> UnreachablePeer {
        UnreachablePeer { target }
    }
}

impl RaftNetwork<TypeConfig> for UnreachablePeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::Vote;

    use super::*;

    #[tokio::test]
    async fn every_rpc_is_unreachable() {
        let mut client = SingleNodeNetwork.new_client(2, &BasicNode::new("x")).await;
        let option = RPCOption::new(Duration::from_millis(100));
        let err = client
            .vote(VoteRequest::new(Vote::new(1, 1), None), option)
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
        assert!(err.to_string().contains("node 2"), "{err}");
    }
}
