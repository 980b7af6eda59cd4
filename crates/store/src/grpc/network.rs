//! The Raft network between voters, over the proto `Raft` service.
//!
//! openraft asks the factory for a client per target and calls it for votes, appends and
//! snapshot chunks. Each request is openraft's own type encoded with the store's codec
//! (MessagePack) inside `RaftRequest.payload`; the reply carries the encoded response, or the
//! encoded `RaftError` of the remote node when `RaftReply.error` is set, which is decoded back
//! into a `RemoteError` so openraft sees exactly what the remote Raft said (a higher vote, a
//! conflict, a fatal stop).
//!
//! Failures that are not the remote Raft's answer — connection refused, a broken stream, an
//! unreadable reply, an answer from another node than the one dialled, a term that cannot be
//! real — are `Unreachable`, so openraft backs off before retrying that peer; a call that
//! outlives the `RPCOption` hard TTL is a `Timeout`. A peer that refuses this node's
//! credentials is logged (at a limited rate) as the configuration error it is.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_core::throttle::{now_ms, Throttle};
use switchboard_proto::v1::raft_client::RaftClient;
use switchboard_proto::v1::{RaftReply, RaftRequest};
use tonic::Code;

use super::{Channels, ClusterChannel, InvalidAddress};
use crate::codec;
use crate::TypeConfig;

/// The Raft network factory of a voter: clients to the other voters over gRPC, on a shared
/// [`Channels`] cache.
#[derive(Debug, Clone)]
pub struct GrpcNetwork {
    node_id: u64,
    channels: Channels,
    addresses: Arc<BTreeMap<u64, String>>,
    contacts: crate::admin::Contacts,
    /// This node's cluster id, once attached.
    state: Arc<OnceLock<crate::ClusterName>>,
}

impl GrpcNetwork {
    /// The network of voter `node_id`, dialing through `channels` (share the cache with the
    /// [`super::GrpcForwarder`] so both use one connection per peer).
    pub fn new(node_id: u64, channels: Channels) -> GrpcNetwork {
        GrpcNetwork {
            node_id,
            channels,
            addresses: Arc::default(),
            contacts: crate::admin::Contacts::default(),
            state: Arc::default(),
        }
    }

    /// Stamps this node's cluster id on every Raft call from now on. Call it with the store's
    /// [`crate::RaftStore::cluster_name`] once the store is open; until then calls carry no id.
    pub fn attach(&self, name: crate::ClusterName) {
        let _ = self.state.set(name);
    }

    /// When each peer last answered this node's Raft calls (for `switchboard cluster status`).
    pub fn contacts(&self) -> crate::admin::Contacts {
        self.contacts.clone()
    }

    /// Dials voters at these addresses (this node's `--peers`) rather than the ones recorded in
    /// the Raft membership, which come from whichever voter bootstrapped the cluster.
    pub fn with_addresses(mut self, addresses: BTreeMap<u64, String>) -> GrpcNetwork {
        self.addresses = Arc::new(addresses);
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GrpcPeer {
        let addr = self.addresses.get(&target).unwrap_or(&node.addr);
        let node = &BasicNode::new(addr);
        let max = self.channels.max_message_bytes();
        let client = self.channels.get(addr).map(|channel| {
            RaftClient::new(channel)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max)
        });
        if let Err(error) = &client {
            tracing::warn!(target_id = target, error = %error, "cannot dial raft peer");
        }
        GrpcPeer {
            node_id: self.node_id,
            target,
            node: node.clone(),
            client,
            contacts: self.contacts.clone(),
            state: self.state.clone(),
        }
    }
}

/// The client openraft uses to reach one voter.
#[derive(Debug, Clone)]
pub struct GrpcPeer {
    node_id: u64,
    target: u64,
    node: BasicNode,
    client: Result<RaftClient<ClusterChannel>, InvalidAddress>,
    contacts: crate::admin::Contacts,
    state: Arc<OnceLock<crate::ClusterName>>,
}

static REFUSED_LOG: Throttle = Throttle::new(10_000);

