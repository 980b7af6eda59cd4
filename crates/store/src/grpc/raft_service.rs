//! The proto `Raft` service: the receiving end of [`super::GrpcNetwork`].
//!
//! Each call decodes openraft's request from the payload, checks it, hands it to the local
//! [`Raft`] and encodes the answer. A Raft-level refusal (`RaftError`) is an answer too: it
//! travels in the reply with `error` set, so the caller can tell "the remote Raft said no" from
//! "the remote could not be reached". A payload that does not decode is `INVALID_ARGUMENT`.
//!
//! What is checked before openraft sees a request (the caller's identity was proven by the
//! cluster listener's authentication layer):
//! - the caller is a voter of this node's membership (any authenticated node while this node
//!   has none yet) and speaks only for itself ([`super::raft_guard`]): `PERMISSION_DENIED`;
//! - the caller is of this node's cluster: a request stamped with another cluster id than the
//!   one this node applied is `FAILED_PRECONDITION` (a node started on another cluster's data
//!   directory); a request without one (its sender does not know it yet) passes;
//! - terms and indexes are plausible ([`super::raft_guard`]): `INVALID_ARGUMENT`;
//! - **leader stickiness** (the Raft thesis, §4.2.3): a vote request is refused while this node
//!   leads with a recently confirmed quorum, or has heard from a live leader within the minimum
//!   election timeout. A voter that is not cut off has no reason to campaign then, so the
//!   refusal costs nothing in a real failover, and a peer flooding votes cannot depose a healthy
//!   leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::RaftError;
use openraft::raft::VoteResponse;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_core::throttle::{now_ms, Throttle};
use switchboard_net::{peer_identity, refuse_identity, ClusterIdentity};
use switchboard_proto::v1::raft_server::{Raft as RaftRpc, RaftServer};
use switchboard_proto::v1::{RaftReply, RaftRequest};
use tonic::{Request, Response, Status};

use super::raft_guard::{self, Refusal};
use crate::codec;
use crate::{Raft, RaftStore};

static OTHER_CLUSTER_LOG: Throttle = Throttle::new(10_000);

/// Serves Raft RPCs from the other voters on top of this node's [`Raft`] handle.
#[derive(Clone)]
pub struct RaftGrpcService {
    store: Arc<RaftStore>,
    raft: Raft,
    /// The minimum election timeout: how recently a leader must have been heard from for a
    /// vote request to be refused.
    sticky_for: Duration,
    /// The leader whose append this node last accepted, and when.
    last_leader_contact: Arc<Mutex<Option<(u64, Instant)>>>,
}

impl RaftGrpcService {
    /// The service for `store`'s Raft node.
    pub fn new(store: Arc<RaftStore>) -> RaftGrpcService {
        let raft = store.raft().clone();
        let sticky_for = Duration::from_millis(raft.config().election_timeout_min);
        RaftGrpcService {
            store,
            raft,
            sticky_for,
            last_leader_contact: Arc::default(),
        }
    }

