//! The `Admin` service (`proto/.../admin.proto`): the cluster as this voter sees it, and voter
//! changes, made by the leader (see [`crate::admin`]). Any caller that proved the cluster key
//! may call it, as `switchboard cluster` does; another voter than the leader answers a change
//! with the not-the-leader status, which names the leader.

use std::sync::Arc;

use switchboard_net::peer_identity;
use switchboard_proto::v1::admin_server::{Admin, AdminServer};
use switchboard_proto::v1::{
    AddVoterRequest, AdminStatusRequest, CampaignReply, CampaignRequest, ClusterNode,
    ClusterStatus, RemoveVoterRequest, TransferLeaderRequest,
};
use tonic::{Request, Response, Status};

use super::{status_from_error, Channels};
use crate::admin::{ClusterView, Contacts};
use crate::raft_store::RaftStore;

/// See the module docs.
pub struct AdminGrpcService {
    store: Arc<RaftStore>,
    contacts: Contacts,
    /// To ask the voter a leadership transfer goes to to stand (`Admin.Campaign`).
    channels: Channels,
}

impl AdminGrpcService {
    /// `contacts`: when peers last answered this voter (its Raft network's, or empty).
    /// `channels`: how this voter dials the others.
    pub fn new(store: Arc<RaftStore>, contacts: Contacts, channels: Channels) -> AdminGrpcService {
        AdminGrpcService {
            store,
            contacts,
            channels,
        }
    }

    pub fn into_server(self, max_message_bytes: usize) -> AdminServer<AdminGrpcService> {
        AdminServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    fn status(&self) -> ClusterStatus {
        to_proto(self.store.cluster_view(&self.contacts))
    }
}

fn to_proto(view: ClusterView) -> ClusterStatus {
    ClusterStatus {
        node_id: view.node_id,
        leader_id: view.leader_id.unwrap_or(0),
        leader_address: view.leader_address.unwrap_or_default(),
        term: view.term,
        last_log_index: view.last_log_index,
        applied_index: view.applied_index,
        nodes: view
            .nodes
            .into_iter()
            .map(|n| ClusterNode {
                node_id: n.node_id,
                address: n.address,
                role: if n.voter { "voter" } else { "learner" }.to_owned(),
                has_replication: n.matched_index.is_some(),
                matched_index: n.matched_index.unwrap_or(0),
                lag: n.lag.unwrap_or(0),
                has_last_contact: n.last_contact_ms.is_some(),
                last_contact_ms: n.last_contact_ms.unwrap_or(0),
            })
            .collect(),
        cluster_id: view.cluster_id.unwrap_or_default(),
        disk_failing: view.disk_failing,
    }
}

#[tonic::async_trait]
impl Admin for AdminGrpcService {
    async fn status(
        &self,
        _request: Request<AdminStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(AdminGrpcService::status(self)))
    }

    async fn add_voter(
        &self,
        request: Request<AddVoterRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        let add = request.into_inner();
        if add.node_id == 0 || add.address.is_empty() {
            return Err(Status::invalid_argument(
                "a voter needs a node id (from 1) and an address",
            ));
        }
        self.store
            .add_voter(add.node_id, add.address)
            .await
            .map_err(|e| status_from_error(&e))?;
        Ok(Response::new(AdminGrpcService::status(self)))
    }

    async fn remove_voter(
        &self,
        request: Request<RemoveVoterRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        let node = request.into_inner().node_id;
        if node == self.store.node_id()
            && self.store.leader().map(|(l, _)| l) == Some(self.store.node_id())
        {
            // Hand over first, so writes wait one transfer rather than an election timeout
            // after the leader vanishes; the new leader removes this node when asked again.
            if let Some(successor) = self.store.best_successor() {
                self.store
                    .transfer_leader(successor, &self.channels)
                    .await
                    .map_err(|e| status_from_error(&e))?;
            }
        }
        self.store
            .remove_voter(node)
            .await
            .map_err(|e| status_from_error(&e))?;
        Ok(Response::new(AdminGrpcService::status(self)))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        let node = request.into_inner().node_id;
        self.store
            .transfer_leader(node, &self.channels)
            .await
            .map_err(|e| status_from_error(&e))?;
        Ok(Response::new(AdminGrpcService::status(self)))
    }

    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignReply>, Status> {
        let caller = peer_identity(&request)?;
        self.store
            .stand_for_election(caller.node)
            .await
            .map_err(|e| status_from_error(&e))?;
        Ok(Response::new(CampaignReply {}))
    }
}