/// Why an RPC failed on our side of the wire.
#[derive(thiserror::Error, Debug)]
enum CallError {
    #[error("raft rpc to node {target} at {addr}: {status}")]
    Transport {
        target: u64,
        addr: String,
        status: Box<tonic::Status>,
    },
    #[error(transparent)]
    Address(#[from] InvalidAddress),
    #[error("raft rpc to node {target} was answered by node {answered}: check --peers")]
    WrongNode { target: u64, answered: u64 },
    #[error("raft rpc to node {target}: the answer has term {term}, beyond any real one")]
    Implausible { target: u64, term: u64 },
    #[error("raft rpc to node {target}: {what}: {error}")]
    Codec {
        target: u64,
        what: &'static str,
        error: codec::CodecError,
    },
}

impl GrpcPeer {
    /// Sends one encoded request and decodes the reply into the response or the remote error.
    async fn call<Req, Resp, E>(
        &mut self,
        action: RPCTypes,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned + AnswerTerm,
        E: std::error::Error + DeserializeOwned,
    {
        let target = self.target;
        let ttl = option.hard_ttl();
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(error) => return Err(unreachable(&CallError::Address(error.clone()))),
        };
        let payload = codec::encode(rpc).map_err(|error| {
            RPCError::Network(NetworkError::new(&CallError::Codec {
                target,
                what: "encode request",
                error,
            }))
        })?;
        let cluster_id = self
            .state
            .get()
            .and_then(crate::ClusterName::get)
            .unwrap_or_default();
        let mut request = tonic::Request::new(RaftRequest {
            payload,
            cluster_id,
        });
        request.set_timeout(ttl);
        let sent = async {
            match action {
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
                RPCTypes::AppendEntries => client.append_entries(request).await,
            }
        };
        let timeout = || {
            RPCError::Timeout(Timeout {
                action,
                id: self.node_id,
                target,
                timeout: ttl,
            })
        };
        let reply: RaftReply = match tokio::time::timeout(ttl, sent).await {
            Err(_) => return Err(timeout()),
            Ok(Err(status)) if status.code() == Code::DeadlineExceeded => return Err(timeout()),
            Ok(Err(status)) => {
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ) {
                    if let Some(suppressed) = REFUSED_LOG.allow(now_ms()) {
                        tracing::error!(
                            target_id = target,
                            addr = %self.node.addr,
                            error = %status.message(),
                            suppressed,
                            "a voter refused this node's cluster credentials: every node needs the same --cluster-key (or --access-key)"
                        );
                    }
                }
                return Err(unreachable(&CallError::Transport {
                    target,
                    addr: self.node.addr.clone(),
                    status: Box::new(status),
                }));
            }
            Ok(Ok(reply)) => {
                let answered = switchboard_net::reply_identity(&reply).map(|id| id.node);
                if answered != Some(target) {
                    return Err(unreachable(&CallError::WrongNode {
                        target,
                        answered: answered.unwrap_or(0),
                    }));
                }
                self.contacts.answered(target);
                reply.into_inner()
            }
        };
        let codec_error = |what, error| {
            unreachable(&CallError::Codec {
                target,
                what,
                error,
            })
        };
        if reply.error {
            let error: RaftError<u64, E> =
                codec::decode(&reply.payload).map_err(|e| codec_error("decode remote error", e))?;
            return Err(RPCError::RemoteError(RemoteError::new_with_node(
                target,
                self.node.clone(),
                error,
            )));
        }
        let response: Resp =
            codec::decode(&reply.payload).map_err(|e| codec_error("decode response", e))?;
        let term = response.term();
        if term > super::raft_guard::MAX_TERM {
            return Err(unreachable(&CallError::Implausible { target, term }));
        }
        Ok(response)
    }
}

/// The term an answer carries (adopted by openraft if higher than ours): checked like requests'.
trait AnswerTerm {
    fn term(&self) -> u64;
}

impl AnswerTerm for VoteResponse<u64> {
    fn term(&self) -> u64 {
        self.vote.leader_id.term
    }
}

impl AnswerTerm for AppendEntriesResponse<u64> {
    fn term(&self) -> u64 {
        match self {
            AppendEntriesResponse::HigherVote(vote) => vote.leader_id.term,
            _ => 0,
        }
    }
}

impl AnswerTerm for InstallSnapshotResponse<u64> {
    fn term(&self) -> u64 {
        self.vote.leader_id.term
    }
}

fn unreachable<E: std::error::Error + 'static, F: std::error::Error>(
    error: &E,
) -> RPCError<u64, BasicNode, F> {
    RPCError::Unreachable(Unreachable::new(error))
}

impl RaftNetwork<TypeConfig> for GrpcPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(RPCTypes::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(RPCTypes::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::Vote;

    use super::*;

    use crate::grpc::test_channels as channels;

    #[tokio::test]
    async fn a_peer_that_is_down_is_unreachable() {
        // Bind and drop a listener so the port is (very likely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut network = GrpcNetwork::new(1, channels());
        let mut peer = network
            .new_client(2, &BasicNode::new(format!("127.0.0.1:{port}")))
            .await;
        let option = RPCOption::new(Duration::from_secs(5));
        let err = peer
            .vote(VoteRequest::new(Vote::new(1, 1), None), option)
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
    }

    #[tokio::test]
    async fn a_bad_address_is_unreachable() {
        let mut network = GrpcNetwork::new(1, channels());
        let mut peer = network.new_client(2, &BasicNode::new("")).await;
        let option = RPCOption::new(Duration::from_millis(100));
        let err = peer
            .vote(VoteRequest::new(Vote::new(1, 1), None), option)
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
    }
}