    /// The tonic server for this service, accepting and sending messages up to
    /// `max_message_bytes`.
    pub fn into_server(self, max_message_bytes: usize) -> RaftServer<RaftGrpcService> {
        RaftServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    /// The caller, if it may speak Raft to this node: one of its voters, of its cluster.
    fn voter(&self, request: &Request<RaftRequest>) -> Result<ClusterIdentity, Status> {
        let caller = peer_identity(request)?;
        let theirs = request.get_ref().cluster_id.as_str();
        if !theirs.is_empty() {
            if let Some(ours) = self
                .store
                .cluster_name()
                .get()
                .filter(|ours| ours != theirs)
            {
                crate::metrics::raft_rpc_refused("other_cluster");
                if let Some(suppressed) = OTHER_CLUSTER_LOG.allow(now_ms()) {
                    tracing::error!(
                        peer = %caller,
                        their_cluster = theirs,
                        our_cluster = ours,
                        suppressed,
                        "refused raft calls from a node of another cluster (its data directory is another cluster's)"
                    );
                }
                return Err(Status::failed_precondition(format!(
                    "this node belongs to cluster {ours}, the caller to cluster {theirs}"
                )));
            }
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let uninitialized = membership.nodes().next().is_none();
        if uninitialized || membership.voter_ids().any(|id| id == caller.node) {
            Ok(caller)
        } else {
            Err(refuse_identity(
                "raft",
                caller,
                "speak Raft: it is not a voter",
            ))
        }
    }

    fn my_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Whether a vote request should be refused because a leader is alive (see module docs).
    fn leader_is_alive(&self, candidate: u64) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.current_leader == Some(metrics.id) {
            // The quorum confirmation runs about twice a second: allow for one round trip.
            return self.store.leadership_confirmed_within(self.sticky_for * 2);
        }
        let Some(leader) = metrics.current_leader.filter(|l| *l != candidate) else {
            return false;
        };
        self.last_leader_contact
            .lock()
            .is_some_and(|(from, at)| from == leader && at.elapsed() < self.sticky_for)
    }
}

impl std::fmt::Debug for RaftGrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGrpcService").finish_non_exhaustive()
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftRequest>) -> Result<T, Status> {
    codec::decode(&request.into_inner().payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft request: {e}")))
}

fn refused(caller: ClusterIdentity, refusal: Refusal) -> Status {
    match refusal {
        Refusal::Impersonation(what) => refuse_identity("raft", caller, &what),
        Refusal::Implausible(why) => {
            crate::metrics::raft_rpc_refused("implausible");
            tracing::warn!(peer = %caller, %why, "refused an implausible raft request");
            Status::invalid_argument(format!("raft request refused: {why}"))
        }
    }
}

fn reply<T: Serialize, E: Serialize + std::error::Error>(
    result: Result<T, RaftError<u64, E>>,
) -> Result<Response<RaftReply>, Status> {
    let (payload, error) = match &result {
        Ok(response) => (codec::encode(response), false),
        Err(error) => (codec::encode(error), true),
    };
    let payload =
        payload.map_err(|e| Status::internal(format!("cannot encode raft reply: {e}")))?;
    Ok(Response::new(RaftReply { payload, error }))
}

#[tonic::async_trait]
impl RaftRpc for RaftGrpcService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let caller = self.voter(&request)?;
        let rpc: openraft::raft::AppendEntriesRequest<crate::TypeConfig> = decode(request)?;
        raft_guard::check_append(&rpc, caller.node, self.my_term())
            .map_err(|r| refused(caller, r))?;
        let result = self.raft.append_entries(rpc).await;
        if result
            .as_ref()
            .is_ok_and(|r| !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)))
        {
            *self.last_leader_contact.lock() = Some((caller.node, Instant::now()));
        }
        reply(result)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let caller = self.voter(&request)?;
        let rpc: openraft::raft::VoteRequest<u64> = decode(request)?;
        raft_guard::check_vote_request(&rpc, caller.node, self.my_term())
            .map_err(|r| refused(caller, r))?;
        let recovering = !self.store.may_vote();
        if recovering || self.leader_is_alive(caller.node) {
            crate::metrics::raft_rpc_refused(if recovering {
                "recovering"
            } else {
                "leader_alive"
            });
            let (vote, last_log_id) = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                let data = self.raft.data_metrics();
                let last_log = data.borrow().last_log;
                (metrics.vote, last_log)
            };
            tracing::debug!(
                candidate = caller.node,
                recovering,
                "vote refused: a leader is alive, or this node has not caught up"
            );
            let refusal: Result<VoteResponse<u64>, RaftError<u64>> =
                Ok(VoteResponse::new(vote, last_log_id, false));
            return reply(refusal);
        }
        reply(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let caller = self.voter(&request)?;
        let rpc: openraft::raft::InstallSnapshotRequest<crate::TypeConfig> = decode(request)?;
        raft_guard::check_snapshot(&rpc, caller.node, self.my_term())
            .map_err(|r| refused(caller, r))?;
        let result = self.raft.install_snapshot(rpc).await;
        if result.is_ok() {
            *self.last_leader_contact.lock() = Some((caller.node, Instant::now()));
        }
        reply(result)
    }
}
