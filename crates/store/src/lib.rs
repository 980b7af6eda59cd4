//! The durable, Raft-replicated membership store.
//!
//! Every gateway needs the same answer to "which connections are in this group, and where do
//! they live?", and that answer must survive restarts and the loss of a minority of voters. This
//! crate keeps [`switchboard_membership::Membership`] replicated with openraft 0.9 and exposes
//! it to the gateway through one object-safe trait, [`MembershipStore`], so the REST layer does
//! not care whether the store runs in-process ([`RaftStore`]) or behind gRPC ([`RemoteStore`]).
//!
//! Layout:
//! - [`api`]: the gateway-facing contract ([`MembershipStore`], [`View`], [`StoreStatus`]);
//! - [`error`]: [`StoreError`] and its mapping to the shared error-code taxonomy;
//! - [`raft_store`]: [`RaftStore`] and [`StoreConfig`], which wire everything together;
//! - `batcher`: group commit — concurrent writes share one log entry and one fsync, and the
//!   leader stamps each entry with its wall clock (the only clock the state machine sees);
//! - [`forward`]: the slot where writes go when this node is not the leader;
//! - `ticker`: proposes `Command::Tick` when a TTL or lease is due and nobody writes;
//! - [`log_store`]: the Raft log, vote and committed index in redb, fsynced before acknowledging;
//! - [`state_machine`]: applying entries to the shared state, and snapshots on disk;
//! - [`network`]: the Raft network for a single-voter deployment;
//! - [`grpc`]: the store over gRPC — the Raft network between voters ([`grpc::GrpcNetwork`],
//!   [`grpc::RaftGrpcService`]), the store API ([`grpc::StoreGrpcService`]), forwarding a
//!   follower's writes to the leader ([`grpc::GrpcForwarder`]) and the shared channel cache;
//! - [`remote`]: [`RemoteStore`], the store of a stateless gateway — a replica fed by a voter's
//!   watch stream, writes sent to the voters;
//! - [`disk`]: riding out storage faults — a failed disk operation is retried with backoff and
//!   the node reports not ready until the disk works again;
//! - `codec`: the compact binary encoding of log entries and snapshots;
//! - `metrics`: Prometheus metrics fed from openraft's metrics channel.
//!
//! Invariants:
//! - A write is acknowledged only after its entry is on disk (redb commit with fsync), committed
//!   and applied to this process's [`View`] (read-your-writes).
//! - Time inside the state machine comes only from [`switchboard_membership::Batch::time_ms`].
//! - Restart = latest snapshot + replay of the committed log behind it.

pub mod admin;
pub mod api;
pub mod barrier;
mod batcher;
mod codec;
pub mod disk;
pub mod error;
pub mod forward;
pub mod grpc;
pub mod log_store;
mod metrics;
pub mod network;
pub mod raft_store;
pub mod remote;
pub mod state_machine;
mod ticker;

use std::io::Cursor;

use switchboard_membership::{Batch, Outcome};

pub use api::{MembershipStore, StoreStatus, View};
pub use error::StoreError;
pub use forward::{Applied, Forwarder, NoForwarding};
pub use raft_store::{ClusterName, RaftStore, StoreConfig, WatchStart};
pub use remote::{RemoteStore, RemoteStoreConfig};
pub use state_machine::FeedEvent;

/// Encodes a membership state the way snapshots and watch streams carry it.
pub fn encode_state(state: &switchboard_membership::Membership) -> Result<Vec<u8>, StoreError> {
    codec::encode_named(state).map_err(|e| StoreError::Internal(format!("encode state: {e}")))
}

/// Decodes a membership state from [`encode_state`]'s form.
pub fn decode_state(bytes: &[u8]) -> Result<switchboard_membership::Membership, StoreError> {
    codec::decode(bytes).map_err(|e| StoreError::Internal(format!("decode state: {e}")))
}

openraft::declare_raft_types!(
    /// The openraft type configuration of the membership store: one log entry carries one
    /// [`Batch`] of commands, and its response is the [`Outcome`] of each command in order.
    pub TypeConfig:
        D = Batch,
        R = Vec<Outcome>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of the store.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry of the store.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id (leader term and node, index).
pub type LogId = openraft::LogId<u64>;
/// Raft metrics of the store.
pub type RaftMetrics = openraft::RaftMetrics<u64, openraft::BasicNode>;
