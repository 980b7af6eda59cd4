//! Forwarding a follower's writes to the leader's `Store.Write`.
//!
//! The follower's batcher hands over one batch at a time; this sends it to the leader's cluster
//! address on the shared [`Channels`] cache, marked as forwarded so the receiver proposes it
//! only if it leads (a node with a stale idea of the leader answers "not the leader" instead of
//! forwarding again, so a write never travels in a loop). One attempt per batch: the follower's
//! caller sees `UNAVAILABLE` or the new leader's whereabouts and decides whether to retry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openraft::BasicNode;
use switchboard_core::NodeId;
use switchboard_membership::{Command, Outcome};
use switchboard_proto::v1::store_client::StoreClient;
use switchboard_proto::v1::{StatusRequest, WriteRequest};
use tonic::metadata::MetadataValue;

use super::{error_from_status, Channels, FORWARDED_KEY};
use crate::codec;
use crate::error::StoreError;
use crate::forward::{Applied, Forwarder};

/// The default bound on one forwarded write (the store's default write timeout).
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Forwarder`] that proposes on the leader over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcForwarder {
    channels: Channels,
    timeout: Duration,
    addresses: Arc<BTreeMap<u64, String>>,
}

impl GrpcForwarder {
    /// Forwards through `channels` (share it with the [`super::GrpcNetwork`]).
    pub fn new(channels: Channels) -> GrpcForwarder {
        GrpcForwarder {
            channels,
            timeout: DEFAULT_FORWARD_TIMEOUT,
            addresses: Arc::default(),
        }
    }

    /// Reaches the leader at these addresses (this node's `--peers`) rather than the one the
    /// Raft membership records; see [`super::GrpcNetwork::with_addresses`].
    pub fn with_addresses(mut self, addresses: BTreeMap<u64, String>) -> GrpcForwarder {
        self.addresses = Arc::new(addresses);
        self
    }

    /// Bounds each forwarded write by `timeout` instead of five seconds. Keep it at or below the
    /// store's write timeout: the batch occupies one of the batcher's in-flight slots meanwhile.
    pub fn with_timeout(mut self, timeout: Duration) -> GrpcForwarder {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl Forwarder for GrpcForwarder {
    async fn forward(
        &self,
        leader: NodeId,
        leader_node: Option<BasicNode>,
        commands: Vec<Command>,
    ) -> Result<Applied, StoreError> {
        let not_leader = || StoreError::NotLeader {
            leader_id: Some(leader),
            leader_addr: None,
        };
        let known = self.addresses.get(&leader).cloned();
        let Some(addr) = known
            .or(leader_node.map(|n| n.addr))
            .filter(|a| !a.is_empty())
        else {
            return Err(not_leader());
        };
        let channel = self.channels.get(&addr).map_err(|e| {
            StoreError::Config(format!("the leader (node {leader}) has a bad address: {e}"))
        })?;
        let max = self.channels.max_message_bytes();
        let mut client = StoreClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let encoded = codec::encode(&commands)
            .map_err(|e| StoreError::Internal(format!("encode commands: {e}")))?;
        let mut request = tonic::Request::new(WriteRequest { commands: encoded });
        request.set_timeout(self.timeout);
        request
            .metadata_mut()
            .insert(FORWARDED_KEY, MetadataValue::from_static("1"));
        let reply = match tokio::time::timeout(self.timeout, client.write(request)).await {
            Ok(Ok(reply)) => reply.into_inner(),
            // The leader does not take writes forwarded by a node that no longer votes (this
            // one was removed, and may not have heard yet): the caller goes to the leader.
            Ok(Err(status))
                if status.code() == tonic::Code::PermissionDenied
                    && status.message().contains("it is not a voter") =>
            {
                return Err(StoreError::NotLeader {
                    leader_id: Some(leader),
                    leader_addr: Some(addr),
                })
            }
            Ok(Err(status)) => return Err(error_from_status(&status)),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "the leader (node {leader} at {addr}) did not answer within {} ms; the write may still be applied",
                    self.timeout.as_millis()
                )))
            }
        };
        let outcomes: Vec<Outcome> = codec::decode(&reply.outcomes).map_err(|e| {
            StoreError::Internal(format!("undecodable outcomes from node {leader}: {e}"))
        })?;
        Ok(Applied {
            log_index: reply.log_index,
            outcomes,
        })
    }

    async fn leader_read_index(
        &self,
        leader: NodeId,
        leader_node: Option<BasicNode>,
    ) -> Result<u64, StoreError> {
        let known = self.addresses.get(&leader).cloned();
        let Some(addr) = known
            .or(leader_node.map(|n| n.addr))
            .filter(|a| !a.is_empty())
        else {
            return Err(StoreError::NotLeader {
                leader_id: Some(leader),
                leader_addr: None,
            });
        };
        let channel = self.channels.get(&addr).map_err(|e| {
            StoreError::Config(format!("the leader (node {leader}) has a bad address: {e}"))
        })?;
        let mut client = StoreClient::new(channel);
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(self.timeout);
        let reply = match tokio::time::timeout(self.timeout, client.status(request)).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => return Err(error_from_status(&status)),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "the leader at {addr} did not answer in time"
                )))
            }
        };
        super::confirmed_read_index(&reply)
    }
}
