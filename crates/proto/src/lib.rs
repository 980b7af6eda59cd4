//! Generated gRPC and protobuf types of the cluster services (`proto/switchboard/cluster/v1`).
//!
//! Only the store's and the cluster's gRPC edges use these types; they convert to and from the
//! domain types right there.

#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

pub mod v1 {
    tonic::include_proto!("switchboard.cluster.v1");
}
