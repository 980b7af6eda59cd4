//! The proto `Raft` service: the receiving end of [`super::GrpcNetwork`].
//!
//! Each call decodes openraft's request from the payload, hands it to the local [`Raft`] and
//! encodes the answer. A Raft-level refusal (`RaftError`) is an answer too: it travels in the
//! reply with `error` set, so the caller can tell "the remote Raft said no" from "the remote
//! could not be reached". A payload that does not decode is `INVALID_ARGUMENT`.

use openraft::error::RaftError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_proto::v1::raft_server::{Raft as RaftRpc, RaftServer};
use switchboard_proto::v1::{RaftReply, RaftRequest};
use tonic::{Request, Response, Status};

use super::MAX_MESSAGE_BYTES;
use crate::codec;
use crate::Raft;

/// Serves Raft RPCs from the other voters on top of this node's [`Raft`] handle.
#[derive(Clone)]
pub struct RaftGrpcService {
    raft: Raft,
}

impl RaftGrpcService {
    /// The service for `raft` (see [`crate::RaftStore::raft`]).
    pub fn new(raft: Raft) -> RaftGrpcService {
        RaftGrpcService { raft }
    }

    /// The tonic server for this service, accepting messages up to [`MAX_MESSAGE_BYTES`].
    pub fn into_server(self) -> RaftServer<RaftGrpcService> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
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
        let rpc = decode(request)?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = decode(request)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = decode(request)?;
        reply(self.raft.install_snapshot(rpc).await)
    }
}
